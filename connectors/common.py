"""Helpers shared by the connectors: options, image decoding, vector names and catalog defaults.

Everything here is about turning untrusted source values into schema values with errors that name
the file, the episode and the field; nothing here knows about any one format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import cv2
import numpy as np

from connectors.base import SourceError
from schemas import (
    PAIRING_TOLERANCE_NS,
    EpisodeMeta,
    FrameSequence,
    align_nearest,
    index_to_ns,
    make_episode_id,
    parse_rate,
    safe_name,
)

MAX_IMAGE_PIXELS = 64 * 1024 * 1024
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "eval": "val", "test": "test", "testing": "test"}
# Magic bytes of the image codecs OpenCV decodes; anything else is named in the error.
_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "bmp"), (b"RIFF", "webp"),
          (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))
DECODABLE_CODECS = frozenset({"jpeg", "png", "bmp", "webp", "tiff"})
_NUMBER = re.compile(r"(\d+)")


def natural_key(text: str) -> list:
    """Sort ``episode_2`` before ``episode_10`` (recorders number files without padding)."""
    return [int(part) if part.isdigit() else part for part in _NUMBER.split(text)]


def option_list(options: dict, key: str) -> list[str] | None:
    """A list option given as a list or a comma-separated string; None when absent."""
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise ValueError(f"option {key!r} must be a list or a comma-separated string, got {value!r}")


def option_rate(options: dict, key: str = "fps") -> Fraction | None:
    value = options.get(key)
    return None if value is None else parse_rate(value)


def estimate_rate(median_interval_ns: float) -> Fraction:
    """A nominal rate from a measured median interval: snapped to a whole rate within 1%, else exact-ish."""
    hz = 1e9 / max(median_interval_ns, 1.0)
    whole = round(hz)
    if whole >= 1 and abs(hz - whole) <= 0.01 * whole:
        return Fraction(whole)
    return Fraction(hz).limit_denominator(1001)


def split_name(raw: str) -> str:
    """The schema split (train/val/test) of a source split name; unknown names count as train."""
    return _SPLIT_NAMES.get(raw.strip().lower(), "train")


def dataset_name(uri: str, options: dict) -> str:
    return options.get("dataset") or safe_name(uri.rstrip("/").rsplit("/", 1)[-1] or "dataset")


def camera_name(raw: str, used: set[str] | None = None) -> str:
    """A safe camera name from a source key, keeping the key's words (``observation/image_0`` -> ``image_0``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", raw.rsplit("/", 1)[-1]).strip("_-")[:100] or "camera"
    if not name[0].isalnum():
        name = f"cam{name}"
    if used is not None:
        base, count = name, 1
        while name in used:
            count += 1
            name = f"{base}_{count}"
        used.add(name)
    return name


def vector_names(key: str, width: int, names: Sequence[str] | None = None) -> list[str]:
    """Per-dimension names: the source's when it has exactly one per dimension, else ``key_i``."""
    if names is not None and len(names) == width and all(isinstance(n, str) and n for n in names):
        return list(names)
    base = safe_name(key)
    return [base] if width == 1 else [f"{base}_{i}" for i in range(width)]


def as_matrix(values: np.ndarray, n: int, path: str, episode: str, field: str) -> np.ndarray:
    """A per-step array as [n, D] (scalars become one column); rejects the wrong number of rows."""
    arr = np.asarray(values)
    if arr.ndim == 0 or arr.shape[0] != n:
        raise SourceError(path, f"shape mismatch: {arr.shape} has {arr.shape[0] if arr.ndim else 0} rows for "
                          f"{n} steps", episode, field)
    if arr.dtype.kind not in "fiub":
        raise SourceError(path, f"not numeric: dtype {arr.dtype}", episode, field)
    return arr.reshape(n, -1)


def concat_columns(parts: list[tuple[str, np.ndarray, list[str]]], n: int) -> tuple[np.ndarray, list[str]]:
    """Columns side by side in one dtype (the widest float among them, float32 at least)."""
    if not parts:
        return np.zeros((n, 0), np.float32), []
    if len(parts) == 1 and parts[0][1].dtype.kind == "f":
        return np.ascontiguousarray(parts[0][1]), list(parts[0][2])
    dtype = np.result_type(np.float32, *[p[1].dtype for p in parts if p[1].dtype.kind == "f"])
    values = np.concatenate([p[1].astype(dtype, copy=False) for p in parts], axis=1)
    return values, [name for p in parts for name in p[2]]


