"""Video segments as view members: the frames one sample needs from one camera, as one short MP4.

A JPEG view of native 480x640 frames is ~36x the bytes of the AV1 source it came from; a segment
keeps the video codec's inter-frame compression. Two ways to make one:

- ``cut_segment``: at the source's own size, the source's packets from the keyframe at or before the
  first wanted frame until every wanted frame's packet is in, remuxed without re-encoding. Decoded,
  its frames are the source's frames bit for bit (a decoder fed the same packets from a keyframe
  outputs the same pictures), and it costs the source's bytes plus at most one GOP per segment.
- ``encode_segment``: frames at the view's size encoded with libx264, one GOP for the whole segment
  (its first frame the only keyframe), no B-frames, one thread: the same bytes run to run. 4:4:4
  (High 4:4:4 profile) by default: CPU decoding; NVDEC before Blackwell takes 4:2:0 H.264 only.

Either way the member is self-contained (decodable without any other sample) and the sample's
``meta.json`` lists, per camera, the frame index of each picture the segment decodes to, in order.
``decode_segment`` decodes one with PyAV on the CPU. H.264 segments also decode on NVDEC; AV1 ones
(cut from AV1 sources) do not on A100/H100/H200, whose NVDEC has no AV1 engine: those stay on CPU.
"""

from __future__ import annotations

import bisect
import io
import itertools
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipeline.video.decode import VideoInput
from pipeline.video.encode import EncodeConfig, encode_frames
from pipeline.video.probe import VideoError

SEGMENT_ENCODER = "libx264"
_MUX_OPTIONS = {"fflags": "+bitexact"}  # no muxer version string: the bytes depend on the packets only


def encode_segment(frames: Sequence[np.ndarray], fps: Fraction, crf: int, pix_fmt: str = "yuv444p",
                   gop: int = 0) -> bytes:
    """RGB frames (all one size) as H.264 in an MP4: one GOP (frame 0 the only keyframe), or a keyframe
    every ``gop`` frames."""
    if not frames:
        raise ValueError("a segment needs at least one frame")
    height, width = frames[0].shape[:2]
    config = EncodeConfig(codec=SEGMENT_ENCODER, crf=crf, gop_seconds=(gop or len(frames)) / float(fps),
                          threads=1, pix_fmt=pix_fmt)
    data, count = encode_frames(frames, fps, width, height, config)
    if count != len(frames):
        raise ValueError(f"segment encoder wrote {count} of {len(frames)} frames")
    return data


def cut_segment(video: VideoInput, first: int, last: int) -> tuple[bytes, list[int]]:
    """The source packets covering frames ``first..last`` (from the keyframe at or before ``first``),
    remuxed. Returns the MP4 bytes and the frame index of each packet's picture, in presentation order."""
    if not 0 <= first <= last < video.probe.num_frames:
        raise VideoError(video.uri, f"segment frames {first}..{last} outside 0..{video.probe.num_frames - 1}")
    probe = video.probe
    needed = set(range(first, last + 1))
    indices: list[int] = []
    buffer = io.BytesIO()
    try:
        with av.open(video.open(), mode="r") as source:
            stream = source.streams.video[0]
            if first > 0:
                source.seek(probe.frame_pts(first), stream=stream, backward=True, any_frame=False)
            with av.open(buffer, mode="w", format="mp4", options=_MUX_OPTIONS) as out:
                target = out.add_stream_from_template(stream)
                for packet in source.demux(stream):
                    if packet.pts is None or not packet.size:
                        continue
                    index = round((packet.pts - probe.start_pts) * probe.time_base * probe.fps)
                    if not indices and (not packet.is_keyframe or index > first):
                        raise VideoError(video.uri, f"no keyframe at or before frame {first} (first packet: "
                                                    f"frame {index}, keyframe={packet.is_keyframe})")
                    packet.stream = target
                    out.mux(packet)
                    indices.append(index)
                    needed.discard(index)
                    if not needed:
                        break
    except av.error.FFmpegError as exc:
        raise VideoError(video.uri, f"cutting frames {first}..{last} failed: {exc}") from exc
    if needed:
        raise VideoError(video.uri, f"frames {sorted(needed)[:3]}... have no packet")
    return buffer.getvalue(), sorted(indices)


