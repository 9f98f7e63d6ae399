"""One RLDS episode (a serialized ``tf.train.Example``) to the unified schema.

Mapping (docs/formats.md): ``steps/observation/<image>`` -> cameras (JPEG/PNG decoded lazily; JPEG
bytes also offered as they are, for the store to keep),
``steps/observation/state`` (or the ``state_keys`` option) -> state, ``steps/action`` (a tensor,
or the sorted leaves of an action dict) -> action, ``language_instruction`` -> tasks,
``reward`` -> reward, ``is_terminal`` -> is_terminal, ``is_first``/``is_last`` -> checked,
``discount`` and every other numeric step feature -> ``extra.*``, ``episode_metadata/*`` ->
catalog extras.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
from google.protobuf.message import DecodeError

from connectors.base import EpisodeRef, SourceError
from connectors.common import (
    as_matrix,
    build_meta,
    camera_name,
    concat_columns,
    decode_image,
    frame_sequence,
    json_text,
    option_list,
    sniff_codec,
    split_name,
    task_table,
    vector_names,
)
from connectors.rlds.example_pb import Example
from connectors.rlds.features import FeatureSpec, numpy_dtype
from schemas import CameraInfo, Episode, StepArrays, index_to_ns

STEPS = "steps/"
OBS = "steps/observation/"
INSTRUCTION_KEYS = ("steps/language_instruction", "steps/observation/natural_language_instruction",
                    "steps/observation/language_instruction")
_CONSUMED = {"steps/is_first", "steps/is_last", "steps/is_terminal", "steps/reward"}


def parse_example(data: bytes, path: str, episode: str) -> dict:
    """The feature map of one serialized Example; errors name the record."""
    example = Example()
    try:
        example.ParseFromString(data)
    except DecodeError as exc:
        raise SourceError(path, f"not a tf.train.Example: {exc}", episode, "tfrecord.data") from exc
    return dict(example.features.feature)


def infer_spec(key: str, feature) -> FeatureSpec:
    """The spec of a key that ``features.json`` does not describe, from its protobuf kind."""
    kind = feature.WhichOneof("kind")
    per_step = key.startswith(STEPS)
    if kind == "float_list":
        return FeatureSpec(key, "tensor", "float32", (), per_step=per_step, shape_known=False)
    if kind == "int64_list":
        return FeatureSpec(key, "tensor", "int64", (), per_step=per_step, shape_known=False)
    values = feature.bytes_list.value
    looks_like_image = len(values) > 0 and all(v[:3] == b"\xff\xd8\xff" or v[:4] == b"\x89PNG" for v in values[:2])
    return FeatureSpec(key, "image" if looks_like_image else "text", "uint8" if looks_like_image else "string", (),
                       "", per_step)


class _Decoder:
    """Typed values of the features of one Example."""

    def __init__(self, features: dict, specs: dict[str, FeatureSpec], path: str, episode: str) -> None:
        self.features, self.path, self.episode = features, path, episode
        absent = sorted(k for k in specs if k not in features)
        if absent:  # TFDS writes every declared feature: a missing one means a broken writer or file
            raise SourceError(path, "feature declared in features.json is missing from the record", episode, absent[0])
        self.specs = {key: specs.get(key) or infer_spec(key, feature) for key, feature in features.items()}
        self.num_steps = self._count_steps()

    def _count_steps(self) -> int:
        for key in ("steps/is_first", "steps/is_last", "steps/reward"):
            if key in self.features:
                return len(self._raw(key))
        for key, spec in sorted(self.specs.items()):
            if spec.per_step and spec.kind in ("image", "text"):
                return len(self._raw(key))
        raise SourceError(self.path, "no per-step feature to count the steps", self.episode, "steps")

    def _raw(self, key: str):
        feature = self.features[key]
        kind = feature.WhichOneof("kind")
        if kind is None:
            return []
        return getattr(feature, kind).value

    def tensor(self, key: str) -> np.ndarray:
        """A per-step tensor as [num_steps, ...] (or a per-episode tensor in its declared shape)."""
        try:
            return self._tensor(key)
        except (ValueError, zlib.error, OverflowError) as exc:  # bytes that do not fit the declared dtype/shape
            raise SourceError(self.path, f"undecodable values: {exc}", self.episode, key) from exc

    def _tensor(self, key: str) -> np.ndarray:
        spec = self.specs[key]
        raw = self._raw(key)
        kind = self.features[key].WhichOneof("kind")
        try:
            dtype = numpy_dtype(spec)
        except ValueError as exc:
            raise SourceError(self.path, str(exc), self.episode, key) from exc
        if spec.encoding in ("bytes", "zlib") or kind == "bytes_list":
            blobs = [zlib.decompress(b) if spec.encoding == "zlib" else b for b in raw]
            flat = np.concatenate([np.frombuffer(b, dtype) for b in blobs]) if blobs else np.zeros(0, dtype)
        else:
            flat = np.asarray(raw, dtype=np.float32 if kind == "float_list" else np.int64)
            if flat.size and dtype != flat.dtype:
                flat = flat.astype(dtype)
        rows = self.num_steps if spec.per_step else 1
        per_row = int(np.prod(spec.shape)) if spec.shape_known and all(d >= 0 for d in spec.shape) else None
        if per_row is None:
            if rows == 0 or flat.size % rows:
                raise SourceError(self.path, f"shape mismatch: {flat.size} values do not split into {rows} steps",
                                  self.episode, key)
            per_row = flat.size // rows
        if flat.size != rows * per_row:
            raise SourceError(self.path, f"shape mismatch: {flat.size} values, expected {rows} x {per_row} for shape "
                              f"{list(spec.shape)}", self.episode, key)
        return flat.reshape(rows, per_row) if spec.per_step else flat.reshape(spec.shape if per_row else (0,))

    def blobs(self, key: str) -> list[bytes]:
        values = list(self._raw(key))
        if self.specs[key].per_step and len(values) != self.num_steps:
            raise SourceError(self.path, f"shape mismatch: {len(values)} values for {self.num_steps} steps",
                              self.episode, key)
        return values

    def texts(self, key: str) -> list[str]:
        return [b.decode("utf-8", "replace") for b in self.blobs(key)]


def read_rlds_episode(data: bytes, specs: dict[str, FeatureSpec], ref: EpisodeRef, path: str, split: str,
                      fps: Fraction, defaults: dict) -> Episode:
    options = ref.options
    dec = _Decoder(parse_example(data, path, ref.key), specs, path, ref.key)
    n = dec.num_steps
    if n < 1:
        raise SourceError(path, "episode has no steps", ref.key, "steps")
    flag_notes = _check_flags(dec, n)
    cameras, videos, frame_index, skipped = _cameras(dec, options, fps)
    used = {f"{OBS}{c.source_key}" for c in cameras} | {f"{OBS}{k}" for k in skipped}
    state, state_names, state_keys = _vector_group(dec, option_list(options, "state_keys"), OBS,
                                                   _default_state(dec, used))
    action, action_names, action_keys = _vector_group(dec, option_list(options, "action_keys"), STEPS + "action/",
                                                      _default_action(dec))
    used |= state_keys | action_keys
    instruction = options.get("instruction_key")
    instruction = f"{STEPS}{instruction}" if instruction else next((k for k in INSTRUCTION_KEYS if k in dec.specs), "")
    tasks, task_index = task_table(dec.texts(instruction)) if instruction else ([], np.full(n, -1, np.int32))
    used |= {instruction} | _CONSUMED
    extras, step_extras = _extras(dec, used, n)
    extras.update({"rlds.file": path.rsplit("/", 1)[-1], "rlds.split": split, "rlds.record": ref.key.rsplit(":", 1)[-1],
                   "rlds.fps": f"{fps.numerator}/{fps.denominator}"})
    extras.update(flag_notes)
    if skipped:
        extras["rlds.skipped_images"] = ",".join(sorted(skipped))
    reward = dec.tensor("steps/reward").reshape(n).astype(np.float64) if "steps/reward" in dec.specs else None
    terminal = dec.tensor("steps/is_terminal").reshape(n).astype(bool) if "steps/is_terminal" in dec.specs else None
    steps = StepArrays(
        timestamp_ns=index_to_ns(np.arange(n), fps), state=state, action=action, frame_index=frame_index,
        task_index=task_index, reward=reward, is_terminal=terminal,
        state_valid=None if state.shape[1] else np.zeros(n, bool),
        action_valid=None if action.shape[1] else np.zeros(n, bool), extras=step_extras)
    meta = build_meta(ref_dataset=ref.dataset, ref_key=ref.key, ref_uri=ref.uri, source_format="rlds",
                      options=options, fps=fps, num_steps=n, state=state, state_names=state_names, action=action,
                      action_names=action_names, embodiment=defaults.get("embodiment", "unknown"),
                      split=split_name(split), tasks=tasks, extras=extras)
    meta.cameras = cameras
    return Episode(meta=meta, steps=steps, videos=videos)


def _check_flags(dec: _Decoder, n: int) -> dict[str, str]:
    """RLDS flags the first and last step. A flag inside the episode means several episodes ran together
    (an error); a missing flag at the ends (episodes cut short, as in debug excerpts) is recorded."""
    notes = {}
    for key, expected_at in (("steps/is_first", 0), ("steps/is_last", n - 1)):
        if key not in dec.specs:
            continue
        flags = dec.tensor(key).reshape(n).astype(bool)
        inside = np.nonzero(flags & (np.arange(n) != expected_at))[0]
        if inside.size:
            raise SourceError(dec.path, f"step {int(inside[0])} has {key.rsplit('/', 1)[-1]}=True inside the episode",
                              dec.episode, key)
        if not flags[expected_at]:
            notes[f"rlds.{key.rsplit('/', 1)[-1]}_unflagged"] = "true"
    return notes


def _cameras(dec: _Decoder, options: dict, fps: Fraction):
    chosen = option_list(options, "camera_keys")
    bgr = set(option_list(options, "bgr_cameras") or [])
    candidates = [k[len(OBS):] for k, s in sorted(dec.specs.items()) if s.kind == "image" and k.startswith(OBS)]
    keys = chosen if chosen is not None else candidates
    cameras, videos, frame_index, skipped, used_names = [], {}, {}, [], set()
    n = dec.num_steps
    for key in keys:
        full = f"{OBS}{key}"
        if full not in dec.specs:
            raise SourceError(dec.path, "camera feature is missing from the episode", dec.episode, full)
        spec = dec.specs[full]
        colour = not spec.shape or (len(spec.shape) == 3 and spec.shape[2] == 3 and spec.dtype == "uint8")
        if spec.kind != "image" or not colour:
            skipped.append(key)  # depth and single-channel images are not colour video
            continue
        blobs = dec.blobs(full)
        name = camera_name(key, used_names)
        first = decode_image(blobs[0], dec.path, dec.episode, full, bgr=key in bgr)
        if spec.shape and all(d > 0 for d in spec.shape[:2]) and first.shape[:2] != tuple(spec.shape[:2]):
            raise SourceError(dec.path, f"shape mismatch: image is {first.shape}, features.json declares "
                              f"{list(spec.shape)}", dec.episode, full)
        height, width = first.shape[:2]

        def produce(blobs=blobs, full=full, flip=key in bgr) -> Iterator[np.ndarray]:
            for blob in blobs:
                yield decode_image(blob, dec.path, dec.episode, full, bgr=flip)

        jpeg = None if sniff_codec(blobs[0]) != "jpeg" else (lambda blobs=blobs: blobs)
        videos[name] = frame_sequence(produce, n, fps, height, width, dec.path, dec.episode, full, jpeg=jpeg,
                                      jpeg_bgr=key in bgr)
        cameras.append(CameraInfo(name=name, width=width, height=height, fps=fps, codec="", num_frames=n,
                                  source_key=key))
        frame_index[name] = np.arange(n, dtype=np.int32)
    return cameras, videos, frame_index, skipped


def _default_state(dec: _Decoder, cameras: set[str]) -> list[str]:
    if f"{OBS}state" in dec.specs:
        return ["state"]
    return [k[len(OBS):] for k, s in sorted(dec.specs.items())
            if k.startswith(OBS) and k not in cameras and s.kind == "tensor" and s.dtype.startswith("float")]


def _default_action(dec: _Decoder) -> list[str]:
    if "steps/action" in dec.specs:
        return [""]
    return [k[len(STEPS + "action/"):] for k, s in sorted(dec.specs.items())
            if k.startswith(STEPS + "action/") and s.kind == "tensor"]


def _vector_group(dec: _Decoder, chosen: list[str] | None, prefix: str,
                  default: list[str]) -> tuple[np.ndarray, list[str], set[str]]:
    keys = chosen if chosen is not None else default
    parts = []
    for key in keys:
        full = f"{prefix}{key}" if key else prefix.rstrip("/")
        if full not in dec.specs:
            raise SourceError(dec.path, "feature is missing from the episode", dec.episode, full)
        values = as_matrix(dec.tensor(full), dec.num_steps, dec.path, dec.episode, full)
        parts.append((full, values, vector_names(key or prefix.strip("/").rsplit("/", 1)[-1], values.shape[1])))
    values, names = concat_columns(parts, dec.num_steps)
    return values, names, {p[0] for p in parts}


def _extras(dec: _Decoder, used: set[str], n: int) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Episode-level features -> catalog extras; numeric per-step features -> ``extra.*`` columns."""
    extras: dict[str, str] = {}
    step_extras: dict[str, np.ndarray] = {}
    for key, spec in sorted(dec.specs.items()):
        if key in used:
            continue
        name = key[len(STEPS):] if spec.per_step and key.startswith(STEPS) else key
        label = name.replace("/", ".")
        if spec.kind == "image":
            continue
        if not spec.per_step:
            value = dec.texts(key) if spec.kind == "text" else dec.tensor(key)
            if isinstance(value, list):
                value = value[0] if len(value) == 1 else value
            elif np.asarray(value).size == 1:
                value = np.asarray(value).reshape(()).item()
            extras[f"rlds.{label}"] = json_text(value)
        elif spec.kind == "tensor":
            values = dec.tensor(key).reshape(n, -1)
            step_extras[label] = values[:, 0] if values.shape[1] == 1 else values
        elif spec.kind == "text":
            texts = set(dec.texts(key))
            extras[f"rlds.steps.{label}"] = texts.pop() if len(texts) == 1 else json_text(dec.texts(key))
    return extras, step_extras

