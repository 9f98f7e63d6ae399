"""Resizing frames to a view's size: area averaging when shrinking, bilinear when enlarging.

Two engines. ``resize_frame`` is OpenCV on an RGB array (``INTER_AREA`` / ``INTER_LINEAR``): the
reference the GPU resize (``resize_torch``) matches. ``scale_frame`` is swscale on the decoded picture
itself: colour conversion and resize in one pass at the *output* size, so no full-size RGB frame is
ever made (at 480p that conversion cost more than the decode). Its flags include ``BITEXACT`` and
``ACCURATE_RND`` (swscale's C rounding, independent of the CPU's SIMD level, so a CPU-built shard is
the same bytes on every machine with this FFmpeg) and ``FULL_CHR_H_INT`` (chroma interpolated at full
resolution: 44-45 dB against OpenCV's area resize of the RGB frame, 35 dB without it).
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange, Interpolation, VideoReformatter

_EXACT = int(Interpolation.ACCURATE_RND) | int(Interpolation.BITEXACT) | int(Interpolation.FULL_CHR_H_INT)
SHRINK_FLAGS = int(Interpolation.AREA) | _EXACT
ENLARGE_FLAGS = int(Interpolation.BILINEAR) | _EXACT


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (HxWx3 uint8) stretched to ``height`` x ``width``; returned as is when already that size."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    interpolation = cv2.INTER_AREA if height <= h and width <= w else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def scale_frame(frame: av.VideoFrame, height: int, width: int, fmt: str = "rgb24",
                reformatter: VideoReformatter | None = None, threads: int | None = None) -> np.ndarray:
    """A decoded picture as ``height`` x ``width`` ``fmt`` (rgb24 or bgr24) in one swscale pass.

    At the picture's own size this is PyAV's plain conversion (``to_ndarray``), the pixels every
    decoder test compares against. ``reformatter``: one kept across a video's frames, so swscale's
    context is made once per video rather than once per frame (``frame.reformat`` makes a new one on
    every decoded frame: that, not the scaling, was most of the resize's cost at 480p). ``threads``:
    swscale's slice threads (None: its automatic count; the bytes are the same for any count).
    """
    reformatter = reformatter or VideoReformatter()
    if (frame.height, frame.width) == (height, width):
        return reformatter.reformat(frame, format=fmt, threads=threads).to_ndarray()
    flags = SHRINK_FLAGS if height <= frame.height and width <= frame.width else ENLARGE_FLAGS
    return reformatter.reformat(frame, width, height, format=fmt, interpolation=flags, threads=threads).to_ndarray()


def scale_array(image: np.ndarray, height: int, width: int, fmt: str = "rgb24") -> np.ndarray:
    """An RGB array through the same swscale resize (frames a decoder returned as arrays: JPEG, torchcodec)."""
    if image.shape[:2] == (height, width):
        return image if fmt == "rgb24" else np.ascontiguousarray(image[..., ::-1])
    return scale_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"), height, width, fmt)


@dataclass(frozen=True)
class JpegPlanes:
    """A frame as JPEG's own colours: full-range BT.601 Y, Cb, Cr planes at the member's subsampling."""

    y: np.ndarray
    cb: np.ndarray
    cr: np.ndarray


# JPEG subsampling -> the planar layout swscale writes for it (full range is asked for separately)
JPEG_PLANAR = {"444": "yuv444p", "422": "yuv422p", "420": "yuv420p"}
# Decoded layouts whose samples are 8-bit BT.601-style YCbCr (any range): the planes need no colour matrix.
_PLANAR_YCBCR = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})
# Colorspace tags read as BT.601 by the RGB path too: unspecified (2), FCC (4), BT.470BG (5), SMPTE 170M (6).
_BT601_TAGS = frozenset({2, 4, 5, 6})


def scale_to_jpeg_planes(frame: av.VideoFrame, height: int, width: int, subsampling: str,
                         reformatter: VideoReformatter, threads: int | None = None) -> JpegPlanes | np.ndarray:
    """The picture at ``height`` x ``width`` as JPEG planes in one swscale pass, with no RGB frame made:
    a JPEG holds YCbCr, so converting to RGB only for the encoder to convert back cost half the frame
    path (0.87 vs 0.47 ms per 480p frame). Same flags as ``scale_frame``. A picture whose colours are
    not BT.601 (tagged BT.709/BT.2020, RGB, more than 8 bits) would need a colour matrix swscale does
    not apply between YUV layouts, and a picture already at the view's size is kept as the plain decode
    (the frame every decoder test compares against; its chroma would otherwise be upsampled by other
    rules, 39.9 dB from it on GR00T's demo): both come back as a BGR array from ``scale_frame``."""
    same_size = (frame.height, frame.width) == (height, width)
    if same_size or frame.format.name not in _PLANAR_YCBCR or int(frame.colorspace) not in _BT601_TAGS:
        return scale_frame(frame, height, width, "bgr24", reformatter, threads)
    flags = SHRINK_FLAGS if height <= frame.height and width <= frame.width else ENLARGE_FLAGS
    scaled = reformatter.reformat(frame, width, height, format=JPEG_PLANAR[subsampling], interpolation=flags,
                                  dst_color_range=ColorRange.JPEG, threads=threads)
    y, cb, cr = (np.ascontiguousarray(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width])
                 for p in scaled.planes)
    return JpegPlanes(y, cb, cr)
