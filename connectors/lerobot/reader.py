"""Read one LeRobot episode into the unified schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.base import EpisodeRef, SourceError
from connectors.common import pair_frames
from connectors.fsutil import check_resolves_inside
from connectors.lerobot.layout import EpisodeEntry, Layout
from schemas import (
    CameraInfo,
    Episode,
    EpisodeMeta,
    FrameSequence,
    StepArrays,
    VideoFile,
    fixed_list_to_numpy,
    index_to_ns,
    make_episode_id,
    ns_to_seconds,
    parse_rate,
    period_ns,
    safe_name,
    seconds_to_ns,
)

GR00T_INSTRUCTION = "annotation.human.action.task_description"
_CONSUMED = {"timestamp", "frame_index", "episode_index", "index", "task_index", "next.reward", "next.done"}


def read_episode(layout: Layout, ref: EpisodeRef) -> Episode:
    index = int(ref.key)
    entry = layout.episodes[index]
    for path in [entry.data_path, *(span.path for span in entry.videos.values())]:
        check_resolves_inside(layout.root, path, ref.key)
    options = ref.options
    table = _episode_rows(layout, entry)
    n = table.num_rows
    where = entry.data_path
    if n != entry.length:
        raise SourceError(where, f"{n} rows but the metadata says {entry.length} steps", ref.key, "length")
    state_key = options.get("state_key", "observation.state")
    action_key = options.get("action_key", "action")
    state, state_names = _vector(layout, table, state_key, where, ref.key)
    action, action_names = _vector(layout, table, action_key, where, ref.key)
    timestamp_ns, time_extras, exact_timestamps = _timeline(layout, table, where, ref.key)
    tasks, task_index, annotation_columns = _tasks(layout, table, entry, options, where, ref.key)
    skip = set(options.get("skip_cameras") or ())
    cameras, videos = _cameras(layout, entry, table, n, skip, options, ref.key)
    frame_index, pairing_extras = _pairing(timestamp_ns, cameras, videos, entry)
    steps = StepArrays(
        timestamp_ns=timestamp_ns,
        state=state,
        action=action,
        frame_index=frame_index,
        task_index=task_index,
        reward=_column(table, "next.reward", np.float64),
        is_terminal=_column(table, "next.done", bool),
        state_valid=None if state.shape[1] else np.zeros(n, bool),
        action_valid=None if action.shape[1] else np.zeros(n, bool),
        extras={**annotation_columns, **exact_timestamps,
                **_numeric_extras(layout, table, {state_key, action_key}, annotation_columns)},
    )
    extras = {"lerobot.codebase_version": layout.version, "lerobot.episode_index": ref.key,
              "lerobot.robot_type": str(layout.info.get("robot_type", "")), **time_extras, **pairing_extras,
              **_column_dtypes(table), **_modality(layout)}
    if skip:
        extras["lerobot.skipped_cameras"] = ",".join(sorted(skip))
    dataset = ref.dataset
    meta = EpisodeMeta(
        episode_id=make_episode_id(dataset, ref.key),
        dataset=dataset,
        source_format="lerobot",
        source_uri=ref.uri,
        source_key=ref.key,
        source_checksum="",
        kind=options.get("kind", "teleop"),
        embodiment=options.get("embodiment") or safe_name(str(layout.info.get("robot_type") or "unknown")).lower(),
        control_fps=layout.fps,
        num_steps=n,
        state_names=state_names,
        action_names=action_names,
        state_dtype=str(state.dtype),
        action_dtype=str(action.dtype),
        action_space=options.get("action_space", "unknown"),
        action_representation=options.get("action_representation", "unknown"),
        tasks=tasks,
        cameras=cameras,
        split=options.get("split") or layout.split_of(index),
        extras=extras,
        duration_ns=int(index_to_ns(n, layout.fps)),
    )
    return Episode(meta=meta, steps=steps, videos=videos)


def _episode_rows(layout: Layout, entry: EpisodeEntry) -> pa.Table:
    try:
        table = pq.read_table(entry.data_path, filesystem=layout.fs)
    except FileNotFoundError as exc:
        raise SourceError(entry.data_path, "data file does not exist", str(entry.index)) from exc
    except (OSError, pa.ArrowInvalid) as exc:
        raise SourceError(entry.data_path, f"unreadable parquet: {exc}", str(entry.index)) from exc
    if "episode_index" in table.column_names:
        table = table.filter(pc.equal(table.column("episode_index"), entry.index))
    elif layout.version == "v3.0":
        raise SourceError(entry.data_path, "no episode_index column in a multi-episode file",
                          str(entry.index), "episode_index")
    if "frame_index" in table.column_names:
        table = table.sort_by("frame_index")
    return table


def _feature_names(layout: Layout, key: str, width: int) -> list[str]:
    names = layout.features.get(key, {}).get("names")
    if isinstance(names, dict):  # {"motors": [...]} in LeRobot v2 datasets
        names = [n for group in names.values() for n in (group if isinstance(group, list) else [group])]
    while isinstance(names, list) and len(names) == 1 and isinstance(names[0], list):
        names = names[0]  # [[...]] nesting seen in Unitree's v2.1 data
    if isinstance(names, list) and len(names) == width and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"{safe_name(key)}_{i}" for i in range(width)]


def _vector(layout: Layout, table: pa.Table, key: str, where: str, episode: str) -> tuple[np.ndarray, list[str]]:
    if key not in table.column_names:
        return np.zeros((table.num_rows, 0), np.float32), []
    column = table.column(key)
    try:
        values = fixed_list_to_numpy(column)
    except (ValueError, pa.ArrowInvalid) as exc:
        raise SourceError(where, f"rows of different widths: {exc}", episode, key) from exc
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.dtype.kind not in "fiu":
        raise SourceError(where, f"not numeric: {column.type}", episode, key)
    declared = layout.feature_shape(key)
    if declared and int(np.prod(declared)) != values.shape[1]:
        raise SourceError(where, f"{values.shape[1]} values per row but info.json declares shape {declared}",
                          episode, key)
    return values, _feature_names(layout, key, values.shape[1])


def _timeline(layout: Layout, table: pa.Table, where: str,
              episode: str) -> tuple[np.ndarray, dict[str, str], dict[str, np.ndarray]]:
    """The source's own clock in integer ns (offset included), checked against the frame clock.

    Without a ``timestamp`` column the clock is ``frame_index / fps``. When the source's float seconds do
    not survive ns and back in their dtype (GR00T's float64 stamps such as 0.04999995231628418 s), they
    are also kept as the step extra ``timestamp`` so that exports write them back bit for bit.
    """
    n = table.num_rows
    if "frame_index" in table.column_names:
        frames = table.column("frame_index").to_numpy()
        bad = np.nonzero(frames != np.arange(n))[0]
        if bad.size:
            raise SourceError(where, f"frame_index is not 0..{n - 1}: row {int(bad[0])} has {frames[bad[0]]}",
                              episode, "frame_index")
    grid = index_to_ns(np.arange(n), layout.fps)
    if "timestamp" not in table.column_names:
        return grid, {}, {}
    seconds = table.column("timestamp").to_numpy(zero_copy_only=False)
    if seconds.dtype.kind != "f" or not np.isfinite(seconds).all() or (n and seconds.min() < 0):
        raise SourceError(where, f"timestamps must be finite non-negative float seconds ({seconds.dtype})",
                          episode, "timestamp")
    source = seconds_to_ns(seconds.astype(np.float64))
    offset = int(source[0]) if n else 0
    drift = np.abs(source - offset - grid)
    worst = int(drift.argmax()) if n else 0
    if n and drift[worst] > period_ns(layout.fps) // 4:
        raise SourceError(where, f"timestamp at row {worst} is {seconds[worst]:.6f} s, expected "
                          f"{(grid[worst] + offset) / 1e9:.6f} s at {layout.fps} fps: rows do not "
                          "follow the frame clock", episode, "timestamp")
    extras = {"lerobot.timestamp_max_drift_ns": str(int(drift[worst]) if n else 0)}
    if offset:
        extras["lerobot.timestamp_offset_ns"] = str(offset)
    exact = np.array_equal(ns_to_seconds(source).astype(seconds.dtype), seconds)
    return source, extras, ({} if exact else {"timestamp": seconds})


def _pairing(timestamp_ns: np.ndarray, cameras: list[CameraInfo], videos: dict,
             entry: EpisodeEntry) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each step's frame as LeRobot's reader finds it: nearest to ``from_timestamp + timestamp`` (1e-4 s).

    Image features (one picture per row) pair by row. Video frame ``k`` of a file plays at ``k / fps``;
    only the episode's own frames (its v3.0 span) are candidates, counted from the span's start.
    """
    frame_index: dict[str, np.ndarray] = {}
    extras: dict[str, str] = {}
    n = timestamp_ns.shape[0]
    for cam in cameras:
        video = videos[cam.name]
        if not isinstance(video, VideoFile):
            frame_index[cam.name] = np.arange(n, dtype=np.int32)
            continue
        span = entry.videos[cam.source_key]
        start_ns = 0 if span.from_timestamp is None else seconds_to_ns(span.from_timestamp)
        frame_ns = index_to_ns(np.arange(video.frame_start, video.frame_start + video.num_frames), cam.fps)
        frame_index[cam.name], found = pair_frames(timestamp_ns + start_ns, frame_ns, cam.name)
        extras.update(found)
    return frame_index, extras


def _column_dtypes(table: pa.Table) -> dict[str, str]:
    """Source dtypes of the columns the schema widens or re-indexes (exports write them back in these)."""
    out = {}
    widened = ("timestamp", "next.reward", "next.done", "task_index", "frame_index", "episode_index", "index")
    for name in [*widened, *(c for c in table.column_names if c.startswith("annotation."))]:
        if name in table.column_names and pa.types.is_primitive(table.column(name).type):
            out[f"lerobot.dtype.{name}"] = np.dtype(table.column(name).type.to_pandas_dtype()).name
    return out


def _modality(layout: Layout) -> dict[str, str]:
    """GR00T's meta/modality.json as the source has it (canonical JSON), carried to exports."""
    return {"lerobot.modality": json.dumps(layout.modality, sort_keys=True, separators=(",", ":"))} \
        if layout.modality else {}


def _tasks(layout: Layout, table: pa.Table, entry: EpisodeEntry, options: dict, where: str, episode: str):
    """Episode-local task list, per-step index into it, and annotation columns re-indexed to it."""
    column = options.get("instruction_column") or (
        GR00T_INSTRUCTION if GR00T_INSTRUCTION in table.column_names else "task_index")
    tasks: list[str] = []
    local: dict[str, int] = {}

    def localize(values: np.ndarray, name: str) -> np.ndarray:
        out = np.full(values.shape[0], -1, np.int32)
        for global_index in np.unique(values):
            if int(global_index) < 0:
                continue
            text = layout.tasks.get(int(global_index))
            if text is None:
                raise SourceError(where, f"task index {int(global_index)} is not in the tasks table", episode, name)
            if text not in local:
                local[text] = len(tasks)
                tasks.append(text)
            out[values == global_index] = local[text]
        return out

    if column in table.column_names:
        task_index = localize(table.column(column).to_numpy(), column)
    else:
        for text in dict.fromkeys(entry.tasks):
            local[text] = len(tasks)
            tasks.append(text)
        # Without a per-step column, a step's instruction is known only when the episode has one task.
        task_index = np.full(table.num_rows, 0 if len(tasks) == 1 else -1, np.int32)
    annotations = {}
    for name in table.column_names:
        # Every annotation column is kept under its source name (GR00T reads them by name), the one that
        # gives the per-step instruction too.
        if name.startswith("annotation.") and pa.types.is_integer(table.column(name).type):
            annotations[name] = task_index if name == column else localize(table.column(name).to_numpy(), name)
    return tasks, task_index, annotations


def _column(table: pa.Table, name: str, dtype) -> np.ndarray | None:
    if name not in table.column_names:
        return None
    return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)


