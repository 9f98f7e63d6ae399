"""Trainer presets (LeRobot, openpi, GR00T, key maps) and normalization both ways.

Where the trainer's code runs here (LeRobot) its dataset is compared directly; LeRobot 0.4 needs
torch < 2.11 and a torchvision built for it, neither of which installs beside this project's torch, so
that test skips here and each of its rules is checked on its own against the source Parquet.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from pipeline.loaders import Normalizer, ViewSource, VLAConfig, VLADataset
from pipeline.loaders.normalize import export_openpi_norm_stats
from pipeline.loaders.presets import (
    GR00T_LANGUAGE_KEY,
    KeyMap,
    gr00t_cameras,
    gr00t_dataset,
    lerobot_dataset,
    openpi_dataset,
)
from pipeline.samples import read_frame_code
from schemas import make_episode_id, safe_name
from tests.conftest import LEROBOT_V20
from tests.helpers import lerobot_source_episodes

LEROBOT_DELTAS = {"observation.images.cam_high": [-1 / 30, 0.0], "observation.images.cam_left_wrist": [-1 / 30, 0.0],
                  "observation.state": [-1 / 30, 0.0], "action": [k / 30 for k in range(-1, 15)]}
ALOHA_MODALITY = {"state": {"left_arm": {"start": 0, "end": 7}, "right_arm": {"start": 7, "end": 14}},
                  "action": {"left_arm": {"start": 0, "end": 7}, "right_arm": {"start": 7, "end": 14}},
                  "video": {"high": {"original_key": "observation.images.cam_high"},
                            "left_wrist": {"original_key": "observation.images.cam_left_wrist"}}}


@pytest.fixture(scope="module")
def lerobot_rows(sample_source):
    """LeRobot's global frame index over the source Parquet: per episode its rows and [from, to)."""
    episodes = lerobot_source_episodes(sample_source)
    out, start = {}, 0
    for index in sorted(episodes):
        length = len(episodes[index]["state"])
        out[index] = episodes[index] | {"from": start, "to": start + length}
        start += length
    return out


def lerobot_query(idx: int, deltas_s: list[float], fps: int, ep_from: int, ep_to: int):
    """LeRobot 0.4: delta_indices = round(d * fps); clamp to the episode; pad outside it."""
    deltas = [round(d * fps) for d in deltas_s]
    return ([max(ep_from, min(ep_to - 1, idx + d)) for d in deltas],
            [(idx + d < ep_from) or (idx + d >= ep_to) for d in deltas])


