"""Validation of episodes at ingest: every failure names the episode, the field and the problem."""

from __future__ import annotations

import numpy as np

from schemas.episode import (
    ACTION_REPRESENTATIONS,
    ACTION_SOURCES,
    ACTION_SPACES,
    CHANNEL_ORDERS,
    GENERATOR_TASKS,
    KINDS,
    NUMERIC_DTYPES,
    ROTATION_TYPES,
    SPLITS,
    STATE_SOURCES,
    Episode,
    EpisodeMeta,
    FrameSequence,
    StepArrays,
    VideoFile,
    is_safe_name,
)


class EpisodeValidationError(ValueError):
    """An episode breaks the schema. Carries what a job report needs to quarantine it."""

    def __init__(self, episode: str, field: str, problem: str, source: str = "") -> None:
        self.episode = episode
        self.field = field
        self.problem = problem
        self.source = source
        where = f" ({source})" if source else ""
        super().__init__(f"episode {episode}{where}: field '{field}': {problem}")


def validate_episode(episode: Episode) -> None:
    """Raise ``EpisodeValidationError`` for the first problem found; return None when valid."""
    meta = episode.meta
    fail = _failer(meta)
    _check_meta(meta, fail)
    _check_steps(meta, episode.steps, fail)
    _check_videos(meta, episode, fail)


def _failer(meta: EpisodeMeta):
    def fail(field: str, problem: str) -> None:
        raise EpisodeValidationError(meta.episode_id or meta.source_key, field, problem, meta.source_uri)

    return fail


def _check_meta(meta: EpisodeMeta, fail) -> None:
    if not is_safe_name(meta.episode_id):
        fail("episode_id", f"{meta.episode_id!r} is not a safe name ([A-Za-z0-9_-], no dots)")
    if not meta.dataset:
        fail("dataset", "empty")
    for name, value, allowed in (
        ("kind", meta.kind, KINDS),
        ("action_space", meta.action_space, ACTION_SPACES),
        ("action_representation", meta.action_representation, ACTION_REPRESENTATIONS),
        ("rotation_type", meta.rotation_type, ROTATION_TYPES),
        ("split", meta.split, SPLITS),
        ("state_dtype", meta.state_dtype, NUMERIC_DTYPES),
        ("action_dtype", meta.action_dtype, NUMERIC_DTYPES),
    ):
        if value not in allowed:
            fail(name, f"{value!r} is not one of {sorted(allowed)}")
    if meta.control_fps <= 0:
        fail("control_fps", f"must be positive, got {meta.control_fps}")
    if meta.num_steps < 1:
        fail("num_steps", f"an episode needs at least one step, got {meta.num_steps}")
    if meta.success is not None and not isinstance(meta.success, bool):
        fail("success", f"must be true, false or null, got {meta.success!r}")
    names = [c.name for c in meta.cameras]
    if len(set(names)) != len(names):
        fail("cameras", f"duplicate camera names {names}")
    for cam in meta.cameras:
        if not is_safe_name(cam.name):
            fail(f"cameras.{cam.name}", "camera name is not a safe name ([A-Za-z0-9_-], no dots)")
        if cam.width <= 0 or cam.height <= 0 or cam.num_frames < 1:
            fail(f"cameras.{cam.name}", f"bad geometry {cam.width}x{cam.height}, {cam.num_frames} frames")
        if cam.channel_order not in CHANNEL_ORDERS:
            fail(f"cameras.{cam.name}", f"channel_order {cam.channel_order!r} is not one of {CHANNEL_ORDERS}")
    _check_lineage(meta, fail)


def _check_lineage(meta: EpisodeMeta, fail) -> None:
    lineage = meta.lineage
    if lineage is None:
        if meta.kind == "synthetic":
            fail("lineage", "synthetic episodes must carry lineage")
        return
    if lineage.action_source not in ACTION_SOURCES:
        fail("lineage.action_source", f"{lineage.action_source!r} is not one of {sorted(ACTION_SOURCES)}")
    if lineage.state_source not in STATE_SOURCES:
        fail("lineage.state_source", f"{lineage.state_source!r} is not one of {sorted(STATE_SOURCES)}")
    if lineage.generator is not None and lineage.generator.task not in GENERATOR_TASKS:
        fail("lineage.generator.task", f"{lineage.generator.task!r} is not one of {sorted(GENERATOR_TASKS)}")
    if lineage.parent_frame_range is not None:
        start, stop = lineage.parent_frame_range
        if not 0 <= start <= stop:
            fail("lineage.parent_frame_range", f"bad range {lineage.parent_frame_range}")


