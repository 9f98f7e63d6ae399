"""One video-folder episode (videos + sidecar) to the unified schema.

Mapping (docs/formats.md): ``state``/``states``/``observation.state`` -> state, ``action``/
``actions`` -> action (T rows: one per step; T-1 rows: transitions between frames, the last step
masked), ``timestamp``/``timestamps`` -> timestamps, ``language_instruction``/``instruction``/
``texts``/``text``/``prompt`` -> tasks, other per-step numbers -> ``extra.*``, every other field
-> catalog extras ``sidecar.<key>``, ``.npy`` arrays beside an episode's own videos -> ``extra.npy.<name>``.
Videos are copied into the store as they are (no re-encode).
"""

from __future__ import annotations

import io
from fractions import Fraction

import fsspec
import numpy as np

from connectors.base import EpisodeRef, SourceError
from connectors.common import build_meta, json_text, option_rate, task_table, vector_names
from connectors.fsutil import join_inside, read_bounded
from connectors.video_folder.layout import probe
from connectors.video_folder.sidecar import Sidecar, first_key, load_sidecar, numeric_column
from schemas import CameraInfo, Episode, StepArrays, VideoFile, align_nearest, index_to_ns, period_ns, seconds_to_ns

STATE_KEYS = ("state", "states", "observation.state", "observation_state", "proprio", "qpos")
ACTION_KEYS = ("action", "actions")
TIME_KEYS = ("timestamp", "timestamps", "time_s", "time")
INSTRUCTION_KEYS = ("language_instruction", "instruction", "texts", "text", "prompt", "caption")
MAX_NPY_BYTES = 64 * 1024 * 1024
_TIME_UNITS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def read_video_episode(fs: fsspec.AbstractFileSystem, root: str, ref: EpisodeRef, videos: dict[str, str],
                       npy: list[str]) -> Episode:
    options = ref.options
    episode = ref.key
    sidecar = load_sidecar(fs, join_inside(root, ref.key))
    probes = {name: probe(fs, root, path, episode) for name, path in videos.items()}
    first = next(iter(probes.values()))
    fps = option_rate(options) or _sidecar_rate(sidecar) or first.fps
    state_key = first_key(sidecar, STATE_KEYS, options.get("state_key"))
    action_key = first_key(sidecar, ACTION_KEYS, options.get("action_key"))
    time_key = first_key(sidecar, TIME_KEYS, options.get("timestamp_key"))
    state = numeric_column(sidecar, state_key, episode) if state_key else None
    n = _num_steps(sidecar, state, time_key, first.num_frames, episode)
    if state is None:
        state = np.zeros((n, 0), np.float64)
    elif state.shape[0] != n:
        raise SourceError(sidecar.path, f"shape mismatch: {state.shape[0]} rows for {n} steps", episode, state_key)
    timestamps = _timestamps(sidecar, time_key, n, fps, options, episode)
    action, action_valid, convention = _actions(sidecar, action_key, n, episode)
    cameras, sources, frame_index = [], {}, {}
    for name, path in videos.items():
        info = probes[name]
        frame_index[name] = _align(info.num_frames, info.fps, n, fps, timestamps, time_key is not None, sidecar.path,
                                   episode, path)
        cameras.append(CameraInfo(name=name, width=info.width, height=info.height, fps=info.fps, codec=info.codec,
                                  num_frames=info.num_frames, source_key=path))
        sources[name] = VideoFile(uri=fs.unstrip_protocol(join_inside(root, path)), frame_start=0,
                                  num_frames=info.num_frames, fps=info.fps, exclusive=True,
                                  storage_options=options.get("storage_options") or {})
    tasks, task_index = _tasks(sidecar, options.get("instruction_key"), n, episode)
    used = {state_key, action_key, time_key, options.get("instruction_key"), *INSTRUCTION_KEYS}
    step_extras, extras = _extras(sidecar, used, n)
    step_extras.update(_npy_extras(fs, root, npy, n, extras))
    extras["video_folder.sidecar"] = ref.key
    if convention:
        extras["video_folder.action_convention"] = convention
    state_valid = _finite_rows(state) if state.shape[1] else np.zeros(n, bool)
    action_valid = _finite_rows(action) & (np.ones(n, bool) if action_valid is None else action_valid)
    steps = StepArrays(timestamp_ns=timestamps, state=state, action=action, frame_index=frame_index,
                       task_index=task_index, state_valid=state_valid, action_valid=action_valid, extras=step_extras)
    meta = build_meta(ref_dataset=ref.dataset, ref_key=ref.key, ref_uri=ref.uri, source_format="video_folder",
                      options=options, fps=fps, num_steps=n, state=state,
                      state_names=vector_names(state_key or "state", state.shape[1]), action=action,
                      action_names=vector_names(action_key or "action", action.shape[1]), tasks=tasks, extras=extras,
                      duration_ns=int(timestamps[-1]) + period_ns(fps))
    meta.cameras = cameras
    return Episode(meta=meta, steps=steps, videos=sources)


def _finite_rows(values: np.ndarray) -> np.ndarray:
    """Rows a sidecar left empty (NaN, null) are masked rather than stored as numbers."""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0], bool)
    return np.isfinite(values).all(axis=1) if values.dtype.kind == "f" else np.ones(values.shape[0], bool)


def _sidecar_rate(sidecar: Sidecar) -> Fraction | None:
    value = sidecar.fields.get("fps")
    if isinstance(value, (int, float)) and value > 0:
        return Fraction(str(value)).limit_denominator(1001)
    return None


