"""Fitting a frame to the view's size, and encoding it as a shard member (JPEG/PNG through OpenCV,
arrays as pickle-free .npy).

The CPU frame path's resize and encoder: their bytes define what a CPU-built shard holds (shards are
byte-reproducible), so they change only with a new view option. Resize modes (``ViewConfig.resize``):

- ``stretch``: resized to height x width, aspect ratio not kept (the historical default);
- ``pad``: letterbox as openpi's ``resize_with_pad``: scaled by ``1 / max(w / W, h / H)`` to
  ``int(h / ratio) x int(w / ratio)``, placed at ``(int((H - rh) / 2), int((W - rw) / 2))`` on a canvas
  filled with ``pad_value``;
- ``crop``: the centred region of the target's aspect ratio, resized to height x width.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import simplejpeg

from pipeline.shards.view import JPEG_SUBSAMPLING, ViewConfig
from pipeline.video.resize import JpegPlanes, resize_frame


def letterbox_region(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """(top, left, rows, cols) of the valid region of a ``height x width`` frame letterboxed to the output."""
    if (height, width) == (out_height, out_width):
        return 0, 0, height, width
    ratio = max(width / out_width, height / out_height)
    rows, cols = int(height / ratio), int(width / ratio)
    return max(0, int((out_height - rows) / 2)), max(0, int((out_width - cols) / 2)), rows, cols


def crop_region(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """(top, left, rows, cols) of the centred source region with the output's aspect ratio."""
    scale = min(height / out_height, width / out_width)
    rows, cols = min(height, round(out_height * scale)), min(width, round(out_width * scale))
    return (height - rows) // 2, (width - cols) // 2, rows, cols


def fit_frame(rgb: np.ndarray, view: ViewConfig) -> np.ndarray:
    """``rgb`` (HxWx3 uint8) at the view's size by its resize mode."""
    height, width = rgb.shape[:2]
    if view.resize == "stretch" or (height, width) == (view.height, view.width):
        return resize_frame(rgb, view.height, view.width)
    if view.resize == "crop":
        top, left, rows, cols = crop_region(height, width, view.height, view.width)
        return resize_frame(np.ascontiguousarray(rgb[top: top + rows, left: left + cols]), view.height, view.width)
    top, left, rows, cols = letterbox_region(height, width, view.height, view.width)
    canvas = np.full((view.height, view.width, 3), view.pad_value, np.uint8)
    canvas[top: top + rows, left: left + cols] = resize_frame(rgb, rows, cols)
    return canvas


def encode_image(rgb: np.ndarray, view: ViewConfig) -> bytes:
    if view.frame_codec == "npy":
        return npy_bytes(rgb)
    return encode_bgr(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), view)


def member_format(view: ViewConfig) -> str:
    """The pixel layout a frame should arrive in for this view's encoder (OpenCV encodes BGR)."""
    return "rgb24" if view.frame_codec == "npy" else "bgr24"


def encode_member(image: np.ndarray | JpegPlanes, view: ViewConfig) -> bytes:
    """A frame already in ``member_format(view)`` (or as JPEG planes) as member bytes (no channel swap)."""
    if isinstance(image, JpegPlanes):
        return encode_planes(image, view)
    return npy_bytes(image) if view.frame_codec == "npy" else encode_bgr(image, view)


def encode_planes(planes: JpegPlanes, view: ViewConfig) -> bytes:
    """A JPEG of YCbCr planes as they are (libjpeg-turbo through simplejpeg, baseline, standard tables,
    like OpenCV's encoder): the encoder's own RGB -> YCbCr pass is skipped along with swscale's RGB."""
    return simplejpeg.encode_jpeg_yuv_planes(planes.y, planes.cb, planes.cr, quality=view.jpeg_quality)


def encode_bgr(bgr: np.ndarray, view: ViewConfig) -> bytes:
    params = []
    if view.frame_codec == "jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, view.jpeg_quality,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR, JPEG_SUBSAMPLING[view.jpeg_subsampling]]
    ok, data = cv2.imencode(f".{view.frame_codec}", bgr, params)
    if not ok:
        raise ValueError(f"{view.frame_codec} encoding failed")
    return data.tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
