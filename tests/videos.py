"""Test videos made here with PyAV: every frame distinct (a bar moves one step per frame and the
hue turns), saturated colours (a wrong YUV matrix shows), explicit colour tags, short GOPs (so a
request in the middle of the file is a real seek)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import torch

from pipeline.video import VideoInput, probe_video

QUIET = {"libx265": {"x265-params": "log-level=none"}, "libsvtav1": {}}
BT709, BT601, UNSPECIFIED = 1, 6, 2  # FFmpeg AVColorSpace
LIMITED, FULL = 1, 2  # FFmpeg AVColorRange


def frame_image(index: int, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    phase = index * 0.35
    image[..., 0] = 127 + 120 * np.sin(xx / width * 6.28 + phase)
    image[..., 1] = 127 + 120 * np.sin(yy / height * 6.28 + phase * 0.7)
    image[..., 2] = 127 + 120 * np.cos((xx + yy) / (width + height) * 6.28 - phase)
    bar = (index * 7) % max(1, width - 16)
    image[:, bar: bar + 12] = (250, 20, 20)
    image[: height // 4, : width // 4] = (20, 200, 40)
    image[-height // 4:, -width // 4:] = (30, 40, 230)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_video(path: Path, codec: str = "libx264", *, frames: int = 24, height: int = 96, width: int = 128,
               pix_fmt: str = "yuv420p", colorspace: int | None = None, color_range: int | None = None,
               gop: int = 8, crf: int = 12) -> Path:
    """Encode ``frames`` frames of ``frame_image`` to ``path`` (MP4, constant 30 fps, no B-frames)."""
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner otherwise
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        options = {"crf": str(crf), "g": str(gop)} | QUIET.get(codec, {})
        options |= {"preset": "12"} if codec == "libsvtav1" else {"preset": "ultrafast", "bf": "0"}
        stream.options = options
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        if color_range is not None:
            stream.codec_context.color_range = color_range
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def video_input(path: Path) -> VideoInput:
    return VideoInput(str(path), lambda: str(path), probe_video(str(path), lambda: str(path)))


def pyav_frames(path: Path, fmt: str = "rgb24") -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format=fmt) for frame in container.decode(video=0)]


class TensorDecoder:
    """Any FrameDecoder presented as a device decoder on the CPU: exercises the device pipeline
    (batching, torch resize, host or device JPEG) on machines without a GPU."""

    device = "cpu"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = f"{inner.name}-tensors"

    def frames(self, video, indices):
        return self.inner.frames(video, indices)

    def batches(self, video, indices, batch_size):
        chunk, images = [], []
        for index, image in self.inner.frames(video, indices):
            chunk.append(index)
            images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
            if len(chunk) == batch_size:
                yield chunk, torch.stack(images)
                chunk, images = [], []
        if chunk:
            yield chunk, torch.stack(images)
