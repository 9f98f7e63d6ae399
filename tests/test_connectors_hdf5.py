"""HDF5 connectors: ALOHA (raw and JPEG-compressed) and robomimic/MimicGen written with h5py, the real robosuite
demo, and bad input."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest

from connectors import detect_format, get_connector
from schemas import index_to_ns
from tests.conftest import REAL
from tests.connector_helpers import (
    LOSSLESS,
    assert_jpeg_kept,
    assert_quarantined,
    frames_of,
    ingest,
    noise_image,
    psnr,
    smooth_image,
)

ROBOSUITE = REAL / "hdf5_robosuite" / "robosuite-v1.0-lift-panda"
H, W = 32, 48


def aloha_values(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"qpos": rng.normal(size=(n, 14)), "qvel": rng.normal(size=(n, 14)), "effort": rng.normal(size=(n, 14)),
            "action": rng.normal(size=(n, 14)), "base_action": rng.normal(size=(n, 2)),
            "cam_high": [noise_image(H, W, seed * 100 + t) for t in range(n)],
            "cam_left_wrist": [smooth_image(H, W, seed * 100 + t) for t in range(n)]}


def write_aloha(path, values: dict, *, compress: bool, sim: bool = False, base: bool = False, drop: str = "",
                garbage_jpeg: bool = False) -> None:
    n = values["qpos"].shape[0]
    with h5py.File(path, "w") as h5:
        h5.attrs["sim"] = sim
        h5.attrs["compress"] = compress
        obs = h5.create_group("observations")
        for key in ("qpos", "qvel", "effort"):
            obs.create_dataset(key, data=values[key])
        if drop != "action":
            h5.create_dataset("action", data=values["action"])
        if base:
            h5.create_dataset("base_action", data=values["base_action"])
        images = obs.create_group("images")
        cams = ["cam_high", "cam_left_wrist"]
        if not compress:
            for cam in cams:
                images.create_dataset(cam, data=np.stack(values[cam]))
            return
        # ALOHA's recorder: cv2.imencode on the stored (RGB) arrays, rows padded to the longest, lengths aside.
        encoded = {cam: [cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for img in values[cam]]
                   for cam in cams}
        if garbage_jpeg:
            encoded["cam_high"][2] = b"\x00\x01garbage" * 20
        width = max(len(b) for rows in encoded.values() for b in rows)
        lengths = np.zeros((len(cams), n), np.float32)
        for c, cam in enumerate(cams):
            padded = np.zeros((n, width), np.uint8)
            for t, blob in enumerate(encoded[cam]):
                padded[t, :len(blob)] = np.frombuffer(blob, np.uint8)
                lengths[c, t] = len(blob)
            images.create_dataset(cam, data=padded)
        h5.create_dataset("compress_len", data=lengths)


@pytest.fixture(scope="module")
def aloha(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("aloha") / "aloha_run"
    root.mkdir()
    episodes = {"episode_0.hdf5": aloha_values(1, 6), "episode_1.hdf5": aloha_values(2, 5),
                "episode_10.hdf5": aloha_values(3, 4)}
    write_aloha(root / "episode_0.hdf5", episodes["episode_0.hdf5"], compress=False, sim=True)
    write_aloha(root / "episode_1.hdf5", episodes["episode_1.hdf5"], compress=True, base=True)
    write_aloha(root / "episode_10.hdf5", episodes["episode_10.hdf5"], compress=True)
    report, store, metas = ingest(root, tmp_path_factory.mktemp("aloha-store"), options={"fps": 50},
                                  config=LOSSLESS)
    return root, episodes, report, store, metas


def test_aloha_values_land_exactly(aloha):
    root, episodes, report, store, metas = aloha
    assert detect_format(str(root)) == "aloha_hdf5"
    assert report.stored == 3 and not report.quarantined
    assert set(metas) == set(episodes)
    keys = [r.key for r in get_connector("aloha_hdf5").discover(str(root)).refs]
    assert keys == ["episode_0.hdf5", "episode_1.hdf5", "episode_10.hdf5"]  # natural order
    for key, values in episodes.items():
        meta, n = metas[key], values["qpos"].shape[0]
        steps = store.read_steps(meta)
        assert meta.kind == ("sim" if key == "episode_0.hdf5" else "teleop") and meta.control_fps == 50
        assert meta.state_names[0] == "left_waist" and meta.state_dtype == "float64"
        assert np.array_equal(steps.state, values["qpos"])
        expected_action = np.hstack([values["action"], values["base_action"]]) if key == "episode_1.hdf5" \
            else values["action"]
        assert np.array_equal(steps.action, expected_action)
        assert np.array_equal(steps.extras["qvel"], values["qvel"])
        assert np.array_equal(steps.extras["effort"], values["effort"])
        assert np.array_equal(steps.timestamp_ns, index_to_ns(np.arange(n), meta.control_fps))
        for cam in ("cam_high", "cam_left_wrist"):
            assert meta.camera(cam).num_frames == n
            frames = frames_of(store, meta, cam)
            if key == "episode_0.hdf5":  # raw arrays: lossless
                assert all(np.array_equal(a, b) for a, b in zip(frames, values[cam], strict=True))
            elif cam == "cam_left_wrist":  # JPEG rows: within 40 dB of the recorded array, colours not swapped
                assert min(psnr(a, b) for a, b in zip(frames, values[cam], strict=True)) >= 40.0
    assert metas["episode_1.hdf5"].action_names[-2:] == ["base_action_0", "base_action_1"]
    assert [metas[k].embodiment for k in episodes] == ["aloha", "mobile_aloha", "aloha"]


def test_aloha_jpeg_rows_are_kept_as_they_are_in_either_colour_order(aloha, tmp_path):
    """The recorder's rows are RGB arrays JPEG-encoded as if BGR: kept as they are with channel_order "bgr"
    and swapped back on decode; rows declared bgr are standard JPEGs, kept with "rgb"."""
    root, episodes, _, _, _ = aloha
    connector = get_connector("aloha_hdf5")
    values = episodes["episode_10.hdf5"]
    for order, stored_order in (("rgb", "bgr"), ("bgr", "rgb")):
        ref = connector.discover(str(root), {"color_order": order}).refs[2]
        assert ref.key == "episode_10.hdf5"
        episode = connector.read(ref)
        for cam in ("cam_high", "cam_left_wrist"):
            rows = [cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for img in values[cam]]
            assert list(episode.videos[cam].encoded()) == rows
            opencv = [cv2.imdecode(np.frombuffer(r, np.uint8), cv2.IMREAD_COLOR) for r in rows]  # as recorded
            expected = opencv if order == "rgb" else [cv2.cvtColor(d, cv2.COLOR_BGR2RGB) for d in opencv]
            frames = assert_jpeg_kept(episode, cam, tmp_path / f"store-{order}-{cam}", stored_order)
            assert all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))


@pytest.mark.parametrize("layout", ["v2.1", "v3.0"])
def test_swapped_aloha_cameras_export_in_true_colours(tmp_path, ray_session, layout):
    """Channel-swapped JPEGs are never copied into an export, where other readers would show red as blue:
    they are re-encoded from the store's decode (here losslessly, so the round trip compares exactly)."""
    import av

    from pipeline.export import ExportConfig, export_lerobot
    from pipeline.store.versions import resolve

    root = tmp_path / "aloha"
    root.mkdir()
    values = [aloha_values(10 + e, 5) for e in range(2)]
    for e, episode_values in enumerate(values):
        write_aloha(root / f"episode_{e}.hdf5", episode_values, compress=True)
    _, store, metas = ingest(root, tmp_path / "store")
    assert {c.channel_order for m in metas.values() for c in m.cameras} == {"bgr"}
    out = tmp_path / "out"
    report = export_lerobot(store, resolve(store, "latest")[1], str(out), ExportConfig(layout=layout,
                                                                                       encode=LOSSLESS.encode))
    assert report.videos == {"reencode": 4}
    _, back, back_metas = ingest(out, tmp_path / "back")
    for e in range(2):
        meta = metas[f"episode_{e}.hdf5"]
        again = next(m for m in back_metas.values() if m.num_steps == meta.num_steps and
                     np.array_equal(back.read_steps(m).action, store.read_steps(meta).action))
        for cam in ("cam_high", "cam_left_wrist"):
            assert again.camera(cam).channel_order == "rgb"
            stored = frames_of(store, meta, cam)
            assert all(np.array_equal(a, b) for a, b in zip(frames_of(back, again, cam), stored, strict=True))
            if cam == "cam_left_wrist":  # smooth: true colours are within 40 dB, swapped ones fall far below
                assert min(psnr(a, b) for a, b in zip(stored, values[e][cam], strict=True)) >= 40.0
    if layout == "v2.1":  # and a plain PyAV reader of the exported file sees the recorded colours
        path = out / "videos" / "chunk-000" / "observation.images.cam_left_wrist" / "episode_000000.mp4"
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert min(psnr(a, b) for a, b in zip(frames, values[0]["cam_left_wrist"], strict=True)) >= 40.0


