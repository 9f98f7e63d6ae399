"""Decoder interface and the PyAV (CPU) backend.

A decoder yields the requested frames of one video, in ascending order, as HxWx3 uint8 RGB. Frame
``i`` is the i-th frame in presentation order; the backend seeks once (backwards to the keyframe
before the first wanted frame) and decodes forward only. GPU backends implement the same protocol.
Motion-JPEG tracks (source JPEG frames stored as they are) are demuxed by PyAV and decoded by libjpeg.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipeline.video.mjpeg import jpeg_frames
from pipeline.video.probe import VideoError, VideoProbe
from pipeline.video.resize import JpegPlanes, scale_array, scale_frame, scale_to_jpeg_planes

if TYPE_CHECKING:
    import torch

Picture = av.VideoFrame | np.ndarray  # a decoded frame as FFmpeg holds it, or as an RGB array (JPEG tracks)


@dataclass
class VideoInput:
    """A stored video: how to open it and what its probe said (rate, first pts, time base)."""

    uri: str
    open: Callable[[], Any]  # returns a path or a binary file object
    probe: VideoProbe
    channel_order: str = "rgb"  # the camera's (schemas.CameraInfo): "bgr" only on mjpeg tracks, swapped on decode


class FrameDecoder(Protocol):
    name: str

    def frames(self, video: VideoInput, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, rgb)`` for every index in ``indices`` (ascending, unique)."""
        ...


class DeviceFrameDecoder(FrameDecoder, Protocol):
    """A decoder whose frames can stay where they were decoded (a GPU): batches of NCHW uint8 tensors."""

    device: str

    def batches(self, video: VideoInput, indices: Sequence[int], batch_size: int,
                ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Yield ``(indices, frames[N, 3, H, W] uint8 on self.device)`` covering ``indices`` in order."""
        ...


def checked_indices(video: VideoInput, indices: Sequence[int]) -> np.ndarray:
    """``indices`` sorted and unique, or a VideoError naming the file when one is out of range."""
    wanted = np.unique(np.asarray(indices, dtype=np.int64))
    if wanted.size and (wanted[0] < 0 or wanted[-1] >= video.probe.num_frames):
        raise VideoError(video.uri, f"frames {wanted[0]}..{wanted[-1]} outside 0..{video.probe.num_frames - 1}")
    return wanted


class BatchedDecoder:
    """Mixin for device decoders that decode in batches: ``frames`` as host arrays from ``batches``."""

    def batches(self, video: VideoInput, indices: Sequence[int], batch_size: int):
        raise NotImplementedError

    def frames(self, video: VideoInput, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for chunk, batch in self.batches(video, indices, 16):
            host = batch.permute(0, 2, 3, 1).contiguous().cpu().numpy()
            yield from zip(chunk, host, strict=True)


class PyAVDecoder:
    """CPU decoding through PyAV's bundled FFmpeg, with an explicit thread count."""

    name = "pyav"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else max(1, min(4, os.cpu_count() or 1))

    def frames(self, video: VideoInput, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for index, picture in self._pictures(video, indices):
            yield index, picture if isinstance(picture, np.ndarray) else picture.to_ndarray(format="rgb24")

    def scaled_frames(self, video: VideoInput, indices: Sequence[int], height: int, width: int,
                      fmt: str = "rgb24") -> Iterator[tuple[int, np.ndarray]]:
        """Like ``frames``, but each picture converted and resized in one swscale pass
        (``pipeline.video.resize.scale_frame``): no full-size RGB copy is made."""
        reformatter = VideoReformatter()  # one swscale context for the whole video
        for index, picture in self._pictures(video, indices):
            if isinstance(picture, np.ndarray):
                yield index, scale_array(picture, height, width, fmt)
            else:
                yield index, scale_frame(picture, height, width, fmt, reformatter, self.threads)

    def jpeg_planes(self, video: VideoInput, indices: Sequence[int], height: int, width: int,
                    subsampling: str) -> Iterator[tuple[int, JpegPlanes | np.ndarray]]:
        """Like ``scaled_frames``, but each picture as JPEG's YCbCr planes
        (``pipeline.video.resize.scale_to_jpeg_planes``), or a BGR array where those need a colour matrix."""
        reformatter = VideoReformatter()
        for index, picture in self._pictures(video, indices):
            if isinstance(picture, np.ndarray):
                yield index, scale_array(picture, height, width, "bgr24")
            else:
                yield index, scale_to_jpeg_planes(picture, height, width, subsampling, reformatter, self.threads)

    def _pictures(self, video: VideoInput, indices: Sequence[int]) -> Iterator[tuple[int, Picture]]:
        wanted = np.unique(np.asarray(indices, dtype=np.int64))
        if wanted.size == 0:
            return
        if wanted[0] < 0 or wanted[-1] >= video.probe.num_frames:
            raise VideoError(video.uri, f"frames {wanted[0]}..{wanted[-1]} outside 0..{video.probe.num_frames - 1}")
        try:
            with av.open(video.open(), mode="r") as container:
                yield from self._decode(container, video, wanted)
        except av.error.FFmpegError as exc:
            raise VideoError(video.uri, f"decode failed: {exc}") from exc

    def _decode(self, container, video: VideoInput, wanted: np.ndarray) -> Iterator[tuple[int, Picture]]:
        stream = container.streams.video[0]
        if video.probe.codec == "mjpeg":  # all-intra JPEG: libjpeg, like the connectors (pipeline.video.mjpeg)
            yield from jpeg_frames(container, stream, video.uri, video.probe, wanted, video.channel_order == "bgr")
            return
        if video.channel_order != "rgb":
            raise VideoError(video.uri, f"channel_order {video.channel_order!r} is only defined for mjpeg tracks")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        probe = video.probe
        if wanted[0] > 0:
            container.seek(probe.frame_pts(int(wanted[0])), stream=stream, backward=True, any_frame=False)
        position = 0
        for frame in container.decode(stream):
            pts = frame.pts if frame.pts is not None else frame.dts
            index = round((pts - probe.start_pts) * probe.time_base * probe.fps)
            if index < wanted[position]:
                continue
            if index > wanted[position]:
                raise VideoError(video.uri, f"frame {int(wanted[position])} missing (decoder jumped to {index})")
            yield index, frame
            position += 1
            if position == wanted.size:
                return
        raise VideoError(video.uri, f"video ended before frame {int(wanted[position])}")
