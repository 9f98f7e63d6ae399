"""The sample order of an epoch: a pure function of (shard step counts, seed, epoch, batch, world).

1. Shards are permuted by (seed, epoch).
2. Consecutive shards in that order are grouped into windows of at least ``shuffle_buffer``
   steps; each window's steps are fully permuted by (seed, epoch, window). Only one window's
   permutation is held in memory, so memory does not grow with the dataset.
3. The shuffled stream is cut into global batches of ``batch_size``. With ``world_size`` ranks,
   each rank gets ``floor(N / (world_size * batch_size))`` batches: global batch ``k`` goes to rank
   ``k % world_size``; the last ``N mod (world_size * batch_size)`` steps of the stream are dropped
   this epoch (a different set every epoch). Every rank gets the same batch count, whatever the
   shard count, and every step appears at most once per epoch.
4. Inside a rank, DataLoader worker ``w`` of ``W`` produces the rank's batches ``j`` with
   ``j % W == (w - start) % W``; PyTorch's in-order round robin then yields ``j`` = start, start+1...
   so the sequence a rank sees does not depend on the number of workers.
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

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        if self.batch_size < 1 or self.shuffle_buffer < 1:
            raise ValueError("batch_size and shuffle_buffer must be >= 1")


class EpochOrder:
    """Which (shard, shard-local step) each position of a rank's epoch holds."""

    def __init__(self, shard_steps: list[int], config: OrderConfig, epoch: int) -> None:
        self.config = config
        self.epoch = epoch
        counts = np.asarray(shard_steps, dtype=np.int64)
        rng = np.random.default_rng([config.seed, epoch])
        self.shard_order = rng.permutation(len(counts)) if config.shuffle else np.arange(len(counts))
        ordered = counts[self.shard_order]
        self.shard_start = np.concatenate([[0], np.cumsum(ordered)])  # stream position of each ordered shard
        self.total_steps = int(ordered.sum())
        self.windows = self._windows(ordered)  # stream start of each window, plus the end
        self._cached: tuple[int, np.ndarray] | None = None

    def _windows(self, ordered: np.ndarray) -> np.ndarray:
        bounds, size = [0], 0
        for count in ordered:
            size += int(count)
            if size >= self.config.shuffle_buffer:
                bounds.append(bounds[-1] + size)
                size = 0
        if size:
            bounds.append(bounds[-1] + size)
        return np.asarray(bounds, dtype=np.int64)

    @property
    def batches_per_rank(self) -> int:
        return self.total_steps // (self.config.world_size * self.config.batch_size)

    def rank_batch(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard ids, shard-local steps) of this rank's batch ``j``."""
        if not 0 <= j < self.batches_per_rank:
            raise IndexError(f"batch {j} out of [0, {self.batches_per_rank})")
        k = j * self.config.world_size + self.config.rank
        positions = np.arange(k * self.config.batch_size, (k + 1) * self.config.batch_size, dtype=np.int64)
        return self.locate(self.shuffled(positions))

    def shuffled(self, positions: np.ndarray) -> np.ndarray:
        """Stream positions -> unshuffled positions (the window permutation applied)."""
        if not self.config.shuffle:
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
            rng = np.random.default_rng([self.config.seed, self.epoch, window, 1])
            self._cached = (window, rng.permutation(size))
        return self._cached[1]

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ordered_shard = np.searchsorted(self.shard_start, positions, side="right") - 1
        return self.shard_order[ordered_shard], positions - self.shard_start[ordered_shard]


def worker_batches(num_batches: int, start: int, worker: int, num_workers: int) -> range:
    """The rank batches a DataLoader worker produces so in-order delivery yields start, start+1, ..."""
    return range(start + worker, num_batches, num_workers)
