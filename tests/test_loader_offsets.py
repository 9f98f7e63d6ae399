"""Time offsets, horizons and padding: every case equals a hand computation from the steps Parquet.

The hand computation is LeRobot's rule (``_get_query_indices``): read ``clamp(t + d, 0, L - 1)``, pad
where ``t + d`` is outside ``[0, L)``. Steps are read with pyarrow from the store's steps objects,
frames are identified by the code the sample generator stamps into every frame.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.loaders import ViewSource, VLAConfig, VLADataset, make_loader
from pipeline.loaders.offsets import seconds_to_steps
from pipeline.samples import read_frame_code
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas

OFFSETS = {"cameras": [-1, 0], "state": [-1, 0], "action": list(range(-1, 15)), "timestamp": [-2, 0, 3],
           "task_index": [-1, 1]}


@pytest.fixture(scope="module")
def split_view(sample_store):
    """Small frames, 16-step segments, 3 steps of look-ahead, and shards so small that every episode is
    cut over several: windows cross segment and shard bounds all the time."""
    from jobs.shard import run_shard
    from pipeline.shards import ViewConfig

    store, _ = sample_store
    view = ViewConfig(cameras=("cam_high",), height=96, width=128, segment_steps=16, max_action_horizon=4,
                      target_shard_bytes=40_000, decoder="pyav")
    _, view_id = run_shard(str(store), view)
    return store, view_id, view


@pytest.fixture(scope="module")
def steps_by_episode(sample_store) -> dict[str, dict[str, np.ndarray]]:
    """Per episode id, the columns of its steps Parquet (plain pyarrow) and its generator index."""
    store, _ = sample_store
    s = EpisodeStore(str(store))
    _, manifest = resolve(s, "latest")
    out = {}
    for meta in table_to_metas(load_catalog(s, manifest)):
        table = pq.read_table(store / meta.steps_path)
        out[meta.episode_id] = {
            "state": np.stack(table.column("state").to_numpy(zero_copy_only=False)),
            "action": np.stack(table.column("action").to_numpy(zero_copy_only=False)),
            "action_valid": table.column("action_valid").to_numpy(zero_copy_only=False),
            "state_valid": table.column("state_valid").to_numpy(zero_copy_only=False),
            "timestamp": table.column("timestamp_ns").to_numpy(),
            "task_index": table.column("task_index").to_numpy(),
            "index": int(meta.source_key),
        }
    return out


def hand(t: int, offsets, length: int) -> tuple[np.ndarray, np.ndarray]:
    wanted = t + np.asarray(offsets)
    return np.array([max(0, min(length - 1, w)) for w in wanted]), np.array([w < 0 or w >= length for w in wanted])


def _samples(batches):
    for batch in batches:
        for b, key in enumerate(batch["key"]):
            yield key, {k: v[b] for k, v in batch.items() if isinstance(v, (list, torch.Tensor))}


def check_sample(sample: dict, steps: dict, offsets: dict, with_images: bool = True) -> int:
    t = int(sample["step"])
    length = len(steps["state"])
    q, pad = hand(t, offsets["state"], length)
    assert torch.equal(sample["state"], torch.from_numpy(steps["state"][q]))
    assert sample["state_is_pad"].tolist() == pad.tolist()
    assert sample["state_valid"].tolist() == steps["state_valid"][q].tolist()
    q, pad = hand(t, offsets["action"], length)
    assert torch.equal(sample["actions"], torch.from_numpy(steps["action"][q]))
    assert sample["action_is_pad"].tolist() == pad.tolist()
    assert sample["action_valid"].tolist() == (steps["action_valid"][q] & ~pad).tolist()
    if "timestamp" in offsets:
        q, pad = hand(t, offsets["timestamp"], length)
        assert sample["timestamp_ns"].tolist() == steps["timestamp"][q].tolist()
        assert sample["timestamp_is_pad"].tolist() == pad.tolist()
    if "task_index" in offsets:
        q, pad = hand(t, offsets["task_index"], length)
        assert sample["task_index"].tolist() == steps["task_index"][q].tolist()
        assert sample["task_index_is_pad"].tolist() == pad.tolist()
    if not with_images or "cameras" not in offsets:
        return 0
    q, pad = hand(t, offsets["cameras"], length)
    assert sample["images_is_pad"].tolist() == pad.tolist() and sample["image_mask"].all()
    for camera in range(sample["images"].shape[0]):
        for i, step in enumerate(q.tolist()):
            image = sample["images"][camera, i].permute(1, 2, 0).numpy()
            assert read_frame_code(image) == (steps["index"], step)
    return 1


def test_offsets_equal_the_hand_computation_at_both_ends_and_across_segments_and_shards(split_view,
                                                                                        steps_by_episode):
    store, view_id, view = split_view
    source = ViewSource(str(store), view_id)
    dataset = VLADataset(source, VLAConfig(batch_size=16, seed=9, delta_steps=OFFSETS))
    seen = dict(_samples(make_loader(dataset, num_workers=2)))
    assert len(seen) == source.manifest.num_steps // 16 * 16
    cases = {"pad_start": 0, "pad_end": 0, "cross_segment_back": 0, "cross_segment_ahead": 0, "cross_shard": 0}
    table = source.table
    shard_of = {(table["episode_id"][r], int(table["step_start"][r]) // view.segment_steps): int(table["shard"][r])
                for r in range(len(table))}
    for key, sample in seen.items():
        episode, t = key.rsplit(":", 1)
        t = int(t)
        steps = steps_by_episode[episode]
        check_sample(sample, steps, OFFSETS)
        length, segment = len(steps["state"]), t // view.segment_steps
        cases["pad_start"] += t == 0
        cases["pad_end"] += t + 14 >= length
        cases["cross_segment_back"] += t % view.segment_steps == 0 and t > 0
        ahead = (t + 14) // view.segment_steps
        cases["cross_segment_ahead"] += ahead != segment and t + 14 < length
        before = shard_of.get((episode, segment - 1)) if t % view.segment_steps == 0 else None
        cases["cross_shard"] += before is not None and before != shard_of[(episode, segment)]
    assert all(count > 0 for count in cases.values()), cases


@pytest.mark.parametrize("horizon", [100, 300])
def test_horizons_beyond_the_view_look_ahead_read_the_next_segments(split_view, steps_by_episode, horizon):
    store, view_id, view = split_view
    assert view.max_action_horizon < horizon  # the view stores 3 steps of look-ahead; ACT asks for 100
    config = VLAConfig(batch_size=32, seed=2, action_horizon=horizon, delta_steps={"state": [0]}, cameras=())
    checked = 0
    for key, sample in _samples(VLADataset(ViewSource(str(store), view_id), config)):
        check_sample(sample, steps_by_episode[key.rsplit(":", 1)[0]], {"state": [0], "action": list(range(horizon))})
        checked += 1
    assert checked == ViewSource(str(store), view_id).manifest.num_steps // 32 * 32


def test_offsets_in_seconds_convert_exactly_with_the_episode_rate(split_view):
    store, view_id, _ = split_view
    source = ViewSource(str(store), view_id)
    seconds = {"state": [-1 / 30, 0.0], "action": [k / 30 for k in range(-1, 15)]}
    steps = {"state": [-1, 0], "action": list(range(-1, 15))}
    by_seconds = next(iter(VLADataset(source, VLAConfig(batch_size=16, seed=4, delta_timestamps=seconds,
                                                        cameras=()))))
    by_steps = next(iter(VLADataset(source, VLAConfig(batch_size=16, seed=4, delta_steps=steps, cameras=()))))
    for name in ("state", "state_is_pad", "actions", "action_is_pad"):
        assert torch.equal(by_seconds[name], by_steps[name]), name
    with pytest.raises(ValueError, match="not a multiple of 1/30"):
        VLADataset(source, VLAConfig(batch_size=16, delta_timestamps={"action": [0.0, 0.01]}))


def test_seconds_to_steps_is_rational():
    ntsc = Fraction(30000, 1001)
    assert 1.001 * float(ntsc) != 30  # floating point would miss it
    assert seconds_to_steps(1.001, ntsc) == 30
    assert seconds_to_steps(-0.1, Fraction(10)) == -1 and seconds_to_steps(0.5, Fraction(50)) == 25
    with pytest.raises(ValueError):
        seconds_to_steps(0.015, Fraction(30))


def test_offset_keys_are_checked():
    with pytest.raises(ValueError, match="not one of"):
        VLAConfig(delta_steps={"observation.state": [0]})
    with pytest.raises(ValueError, match="both in steps and in seconds"):
        VLAConfig(delta_steps={"action": [0]}, delta_timestamps={"action": [0.0]})
