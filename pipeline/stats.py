"""Normalization statistics that merge exactly: moments plus a log-bucket quantile sketch.

Means and variances merge with Chan's parallel formula. Quantiles come from a DDSketch-style
sketch (Masson et al., VLDB 2019): each value falls in a bucket ``ceil(log_gamma |x|)`` with a
sign, so two sketches merge by adding bucket counts and the merge of two halves is *identical* to
the sketch of the whole. A quantile estimate is within relative error ``alpha`` of a true order
statistic (values below ``min_value`` in magnitude share one zero bucket). LeRobot merges quantiles
as min/max envelopes; this does not. The DataDog ``ddsketch`` package adds one value at a time in
Python; this version buckets whole arrays with numpy, which is what episodes of 10^5 steps need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DEFAULT_ALPHA = 0.005
MIN_VALUE = 1e-9
_DIM_SHIFT = 32
_SIGN_OFFSET = 1 << 31


@dataclass
class QuantileSketch:
    """Per-dimension bucket counts. ``codes`` = dim << 32 | (signed bucket + 2^31), sorted, unique."""

    dims: int
    alpha: float = DEFAULT_ALPHA
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def gamma(self) -> float:
        return (1 + self.alpha) / (1 - self.alpha)

    @property
    def _offset(self) -> int:
        return 1 - math.ceil(math.log(MIN_VALUE) / math.log(self.gamma))

    def bucket_of(self, values: np.ndarray) -> np.ndarray:
        """Signed bucket of each value: 0 for |x| < MIN_VALUE, order-preserving otherwise."""
        values = np.asarray(values, dtype=np.float64)
        magnitude = np.abs(values)
        tiny = magnitude < MIN_VALUE
        k = np.ceil(np.log(np.where(tiny, 1.0, magnitude)) / math.log(self.gamma)).astype(np.int64) + self._offset
        return np.where(tiny, 0, np.where(values < 0, -k, k))

    def add(self, values: np.ndarray) -> None:
        """Add an [N, dims] array of finite values."""
        values = np.asarray(values, dtype=np.float64).reshape(-1, self.dims)
        if values.size == 0:
            return
        buckets = self.bucket_of(values) + _SIGN_OFFSET
        codes = (np.arange(self.dims, dtype=np.int64) << _DIM_SHIFT)[None, :] + buckets
        unique, counts = np.unique(codes.reshape(-1), return_counts=True)
        self._absorb(unique, counts.astype(np.int64))

    def merge(self, other: QuantileSketch) -> None:
        if (other.dims, other.alpha) != (self.dims, self.alpha):
            raise ValueError(f"cannot merge sketches of {other.dims} dims/alpha {other.alpha} into "
                             f"{self.dims} dims/alpha {self.alpha}")
        self._absorb(other.codes, other.counts)

    def _absorb(self, codes: np.ndarray, counts: np.ndarray) -> None:
        all_codes = np.concatenate([self.codes, codes])
        all_counts = np.concatenate([self.counts, counts])
        unique, inverse = np.unique(all_codes, return_inverse=True)
        self.codes = unique
        self.counts = np.bincount(inverse, weights=all_counts, minlength=unique.size).astype(np.int64)

    def quantile(self, q: float) -> np.ndarray:
        """Estimated q-quantile per dimension (lower order statistic at rank q*(n-1)).

        Codes are sorted, so each dimension is one contiguous run: one cumulative sum and one search
        for all dimensions (this runs for every stored episode).
        """
        out = np.full(self.dims, np.nan)
        dims = np.arange(self.dims, dtype=np.int64)
        dims_of = self.codes >> _DIM_SHIFT
        starts = np.searchsorted(dims_of, dims, side="left")
        ends = np.searchsorted(dims_of, dims, side="right")
        present = ends > starts
        if not present.any():
            return out
        cumulative = np.cumsum(self.counts)
        before = np.where(starts > 0, cumulative[np.maximum(starts - 1, 0)], 0)
        totals = cumulative[np.maximum(ends - 1, 0)] - before
        ranks = before + q * (totals - 1)
        positions = np.minimum(np.searchsorted(cumulative, ranks, side="right"), ends - 1)[present]
        buckets = (self.codes[positions] & ((1 << _DIM_SHIFT) - 1)) - _SIGN_OFFSET
        out[present] = [self.bucket_value(int(b)) for b in buckets]
        return out

    def bucket_value(self, bucket: int) -> float:
        """The representative value of a signed bucket (relative error <= alpha to its members)."""
        if bucket == 0:
            return 0.0
        k = abs(bucket) - self._offset
        value = 2 * self.gamma ** k / (self.gamma + 1)
        return value if bucket > 0 else -value

    def to_json(self) -> dict:
        return {"dims": self.dims, "alpha": self.alpha, "codes": self.codes.tolist(), "counts": self.counts.tolist()}

    @staticmethod
    def from_json(data: dict) -> QuantileSketch:
        return QuantileSketch(int(data["dims"]), float(data["alpha"]), np.asarray(data["codes"], np.int64),
                              np.asarray(data["counts"], np.int64))


@dataclass
class FeatureStats:
    """Exact count/mean/M2/min/max plus a quantile sketch for one vector feature."""

    dims: int
    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    sketch: QuantileSketch | None = None

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

    def merge(self, other: FeatureStats) -> None:
        if other.dims != self.dims:
            raise ValueError(f"cannot merge stats of {other.dims} dims into {self.dims} dims")
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / total)
        self.count = total
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.sketch.merge(other.sketch)

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
                            np.asarray(data["max"], np.float64), QuantileSketch.from_json(data["sketch"]))


@dataclass
class StatsSet:
    """Statistics per group (the embodiment) and feature (``state``, ``action``)."""

    groups: dict[str, dict[str, FeatureStats]] = field(default_factory=dict)

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
        return {"format": "actionreel.stats/1",
                "groups": {g: {f: s.to_json() for f, s in sorted(fs.items())} for g, fs in sorted(self.groups.items())}}

    @staticmethod
    def from_json(data: dict) -> StatsSet:
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
