"""Reused shared buffers deliver exactly the batches of the plain loader; raw frames land byte-exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.loaders import ResumableLoader, ViewSource, VLAConfig, VLADataset, WAMConfig, WAMDataset, make_loader
from pipeline.loaders.transport import worker_context
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


def test_workers_start_from_a_fork_server_only_while_ray_runs_in_this_process(sample_view, ray_session):
    """Ray in the process (as in every Ray Train worker): forkserver workers, same batches; without Ray:
    the platform's fork, same batches again (checked in a fresh interpreter that never starts Ray)."""
    store, view_id, _ = sample_view
    assert ray_session.is_initialized()
    assert worker_context(2).get_start_method() == "forkserver" and worker_context(0) is None
    config = VLAConfig(batch_size=8, seed=5, action_horizon=16)
    reference = VLADataset(ViewSource(str(store), view_id), config)
    want = [k for j in range(len(reference)) for k in reference.batch_at(reference.plan().positions(j))["key"]]
    got = [k for b in make_loader(VLADataset(ViewSource(str(store), view_id), config), num_workers=2) for k in b["key"]]
    assert got == want
    script = (
        "import json\n"
        "from pipeline.loaders import ViewSource, VLAConfig, VLADataset, make_loader\n"
        "from pipeline.loaders.transport import worker_context\n"
        "assert worker_context(2) is None\n"
        f"dataset = VLADataset(ViewSource({str(store)!r}, {view_id!r}), VLAConfig(batch_size=8, seed=5, "
        "action_horizon=16))\n"
        "print(json.dumps([k for b in make_loader(dataset, num_workers=2) for k in b['key']]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == want
