"""Cosmos action-conditioned post-training: the export its dataset class reads, and the loader's
``cosmos_ee_delta`` actions, both on the real Bridge clip (VPP's ``video_dataset_instance``).

Facts encoded from cosmos-predict2 ``ActionConditionedDataset``: annotations at
``annotation/{train,val,test}/*.json``; ``videos[cam]["video_path"]`` joined to the dataset root;
``state`` rows = video frames, first 6 = xyz + roll/pitch/yaw; ``continuous_gripper_state`` one per
frame; actions between frames k-1, k: ``R_{k-1}^T dp``, ``euler(R_{k-1}^T R_k)``, gripper_k, times
``[20]*6 + [1]``, with ``R = Rz(yaw) Ry(pitch) Rx(roll)``; clips of 13 frames at interval 1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from jobs.cli import app
from jobs.ingest import run_ingest
from pipeline.export import CosmosExportConfig, ExportError, export_cosmos
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import resolve
from tests.conftest import REAL

BRIDGE = REAL / "video_with_json" / "vpp-rt1-bridge-clips" / "bridge"
SOURCE_JSON = BRIDGE / "annotation" / "val" / "10.json"


@pytest.fixture(scope="module")
def bridge_store(tmp_path_factory, ray_session):
    store = tmp_path_factory.mktemp("bridge-store")
    report = run_ingest(str(BRIDGE), str(store), format="video_folder")
    assert report.stored == 1 and not report.quarantined
    return store


def hand_actions(state: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """Cosmos' per-pair actions written with scipy (extrinsic xyz = Rz @ Ry @ Rx), independent of the code."""
    out = []
    for k in range(1, len(state)):
        prev = Rotation.from_euler("xyz", state[k - 1, 3:6])
        curr = Rotation.from_euler("xyz", state[k, 3:6])
        position = prev.inv().apply(state[k, :3] - state[k - 1, :3])
        rotation = (prev.inv() * curr).as_euler("xyz")
        out.append([*(20 * position), *(20 * rotation), gripper[k]])
    return np.asarray(out)


def decoded_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_export_json_equals_the_source_annotation(bridge_store, tmp_path):
    store = EpisodeStore(str(bridge_store))
    _, manifest = resolve(store, "latest")
    out = tmp_path / "cosmos"
    report = export_cosmos(store, manifest, str(out))
    assert (report.episodes, report.steps, report.videos) == (1, 24, {"reencode": 1})  # mpeg4 source -> H.264
    source = json.loads(SOURCE_JSON.read_text())
    exported = json.loads((out / "annotation" / "val" / "10.json").read_text())
    assert set(source) - set(exported) == {"latent_videos"}  # latents are not exported, so not referenced
    assert set(exported) - set(source) == set()
    for key in exported:
        assert exported[key] == source[key], key  # field by field, floats bit for bit
    # What ActionConditionedDataset does with it: root-relative video path, one frame per state row.
    (video,) = exported["videos"]
    path = out / video["video_path"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.average_rate, stream.width, stream.height) == ("h264", 3, 640, 480)
    frames = decoded_frames(path)
    assert len(frames) == len(exported["state"]) == len(exported["continuous_gripper_state"]) == 24
    for ours, theirs in zip(frames, decoded_frames(BRIDGE / source["videos"][0]["video_path"]), strict=True):
        mse = np.mean((ours.astype(np.float64) - theirs) ** 2)
        assert 10 * np.log10(255**2 / mse) > 35  # the same frames, re-encoded (crf 18)
    state = np.asarray(exported["state"])
    assert np.asarray(exported["state"]).shape == (24, 7) and state[:, :6].shape == (24, 6)


