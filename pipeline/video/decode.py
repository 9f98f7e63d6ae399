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

from pipeline.video.mjpeg import jpeg_frames
from pipeline.video.probe import VideoError, VideoProbe

if TYPE_CHECKING:
    import torch


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

    def _decode(self, container, video: VideoInput, wanted: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
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
            yield index, frame.to_ndarray(format="rgb24")
            position += 1
            if position == wanted.size:
                return
        raise VideoError(video.uri, f"video ended before frame {int(wanted[position])}")


def available_decoders() -> dict[str, Callable[..., FrameDecoder]]:
    """Backends that can be built on this machine (see pipeline.video.backends; GPU ones when present)."""
    from pipeline.video.backends import available_backends, backend_spec

    return {name: backend_spec(name).build for name in available_backends()}
