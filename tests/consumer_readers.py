"""The checks and look-ups the trainers' own LeRobot readers make, re-implemented from their source.

LeRobot's v2.1 ``LeRobotDataset`` (the same code at the commit openpi pins) cannot be installed here
beside torch 2.13 without torchvision and HF ``datasets``, so its loading steps are written out below,
fact by fact, from ``lerobot/common/datasets/{lerobot_dataset,utils,compute_stats,video_utils}.py``;
GR00T's ``LeRobotSingleDataset`` from ``gr00t/data/dataset.py`` and ``gr00t/data/schema.py``.
Each function raises what the real reader raises (KeyError, IndexError, ValueError, AssertionError)
where the real reader would, and returns what it would load. Only pyarrow, numpy and PyAV are used.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LEROBOT_TOLERANCE_S = 1e-4  # LeRobotDataset(tolerance_s=1e-4)
GR00T_ROTATION_TYPES = {"axis_angle", "quaternion", "rotation_6d", "matrix", "euler_angles_rpy", "euler_angles_ryp",
                        "euler_angles_pry", "euler_angles_pyr", "euler_angles_yrp", "euler_angles_ypr"}
GR00T_STAT_KEYS = ("max", "min", "mean", "std", "q01", "q99")  # DatasetStatisticalValues: all required


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def video_frame_times(path: Path) -> np.ndarray:
    """Presentation time (s) of every frame, as PyAV (LeRobot's ``pyav`` backend) reports it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return np.array([float(frame.pts * stream.time_base) for frame in container.decode(stream)])


def nearest_frames(query_s: np.ndarray, frame_s: np.ndarray, tolerance_s: float = LEROBOT_TOLERANCE_S) -> np.ndarray:
    """``decode_video_frames``: the nearest loaded frame (argmin, first on ties) when closer than the
    tolerance (``min_ < tolerance_s``; LeRobot asserts instead of returning -1)."""
    dist = np.abs(np.asarray(query_s, np.float64)[:, None] - frame_s[None, :])
    nearest = dist.argmin(axis=1)
    return np.where(dist[np.arange(len(nearest)), nearest] < tolerance_s, nearest, -1)


def _arrow_dtype(feature: dict) -> tuple[str, tuple]:
    return feature["dtype"], tuple(feature["shape"])


def _column_dtype(column: pa.Field) -> tuple[str, tuple]:
    kind = column.type
    if pa.types.is_fixed_size_list(kind):
        return np.dtype(kind.value_type.to_pandas_dtype()).name, (kind.list_size,)
    if pa.types.is_list(kind):
        return np.dtype(kind.value_type.to_pandas_dtype()).name, (-1,)
    return np.dtype(kind.to_pandas_dtype()).name, (1,)


def open_lerobot_v21(root: Path) -> dict:
    """``LeRobotDatasetMetadata.load_metadata`` + ``LeRobotDataset.__init__`` for a local v2.1 dataset."""
    info = json.loads((root / "meta/info.json").read_text())
    for feature in info["features"].values():  # load_info
        feature["shape"] = tuple(feature["shape"])
    major, minor = (int(x) for x in info["codebase_version"].lstrip("v").split("."))  # check_version_compatibility
    if major != 2:
        raise ValueError(f"codebase_version {info['codebase_version']} is not readable by a v2.1 reader")
    tasks = {row["task_index"]: row["task"] for row in sorted(_jsonl(root / "meta/tasks.jsonl"),
                                                              key=lambda r: r["task_index"])}
    episodes = {row["episode_index"]: row for row in sorted(_jsonl(root / "meta/episodes.jsonl"),
                                                            key=lambda r: r["episode_index"])}
    if minor >= 1:
        episodes_stats = {row["episode_index"]: {k: {s: np.array(v) for s, v in ft.items()}
                                                 for k, ft in row["stats"].items()}
                          for row in _jsonl(root / "meta/episodes_stats.jsonl")}
        _assert_type_and_shape(list(episodes_stats.values()))  # aggregate_stats
        for stats in episodes_stats.values():
            for ft in stats.values():
                _ = ft["mean"] * ft["count"], ft["std"] ** 2, ft["min"], ft["max"]  # aggregate_feature_stats
    # load_hf_dataset: every parquet file under data/ as one table (one schema for all files)
    files = sorted((root / "data").rglob("*.parquet"))
    tables = [pq.read_table(path) for path in files]
    schemas = {str(t.schema.remove_metadata()) for t in tables}
    if len(schemas) != 1:
        raise ValueError(f"data files have {len(schemas)} different schemas: datasets cannot concatenate them")
    table = pa.concat_tables(tables)
    # get_hf_features_from_features: every non-video feature is a column of that dtype and shape
    for key, feature in info["features"].items():
        if feature["dtype"] in ("video", "image"):
            continue
        if key not in table.column_names:
            raise KeyError(f"feature {key} has no column")
        if _column_dtype(table.schema.field(key)) != _arrow_dtype(feature) and not (
                _column_dtype(table.schema.field(key))[1] == (-1,) and
                _column_dtype(table.schema.field(key))[0] == feature["dtype"]):
            raise ValueError(f"{key}: column {_column_dtype(table.schema.field(key))} != feature "
                             f"{_arrow_dtype(feature)}")
    for name in table.column_names:
        if name not in info["features"]:
            raise ValueError(f"column {name} is not a feature: the written features and data disagree")
    # get_episode_data_index + check_timestamps_sync
    lengths = [episodes[i]["length"] for i in episodes]
    to = np.cumsum(lengths)
    timestamps = table.column("timestamp").to_numpy().astype(np.float64)
    diffs = np.diff(timestamps)
    within = np.abs(diffs - 1.0 / info["fps"]) <= LEROBOT_TOLERANCE_S
    mask = np.ones(len(diffs), bool)
    mask[to[:-1] - 1] = False
    if not within[mask].all():
        raise ValueError("One or several timestamps unexpectedly violate the tolerance inside episode range.")
    episode_index = table.column("episode_index").to_numpy()
    return {"info": info, "tasks": tasks, "episodes": episodes, "table": table, "from": to - lengths, "to": to,
            "episode_index": episode_index}


def _assert_type_and_shape(stats_list: list[dict]) -> None:
    for stats in stats_list:
        for fkey, ft in stats.items():
            for k, v in ft.items():
                if v.ndim == 0:
                    raise ValueError("Number of dimensions must be at least 1, and is 0 instead.")
                if k == "count" and v.shape != (1,):
                    raise ValueError(f"Shape of 'count' must be (1), but is {v.shape} instead.")
                if "image" in fkey and k != "count" and v.shape != (3, 1, 1):
                    raise ValueError(f"Shape of '{k}' must be (3,1,1), but is {v.shape} instead.")


def lerobot_video_path(dataset: dict, root: Path, episode: int, key: str) -> Path:
    info = dataset["info"]
    chunk = episode // info["chunks_size"]
    return root / info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=episode)


