"""Independent readers for tests: they use pyarrow and PyAV directly, never ActionReel's readers."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decode_all_frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video, in order, as RGB (plain PyAV, sequential)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# swscale flags of a view's default scaler, spelled with libswscale's own constants (swscale.h):
# SWS_AREA 0x20, SWS_FULL_CHR_H_INT 0x2000, SWS_ACCURATE_RND 0x40000, SWS_BITEXACT 0x80000.
SWS_VIEW_SHRINK = 0x20 | 0x2000 | 0x40000 | 0x80000


def decode_all_frames_scaled(path: str | Path, height: int, width: int) -> list[np.ndarray]:
    """Every frame resized the way a ``scaler="swscale"`` view shrinks it: one swscale pass on the picture."""
    with av.open(str(path)) as container:
        return [frame.reformat(width, height, format="rgb24", interpolation=SWS_VIEW_SHRINK).to_ndarray()
                for frame in container.decode(video=0)]


def resize_like_view(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    interpolation = cv2.INTER_AREA if height <= h and width <= w else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def lerobot_source_episodes(root: Path) -> dict[int, dict]:
    """Per LeRobot episode index: its parquet rows as numpy arrays, read with pyarrow alone."""
    info = json.loads((root / "meta/info.json").read_text())
    out: dict[int, dict] = {}
    for path in sorted((root / "data").rglob("*.parquet")):
        table = pq.read_table(path)
        for index in np.unique(table.column("episode_index").to_numpy()):
            rows = table.filter(pc.equal(table.column("episode_index"), int(index)))
            if "frame_index" in rows.column_names:
                rows = rows.sort_by("frame_index")
            out[int(index)] = {
                "state": np.stack(rows.column("observation.state").to_numpy(zero_copy_only=False)),
                "action": np.stack(rows.column("action").to_numpy(zero_copy_only=False)),
                "table": rows,
                "path": path,
            }
    for entry in out.values():
        entry["fps"] = info["fps"]
    return out
