"""openpi norm_stats.json from a version, and the quantile sketch of the stats object.

    python -m bench.norm_stats [--episodes 1000] [--steps 1000] [--horizon 50] [--baseline-steps 100000]
    python -m bench.norm_stats --quantiles [--values 1000000]

**Export**: a store of ``episodes x steps`` steps (14-D float32 ALOHA-like joints, no cameras) is
written once under .bench/; ``export_norm_stats`` with chunks of ``horizon`` and the mask
6,-1,6,-1 is timed end to end (catalog, steps Parquet, chunks, exact reduction, file). The baseline,
in the same run on the same steps, is openpi's own reduction as ``compute_norm_stats.py`` runs it
minus the images: per sample the clamped chunk and DeltaActions, batches of 32 into its
``RunningStats`` (numpy histograms); it runs over the first ``baseline-steps`` samples and its time
is scaled to the whole (it is linear in the samples). Both read the same stored steps.

**Quantiles**: q01/q99 error as a share of the exact q01-q99 spread, 10^6 values merged from
episodes of 1000, for the format-1 log-bucket sketch (relative error 0.5 %), Apache DataSketches
KLL (k=200 and k=16384) and the stats compactor (k=16384); plus bytes retained, time, and whether
two identical runs give identical bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from bench.common import BENCH_DIR, timed, write_result

DIMS = 14


def _episode(index: int, steps: int, rng: np.random.Generator):
    from schemas import Episode, EpisodeMeta, StepArrays

    joints = np.cumsum(rng.normal(0, 0.02, (steps + 1, DIMS)), axis=0).astype(np.float32) + np.float32(-2.1)
    joints[:, [6, 13]] = (rng.uniform(size=(steps + 1, 2)) < 0.3).astype(np.float32)
    names = [f"joint_{i}" for i in range(DIMS)]
    meta = EpisodeMeta(f"bench-{index:06d}", "bench", "bench", "bench://", f"{index}", f"{index}", "teleop", "aloha",
                       Fraction(50), steps, names, names)
    return Episode(meta, StepArrays(np.arange(steps, dtype=np.int64) * 20_000_000, joints[:-1].copy(),
                                    joints[1:].copy()))


def prepared_steps_store(episodes: int, steps: int) -> Path:
    """A store of ``episodes`` x ``steps`` steps committed as ``latest`` (built once)."""
    from pipeline.store.derive import append_episodes
    from pipeline.store.episodes import EpisodeStore

    root = BENCH_DIR / f"norm-stats-{episodes}x{steps}"
    if not (root / "ready").exists():
        store = EpisodeStore(str(root))
        rng = np.random.default_rng(0)
        metas = [store.write_episode(_episode(i, steps, rng)) for i in range(episodes)]
        append_episodes(store, "latest", metas, {"job": "bench"})
        (root / "ready").write_text("ok")
    return root


def openpi_baseline(store_root: Path, horizon: int, mask: tuple[bool, ...], limit: int) -> tuple[float, int]:
    """openpi's reduction over the first ``limit`` samples: (seconds, samples)."""
    from pipeline.export.norm_stats import NormStatsConfig, read_episode_rows
    from pipeline.export.output import episode_order
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import load_catalog, resolve
    from schemas import table_to_metas

    start = time.perf_counter()
    store = EpisodeStore(str(store_root))
    _, manifest = resolve(store, "latest")
    metas = sorted(table_to_metas(load_catalog(store, manifest)), key=episode_order)
    stats = {"state": _RunningStats(), "actions": _RunningStats()}
    batch_state, batch_actions, samples = [], [], 0
    mask_array = np.asarray(mask)
    for meta in metas:
        rows = read_episode_rows(store, meta, NormStatsConfig())
        n = len(rows.actions)
        for t in range(n):
            chunk = rows.actions[[max(0, min(n - 1, t + d)) for d in range(horizon)]].copy()
            chunk[..., :len(mask)] -= np.expand_dims(np.where(mask_array, rows.state[t, :len(mask)], 0), axis=-2)
            batch_state.append(rows.state[t])
            batch_actions.append(chunk)
            samples += 1
            if len(batch_state) == 32:
                stats["state"].update(np.stack(batch_state))
                stats["actions"].update(np.stack(batch_actions))
                batch_state, batch_actions = [], []
            if samples >= limit:
                return time.perf_counter() - start, samples
    return time.perf_counter() - start, samples


