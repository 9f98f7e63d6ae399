"""Loader controls over a version holding real, transferred and IDM-labelled episodes: weights and filters."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from jobs.augment import run_augment
from jobs.ingest import run_ingest
from jobs.shard import run_shard
from jobs.versions import run_append
from pipeline.loaders import SampleFilter, ViewSource, VLAConfig, VLADataset, by_kind
from pipeline.shards import ViewConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas
from tests.synthetic_helpers import dreamgen_dataset, small_dataset

VIEW = ViewConfig(height=32, width=32, segment_steps=16, max_action_horizon=8, target_shard_bytes=200_000)
CONFIG = VLAConfig(action_horizon=8, cameras=(), batch_size=500, seed=3)


@pytest.fixture(scope="module")
def mixed_view(tmp_path_factory, ray_session):
    """4 teleop + 4 transferred (reference generator) + 3 DreamGen (inverse dynamics) episodes, sharded."""
    root = tmp_path_factory.mktemp("mixture")
    store = str(root / "store")
    run_ingest(str(small_dataset(root / "aloha-day1")), store)
    assert run_augment(store).stored == 4
    assert run_append(str(dreamgen_dataset(root / "dreams")), store, format="dreamgen").stored == 3
    run_shard(store, VIEW)
    metas = table_to_metas(load_catalog(EpisodeStore(store), resolve(EpisodeStore(store), "latest")[1]))
    return ViewSource.open(store, "latest", VIEW), metas


def test_real_to_synthetic_weights_hold_over_10000_samples(mixed_view):
    source, metas = mixed_view
    assert Counter((m.kind, m.action_source) for m in metas) == {
        ("teleop", "recorded"): 4, ("synthetic", "recorded"): 4, ("synthetic", "inverse_dynamics"): 3}
    mixture = by_kind(lambda f: VLADataset(source, replace(CONFIG, filter=f)),
                      {("teleop", "sim"): 0.7, "synthetic": 0.3}, samples_per_epoch=10_000, batch_size=500, seed=1)
    kinds, sources, seen = Counter(), Counter(), 0
    for batch in mixture:
        kinds.update(batch["kind"])
        sources.update(zip(batch["kind"], batch["action_source"], strict=True))
        seen += len(batch["kind"])
    assert seen == 10_000
    share = kinds["synthetic"] / seen
    assert abs(share - 0.3) <= 0.03, share
    assert set(kinds) == {"teleop", "synthetic"}
    assert sources[("synthetic", "inverse_dynamics")] > 0 and sources[("synthetic", "recorded")] > 0


def test_excluding_inverse_dynamics_actions_yields_none(mixed_view):
    source, metas = mixed_view
    keep = SampleFilter(exclude_action_sources=frozenset({"inverse_dynamics"}))
    dataset = VLADataset(source, replace(CONFIG, filter=keep, batch_size=40, shuffle=False))
    assert dataset.total_units() == sum(m.num_steps for m in metas if m.action_source != "inverse_dynamics") == 240
    sources = Counter(s for batch in dataset for s in batch["action_source"])
    assert sources == {"recorded": 240}
    mixture = by_kind(lambda f: VLADataset(source, replace(CONFIG, filter=f)), {"teleop": 0.5, "synthetic": 0.5},
                      base=keep, samples_per_epoch=2_000, batch_size=500)
    drawn = Counter((k, s) for batch in mixture for k, s in zip(batch["kind"], batch["action_source"], strict=True))
    assert set(drawn) == {("teleop", "recorded"), ("synthetic", "recorded")}
    only_dreams = VLADataset(source, replace(CONFIG, filter=SampleFilter(kinds=frozenset({"synthetic"}),
                                                                         exclude_action_sources=frozenset({"recorded"}))))
    assert only_dreams.total_units() == sum(m.num_steps for m in metas if m.action_source == "inverse_dynamics")
