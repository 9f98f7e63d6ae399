"""The Ray Data path yields exactly the torch loader's batches for the same seed."""

from __future__ import annotations

import torch

from pipeline.loaders import ViewSource, VLAConfig, VLADataset, WAMConfig, WAMDataset, make_loader
from pipeline.loaders.raydata import collate_numpy, to_ray_dataset


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
