"""Normalization of state and actions from a version's statistics, per embodiment.

Modes: ``mean_std`` ((x - mean) / std), ``quantile`` (q01/q99 mapped to [-1, 1]), ``min_max``
(min/max mapped to [-1, 1]) and ``none``. Values are not clipped unless ``clip`` is set (the tails
beyond q01/q99 then land outside [-1, 1], as in openpi). Dimensions with no spread (std, q99 - q01 or
max - min below ``eps``) are left centred instead of divided by zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.stats import StatsSet

MODES = ("none", "mean_std", "quantile", "min_max")


@dataclass
class _Affine:
    center: np.ndarray
    scale: np.ndarray


class Normalizer:
    def __init__(self, stats: StatsSet, mode: str = "none", clip: bool = False, eps: float = 1e-8) -> None:
        if mode not in MODES:
            raise ValueError(f"normalization must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.clip = clip
        self.stats = stats
        self.eps = eps
        self._affine: dict[tuple[str, str], _Affine] = {}

    def __call__(self, embodiment: str, feature: str, values: np.ndarray) -> np.ndarray:
        """Normalize float32 ``values`` ([..., D]) of ``feature`` ("state" or "action")."""
        if self.mode == "none" or values.shape[-1] == 0:
            return values
        affine = self._get(embodiment, feature)
        out = (values - affine.center) / affine.scale
        return np.clip(out, -1.0, 1.0, out=out) if self.clip else out

    def _get(self, embodiment: str, feature: str) -> _Affine:
        key = (embodiment, feature)
        if key not in self._affine:
            try:
                summary = self.stats.summary(embodiment, feature)
            except KeyError:
                raise KeyError(f"no {feature} statistics for embodiment {embodiment!r} in this version") from None
            self._affine[key] = self._build(summary)
        return self._affine[key]

    def _build(self, summary: dict) -> _Affine:
        def arr(name: str) -> np.ndarray:
            return np.asarray(summary[name], dtype=np.float64)

        if self.mode == "mean_std":
            center, half_range = arr("mean"), arr("std")
        else:
            low, high = (arr("q01"), arr("q99")) if self.mode == "quantile" else (arr("min"), arr("max"))
            center, half_range = (low + high) / 2, (high - low) / 2
        scale = np.where(half_range > self.eps, half_range, 1.0)
        return _Affine(center.astype(np.float32), scale.astype(np.float32))
