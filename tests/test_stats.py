"""Stats merge exactly: the merge of two halves equals the stats of the whole."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stats import FeatureStats, QuantileSketch, StatsSet


def _assert_merge_equals_whole(values: np.ndarray, cut: int) -> None:
    whole = FeatureStats.of(values)
    merged = FeatureStats.of(values[:cut])
    merged.merge(FeatureStats.of(values[cut:]))
    summary, exact = merged.summary(), whole.summary()
    assert summary["count"] == len(values)
    np.testing.assert_allclose(summary["mean"], values.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(summary["std"], values.std(axis=0), rtol=1e-6, atol=1e-9)
    assert summary["min"] == exact["min"] and summary["max"] == exact["max"]
    # The merged sketch is the sketch of the whole, bucket for bucket.
    assert np.array_equal(merged.sketch.codes, whole.sketch.codes)
    assert np.array_equal(merged.sketch.counts, whole.sketch.counts)
    sketch = merged.sketch
    for q, key in ((0.01, "q01"), (0.99, "q99")):
        true = np.quantile(values, q, axis=0, method="lower")
        assert np.abs(sketch.bucket_of(np.asarray(summary[key])) - sketch.bucket_of(true)).max() <= 1
        np.testing.assert_allclose(summary[key], true, rtol=2 * sketch.alpha, atol=1e-9)


def test_merge_of_halves_equals_whole_on_mixed_distributions():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, (40_000, 6)), rng.uniform(-3, 5, (25_000, 6)),
                             rng.exponential(2, (5_000, 6)) - 1])
    rng.shuffle(values)
    _assert_merge_equals_whole(values, 31_337)


def test_quantiles_are_real_not_envelopes():
    # LeRobot merges q01 as the min of per-episode q01s; a real quantile of the merge differs.
    a = np.full((1000, 1), 0.0)
    a[:5] = -100.0  # one episode with a few outliers
    b = np.linspace(1.0, 2.0, 1000)[:, None]
    stats = FeatureStats.of(a)
    stats.merge(FeatureStats.of(b))
    q01 = stats.summary()["q01"][0]
    assert q01 == 0.0  # the 1% quantile of the union is 0, not the outlier -100


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=400),
    dims=st.integers(min_value=1, max_value=4),
    cut_fraction=st.floats(min_value=0.05, max_value=0.95),
    scale=st.sampled_from([1e-6, 1.0, 1e4]),
    seed=st.integers(0, 10_000),
)
def test_merge_property(n, dims, cut_fraction, scale, seed):
    values = np.random.default_rng(seed).normal(0.3, 1.0, (n, dims)) * scale
    _assert_merge_equals_whole(values, max(1, min(n - 1, int(n * cut_fraction))))


def test_stats_set_json_round_trip_and_groups():
    rng = np.random.default_rng(3)
    stats = StatsSet()
    stats.add("aloha", "state", rng.normal(size=(100, 14)))
    stats.add("franka", "state", rng.normal(size=(50, 8)))
    back = StatsSet.from_json(json.loads(json.dumps(stats.to_json())))
    assert back.summary("aloha", "state") == stats.summary("aloha", "state")
    assert back.summary("franka", "state")["count"] == 50


def test_sketch_handles_zero_and_negative_values():
    sketch = QuantileSketch(1)
    sketch.add(np.array([[-2.0], [0.0], [0.0], [1e-12], [3.0]]))
    assert sketch.quantile(0.0)[0] < -1.9
    assert sketch.quantile(0.5)[0] == 0.0
    assert sketch.quantile(1.0)[0] > 2.9
