"""Open a dataset with LeRobot's own ``LeRobotDataset`` and dump what a trainer would get from it.

Runs under the consumer environment that ``make consumers`` builds (LeRobot 0.4.x reads v3.0; LeRobot
0.3.x, put first on PYTHONPATH, reads v2.1 as openpi's pinned LeRobot does), never under the project's
own venv: it imports nothing of ActionReel. Writes ``<out>.npz`` (every parquet column as LeRobot's
HF dataset holds it, and ``item.<key>`` arrays for the probed indices, camera frames as uint8 HWC) and
``<out>.json`` (version, counts, features, stats keys, per-index errors, tasks of the probed items).

    python lerobot_probe.py ROOT OUT [--indices 0,5,9] [--delta-timestamps JSON]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _column(column) -> np.ndarray:
    """A parquet column as LeRobot's HF dataset holds it, dtype kept (lists as [rows, width])."""
    column = column.combine_chunks()
    if hasattr(column.type, "value_type"):
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)
    return column.to_numpy(zero_copy_only=False)


def _frame(value) -> np.ndarray:
    """A float image in [0, 1] (C, H, W) back to the uint8 (H, W, C) frame it was decoded from."""
    chw = value.numpy()
    return np.round(chw * 255.0).astype(np.uint8).transpose(*range(chw.ndim - 3), -2, -1, -3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--indices", default="")
    parser.add_argument("--delta-timestamps", default="")
    parser.add_argument("--video-backend", default="torchcodec")
    args = parser.parse_args()

    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    deltas = json.loads(args.delta_timestamps) if args.delta_timestamps else None
    dataset = LeRobotDataset("local/probe", root=args.root, video_backend=args.video_backend, delta_timestamps=deltas)
    camera_keys = set(dataset.meta.camera_keys)
    arrays: dict[str, np.ndarray] = {}
    table = dataset.hf_dataset.with_format(None).data.table  # what LeRobot loaded from the parquet files
    for name in table.column_names:
        if name not in camera_keys:
            arrays[f"column.{name}"] = _column(table.column(name))
    indices = [int(i) for i in args.indices.split(",") if i.strip()]
    items: dict[str, list] = {}
    errors, tasks, ok = {}, [], []
    for index in indices:
        try:
            item = dataset[index]
        except Exception as exc:  # the real reader's refusal is part of the contract: record it
            errors[str(index)] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        ok.append(index)
        tasks.append(item.get("task"))
        for key, value in item.items():
            if key == "task":
                continue
            items.setdefault(key, []).append(_frame(value) if key in camera_keys else np.asarray(value))
    for key, values in items.items():
        arrays[f"item.{key}"] = np.stack(values)
    arrays["item_indices"] = np.asarray(ok, dtype=np.int64)
    np.savez(args.out + ".npz", **arrays)
    meta = {"lerobot": getattr(lerobot, "__version__", "?"), "codebase_version": dataset.meta.info["codebase_version"],
            "num_episodes": dataset.num_episodes, "num_frames": dataset.num_frames, "fps": dataset.fps,
            "camera_keys": sorted(camera_keys), "features": dataset.meta.info["features"],
            "stats_keys": {k: sorted(v) for k, v in (dataset.meta.stats or {}).items()},
            "errors": errors, "tasks": tasks}
    with open(args.out + ".json", "w") as out:
        json.dump(meta, out, default=str)


if __name__ == "__main__":
    main()