def test_export_cli_and_joint_space_refusal(bridge_store, sample_store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["versions", "export", "latest", str(out), "--store", str(bridge_store),
                                 "--layout", "cosmos-action", "--pose", ",".join(f"state_{i}" for i in range(6)),
                                 "--gripper", "continuous_gripper_state"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "annotation/val/10.json").read_text())["state"] == json.loads(SOURCE_JSON.read_text())[
        "state"]
    store, _ = sample_store  # the sample robot: joint-space state (joint_0 ..)
    refused = tmp_path / "refused"
    result = runner.invoke(app, ["versions", "export", "latest", str(refused), "--store", str(store),
                                 "--layout", "cosmos-action"])
    assert result.exit_code == 2 and not refused.exists()
    (line,) = result.output.strip().splitlines()
    assert "no end-effector pose" in line and "joint-space" in line
    s = EpisodeStore(str(store))
    with pytest.raises(ExportError) as error:
        export_cosmos(s, resolve(s, "latest")[1], str(refused))
    assert error.value.field == "state_names"
    with pytest.raises(ValueError):
        CosmosExportConfig(pose=("x", "y", "z"))


def test_hand_computation_agrees_with_cosmos_formula():
    from pipeline.cosmos_action import ee_delta_actions

    source = json.loads(SOURCE_JSON.read_text())
    state = np.asarray(source["state"])
    gripper = np.asarray(source["continuous_gripper_state"])
    np.testing.assert_allclose(ee_delta_actions(state[:, :6], gripper), hand_actions(state, gripper), rtol=0,
                               atol=1e-12)


def test_wam_cosmos_ee_delta_equals_hand_computation(bridge_store):
    import torch

    from jobs.shard import run_shard
    from pipeline.loaders import ViewSource, WAMConfig, WAMDataset
    from pipeline.shards import ViewConfig

    view = ViewConfig(height=48, width=64, segment_steps=10, max_action_horizon=4, decoder="pyav",
                      step_extras=("continuous_gripper_state",))
    assert ViewConfig(height=48, width=64).view_id("v") == ViewConfig(height=48, width=64, step_extras=()).view_id("v")
    assert view.view_id("v") != ViewConfig(height=48, width=64, segment_steps=10, max_action_horizon=4).view_id("v")
    _, view_id = run_shard(str(bridge_store), view)
    source = ViewSource(str(bridge_store), view_id)
    config = WAMConfig(n_context=1, n_future=12, frame_stride=1, action_convention="cosmos_ee_delta",
                       step_extras=("continuous_gripper_state",), batch_size=4, shuffle=False)
    doc = json.loads(SOURCE_JSON.read_text())
    state, gripper = np.asarray(doc["state"]), np.asarray(doc["continuous_gripper_state"])
    seen = []
    for batch in WAMDataset(source, config):  # clips cross the 10-step segments: read from whichever holds them
        assert batch["action_convention"][0] == "cosmos_ee_delta" and batch["actions"].dtype == torch.float32
        for b, key in enumerate(batch["key"]):
            t0 = int(key.split(":")[1])
            frames = slice(t0, t0 + 13)
            want = hand_actions(state[frames], gripper[frames])
            assert batch["actions"][b].shape == (12, 7)
            np.testing.assert_allclose(batch["actions"][b].numpy(), want, rtol=1e-6, atol=1e-7)
            assert batch["action_mask"][b].all()
            assert np.array_equal(batch["extras"]["continuous_gripper_state"][b].numpy(),
                                  gripper[frames].astype(np.float32))
            assert batch["extras_mask"]["continuous_gripper_state"][b].all()
            seen.append(t0)
    assert sorted(seen) == list(range(12))  # every 13-frame clip of the 24-frame episode, as Cosmos samples them
    with pytest.raises(ValueError, match="step extras"):
        WAMDataset(ViewSource(str(bridge_store), view_id), WAMConfig(step_extras=("nope",)))