def sniff_codec(data: bytes) -> str:
    """The image codec of encoded bytes from their magic number, or ``unknown``."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return "unknown"


def decode_image(data: bytes, path: str, episode: str, field: str, *, bgr: bool = False,
                 codec: str | None = None) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) to an RGB uint8 HxWx3 array.

    ``bgr`` says the source stored its pixels in BGR order (a per-camera quirk of some datasets),
    so the channels are swapped back after decoding.
    """
    codec = (codec or sniff_codec(data)).lower()
    if codec not in DECODABLE_CODECS:
        raise SourceError(path, f"unknown image codec {codec!r}: ActionReel decodes {sorted(DECODABLE_CODECS)}",
                          episode, field)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(path, f"{codec} image cannot be decoded ({len(data)} bytes)", episode, field)
    # OpenCV decodes colour to BGR: as-stored RGB needs the swap, a BGR-quirk source does not.
    return image if bgr else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def rgb_array(image: np.ndarray, path: str, episode: str, field: str, *, bgr: bool = False) -> np.ndarray:
    """A raw image array (HxW, HxWx1, HxWx3 or HxWx4, uint8) as RGB uint8 HxWx3."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise SourceError(path, f"image dtype {arr.dtype} is not uint8", episode, field)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        return np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise SourceError(path, f"image shape {arr.shape} is not HxWx3", episode, field)
    arr = arr[:, :, :3]
    return np.ascontiguousarray(arr[:, :, ::-1]) if bgr else arr


def frame_sequence(produce: Callable[[], Iterable[np.ndarray]], num_frames: int, fps: Fraction, height: int,
                   width: int, path: str, episode: str, field: str,
                   jpeg: Callable[[], Iterable[bytes]] | None = None, jpeg_bgr: bool = False) -> FrameSequence:
    """A lazily produced camera whose every frame is checked against the declared geometry.

    ``jpeg``: the same frames as the source's JPEG bytes, when ``produce`` is ``decode_image`` of
    exactly those bytes with ``bgr=jpeg_bgr``; the store may keep them as they are (schemas.FrameSequence;
    ``jpeg_bgr`` becomes the camera's ``channel_order`` "bgr").
    """

    def frames() -> Iterator[np.ndarray]:
        count = 0
        for image in produce():
            if image.shape != (height, width, 3):
                raise SourceError(path, f"shape mismatch: frame {count} is {image.shape}, the camera is "
                                  f"{height}x{width}x3", episode, field)
            count += 1
            yield image
        if count != num_frames:
            raise SourceError(path, f"{count} frames produced, {num_frames} expected", episode, field)

    return FrameSequence(frames=frames, num_frames=num_frames, fps=fps, width=width, height=height,
                         encoded=(lambda: iter(jpeg())) if jpeg is not None else None,
                         encoded_codec="jpeg" if jpeg is not None else "",
                         encoded_channel_order="bgr" if jpeg is not None and jpeg_bgr else "rgb")


def check_dims(height: int, width: int, path: str, episode: str, field: str) -> None:
    if height <= 0 or width <= 0 or height * width > MAX_IMAGE_PIXELS:
        raise SourceError(path, f"image size {width}x{height} is out of bounds", episode, field)


def json_text(value: Any) -> str:
    """A metadata value as catalog text: strings as is, everything else as compact JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    return json.dumps(value, separators=(",", ":"), default=str)


def task_table(texts: Sequence[str | None]) -> tuple[list[str], np.ndarray]:
    """Per-step instruction strings to (unique task list in order of appearance, per-step index)."""
    tasks: list[str] = []
    where: dict[str, int] = {}
    index = np.full(len(texts), -1, np.int32)
    for step, text in enumerate(texts):
        if not text:
            continue
        if text not in where:
            where[text] = len(tasks)
            tasks.append(text)
        index[step] = where[text]
    return tasks, index


def pair_frames(step_ns: np.ndarray, frame_ns: np.ndarray, camera: str) -> tuple[np.ndarray, dict[str, str]]:
    """Each step's frame as LeRobot and GR00T pick it: the nearest frame time within 1e-4 s, else -1.

    Returns the per-step frame indices and catalog extras that say what the job report must tell:
    ``pairing.<camera>.frame_shift`` (the first paired step's frame minus its step index, when not 0:
    the source's timestamps are offset from its video) and ``pairing.<camera>.unpaired_steps``.
    """
    index = align_nearest(step_ns, frame_ns, PAIRING_TOLERANCE_NS)
    extras: dict[str, str] = {}
    paired = np.flatnonzero(index >= 0)
    if paired.size and int(index[paired[0]]) != int(paired[0]):
        extras[f"pairing.{camera}.frame_shift"] = str(int(index[paired[0]]) - int(paired[0]))
    if paired.size != index.size:
        extras[f"pairing.{camera}.unpaired_steps"] = str(int(index.size - paired.size))
    return index, extras


def build_meta(*, ref_dataset: str, ref_key: str, ref_uri: str, source_format: str, options: dict, fps: Fraction,
               num_steps: int, state: np.ndarray, state_names: list[str], action: np.ndarray,
               action_names: list[str], embodiment: str = "unknown", kind: str = "teleop", split: str = "train",
               tasks: list[str] | None = None, extras: dict[str, str] | None = None, success: bool | None = None,
               action_space: str = "unknown", action_representation: str = "unknown", rotation_type: str = "",
               duration_ns: int | None = None) -> EpisodeMeta:
    """Catalog metadata with the user's overrides (``embodiment``, ``kind``, ``split``, ...) applied."""
    return EpisodeMeta(
        episode_id=make_episode_id(ref_dataset, ref_key),
        dataset=ref_dataset,
        source_format=source_format,
        source_uri=ref_uri,
        source_key=ref_key,
        source_checksum="",
        kind=options.get("kind") or kind,
        embodiment=options.get("embodiment") or safe_name(embodiment).lower(),
        control_fps=fps,
        num_steps=num_steps,
        state_names=state_names,
        action_names=action_names,
        state_dtype=str(state.dtype),
        action_dtype=str(action.dtype),
        action_space=options.get("action_space") or action_space,
        action_representation=options.get("action_representation") or action_representation,
        rotation_type=options.get("rotation_type", rotation_type),
        tasks=list(tasks or []),
        success=success,
        split=options.get("split") or split,
        extras=dict(extras or {}),
        duration_ns=int(index_to_ns(num_steps, fps)) if duration_ns is None else duration_ns,
    )
