"""Decoding sample members: small arrays (cached per sample) and frames (decoded into batch buffers).

A member that cannot be decoded raises ``CorruptMemberError`` naming shard, member and sample key (its
bytes passed their checksum when the index has one: then the shard was written so).
"""

from __future__ import annotations

import functools
import io
import json
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
import torch
from torch.utils.data import get_worker_info

from pipeline.loaders.integrity import CorruptMemberError
from pipeline.loaders.normalize import Normalizer
from pipeline.loaders.segments import SegmentFrames
from pipeline.loaders.source import ViewSource


@dataclass
class SampleArrays:
    """The small members of one sample, decoded once."""

    info: dict
    state: np.ndarray
    state_valid: np.ndarray
    action: np.ndarray
    action_valid: np.ndarray
    timestamp: np.ndarray
    task_index: np.ndarray


@functools.lru_cache(maxsize=64)
def npy_header_bytes(shape: tuple[int, ...]) -> int:
    """Length of the .npy header ``np.save`` writes for a C-ordered uint8 array of ``shape``."""
    header = {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return len(buffer.getvalue())


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_image_into(data: bytes, codec: str, out: np.ndarray) -> None:
    """Decode a frame straight into ``out`` (HxWx3 uint8, a slice of the batch buffer): no extra copy."""
    if codec == "jpg":
        try:
            simplejpeg.decode_jpeg(data, "rgb", buffer=out)
            return
        except ValueError as exc:
            raise ValueError(f"corrupt jpg frame: {exc}") from exc
    image = load_npy(data) if codec == "npy" else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape != out.shape:
        raise ValueError(f"corrupt {codec} frame")
    out[...] = image if codec == "npy" else image[..., ::-1]


def shared_uint8(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialized uint8 tensor, in shared memory when built in a DataLoader worker: handing it to the
    main process then moves no bytes (torch would otherwise copy it into shared memory)."""
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
    if get_worker_info() is None or new_shared is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class SampleReader:
    """Reads one view's samples: cached small arrays, frames decoded into caller buffers."""

    def __init__(self, source: ViewSource, cache_size: int = 1024) -> None:
        self.source = source
        self.codec = source.manifest.config.frame_codec
        self.cache_size = cache_size
        self._arrays: OrderedDict[int, SampleArrays] = OrderedDict()
        self._extras: OrderedDict[tuple[int, str], np.ndarray | None] = OrderedDict()

    def __getstate__(self) -> dict:
        return {"source": self.source, "codec": self.codec, "cache_size": self.cache_size}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._arrays = OrderedDict()
        self._extras = OrderedDict()
        self._segments = None

    _segments: SegmentFrames | None = None  # video-segment views only, made on first use in each process

    def extra(self, sample: int, name: str) -> np.ndarray | None:
        """A step extra of ``sample`` ([num_steps, ...]) when the view carries it, else None; cached."""
        key = (sample, name)
        if key in self._extras:
            self._extras.move_to_end(key)
            return self._extras[key]
        suffix = f"extra.{name}.npy"
        data = self.source.member(sample, suffix)
        value = None if data is None else self._decoded(sample, suffix, load_npy, data)
        self._extras[key] = value
        while len(self._extras) > self.cache_size:
            self._extras.popitem(last=False)
        return value

    def arrays(self, sample: int) -> SampleArrays:
        cached = self._arrays.get(sample)
        if cached is not None:
            self._arrays.move_to_end(sample)
            return cached

        def npy(suffix: str) -> np.ndarray:
            return self._decoded(sample, suffix, load_npy, self._required(sample, suffix))

        info = self._decoded(sample, "meta.json", json.loads, self._required(sample, "meta.json"))
        if not isinstance(info, dict):
            raise self.source.corrupt(sample, "meta.json", "not a JSON object")
        arrays = SampleArrays(info, npy("state.npy"),
                              npy("state_valid.npy"), npy("action.npy"), npy("action_valid.npy"),
                              npy("timestamp.npy"), npy("task_index.npy"))
        self._arrays[sample] = arrays
        while len(self._arrays) > self.cache_size:
            self._arrays.popitem(last=False)
        return arrays

    def _required(self, sample: int, suffix: str) -> bytes:
        data = self.source.member(sample, suffix)
        if data is None:
            raise self.source.corrupt(sample, suffix, "member missing from the shard index")
        return data

    def _decoded(self, sample: int, suffix: str, decode, data: bytes):
        """``decode(data)``; any failure is a CorruptMemberError naming the member."""
        try:
            return decode(data)
        except CorruptMemberError:
            raise
        except (ValueError, OSError, EOFError, UnicodeDecodeError, cv2.error) as exc:
            raise self.source.corrupt(sample, suffix, f"cannot be decoded: {exc}") from exc

    def frame_into(self, sample: int, camera: str, offset: int, out: np.ndarray) -> bool:
        """Decode the camera's frame of step ``offset`` of ``sample`` into ``out``; False (zeros) when absent."""
        if self.codec == "mp4":  # one video segment per sample and camera (pipeline.loaders.segments)
            if self._segments is None:
                self._segments = SegmentFrames(self.source)
            return self._segments.frame_into(sample, self.arrays(sample).info, camera, offset, out)
        suffix = f"{camera}.{offset:04d}.{self.codec}"
        if self.codec == "npy":  # raw frames: read straight into the batch buffer, past the .npy header
            found = self.source.read_into(sample, suffix, out, npy_header_bytes(out.shape))
            if not found:
                out[...] = 0
            return found
        data = self.source.member(sample, suffix)
        if data is None:
            out[...] = 0
            return False
        self._decoded(sample, suffix, lambda d: decode_image_into(d, self.codec, out), data)
        letterbox = self.arrays(sample).info.get("letterbox")
        if letterbox and camera in letterbox:
            restore_padding(out, letterbox[camera], self.arrays(sample).info["pad_value"])
        return True


def restore_padding(image: np.ndarray, region: list[int], value: int) -> None:
    """Set everything outside the letterbox's valid region back to the pad value (JPEG blurs it at
    block edges): the padding a policy sees is then exactly the fill, as in openpi's resize_with_pad."""
    top, left, rows, cols = region
    image[:top] = value
    image[top + rows:] = value
    image[:, :left] = value
    image[:, left + cols:] = value


def stack_padded(rows: list[np.ndarray], pad_to: int | None, name: str) -> np.ndarray:
    """Stack float rows ([..., D]); zero-pad D to ``pad_to`` when set (mixed embodiments need it)."""
    widths = {r.shape[-1] for r in rows}
    if pad_to is None:
        if len(widths) > 1:
            raise ValueError(f"{name} widths {sorted(widths)} differ across embodiments: set {name}_pad_to")
        return np.stack(rows).astype(np.float32)
    if max(widths) > pad_to:
        raise ValueError(f"{name} width {max(widths)} exceeds {name}_pad_to={pad_to}")
    out = np.zeros((len(rows), *rows[0].shape[:-1], pad_to), np.float32)
    for i, row in enumerate(rows):
        out[i, ..., : row.shape[-1]] = row
    return out


def normalize_rows(normalizer: Normalizer, embodiments: list[str], feature: str, values: np.ndarray,
                   widths: dict[str, int]) -> np.ndarray:
    """Normalize each row with its embodiment's stats, on its native (unpadded) width."""
    if normalizer.mode == "none":
        return values
    for embodiment in set(embodiments):
        rows = np.array([e == embodiment for e in embodiments])
        width = widths.get(embodiment, values.shape[-1])
        values[rows, ..., :width] = normalizer(embodiment, feature, values[rows, ..., :width])
    return values


def native_widths(normalizer: Normalizer, feature: str) -> dict[str, int]:
    return {group: stats[feature].dims for group, stats in normalizer.stats.groups.items() if feature in stats}
