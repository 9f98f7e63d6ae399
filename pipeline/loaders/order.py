"""The sample order of an epoch: a pure function of (unit counts per shard, seed, epoch, batch, world).

A *unit* is what a loader yields: a step for VLA, a clip anchor for WAM.

1. Shards are permuted by (seed, epoch).
2. Consecutive shards in that order are grouped into windows of at least ``shuffle_buffer`` units;
   each window's units are fully permuted by (seed, epoch, window). Only one window's permutation is
   held in memory, so memory does not grow with the dataset.
3. The shuffled stream is cut into ``G = N // batch_size`` global batches (the last ``N % batch_size``
   units of the stream are dropped this epoch; a different set every epoch). With ``drop_last=False``
   there are ``ceil(N / batch_size)`` global batches, the last one partial.
4. Ranks: global batch ``k`` goes to rank ``k % world_size``. Starting at global batch ``k0`` (a
   resume), every rank gets ``(G - k0) // world_size`` batches, so all ranks get the same count whatever
   the shard count; the ``(G - k0) % world_size`` trailing global batches are dropped too. With
   ``drop_last=False`` every rank gets ``ceil((G - k0) / world_size)`` batches instead: ranks whose last
   global batch would be past the end get a full batch wrapped around to the stream's start (as
   torch's ``DistributedSampler`` pads), so DDP ranks still step together.
5. Workers: DataLoader worker ``w`` of ``W`` builds the rank's batches ``j`` with ``j % W == w``;
   PyTorch's in-order round robin then yields ``j = 0, 1, 2...``, so the sequence a rank sees does not
   depend on the number of workers, and a resume may change it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OrderConfig:
    batch_size: int = 32
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 10_000
    rank: int = 0
    world_size: int = 1
    drop_last: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        if self.batch_size < 1 or self.shuffle_buffer < 1:
            raise ValueError("batch_size and shuffle_buffer must be >= 1")


class EpochOrder:
    """Stream position -> (shard, shard-local unit) for one epoch."""

    def __init__(self, unit_counts: list[int] | np.ndarray, seed: int, epoch: int, shuffle: bool = True,
                 shuffle_buffer: int = 10_000) -> None:
        self.seed, self.epoch, self.shuffle, self.shuffle_buffer = seed, epoch, shuffle, shuffle_buffer
        counts = np.asarray(unit_counts, dtype=np.int64)
        rng = np.random.default_rng([seed, epoch])
        self.shard_order = rng.permutation(len(counts)) if shuffle else np.arange(len(counts))
        ordered = counts[self.shard_order]
        self.shard_start = np.concatenate([[0], np.cumsum(ordered)])
        self.total = int(ordered.sum())
        self.windows = self._windows(ordered)
        self._cached: tuple[int, np.ndarray] | None = None

    def _windows(self, ordered: np.ndarray) -> np.ndarray:
        bounds, size = [0], 0
        for count in ordered:
            size += int(count)
            if size >= self.shuffle_buffer:
                bounds.append(bounds[-1] + size)
                size = 0
        if size:
            bounds.append(bounds[-1] + size)
        return np.asarray(bounds, dtype=np.int64)

    def units(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard ids, shard-local units) at these stream positions."""
        return self._locate(self._unshuffle(np.asarray(positions, dtype=np.int64)))

    def _unshuffle(self, positions: np.ndarray) -> np.ndarray:
        if not self.shuffle:
            return positions
        out = np.empty_like(positions)
        window_of = np.searchsorted(self.windows, positions, side="right") - 1
        for window in np.unique(window_of):
            select = window_of == window
            start = self.windows[window]
            out[select] = start + self._permutation(int(window))[positions[select] - start]
        return out

    def _permutation(self, window: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != window:
            size = int(self.windows[window + 1] - self.windows[window])
            rng = np.random.default_rng([self.seed, self.epoch, window, 1])
            self._cached = (window, rng.permutation(size))
        return self._cached[1]

    def _locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ordered_shard = np.searchsorted(self.shard_start, positions, side="right") - 1
        return self.shard_order[ordered_shard], positions - self.shard_start[ordered_shard]


@dataclass(frozen=True)
class BatchPlan:
    """Which global batches a rank owns in an epoch of ``total_units`` units, from ``start_global`` on."""

    total_units: int
    batch_size: int
    rank: int = 0
    world_size: int = 1
    start_global: int = 0
    drop_last: bool = True

    @property
    def global_batches(self) -> int:
        if self.drop_last:
            return self.total_units // self.batch_size
        return -(-self.total_units // self.batch_size)

    @property
    def batches_per_rank(self) -> int:
        left = max(0, self.global_batches - self.start_global)
        return left // self.world_size if self.drop_last else -(-left // self.world_size)

    def global_batch(self, j: int) -> int:
        if not 0 <= j < self.batches_per_rank:
            raise IndexError(f"batch {j} out of [0, {self.batches_per_rank})")
        return self.start_global + j * self.world_size + self.rank

    def positions(self, j: int) -> np.ndarray:
        k = self.global_batch(j)
        positions = np.arange(k * self.batch_size, (k + 1) * self.batch_size, dtype=np.int64)
        if self.drop_last:
            return positions
        if k < self.global_batches:
            return positions[positions < self.total_units]  # the last one may be partial
        return positions % self.total_units  # a rank's filler batch past the end: wrapped around


def worker_batches(num_batches: int, worker: int, num_workers: int) -> range:
    """The rank batches a DataLoader worker builds so in-order delivery yields 0, 1, 2, ..."""
    return range(worker, num_batches, num_workers)
