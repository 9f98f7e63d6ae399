"""LeRobot metadata for exports: features, info.json, statistics, and GR00T's modality.json.

GR00T reads LeRobot v2.x datasets plus ``meta/modality.json``, which splits the flat state and
action vectors into named groups (``{"state": {"left_arm": {"start": 0, "end": 7}, ...}}``). The
groups are built from the state/action names: names that share a prefix before their first
separator (``left_waist``, ``left_gripper`` -> ``left``) form a group when each prefix's names are
contiguous; otherwise (or when names have no separator) the whole vector is one group. A source's
own modality.json (kept at ingest) wins over the names, and callers who know better pass the groups
explicitly (``versions export --modality FILE``).
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


def _groups_fit(groups: object, width: int) -> bool:
    """Groups that GR00T can slice a ``width``-wide vector with: ``0 <= start < end <= width`` each."""
    return isinstance(groups, dict) and bool(groups) and all(
        isinstance(g, dict) and isinstance(g.get("start"), int) and isinstance(g.get("end"), int)
        and 0 <= g["start"] < g["end"] <= width for g in groups.values())


def modality_json(state_names: list[str], action_names: list[str], cameras: dict[str, str],
                  groups: dict | None = None, source: dict | None = None,
                  annotations: list[str] | None = None) -> dict:
    """GR00T's meta/modality.json. ``cameras``: camera name -> LeRobot feature key.

    Per modality the first that applies wins: ``groups`` (the caller's, e.g. ``--modality FILE``), the
    ``source``'s own modality.json as ingested (its state/action groups only when they still fit the
    vectors), then groups built from the names. ``annotations`` are the exported ``annotation.*``
    columns: each is listed (GR00T looks them up by name); source entries naming absent columns are dropped.
    """
    groups, source = groups or {}, source or {}
    out: dict = {}
    for modality, names in (("state", state_names), ("action", action_names)):
        chosen = groups.get(modality)
        if chosen is None and _groups_fit(source.get(modality), len(names)):
            chosen = source[modality]
        out[modality] = chosen or name_groups(names, modality)
    out["video"] = groups.get("video") or _video_groups(cameras, source.get("video") or {})
    out["annotation"] = groups.get("annotation") or _annotation_groups(annotations or [],
                                                                        source.get("annotation") or {})
    return out


def _video_groups(cameras: dict[str, str], source: dict) -> dict:
    """The source's video names for the exported keys, then the camera names for the others."""
    keys = set(cameras.values())
    out = {name: entry for name, entry in source.items()
           if isinstance(entry, dict) and (entry.get("original_key") or name) in keys}
    named = {entry.get("original_key") or name for name, entry in out.items()}
    out.update({name: {"original_key": key} for name, key in cameras.items() if key not in named})
    return out


def _annotation_groups(columns: list[str], source: dict) -> dict:
    """Every exported annotation column under a name GR00T resolves (``annotation.<name>`` by default)."""
    if not columns:
        return {"human.task_description": {"original_key": "task_index"}}
    present = set(columns)
    out = {name: entry for name, entry in source.items()
           if isinstance(entry, dict) and (entry.get("original_key") or f"annotation.{name}") in present}
    listed = {entry.get("original_key") or f"annotation.{name}" for name, entry in out.items()}
    out.update({column[len("annotation."):]: {} for column in columns if column not in listed})
    return out


def feature_stats(values: np.ndarray) -> FeatureStats:
    values = np.asarray(values, dtype=np.float64)
    return FeatureStats.of(values.reshape(values.shape[0], -1))


def stats_entry(stats: FeatureStats, quantiles: bool = False, count: bool = True) -> dict:
    """LeRobot's per-feature statistics block (``count`` a one-element list, as LeRobot writes it).

    ``meta/stats.json`` gets per-dimension arrays only (``count=False``): GR00T slices every entry by
    its modality groups, so a one-element ``count`` would fail there. Counts stay in episodes_stats.
    """
    summary = stats.summary()
    entry = {k: summary[k] for k in ("min", "max", "mean", "std")}
    if count:
        entry["count"] = [int(summary["count"])]
    if quantiles:
        entry.update({"q01": summary["q01"], "q99": summary["q99"]})
    return entry


def numeric_feature(dtype: str, width: int | None, names: list[str] | None = None) -> dict:
    return {"dtype": dtype, "shape": [width if width is not None else 1], "names": names}


def video_feature(height: int, width: int, codec: str, pix_fmt: str, fps: float) -> dict:
    info = {"video.height": height, "video.width": width, "video.codec": codec, "video.pix_fmt": pix_fmt,
            "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}
    # "info", as LeRobot v2.1 and v3.0 write it; GR00T reads "info" whenever names say "channels".
    return {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"], "info": info}