def open_gr00t(root: Path) -> dict:
    """``LeRobotSingleDataset._get_metadata`` and the look-ups ``get_step_data`` makes."""
    modality = json.loads((root / "meta/modality.json").read_text())
    for group in ("state", "action", "video"):  # LeRobotModalityMetadata: required dicts
        if not isinstance(modality[group], dict):
            raise ValueError(f"modality.json {group} must be an object")
    simplified: dict = {"state": {}, "action": {}, "video": {}}
    for group in ("state", "action"):
        for name, meta in modality[group].items():
            start, end = int(meta["start"]), int(meta["end"])
            if meta.get("rotation_type") is not None and meta["rotation_type"] not in GR00T_ROTATION_TYPES:
                raise ValueError(f"{group}.{name}: rotation_type {meta['rotation_type']!r} is not a RotationType")
            if not isinstance(meta.get("absolute", True), bool):
                raise ValueError(f"{group}.{name}: absolute must be a bool")
            np.dtype(meta.get("dtype", "float64"))
            simplified[group][name] = {"shape": [end - start], "start": start, "end": end,
                                       "original_key": meta.get("original_key") or (
                                           "observation.state" if group == "state" else "action")}
    info = json.loads((root / "meta/info.json").read_text())
    for name, meta in modality["video"].items():
        original = meta.get("original_key") or name
        le_video = info["features"][original]
        height = le_video["shape"][le_video["names"].index("height")]
        width = le_video["shape"][le_video["names"].index("width")]
        try:
            channels = le_video["shape"][le_video["names"].index("channel")]
            fps = le_video["video_info"]["video.fps"]
        except ValueError:
            channels = le_video["shape"][le_video["names"].index("channels")]
            fps = le_video["info"]["video.fps"]
        simplified["video"][name] = {"resolution": [width, height], "channels": channels, "fps": fps,
                                     "original_key": original}
    stats = json.loads((root / "meta/stats.json").read_text())
    for stat in stats.values():
        missing = [k for k in GR00T_STAT_KEYS if k not in stat]
        if missing:
            raise ValueError(f"stats entry lacks {missing}")
    sliced: dict = {"state": {}, "action": {}}
    for group in ("state", "action"):
        for name, meta in simplified[group].items():
            le_stats = stats[meta["original_key"]]
            indices = np.arange(meta["start"], meta["end"])
            sliced[group][name] = {k: np.array(v)[indices].tolist() for k, v in le_stats.items()}
    tasks = {row["task_index"]: row["task"] for row in _jsonl(root / "meta/tasks.jsonl")}
    episodes = _jsonl(root / "meta/episodes.jsonl")
    return {"modality": modality, "simplified": simplified, "stats": sliced, "info": info, "tasks": tasks,
            "episodes": episodes, "annotation": modality.get("annotation") or {}}


def gr00t_trajectory(dataset: dict, root: Path, episode: int) -> dict:
    """``get_trajectory_data`` + the per-modality reads of ``get_step_data`` for one whole episode."""
    info = dataset["info"]
    chunk = episode // info["chunks_size"]
    frame = pq.read_table(root / info["data_path"].format(episode_chunk=chunk, episode_index=episode)).to_pandas()
    out: dict = {"timestamp": frame["timestamp"].to_numpy(), "state": {}, "action": {}, "language": {}, "video": {}}
    for group in ("state", "action"):
        for name, meta in dataset["simplified"][group].items():
            values = np.stack(frame[meta["original_key"]])
            assert values.ndim == 2
            out[group][name] = values[:, np.arange(meta["start"], meta["end"])]
    for subkey, meta in dataset["annotation"].items():
        original = meta.get("original_key") or f"annotation.{subkey}"
        out["language"][subkey] = [dataset["tasks"][int(v)] for v in frame[original]]
    for name, meta in dataset["simplified"]["video"].items():
        out["video"][name] = root / info["video_path"].format(episode_chunk=chunk, episode_index=episode,
                                                              video_key=meta["original_key"])
        assert out["video"][name].exists(), out["video"][name]
    return out
