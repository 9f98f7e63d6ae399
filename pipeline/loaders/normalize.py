"""Normalization of state and actions from a version's statistics, per embodiment, both ways.

Modes: ``mean_std`` ((x - mean) / std), ``quantile`` (q01/q99 mapped to [-1, 1]), ``min_max``
(min/max mapped to [-1, 1]) and ``none``. Values are not clipped unless ``clip`` is set (the tails
beyond q01/q99 then land outside [-1, 1], as in openpi). Dimensions with no spread (std, q99 - q01 or
max - min below ``eps``) are left centred instead of divided by zero. ``openpi_quantile`` and
``openpi_mean_std`` are openpi's own formulas (``(x - q01) / (q99 - q01 + 1e-6) * 2 - 1`` and
``(x - mean) / (std + 1e-6)``), for policies trained with its transforms.

``unnormalize`` inverts the same affine map (predicted actions back to robot units). ``export`` writes
the statistics and the mode beside a checkpoint; ``Normalizer.load`` reads them back, so deployment
code needs neither the store nor the view.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.stats import StatsSet

MODES = ("none", "mean_std", "quantile", "min_max", "openpi_quantile", "openpi_mean_std")
EXPORT_FORMAT = "actionreel.norm-stats/1"
OPENPI_EPS = 1e-6


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

    def unnormalize(self, embodiment: str, feature: str, values: np.ndarray) -> np.ndarray:
        """The inverse map: normalized ``values`` ([..., D], e.g. predicted action chunks) in source units."""
        values = np.asarray(values, dtype=np.float32)
        if self.mode == "none" or values.shape[-1] == 0:
            return values
        affine = self._get(embodiment, feature)
        width = values.shape[-1]
        return values * affine.scale[:width] + affine.center[:width]

    def export(self, path: str | os.PathLike) -> Path:
        """Write mode and statistics (every embodiment) as JSON at ``path``, atomically."""
        path = Path(path)
        body = {"format": EXPORT_FORMAT, "mode": self.mode, "clip": self.clip, "eps": self.eps,
                "stats": self.stats.to_json()}
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps(body, sort_keys=True))
        temp.replace(path)
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> Normalizer:
        body = json.loads(Path(path).read_text())
        if body.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: not exported normalization statistics (format {body.get('format')!r})")
        return Normalizer(StatsSet.from_json(body["stats"]), body["mode"], bool(body["clip"]), float(body["eps"]))

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

        if self.mode == "openpi_mean_std":
            return _Affine(arr("mean").astype(np.float32), (arr("std") + OPENPI_EPS).astype(np.float32))
        if self.mode == "openpi_quantile":
            half = (arr("q99") - arr("q01") + OPENPI_EPS) / 2
            return _Affine((arr("q01") + half).astype(np.float32), half.astype(np.float32))
        if self.mode == "mean_std":
            center, half_range = arr("mean"), arr("std")
        else:
            low, high = (arr("q01"), arr("q99")) if self.mode == "quantile" else (arr("min"), arr("max"))
            center, half_range = (low + high) / 2, (high - low) / 2
        scale = np.where(half_range > self.eps, half_range, 1.0)
        return _Affine(center.astype(np.float32), scale.astype(np.float32))


def export_openpi_norm_stats(stats: StatsSet, embodiment: str, path: str | os.PathLike) -> Path:
    """openpi's ``norm_stats.json`` ({"norm_stats": {"state": {...}, "actions": {...}}}, each with mean,
    std, q01, q99) for one embodiment, as its ``openpi.shared.normalize.load`` reads it."""
    names = {"state": "state", "action": "actions"}
    present = [f for f in ("state", "action") if f in stats.groups.get(embodiment, {})]
    body = {"norm_stats": {names[f]: {k: stats.summary(embodiment, f)[k] for k in ("mean", "std", "q01", "q99")}
                           for f in present}}
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(body, indent=2))
    temp.replace(path)
    return path