def _num_steps(sidecar: Sidecar, state: np.ndarray | None, time_key: str | None, frames: int, episode: str) -> int:
    """Steps are the state rows, else the timestamps, else the frames of the first camera."""
    if state is not None:
        return int(state.shape[0])
    if time_key is not None:
        return int(numeric_column(sidecar, time_key, episode).shape[0])
    if frames < 1:
        raise SourceError(sidecar.path, "the video has no frames", episode, "video")
    return frames


def _timestamps(sidecar: Sidecar, key: str | None, n: int, fps: Fraction, options: dict, episode: str) -> np.ndarray:
    if key is None:
        return index_to_ns(np.arange(n), fps)
    values = numeric_column(sidecar, key, episode).reshape(-1)
    if values.shape[0] != n:
        raise SourceError(sidecar.path, f"shape mismatch: {values.shape[0]} timestamps for {n} steps", episode, key)
    unit = options.get("timestamp_unit") or ("ns" if values.dtype.kind in "iu" and values.max() > 10**12 else "s")
    if unit not in _TIME_UNITS:
        raise SourceError(sidecar.path, f"unknown timestamp unit {unit!r}", episode, key)
    ns = (values.astype(np.int64) * _TIME_UNITS[unit] if values.dtype.kind in "iu"
          else seconds_to_ns(values.astype(np.float64) * (_TIME_UNITS[unit] / 1e9)))
    ns = np.asarray(ns, dtype=np.int64) - int(ns[0])
    bad = np.nonzero(np.diff(ns) <= 0)[0]
    if bad.size:
        raise SourceError(sidecar.path, f"timestamps not increasing at row {int(bad[0]) + 1}", episode, key)
    return ns


def _actions(sidecar: Sidecar, key: str | None, n: int, episode: str):
    """Per-step actions, or T-1 transition actions (frame t -> t+1) with the last step masked."""
    if key is None:
        return np.zeros((n, 0), np.float64), np.zeros(n, bool), ""
    action = numeric_column(sidecar, key, episode)
    if action.shape[0] == n:
        return action, None, ""
    if action.shape[0] == n - 1:
        padded = np.full((n, action.shape[1]), np.nan, dtype=np.result_type(action.dtype, np.float32))
        padded[:-1] = action
        valid = np.ones(n, bool)
        valid[-1] = False
        return padded, valid, "transition: action[t] moves frame t to t+1; the last step has none (masked)"
    raise SourceError(sidecar.path, f"shape mismatch: {action.shape[0]} actions for {n} steps "
                      f"(expected {n} or {n - 1})", episode, key)


def _align(frames: int, frame_fps: Fraction, n: int, fps: Fraction, timestamps: np.ndarray, timed: bool, where: str,
           episode: str, video: str) -> np.ndarray:
    """Frame of each step: one per step when counts match, else nearest in time within half a frame."""
    if frames == n and (not timed or frame_fps == fps):
        return np.arange(n, dtype=np.int32)
    if not timed and frame_fps == fps:
        raise SourceError(where, f"shape mismatch: the video has {frames} frames for {n} steps", episode, video)
    frame_ns = index_to_ns(np.arange(frames), frame_fps)
    return align_nearest(timestamps, frame_ns, period_ns(frame_fps) // 2)


def _tasks(sidecar: Sidecar, chosen: str | None, n: int, episode: str) -> tuple[list[str], np.ndarray]:
    key = first_key(sidecar, INSTRUCTION_KEYS, chosen)
    if key is None:
        return [], np.full(n, -1, np.int32)
    value = sidecar.fields.get(key, sidecar.columns.get(key))
    if isinstance(value, str):
        return [value], np.zeros(n, np.int32)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) == n and key in sidecar.columns:
            return task_table(value)
        # A clip-level list of phrasings of one instruction (VPP's ``texts``): every step gets the first.
        return list(dict.fromkeys(value)), np.zeros(n, np.int32)
    raise SourceError(sidecar.path, "instruction must be a string or a list of strings", episode, key)


def _extras(sidecar: Sidecar, used: set, n: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    step_extras: dict[str, np.ndarray] = {}
    extras: dict[str, str] = {}
    for key, value in sidecar.columns.items():
        if key in used:
            continue
        try:
            arr = np.asarray(value, dtype=np.float64) if isinstance(value, list) else np.asarray(value)
        except (ValueError, TypeError):
            arr = None
        if arr is not None and arr.dtype.kind in "fiub" and arr.ndim >= 1 and arr.shape[0] == n:
            step_extras[key] = arr if arr.ndim == 1 else arr.reshape(n, -1)
        else:
            extras[f"sidecar.{key}"] = json_text(value)
    for key, value in sidecar.fields.items():
        if key not in used:
            extras[f"sidecar.{key}"] = json_text(value)
    return step_extras, extras


def _npy_extras(fs, root: str, npy: list[str], n: int, extras: dict[str, str]) -> dict[str, np.ndarray]:
    """Arrays saved beside the episode's own videos (never unpickled); per-step ones become columns."""
    out = {}
    for relative in npy:
        path = join_inside(root, relative)
        stem = relative.rsplit("/", 1)[-1][:-4]
        try:
            arr = np.load(io.BytesIO(read_bounded(fs, path, MAX_NPY_BYTES)), allow_pickle=False)
        except (ValueError, OSError) as exc:
            extras[f"npy.{stem}"] = f"unreadable: {exc}"
            continue
        if arr.ndim >= 1 and arr.shape[0] == n and arr.dtype.kind in "fiub":
            out[f"npy.{stem}"] = arr if arr.ndim == 1 else arr.reshape(n, -1)
        else:
            extras[f"npy.{stem}"] = f"shape {list(arr.shape)} dtype {arr.dtype} (not per-step)"
    return out
