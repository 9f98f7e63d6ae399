"""Frames of video-segment views (``frame_codec="mp4"``): a sample's camera segment decoded once.

A step's frame is its ``frame_index.npy`` entry looked up in the sample's ``segment_frames`` (the frame
of each picture the segment decodes to, written by pipeline.shards.segments). Decoding a segment
means decoding from its keyframe, so the last few segments are kept open, decoded as far as any step
asked (``SegmentDecoder``): a shuffle window visits a sample's steps many times, a VLA step wants one
picture, a WAM clip a run of them. Decoding is PyAV on the CPU (H.264 and AV1 alike).
"""

from __future__ import annotations

import bisect
import io
from collections import OrderedDict

import numpy as np

from pipeline.loaders.integrity import CorruptMemberError
from pipeline.loaders.source import ViewSource
from pipeline.video.segments import SegmentDecoder


class SegmentFrames:
    """Per (sample, camera): the segment's decoder, an LRU of ``cache_size`` of them."""

    def __init__(self, source: ViewSource, cache_size: int = 4) -> None:
        self.source = source
        self.cache_size = cache_size
        self._decoders: OrderedDict[tuple[int, str], SegmentDecoder] = OrderedDict()
        self._frame_index: OrderedDict[int, np.ndarray] = OrderedDict()

    def frame_into(self, sample: int, info: dict, camera: str, offset: int, out: np.ndarray) -> bool:
        """Copy the camera's frame of step ``offset`` into ``out``; False (zeros) when the step has none."""
        listed = info.get("segment_frames", {}).get(camera)
        frame = int(self._frame_indices(sample)[offset, info["cameras"].index(camera)]) if listed else -1
        if frame < 0:
            out[...] = 0
            return False
        position = bisect.bisect_left(listed, frame)
        where = f"sample {info.get('key', sample)} camera {camera}"
        if position == len(listed) or listed[position] != frame:
            raise ValueError(f"{where}: frame {frame} is not in its video segment")
        suffix = f"{camera}.mp4"
        try:
            image = self._segment(sample, camera, len(listed), where).frame(position)
        except CorruptMemberError:
            raise
        except ValueError as exc:  # the segment's own decode: drop it, name shard, member and sample
            self._decoders.pop((sample, camera), None)
            raise self.source.corrupt(sample, suffix, str(exc)) from exc
        if image.shape != out.shape:
            raise ValueError(f"{where}: segment frames are {image.shape}, the batch wants {out.shape}")
        out[...] = image
        return True

    def _frame_indices(self, sample: int) -> np.ndarray:
        cached = self._frame_index.get(sample)
        if cached is None:
            data = self.source.member(sample, "frame_index.npy")
            if data is None:
                raise self.source.corrupt(sample, "frame_index.npy", "member missing from the shard index")
            try:
                cached = np.load(io.BytesIO(data), allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise self.source.corrupt(sample, "frame_index.npy", f"cannot be decoded: {exc}") from exc
            self._frame_index[sample] = cached
            while len(self._frame_index) > 4 * self.cache_size:
                self._frame_index.popitem(last=False)
        return cached

    def _segment(self, sample: int, camera: str, expected: int, where: str) -> SegmentDecoder:
        key = (sample, camera)
        decoder = self._decoders.get(key)
        if decoder is not None:
            self._decoders.move_to_end(key)
            return decoder
        suffix = f"{camera}.mp4"
        data = self.source.member(sample, suffix)
        if data is None:
            raise self.source.corrupt(sample, suffix, "video segment member missing")
        decoder = self._decoders[key] = SegmentDecoder(data, expected, where)
        while len(self._decoders) > self.cache_size:
            self._decoders.popitem(last=False)[1].close()
        return decoder
