"""Normalization statistics that merge: exact moments plus a deterministic quantile compactor.

Means and variances merge with Chan's parallel formula. Quantiles come from a rank-error
compactor in the style of KLL (Karnin, Lang, Liberty, FOCS 2016): level ``h`` holds values of
weight ``2**h``; a level over its capacity is sorted and every other value moves up one level.
While a feature has at most ``k`` rows nothing is compacted, so its quantiles are those of
``np.quantile`` on the raw values, bit for bit (every episode and version that fits). Beyond
that the rank error is about ``1/k`` (measured in bench/norm_stats.py), and unlike a
relative-error (log-bucket) sketch it does not depend on where the values sit: a narrow
distribution far from zero is as exact as one around it.

Apache DataSketches' KLL is the same structure, but it draws the compaction offsets at random,
so the same episodes give different bytes on every run and the version id (which hashes the
stats object) would change; here the offsets alternate per level, so equal inputs merged in the
same order give equal bytes. Format ``actionreel.stats/2``; stats written as format 1 (log-bucket
sketch) still load and normalize with their stored q01/q99 but do not merge: callers recompute
them from steps (``StatsSet.mergeable``).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import numpy as np

STATS_FORMAT = "actionreel.stats/2"
LEGACY_FORMAT = "actionreel.stats/1"
DEFAULT_K = 16384
_SHRINK = 2 / 3  # capacity ratio between a level and the one above it (KLL's c)


class StatsFormatError(ValueError):
    """Stats that cannot take part in this operation (an older format, other widths)."""


def _encode(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def _decode(text: str, dims: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64).reshape(-1, dims)


class QuantileSketch:
    """Rows of ``dims`` values in levels; a row of level ``h`` stands for ``2**h`` rows.

    Columns are independent: compaction sorts each column on its own, so all columns keep the
    same number of rows per level (features always add whole rows). Merged rows wait in a list
    per level and are joined only when that level compacts or is read: joining on every merge
    copied the whole level each time (10^4 episode merges cost 4.5 s that way, most of a commit).
    The rows and their order are the same either way, so the bytes are too.
    """

    def __init__(self, dims: int, k: int = DEFAULT_K, levels: list[np.ndarray] | None = None,
                 parity: list[int] | None = None) -> None:
        self.dims, self.k = dims, k
        self._parts: list[list[np.ndarray]] = [[level] for level in levels or []]
        self._rows: list[int] = [level.shape[0] for level in levels or []]
        self.parity: list[int] = list(parity or [])

    @property
    def levels(self) -> list[np.ndarray]:
        return [self._level(h) for h in range(len(self._parts))]

    @property
    def count(self) -> int:
        return sum(rows << h for h, rows in enumerate(self._rows))

    @property
    def is_exact(self) -> bool:
        """No value has been compacted away: quantiles are ``np.quantile``'s."""
        return all(rows == 0 for rows in self._rows[1:])

    def add(self, values: np.ndarray) -> None:
        """Add an [N, dims] array of finite values."""
        values = np.asarray(values, dtype=np.float64).reshape(-1, self.dims)
        if values.shape[0]:
            self._absorb([values], [0])

    def merge(self, other: QuantileSketch) -> None:
        if not isinstance(other, QuantileSketch) or (other.dims, other.k) != (self.dims, self.k):
            raise StatsFormatError(f"cannot merge a {type(other).__name__} of {other.dims} dims into a sketch of "
                                   f"{self.dims} dims/k {self.k}")
        self._absorb(other.levels, other.parity)

    def _level(self, h: int) -> np.ndarray:
        """Level ``h`` as one array (its waiting rows joined in arrival order)."""
        parts = self._parts[h]
        if len(parts) != 1:
            self._parts[h] = [np.concatenate(parts) if parts else np.zeros((0, self.dims))]
        return self._parts[h][0]

    def _append(self, h: int, rows: np.ndarray) -> None:
        if rows.shape[0]:
            self._parts[h].append(rows)
            self._rows[h] += rows.shape[0]

    def _add_level(self) -> None:
        self._parts.append([])
        self._rows.append(0)
        self.parity.append(0)

    def _absorb(self, levels: list[np.ndarray], parity: list[int]) -> None:
        while len(self._parts) < len(levels):
            self._add_level()
        for h, level in enumerate(levels):
            self._append(h, np.asarray(level, dtype=np.float64))
            self.parity[h] = (self.parity[h] + parity[h]) % 2
        self._compact()

    def _capacity(self, h: int) -> int:
        return max(2, math.ceil(self.k * _SHRINK ** (len(self._parts) - 1 - h)))

    def _compact(self) -> None:
        h = 0
        while h < len(self._parts):
            if self._rows[h] > self._capacity(h):
                if h + 1 == len(self._parts):
                    self._add_level()
                level = np.sort(self._level(h), axis=0)
                kept, pairs = self._split_odd(level, self.parity[h])
                self._append(h + 1, pairs[self.parity[h]::2])
                self._parts[h], self._rows[h] = [kept], kept.shape[0]
                self.parity[h] ^= 1
                h = 0  # a new level shrinks the capacities below it
                continue
            h += 1

    @staticmethod
    def _split_odd(level: np.ndarray, parity: int) -> tuple[np.ndarray, np.ndarray]:
        """An odd row out stays on its level (alternately the lowest or the highest); the rest pair up."""
        if level.shape[0] % 2 == 0:
            return level[:0], level
        return (level[:1], level[1:]) if parity else (level[-1:], level[:-1])

    def quantile(self, q: float) -> np.ndarray:
        """The q-quantile per dimension, linear between order statistics at rank q*(n-1) (numpy's default)."""
        if not self.levels or self.count == 0:
            return np.full(self.dims, np.nan)
        if self.is_exact:
            return np.quantile(self.levels[0], q, axis=0)
        values = np.concatenate(self.levels)
        weights = np.concatenate([np.full(level.shape[0], 1 << h, np.int64) for h, level in enumerate(self.levels)])
        order = np.argsort(values, axis=0, kind="stable")
        ordered = np.take_along_axis(values, order, axis=0)
        cumulative = np.cumsum(weights[order], axis=0)  # [M, dims]: rows of rank < cumulative
        rank = q * (self.count - 1)
        low = math.floor(rank)
        below = (cumulative <= low).sum(axis=0)
        above = np.minimum((cumulative <= low + 1).sum(axis=0), ordered.shape[0] - 1)
        columns = np.arange(self.dims)
        a, b = ordered[below, columns], ordered[above, columns]
        return a + (b - a) * (rank - low)

    def to_json(self) -> dict:
        return {"kind": "compactor", "dims": self.dims, "k": self.k, "parity": list(self.parity),
                "levels": [_encode(level) for level in self.levels]}

    @staticmethod
    def from_json(data: dict) -> QuantileSketch:
        dims = int(data["dims"])
        return QuantileSketch(dims, int(data["k"]), [_decode(t, dims) for t in data["levels"]],
                              [int(p) for p in data["parity"]])


