"""Resizing batches of frames on their device with the CPU path's rule (pipeline.video.resize).

Shrinking is area averaging written as two matrix products (rows, then columns) whose weights are
the pixel overlaps OpenCV's INTER_AREA uses, so GPU shards match CPU shards to rounding instead of
differing by filter; enlarging is bilinear with half-pixel centres, as INTER_LINEAR.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def resize_batch(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``frames`` [N, 3, H, W] uint8 -> [N, 3, height, width] uint8 on the same device."""
    h, w = frames.shape[-2:]
    if (h, w) == (height, width):
        return frames
    x = frames.to(torch.float32)
    if height <= h and width <= w:
        rows = _area_weights(height, h, str(frames.device))
        cols = _area_weights(width, w, str(frames.device))
        y = torch.matmul(torch.matmul(rows, x), cols.T)
    else:
        y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return y.round_().clamp_(0.0, 255.0).to(torch.uint8)


@lru_cache(maxsize=64)
def _area_weights(n_out: int, n_in: int, device: str) -> torch.Tensor:
    """[n_out, n_in]: the share of source pixel j in output pixel i (rows sum to 1)."""
    scale = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64) * scale
    hi = lo + scale
    j = torch.arange(n_in, dtype=torch.float64)
    overlap = (torch.minimum(hi[:, None], j[None, :] + 1) - torch.maximum(lo[:, None], j[None, :])).clamp_(min=0)
    return (overlap / scale).to(device=device, dtype=torch.float32)