class _RunningStats:
    """openpi's ``normalize.RunningStats`` update path (5000-bin histograms per dimension)."""

    bins = 5000

    def __init__(self) -> None:
        self.count = 0

    def update(self, batch: np.ndarray) -> None:
        batch = batch.reshape(-1, batch.shape[-1])
        if self.count == 0:
            self.mean, self.squares = batch.mean(axis=0), (batch ** 2).mean(axis=0)
            self.min, self.max = batch.min(axis=0), batch.max(axis=0)
            self.hist = [np.zeros(self.bins) for _ in range(batch.shape[1])]
            self.edges = [np.linspace(self.min[i] - 1e-10, self.max[i] + 1e-10, self.bins + 1)
                          for i in range(batch.shape[1])]
        else:
            new_max, new_min = batch.max(axis=0), batch.min(axis=0)
            changed = np.any(new_max > self.max) or np.any(new_min < self.min)
            self.max, self.min = np.maximum(self.max, new_max), np.minimum(self.min, new_min)
            if changed:
                for i in range(len(self.hist)):
                    edges = np.linspace(self.min[i], self.max[i], self.bins + 1)
                    self.hist[i], _ = np.histogram(self.edges[i][:-1], bins=edges, weights=self.hist[i])
                    self.edges[i] = edges
        self.count += batch.shape[0]
        self.mean += (batch.mean(axis=0) - self.mean) * (batch.shape[0] / self.count)
        self.squares += ((batch ** 2).mean(axis=0) - self.squares) * (batch.shape[0] / self.count)
        for i in range(batch.shape[1]):
            self.hist[i] += np.histogram(batch[:, i], bins=self.edges[i])[0]


def bench_export(episodes: int, steps: int, horizon: int, baseline_steps: int) -> dict:
    from pipeline.export.norm_stats import NormStatsConfig, bool_mask, export_norm_stats
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import resolve

    root = prepared_steps_store(episodes, steps)
    mask = bool_mask((6, -1, 6, -1))
    config = NormStatsConfig(action_horizon=horizon, delta_mask=mask)

    def run() -> None:
        store = EpisodeStore(str(root))
        _, manifest = resolve(store, "latest")
        with tempfile.TemporaryDirectory() as out:
            export_norm_stats(store, manifest, out, config)

    ours_s, _ = timed(run)
    baseline_s, counted = openpi_baseline(root, horizon, mask, baseline_steps)
    total = episodes * steps
    baseline_total_s = baseline_s * total / counted
    return {"steps": total, "horizon": horizon, "rows_per_dim": total * horizon, "ours_s": round(ours_s, 2),
            "openpi_reduction_s_measured": round(baseline_s, 2), "openpi_reduction_samples": counted,
            "openpi_reduction_s_scaled": round(baseline_total_s, 1),
            "speedup": round(baseline_total_s / ours_s, 1)}


# ---------------------------------------------------------------- quantile sketches


