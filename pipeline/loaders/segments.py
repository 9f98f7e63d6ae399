"""Frames of video-segment views (``frame_codec="mp4"``): a sample's camera segment decoded once.

A step's frame is its ``frame_index.npy`` entry looked up in the sample's ``segment_frames`` (the frame
of each picture the segment decodes to, written by pipeline.shards.segments). Decoding a segment
means decoding from its keyframe, so the last few decoded segments are kept: a shuffle window visits
a sample's steps many times. Decoding is PyAV on the CPU (H.264 and AV1 alike).
"""

from __future__ import annotations

import bisect
import io
from collections import OrderedDict

import numpy as np

from pipeline.loaders.source import ViewSource
from pipeline.video.segments import decode_segment


class SegmentFrames:
    """Per (sample, camera): the decoded segment, an LRU of ``cache_size`` of them."""

    def __init__(self, source: ViewSource, cache_size: int = 4) -> None:
        self.source = source
        self.cache_size = cache_size
        self._decoded: OrderedDict[tuple[int, str], list[np.ndarray]] = OrderedDict()
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
        image = self._segment(sample, camera, len(listed), where)[position]
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

    def _segment(self, sample: int, camera: str, expected: int, where: str) -> list[np.ndarray]:
        key = (sample, camera)
        frames = self._decoded.get(key)
        if frames is not None:
            self._decoded.move_to_end(key)
            return frames
        suffix = f"{camera}.mp4"
        data = self.source.member(sample, suffix)
        if data is None:
            raise self.source.corrupt(sample, suffix, "video segment member missing")
        try:
            frames = decode_segment(data, expected, where)
        except ValueError as exc:
            raise self.source.corrupt(sample, suffix, str(exc)) from exc
        self._decoded[key] = frames
        while len(self._decoded) > self.cache_size:
            self._decoded.popitem(last=False)
        return frames
