"""Video-segment views (``frame_codec="mp4"``), end to end through the shard job and the VLA loader.

At the source's own size the segments are the source's packets cut at keyframes: every loader frame
equals a plain PyAV decode of the stored source video bit for bit, and the view costs at most 2x the
source bytes. At another size they are H.264 GOPs of the resized frames: within the JPEG view's bound
of the frames a JPEG view is made from (>= 40 dB on average, every frame >= 38 dB)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from jobs.shard import run_shard
from pipeline.loaders import ViewSource
from pipeline.loaders.vla import VLAConfig, VLADataset
from pipeline.shards import ViewConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas
from tests.helpers import decode_all_frames, decode_all_frames_scaled, psnr


@pytest.fixture(scope="module")
def store(tmp_path_factory, ray_session):
    from jobs.ingest import run_ingest
    from pipeline.samples import SampleSpec, write_sample_dataset

    root = tmp_path_factory.mktemp("video-views")
    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=4, min_steps=40, max_steps=70,
                                                              episodes_per_file=2, seed=11))
    run_ingest(str(source), str(root / "store"))
    return root / "store"


def _metas(store) -> dict:
    s = EpisodeStore(str(store))
    _, manifest = resolve(s, "latest")
    return {m.episode_id: m for m in table_to_metas(load_catalog(s, manifest))}


def _all_steps(store, view_id: str):
    """Every (episode, step, camera, loader image) of the view, through the VLA dataset."""
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=16, seed=1, action_horizon=4))
    for batch in dataset:
        for i, key in enumerate(batch["key"]):
            episode_id, step = key.split(":")
            for c, camera in enumerate(dataset.cameras):
                if bool(batch["image_mask"][i, c]):
                    yield episode_id, int(step), camera, batch["images"][i, c].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def passthrough(store):
    view = ViewConfig(height=480, width=640, frame_codec="mp4", segment_steps=24, max_action_horizon=4,
                      decoder="pyav")
    report, view_id = run_shard(str(store), view)
    return view_id, report


def test_passthrough_frames_equal_a_plain_decode_of_the_source_bit_for_bit(store, passthrough):
    view_id, _ = passthrough
    metas, s, decoded, checked = _metas(store), EpisodeStore(str(store)), {}, 0
    steps = {}
    for episode_id, step, camera, image in _all_steps(store, view_id):
        meta = metas[episode_id]
        cam = meta.camera(camera)
        path = s.objects.abspath(cam.video_path)
        if path not in decoded:
            decoded[path] = decode_all_frames(path)
        if episode_id not in steps:
            steps[episode_id] = s.read_steps(meta)
        frame = int(steps[episode_id].frame_index[camera][step])
        assert np.array_equal(image, decoded[path][cam.frame_start + frame]), (episode_id, step, camera)
        checked += 1
    assert checked >= 100


def test_passthrough_view_costs_at_most_twice_the_source_bytes(store, passthrough):
    view_id, _ = passthrough
    manifest = json.loads((store / f"views/{view_id}/view.json").read_text())
    segment_bytes = 0
    for shard in manifest["shards"]:
        with tarfile.open(store / shard["tar_path"]) as tar:
            segment_bytes += sum(m.size for m in tar.getmembers() if m.name.endswith(".mp4"))
    metas = _metas(store)
    # the source bytes of the frames the episodes use (shared v3.0 files hold several episodes)
    source = 0
    for meta in metas.values():
        for cam in meta.cameras:
            source += cam.video_bytes * cam.num_frames / _file_frames(metas, cam.video_sha256)
    assert 0 < segment_bytes <= 2 * source, (segment_bytes, source)


def _file_frames(metas, sha: str) -> int:
    return sum(c.num_frames for m in metas.values() for c in m.cameras if c.video_sha256 == sha)


def test_segment_members_replace_per_frame_members(store, passthrough):
    view_id, _ = passthrough
    manifest = json.loads((store / f"views/{view_id}/view.json").read_text())
    with tarfile.open(store / manifest["shards"][0]["tar_path"]) as tar:
        names = tar.getnames()
        info = json.loads(tar.extractfile(names[0]).read())
    cameras = info["cameras"]
    assert {n.split(".", 1)[1] for n in names if n.startswith(info["key"] + ".")} == {
        "meta.json", "state.npy", "state_valid.npy", "action.npy", "action_valid.npy", "timestamp.npy",
        "task_index.npy", "frame_index.npy", *(f"{c}.mp4" for c in cameras)}
    assert set(info["segment_frames"]) == set(cameras)
    assert all(f == sorted(f) for f in info["segment_frames"].values())


def _keyframe_positions(data: bytes) -> list[int]:
    import io

    import av

    with av.open(io.BytesIO(data)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    return [i for i, p in enumerate(sorted(packets, key=lambda p: p.pts)) if p.is_keyframe]


@pytest.mark.parametrize("gop", [0, 6])
def test_encoded_segments_are_within_the_jpeg_bound_of_the_resized_source(store, gop):
    view = ViewConfig(height=96, width=128, frame_codec="mp4", segment_steps=24, max_action_horizon=4,
                      decoder="pyav", video_gop=gop)
    _, view_id = run_shard(str(store), view)
    source = ViewSource(str(store), view_id)
    for sample in range(4):
        info = json.loads(source.member(sample, "meta.json"))
        for camera, listed in info["segment_frames"].items():
            keys = _keyframe_positions(source.member(sample, f"{camera}.mp4"))
            assert keys == [0] if not gop else set(range(0, len(listed), gop)) <= set(keys), (sample, camera, keys)
    jpeg = ViewConfig(height=96, width=128, segment_steps=24, max_action_horizon=4, decoder="pyav")
    _, jpeg_id = run_shard(str(store), jpeg)
    metas, s, scaled, steps = _metas(store), EpisodeStore(str(store)), {}, {}
    ours = {}
    for episode_id, step, camera, image in _all_steps(store, view_id):
        meta = metas[episode_id]
        cam = meta.camera(camera)
        path = s.objects.abspath(cam.video_path)
        if path not in scaled:
            scaled[path] = decode_all_frames_scaled(path, 96, 128)
        if episode_id not in steps:
            steps[episode_id] = s.read_steps(meta)
        frame = int(steps[episode_id].frame_index[camera][step])
        ours[episode_id, step, camera] = psnr(image, scaled[path][cam.frame_start + frame])
    theirs = {(e, st, c): im for e, st, c, im in _all_steps(store, jpeg_id)}
    assert set(ours) == set(theirs) and len(ours) >= 100
    # the JPEG view's bound on average; no frame below 38 dB (8-bit YUV 4:4:4 round trip + GOP drift)
    assert np.mean(list(ours.values())) >= 40.0 and min(ours.values()) >= 38.0, (np.mean(list(ours.values())),
                                                                               min(ours.values()))


def test_segment_gop_is_part_of_the_identity_only_when_set():
    assert "video_gop" not in ViewConfig(frame_codec="mp4").identity()  # views made before it keep their ids
    assert ViewConfig(frame_codec="mp4", video_gop=8).view_id("v") != ViewConfig(frame_codec="mp4").view_id("v")
    with pytest.raises(ValueError, match="video_gop"):
        ViewConfig(video_gop=-1)