def robomimic_values(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"actions": rng.normal(size=(n, 7)), "rewards": np.r_[np.zeros(n - 1), 1.0], "dones": np.arange(n) == n - 1,
            "states": rng.normal(size=(n, 10)), "eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
            "gripper": rng.normal(size=(n, 2)).astype(np.float32), "next_eef": rng.normal(size=(n, 3)),
            "agentview_image": np.stack([noise_image(H, W, seed * 10 + t) for t in range(n)]),
            "eef_pose": rng.normal(size=(n, 4, 4))}


ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"], "control_freq": 20,
                                                          "controller_configs": {"type": "OSC_POSE",
                                                                                 "control_delta": True}}}


def write_robomimic(path, demos: dict[str, dict], mask: dict[str, list[str]], *, obs: bool = True,
                    mismatch: str = "") -> None:
    with h5py.File(path, "w") as h5:
        data = h5.create_group("data")
        data.attrs["env_args"] = json.dumps(ENV_ARGS)
        data.attrs["total"] = sum(v["actions"].shape[0] for v in demos.values())
        for name, v in demos.items():
            group = data.create_group(name)
            group.attrs["num_samples"] = v["actions"].shape[0]
            group.create_dataset("actions", data=v["actions"])
            group.create_dataset("rewards", data=v["rewards"][:-1] if mismatch == name else v["rewards"])
            group.create_dataset("dones", data=v["dones"])
            group.create_dataset("states", data=v["states"])
            if obs:
                group.create_dataset("obs/robot0_eef_pos", data=v["eef_pos"])
                group.create_dataset("obs/robot0_gripper_qpos", data=v["gripper"])
                group.create_dataset("obs/agentview_image", data=v["agentview_image"])
                group.create_dataset("next_obs/robot0_eef_pos", data=v["next_eef"])
                group.create_dataset("datagen_info/eef_pose", data=v["eef_pose"])
        for filter_name, members in mask.items():
            h5.create_dataset(f"mask/{filter_name}", data=np.array([m.encode() for m in members]))


