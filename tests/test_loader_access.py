"""Map-style access, samplers and the epoch remainder policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.loaders import EpisodeAwareSampler, ViewSource, VLAConfig, VLADataset, VLAMapDataset
from pipeline.loaders.order import BatchPlan
from pipeline.samples import read_frame_code

OFFSETS = {"cameras": [-1, 0], "state": [-1, 0], "action": list(range(-1, 15))}


def test_map_style_sample_equals_the_iterable_loaders_sample(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    batch = next(iter(VLADataset(source, VLAConfig(batch_size=16, seed=3, delta_steps=OFFSETS))))
    mapped = VLAMapDataset(source, VLAConfig(batch_size=None, delta_steps=OFFSETS))
    assert len(mapped) == source.manifest.num_steps
    for b, key in enumerate(batch["key"]):
        episode, step = key.rsplit(":", 1)
        sample = mapped[mapped.index_of(episode, int(step))]
        assert sample["key"] == key
        for name, value in batch.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(sample[name], value[b]), name
            else:
                assert sample[name] == value[b], name


def test_every_index_is_its_episode_step_in_order(sample_view, sample_source):
    store, view_id, _ = sample_view
    mapped = VLAMapDataset(ViewSource(str(store), view_id), VLAConfig(batch_size=None, cameras=("cam_high",)))
    bounds = mapped.episode_bounds()
    assert bounds["from"][0] == 0 and bounds["to"][-1] == len(mapped)
    assert (bounds["from"][1:] == bounds["to"][:-1]).all()
    for number, episode in enumerate(mapped.episode_ids):
        first, last = int(bounds["from"][number]), int(bounds["to"][number]) - 1
        for index, step in ((first, 0), (last, last - first), ((first + last) // 2, (last - first) // 2)):
            sample = mapped[index]
            assert sample["key"] == f"{episode}:{step}" and mapped.index_of(episode, step) == index
            assert read_frame_code(sample["images"][0].permute(1, 2, 0).numpy())[1] == step
    assert mapped[-1]["key"] == mapped[len(mapped) - 1]["key"]
    with pytest.raises(IndexError):
        mapped[len(mapped)]


def test_episode_aware_sampler_follows_lerobots_rule():
    sampler = EpisodeAwareSampler([0, 10, 25], [10, 25, 30], episode_indices_to_use=[0, 2], drop_n_first_frames=1,
                                  drop_n_last_frames=2)
    assert list(sampler) == [*range(1, 8), *range(26, 28)] and len(sampler) == 9
    shuffled = EpisodeAwareSampler([0, 10], [10, 25], shuffle=True, seed=5)
    assert sorted(shuffled) == list(range(25)) and list(shuffled) == list(shuffled)
    shuffled.set_epoch(1)
    assert sorted(shuffled) == list(range(25))


def test_a_dataloader_with_the_sampler_and_batched_fetch(sample_view):
    store, view_id, _ = sample_view
    mapped = VLAMapDataset(ViewSource(str(store), view_id), VLAConfig(batch_size=None, action_horizon=8))
    sampler = EpisodeAwareSampler.for_dataset(mapped, drop_n_last_frames=7, shuffle=True, seed=1)
    loader = torch.utils.data.DataLoader(mapped, batch_size=8, sampler=sampler, num_workers=2)
    want = list(sampler)[:16]
    got = [key for _, batch in zip(range(2), loader, strict=False) for key in batch["key"]]
    assert got == [mapped[i]["key"] for i in want]
    assert not any(bool(mapped[i]["action_is_pad"].any()) for i in want)  # 7 last frames dropped: no pad


@pytest.mark.parametrize("world", [1, 3])
def test_drop_last_false_ends_the_epoch_with_a_partial_batch(sample_view, world):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    total = source.manifest.num_steps
    per_rank = []
    for rank in range(world):
        dataset = VLADataset(source, VLAConfig(batch_size=16, seed=2, drop_last=False, cameras=(), rank=rank,
                                               world_size=world))
        per_rank.append([batch["key"] for batch in dataset])
    assert len({len(batches) for batches in per_rank}) == 1  # DDP ranks step together
    keys = [k for batches in per_rank for batch in batches for k in batch]
    assert set(keys) == {f"{e}:{s}" for e, s in _all_steps(source)}  # every step, none dropped
    if world == 1:
        assert len(keys) == total and len(per_rank[0][-1]) == total % 16
    dropping = VLADataset(source, VLAConfig(batch_size=16, seed=2, cameras=()))
    assert len(dropping) == total // 16


def test_batch_plan_remainder_rules():
    plan = BatchPlan(total_units=50, batch_size=16, drop_last=False)
    assert plan.batches_per_rank == 4 and plan.positions(3).tolist() == [48, 49]
    two = BatchPlan(total_units=50, batch_size=16, rank=1, world_size=2, drop_last=False)
    assert two.batches_per_rank == 2 and two.positions(1).tolist() == [48, 49]
    three = BatchPlan(total_units=50, batch_size=16, rank=2, world_size=3, drop_last=False)
    assert three.batches_per_rank == 2
    assert three.positions(1).tolist() == (np.arange(80, 96) % 50).tolist()  # wrapped filler, full size
    assert BatchPlan(total_units=50, batch_size=16).batches_per_rank == 3


def _all_steps(source):
    table = source.table
    for row in range(len(table)):
        for offset in range(int(table["num_steps"][row])):
            yield table["episode_id"][row], int(table["step_start"][row]) + offset
