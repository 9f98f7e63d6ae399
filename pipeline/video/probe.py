"""Probe a video without decoding it all: codec, geometry, rate, exact frame count, CFR check.

The frame count comes from demuxing every packet (cheap, no decode). A truncated file shows up
as too few packets or an open error; a corrupt bitstream shows up when the first and last frames
the episode needs are decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


class VideoError(Exception):
    """A video cannot be used. The message names the file and the problem."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        self.problem = problem
        super().__init__(f"{uri}: {problem}")


@dataclass
class VideoProbe:
    codec: str
    width: int
    height: int
    pix_fmt: str
    fps: Fraction
    num_frames: int
    container: str
    bit_depth: int
    start_pts: int
    time_base: Fraction
    colorspace: int = 2  # FFmpeg AVColorSpace of the stream (2: unspecified); picks the YUV->RGB matrix
    color_range: int = 0  # FFmpeg AVColorRange (0: unspecified, 1: limited/MPEG, 2: full/JPEG)

    def frame_pts(self, index: int) -> int:
        """Presentation timestamp of frame ``index`` (constant frame rate, checked at probe)."""
        return self.start_pts + round(index / (self.fps * self.time_base))


def probe_container(container: av.container.InputContainer, uri: str) -> VideoProbe:
    if not container.streams.video:
        raise VideoError(uri, "no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.name is None:
        raise VideoError(uri, "no decoder for this video stream")
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                pts.append(packet.pts)
    except av.error.FFmpegError as exc:
        raise VideoError(uri, f"demux failed after {len(pts)} packets: {exc}") from exc
    if not pts:
        raise VideoError(uri, "no video packets (truncated or empty file)")
    pts_sorted = np.sort(np.asarray(pts, dtype=np.int64))
    time_base = Fraction(stream.time_base)
    fps = Fraction(stream.average_rate) if stream.average_rate else _rate_from_pts(pts_sorted, time_base)
    _check_constant_rate(uri, pts_sorted, fps, time_base)
    fmt = stream.codec_context.format
    return VideoProbe(
        codec=stream.codec_context.codec.canonical_name,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        pix_fmt=fmt.name if fmt else "",
        fps=fps,
        num_frames=len(pts_sorted),
        container=container.format.name,
        bit_depth=_bit_depth(fmt.name if fmt else ""),
        start_pts=int(pts_sorted[0]),
        time_base=time_base,
        colorspace=int(stream.codec_context.colorspace or 2),
        color_range=int(stream.codec_context.color_range or 0),
    )


def probe_video(uri: str, open_file) -> VideoProbe:
    """Probe the video that ``open_file()`` opens (a path or a binary file object)."""
    try:
        with av.open(open_file(), mode="r") as container:
            return probe_container(container, uri)
    except av.error.FFmpegError as exc:
        raise VideoError(uri, f"cannot open: {exc}") from exc


def _rate_from_pts(pts: np.ndarray, time_base: Fraction) -> Fraction:
    if pts.size < 2:
        return Fraction(1)
    step = int(np.median(np.diff(pts)))
    return (1 / (step * time_base)).limit_denominator(1001)


def _check_constant_rate(uri: str, pts: np.ndarray, fps: Fraction, time_base: Fraction) -> None:
    expected = np.array([round(i / (fps * time_base)) for i in range(pts.size)], dtype=np.int64) + pts[0]
    worst = int(np.abs(pts - expected).max())
    half_period = 1 / (2 * fps * time_base)
    if worst >= half_period:
        raise VideoError(uri, f"variable frame rate: a frame is {float(worst * time_base):.4f} s off the "
                              f"{float(fps):.3f} fps grid; re-encode it at a constant rate first")


def _bit_depth(pix_fmt: str) -> int:
    for depth in (16, 14, 12, 10):
        if f"p{depth}" in pix_fmt:
            return depth
    return 8
