"""LeRobot metadata for exports: features, info.json, statistics, and GR00T's modality.json.

GR00T reads LeRobot v2.x datasets plus ``meta/modality.json``, which splits the flat state and
action vectors into named groups (``{"state": {"left_arm": {"start": 0, "end": 7}, ...}}``). The
groups are built from the state/action names: names that share a prefix before their first
separator (``left_waist``, ``left_gripper`` -> ``left``) form a group when each prefix's names are
contiguous; otherwise (or when names have no separator) the whole vector is one group. Callers
who know better pass the groups explicitly.
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.stats import FeatureStats

NUMERIC_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
_SEPARATOR = re.compile(r"[_./:-]")


def name_groups(names: list[str], fallback: str) -> dict[str, dict[str, int]]:
    """Contiguous groups of dimensions by name prefix, in vector order."""
    if not names:
        return {}
    prefixes = [_SEPARATOR.split(n, 1)[0] if _SEPARATOR.search(n) else "" for n in names]
    runs: list[tuple[str, int, int]] = []
    for i, prefix in enumerate(prefixes):
        if runs and runs[-1][0] == prefix:
            runs[-1] = (prefix, runs[-1][1], i + 1)
        else:
            runs.append((prefix, i, i + 1))
    labels = [r[0] for r in runs]
    if "" in labels or len(set(labels)) != len(labels) or len(runs) == 1:
        return {fallback: {"start": 0, "end": len(names)}}
    return {prefix: {"start": start, "end": end} for prefix, start, end in runs}


def modality_json(state_names: list[str], action_names: list[str], cameras: dict[str, str],
                  groups: dict | None = None) -> dict:
    """GR00T's meta/modality.json. ``cameras``: camera name -> LeRobot feature key."""
    groups = groups or {}
    return {
        "state": groups.get("state") or name_groups(state_names, "state"),
        "action": groups.get("action") or name_groups(action_names, "action"),
        "video": {name: {"original_key": key} for name, key in cameras.items()},
        "annotation": {"human.task_description": {"original_key": "task_index"}},
    }


def feature_stats(values: np.ndarray) -> FeatureStats:
    values = np.asarray(values, dtype=np.float64)
    return FeatureStats.of(values.reshape(values.shape[0], -1))


def stats_entry(stats: FeatureStats, quantiles: bool = False) -> dict:
    """LeRobot's per-feature statistics block (``count`` is a one-element list, as LeRobot writes it)."""
    summary = stats.summary()
    entry = {k: summary[k] for k in ("min", "max", "mean", "std")}
    entry["count"] = [int(summary["count"])]
    if quantiles:
        entry.update({"q01": summary["q01"], "q99": summary["q99"]})
    return entry


def numeric_feature(dtype: str, width: int | None, names: list[str] | None = None) -> dict:
    return {"dtype": dtype, "shape": [width if width is not None else 1], "names": names}


def video_feature(height: int, width: int, codec: str, pix_fmt: str, fps: float, layout: str) -> dict:
    info = {"video.height": height, "video.width": width, "video.codec": codec, "video.pix_fmt": pix_fmt,
            "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}
    return {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
            ("info" if layout == "v3.0" else "video_info"): info}
