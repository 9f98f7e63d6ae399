"""Shards are standard: plain webdataset and `tar` read them, keys are WebDataset-safe, no pickle anywhere."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import tarfile

import numpy as np
import pytest
import webdataset as wds

from pipeline.loaders import ViewSource, VLAConfig, VLADataset
from pipeline.shards import ShardIndex
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas


@pytest.fixture(scope="module")
def view(sample_view):
    store, view_id, config = sample_view
    manifest = json.loads((store / f"views/{view_id}/view.json").read_text())
    tars = [str(store / s["tar_path"]) for s in manifest["shards"]]
    indexes = [ShardIndex.from_json(json.loads((store / s["index_path"]).read_text())) for s in manifest["shards"]]
    return store, view_id, config, manifest, tars, indexes


def test_plain_webdataset_reads_every_sample_with_exact_values(view):
    store, _, config, manifest, tars, indexes = view
    dataset = wds.WebDataset(tars, shardshuffle=False, empty_check=False).decode("rgb8")
    samples = list(dataset)
    assert len(samples) == manifest["totals"]["samples"] == sum(len(i.samples) for i in indexes)
    s = EpisodeStore(str(store))
    _, version = resolve(s, manifest["version_id"])
    metas = {m.episode_id: m for m in table_to_metas(load_catalog(s, version))}
    steps_cache = {}
    for sample in samples:
        meta = sample["meta.json"]
        episode = metas[meta["episode_id"]]
        if episode.episode_id not in steps_cache:
            steps_cache[episode.episode_id] = s.read_steps(episode)
        steps = steps_cache[episode.episode_id]
        start, n = meta["step_start"], meta["num_steps"]
        assert sample["__key__"] == meta["key"]
        assert np.array_equal(sample["state.npy"], steps.state[start: start + n])
        assert np.array_equal(sample["action.npy"], steps.action[start: start + meta["num_action_steps"]])
        assert np.array_equal(sample["timestamp.npy"], steps.timestamp_ns[start: start + n])
        for camera in meta["cameras"]:
            images = [sample[f"{camera}.{i:04d}.jpg"] for i in range(n)]
            assert all(img.shape == (config.height, config.width, 3) and img.dtype == np.uint8 for img in images)
    assert sum(s["meta.json"]["num_steps"] for s in samples) == manifest["totals"]["steps"]


def test_tar_lists_members_and_keys_have_no_dot_after_the_first(view):
    _, _, _, _, tars, indexes = view
    for tar_path, index in zip(tars, indexes, strict=True):
        listing = subprocess.run(["tar", "tf", tar_path], capture_output=True, text=True, check=True).stdout.split()
        expected = [f"{s.key}.{m}" for s in index.samples for m in s.members]
        assert listing == expected
        for name in listing:
            key, _ = name.split(".", 1)
            assert "." not in key and "/" not in key and key in {s.key for s in index.samples}


def test_index_offsets_address_exact_bytes(view):
    _, _, _, _, tars, indexes = view
    for tar_path, index in zip(tars, indexes, strict=True):
        blob = open(tar_path, "rb").read()
        assert len(blob) == index.tar_bytes
        for sample in index.samples[:5]:
            with tarfile.open(fileobj=io.BytesIO(blob[sample.offset: sample.offset + sample.size])) as part:
                names = part.getnames()
                assert names == [f"{sample.key}.{m}" for m in sample.members]
                for member in part.getmembers():
                    offset, size = sample.members[member.name.split(".", 1)[1]]
                    assert part.extractfile(member).read() == blob[offset: offset + size]


def test_no_pickle_is_written_or_read(view, monkeypatch):
    store, view_id, _, _, tars, _ = view
    for tar_path in tars:
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                data = tar.extractfile(member).read()
                assert not data.startswith(b"\x80"), member.name  # pickle protocol 2+ opcode
                assert not member.name.endswith((".pyd", ".pickle", ".pkl", ".pth", ".pt"))
                if member.name.endswith(".npy"):
                    array = np.load(io.BytesIO(data), allow_pickle=False)  # raises on object arrays
                    assert array.dtype != object

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while reading shards")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    batch = next(iter(VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=8))))
    assert batch["images"].shape[0] == 8


def test_ray_data_read_webdataset_reads_the_shards(view, ray_session):
    import ray

    _, _, _, manifest, tars, _ = view
    rows = ray.data.read_webdataset(tars, decoder=None).take_all()
    assert len(rows) == manifest["totals"]["samples"]


def test_shards_are_reproducible_byte_for_byte(sample_view, tmp_path):
    """Rebuild the first shard from a copy of the store without its shards: the same bytes come out."""
    import shutil

    from pipeline.shards import plan_shards, write_shard
    from pipeline.shards.plan import with_keys
    from pipeline.shards.writer import episode_fingerprint, view_cameras
    from pipeline.video import PyAVDecoder

    store, view_id, config = sample_view
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns("shards", "views"))
    s = EpisodeStore(str(copy))
    manifest = json.loads((store / f"views/{view_id}/view.json").read_text())
    _, version = resolve(s, manifest["version_id"])
    metas = {m.episode_id: m for m in table_to_metas(load_catalog(s, version))}
    plans = plan_shards([(m.episode_id, m.num_steps, len(view_cameras(m, config))) for m in metas.values()], config)
    plans = with_keys(plans, config, {e: episode_fingerprint(m, config) for e, m in metas.items()})
    summary, decoded = write_shard(s, config, plans[0], metas, PyAVDecoder())
    assert decoded > 0
    assert summary.tar_sha256 == manifest["shards"][0]["tar_sha256"]
    assert (copy / summary.tar_path).read_bytes() == (store / manifest["shards"][0]["tar_path"]).read_bytes()
