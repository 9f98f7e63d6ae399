"""The iterable dataset every loader shares: exact epoch order, rank and worker split, resume position.

Subclasses say how many units each shard holds (``unit_counts``) and how to build a batch from
(shard, unit) pairs (``build_batch``). Iteration, splitting and resume are here, once.

Samples skipped for corrupt members (``on_corrupt="skip"``) are counted in ``skip_log``: directly when
iterating in this process, and from the batches' ``SKIP_KEY`` records when DataLoader workers build them
(the loaders ``make_loader`` returns move them into the dataset's log; a batch of nothing but skips is
not yielded, though it still counts as a consumed batch for resume).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.loaders.integrity import SkipLog, take_skips
from pipeline.loaders.members import shared_uint8
from pipeline.loaders.order import BatchPlan, EpochOrder, OrderConfig, worker_batches
from pipeline.loaders.transport import SLOT_KEY, BufferedLoader, worker_context


def distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def order_config(batch_size: int | None, seed: int, shuffle: bool, shuffle_buffer: int, rank: int | None,
                 world_size: int | None, drop_last: bool = True) -> OrderConfig:
    """Order settings; rank/world default to torch.distributed's (0/1 when not initialized)."""
    default_rank, default_world = distributed_rank()
    return OrderConfig(batch_size=batch_size or 1, seed=seed, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
                       rank=default_rank if rank is None else rank,
                       world_size=default_world if world_size is None else world_size, drop_last=drop_last)


class UnitDataset(IterableDataset):
    """Yields batches (or single samples when ``batched`` is False) in the exact epoch order."""

    def __init__(self, order: OrderConfig, batched: bool = True, epoch: int = 0) -> None:
        super().__init__()
        self.order_config = order
        self.batched = batched
        self.epoch = epoch
        self.start_global = 0
        self.ring = None  # set by pipeline.loaders.transport.BufferedLoader
        self._slot: tuple[int, int] | None = None
        self.skip_log = SkipLog()  # loader samples left out for corrupt members (pipeline.loaders.integrity)

    @property
    def skipped(self) -> int:
        """How many loader samples were skipped for corrupt members (``on_corrupt="skip"``)."""
        return self.skip_log.skipped

    # ------------------------------------------------------------ subclass API

    def unit_counts(self) -> np.ndarray:
        raise NotImplementedError

    def build_batch(self, shards: np.ndarray, units: np.ndarray) -> dict:
        raise NotImplementedError

    def identity(self) -> dict:
        """What the order depends on; a resume refuses a state saved under a different identity."""
        raise NotImplementedError

    def image_buffer_shape(self) -> tuple[int, ...]:
        """Shape of a batch's uint8 image buffer (channels last)."""
        raise NotImplementedError

    def image_buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Where ``build_batch`` decodes a batch's images: a reused ring slot under a BufferedLoader,
        else a fresh (shared-memory, in a worker) tensor."""
        got = self.ring.acquire(shape) if self.ring is not None else None
        if got is None:
            return shared_uint8(shape)
        buffer, self._slot = got
        return buffer

    # ------------------------------------------------------------ order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_position(self, epoch: int, start_global: int) -> None:
        self.epoch, self.start_global = epoch, start_global

    def total_units(self) -> int:
        return int(np.sum(self.unit_counts()))

    def plan(self) -> BatchPlan:
        c = self.order_config
        return BatchPlan(self.total_units(), c.batch_size, c.rank, c.world_size, self.start_global, c.drop_last)

    def epoch_order(self, epoch: int | None = None) -> EpochOrder:
        """The order of an epoch (cached: one epoch is consulted for every batch)."""
        c = self.order_config
        epoch = self.epoch if epoch is None else epoch
        cached = getattr(self, "_order_cache", None)
        if cached is None or cached[0] != epoch:
            cached = (epoch, EpochOrder(self.unit_counts(), c.seed, epoch, c.shuffle, c.shuffle_buffer))
            self._order_cache = cached
        return cached[1]

    def batch_at(self, positions: np.ndarray) -> dict:
        """The batch at these stream positions of the current epoch."""
        shards, units = self.epoch_order().units(positions)
        return self.build_batch(shards, units)

    def fingerprint(self) -> str:
        c = self.order_config
        order = {"identity": self.identity(), "seed": c.seed, "batch": c.batch_size, "shuffle": c.shuffle,
                 "buffer": c.shuffle_buffer}
        if not c.drop_last:  # only when set: states saved before the option existed stay valid
            order["drop_last"] = False
        text = json.dumps(order, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------ iteration

    def __len__(self) -> int:
        """Batches (samples when not batched) this rank yields in the current epoch from the current start."""
        return self.plan().batches_per_rank

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        plan = self.plan()
        for j in worker_batches(plan.batches_per_rank, worker, workers):
            self._slot = None
            batch = self.batch_at(plan.positions(j))
            if info is None:  # counted here; a worker's records travel with its batch to the loader
                batch = take_skips(batch, self.skip_log)
                if batch is None:
                    continue
            if self._slot is not None:
                batch = _small_tensors_as_numpy(batch)  # pickled by value: cheaper than a segment each
                batch[SLOT_KEY] = np.asarray(self._slot)
            yield batch if self.batched else unbatch(batch)


def _small_tensors_as_numpy(batch: dict, limit: int = 1 << 20) -> dict:
    """Tensors under ``limit`` bytes as numpy arrays (BufferedLoader turns them back into tensors)."""
    return {k: v.numpy() if isinstance(v, torch.Tensor) and v.nbytes < limit else v for k, v in batch.items()}


def unbatch(batch: dict) -> dict:
    return {k: (v[0] if isinstance(v, (list, torch.Tensor)) else v) for k, v in batch.items()}


def make_loader(dataset: UnitDataset, num_workers: int = 2, pin_memory: bool = False,
                prefetch_factor: int | None = 4, reuse_buffers: bool = False):
    """A DataLoader for a batching dataset: batches are built inside workers and delivered in order.

    ``reuse_buffers``: workers decode into a ring of shared buffers allocated once instead of a fresh
    shared-memory segment per batch (several times faster for large frames); a batch's images are then
    valid only until the next batch is requested (pipeline.loaders.transport)."""
    if reuse_buffers:
        return BufferedLoader(dataset, num_workers, prefetch_factor or 2, pin_memory)
    return SkipCountingLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                              prefetch_factor=prefetch_factor if num_workers > 0 else None, persistent_workers=False,
                              multiprocessing_context=worker_context(num_workers))


class SkipCountingLoader(DataLoader):
    """A DataLoader that moves the skip records workers attach to batches into the dataset's ``skip_log``.

    ``yield_empty`` (for ResumableLoader, which counts consumed batches): batches of nothing but skips are
    yielded as ``{}`` instead of left out."""

    yield_empty = False

    def __iter__(self):
        for batch in super().__iter__():
            kept = take_skips(batch, self.dataset.skip_log)
            if kept is not None:
                yield kept
            elif self.yield_empty:
                yield {}


def concat_batches(parts: list[tuple[np.ndarray, dict]], size: int) -> dict:
    """Merge batches built for subsets of a batch back into one, each row at its original position."""
    order = np.concatenate([rows for rows, _ in parts])
    inverse = np.empty(size, dtype=np.int64)
    inverse[order] = np.arange(size)
    merged = {}
    for key in parts[0][1]:
        values = [batch[key] for _, batch in parts]
        if isinstance(values[0], torch.Tensor):
            merged[key] = torch.cat(values)[torch.from_numpy(inverse)]
        else:
            flat = [item for value in values for item in value]
            merged[key] = [flat[i] for i in inverse]
    return merged
