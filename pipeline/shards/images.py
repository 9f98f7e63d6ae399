"""Encoding one frame or array as a shard member (JPEG/PNG through OpenCV, arrays as pickle-free .npy).

The CPU frame path's encoder: its bytes define what a CPU-built shard holds (shards are
byte-reproducible), so it changes only with a new view option.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

from pipeline.shards.view import JPEG_SUBSAMPLING, ViewConfig


def encode_image(rgb: np.ndarray, view: ViewConfig) -> bytes:
    if view.frame_codec == "npy":
        return npy_bytes(rgb)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
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