def _log_bucket_quantiles(parts: list[np.ndarray], alpha: float = 0.005) -> tuple[list[float], int]:
    """Format 1's sketch: bucket ceil(log_gamma |x|) with a sign, merged by adding counts."""
    gamma = (1 + alpha) / (1 - alpha)
    counts: dict[int, int] = {}
    for part in parts:
        magnitude = np.abs(part)
        k = np.ceil(np.log(np.maximum(magnitude, 1e-9)) / math.log(gamma)).astype(np.int64) + 10_000
        buckets = np.where(magnitude < 1e-9, 0, np.where(part < 0, -k, k))
        for b, c in zip(*np.unique(buckets, return_counts=True), strict=True):
            counts[int(b)] = counts.get(int(b), 0) + int(c)
    keys = np.array(sorted(counts))
    cumulative = np.cumsum([counts[int(k)] for k in keys])
    out = []
    for q in (0.01, 0.99):
        b = int(keys[np.searchsorted(cumulative, q * (cumulative[-1] - 1), side="right")])
        value = 0.0 if b == 0 else 2 * gamma ** (abs(b) - 10_000) / (gamma + 1)
        out.append(value if b >= 0 else -value)
    return out, len(keys) * 16


def _kll(parts: list[np.ndarray], k: int) -> tuple[list[float], int, str]:
    import datasketches

    total = datasketches.kll_doubles_sketch(k)
    for part in parts:
        sketch = datasketches.kll_doubles_sketch(k)
        sketch.update(part)
        total.merge(sketch)
    data = total.serialize()
    return [total.get_quantile(0.01), total.get_quantile(0.99)], len(data), hashlib.sha256(data).hexdigest()


def _compactor(parts: list[np.ndarray]) -> tuple[list[float], int, str]:
    import json

    from pipeline.stats import QuantileSketch

    total = QuantileSketch(1)
    for part in parts:
        sketch = QuantileSketch(1)
        sketch.add(part[:, None])
        total.merge(sketch)
    data = json.dumps(total.to_json()).encode()
    return ([float(total.quantile(0.01)[0]), float(total.quantile(0.99)[0])], sum(lv.nbytes for lv in total.levels),
            hashlib.sha256(data).hexdigest())


def _distributions(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"narrow_near_-2.10": -2.1 + 0.0129 * rng.normal(size=n), "gaussian": rng.normal(size=n),
            "uniform_0_1": rng.uniform(size=n), "cauchy": rng.standard_cauchy(n),
            "gripper_3pct": np.where(rng.uniform(size=n) < 0.03, 0.0, 0.08),
            "huge_offset": 1e7 + 1e-3 * rng.normal(size=n)}


def bench_quantiles(n: int) -> dict:
    out = {}
    for name, values in _distributions(n).items():
        parts = np.split(values, range(1000, n, 1000))
        exact = np.quantile(values, [0.01, 0.99])
        spread = exact[1] - exact[0]

        def error(q: list[float], exact=exact, spread=spread) -> float:
            return round(float(np.max(np.abs(np.asarray(q) - exact)) / (spread if spread > 0 else 1)), 5)

        row = {}
        seconds, (q, size) = timed(_log_bucket_quantiles, parts)
        row["log_bucket_format1"] = {"err_of_spread": error(q), "bytes": size, "s": round(seconds, 2)}
        for k in (200, 16384):
            seconds, (q, size, digest) = timed(_kll, parts, k)
            again = _kll(parts, k)[2]
            row[f"kll_k{k}"] = {"err_of_spread": error(q), "bytes": size, "s": round(seconds, 2),
                                "same_bytes_twice": digest == again}
        seconds, (q, size, digest) = timed(_compactor, parts)
        row["compactor_k16384"] = {"err_of_spread": error(q), "bytes": size, "s": round(seconds, 2),
                                   "same_bytes_twice": digest == _compactor(parts)[2]}
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--baseline-steps", type=int, default=100_000)
    parser.add_argument("--quantiles", action="store_true", help="Measure the quantile sketches instead")
    parser.add_argument("--values", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.quantiles:
        result = bench_quantiles(args.values)
        for name, row in result.items():
            print(name, {k: v["err_of_spread"] for k, v in row.items()})
        print(write_result("norm_stats_quantiles", result))
        return
    result = bench_export(args.episodes, args.steps, args.horizon, args.baseline_steps)
    print(result)
    print(write_result("norm_stats", result))


if __name__ == "__main__":
    main()
