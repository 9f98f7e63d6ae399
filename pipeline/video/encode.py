"""Encode image sequences (HDF5 arrays, JPEG topics, parquet images) into H.264/HEVC/AV1 MP4.

The encoder, quality and GOP are explicit and recorded in the catalog (``encode_params``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

RGB_TO_YUV = ("swscale", "opencv")
# Area-averaged chroma with swscale's C rounding: the encoder's input is the same bytes on every CPU.
_SWSCALE_FLAGS = int(Interpolation.AREA) | int(Interpolation.ACCURATE_RND) | int(Interpolation.BITEXACT)


@dataclass(frozen=True)
class EncodeConfig:
    codec: str = "libx264"
    crf: int = 18
    gop_seconds: float = 1.0
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    threads: int = 1  # encoder threads; 1 makes the bytes independent of the machine (0: the encoder's choice)
    jpeg_passthrough: bool = True  # store source JPEG frames as they are (pipeline.video.mjpeg)
    rgb_to_yuv: str = "swscale"  # RGB -> YUV 4:2:0 by swscale (area chroma) or "opencv" (2.4 dB lossier)

    def __post_init__(self) -> None:
        if self.rgb_to_yuv not in RGB_TO_YUV:
            raise ValueError(f"rgb_to_yuv {self.rgb_to_yuv!r} is not one of {', '.join(RGB_TO_YUV)}")

    def describe(self, fps: Fraction) -> str:
        return (f"{self.codec} crf={self.crf} g={self.gop(fps)} preset={self.preset} "
                f"pix_fmt={self.pix_fmt} threads={self.threads or 'auto'} rgb_to_yuv={self.rgb_to_yuv} container=mp4")

    def gop(self, fps: Fraction) -> int:
        return max(1, round(float(fps) * self.gop_seconds))


# Pixel-exact storage for sources that were lossless (raw arrays, PNG): H.264 on RGB planes at qp 0
# (libx264rgb, crf 0 is lossless), decoded by any FFmpeg; CPU decode only (NVDEC takes no RGB H.264).
LOSSLESS = EncodeConfig(codec="libx264rgb", crf=0, pix_fmt="rgb24")


def encode_frames(frames: Iterable[np.ndarray], fps: Fraction, width: int, height: int,
                  config: EncodeConfig = EncodeConfig()) -> tuple[bytes, int]:
    """Encode RGB frames to an MP4 in memory. Returns the file bytes and the frame count."""
    odd = width % 2 or height % 2
    pix_fmt = "yuv444p" if odd and config.pix_fmt == "yuv420p" else config.pix_fmt
    buffer = io.BytesIO()
    count = 0
    convert = _converter(pix_fmt, config.rgb_to_yuv)
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(config.codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = 1 / fps  # one tick per frame: frame i has pts i
        options = {"crf": str(config.crf), "g": str(config.gop(fps)), "preset": config.preset, "bf": "0"}
        if config.threads:
            options["threads"] = str(config.threads)
        stream.options = options
        for image in frames:
            if image.shape != (height, width, 3) or image.dtype != np.uint8:
                raise ValueError(f"frame {count} is {image.shape} {image.dtype}, expected ({height}, {width}, 3) uint8")
            frame = convert(image)
            frame.pts = count
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue(), count


def _converter(pix_fmt: str, rgb_to_yuv: str) -> Callable[[np.ndarray], av.VideoFrame]:
    """RGB array -> encoder-ready frame. For yuv420p swscale converts in one pass (BT.601 limited range,
    area-averaged chroma): 36.3 dB for the round trip alone on camera-like frames, against 33.6 dB for
    OpenCV's 2x2 average, which capped every encode 1.2 dB below LeRobot's at the same crf. One
    reformatter per video keeps swscale's context across frames."""
    if pix_fmt != "yuv420p":
        return lambda image: av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    if rgb_to_yuv == "opencv":
        return lambda image: av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    reformatter = VideoReformatter()

    def swscale(image: np.ndarray) -> av.VideoFrame:
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        return reformatter.reformat(rgb, format="yuv420p", interpolation=_SWSCALE_FLAGS)
    return swscale

