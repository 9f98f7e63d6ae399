"""openpi contract: ``norm_stats.json`` as openpi's ``normalize.load`` reads it, with the values of the chunks
openpi's ``compute_norm_stats.py`` iterates (LeRobot's clamped action chunks, DeltaActions with a mask, the
trailing partial batch dropped), computed exactly.

openpi cannot be installed here (it needs JAX); its loading code and transforms are reimplemented below
from ``src/openpi/shared/normalize.py`` and ``src/openpi/transforms.py``, line for line where it matters.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import numpydantic
import pydantic
import pytest
from typer.testing import CliRunner

from pipeline.export.norm_stats import (
    EpisodeRows,
    FeatureSlice,
    NormStatsConfig,
    bool_mask,
    compute_norm_stats,
    exact_quantiles,
    parse_mask,
)

# ---------------------------------------------------------------- openpi, reimplemented from its source


@pydantic.dataclasses.dataclass
class NormStats:
    mean: numpydantic.NDArray
    std: numpydantic.NDArray
    q01: numpydantic.NDArray | None = None
    q99: numpydantic.NDArray | None = None


class _NormStatsDict(pydantic.BaseModel):
    norm_stats: dict[str, NormStats]


def openpi_load(directory: pathlib.Path) -> dict[str, NormStats]:
    """``openpi.shared.normalize.load``."""
    path = pathlib.Path(directory) / "norm_stats.json"
    if not path.exists():
        raise FileNotFoundError(f"Norm stats file not found at: {path}")
    return _NormStatsDict(**json.loads(path.read_text())).norm_stats


def openpi_normalize_quantile(x: np.ndarray, stats: NormStats) -> np.ndarray:
    """``transforms.Normalize._normalize_quantile`` (Pi-0-FAST, Pi-0.5)."""
    q01, q99 = stats.q01[..., : x.shape[-1]], stats.q99[..., : x.shape[-1]]
    return (x - q01) / (q99 - q01 + 1e-6) * 2.0 - 1.0


def openpi_normalize(x: np.ndarray, stats: NormStats) -> np.ndarray:
    """``transforms.Normalize._normalize`` (Pi-0)."""
    mean, std = stats.mean[..., : x.shape[-1]], stats.std[..., : x.shape[-1]]
    return (x - mean) / (std + 1e-6)


def openpi_delta_actions(data: dict, mask) -> dict:
    """``transforms.DeltaActions``."""
    if "actions" not in data or mask is None:
        return data
    state, actions = data["state"], data["actions"]
    mask = np.asarray(mask)
    dims = mask.shape[-1]
    actions[..., :dims] -= np.expand_dims(np.where(mask, state[..., :dims], 0), axis=-2)
    data["actions"] = actions
    return data


def openpi_samples(episodes: list[EpisodeRows], horizon: int, mask, batch_size: int | None) -> dict[str, np.ndarray]:
    """The rows compute_norm_stats feeds RunningStats: one sample per frame, LeRobot's clamped chunk
    (``_get_query_indices``: ``max(ep_start, min(ep_end - 1, idx + delta))``), then DeltaActions; with a
    batch size, ``len(dataset) // batch_size`` batches of an unshuffled drop_last loader."""
    samples = []
    for episode in episodes:
        n = len(episode.actions)
        for t in range(n):
            indices = [max(0, min(n - 1, t + delta)) for delta in range(horizon)]
            data = {"state": episode.state[t].copy(), "actions": episode.actions[indices].copy()}
            samples.append(openpi_delta_actions(data, mask))
    if batch_size:
        samples = samples[: len(samples) // batch_size * batch_size]
    return {"state": np.stack([s["state"] for s in samples]),
            "actions": np.stack([s["actions"] for s in samples]).reshape(-1, episodes[0].actions.shape[1])}


def exact(rows: np.ndarray) -> dict[str, np.ndarray]:
    rows = rows.astype(np.float64)
    return {"mean": rows.mean(axis=0), "std": rows.std(axis=0), "q01": np.quantile(rows, 0.01, axis=0),
            "q99": np.quantile(rows, 0.99, axis=0)}


class OpenpiRunningStats:
    """``normalize.RunningStats`` (5000-bin histograms re-binned when min or max grows)."""

    def __init__(self):
        self._count = 0
        self._mean = self._mean_of_squares = self._min = self._max = None
        self._histograms = self._bin_edges = None
        self._num_quantile_bins = 5000

    def update(self, batch: np.ndarray) -> None:
        batch = batch.reshape(-1, batch.shape[-1])
        num_elements, vector_length = batch.shape
        if self._count == 0:
            self._mean = np.mean(batch, axis=0)
            self._mean_of_squares = np.mean(batch**2, axis=0)
            self._min = np.min(batch, axis=0)
            self._max = np.max(batch, axis=0)
            self._histograms = [np.zeros(self._num_quantile_bins) for _ in range(vector_length)]
            self._bin_edges = [np.linspace(self._min[i] - 1e-10, self._max[i] + 1e-10, self._num_quantile_bins + 1)
                               for i in range(vector_length)]
        else:
            new_max, new_min = np.max(batch, axis=0), np.min(batch, axis=0)
            max_changed, min_changed = np.any(new_max > self._max), np.any(new_min < self._min)
            self._max, self._min = np.maximum(self._max, new_max), np.minimum(self._min, new_min)
            if max_changed or min_changed:
                for i in range(len(self._histograms)):
                    new_edges = np.linspace(self._min[i], self._max[i], self._num_quantile_bins + 1)
                    self._histograms[i], _ = np.histogram(self._bin_edges[i][:-1], bins=new_edges,
                                                          weights=self._histograms[i])
                    self._bin_edges[i] = new_edges
        self._count += num_elements
        self._mean += (np.mean(batch, axis=0) - self._mean) * (num_elements / self._count)
        self._mean_of_squares += (np.mean(batch**2, axis=0) - self._mean_of_squares) * (num_elements / self._count)
        for i in range(batch.shape[1]):
            hist, _ = np.histogram(batch[:, i], bins=self._bin_edges[i])
            self._histograms[i] += hist

    def quantiles(self, qs):
        out = []
        for q in qs:
            values = []
            for hist, edges in zip(self._histograms, self._bin_edges, strict=True):
                values.append(edges[np.searchsorted(np.cumsum(hist), q * self._count)])
            out.append(np.array(values))
        return out


# ---------------------------------------------------------------- fixtures written as a robot records them


def _aloha_like(seed: int, lengths: list[int]) -> list[EpisodeRows]:
    """Absolute joint targets that lead the state (14 dims: 6 joints + gripper per arm), float32."""
    rng = np.random.default_rng(seed)
    episodes = []
    for n in lengths:
        joints = np.cumsum(rng.normal(0, 0.02, (n + 1, 14)), axis=0).astype(np.float32) + np.float32(-2.1)
        joints[:, [6, 13]] = (rng.uniform(size=(n + 1, 2)) < 0.3).astype(np.float32)
        episodes.append(EpisodeRows(joints[:-1].copy(), joints[1:].copy(), np.ones(n, bool), np.ones(n, bool)))
    return episodes


def _assert_equal_to_exact(ours: dict, rows: dict[str, np.ndarray]) -> None:
    for key, feature in (("state", "state"), ("actions", "actions")):
        want = exact(rows[feature])
        assert ours[key]["q01"] == want["q01"].tolist(), key  # bit for bit: np.quantile's linear rule
        assert ours[key]["q99"] == want["q99"].tolist(), key
        np.testing.assert_allclose(ours[key]["mean"], want["mean"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours[key]["std"], want["std"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("horizon", [1, 10, 50])
def test_chunks_and_delta_mask_match_openpi_samples_exactly(horizon):
    episodes = _aloha_like(0, [120, 7, 61])  # one episode shorter than the horizon
    mask = bool_mask((6, -1, 6, -1))
    ours = compute_norm_stats(episodes, NormStatsConfig(action_horizon=horizon, delta_mask=mask))
    rows = openpi_samples(episodes, horizon, mask, None)
    assert rows["actions"].shape == (188 * horizon, 14)
    _assert_equal_to_exact(ours, rows)
    # the gripper dims stay absolute (0/1), the joints are relative to the chunk's first state
    assert ours["actions"]["q01"][6] == 0.0 and ours["actions"]["q99"][6] == 1.0
    assert abs(ours["actions"]["mean"][0]) < 0.2 < 1.5 < abs(ours["state"]["mean"][0])


def test_absolute_actions_and_dropped_partial_batch():
    episodes = _aloha_like(1, [40, 33])
    ours = compute_norm_stats(episodes, NormStatsConfig(action_horizon=16, batch_size=32))
    rows = openpi_samples(episodes, 16, None, 32)
    assert len(rows["state"]) == 64  # 73 frames -> two batches of 32; the last 9 samples never reach the stats
    _assert_equal_to_exact(ours, rows)


def test_mask_shorter_than_the_actions_and_key_slices():
    episodes = _aloha_like(2, [50, 50])
    config = NormStatsConfig(action_horizon=8, delta_mask=bool_mask((3,)),
                             keys={"state": FeatureSlice("state", 0, 7), "actions": FeatureSlice("action", 0, 7)})
    sliced = [EpisodeRows(*(config.keys[k].take(e.state, e.actions) for k in ("state", "actions")),
                          e.state_valid, e.action_valid) for e in episodes]
    ours = compute_norm_stats(sliced, config)
    assert len(ours["actions"]["mean"]) == 7 and len(ours["state"]["q01"]) == 7
    _assert_equal_to_exact(ours, openpi_samples(sliced, 8, bool_mask((3,)), None))


def test_masked_steps_leave_the_rows_that_use_them():
    (episode,) = _aloha_like(3, [30])
    episode.action_valid[29] = False  # the last action: every padded row of the tail chunks uses it
    episode.state_valid[0] = False
    ours = compute_norm_stats([episode], NormStatsConfig(action_horizon=5, delta_mask=bool_mask((6,))))
    rows = []
    for t in range(30):
        for h in range(5):
            i = min(t + h, 29)
            if episode.state_valid[t] and episode.action_valid[i]:
                row = episode.actions[i].copy()
                row[:6] -= episode.state[t, :6]
                rows.append(row)
    want = exact(np.stack(rows))
    assert ours["actions"]["q01"] == want["q01"].tolist() and ours["actions"]["q99"] == want["q99"].tolist()
    assert ours["state"]["mean"] == pytest.approx(episode.state[1:].astype(np.float64).mean(axis=0).tolist())


@pytest.mark.parametrize("n", [1, 2, 3, 100, 10_001, 1_200_000])  # the last: banded selection
def test_exact_quantiles_are_numpys(n):
    values = np.random.default_rng(n).standard_cauchy(n)
    assert exact_quantiles(values.copy(), (0.01, 0.5, 0.99)) == np.quantile(values, [0.01, 0.5, 0.99]).tolist()
    as_float32 = values.astype(np.float32)
    assert exact_quantiles(as_float32.copy(), (0.01, 0.99)) == np.quantile(as_float32.astype(np.float64),
                                                                           [0.01, 0.99]).tolist()
    ties = np.round(values * 4).astype(np.float32)  # heavy ties: bands full of equal values
    assert exact_quantiles(ties.copy(), (0.01, 0.99)) == np.quantile(ties.astype(np.float64), [0.01, 0.99]).tolist()


def test_openpi_histogram_quantiles_relate_to_exact_ones():
    # openpi's RunningStats answers the left edge of the bin holding rank q*N: below the exact value
    # by up to tens of its (max - min)/5000 bins after re-binnings (here over 1 % of one dimension's spread).
    episodes = _aloha_like(4, [300, 300, 300])
    rows = openpi_samples(episodes, 10, bool_mask((6, -1, 6, -1)), None)["actions"]
    running = OpenpiRunningStats()
    for start in range(0, len(rows), 320):  # batches of 32 samples x 10 rows
        running.update(rows[start:start + 320])
    q01, q99 = running.quantiles([0.01, 0.99])
    want = exact(rows)
    width = (rows.max(axis=0) - rows.min(axis=0)) / 5000
    for theirs, ours in ((q01, want["q01"]), (q99, want["q99"])):
        assert np.all(theirs <= ours + width)  # a left bin edge: at or below the exact value
        assert np.all(ours - theirs <= 50 * width)  # re-binning drifts it by tens of bins
    spread = want["q99"] - want["q01"]
    assert (want["q01"] - q01).max() / spread[np.argmax(want["q01"] - q01)] > 0.005  # openpi's own miss, not ours


def test_parse_mask_and_feature_slices():
    assert parse_mask("6,-1,6,-1") == bool_mask((6, -1, 6, -1)) == (True,) * 6 + (False,) + (True,) * 6 + (False,)
    assert parse_mask("2,0,2") == (True,) * 4  # as make_bool_mask(2, 0, 2)
    assert FeatureSlice.parse("state[0:8]") == FeatureSlice("state", 0, 8)
    assert FeatureSlice.parse("action") == FeatureSlice("action")
    with pytest.raises(ValueError, match="expected state"):
        FeatureSlice.parse("observation.state")
    with pytest.raises(ValueError, match="make_bool_mask"):
        parse_mask("6,x")
    with pytest.raises(ValueError, match="needs the state"):
        NormStatsConfig(delta_mask=(True,), keys={"actions": FeatureSlice("action")})


# ---------------------------------------------------------------- from a version, through the CLI


def _store_episodes(store_path, config: NormStatsConfig) -> list[EpisodeRows]:
    from pipeline.export.norm_stats import read_episode_rows
    from pipeline.export.output import episode_order
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import load_catalog, resolve
    from schemas import table_to_metas

    store = EpisodeStore(str(store_path))
    _, manifest = resolve(store, "latest")
    metas = sorted(table_to_metas(load_catalog(store, manifest)), key=episode_order)
    return [read_episode_rows(store, meta, config) for meta in metas]


def test_cli_writes_the_file_openpi_loads(sample_store, tmp_path):
    from jobs.cli import app

    store, _ = sample_store
    assets = tmp_path / "assets"
    result = CliRunner().invoke(app, ["stats", "export", "latest", str(assets), "--store", str(store), "--horizon",
                                      "10", "--delta-mask", "6,-1,6,-1", "--batch-size", "32", "--asset-id", "trossen"])
    assert result.exit_code == 0, result.output
    loaded = openpi_load(assets / "trossen")
    assert sorted(loaded) == ["actions", "state"]
    config = NormStatsConfig(action_horizon=10, delta_mask=bool_mask((6, -1, 6, -1)), batch_size=32)
    episodes = _store_episodes(store, config)
    rows = openpi_samples(episodes, 10, config.delta_mask, 32)
    for key in ("state", "actions"):
        want = exact(rows[key])
        assert isinstance(loaded[key].q01, np.ndarray) and loaded[key].q01.dtype == np.float64
        assert np.array_equal(loaded[key].q01, want["q01"]) and np.array_equal(loaded[key].q99, want["q99"])
        np.testing.assert_allclose(loaded[key].mean, want["mean"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(loaded[key].std, want["std"], rtol=1e-10, atol=1e-12)
    # Pi-0.5 / Pi-0-FAST: q01 -> -1, q99 -> +1; Pi-0: the mean -> 0
    actions = loaded["actions"]
    np.testing.assert_allclose(openpi_normalize_quantile(actions.q01, actions), -1.0, atol=1e-4)
    np.testing.assert_allclose(openpi_normalize_quantile(actions.q99, actions), 1.0, atol=1e-4)
    np.testing.assert_allclose(openpi_normalize(actions.mean, actions), 0.0, atol=1e-9)
    inside = np.abs(openpi_normalize_quantile(rows["actions"], actions)) <= 1.0
    assert 0.97 < inside.mean() < 0.99  # the 1 % tails on each side land outside [-1, 1]
    # the file is openpi's own serialization of the same values
    again = _NormStatsDict(norm_stats=loaded).model_dump_json(indent=2)
    assert json.loads(again) == json.loads((assets / "trossen" / "norm_stats.json").read_text())


def test_cli_dataset_errors_are_one_line_exit_2(sample_store, tmp_path):
    from jobs.cli import app

    store, _ = sample_store
    runner = CliRunner()
    missing = runner.invoke(app, ["stats", "export", "latest", str(tmp_path / "a"), "--store", str(store),
                                  "--embodiment", "franka"])
    assert missing.exit_code == 2 and "no episode of embodiment 'franka'" in missing.output
    bad_mask = runner.invoke(app, ["stats", "export", "latest", str(tmp_path / "a"), "--store", str(store),
                                   "--delta-mask", "40"])
    assert bad_mask.exit_code == 2 and "delta mask covers 40 dims" in bad_mask.output
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("norm_stats.json"))
