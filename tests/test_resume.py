"""Exact mid-epoch resume (also with another worker count or world size), mixtures, and equal rank shares."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pipeline.loaders import (
    MixtureDataset,
    ResumableLoader,
    ResumeError,
    SampleFilter,
    ViewSource,
    VLAConfig,
    VLADataset,
    WAMConfig,
    WAMDataset,
)

BATCH = 8


def _vla(source, **kwargs):
    return VLADataset(source, VLAConfig(batch_size=BATCH, seed=21, action_horizon=16, **kwargs))


def _keys(loader, limit=None) -> list[str]:
    out = []
    for number, batch in enumerate(loader):
        out += batch["key"]
        if limit is not None and number + 1 == limit:
            break
    return out


@pytest.fixture(scope="module")
def source(sample_view):
    store, view_id, _ = sample_view
    return ViewSource(str(store), view_id)


@pytest.mark.parametrize(("before", "after"), [(2, 1), (0, 2), (1, 0)])
def test_vla_resume_yields_exactly_the_rest_of_the_epoch(source, before, after):
    full = _keys(ResumableLoader(_vla(source), num_workers=0))
    first = ResumableLoader(_vla(source), num_workers=before)
    head = _keys(first, limit=13)
    state = first.state_dict()
    resumed = ResumableLoader(_vla(source), num_workers=after)
    resumed.load_state_dict(state)
    tail = _keys(resumed)
    assert head + tail == full
    assert len(full) == (source.manifest.num_steps // BATCH) * BATCH


def test_resume_across_an_epoch_boundary_continues_with_the_next_epoch(source):
    loader = ResumableLoader(_vla(source), num_workers=1)
    epoch0 = _keys(loader)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["global_batch"] == 0
    other = ResumableLoader(_vla(source), num_workers=2)
    other.load_state_dict(state)
    epoch1 = _keys(other)
    assert len(epoch1) == len(epoch0) and epoch1 != epoch0  # reshuffled
    dropped = source.manifest.num_steps % BATCH  # each epoch drops a different remainder
    assert len(set(epoch0) - set(epoch1)) <= dropped


def test_resume_with_a_different_world_size_covers_the_rest_exactly_once(source):
    ranks_before = [ResumableLoader(_vla(source, rank=r, world_size=2), num_workers=0) for r in range(2)]
    heads = [_keys(loader, limit=5) for loader in ranks_before]
    state = ranks_before[0].state_dict()
    assert state == ranks_before[1].state_dict() | {"fingerprint": state["fingerprint"]}
    tails = []
    for rank in range(3):
        loader = ResumableLoader(_vla(source, rank=rank, world_size=3), num_workers=1)
        loader.load_state_dict(state)
        tails.append(_keys(loader))
    assert len({len(t) for t in tails}) == 1  # equal batch counts after re-dealing
    seen = [k for keys in heads + tails for k in keys]
    assert len(seen) == len(set(seen))  # nothing twice
    total_batches = source.manifest.num_steps // BATCH
    assert len(seen) == (10 + 3 * ((total_batches - 10) // 3)) * BATCH


def test_wam_resume(source):
    config = WAMConfig(n_context=2, n_future=2, frame_stride=3, batch_size=4, seed=5, anchor_stride=3)
    full = _keys(ResumableLoader(WAMDataset(source, config), num_workers=0))
    first = ResumableLoader(WAMDataset(source, config), num_workers=2)
    head = _keys(first, limit=7)
    resumed = ResumableLoader(WAMDataset(source, config), num_workers=1)
    resumed.load_state_dict(first.state_dict())
    assert head + _keys(resumed) == full


def _mixture(source, **kwargs):
    episodes = sorted(set(source.table["episode_id"]))
    half_a = SampleFilter(exclude_episodes=frozenset(episodes[::2]))
    half_b = SampleFilter(exclude_episodes=frozenset(episodes[1::2]))
    parts = [(_vla(source, filter=half_a), 0.7), (_vla(source, filter=half_b), 0.3)]
    return MixtureDataset(parts, samples_per_epoch=600, batch_size=BATCH, seed=3, **kwargs)


def test_two_way_mixture_resumes_exactly_and_keeps_its_weights(source):
    full_loader = ResumableLoader(_mixture(source), num_workers=0)
    full = _keys(full_loader) + _keys(full_loader)  # two mixture epochs
    first = ResumableLoader(_mixture(source), num_workers=2)
    head = _keys(first, limit=40)
    resumed = ResumableLoader(_mixture(source), num_workers=1)
    resumed.load_state_dict(first.state_dict())
    tail = _keys(resumed) + _keys(resumed)
    assert head + tail == full
    episodes = sorted(set(source.table["episode_id"]))
    in_a = {e for e in episodes[1::2]}
    share_a = np.mean([k.split(":")[0] in in_a for k in full])
    assert abs(share_a - 0.7) < 0.04


def test_resume_refuses_a_state_from_another_loader(source):
    loader = ResumableLoader(_vla(source), num_workers=0)
    state = loader.state_dict()
    other = ResumableLoader(VLADataset(source, VLAConfig(batch_size=BATCH, seed=22, action_horizon=16)), num_workers=0)
    with pytest.raises(ResumeError, match="different"):
        other.load_state_dict(state)


def test_three_ranks_get_equal_batches_and_each_sample_at_most_once(source):
    shards = len(source.manifest.shards)
    assert shards % 3 != 0, "the fixture must have a shard count not divisible by 3"
    per_rank = [_keys(ResumableLoader(_vla(source, rank=r, world_size=3), num_workers=0)) for r in range(3)]
    assert len({len(k) for k in per_rank}) == 1
    counts = Counter(k for keys in per_rank for k in keys)
    total = source.manifest.num_steps
    global_batches = total // BATCH
    assert sum(counts.values()) == 3 * (global_batches // 3) * BATCH  # the documented drop rule
    assert max(counts.values()) == 1
