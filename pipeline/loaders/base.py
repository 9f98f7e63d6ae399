"""The iterable dataset every loader shares: exact epoch order, rank and worker split, resume position.

Subclasses say how many units each shard holds (``unit_counts``) and how to build a batch from
(shard, unit) pairs (``build_batch``). Iteration, splitting and resume are here, once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.loaders.order import BatchPlan, EpochOrder, OrderConfig, worker_batches


def distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def order_config(batch_size: int | None, seed: int, shuffle: bool, shuffle_buffer: int, rank: int | None,
                 world_size: int | None) -> OrderConfig:
    """Order settings; rank/world default to torch.distributed's (0/1 when not initialized)."""
    default_rank, default_world = distributed_rank()
    return OrderConfig(batch_size=batch_size or 1, seed=seed, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
                       rank=default_rank if rank is None else rank,
                       world_size=default_world if world_size is None else world_size)


class UnitDataset(IterableDataset):
    """Yields batches (or single samples when ``batched`` is False) in the exact epoch order."""

    def __init__(self, order: OrderConfig, batched: bool = True, epoch: int = 0) -> None:
        super().__init__()
        self.order_config = order
        self.batched = batched
        self.epoch = epoch
        self.start_global = 0

    # ------------------------------------------------------------ subclass API

    def unit_counts(self) -> np.ndarray:
        raise NotImplementedError

    def build_batch(self, shards: np.ndarray, units: np.ndarray) -> dict:
        raise NotImplementedError

    def identity(self) -> dict:
        """What the order depends on; a resume refuses a state saved under a different identity."""
        raise NotImplementedError

    # ------------------------------------------------------------ order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_position(self, epoch: int, start_global: int) -> None:
        self.epoch, self.start_global = epoch, start_global

    def total_units(self) -> int:
        return int(np.sum(self.unit_counts()))

    def plan(self) -> BatchPlan:
        c = self.order_config
        return BatchPlan(self.total_units(), c.batch_size, c.rank, c.world_size, self.start_global)

    def epoch_order(self, epoch: int | None = None) -> EpochOrder:
        c = self.order_config
        return EpochOrder(self.unit_counts(), c.seed, self.epoch if epoch is None else epoch, c.shuffle,
                          c.shuffle_buffer)

    def batch_at(self, positions: np.ndarray) -> dict:
        """The batch at these stream positions of the current epoch."""
        shards, units = self.epoch_order().units(positions)
        return self.build_batch(shards, units)

    def fingerprint(self) -> str:
        c = self.order_config
        text = json.dumps({"identity": self.identity(), "seed": c.seed, "batch": c.batch_size, "shuffle": c.shuffle,
                           "buffer": c.shuffle_buffer}, sort_keys=True, default=str)
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
            batch = self.batch_at(plan.positions(j))
            yield batch if self.batched else unbatch(batch)


def unbatch(batch: dict) -> dict:
    return {k: (v[0] if isinstance(v, (list, torch.Tensor)) else v) for k, v in batch.items()}


def make_loader(dataset: UnitDataset, num_workers: int = 2, pin_memory: bool = False,
                prefetch_factor: int | None = 4) -> DataLoader:
    """A DataLoader for a batching dataset: batches are built inside workers and delivered in order."""
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=prefetch_factor if num_workers > 0 else None, persistent_workers=False)


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
