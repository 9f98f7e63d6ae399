"""Control ticks and the resampling of irregular streams onto them.

Policies (``t`` a tick, ``s_i`` the stream's sample times, sorted):

- ``hold``: the latest sample at or before ``t``, however old (zero-order hold); masked before
  the first sample.
- ``asof``: the latest sample at or before ``t`` if ``t - s_i <= tolerance``; otherwise masked, so
  a dropout never repeats a stale value silently.
- ``nearest``: the sample closest to ``t`` (ties to the earlier one) if within the tolerance;
  otherwise masked.

Masked rows hold NaN, never zeros, and their ``valid`` flag is False.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from schemas import NS_PER_S, align_nearest, index_to_ns


def fixed_ticks(start_ns: int, end_ns: int, rate: Fraction) -> np.ndarray:
    """Absolute tick times ``start + k / rate`` (integer ns, rounded once per tick) up to ``end``."""
    span = max(0, end_ns - start_ns)
    count = span * rate.numerator // (rate.denominator * NS_PER_S) + 1
    return start_ns + index_to_ns(np.arange(count, dtype=np.int64), rate)


def source_index(times: np.ndarray, ticks: np.ndarray, policy: str, tolerance_ns: int) -> np.ndarray:
    """For each tick, the index of the sample the policy picks, or -1 (masked)."""
    times = np.asarray(times, dtype=np.int64)
    ticks = np.asarray(ticks, dtype=np.int64)
    if times.size == 0:
        return np.full(ticks.shape, -1, np.int64)
    if policy == "nearest":
        return align_nearest(ticks, times, tolerance_ns).astype(np.int64)
    index = np.searchsorted(times, ticks, side="right") - 1
    if policy == "hold":
        return index
    if policy == "asof":
        age = ticks - times[index.clip(0)]
        return np.where((index >= 0) & (age <= tolerance_ns), index, -1)
    raise ValueError(f"unknown resampling policy {policy!r}")


def resample(times: np.ndarray, values: np.ndarray, ticks: np.ndarray, policy: str,
             tolerance_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Values at the ticks (NaN where masked) and the validity mask."""
    index = source_index(times, ticks, policy, tolerance_ns)
    valid = index >= 0
    dtype = np.result_type(values.dtype, np.float32) if values.dtype.kind == "f" else np.float64
    out = np.full((ticks.shape[0], values.shape[1]), np.nan, dtype=dtype)
    out[valid] = values[index[valid]]
    return out, valid
