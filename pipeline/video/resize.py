"""Resizing frames to a view's size: area averaging when shrinking, bilinear when enlarging."""

from __future__ import annotations

import cv2
import numpy as np


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (HxWx3 uint8) stretched to ``height`` x ``width``; returned as is when already that size."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    interpolation = cv2.INTER_AREA if height <= h and width <= w else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
