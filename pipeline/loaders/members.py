"""Decoding sample members: small arrays (cached per sample) and frames (decoded into batch buffers)."""

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

from pipeline.loaders.normalize import Normalizer
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

    def __getstate__(self) -> dict:
        return {"source": self.source, "codec": self.codec, "cache_size": self.cache_size}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._arrays = OrderedDict()

    def arrays(self, sample: int) -> SampleArrays:
        cached = self._arrays.get(sample)
        if cached is not None:
            self._arrays.move_to_end(sample)
            return cached

        def npy(suffix: str) -> np.ndarray:
            return load_npy(self.source.member(sample, suffix))

        arrays = SampleArrays(json.loads(self.source.member(sample, "meta.json")), npy("state.npy"),
                              npy("state_valid.npy"), npy("action.npy"), npy("action_valid.npy"),
                              npy("timestamp.npy"), npy("task_index.npy"))
        self._arrays[sample] = arrays
        while len(self._arrays) > self.cache_size:
            self._arrays.popitem(last=False)
        return arrays

    def frame_into(self, sample: int, camera: str, offset: int, out: np.ndarray) -> bool:
        """Decode the camera's frame of step ``offset`` of ``sample`` into ``out``; False (zeros) when absent."""
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
        decode_image_into(data, self.codec, out)
        return True


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
