"""ALOHA / ACT / Mobile ALOHA episodes: one HDF5 file per episode.

Mapping (docs/formats.md): ``/observations/qpos`` -> state, ``/action`` (+ ``/base_action`` when
present) -> action, ``/observations/qvel`` and ``/observations/effort`` -> ``extra.qvel`` /
``extra.effort``, ``/observations/images/<cam>`` -> cameras, either raw ``(T, H, W, 3)`` arrays or
JPEG rows padded to ``(T, N)`` with their true lengths in ``/compress_len[camera, t]``. Attribute
``sim`` -> kind. Options: ``fps`` (default 50), ``color_order`` (``rgb`` default: the channel
order of the arrays the recorder stored; cv2-encoded JPEG rows hold those arrays as cv2 saw them),
``camera_order`` (row order of ``compress_len``; default: sorted camera names), ``embodiment``.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import fsspec
import h5py
import numpy as np

from connectors.base import EpisodeRef, SourceError
from connectors.common import (
    build_meta,
    camera_name,
    check_dims,
    decode_image,
    frame_sequence,
    option_list,
    option_rate,
)
from connectors.hdf5.h5util import attr_text, get_dataset, open_h5, raw_frames, read_array
from schemas import CameraInfo, Episode, StepArrays, index_to_ns

DEFAULT_FPS = Fraction(50)
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
BIMANUAL_NAMES = [f"{side}_{joint}" for side in ("left", "right") for joint in ARM]


def is_aloha(h5: h5py.File) -> bool:
    return isinstance(h5.get("observations/qpos"), h5py.Dataset) and isinstance(h5.get("action"), h5py.Dataset)


def read_aloha_episode(fs: fsspec.AbstractFileSystem, path: str, ref: EpisodeRef) -> Episode:
    options = ref.options
    fps = option_rate(options) or DEFAULT_FPS
    episode = ref.key
    with open_h5(fs, path, episode) as h5:
        obs = h5.get("observations")
        if not isinstance(obs, h5py.Group):
            raise SourceError(path, "missing group /observations", episode, "observations")
        qpos = read_array(obs, "qpos", path, episode)
        n = int(qpos.shape[0])
        if n < 1:
            raise SourceError(path, "episode has no steps", episode, "observations/qpos")
        state = qpos.reshape(n, -1)
        action = read_array(h5, "action", path, episode, rows=n).reshape(n, -1)
        action_names = _names(action.shape[1], "action")
        action_space = "joint_pos"
        if "base_action" in h5:
            base = read_array(h5, "base_action", path, episode, rows=n).reshape(n, -1)
            action = np.concatenate([action, base.astype(action.dtype)], axis=1)
            action_names += [f"base_action_{i}" for i in range(base.shape[1])]
            action_space = "mixed"
        extras = {name: read_array(obs, name, path, episode, rows=n) for name in ("qvel", "effort") if name in obs}
        sim = bool(h5.attrs.get("sim", False))
        compressed = bool(h5.attrs.get("compress", False))
        cameras, videos = _cameras(fs, h5, path, episode, n, fps, options, compressed)
        meta_extras = {f"aloha.attr.{k}": attr_text(v) for k, v in h5.attrs.items()}
    meta_extras["aloha.color_order"] = str(options.get("color_order", "rgb"))
    steps = StepArrays(timestamp_ns=index_to_ns(np.arange(n), fps), state=state, action=action,
                       frame_index={c.name: np.arange(n, dtype=np.int32) for c in cameras}, extras=extras)
    meta = build_meta(ref_dataset=ref.dataset, ref_key=ref.key, ref_uri=ref.uri, source_format="aloha_hdf5",
                      options=options, fps=fps, num_steps=n, state=state, state_names=_names(state.shape[1], "qpos"),
                      action=action, action_names=action_names,
                      embodiment="mobile_aloha" if action_space == "mixed" else "aloha",
                      kind="sim" if sim else "teleop", action_space=action_space, action_representation="absolute",
                      extras=meta_extras)
    meta.cameras = cameras
    return Episode(meta=meta, steps=steps, videos=videos)


def _names(width: int, prefix: str) -> list[str]:
    return list(BIMANUAL_NAMES) if width == len(BIMANUAL_NAMES) else [f"{prefix}_{i}" for i in range(width)]


def _cameras(fs, h5: h5py.File, path: str, episode: str, n: int, fps: Fraction, options: dict, compressed: bool):
    images = h5.get("observations/images")
    if images is None:
        return [], {}
    names = sorted(images.keys())
    bgr = str(options.get("color_order", "rgb")).lower() == "bgr"
    order = option_list(options, "camera_order") or names
    lengths = None
    if compressed or any(images[k].ndim == 2 for k in names):
        lengths = read_array(h5, "compress_len", path, episode)
        if lengths.ndim != 2 or lengths.shape[0] < len(order) or lengths.shape[1] < n:
            raise SourceError(path, f"shape mismatch: compress_len is {lengths.shape}, expected ({len(order)}, {n})",
                              episode, "compress_len")
    cameras, videos, used = [], {}, set()
    for key in names:
        field = f"observations/images/{key}"
        ds = get_dataset(images, key, path, episode)
        if ds.shape[0] != n:
            raise SourceError(path, f"shape mismatch: {ds.shape[0]} frames for {n} steps", episode, field)
        name = camera_name(key, used)
        if ds.ndim == 4:
            height, width = int(ds.shape[1]), int(ds.shape[2])
            if ds.shape[3] != 3 or ds.dtype != np.uint8:
                raise SourceError(path, f"shape mismatch: images are {ds.shape} {ds.dtype}, expected (T, H, W, 3) "
                                  "uint8", episode, field)
            produce = raw_frames(fs, path, ds.name, episode, bgr)
            jpeg = None
        elif ds.ndim == 2 and lengths is not None:
            if key not in order:
                raise SourceError(path, f"camera is not in camera_order {order}", episode, field)
            row = lengths[order.index(key), :n].astype(np.int64)
            if np.any(row <= 0) or np.any(row > ds.shape[1]):
                raise SourceError(path, f"compress_len outside 1..{ds.shape[1]}", episode, "compress_len")
            first = decode_image(bytes(ds[0, :row[0]]), path, episode, field, bgr=not bgr)
            height, width = first.shape[:2]
            produce = _jpeg_frames(fs, path, ds.name, row, episode, not bgr)
            # With color_order=rgb the rows hold channel-swapped JPEGs (cv2 encoded RGB arrays as BGR): they are
            # kept as they are with channel_order "bgr", and the store's decoder swaps them back.
            jpeg = _jpeg_rows(fs, path, ds.name, row, episode)
        else:
            raise SourceError(path, f"shape mismatch: images are {ds.shape}, expected (T, H, W, 3) or (T, N) with "
                              "compress_len", episode, field)
        check_dims(height, width, path, episode, field)
        cameras.append(CameraInfo(name=name, width=width, height=height, fps=fps, codec="", num_frames=n,
                                  source_key=field))
        videos[name] = frame_sequence(produce, n, fps, height, width, path, episode, field, jpeg=jpeg,
                                      jpeg_bgr=not bgr)
    return cameras, videos


def _jpeg_rows(fs, path: str, dataset: str, lengths: np.ndarray, episode: str):
    """Padded JPEG rows cut to their recorded lengths, as bytes (the file opens on demand)."""

    def rows() -> Iterator[bytes]:
        with open_h5(fs, path, episode) as h5:
            ds = h5[dataset]
            for start in range(0, len(lengths), 64):
                for offset, row in enumerate(ds[start:start + 64]):
                    yield row[:int(lengths[start + offset])].tobytes()

    return rows


def _jpeg_frames(fs, path: str, dataset: str, lengths: np.ndarray, episode: str, bgr: bool):
    """Padded JPEG rows, cut to their recorded lengths and decoded."""
    rows = _jpeg_rows(fs, path, dataset, lengths, episode)

    def produce() -> Iterator[np.ndarray]:
        for data in rows():
            yield decode_image(data, path, episode, dataset.lstrip("/"), bgr=bgr)

    return produce