@pytest.fixture(scope="module")
def robomimic(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("robomimic") / "lift_ph"
    root.mkdir()
    demos = {"demo_0": robomimic_values(1, 5), "demo_1": robomimic_values(2, 6), "demo_2": robomimic_values(3, 4)}
    write_robomimic(root / "image.hdf5", demos, {"train": ["demo_0", "demo_1"], "valid": ["demo_2"],
                                                 "20_percent": ["demo_1"]})
    write_robomimic(root / "low_dim_raw.hdf5", {"demo_1": robomimic_values(4, 3)}, {}, obs=False)
    report, store, metas = ingest(root, tmp_path_factory.mktemp("robomimic-store"), config=LOSSLESS)
    return root, demos, report, store, metas


def test_robomimic_values_land_exactly(robomimic):
    root, demos, report, store, metas = robomimic
    assert detect_format(str(root)) == "robomimic_hdf5"
    assert report.stored == 3
    # The raw file (no obs/) has 10 state dims, the others 5: same embodiment, so it is set aside, not merged.
    assert [q["source_key"] for q in report.quarantined] == ["low_dim_raw.hdf5:demo_1"]
    assert report.quarantined[0]["field"] == "state" and "distinct embodiment" in report.quarantined[0]["reason"]
    for name, v in demos.items():
        meta = metas[f"image.hdf5:{name}"]
        steps = store.read_steps(meta)
        assert meta.state_names == ["robot0_eef_pos_0", "robot0_eef_pos_1", "robot0_eef_pos_2",
                                    "robot0_gripper_qpos_0", "robot0_gripper_qpos_1"]
        assert np.array_equal(steps.state, np.hstack([v["eef_pos"], v["gripper"]]))
        assert np.array_equal(steps.action, v["actions"])
        assert np.array_equal(steps.reward, v["rewards"]) and np.array_equal(steps.is_terminal, v["dones"])
        assert np.array_equal(steps.extras["states"], v["states"])
        assert np.array_equal(steps.extras["next_obs.robot0_eef_pos"], v["next_eef"])
        assert np.array_equal(steps.extras["datagen_info.eef_pose"], v["eef_pose"].reshape(-1, 16))
        frames = frames_of(store, meta, "agentview_image")
        assert all(np.array_equal(a, b) for a, b in zip(frames, v["agentview_image"], strict=True))
        assert (meta.embodiment, meta.control_fps, meta.kind) == ("panda", 20, "sim")
        assert (meta.action_space, meta.action_representation) == ("eef_delta", "delta")
        assert json.loads(meta.extras["robomimic.data.env_args"]) == ENV_ARGS
    assert metas["image.hdf5:demo_2"].split == "val" and metas["image.hdf5:demo_0"].split == "train"
    assert metas["image.hdf5:demo_1"].extras["robomimic.filters"] == "20_percent,train"
    connector = get_connector("robomimic_hdf5")
    raw = connector.read(next(r for r in connector.discover(str(root)).refs if r.key.startswith("low_dim_raw")))
    assert raw.meta.cameras == [] and np.array_equal(raw.steps.state, robomimic_values(4, 3)["states"])


def test_real_robosuite_demo_counts_and_values():
    connector = get_connector("robomimic_hdf5")
    assert detect_format(str(ROBOSUITE)) == "robomimic_hdf5"
    refs = connector.discover(str(ROBOSUITE)).refs
    with h5py.File(ROBOSUITE / "demo.hdf5", "r") as h5:
        demos = list(h5["data"].keys())
        actions, states, torques = (h5[f"data/demo_1/{k}"][()] for k in ("actions", "states", "joint_torques"))
    assert [r.key for r in refs] == [f"demo.hdf5:{d}" for d in demos] == ["demo.hdf5:demo_1"]
    episode = connector.read(refs[0])
    assert episode.meta.num_steps == actions.shape[0] == 412 and episode.meta.cameras == []
    assert np.array_equal(episode.steps.state, states) and np.array_equal(episode.steps.action, actions)
    assert np.array_equal(episode.steps.extras["joint_torques"], torques)
    assert set(np.unique(episode.steps.action[:, -1])) <= {-1.0, 1.0}  # gripper column per SOURCE.md
    assert episode.meta.embodiment == "panda" and episode.meta.action_space == "eef_delta"
    assert json.loads(episode.meta.extras["robomimic.data.env_info"])["env_name"] == "Lift"
    assert episode.meta.extras["robomimic.demo.model_file"] == "model_1.xml"


@pytest.fixture(scope="module")
def bad(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("aloha-bad") / "bad_aloha"
    root.mkdir()
    write_aloha(root / "episode_0.hdf5", aloha_values(5, 4), compress=False)
    write_aloha(root / "episode_1.hdf5", aloha_values(6, 4), compress=False, drop="action")
    values = aloha_values(7, 4)
    values["action"] = values["action"][:3]
    write_aloha(root / "episode_2.hdf5", values, compress=False)
    write_aloha(root / "episode_3.hdf5", aloha_values(8, 4), compress=True, garbage_jpeg=True)
    write_aloha(root / "episode_4.hdf5", aloha_values(9, 4), compress=False)
    data = (root / "episode_4.hdf5").read_bytes()
    (root / "episode_4.hdf5").write_bytes(data[:len(data) // 3])
    aloha_report = ingest(root, tmp_path_factory.mktemp("aloha-bad-store"), format="aloha_hdf5")
    rm_root = tmp_path_factory.mktemp("robomimic-bad") / "bad_rm"
    rm_root.mkdir()
    write_robomimic(rm_root / "a.hdf5", {"demo_0": robomimic_values(1, 4), "demo_1": robomimic_values(2, 4)}, {},
                    mismatch="demo_1")
    (rm_root / "b.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    return aloha_report, ingest(rm_root, tmp_path_factory.mktemp("robomimic-bad-store"))


@pytest.mark.parametrize(("key", "field", "words"), [
    ("episode_1.hdf5", "action", "missing dataset"),
    ("episode_2.hdf5", "action", "shape mismatch"),
    ("episode_3.hdf5", "observations/images/cam_high", "unknown image codec"),
    ("episode_4.hdf5", "file", "truncated"),
])
def test_aloha_bad_input_is_quarantined(bad, key, field, words):
    report, _, metas = bad[0]
    assert_quarantined(report, key, file_part=key, field=field, words=words, metas=metas)
    assert set(metas) == {"episode_0.hdf5"}


def test_robomimic_bad_input_is_quarantined(bad):
    report, _, metas = bad[1]
    assert set(metas) == {"a.hdf5:demo_0"}
    assert_quarantined(report, "a.hdf5:demo_1", file_part="a.hdf5", field="rewards", words="shape mismatch",
                       metas=metas)
    assert_quarantined(report, "b.hdf5:*", file_part="b.hdf5", field="file", words="truncated or corrupt",
                       metas=metas)
