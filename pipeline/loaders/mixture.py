"""Weighted mixtures of loaders (versions, datasets, real vs synthetic) with exact, resumable order.

Position ``p`` of mixture epoch ``e`` draws its part from the weights with a generator seeded by
(seed, e): the draw is a pure function of the position, so weights hold over a run, across resumes
and whatever the worker count. Each part keeps its own stream across mixture epochs: the m-th time a
part is drawn (counting from the first mixture epoch) it yields item ``m`` of its stream, i.e. item
``m mod N`` of its epoch ``m // N``, in that part's own exact order. Parts must yield compatible
batches (same fields and shapes: use the state/action ``*_pad_to`` options across embodiments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.loaders.base import UnitDataset, concat_batches, order_config
from pipeline.loaders.integrity import SKIP_KEY
from pipeline.loaders.source import SampleFilter


class MixtureDataset(UnitDataset):
    def __init__(self, parts: list[tuple[UnitDataset, float]], samples_per_epoch: int | None = None,
                 batch_size: int | None = 32, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 epoch: int = 0) -> None:
        super().__init__(order_config(batch_size, seed, True, 1, rank, world_size), batch_size is not None, epoch)
        weights = np.asarray([w for _, w in parts], dtype=np.float64)
        if len(parts) < 1 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("a mixture needs parts with non-negative weights that do not all vanish")
        self.parts = [p for p, _ in parts]
        self.weights = weights / weights.sum()
        self.part_totals = np.array([p.total_units() for p in self.parts], dtype=np.int64)
        empty = [i for i, n in enumerate(self.part_totals) if n == 0 and self.weights[i] > 0]
        if empty:
            raise ValueError(f"mixture parts {empty} have weight but no samples")
        self.samples_per_epoch = int(samples_per_epoch or self.part_totals.sum())
        self._draw_cache: dict[int, tuple] = {}

    def total_units(self) -> int:
        return self.samples_per_epoch

    def identity(self) -> dict:
        return {"parts": [p.fingerprint() for p in self.parts], "weights": self.weights.tolist(),
                "samples_per_epoch": self.samples_per_epoch}

    def draws(self, epoch: int) -> np.ndarray:
        """The part of every position of a mixture epoch."""
        rng = np.random.default_rng([self.order_config.seed, epoch, 7])
        return rng.choice(len(self.parts), size=self.samples_per_epoch, p=self.weights)

    def _tables(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(part of each position, its index among that part's positions, part offsets from earlier epochs).

        Cached per epoch: O(samples_per_epoch) memory (one int8 and one int32 per position).
        """
        if epoch not in self._draw_cache:
            offsets = np.zeros(len(self.parts), dtype=np.int64)
            for earlier in range(epoch):
                offsets += np.bincount(self.draws(earlier), minlength=len(self.parts))
            draws = self.draws(epoch)
            rank_in_part = np.empty(len(draws), dtype=np.int32)
            for part in range(len(self.parts)):
                where = np.nonzero(draws == part)[0]
                rank_in_part[where] = np.arange(len(where), dtype=np.int32)
            self._draw_cache = {epoch: (draws.astype(np.int8), rank_in_part, offsets)}
        return self._draw_cache[epoch]

    def batch_at(self, positions: np.ndarray) -> dict:
        draws, rank_in_part, offsets = self._tables(self.epoch)
        parts = []
        for part in np.unique(draws[positions]):
            rows = np.nonzero(draws[positions] == part)[0]
            stream = offsets[part] + rank_in_part[positions[rows]].astype(np.int64)  # item in the part's stream
            dataset, total = self.parts[part], int(self.part_totals[part])
            pieces = []
            for part_epoch in np.unique(stream // total):
                select = np.nonzero(stream // total == part_epoch)[0]
                shards, units = dataset.epoch_order(int(part_epoch)).units(stream[select] % total)
                pieces.append((select, shards, units))
            order = np.concatenate([p[0] for p in pieces])
            batch = dataset.build_batch(np.concatenate([p[1] for p in pieces]), np.concatenate([p[2] for p in pieces]))
            parts.append((rows[order], batch))
        return _merge_parts(parts)


def _merge_parts(parts: list[tuple[np.ndarray, dict]]) -> dict:
    """The parts' batches as one, rows in batch order; rows a part skipped (``on_corrupt="skip"``) are left
    out and their records kept under SKIP_KEY with their position in the whole batch."""
    skipped: list[dict] = []
    kept: list[tuple[np.ndarray, dict]] = []
    for rows, batch in parts:
        records = batch.pop(SKIP_KEY, [])
        skipped.extend(r | {"row": int(rows[r["row"]])} for r in records)
        dropped = np.asarray([r["row"] for r in records], dtype=np.int64)
        if batch:
            kept.append((np.delete(rows, dropped), batch))
    if not kept:
        return {SKIP_KEY: skipped}
    positions = np.sort(np.concatenate([rows for rows, _ in kept]))
    merged = concat_batches([(np.searchsorted(positions, rows), batch) for rows, batch in kept], len(positions))
    if skipped:
        merged[SKIP_KEY] = skipped
    return merged


def by_kind(make_part: Callable[[SampleFilter], UnitDataset], weights: dict[str | tuple[str, ...], float],
            base: SampleFilter | None = None, **mixture: Any) -> MixtureDataset:
    """One part per group of episode kinds, e.g. real : synthetic = 0.7 : 0.3 over one view::

        by_kind(lambda f: VLADataset(source, replace(config, filter=f)),
                {("teleop", "sim"): 0.7, "synthetic": 0.3}, samples_per_epoch=100_000)

    ``make_part`` builds a part from ``base`` with its ``kinds`` set (other constraints kept, e.g.
    ``exclude_action_sources``); ``mixture`` goes to ``MixtureDataset`` (samples_per_epoch, seed...).
    """
    parts = []
    for kinds, weight in weights.items():
        group = frozenset((kinds,) if isinstance(kinds, str) else kinds)
        parts.append((make_part(replace(base or SampleFilter(), kinds=group)), float(weight)))
    return MixtureDataset(parts, **mixture)
