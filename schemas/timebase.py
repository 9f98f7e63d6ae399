"""Time on integer nanoseconds and rational rates.

Float timestamps accumulate error over long episodes (LeRobot v3 drifts on long files), so every
time in the schema is an integer count of nanoseconds from the episode start and every rate is a
``Fraction``. Conversions round half up, once, from exact integers.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

NS_PER_S = 1_000_000_000
_INT64_SAFE = 2**62


def parse_rate(value: object) -> Fraction:
    """A frame or control rate as an exact fraction: 30, 30.0, "30/1", "30000/1001", 29.97."""
    if isinstance(value, Fraction):
        rate = value
    elif isinstance(value, int):
        rate = Fraction(value)
    elif isinstance(value, float):
        rate = Fraction(repr(value)).limit_denominator(1001)
    elif isinstance(value, str) and "/" in value:
        num, den = value.split("/", 1)
        rate = Fraction(int(num), int(den))
    elif isinstance(value, str):
        rate = Fraction(value).limit_denominator(1001)
    else:
        raise ValueError(f"cannot read a rate from {value!r}")
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {value!r}")
    return rate


def rate_to_str(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def index_to_ns(index: np.ndarray | int, rate: Fraction) -> np.ndarray | int:
    """Nanoseconds of sample ``index`` at ``rate``, rounded half up from the exact value."""
    num, den = rate.numerator, rate.denominator
    if isinstance(index, (int, np.integer)):
        return (int(index) * NS_PER_S * den * 2 + num) // (2 * num)
    idx = np.asarray(index, dtype=np.int64)
    if idx.size == 0 or int(np.abs(idx).max()) < _INT64_SAFE // (NS_PER_S * den * 2 + num):
        return (idx * (NS_PER_S * den * 2) + num) // (2 * num)
    # Python ints avoid int64 overflow for very long episodes at odd rates.
    return np.array([(int(i) * NS_PER_S * den * 2 + num) // (2 * num) for i in idx], dtype=np.int64)


def ns_to_index(ns: np.ndarray | int, rate: Fraction) -> np.ndarray | int:
    """The nearest sample index of a time in nanoseconds at ``rate`` (round half up)."""
    num, den = rate.numerator, rate.denominator
    if isinstance(ns, (int, np.integer)):
        return (int(ns) * num * 2 + NS_PER_S * den) // (2 * NS_PER_S * den)
    times = np.asarray(ns, dtype=np.int64)
    if times.size == 0 or int(np.abs(times).max()) < _INT64_SAFE // (num * 2 + 1):
        return (times * (num * 2) + NS_PER_S * den) // (2 * NS_PER_S * den)
    return np.array([(int(t) * num * 2 + NS_PER_S * den) // (2 * NS_PER_S * den) for t in times],
                    dtype=np.int64)


def seconds_to_ns(seconds: np.ndarray | float) -> np.ndarray | int:
    """Float seconds from a source file to integer nanoseconds (rounded to nearest)."""
    if np.isscalar(seconds):
        return round(float(seconds) * NS_PER_S)
    return np.rint(np.asarray(seconds, dtype=np.float64) * NS_PER_S).astype(np.int64)


def ns_to_seconds(ns: np.ndarray) -> np.ndarray:
    """Integer nanoseconds back to float64 seconds (what exports write, cast to the source dtype)."""
    return np.asarray(ns, dtype=np.int64) / NS_PER_S


def period_ns(rate: Fraction) -> int:
    return int(index_to_ns(1, rate))


# LeRobot's and GR00T's ``tolerance_s``: a step's frame is the one nearest its timestamp, within 1e-4 s.
PAIRING_TOLERANCE_NS = 100_000


def align_nearest(query_ns: np.ndarray, frame_ns: np.ndarray, tolerance_ns: int) -> np.ndarray:
    """For each query time, the index of the nearest frame time, or -1 when none is within tolerance.

    ``frame_ns`` must be sorted ascending. Ties go to the earlier frame.
    """
    query = np.asarray(query_ns, dtype=np.int64)
    frames = np.asarray(frame_ns, dtype=np.int64)
    if frames.size == 0:
        return np.full(query.shape, -1, dtype=np.int32)
    right = np.searchsorted(frames, query, side="left").clip(0, frames.size - 1)
    left = (right - 1).clip(0, frames.size - 1)
    pick_left = np.abs(query - frames[left]) <= np.abs(frames[right] - query)
    nearest = np.where(pick_left, left, right)
    ok = np.abs(frames[nearest] - query) <= tolerance_ns
    return np.where(ok, nearest, -1).astype(np.int32)
