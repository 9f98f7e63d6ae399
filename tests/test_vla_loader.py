"""VLA loader: exact numbers, exact frame alignment, exact action windows, exact splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.loaders import ViewSource, VLAConfig, VLADataset, make_loader
from pipeline.samples import read_frame_code
from pipeline.shards import ViewConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import make_episode_id, safe_name, table_to_metas
from tests.conftest import LEROBOT_V20, LEROBOT_V21, LEROBOT_V30
from tests.consumer_readers import nearest_frames, video_frame_times
from tests.helpers import decode_all_frames, lerobot_source_episodes, psnr, resize_like_view

H = 50


def _all_batches(dataset) -> list[dict]:
    return list(iter(dataset))


def _by_key(batches: list[dict]) -> dict[str, dict]:
    out = {}
    for batch in batches:
        for b, key in enumerate(batch["key"]):
            out[key] = {name: (value[b] if isinstance(value, (list, torch.Tensor)) else value)
                        for name, value in batch.items()}
    return out


@pytest.fixture(scope="module")
def sample_episodes(sample_source):
    return lerobot_source_episodes(sample_source)


def test_generated_dataset_values_alignment_and_action_windows(sample_view, sample_source, sample_episodes):
    store, view_id, _ = sample_view
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=16, action_horizon=H, seed=3))
    batches = _all_batches(dataset)
    seen = _by_key(batches)
    total = sum(len(e["state"]) for e in sample_episodes.values())
    assert len(seen) == (total // 16) * 16  # the drop rule: only the last partial batch is dropped
    ids = {make_episode_id(safe_name(sample_source.name), str(i)): i for i in sample_episodes}
    checked_images = 0
    for key, sample in seen.items():
        episode_id, step = key.split(":")
        step = int(step)
        source = sample_episodes[ids[episode_id]]
        n = len(source["state"])
        assert torch.equal(sample["state"], torch.from_numpy(source["state"][step].astype(np.float32)))
        want = source["action"][step: step + H]
        pad = H - len(want)
        if pad:
            want = np.concatenate([want, np.repeat(want[-1:], pad, axis=0)])
        assert torch.equal(sample["actions"], torch.from_numpy(want.astype(np.float32)))
        assert sample["action_is_pad"].tolist() == [step + h >= n for h in range(H)]
        assert sample["step"].item() == step and sample["image_mask"].all()
        for camera in range(2):  # every image shows exactly the frame of its step
            image = sample["images"][camera].permute(1, 2, 0).numpy()
            assert read_frame_code(image) == (ids[episode_id], step)
            checked_images += 1
    assert checked_images == 2 * len(seen)


def test_images_match_independently_decoded_source_frames(sample_view, sample_source, sample_episodes):
    store, view_id, view = sample_view
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=8, action_horizon=H, seed=1))
    seen = _by_key(_all_batches(dataset)[:6])
    ids = {make_episode_id(safe_name(sample_source.name), str(i)): i for i in sample_episodes}
    s = EpisodeStore(str(store))
    _, manifest = resolve(s, "latest")
    metas = {m.episode_id: m for m in table_to_metas(load_catalog(s, manifest))}
    decoded: dict = {}
    for key, sample in seen.items():
        episode_id, step = key.split(":")
        meta = metas[episode_id]
        for c, name in enumerate(dataset.cameras):
            cam = meta.camera(name)
            file_index = ids[episode_id] // 4  # the sample writer puts 4 episodes in each v3.0 file
            source_file = sample_source / f"videos/observation.images.{name}/chunk-000/file-{file_index:03d}.mp4"
            if source_file not in decoded:
                decoded[source_file] = decode_all_frames(source_file)
            frames = decoded[source_file]
            expected = resize_like_view(frames[cam.frame_start + int(step)], view.height, view.width)
            got = sample["images"][c].permute(1, 2, 0).numpy()
            assert psnr(got, expected) >= 40.0, (key, name, psnr(got, expected))


@pytest.fixture(scope="module")
def real_views(tmp_path_factory, ray_session):
    from jobs.ingest import run_ingest
    from jobs.shard import run_shard

    views = {}
    for name, path, size in (("v2.0", LEROBOT_V20, (256, 256)), ("v2.1", LEROBOT_V21, (240, 320)),
                             ("v3.0", LEROBOT_V30, (480, 640))):
        store = tmp_path_factory.mktemp(f"real-{name}")
        run_ingest(str(path), str(store))
        view = ViewConfig(height=size[0], width=size[1], segment_steps=48, max_action_horizon=H,
                          target_shard_bytes=30_000_000)
        _, view_id = run_shard(str(store), view)
        views[name] = (store, view_id, view, path)
    return views


@pytest.mark.parametrize("name", ["v2.0", "v2.1", "v3.0"])
def test_real_lerobot_loader_equals_source_cast_to_float32(real_views, name):
    store, view_id, view, path = real_views[name]
    source = lerobot_source_episodes(path)
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=4, action_horizon=H, shuffle=False))
    seen = _by_key(_all_batches(dataset))
    assert len(seen) == (sum(len(e["state"]) for e in source.values()) // 4) * 4
    by_id = {make_episode_id(safe_name(path.name), str(index)): entry for index, entry in source.items()}
    frames_checked = 0
    for key, sample in seen.items():
        episode_id, step = key.split(":")
        step = int(step)
        entry = by_id[episode_id]
        assert torch.equal(sample["state"], torch.from_numpy(entry["state"][step].astype(np.float32)))
        n = len(entry["action"])
        want = entry["action"][step: step + H].astype(np.float32)
        assert torch.equal(sample["actions"][: len(want)], torch.from_numpy(want))
        assert sample["action_is_pad"].sum().item() == max(0, step + H - n)
        if step % 37 == 0:  # PSNR spot checks against plain PyAV decoding of the source file
            frames_checked += _check_frame(path, name, entry, sample, step, view)
    assert frames_checked > 0


def _check_frame(path, name, entry, sample, step, view) -> int:
    checked = 0
    info = json.loads((path / "meta/info.json").read_text())
    cameras = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    index = int(entry["table"].column("episode_index")[0].as_py())
    for camera_key in cameras:
        short = camera_key.rsplit(".", 1)[-1]
        if name == "v3.0":
            video, offset = path / f"videos/{camera_key}/chunk-000/file-000.mp4", 45 * index
        else:
            video, offset = path / f"videos/chunk-000/{camera_key}/episode_{index:06d}.mp4", 0
        if not video.exists():
            continue
        frames = decode_all_frames(video)
        cams = ["ego_view"] if name == "v2.0" else (["cam_high"] if name == "v2.1" else ["top", "wrist"])
        # the source's pairing: the frame nearest from_timestamp + timestamp (GR00T's demo: step i -> frame i+1)
        query = offset / info["fps"] + entry["table"].column("timestamp")[step].as_py()
        frame = int(nearest_frames(np.array([query]), video_frame_times(video))[0])
        if frame < 0:
            assert not sample["image_mask"][cams.index(short)]
            continue
        expected = resize_like_view(frames[frame], view.height, view.width)
        got = sample["images"][cams.index(short)].permute(1, 2, 0).numpy()
        assert psnr(got, expected) >= 40.0, (name, camera_key, step, psnr(got, expected))
        checked += 1
    return checked


def test_normalization_modes_use_version_stats(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    stats = json.loads((store / source.manifest.stats.path).read_text())["groups"]["aloha"]
    raw = next(iter(VLADataset(source, VLAConfig(batch_size=8, normalization="none", seed=5))))
    for mode in ("mean_std", "quantile", "min_max"):
        got = next(iter(VLADataset(source, VLAConfig(batch_size=8, normalization=mode, seed=5))))
        assert got["key"] == raw["key"]
        for feature, field in (("state", "state"), ("action", "actions")):
            s = {k: np.asarray(v) for k, v in stats[feature].items()
                 if k in ("mean", "std", "q01", "q99", "min", "max")}
            if mode == "mean_std":
                center, scale = s["mean"], s["std"]
            else:
                low, high = (s["q01"], s["q99"]) if mode == "quantile" else (s["min"], s["max"])
                center, scale = (low + high) / 2, (high - low) / 2
            want = (raw[field].numpy() - center.astype(np.float32)) / scale.astype(np.float32)
            np.testing.assert_allclose(got[field].numpy(), want, rtol=1e-5, atol=1e-5)
    quantile = next(iter(VLADataset(source, VLAConfig(batch_size=64, normalization="quantile", seed=5))))
    inside = ((quantile["state"] >= -1) & (quantile["state"] <= 1)).float().mean().item()
    assert inside > 0.9  # q01/q99 -> [-1, 1]: most values land inside


def test_ranks_get_equal_batches_and_disjoint_samples(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    assert len(source.manifest.shards) >= 3
    per_rank = []
    for rank in range(3):
        dataset = VLADataset(source, VLAConfig(batch_size=8, rank=rank, world_size=3, seed=11))
        per_rank.append([k for b in _all_batches(dataset) for k in b["key"]])
    assert len({len(keys) for keys in per_rank}) == 1
    total = source.manifest.num_steps
    assert len(per_rank[0]) == total // (3 * 8) * 8
    flat = [k for keys in per_rank for k in keys]
    assert len(flat) == len(set(flat))


def test_sequence_is_the_same_with_0_1_or_2_workers(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    sequences = []
    for workers in (0, 1, 2):
        dataset = VLADataset(source, VLAConfig(batch_size=16, seed=4))
        sequences.append([k for b in make_loader(dataset, num_workers=workers) for k in b["key"]])
    assert sequences[0] == sequences[1] == sequences[2]
    other_epoch = VLADataset(source, VLAConfig(batch_size=16, seed=4), epoch=1)
    assert [k for b in other_epoch for k in b["key"]] != sequences[0]


def test_per_sample_mode_yields_unbatched_samples(sample_view):
    store, view_id, view = sample_view
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=None, seed=2))
    sample = next(iter(dataset))
    assert sample["images"].shape == (2, 3, view.height, view.width) and sample["state"].shape == (14,)
    assert sample["actions"].shape == (H, 14) and isinstance(sample["instruction"], str)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=0)
    batch = next(iter(loader))
    assert batch["images"].shape == (5, 2, 3, view.height, view.width)


def test_action_horizon_beyond_the_view_lookahead_reads_the_next_segments(sample_view, sample_source,
                                                                           sample_episodes):
    store, view_id, _ = sample_view
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(action_horizon=H + 50, batch_size=16, seed=1,
                                                                    cameras=()))
    ids = {make_episode_id(safe_name(sample_source.name), str(i)): i for i in sample_episodes}
    for key, sample in _by_key(_all_batches(dataset)[:4]).items():
        episode_id, step = key.split(":")
        actions = sample_episodes[ids[episode_id]]["action"]
        rows = np.minimum(np.arange(int(step), int(step) + H + 50), len(actions) - 1)
        assert torch.equal(sample["actions"], torch.from_numpy(actions[rows].astype(np.float32)))