def _check_steps(meta: EpisodeMeta, steps: StepArrays, fail) -> None:
    n = meta.num_steps
    ts = np.asarray(steps.timestamp_ns)
    if ts.shape != (n,):
        fail("timestamp_ns", f"{ts.shape[0] if ts.ndim else 0} values for {n} steps")
    if ts.dtype != np.int64:
        fail("timestamp_ns", f"must be int64 nanoseconds, got {ts.dtype}")
    if ts[0] < 0:  # a source clock may start late (GR00T's demo: 0.05 s); it is kept as the source has it
        fail("timestamp_ns", f"must not be negative, starts at {ts[0]}")
    bad = np.nonzero(np.diff(ts) <= 0)[0]
    if bad.size:
        fail("timestamp_ns", f"not strictly increasing at step {int(bad[0]) + 1}")
    _check_vector(meta, "state", steps.state, meta.state_names, meta.state_dtype, steps.state_valid, fail)
    _check_vector(meta, "action", steps.action, meta.action_names, meta.action_dtype, steps.action_valid, fail)
    for column, values in (("task_index", steps.task_index), ("reward", steps.reward),
                           ("is_terminal", steps.is_terminal)):
        if values is not None and np.asarray(values).shape != (n,):
            fail(column, f"shape {np.asarray(values).shape}, expected ({n},)")
    if steps.task_index is not None:
        task = np.asarray(steps.task_index)
        if task.size and (task.min() < -1 or task.max() >= len(meta.tasks)):
            fail("task_index", f"values must lie in [-1, {len(meta.tasks)}), got [{task.min()}, {task.max()}]")
    for name, values in steps.extras.items():
        if np.asarray(values).shape[:1] != (n,):
            fail(f"extra.{name}", f"{np.asarray(values).shape[0]} rows for {n} steps")


def _check_vector(meta, column, values, names, dtype, valid, fail) -> None:
    arr = np.asarray(values)
    n = meta.num_steps
    if arr.ndim != 2 or arr.shape[0] != n:
        fail(column, f"shape {arr.shape}, expected ({n}, {len(names)})")
    if arr.shape[1] != len(names):
        fail(column, f"{arr.shape[1]} dims but {len(names)} names")
    if str(arr.dtype) != dtype:
        fail(column, f"dtype {arr.dtype} but catalog says {dtype}")
    mask = np.ones(n, bool) if valid is None else np.asarray(valid, dtype=bool)
    if mask.shape != (n,):
        fail(f"{column}_valid", f"shape {mask.shape}, expected ({n},)")
    if arr.dtype.kind == "f" and arr.size:
        finite = np.isfinite(arr).all(axis=1)
        bad = np.nonzero(mask & ~finite)[0]
        if bad.size:
            dim = int(np.nonzero(~np.isfinite(arr[bad[0]]))[0][0])
            fail(column, f"non-finite value {arr[bad[0], dim]} at step {int(bad[0])}, dim {dim} "
                         f"({names[dim] if dim < len(names) else dim}); mask it if it is missing")


def _check_videos(meta: EpisodeMeta, episode: Episode, fail) -> None:
    cams = {c.name: c for c in meta.cameras}
    if set(episode.videos) != set(cams):
        fail("cameras", f"video sources {sorted(episode.videos)} do not match cameras {sorted(cams)}")
    for name, source in episode.videos.items():
        cam = cams[name]
        if isinstance(source, (VideoFile, FrameSequence)) and source.num_frames != cam.num_frames:
            fail(f"cameras.{name}", f"source has {source.num_frames} frames, catalog says {cam.num_frames}")
        index = episode.steps.frame_index.get(name)
        if index is None:
            fail(f"frame.{name}", "no step-to-frame alignment")
        index = np.asarray(index)
        if index.shape != (meta.num_steps,):
            fail(f"frame.{name}", f"shape {index.shape}, expected ({meta.num_steps},)")
        if index.max() >= cam.num_frames or index.min() < -1:
            fail(f"frame.{name}", f"frame index out of [-1, {cam.num_frames}): [{index.min()}, {index.max()}]")
        aligned = index[index >= 0]
        if aligned.size and np.any(np.diff(aligned) < 0):
            fail(f"frame.{name}", "frame indices go backwards in time")
