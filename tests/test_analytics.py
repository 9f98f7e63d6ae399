"""Dataset-wide analytics (pipeline.analytics, dask over the store's Parquet) against a pyarrow reference
that reads every live episode's steps object directly."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.analytics import QueryError, catalog_frame, episodes_where, parse_where, step_moments
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A small generated dataset stored and committed in this process (no Ray needed)."""
    from connectors import get_connector
    from pipeline.samples import SampleSpec, write_sample_dataset
    from pipeline.store.derive import append_episodes

    root = tmp_path_factory.mktemp("analytics")
    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=8, min_steps=30, max_steps=70,
                                                              height=48, width=64, seed=5))
    connector = get_connector("lerobot")
    store = EpisodeStore(str(root / "store"))
    metas = [store.write_episode(connector.read(ref)) for ref in connector.discover(str(source)).refs]
    append_episodes(store, "latest", metas, {"job": "test"})
    return root / "store"


@pytest.fixture(scope="module")
def reference(small_store):
    """Per episode (embodiment, action, action_valid) read with pyarrow alone."""
    store = small_store
    s = EpisodeStore(str(store))
    _, manifest = resolve(s, "latest")
    out = {}
    for row in load_catalog(s, manifest).select(["episode_id", "embodiment", "steps_path"]).to_pylist():
        table = pq.read_table(store / row["steps_path"])
        action = np.stack(table.column("action").to_numpy(zero_copy_only=False)).astype(np.float64)
        out[row["episode_id"]] = (row["embodiment"], action, table.column("action_valid").to_numpy().astype(bool))
    return str(store), out


def test_step_moments_equal_the_pyarrow_reference(reference):
    store, episodes = reference
    got = step_moments(store, "action")
    for embodiment in {e for e, _, _ in episodes.values()}:
        values = np.concatenate([a[v] for e, a, v in episodes.values() if e == embodiment])
        rows = got[got["embodiment"] == embodiment].sort_values("dim")
        assert rows["dim"].tolist() == list(range(values.shape[1]))
        assert rows["count"].tolist() == [len(values)] * values.shape[1]
        assert np.array_equal(rows["min"].to_numpy(), values.min(0))
        assert np.array_equal(rows["max"].to_numpy(), values.max(0))
        assert np.allclose(rows["mean"].to_numpy(), values.mean(0), rtol=1e-12, atol=1e-12)
        assert np.allclose(rows["std"].to_numpy(), values.std(0), rtol=1e-9, atol=1e-9)


def test_where_over_a_step_column_equals_the_pyarrow_reference(reference):
    store, episodes = reference
    maxima = {e: a[:, 0].max() for e, (_, a, _) in episodes.items()}
    threshold = float(np.median(list(maxima.values())))
    got = episodes_where(store, f"max(action[0]) < {threshold!r}")
    want = sorted(e for e, m in maxima.items() if m < threshold)
    assert 0 < len(want) < len(episodes)
    assert got["episode_id"].tolist() == want
    assert np.array_equal(got["max(action[0])"].to_numpy(), np.array([maxima[e] for e in want]))
    assert got["num_steps"].tolist() == [len(episodes[e][1]) for e in want]


def test_terms_joined_by_and_all_hold(reference):
    store, episodes = reference
    means = {e: a[:, 1].mean() for e, (_, a, _) in episodes.items()}
    firsts = {e: a[0, 1] for e, (_, a, _) in episodes.items()}
    cut = float(np.median(list(means.values())))
    got = episodes_where(store, f"mean(action[1]) >= {cut!r} and first(action[1]) > -1e9")
    assert got["episode_id"].tolist() == sorted(e for e in episodes if means[e] >= cut and firsts[e] > -1e9)


def test_catalog_frame_group_by_counts_episodes_and_steps(reference):
    store, episodes = reference
    frame = catalog_frame(store).groupby("embodiment").num_steps.agg(["count", "sum"]).compute()
    for embodiment in {e for e, _, _ in episodes.values()}:
        mine = [len(a) for e, a, _ in episodes.values() if e == embodiment]
        assert frame.loc[embodiment].tolist() == [len(mine), sum(mine)]


def test_bad_where_terms_are_refused_by_name(reference):
    store, _ = reference
    with pytest.raises(QueryError, match="cannot read where-term 'max action'"):
        parse_where("max action")
    with pytest.raises(QueryError, match="aggregate 'median'"):
        parse_where("median(action[0]) < 1")
    with pytest.raises(QueryError, match="no step column 'gripper'"):
        episodes_where(store, "max(gripper) < 1")
    with pytest.raises(QueryError, match=r"action\[99\] outside"):
        episodes_where(store, "max(action[99]) < 1")
    with pytest.raises(QueryError, match="is a vector"):
        episodes_where(store, "max(action) < 1")


def test_cli_where_prints_the_episodes_and_refuses_bad_terms_with_exit_2(reference):
    from typer.testing import CliRunner

    from jobs.cli import app

    store, episodes = reference
    runner = CliRunner()
    result = runner.invoke(app, ["analytics", "where", "--store", store, "--where", "max(action[0]) < 1e12"])
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()[1:]) == sorted(f"{e},{len(a)},{float(a[:, 0].max())!r}"
                                                            for e, (_, a, _) in episodes.items())
    bad = runner.invoke(app, ["analytics", "where", "--store", store, "--where", "max(nothing) < 1"])
    assert bad.exit_code == 2 and "no step column 'nothing'" in bad.output


def test_dask_on_ray_gives_the_answers_of_dasks_own_scheduler(reference, ray_session):
    """Ray tests its Dask-on-Ray scheduler only with old dask releases; with the versions installed
    here the same graphs run on the jobs' Ray and give the same frames, value for value."""
    from ray.util.dask import ray_dask_get

    store, _ = reference

    def ordered(frame, by):
        return frame.sort_values(by).reset_index(drop=True)

    for where in ("max(action[0]) < 0.5", "mean(action[1]) > -1 and min(action[0]) < 0"):
        threaded, on_ray = episodes_where(store, where), episodes_where(store, where, scheduler=ray_dask_get)
        assert len(threaded) > 0
        assert ordered(threaded, "episode_id").equals(ordered(on_ray, "episode_id")), where
    threaded, on_ray = step_moments(store, "action"), step_moments(store, "action", scheduler=ray_dask_get)
    assert ordered(threaded, ["embodiment", "dim"]).equals(ordered(on_ray, ["embodiment", "dim"]))
