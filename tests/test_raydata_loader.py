"""The Ray Data path yields exactly the torch loader's batches for the same seed."""

from __future__ import annotations

import time
import warnings

import pytest
import ray
import torch

from pipeline.loaders import ViewSource, VLAConfig, VLADataset, WAMConfig, WAMDataset, make_loader
from pipeline.loaders.raydata import RayResourceError, collate_numpy, to_ray_dataset


def test_iter_torch_batches_equals_the_torch_loader(sample_view, ray_session):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    dataset = VLADataset(source, VLAConfig(batch_size=16, seed=13, action_horizon=20))
    torch_batches = list(make_loader(dataset, num_workers=2))
    ray_batches = list(to_ray_dataset(dataset).iter_torch_batches(batch_size=16, collate_fn=collate_numpy))
    assert len(ray_batches) == len(torch_batches) == len(dataset)
    for got, want in zip(ray_batches, torch_batches, strict=True):
        assert got["key"] == want["key"] and got["instruction"] == want["instruction"]
        for name in ("images", "state", "actions", "action_is_pad", "image_mask", "step"):
            assert torch.equal(got[name], want[name]), name


def test_wam_clips_through_ray_data(sample_view, ray_session):
    store, view_id, _ = sample_view
    dataset = WAMDataset(ViewSource(str(store), view_id), WAMConfig(n_context=2, n_future=2, frame_stride=3,
                                                                    batch_size=4, seed=1, anchor_stride=10))
    want = next(iter(dataset))
    got = next(iter(to_ray_dataset(dataset).iter_torch_batches(batch_size=4, collate_fn=collate_numpy)))
    assert got["key"] == want["key"] and torch.equal(got["frames"], want["frames"])
    assert torch.equal(got["actions"], want["actions"])


def test_a_pool_the_cluster_cannot_hold_fails_at_once_with_a_message(sample_view, ray_session):
    store, view_id, _ = sample_view
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=16, seed=1, action_horizon=4))
    started = time.monotonic()
    with pytest.raises(RayResourceError, match=r"needs 3 CPUs .* the cluster has 2"):
        to_ray_dataset(dataset, concurrency=3)
    assert time.monotonic() - started < 5

    @ray.remote(num_cpus=2)
    class Holder:  # stands for Ray Train workers holding the CPUs
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    ray.get(holder.ready.remote())
    try:
        started = time.monotonic()
        with pytest.raises(RayResourceError, match="only 0 of the cluster's 2 are free"):
            to_ray_dataset(dataset, concurrency=1, wait_s=1.0)
        assert time.monotonic() - started < 5
    finally:
        ray.kill(holder)


def test_iterating_uses_no_deprecated_ray_api(sample_view, ray_session):
    store, view_id, _ = sample_view
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=8, seed=1, action_horizon=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = next(iter(to_ray_dataset(dataset, concurrency=1).iter_torch_batches(batch_size=8,
                                                                                     collate_fn=collate_numpy)))
    assert batch["key"] == next(iter(dataset))["key"]
    assert not [w for w in caught if "deprecated" in str(w.message).lower()], [str(w.message) for w in caught]


def test_ray_train_example_runs_on_two_cpus(sample_view, ray_session, tmp_path):
    from examples.train_ray import run

    store, view_id, _ = sample_view
    metrics = run(str(store), view_id, steps=3, storage_path=str(tmp_path))
    assert len(metrics["losses"]) == 3 and len(metrics["keys"]) == 12
    want = [k for _, b in zip(range(3), VLADataset(ViewSource(str(store), view_id),
                                                    VLAConfig(batch_size=4, seed=2, action_horizon=8,
                                                              cameras=("cam_high",))), strict=False)
            for k in b["key"]]
    assert metrics["keys"] == want