@pytest.mark.parametrize(("names", "want"), [
    (["x", "y", "z", "roll", "pitch", "yaw", "gripper"], [0, 1, 2, 3, 4, 5]),
    (["joint_0", "eef_position_0", "eef_position_1", "eef_position_2", "eef_rotation_0", "eef_rotation_1",
      "eef_rotation_2", "gripper_position"], [1, 2, 3, 4, 5, 6]),
    (["ee_rot_x", "ee_rot_y", "ee_rot_z", "ee_pos_x", "ee_pos_y", "ee_pos_z"], [3, 4, 5, 0, 1, 2]),
    ([f"joint_{i}" for i in range(7)], None),  # joint space: refused by the export
    ([f"state_{i}" for i in range(7)], None),  # anonymous: needs --pose (or a Cosmos-layout sidecar)
    (["ee_x", "ee_y", "ee_z", "ee_quat_x", "ee_quat_y", "ee_quat_z", "ee_quat_w"], None),  # quaternion
])
def test_pose_dims_from_names(names, want):
    from pipeline.cosmos_action import infer_pose_dims

    assert infer_pose_dims(names) == want


REPO = Path(__file__).resolve().parent.parent
CONSUMER_PYTHON = Path(os.environ.get("ACTIONREEL_CONSUMER_PYTHON", REPO / ".venv-consumers/bin/python"))
COSMOS_PROBE = REPO / "tests/consumers/cosmos_probe.py"


@pytest.mark.skipif(not (CONSUMER_PYTHON.parent.parent / ".installed").exists(),
                    reason="cosmos-predict2's own dataset class is in the consumer venv: `make consumers` builds it")
def test_cosmos_predict2_itself_reads_the_export(bridge_store, tmp_path):
    """cosmos-predict2's ActionConditionedDataset on the export, in its own process: every 13-frame clip
    of the 24-frame episode, its actions equal the hand computation, its frames (decord) equal PyAV's
    decode of the exported video pixel for pixel."""
    store = EpisodeStore(str(bridge_store))
    out = tmp_path / "cosmos"
    export_cosmos(store, resolve(store, "latest")[1], str(out))
    probe = tmp_path / "probe"
    done = subprocess.run([str(CONSUMER_PYTHON), str(COSMOS_PROBE), str(out), str(probe), "--split", "val",
                           "--height", "480", "--width", "640"],
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads(Path(f"{probe}.json").read_text())
    with np.load(f"{probe}.npz") as arrays:
        got = {k: arrays[k] for k in arrays.files}
    samples = meta["samples"]
    assert meta["wrong_number"] == 0  # the dataset swaps an unreadable sample for a random one: none here
    assert [s["frame_ids"] for s in samples] == [list(range(t, t + 13)) for t in range(12)]
    assert {s["annotation_file"] for s in samples} == {"annotation/val/10.json"}
    exported = json.loads((out / "annotation" / "val" / "10.json").read_text())
    assert {s["key"] for s in samples} == {exported["episode_id"]}
    state, gripper = np.asarray(exported["state"]), np.asarray(exported["continuous_gripper_state"])
    frames = decoded_frames(out / exported["videos"][0]["video_path"])
    for i, sample in enumerate(samples):
        ids = sample["frame_ids"]
        assert got[f"action.{i}"].dtype == np.float32 and got[f"action.{i}"].shape == (12, 7)
        np.testing.assert_allclose(got[f"action.{i}"], hand_actions(state[ids], gripper[ids]), rtol=1e-6, atol=1e-6)
        theirs = got[f"frames.{i}"]  # decord's decode, as the dataset loads it
        assert theirs.shape == (13, 480, 640, 3) and theirs.dtype == np.uint8
        for frame_id, frame in zip(ids, theirs, strict=True):
            assert np.array_equal(frame, frames[frame_id]), frame_id  # pixel-equal to PyAV's decode
        video = got[f"video.{i}"]  # [C, T, H, W] after its resize to the export's own size
        assert video.shape == (3, 13, 480, 640) and video.dtype == np.uint8
        assert np.array_equal(video.transpose(1, 2, 3, 0), theirs)
