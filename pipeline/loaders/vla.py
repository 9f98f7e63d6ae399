"""VLA loader: per-step samples (images + instruction + state -> action chunk) from a view's shards.

A batch (``batch_size`` set, the fast path; use ``DataLoader(dataset, batch_size=None)``) holds:

    images          uint8  [B, K, 3, H, W]   K = the loader's cameras; a view over a channels-last
                                             buffer (call .contiguous() if a kernel needs NCHW)
    image_mask      bool   [B, K]            False where the episode has no frame for that camera
    state           float32 [B, Ds]          state[t], normalized per embodiment
    actions         float32 [B, H, Da]       actions[t : t+H]; past the episode end the last action
    action_is_pad   bool   [B, H]            True exactly where t+h >= episode length
    action_valid    bool   [B, H]            False where the source marked the action missing
    instruction     list[str]                the step's task text ("" when none)
    embodiment, kind, action_source, dataset, episode_id, key: list[str]; step, timestamp_ns: int64 [B]

With ``batch_size=None`` it yields the same fields per sample (no batch dimension), for a
DataLoader that batches itself. The order is ``pipeline.loaders.order``: exact, seeded, equal
batch counts on every rank, independent of the number of workers when batching here.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.loaders.normalize import Normalizer
from pipeline.loaders.order import EpochOrder, OrderConfig, worker_batches
from pipeline.loaders.source import ViewSource
from pipeline.shards.index import SampleEntry


@dataclass(frozen=True)
class VLAConfig:
    action_horizon: int = 50
    cameras: tuple[str, ...] | None = None  # default: every camera of the view
    normalization: str = "none"  # none | mean_std | quantile | min_max
    clip: bool = False
    state_pad_to: int | None = None
    action_pad_to: int | None = None
    batch_size: int | None = 32
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 10_000
    rank: int | None = None  # default: torch.distributed's rank (0 when not initialized)
    world_size: int | None = None


@dataclass
class _SampleArrays:
    """The small members of one sample, decoded once and cached."""

    info: dict
    state: np.ndarray
    action: np.ndarray
    action_valid: np.ndarray
    timestamp: np.ndarray
    task_index: np.ndarray


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
    """An uninitialized uint8 tensor in shared memory when in a DataLoader worker: handing it to the main
    process then moves no bytes (torch would otherwise copy it into shared memory)."""
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
    if get_worker_info() is None or new_shared is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class VLADataset(IterableDataset):
    def __init__(self, source: ViewSource, config: VLAConfig = VLAConfig(), epoch: int = 0) -> None:
        super().__init__()
        view = source.manifest.config
        if config.action_horizon > view.max_action_horizon:
            raise ValueError(f"action_horizon {config.action_horizon} exceeds the view's max_action_horizon "
                             f"{view.max_action_horizon}: re-shard with a longer look-ahead")
        self.source = source
        self.config = config
        self.cameras = list(config.cameras) if config.cameras is not None else list(source.manifest.cameras)
        self.height, self.width, self.codec = view.height, view.width, view.frame_codec
        rank, world = distributed_rank()
        self.order_config = OrderConfig(
            batch_size=config.batch_size or 1, seed=config.seed, shuffle=config.shuffle,
            shuffle_buffer=config.shuffle_buffer, rank=rank if config.rank is None else config.rank,
            world_size=world if config.world_size is None else config.world_size)
        self.normalizer = Normalizer(source.stats, config.normalization, config.clip)
        self.epoch = epoch
        self.start_batch = 0
        self._arrays: OrderedDict[tuple[int, str], _SampleArrays] = OrderedDict()

    # ------------------------------------------------------------ epoch and length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> EpochOrder:
        return EpochOrder(self.source.shard_steps, self.order_config, self.epoch)

    def __len__(self) -> int:
        """Batches (or samples, when not batching) this rank yields per epoch."""
        return self.order().batches_per_rank

    # ------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        order = self.order()
        for j in worker_batches(order.batches_per_rank, self.start_batch, worker, workers):
            shards, steps = order.rank_batch(j)
            batch = self.assemble(shards, steps)
            if self.config.batch_size is None:
                yield {k: (v[0] if isinstance(v, (list, torch.Tensor)) else v) for k, v in batch.items()}
            else:
                yield batch

    def assemble(self, shards: np.ndarray, steps: np.ndarray) -> dict:
        """Build the batch of these (shard, shard-local step) pairs."""
        size, horizon, k = len(steps), self.config.action_horizon, len(self.cameras)
        images = shared_uint8((size, k, self.height, self.width, 3))
        pixels = images.numpy()
        image_mask = np.zeros((size, k), bool)
        rows, states, actions, pads, valids = [], [], [], [], []
        for b, (shard, local) in enumerate(zip(shards.tolist(), steps.tolist(), strict=True)):
            sample, offset = self.source.sample(shard, local)
            arrays = self._sample_arrays(shard, sample)
            info = arrays.info
            states.append(arrays.state[offset])
            chunk = arrays.action[offset: offset + horizon]
            valid = arrays.action_valid[offset: offset + horizon]
            pad = np.zeros(horizon, bool)
            if chunk.shape[0] < horizon:  # past the episode end: repeat the last action, mark the padding
                pad[chunk.shape[0]:] = True
                fill = horizon - chunk.shape[0]
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fill, axis=0)])
                valid = np.concatenate([valid, np.zeros(fill, bool)])
            actions.append(chunk)
            pads.append(pad)
            valids.append(valid)
            for c, camera in enumerate(self.cameras):
                data = self.source.member(shard, sample, f"{camera}.{offset:04d}.{self.codec}")
                if data is None:
                    pixels[b, c] = 0
                else:
                    decode_image_into(data, self.codec, pixels[b, c])
                    image_mask[b, c] = True
            task = int(arrays.task_index[offset])
            rows.append((info, sample.step_start + offset, int(arrays.timestamp[offset]),
                         info["tasks"][task] if task >= 0 else ""))
        state = self._stack(states, self.config.state_pad_to, "state")
        action = self._stack(actions, self.config.action_pad_to, "action")
        embodiments = [r[0]["embodiment"] for r in rows]
        state, action = self._normalize(embodiments, state, action)
        return {
            "images": images.permute(0, 1, 4, 2, 3),
            "image_mask": torch.from_numpy(image_mask),
            "state": torch.from_numpy(state),
            "actions": torch.from_numpy(action),
            "action_is_pad": torch.from_numpy(np.stack(pads)),
            "action_valid": torch.from_numpy(np.stack(valids)),
            "instruction": [r[3] for r in rows],
            "embodiment": embodiments,
            "kind": [r[0]["kind"] for r in rows],
            "action_source": [r[0]["action_source"] for r in rows],
            "dataset": [r[0]["dataset"] for r in rows],
            "episode_id": [r[0]["episode_id"] for r in rows],
            "key": [f"{r[0]['episode_id']}:{r[1]}" for r in rows],
            "step": torch.tensor([r[1] for r in rows], dtype=torch.int64),
            "timestamp_ns": torch.tensor([r[2] for r in rows], dtype=torch.int64),
        }

    def _sample_arrays(self, shard: int, sample: SampleEntry) -> _SampleArrays:
        key = (shard, sample.key)
        cached = self._arrays.get(key)
        if cached is not None:
            self._arrays.move_to_end(key)
            return cached

        def npy(suffix: str) -> np.ndarray:
            return load_npy(self.source.member(shard, sample, suffix))

        arrays = _SampleArrays(json.loads(self.source.member(shard, sample, "meta.json")), npy("state.npy"),
                               npy("action.npy"), npy("action_valid.npy"), npy("timestamp.npy"), npy("task_index.npy"))
        self._arrays[key] = arrays
        while len(self._arrays) > 1024:
            self._arrays.popitem(last=False)
        return arrays

    @staticmethod
    def _stack(rows: list[np.ndarray], pad_to: int | None, name: str) -> np.ndarray:
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

    def _normalize(self, embodiments: list[str], state: np.ndarray,
                   action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.normalizer.mode == "none":
            return state, action
        for embodiment in set(embodiments):
            rows = np.array([e == embodiment for e in embodiments])
            width_s = self._native_width(embodiment, "state", state.shape[-1])
            width_a = self._native_width(embodiment, "action", action.shape[-1])
            state[rows, :width_s] = self.normalizer(embodiment, "state", state[rows, :width_s])
            action[rows, :, :width_a] = self.normalizer(embodiment, "action", action[rows, :, :width_a])
        return state, action

    def _native_width(self, embodiment: str, feature: str, padded: int) -> int:
        stats = self.source.stats.groups.get(embodiment, {}).get(feature)
        return stats.dims if stats is not None else padded


def make_loader(dataset: VLADataset, num_workers: int = 2, pin_memory: bool = False,
                prefetch_factor: int | None = 4) -> DataLoader:
    """A DataLoader for a batching dataset: batches are built inside workers, delivered in order."""
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=prefetch_factor if num_workers > 0 else None, persistent_workers=False)