@dataclass
class StoredQuantiles:
    """q01/q99 as an older stats format stored them: usable for normalization, not for merging."""

    dims: int
    q01: np.ndarray
    q99: np.ndarray

    def quantile(self, q: float) -> np.ndarray:
        if q == 0.01:
            return self.q01
        if q == 0.99:
            return self.q99
        raise StatsFormatError(f"stats in {LEGACY_FORMAT} keep only q01 and q99, not q={q}")

    def merge(self, other: object) -> None:
        raise StatsFormatError(f"stats in {LEGACY_FORMAT} cannot merge: recompute them from the episodes' steps")

    def to_json(self) -> dict:
        return {"kind": "stored", "dims": self.dims, "q01": self.q01.tolist(), "q99": self.q99.tolist()}


def _quantiles_from_json(data: dict) -> QuantileSketch | StoredQuantiles:
    sketch = data["sketch"]
    kind = sketch.get("kind")
    if kind == "compactor":
        return QuantileSketch.from_json(sketch)
    if kind == "stored":
        return StoredQuantiles(int(sketch["dims"]), np.asarray(sketch["q01"], np.float64),
                               np.asarray(sketch["q99"], np.float64))
    if "codes" in sketch:  # format 1: a log-bucket sketch; its summary's q01/q99 are what it answered
        return StoredQuantiles(int(data["dims"]), np.asarray(data["q01"], np.float64),
                               np.asarray(data["q99"], np.float64))
    raise StatsFormatError(f"unknown quantile sketch kind {kind!r}")


