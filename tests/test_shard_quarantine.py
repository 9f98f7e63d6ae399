"""The shard job quarantines an episode whose stored video cannot be decoded and still writes the view.

A stored video corrupted after ingest (truncated to half its bytes) must not fail the job: the report
names the episode, the file and the reason, the view holds every other episode with exactly the
values of a clean view, and once the video is restored a re-run puts the episode back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.shard import run_shard
from pipeline.loaders import ViewSource, VLAConfig, VLADataset
from pipeline.shards import ViewConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory, ray_session) -> Path:
    from jobs.ingest import run_ingest
    from pipeline.samples import SampleSpec, write_sample_dataset

    root = tmp_path_factory.mktemp("quarantine")
    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=3, min_steps=30, max_steps=40, height=96,
                                                              width=128, episodes_per_file=1, seed=7))
    run_ingest(str(source), str(root / "store"))
    return root / "store"


def _view(codec: str) -> ViewConfig:
    # mp4 at the source's size: segments are the source's packets, cut (re-encoded segments are not
    # reproducible bit for bit from one run to the next, so they could not be compared exactly)
    height, width = (96, 128) if codec == "mp4" else (48, 64)
    return ViewConfig(height=height, width=width, frame_codec=codec, segment_steps=16, max_action_horizon=4,
                      decoder="pyav")


def _served(store: Path, view_id: str) -> dict[str, dict]:
    config = VLAConfig(batch_size=8, shuffle=False, drop_last=False, action_horizon=4)
    out = {}
    for batch in VLADataset(ViewSource(str(store), view_id), config):
        for b, key in enumerate(batch["key"]):
            out[key] = {k: v[b].numpy() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return out


@pytest.mark.parametrize("codec", ["jpg", "mp4"])
def test_undecodable_stored_video_is_quarantined_and_the_view_still_written(clean_store, tmp_path, codec):
    clean_report, clean_view = run_shard(str(clean_store), _view(codec))
    assert clean_report.quarantined == []
    clean = _served(clean_store, clean_view)

    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    s = EpisodeStore(str(store))
    metas = sorted(table_to_metas(load_catalog(s, resolve(s, "latest")[1])), key=lambda m: m.episode_id)
    bad = metas[1]
    cam = bad.camera("cam_high")
    video = store / cam.video_path
    original = video.read_bytes()
    for written in ("views", "shards"):  # the copy's views and shards came from the clean store: start afresh
        shutil.rmtree(store / written)
    video.write_bytes(original[: len(original) // 2])

    report, view_id = run_shard(str(store), _view(codec))
    assert view_id == clean_view
    assert [(q["episode_id"], q["file"], q["field"]) for q in report.quarantined] == [
        (bad.episode_id, cam.video_path, "cameras.cam_high")]
    assert report.quarantined[0]["reason"].startswith("cannot decode the stored episode: ")
    assert report.quarantined[0]["source_key"] == bad.source_key
    assert (report.episodes_in, report.stored) == (3, 2)
    assert report.extra["episodes quarantined"] == 1
    served = _served(store, view_id)
    assert {k.split(":")[0] for k in served} == {m.episode_id for m in metas} - {bad.episode_id}
    assert set(served) == {k for k in clean if not k.startswith(f"{bad.episode_id}:")}
    for key, sample in served.items():
        for name, value in sample.items():
            assert np.array_equal(value, clean[key][name]) and value.dtype == clean[key][name].dtype, (key, name)

    video.write_bytes(original)  # repaired: a re-run plans the episode again
    again, _ = run_shard(str(store), _view(codec))
    assert again.quarantined == [] and again.stored == 3
    restored = _served(store, view_id)
    assert restored.keys() == clean.keys()
    for key, sample in restored.items():
        for name, value in sample.items():
            assert np.array_equal(value, clean[key][name]), (key, name)