def test_lerobot_preset_follows_lerobots_get_item_rules(sample_view, sample_source, lerobot_rows):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    dataset = lerobot_dataset(source, LEROBOT_DELTAS, float_images=True, config=VLAConfig(batch_size=8, seed=1))
    by_episode = {make_episode_id(safe_name(sample_source.name), str(index)): index for index in lerobot_rows}
    checked = 0
    for batch in itertools.islice(iter(dataset), 4):
        assert set(batch) == {"observation.images.cam_high", "observation.images.cam_left_wrist",
                              "observation.images.cam_high_is_pad", "observation.images.cam_left_wrist_is_pad",
                              "observation.state", "observation.state_is_pad", "action", "action_is_pad", "task",
                              "timestamp", "frame_index", "episode_id"}
        for b, episode_id in enumerate(batch["episode_id"]):
            index = by_episode[episode_id]
            entry = lerobot_rows[index]
            t = int(batch["frame_index"][b])
            idx = entry["from"] + t
            for key, column in (("observation.state", "state"), ("action", "action")):
                query, pad = lerobot_query(idx, LEROBOT_DELTAS[key], 30, entry["from"], entry["to"])
                rows = [q - entry["from"] for q in query]
                assert torch.equal(batch[key][b], torch.from_numpy(entry[column][rows].astype(np.float32))), key
                assert batch[f"{key}_is_pad"][b].tolist() == pad
            timestamps = entry["table"].column("timestamp").to_numpy()
            assert batch["timestamp"][b].item() == pytest.approx(float(timestamps[t]), abs=1e-6)
            deltas = LEROBOT_DELTAS["observation.images.cam_high"]
            query, pad = lerobot_query(idx, deltas, 30, entry["from"], entry["to"])
            for camera in ("cam_high", "cam_left_wrist"):
                image = batch[f"observation.images.{camera}"][b]
                assert image.dtype == torch.float32 and image.min() >= 0.0 and image.max() <= 1.0
                assert batch[f"observation.images.{camera}_is_pad"][b].tolist() == pad
                for i, q in enumerate(query):
                    pixels = (image[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
                    assert read_frame_code(pixels) == (index, q - entry["from"])
            checked += 1
    assert checked == 32


def test_lerobot_float_images_are_the_uint8_frames_over_255(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    config = VLAConfig(batch_size=4, seed=2)
    raw = next(iter(VLADataset(source, config)))
    as_float = next(iter(lerobot_dataset(source, None, float_images=True, config=config)))
    assert torch.equal(as_float["observation.images.cam_high"], raw["images"][:, 0].to(torch.float32) / 255.0)
    assert as_float["action"].shape == (4, 14)  # no delta: one action, as LeRobot gives it
    assert as_float["task"] == raw["instruction"] and "action_is_pad" not in as_float


def test_lerobot_deltas_must_share_one_list_across_cameras(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    with pytest.raises(ValueError, match="same delta_timestamps"):
        lerobot_dataset(source, {"observation.images.cam_high": [0.0], "observation.images.cam_left_wrist": [-0.1, 0]})
    with pytest.raises(ValueError, match=r"only observation\.images"):
        lerobot_dataset(source, {"observation.velocity": [0.0]})


# ------------------------------------------------------------------ openpi


def test_openpi_refuses_a_stretched_view(sample_view):
    store, view_id, _ = sample_view
    with pytest.raises(ValueError, match="resized with padding"):
        openpi_dataset(ViewSource(str(store), view_id))


@pytest.mark.parametrize("quantiles", [True, False])
def test_openpi_batch_normalization_padding_masks_and_prompt(letterbox_view, quantiles):
    store, view_id, _ = letterbox_view
    source = ViewSource(str(store), view_id)
    config = VLAConfig(batch_size=8, seed=3)
    got = next(iter(openpi_dataset(source, use_quantiles=quantiles, config=config)))
    raw = next(iter(VLADataset(source, VLAConfig(batch_size=8, seed=3, action_horizon=50, cameras=("cam_high",)))))
    stats = source.stats.summary("aloha", "state"), source.stats.summary("aloha", "action")
    for name, values, summary in (("state", raw["state"], stats[0]), ("actions", raw["actions"], stats[1])):
        x = values.numpy().astype(np.float64)
        s = {k: np.asarray(v) for k, v in summary.items() if k != "count"}
        want = ((x - s["q01"]) / (s["q99"] - s["q01"] + 1e-6) * 2.0 - 1.0 if quantiles
                else (x - s["mean"]) / (s["std"] + 1e-6))
        assert got[name].shape[-1] == 32 and (got[name][..., 14:] == 0).all()  # PadStatesAndActions
        np.testing.assert_allclose(got[name][..., :14].numpy(), want, rtol=1e-5, atol=1e-5)
    assert got["actions"].shape == (8, 50, 32) and got["prompt"] == raw["instruction"]
    assert set(got["image"]) == set(got["image_mask"]) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    assert got["image"]["base_0_rgb"].shape == (8, 224, 224, 3)
    assert torch.equal(got["image"]["base_0_rgb"], raw["images"][:, 0].permute(0, 2, 3, 1))
    assert got["image_mask"]["base_0_rgb"].all()
    for missing in ("left_wrist_0_rgb", "right_wrist_0_rgb"):  # not in this view: black, masked out
        assert not got["image_mask"][missing].any() and (got["image"][missing] == 0).all()


# ------------------------------------------------------------------ GR00T


def test_gr00t_modality_groups_chunks_and_embodiment_tag(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    got = next(iter(gr00t_dataset(source, ALOHA_MODALITY, "aloha_bimanual", config=VLAConfig(batch_size=4, seed=5))))
    raw = next(iter(VLADataset(source, VLAConfig(batch_size=4, seed=5, action_horizon=16,
                                                 delta_steps={"state": [0], "cameras": [0]}))))
    assert got["embodiment_tag"] == ["aloha_bimanual"] * 4 and got[GR00T_LANGUAGE_KEY] == raw["instruction"]
    for group, (start, end) in (("left_arm", (0, 7)), ("right_arm", (7, 14))):
        assert got[f"state.{group}"].shape == (4, 1, end - start)
        assert torch.equal(got[f"state.{group}"], raw["state"][..., start:end])
        assert got[f"action.{group}"].shape == (4, 16, end - start)
        assert torch.equal(got[f"action.{group}"], raw["actions"][..., start:end])
    for k, name in enumerate(("high", "left_wrist")):
        assert got[f"video.{name}"].shape == (4, 1, 224, 224, 3) and got[f"video.{name}"].dtype == torch.uint8
        assert torch.equal(got[f"video.{name}"], raw["images"][:, k].permute(0, 1, 3, 4, 2))


def test_gr00t_reads_a_real_modality_json():
    modality = json.loads((LEROBOT_V20 / "meta/modality.json").read_text())
    assert gr00t_cameras(modality) == {"ego_view": "ego_view"}
    assert [(g, r["start"], r["end"]) for g, r in modality["state"].items()][:2] == [("left_arm", 0, 7),
                                                                                     ("left_hand", 7, 13)]


def test_key_map_renames_and_names_what_is_missing():
    batch = {"state": torch.zeros(2, 3), "actions": torch.ones(2, 4, 3), "key": ["a", "b"]}
    renamed = KeyMap({"obs": "state", "act": "actions"})(batch)
    assert set(renamed) == {"obs", "act"} and renamed["act"] is batch["actions"]
    assert set(KeyMap({"obs": "state"}, keep_rest=True)(batch)) == {"obs", "actions", "key"}
    with pytest.raises(KeyError, match="images"):
        KeyMap({"pixels": "images"})(batch)


# ------------------------------------------------------------------ normalization both ways


@pytest.mark.parametrize("mode", ["mean_std", "quantile", "min_max", "openpi_quantile", "openpi_mean_std"])
def test_unnormalize_inverts_and_exported_stats_need_no_store(sample_view, tmp_path, mode):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    raw = next(iter(VLADataset(source, VLAConfig(batch_size=8, seed=7, cameras=()))))
    normalized = next(iter(VLADataset(source, VLAConfig(batch_size=8, seed=7, cameras=(), normalization=mode))))
    live = Normalizer(source.stats, mode)
    back = live.unnormalize("aloha", "action", normalized["actions"].numpy())
    np.testing.assert_allclose(back, raw["actions"].numpy(), rtol=1e-5, atol=1e-5)
    path = live.export(tmp_path / "norm_stats.json")
    deployed = Normalizer.load(path)  # a fresh process would need only this file
    assert deployed.mode == mode
    assert np.array_equal(deployed.unnormalize("aloha", "action", normalized["actions"].numpy()), back)
    assert np.array_equal(deployed("aloha", "state", raw["state"].numpy()), normalized["state"].numpy())


def test_openpi_norm_stats_export_has_its_layout(sample_view, tmp_path):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    body = json.loads(export_openpi_norm_stats(source.stats, "aloha", tmp_path / "norm_stats.json").read_text())
    assert set(body["norm_stats"]) == {"state", "actions"}
    for ours, theirs in (("state", "state"), ("action", "actions")):
        summary = source.stats.summary("aloha", ours)
        assert body["norm_stats"][theirs] == {k: summary[k] for k in ("mean", "std", "q01", "q99")}
    with pytest.raises(ValueError, match="not exported"):
        Normalizer.load(tmp_path / "norm_stats.json")