def _numeric_extras(layout: Layout, table: pa.Table, used: set[str], annotations: dict) -> dict[str, np.ndarray]:
    extras = {}
    skip = used | _CONSUMED | set(annotations) | set(layout.video_keys) | set(layout.image_keys)
    for name in table.column_names:
        if name in skip or name.startswith("annotation."):
            continue
        column = table.column(name)
        value_type = column.type.value_type if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(
            column.type) else column.type
        if pa.types.is_integer(value_type) or pa.types.is_floating(value_type) or pa.types.is_boolean(value_type):
            try:
                extras[name] = fixed_list_to_numpy(column)
            except (ValueError, pa.ArrowInvalid):
                continue  # ragged lists cannot be a fixed column; they stay in the source
    return extras


def _cameras(layout: Layout, entry: EpisodeEntry, table: pa.Table, n: int, skip: set[str], options: dict,
             episode: str) -> tuple[list[CameraInfo], dict]:
    cameras, videos, used = [], {}, set()
    for key in layout.video_keys:
        if key in skip:
            continue
        name = _camera_name(key, used)
        span = entry.videos.get(key)
        if span is None or not layout.fs.exists(span.path):
            raise SourceError(span.path if span else entry.data_path, "video file does not exist", episode, key)
        info = layout.video_info(key)
        fps = parse_rate(info.get("video.fps", layout.fps))
        height, width = _hw(layout, key, info)
        start = 0
        if span.from_timestamp is not None:
            start = round(span.from_timestamp * fps)
            stop = round(span.to_timestamp * fps)
            if stop - start != n:
                raise SourceError(span.path, f"video span [{span.from_timestamp}, {span.to_timestamp}) s holds "
                                  f"{stop - start} frames but the episode has {n} rows", episode, key)
        cameras.append(CameraInfo(name=name, width=width, height=height, fps=fps,
                                  codec=str(info.get("video.codec", "")), num_frames=n,
                                  pix_fmt=str(info.get("video.pix_fmt", "yuv420p")), source_key=key))
        videos[name] = VideoFile(uri=layout.fs.unstrip_protocol(span.path), frame_start=start, num_frames=n,
                                 fps=fps, exclusive=span.from_timestamp is None,
                                 storage_options=options.get("storage_options") or {})
    for key in layout.image_keys:
        if key in skip or key not in table.column_names:
            continue
        name = _camera_name(key, used)
        height, width = _hw(layout, key, {})
        cameras.append(CameraInfo(name=name, width=width, height=height, fps=layout.fps, codec="", num_frames=n,
                                  source_key=key))
        videos[name] = FrameSequence(frames=_image_column_frames(table.column(key), entry.data_path, episode, key),
                                     num_frames=n, fps=layout.fps, width=width, height=height)
    return cameras, videos


def _camera_name(key: str, used: set[str]) -> str:
    name = safe_name(key)
    if name in used:
        name = safe_name(key.replace(".", "_"))
    used.add(name)
    return name


def _hw(layout: Layout, key: str, info: dict) -> tuple[int, int]:
    if "video.height" in info:
        return int(info["video.height"]), int(info["video.width"])
    shape = layout.feature_shape(key)
    names = layout.features.get(key, {}).get("names") or []
    if len(shape) == 3 and names and names[0] in ("channel", "channels"):
        return int(shape[1]), int(shape[2])
    return (int(shape[0]), int(shape[1])) if len(shape) == 3 else (0, 0)


def _image_column_frames(column: pa.ChunkedArray, path: str, episode: str, key: str):
    """Frames of an ``image`` feature (PNG/JPEG bytes inside the parquet), decoded lazily."""

    def frames() -> Iterator[np.ndarray]:
        for number, cell in enumerate(column.to_pylist()):
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            image = cv2.imdecode(np.frombuffer(data or b"", np.uint8), cv2.IMREAD_COLOR) if data else None
            if image is None:
                raise SourceError(path, f"image at row {number} cannot be decoded", episode, key)
            yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    return frames