@dataclass
class FeatureStats:
    """Exact count/mean/M2/min/max plus a quantile sketch for one vector feature."""

    dims: int
    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    sketch: QuantileSketch | StoredQuantiles | None = None

    def __post_init__(self) -> None:
        zeros = np.zeros(self.dims)
        self.mean = zeros.copy() if self.mean is None else np.asarray(self.mean, np.float64)
        self.m2 = zeros.copy() if self.m2 is None else np.asarray(self.m2, np.float64)
        self.min = np.full(self.dims, np.inf) if self.min is None else np.asarray(self.min, np.float64)
        self.max = np.full(self.dims, -np.inf) if self.max is None else np.asarray(self.max, np.float64)
        self.sketch = self.sketch or QuantileSketch(self.dims)

    @staticmethod
    def of(values: np.ndarray) -> FeatureStats:
        values = np.asarray(values, dtype=np.float64)
        stats = FeatureStats(values.shape[1])
        if values.shape[0]:
            stats.count = values.shape[0]
            stats.mean = values.mean(axis=0)
            stats.m2 = ((values - stats.mean) ** 2).sum(axis=0)
            stats.min, stats.max = values.min(axis=0), values.max(axis=0)
            stats.sketch.add(values)
        return stats

    @property
    def mergeable(self) -> bool:
        return isinstance(self.sketch, QuantileSketch)

    def merge(self, other: FeatureStats) -> None:
        if other.dims != self.dims:
            raise StatsFormatError(f"cannot merge stats of {other.dims} dims into {self.dims} dims")
        if other.count == 0:
            return
        self.sketch.merge(other.sketch)  # first: an unmergeable sketch must leave the moments untouched
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / total)
        self.count = total
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)

    def summary(self) -> dict[str, list[float] | int]:
        """The numbers loaders use: mean, std (population), min, max, q01, q99, count."""
        std = np.sqrt(self.m2 / self.count) if self.count else np.zeros(self.dims)
        q01 = np.clip(self.sketch.quantile(0.01), self.min, self.max)
        q99 = np.clip(self.sketch.quantile(0.99), self.min, self.max)
        return {"count": self.count, "mean": self.mean.tolist(), "std": std.tolist(), "min": self.min.tolist(),
                "max": self.max.tolist(), "q01": q01.tolist(), "q99": q99.tolist()}

    def to_json(self) -> dict:
        return {**self.summary(), "m2": self.m2.tolist(), "dims": self.dims, "sketch": self.sketch.to_json()}

    @staticmethod
    def from_json(data: dict) -> FeatureStats:
        return FeatureStats(int(data["dims"]), int(data["count"]), np.asarray(data["mean"], np.float64),
                            np.asarray(data["m2"], np.float64), np.asarray(data["min"], np.float64),
                            np.asarray(data["max"], np.float64), _quantiles_from_json(data))


@dataclass
class StatsSet:
    """Statistics per group (the embodiment) and feature (``state``, ``action``)."""

    groups: dict[str, dict[str, FeatureStats]] = field(default_factory=dict)

    @property
    def mergeable(self) -> bool:
        """False for stats loaded from an older format: recompute those from the episodes' steps."""
        return all(s.mergeable for features in self.groups.values() for s in features.values())

    def add(self, group: str, feature: str, values: np.ndarray) -> None:
        self.merge_feature(group, feature, FeatureStats.of(values))

    def merge_feature(self, group: str, feature: str, stats: FeatureStats) -> None:
        features = self.groups.setdefault(group, {})
        if feature in features:
            features[feature].merge(stats)
        else:
            features[feature] = FeatureStats.from_json(stats.to_json())  # an independent copy

    def merge(self, other: StatsSet) -> None:
        for group, features in other.groups.items():
            for feature, stats in features.items():
                self.merge_feature(group, feature, stats)

    def summary(self, group: str, feature: str) -> dict:
        return self.groups[group][feature].summary()

    def to_json(self) -> dict:
        return {"format": STATS_FORMAT,
                "groups": {g: {f: s.to_json() for f, s in sorted(fs.items())} for g, fs in sorted(self.groups.items())}}

    @staticmethod
    def from_json(data: dict) -> StatsSet:
        """Format 2, or format 1 (loads with its stored q01/q99; not mergeable)."""
        fmt = data.get("format", LEGACY_FORMAT)
        if fmt not in (STATS_FORMAT, LEGACY_FORMAT):
            raise StatsFormatError(f"unknown stats format {fmt!r} (this version reads {STATS_FORMAT} and "
                                   f"{LEGACY_FORMAT})")
        return StatsSet({g: {f: FeatureStats.from_json(s) for f, s in fs.items()}
                         for g, fs in data.get("groups", {}).items()})


def episode_stats(embodiment: str, state: np.ndarray, action: np.ndarray, state_valid: np.ndarray,
                  action_valid: np.ndarray) -> StatsSet:
    """Stats of one episode's valid rows (masked rows never count)."""
    stats = StatsSet()
    if state.shape[1]:
        stats.add(embodiment, "state", np.asarray(state)[np.asarray(state_valid, bool)])
    if action.shape[1]:
        stats.add(embodiment, "action", np.asarray(action)[np.asarray(action_valid, bool)])
    return stats
