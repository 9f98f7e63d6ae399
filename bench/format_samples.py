"""Benchmark datasets, one per connector family, written with each format's own library.

Frames are 240x320 (a small teleop camera) and every family carries 600-700 frames, so the whole
benchmark runs in a couple of minutes on two cores.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import h5py
import numpy as np
import zarr
from mcap_ros2.writer import Writer as Ros2McapWriter
from rosbags.typesys import Stores, get_typestore

from connectors.rlds.example_pb import Example
from connectors.rlds.tfrecord import frame_record
from pipeline.video import encode_frames

H, W = 240, 320
NS = 1_000_000_000


def picture(seed: int) -> np.ndarray:
    """A smooth moving scene with some texture (compresses like camera footage, not like noise)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    phase = seed * 0.15
    base = np.stack([120 + 90 * np.sin(x / 17 + phase), 120 + 90 * np.cos(y / 13 - phase),
                     120 + 60 * np.sin((x + y) / 23 + 2 * phase)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 6, (H, W, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def write_rlds(root: Path, episodes: int = 12, steps: int = 50) -> Path:
    folder = root / "bench_rlds" / "1.0.0"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for e in range(episodes):
        example = Example()
        f = example.features.feature
        f["steps/observation/state"].float_list.value.extend(rng.normal(size=steps * 7).astype(np.float32).tolist())
        f["steps/action"].float_list.value.extend(rng.normal(size=steps * 7).astype(np.float32).tolist())
        f["steps/is_first"].int64_list.value.extend([1] + [0] * (steps - 1))
        f["steps/is_last"].int64_list.value.extend([0] * (steps - 1) + [1])
        f["steps/language_instruction"].bytes_list.value.extend([b"pick up the cup"] * steps)
        f["steps/observation/image"].bytes_list.value.extend(jpeg(picture(e * steps + t)) for t in range(steps))
        records.append(frame_record(example.SerializeToString()))
    (folder / "bench_rlds-train.tfrecord-00000-of-00001").write_bytes(b"".join(records))
    (folder / "dataset_info.json").write_text(json.dumps({"name": "bench_rlds", "splits": [
        {"name": "train", "shardLengths": [str(episodes)]}]}))
    return folder.parent


def write_aloha(root: Path, episodes: int = 4, steps: int = 80, compress: bool = False) -> Path:
    """ALOHA episodes with raw image arrays, or (``compress``) as the recorder writes them: each RGB
    array JPEG-encoded by OpenCV as it is, rows padded to the longest, lengths in ``compress_len``."""
    folder = root / ("bench_aloha_jpeg" if compress else "bench_aloha")
    folder.mkdir()
    rng = np.random.default_rng(1)
    cams = ("cam_high", "cam_left_wrist")
    for e in range(episodes):
        with h5py.File(folder / f"episode_{e}.hdf5", "w") as h5:
            h5.attrs["sim"], h5.attrs["compress"] = False, compress
            h5["observations/qpos"] = rng.normal(size=(steps, 14))
            h5["observations/qvel"] = rng.normal(size=(steps, 14))
            h5["action"] = rng.normal(size=(steps, 14))
            images = {cam: [picture(e * 1000 + c * 500 + t) for t in range(steps)] for c, cam in enumerate(cams)}
            if not compress:
                for cam in cams:
                    h5[f"observations/images/{cam}"] = np.stack(images[cam])
                continue
            rows = {cam: [cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for img in imgs]
                    for cam, imgs in images.items()}
            width = max(len(r) for cam_rows in rows.values() for r in cam_rows)
            lengths = np.zeros((len(cams), steps), np.float32)
            for c, cam in enumerate(cams):
                padded = np.zeros((steps, width), np.uint8)
                for t, row in enumerate(rows[cam]):
                    padded[t, :len(row)] = np.frombuffer(row, np.uint8)
                    lengths[c, t] = len(row)
                h5[f"observations/images/{cam}"] = padded
            h5["compress_len"] = lengths
    return folder


def write_robomimic(root: Path, demos: int = 10, steps: int = 60) -> Path:
    folder = root / "bench_robomimic"
    folder.mkdir()
    rng = np.random.default_rng(2)
    with h5py.File(folder / "image.hdf5", "w") as h5:
        data = h5.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {"robots": ["Panda"],
                                                                                 "control_freq": 20}})
        for d in range(demos):
            g = data.create_group(f"demo_{d}")
            g["actions"] = rng.normal(size=(steps, 7))
            g["rewards"] = np.zeros(steps)
            g["dones"] = np.zeros(steps, np.int64)
            g["states"] = rng.normal(size=(steps, 32))
            g["obs/robot0_eef_pos"] = rng.normal(size=(steps, 3))
            g["obs/agentview_image"] = np.stack([picture(d * 100 + t) for t in range(steps)])
    return folder


def write_ros(root: Path, bags: int = 3, seconds: int = 8) -> Path:
    folder = root / "bench_ros"
    folder.mkdir()
    store = get_typestore(Stores.ROS2_HUMBLE)
    for b in range(bags):
        with open(folder / f"run_{b}.mcap", "wb") as handle:
            writer = Ros2McapWriter(handle)
            joint = writer.register_msgdef("sensor_msgs/msg/JointState", store.generate_msgdef(
                "sensor_msgs/msg/JointState", ros_version=2)[0])
            image = writer.register_msgdef("sensor_msgs/msg/CompressedImage", store.generate_msgdef(
                "sensor_msgs/msg/CompressedImage", ros_version=2)[0])
            events = [(k * NS // 100, "j", k) for k in range(seconds * 100)]
            events += [(i * NS // 30 + 1_000_000, "c", i) for i in range(seconds * 30)]
            for t, kind, k in sorted(events):
                stamp = {"sec": t // NS, "nanosec": t % NS}
                if kind == "j":
                    writer.write_message("/joint_states", joint, {
                        "header": {"stamp": stamp, "frame_id": ""}, "name": [f"j{i}" for i in range(7)],
                        "position": [float(np.sin(k / 50 + i)) for i in range(7)], "velocity": [], "effort": []},
                        log_time=t + NS)
                else:
                    writer.write_message("/camera/compressed", image, {
                        "header": {"stamp": stamp, "frame_id": ""}, "format": "jpeg",
                        "data": jpeg(picture(b * 1000 + k))}, log_time=t + NS)
            writer.finish()
    return folder


ROS_MAPPING = {"rate": 30, "cameras": {"front": "/camera/compressed"},
               "state": [{"topic": "/joint_states", "policy": "asof", "tolerance_ms": 20}]}


def write_zarr(root: Path, episodes: int = 6, steps: int = 100) -> Path:
    path = root / "bench_replay.zarr"
    rng = np.random.default_rng(3)
    n = episodes * steps
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("data/state", shape=(n, 5), dtype=np.float32, chunks=(steps, 5))[:] = \
        rng.normal(size=(n, 5)).astype(np.float32)
    group.create_array("data/action", shape=(n, 2), dtype=np.float32, chunks=(steps, 2))[:] = \
        rng.normal(size=(n, 2)).astype(np.float32)
    img = group.create_array("data/img", shape=(n, H, W, 3), dtype=np.uint8, chunks=(steps, H, W, 3))
    for e in range(episodes):
        img[e * steps:(e + 1) * steps] = np.stack([picture(e * steps + t) for t in range(steps)])
    ends = np.arange(1, episodes + 1) * steps
    group.create_array("meta/episode_ends", shape=ends.shape, dtype=np.int64, chunks=ends.shape)[:] = ends
    return path


def write_video_folder(root: Path, episodes: int = 8, steps: int = 75) -> Path:
    folder = root / "bench_clips"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for e in range(episodes):
        data, _ = encode_frames((picture(e * steps + t) for t in range(steps)), Fraction(15), W, H)
        (folder / f"ep_{e}.mp4").write_bytes(data)
        (folder / f"ep_{e}.json").write_text(json.dumps({"state": rng.normal(size=(steps, 7)).tolist(),
                                                         "action": rng.normal(size=(steps, 7)).tolist(),
                                                         "instruction": "fold the towel"}))
    return folder
