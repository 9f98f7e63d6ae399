"""Reused shared buffers deliver exactly the batches of the plain loader; raw frames land byte-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.loaders import ResumableLoader, ViewSource, VLAConfig, VLADataset, WAMConfig, WAMDataset, make_loader
from pipeline.shards import ViewConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas
from tests.helpers import decode_all_frames_scaled


def test_buffered_loader_yields_the_plain_loaders_batches(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    config = VLAConfig(batch_size=8, seed=17, action_horizon=16)
    reference = VLADataset(source, config)
    count = 0
    for j, batch in enumerate(make_loader(VLADataset(source, config), num_workers=2, prefetch_factor=2,
                                          reuse_buffers=True)):
        want = reference.batch_at(reference.plan().positions(j))
        assert batch["key"] == want["key"]
        for name in ("images", "image_mask", "state", "actions", "action_is_pad", "step"):
            assert isinstance(batch[name], torch.Tensor) and torch.equal(batch[name], want[name]), name
        count += 1
    assert count == len(reference)  # many more batches than ring slots: slots were reused safely


def test_resumable_loader_with_reused_buffers_and_wam(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    config = WAMConfig(n_context=2, n_future=2, frame_stride=3, batch_size=4, seed=2, anchor_stride=9)
    reference = WAMDataset(source, config)
    loader = ResumableLoader(WAMDataset(source, config), num_workers=2, reuse_buffers=True)
    for j, batch in enumerate(loader):
        want = reference.batch_at(reference.plan().positions(j))
        assert batch["key"] == want["key"] and torch.equal(batch["frames"], want["frames"])


@pytest.fixture(scope="module")
def raw_view(sample_store):
    from jobs.shard import run_shard

    store, _ = sample_store
    view = ViewConfig(height=48, width=64, frame_codec="npy", segment_steps=40, max_action_horizon=16,
                      target_shard_bytes=8_000_000, decoder="pyav")
    _, view_id = run_shard(str(store), view)
    return store, view_id, view


def test_raw_frames_are_the_resized_source_frames_exactly(raw_view, sample_source):
    store, view_id, view = raw_view
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=8, seed=4, action_horizon=16))
    batch = next(iter(make_loader(dataset, num_workers=1, reuse_buffers=True)))
    s = EpisodeStore(str(store))
    _, manifest = resolve(s, "latest")
    metas = {m.episode_id: m for m in table_to_metas(load_catalog(s, manifest))}
    decoded = {}
    for b, key in enumerate(batch["key"]):
        episode_id, step = key.split(":")
        meta = metas[episode_id]
        for c, name in enumerate(dataset.cameras):
            cam = meta.camera(name)
            path = s.objects.abspath(cam.video_path)
            if path not in decoded:
                decoded[path] = decode_all_frames_scaled(path, view.height, view.width)
            expected = decoded[path][cam.frame_start + int(step)]
            assert np.array_equal(batch["images"][b, c].permute(1, 2, 0).numpy(), expected)
