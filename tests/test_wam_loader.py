"""WAM clips: frames at exactly the right steps, actions by hand under both conventions, no episode crossing."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from pipeline.loaders import ViewSource, WAMConfig, WAMDataset
from pipeline.loaders.wam import frame_stride
from pipeline.samples import read_frame_code
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import make_episode_id, safe_name, table_to_metas
from tests.helpers import decode_all_frames, lerobot_source_episodes, psnr, resize_like_view


@pytest.fixture(scope="module")
def episodes(sample_source):
    source = lerobot_source_episodes(sample_source)
    return {make_episode_id(safe_name(sample_source.name), str(i)): (i, e) for i, e in source.items()}


def _clips(dataset) -> list[dict]:
    out = []
    for batch in dataset:
        for b in range(len(batch["key"])):
            out.append({k: (v[b] if isinstance(v, (list, torch.Tensor)) else v) for k, v in batch.items()})
    return out


@pytest.mark.parametrize("convention", ["transitions", "per_frame_k"])
def test_clips_frames_and_actions_are_exact(sample_view, episodes, convention):
    store, view_id, _ = sample_view
    config = WAMConfig(n_context=2, n_future=6, target_fps=10, action_convention=convention, anchor_stride=5,
                       batch_size=4, seed=9)
    clips = _clips(WAMDataset(ViewSource(str(store), view_id), config))
    assert clips
    for clip in clips:
        episode_id, t0 = clip["key"].split(":")
        t0 = int(t0)
        index, source = episodes[episode_id]
        n = len(source["state"])
        assert clip["frame_stride"].item() == 3  # 30 fps -> 10 fps: every third frame
        expected_steps = t0 + 3 * np.arange(8)
        assert clip["steps"].tolist() == expected_steps.tolist()
        assert expected_steps[-1] < n  # never past the episode's end
        for camera in range(2):
            for i, step in enumerate(expected_steps):
                frame = clip["frames"][camera, i].permute(1, 2, 0).numpy()
                assert read_frame_code(frame) == (index, int(step))  # the exact source frame
        assert torch.equal(clip["state"], torch.from_numpy(source["state"][expected_steps]))
        if convention == "transitions":
            want = source["action"][expected_steps[:-1]]
        else:
            want = np.stack([source["action"][s: s + 3] for s in expected_steps[:-1]])
        assert torch.equal(clip["actions"], torch.from_numpy(want))
        assert clip["action_mask"].all()


def test_every_anchor_of_every_episode_appears_once_and_none_crosses(sample_view, episodes):
    store, view_id, _ = sample_view
    config = WAMConfig(n_context=4, n_future=12, frame_stride=2, batch_size=1, seed=1, anchor_stride=7)
    dataset = WAMDataset(ViewSource(str(store), view_id), config)
    keys = [k for batch in dataset for k in batch["key"]]
    expected = {f"{eid}:{t0}" for eid, (_, e) in episodes.items() for t0 in range(0, len(e["state"]) - 30, 7)}
    assert len(keys) == len(set(keys)) and set(keys) == expected


def test_clip_frames_match_independently_decoded_video(sample_view, sample_source, episodes):
    store, view_id, view = sample_view
    source = ViewSource(str(store), view_id)
    dataset = WAMDataset(source, WAMConfig(n_context=1, n_future=3, frame_stride=4, batch_size=2, seed=3))
    batch = next(iter(dataset))
    s = EpisodeStore(str(store))
    _, manifest = resolve(s, "latest")
    metas = {m.episode_id: m for m in table_to_metas(load_catalog(s, manifest))}
    for b, key in enumerate(batch["key"]):
        episode_id, _ = key.split(":")
        index, _ = episodes[episode_id]
        for c, name in enumerate(dataset.cameras):
            video = sample_source / f"videos/observation.images.{name}/chunk-000/file-{index // 4:03d}.mp4"
            frames = decode_all_frames(video)
            for i, step in enumerate(batch["steps"][b].tolist()):
                expected = resize_like_view(frames[metas[episode_id].camera(name).frame_start + step], view.height,
                                            view.width)
                got = batch["frames"][b, c, i].permute(1, 2, 0).numpy()
                assert psnr(got, expected) >= 40.0


def test_stride_from_fps_must_divide():
    assert frame_stride(WAMConfig(target_fps=10), Fraction(30)) == 3
    assert frame_stride(WAMConfig(target_fps=15), Fraction(30)) == 2
    with pytest.raises(ValueError, match="does not divide"):
        frame_stride(WAMConfig(target_fps=7), Fraction(30))