def decode_segment(data: bytes, expected: int, where: str) -> list[np.ndarray]:
    """Every picture of a segment as RGB, in presentation order; ``expected`` of them, else a ValueError
    naming ``where`` (the sample and camera)."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.error.FFmpegError as exc:
        raise ValueError(f"{where}: corrupt video segment: {exc}") from exc
    if len(frames) != expected:
        raise ValueError(f"{where}: video segment decodes to {len(frames)} frames, its sample lists {expected}")
    return frames


class SegmentDecoder:
    """One segment decoded only as far as asked: a shuffled loader wants one picture of a 64-step
    segment. A request seeks to the last keyframe at or before its picture (when the packets are in
    presentation order: no reordered B-frames) or goes on from where the last one stopped, decodes
    through the picture, and converts that one to RGB; pictures decoded on the way stay in the
    decoder's layout (YUV) for later requests. ``expected``: the pictures the sample lists; a segment
    that holds another number, or ends early, is a ValueError naming ``where``."""

    def __init__(self, data: bytes, expected: int, where: str) -> None:
        self.expected, self.where = expected, where
        self.decoded = 0  # pictures decoded so far (what a request cost)
        self._pictures: dict[int, av.VideoFrame] = {}
        self._rgb: dict[int, np.ndarray] = {}
        self._reformatter = VideoReformatter()  # one swscale context for the segment, not one per picture
        self._frames = None
        self._next = 0  # the position the forward decode yields next
        try:
            self._container = av.open(io.BytesIO(data), mode="r")
            self._stream = self._container.streams.video[0]
            # one thread: a loader worker opens a segment per step, and a decoder thread pool cost
            # 1 ms per open against 0.9 ms for opening and decoding a 224x224 picture; the loader's
            # workers are the parallelism
            self._stream.codec_context.thread_count = 1
            self._pts, self._keys, self._seekable = self._packet_index()
        except av.error.FFmpegError as exc:
            raise ValueError(f"{where}: corrupt video segment: {exc}") from exc
        if self._seekable and len(self._pts) != expected:
            raise ValueError(f"{where}: video segment holds {len(self._pts)} pictures, its sample lists {expected}")

    def frame(self, position: int) -> np.ndarray:
        """Picture ``position`` (presentation order) as RGB."""
        if not 0 <= position < self.expected:
            raise ValueError(f"{self.where}: picture {position} outside the segment's {self.expected}")
        image = self._rgb.get(position)
        if image is None:
            try:
                picture = self._pictures.get(position)
                picture = picture if picture is not None else self._decode_through(position)
            except av.error.FFmpegError as exc:
                raise ValueError(f"{self.where}: corrupt video segment: {exc}") from exc
            image = self._rgb[position] = self._reformatter.reformat(picture, format="rgb24").to_ndarray()
        return image

    def close(self) -> None:
        self._container.close()

    def _packet_index(self) -> tuple[list[int], list[int], bool]:
        """(pts of each picture in presentation order, positions of the keyframes, whether decode order
        is presentation order); the demuxer is put back at the start."""
        packets = [(p.pts, p.is_keyframe) for p in self._container.demux(self._stream) if p.pts is not None and p.size]
        in_order = all(a[0] < b[0] for a, b in itertools.pairwise(packets))
        if packets:
            self._container.seek(packets[0][0], stream=self._stream, backward=True, any_frame=False)
        return [pts for pts, _ in packets], [i for i, (_, key) in enumerate(packets) if key], in_order and bool(packets)

    def _decode_through(self, position: int) -> av.VideoFrame:
        if self._seekable:
            key = self._keys[bisect.bisect_right(self._keys, position) - 1] if self._keys else 0
            if self._frames is None or not key <= self._next <= position:
                self._container.seek(self._pts[key], stream=self._stream, backward=True, any_frame=False)
                self._frames, self._next = self._container.decode(self._stream), key
        elif self._frames is None:
            self._frames = self._container.decode(self._stream)
        while position not in self._pictures:
            picture = next(self._frames, None)
            if picture is None:
                raise ValueError(f"{self.where}: video segment decodes to {self._next} frames, its sample "
                                 f"lists {self.expected}")
            at = self._position_of(picture)
            self._pictures[at] = picture
            self._next, self.decoded = at + 1, self.decoded + 1
        return self._pictures[position]

    def _position_of(self, picture: av.VideoFrame) -> int:
        if not self._seekable:
            return self._next
        at = bisect.bisect_left(self._pts, picture.pts) if picture.pts is not None else len(self._pts)
        if at == len(self._pts) or self._pts[at] != picture.pts:
            raise ValueError(f"{self.where}: decoded a picture (pts {picture.pts}) the segment's packets do not list")
        return at
