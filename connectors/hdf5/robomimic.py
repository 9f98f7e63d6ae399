"""robomimic / robosuite / MimicGen HDF5: many demos per file under ``data/demo_<i>``.

Mapping (docs/formats.md): low-dim ``obs/<key>`` (sorted, or the ``state_keys`` option) -> state;
files without ``obs/`` (raw robosuite collections) ingest ``states`` as the state; ``actions`` ->
action; ``rewards`` -> reward; ``dones`` -> is_terminal; image ``obs/<key>`` (T, H, W, 3) uint8 ->
cameras; ``states`` (when ``obs/`` exists), low-dim ``next_obs/<key>``, MimicGen's
``datagen_info/...`` and any other per-step dataset -> ``extra.*``; ``data`` attributes
(``env_args`` / ``env_info`` JSON) and demo attributes -> catalog extras; ``mask/<filter>`` ->
split (``train``/``valid``/``test`` filters) plus the list of filters holding the demo.
"""

from __future__ import annotations

from fractions import Fraction

import fsspec
import h5py
import numpy as np

from connectors.base import EpisodeRef, SourceError
from connectors.common import (
    build_meta,
    camera_name,
    check_dims,
    concat_columns,
    frame_sequence,
    natural_key,
    option_list,
    option_rate,
    vector_names,
)
from connectors.fsutil import parse_json
from connectors.hdf5.h5util import attr_text, check_written, open_h5, raw_frames, read_array
from schemas import CameraInfo, Episode, StepArrays, index_to_ns

DEFAULT_FPS = Fraction(20)  # robosuite's default control_freq
_SPLIT_FILTERS = {"valid": "val", "val": "val", "validation": "val", "test": "test", "train": "train"}


def is_robomimic(h5: h5py.File) -> bool:
    data = h5.get("data")
    return isinstance(data, h5py.Group) and any(isinstance(data.get(k), h5py.Group) and "actions" in data[k]
                                                for k in list(data.keys())[:4])


def demo_names(h5: h5py.File) -> list[str]:
    data = h5.get("data")
    if not isinstance(data, h5py.Group):
        return []
    return sorted((k for k in data if isinstance(data.get(k), h5py.Group)), key=natural_key)


def env_config(h5: h5py.File) -> dict:
    """``env_args`` (robomimic, MimicGen) or ``env_info`` (raw robosuite) as a dict, flattened to env kwargs."""
    attrs = h5["data"].attrs
    for name in ("env_args", "env_info"):
        if name in attrs:
            try:
                doc = parse_json(attr_text(attrs[name]), name)
            except SourceError:
                return {}
            return {**doc, **(doc.get("env_kwargs") or {})} if isinstance(doc, dict) else {}
    return {}


def read_robomimic_episode(fs: fsspec.AbstractFileSystem, path: str, demo: str, ref: EpisodeRef) -> Episode:
    options = ref.options
    episode = ref.key
    with open_h5(fs, path, episode) as h5:
        group = h5.get(f"data/{demo}")
        if not isinstance(group, h5py.Group):
            raise SourceError(path, f"missing group /data/{demo}", episode, f"data/{demo}")
        env = env_config(h5)
        action = read_array(group, "actions", path, episode)
        n = int(action.shape[0])
        if n < 1:
            raise SourceError(path, "demo has no steps", episode, "actions")
        action = action.reshape(n, -1)
        fps = option_rate(options) or _control_rate(env)
        obs = group.get("obs")
        cameras, videos, state, state_names, consumed = _observations(fs, path, obs, n, fps, options, episode)
        if obs is None:
            state = read_array(group, "states", path, episode, rows=n).reshape(n, -1)
            state_names = vector_names("states", state.shape[1])
            consumed.add("states")
        reward = read_array(group, "rewards", path, episode, rows=n).reshape(n) if "rewards" in group else None
        dones = read_array(group, "dones", path, episode, rows=n).reshape(n) if "dones" in group else None
        step_extras = _step_extras(group, path, episode, n, consumed | {"actions", "rewards", "dones", "obs"})
        split, filters = _split(h5, demo)
        extras = {f"robomimic.data.{k}": attr_text(v) for k, v in h5["data"].attrs.items()}
        extras.update({f"robomimic.demo.{k}": attr_text(v) for k, v in group.attrs.items()})
        if filters:
            extras["robomimic.filters"] = ",".join(filters)
        if "fps" not in options and "control_freq" not in env:
            extras["robomimic.fps_assumed"] = str(fps)
    steps = StepArrays(timestamp_ns=index_to_ns(np.arange(n), fps), state=state, action=action,
                       frame_index={c.name: np.arange(n, dtype=np.int32) for c in cameras},
                       reward=None if reward is None else reward.astype(np.float64),
                       is_terminal=None if dones is None else dones.astype(bool),
                       state_valid=None if state.shape[1] else np.zeros(n, bool), extras=step_extras)
    space, representation = _action_space(env)
    meta = build_meta(ref_dataset=ref.dataset, ref_key=ref.key, ref_uri=ref.uri, source_format="robomimic_hdf5",
                      options=options, fps=fps, num_steps=n, state=state, state_names=state_names, action=action,
                      action_names=vector_names("actions", action.shape[1]), embodiment=_robots(env), kind="sim",
                      split=split, action_space=space, action_representation=representation, extras=extras)
    meta.cameras = cameras
    return Episode(meta=meta, steps=steps, videos=videos)


def _observations(fs, path: str, obs: h5py.Group | None, n: int, fps: Fraction, options: dict, episode: str):
    """Cameras and the state vector from ``obs/``; returns the names of the datasets it used."""
    if obs is None:
        return [], {}, np.zeros((n, 0), np.float32), [], set()
    cameras, videos, used_names = [], {}, set()
    image_keys = [k for k in sorted(obs.keys()) if _is_image(obs[k])]
    chosen = option_list(options, "camera_keys")
    bgr = set(option_list(options, "bgr_cameras") or [])
    for key in image_keys if chosen is None else chosen:
        field = f"obs/{key}"
        if key not in obs:
            raise SourceError(path, f"missing dataset {obs.name}/{key}", episode, field)
        ds = obs[key]
        if not _is_image(ds):
            raise SourceError(path, f"shape mismatch: {ds.shape} {ds.dtype} is not (T, H, W, 3) uint8", episode,
                              field)
        if ds.shape[0] != n:
            raise SourceError(path, f"shape mismatch: {ds.shape[0]} frames for {n} steps", episode, field)
        check_written(ds, path, episode, field)
        height, width = int(ds.shape[1]), int(ds.shape[2])
        check_dims(height, width, path, episode, field)
        name = camera_name(key, used_names)
        cameras.append(CameraInfo(name=name, width=width, height=height, fps=fps, codec="", num_frames=n,
                                  source_key=field))
        videos[name] = frame_sequence(raw_frames(fs, path, ds.name, episode, key in bgr), n, fps, height, width,
                                      path, episode, field)
    low_dim = [k for k in sorted(obs.keys()) if isinstance(obs[k], h5py.Dataset) and not _is_image(obs[k])
               and obs[k].ndim <= 3]
    keys = option_list(options, "state_keys")
    parts = []
    for key in low_dim if keys is None else keys:
        values = read_array(obs, key, path, episode, rows=n).reshape(n, -1)
        parts.append((key, values, vector_names(key, values.shape[1])))
    state, names = concat_columns(parts, n)
    return cameras, videos, state, names, {"obs"}


def _is_image(item) -> bool:
    return isinstance(item, h5py.Dataset) and item.ndim == 4 and item.shape[-1] == 3 and item.dtype == np.uint8


def _step_extras(group: h5py.Group, path: str, episode: str, n: int, consumed: set[str]) -> dict[str, np.ndarray]:
    """Every other numeric per-step dataset (``states``, ``next_obs/*``, ``datagen_info/*``...), images excepted."""
    extras: dict[str, np.ndarray] = {}

    def visit(name: str, item) -> None:
        top = name.split("/", 1)[0]
        if top in consumed or not isinstance(item, h5py.Dataset) or _is_image(item):
            return
        if item.ndim >= 1 and item.shape[0] == n and item.dtype.kind in "fiub":
            values = read_array(group, name, path, episode, rows=n)
            extras[name.replace("/", ".")] = values if values.ndim == 1 else values.reshape(n, -1)

    group.visititems(visit)
    return extras


def _split(h5: h5py.File, demo: str) -> tuple[str, list[str]]:
    mask = h5.get("mask")
    if not isinstance(mask, h5py.Group):
        return "train", []
    holding = []
    for name in sorted(mask.keys()):
        members = {attr_text(v) for v in np.asarray(mask[name][()]).reshape(-1)}
        if demo in members:
            holding.append(name)
    for name in holding:
        if _SPLIT_FILTERS.get(name) in ("val", "test"):
            return _SPLIT_FILTERS[name], holding
    return "train", holding


def _control_rate(env: dict) -> Fraction:
    value = env.get("control_freq")
    try:
        return Fraction(str(value)).limit_denominator(1001) if value else DEFAULT_FPS
    except ValueError:
        return DEFAULT_FPS


def _robots(env: dict) -> str:
    robots = env.get("robots")
    if isinstance(robots, list):
        return "_".join(str(r) for r in robots).lower() or "unknown"
    return str(robots).lower() if robots else "unknown"


def _action_space(env: dict) -> tuple[str, str]:
    """robosuite controller configs say what the actions are: OSC_POSE deltas, joint positions..."""
    config = env.get("controller_configs") or {}
    if isinstance(config, dict) and "body_parts" in config:  # robosuite >= 1.5 composite controllers
        config = next(iter((config.get("body_parts") or {}).values()), {}) or {}
    kind = str(config.get("type", "")) if isinstance(config, dict) else ""
    delta = bool(config.get("control_delta", True)) if isinstance(config, dict) else True
    if kind.startswith("OSC"):
        return ("eef_delta", "delta") if delta else ("eef_pose", "absolute")
    if kind == "JOINT_POSITION":
        return "joint_pos", "delta" if delta else "absolute"
    if kind == "JOINT_VELOCITY":
        return "joint_vel", "absolute"
    return "unknown", "unknown"
