"""The fault corpus: small datasets of all nine formats, each with one fault, and the exact outcome
the ingest job must produce for it.

    python -m tests.faults.make_corpus OUT        writes OUT/<case>/{data/..., outside/...} + OUT/corpus.json

Every case folder holds the dataset under ``data/`` and, under ``outside/``, the files its symlinks
and HDF5 links point at (outside the dataset root, as an attacker's would). Datasets are written
the way their producers write them (LeRobot's layout, TFRecord framing with CRCs, h5py, MCAP, zarr
v2), then damaged. tests/test_fault_corpus.py runs each case through the ingest job and checks the
outcome: exit code, which episodes are quarantined / missing / kept once (with file, episode and
field), and that every other episode is bit-exact with a clean ingest.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from connectors.rlds.example_pb import Example
from connectors.rlds.tfrecord import frame_record
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.video import encode_frames

H, W = 16, 24  # frames: tiny, even (H.264)
STEPS = 6
LEROBOT_CAMERA = "observation.images.cam_high"


@dataclass
class Expect:
    """What the ingest job must report for a case. Keys are source keys."""

    rc: int = 0  # 2: a dataset-level fault, one line on stderr, nothing stored
    message: tuple[str, ...] = ()  # rc 2: words the one line holds (file part, problem)
    kept: list[str] = field(default_factory=list)  # episodes in the committed version, bit-exact with a clean ingest
    quarantined: dict[str, list[str]] = field(default_factory=dict)  # key -> [file part, field, words]
    missing: dict[str, str] = field(default_factory=dict)  # key -> words of the reason
    duplicates: dict[str, str] = field(default_factory=dict)  # key -> the key it repeats
    masked: dict[str, list] = field(default_factory=dict)  # key -> [column, row]: stored masked, as NaN


@dataclass
class Case:
    name: str
    format: str
    build: Callable[[Path], None]  # writes the damaged dataset under <case>/data (and <case>/outside)
    expect: Expect
    options: dict = field(default_factory=dict)


# ---------------------------------------------------------------- clean datasets, one per format


def picture(seed: int, height: int = H, width: int = W) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([120 + 90 * np.sin(x / 5 + seed), 120 + 90 * np.cos(y / 4 - seed), 100 + 0 * x], axis=-1)
    return np.clip(base, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def mp4(frames: int, seed: int, fps: int = 10, height: int = H, width: int = W) -> bytes:
    data, count = encode_frames((picture(seed * 100 + t, height, width) for t in range(frames)), Fraction(fps),
                                width, height)
    assert count == frames
    return data


def vectors(seed: int, width: int = 4, steps: int = STEPS) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(steps, width)).astype(np.float32)


def write_lerobot(root: Path, layout: str = "v2.1") -> None:
    write_sample_dataset(root, SampleSpec(num_episodes=3 if layout == "v2.1" else 4, min_steps=STEPS,
                                          max_steps=STEPS, height=48, width=64, fps=10, layout=layout,
                                          episodes_per_file=2))


def write_dreamgen(root: Path) -> None:
    write_lerobot(root)
    for name in ("tasks.jsonl", "episodes.jsonl"):
        path = root / "meta" / name
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            if "task" in row:
                row["task"] = "<DREAM>" + row["task"]
            if "tasks" in row:
                row["tasks"] = ["<DREAM>" + t for t in row["tasks"]]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


RLDS_FILE = "fault_rlds-train.tfrecord-00000-of-00001"


def rlds_example(seed: int, state: np.ndarray | None = None) -> bytes:
    example = Example()
    f = example.features.feature
    state = vectors(seed) if state is None else state
    f["steps/observation/state"].float_list.value.extend(state.reshape(-1).tolist())
    f["steps/action"].float_list.value.extend(vectors(seed + 50).reshape(-1).tolist())
    f["steps/is_first"].int64_list.value.extend([1] + [0] * (STEPS - 1))
    f["steps/is_last"].int64_list.value.extend([0] * (STEPS - 1) + [1])
    f["steps/language_instruction"].bytes_list.value.extend([b"pick up the cup"] * STEPS)
    f["steps/observation/image"].bytes_list.value.extend(jpeg(picture(seed * 10 + t)) for t in range(STEPS))
    return example.SerializeToString()


def write_rlds(root: Path, records: list[bytes] | None = None, declared: int = 4) -> None:
    folder = root / "1.0.0"
    folder.mkdir(parents=True)
    records = [frame_record(rlds_example(e)) for e in range(4)] if records is None else records
    (folder / RLDS_FILE).write_bytes(b"".join(records))
    (folder / "dataset_info.json").write_text(json.dumps({"name": "fault_rlds", "splits": [
        {"name": "train", "shardLengths": [str(declared)]}]}))


def aloha_episode(path: Path, seed: int, chunked_images: bool = False) -> None:
    with h5py.File(path, "w") as h5:
        h5.attrs["sim"], h5.attrs["compress"] = False, False
        h5["observations/qpos"] = vectors(seed, 14).astype(np.float64)
        h5["observations/qvel"] = vectors(seed + 1, 14).astype(np.float64)
        h5["action"] = vectors(seed + 2, 14).astype(np.float64)
        images = np.stack([picture(seed * 10 + t) for t in range(STEPS)])
        h5.create_dataset("observations/images/cam_high", data=images,
                          chunks=(1, H, W, 3) if chunked_images else None)


def write_aloha(root: Path) -> None:
    root.mkdir(parents=True)
    for e in range(3):
        aloha_episode(root / f"episode_{e}.hdf5", e)


def write_robomimic(root: Path, demos: int = 3) -> None:
    root.mkdir(parents=True)
    with h5py.File(root / "image.hdf5", "w") as h5:
        data = h5.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {"control_freq": 20}})
        for d in range(demos):
            g = data.create_group(f"demo_{d}")
            g["actions"] = vectors(d, 7).astype(np.float64)
            g["rewards"] = np.zeros(STEPS)
            g["dones"] = np.zeros(STEPS, np.int64)
            g["obs/robot0_eef_pos"] = vectors(d + 10, 3).astype(np.float64)
            g.create_dataset("obs/agentview_image", data=np.stack([picture(d * 10 + t) for t in range(STEPS)]),
                             chunks=(1, H, W, 3))


NS = 1_000_000_000
ROS_MAPPING = {"rate": 10, "cameras": {"front": "/camera/compressed"},
               "state": [{"topic": "/joint_states", "policy": "asof", "tolerance_ms": 60}]}


def ros_bag(path: Path, seed: int, bad_jpeg_at: int | None = None) -> None:
    from mcap_ros2.writer import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    with open(path, "wb") as handle:
        writer = Writer(handle)
        joint = writer.register_msgdef("sensor_msgs/msg/JointState", store.generate_msgdef(
            "sensor_msgs/msg/JointState", ros_version=2)[0])
        image = writer.register_msgdef("sensor_msgs/msg/CompressedImage", store.generate_msgdef(
            "sensor_msgs/msg/CompressedImage", ros_version=2)[0])
        events = sorted([(k * NS // 50, "j", k) for k in range(40)] + [(i * NS // 10 + 1_000_000, "c", i)
                                                                      for i in range(8)])
        for t, kind, k in events:
            stamp = {"sec": t // NS, "nanosec": t % NS}
            if kind == "j":
                writer.write_message("/joint_states", joint, {
                    "header": {"stamp": stamp, "frame_id": ""}, "name": [f"j{i}" for i in range(3)],
                    "position": [float(np.sin(k / 7 + i + seed)) for i in range(3)], "velocity": [], "effort": []},
                    log_time=t + NS)
            else:
                data = b"\xff\xd8\xff\xe0garbage" if k == bad_jpeg_at else jpeg(picture(seed * 10 + k))
                writer.write_message("/camera/compressed", image, {
                    "header": {"stamp": stamp, "frame_id": ""}, "format": "jpeg", "data": data}, log_time=t + NS)
        writer.finish()


def write_ros(root: Path) -> None:
    root.mkdir(parents=True)
    for b in range(3):
        ros_bag(root / f"run_{b}.mcap", b)


def write_zarr(root: Path, state: np.ndarray | None = None) -> None:
    episodes, n = 3, 3 * STEPS
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    values = np.concatenate([vectors(e, 5) for e in range(episodes)]) if state is None else state
    group.create_array("data/state", shape=(n, 5), dtype=np.float32, chunks=(STEPS, 5))[:] = values
    group.create_array("data/action", shape=(n, 2), dtype=np.float32, chunks=(STEPS, 2))[:] = \
        np.concatenate([vectors(e + 20, 2) for e in range(episodes)])
    img = group.create_array("data/img", shape=(n, H, W, 3), dtype=np.uint8, chunks=(STEPS, H, W, 3))
    img[:] = np.stack([picture(t) for t in range(n)])
    ends = np.arange(1, episodes + 1) * STEPS
    group.create_array("meta/episode_ends", shape=ends.shape, dtype=np.int64, chunks=ends.shape)[:] = ends


def write_video_folder(root: Path) -> None:
    root.mkdir(parents=True)
    for e in range(3):
        (root / f"ep_{e}.mp4").write_bytes(mp4(STEPS, e))
        (root / f"ep_{e}.json").write_text(json.dumps({"state": vectors(e).tolist(), "action": vectors(e + 9).tolist(),
                                                       "instruction": "fold the towel"}))


def write_worldmodel(root: Path) -> None:
    root.mkdir(parents=True)
    for e in range(3):
        (root / f"v{e}.mp4").write_bytes(mp4(12, e, fps=8))
        (root / f"v{e}.json").write_text(json.dumps({"prompt": f"prompt {e}", "seed": e}))


CLEAN: dict[str, Callable[[Path], None]] = {
    "lerobot": write_lerobot, "lerobot_v3": lambda p: write_lerobot(p, "v3.0"), "dreamgen": write_dreamgen,
    "rlds": write_rlds, "aloha_hdf5": write_aloha, "robomimic_hdf5": write_robomimic, "ros": write_ros,
    "zarr_replay": write_zarr, "video_folder": write_video_folder, "worldmodel": write_worldmodel,
}
FORMAT_OF = {"lerobot_v3": "lerobot"}
OPTIONS = {"ros": {"mapping": ROS_MAPPING}, "rlds": {"fps": 10}}


# ---------------------------------------------------------------- damage


def data_dir(case: Path) -> Path:
    return case / "data"


def outside(case: Path, name: str) -> Path:
    path = case / "outside" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def symlink_out(case: Path, relative: str) -> None:
    """Move a dataset file (or folder) outside the root and leave a symlink to it in its place."""
    inside = data_dir(case) / relative
    target = outside(case, relative.replace("/", "_"))
    shutil.move(str(inside), str(target))
    os.symlink(target, inside)


def corrupt_middle_frame(path: Path, frame: int) -> None:
    """Garbage over the payload of one video packet (headers and the container left intact)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = sorted((p.pts, p.pos, p.size) for p in container.demux(stream) if p.size)
    _, pos, size = packets[frame]
    data = bytearray(path.read_bytes())
    for i in range(pos + 6, pos + size):
        data[i] = (data[i] * 7 + 13) & 0xFF
    path.write_bytes(bytes(data))


def edit_json(path: Path, change: Callable[[object], object]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def edit_jsonl(path: Path, change: Callable[[list], list]) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(r) + "\n" for r in change(rows)))


def nested(depth: int = 5000) -> str:
    return "[" * depth + "]" * depth


def lerobot_video(e: int, camera: str = LEROBOT_CAMERA) -> str:
    return f"videos/chunk-000/{camera}/episode_{e:06d}.mp4"


def lerobot_data(e: int) -> str:
    return f"data/chunk-000/episode_{e:06d}.parquet"


def with_h5(relative: str, change: Callable[[h5py.File, Path], None]) -> Callable[[Path], None]:
    def build(case: Path) -> None:
        with h5py.File(data_dir(case) / relative, "a") as h5:
            change(h5, case)
    return build


def replace_dataset(h5: h5py.File, name: str, **create) -> None:
    values = h5[name][()]
    del h5[name]
    h5.create_dataset(name, **{"shape": values.shape, "dtype": values.dtype, **create})


def outside_h5(case: Path, values: np.ndarray) -> Path:
    path = outside(case, "secret.hdf5")
    with h5py.File(path, "w") as h5:
        h5["secret"] = values
    return path


def _external_link(h5: h5py.File, case: Path) -> None:
    path = outside_h5(case, h5["observations/qpos"][()])
    del h5["observations/qpos"]
    h5["observations/qpos"] = h5py.ExternalLink(str(path), "/secret")


def _external_storage(h5: h5py.File, case: Path) -> None:
    values = h5["action"][()]
    raw = outside(case, "secret.bin")
    raw.write_bytes(values.tobytes())
    del h5["action"]
    h5.create_dataset("action", shape=values.shape, dtype=values.dtype, external=[(str(raw), 0, values.nbytes)])


def _virtual(h5: h5py.File, case: Path) -> None:
    values = h5["action"][()]
    path = outside_h5(case, values)
    layout = h5py.VirtualLayout(shape=values.shape, dtype=values.dtype)
    layout[:] = h5py.VirtualSource(str(path), "secret", shape=values.shape)
    del h5["action"]
    h5.create_virtual_dataset("action", layout)


def _unwritten_chunks(name: str, written: int) -> Callable[[h5py.File, Path], None]:
    def change(h5: h5py.File, case: Path) -> None:
        values = h5[name][()]
        del h5[name]
        ds = h5.create_dataset(name, shape=values.shape, dtype=values.dtype, chunks=(1, *values.shape[1:]))
        ds[:written] = values[:written]
    return change


def _set(name: str, transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File, Path], None]:
    def change(h5: h5py.File, case: Path) -> None:
        values = transform(h5[name][()])
        del h5[name]
        h5[name] = values
    return change


def _inf_at(values: np.ndarray, row: int = 2, col: int = 1) -> np.ndarray:
    values = values.copy()
    values[row, col] = np.inf
    return values


def truncate(relative: str, keep: float = 0.5) -> Callable[[Path], None]:
    def build(case: Path) -> None:
        path = data_dir(case) / relative
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * keep)])
    return build


def rlds_records(case: Path) -> tuple[Path, list[bytes]]:
    path = data_dir(case) / "1.0.0" / RLDS_FILE
    return path, [frame_record(rlds_example(e)) for e in range(4)]


def rlds(change: Callable[[list[bytes]], bytes]) -> Callable[[Path], None]:
    def build(case: Path) -> None:
        path, records = rlds_records(case)
        path.write_bytes(change(records))
    return build


def _flip(record: bytes, at: int) -> bytes:
    out = bytearray(record)
    out[at] ^= 0x5A
    return bytes(out)


def _zarr_chunk_symlink(case: Path) -> None:
    symlink_out(case, "data/state/1.0")


def _zarr_remove_image_chunk(case: Path) -> None:
    (data_dir(case) / "data/img/2.0.0.0").unlink()


def _zarr_inf(case: Path) -> None:
    state = np.concatenate([vectors(e, 5) for e in range(3)])
    state[STEPS + 2, 3] = np.inf
    group = zarr.open_group(str(data_dir(case)), mode="r+", zarr_format=2)
    group["data/state"][:] = state


def _many(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(case: Path) -> None:
        for step in steps:
            step(case)
    return build


def file_edit(relative: str, change: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda case: change(data_dir(case) / relative)


def copy_file(source: str, target: str) -> Callable[[Path], None]:
    return lambda case: shutil.copyfile(data_dir(case) / source, data_dir(case) / target)


def _parquet_rows(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def _duplicate_v3_row(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(1, 1)]), path)


def _v3_row_without_length(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop(["length"]), path)


def _video_replaced(relative: str, **video) -> Callable[[Path], None]:
    def build(case: Path) -> None:
        (data_dir(case) / relative).write_bytes(mp4(STEPS, 7, **video))
    return build


def _sidecar_nested(relative: str) -> Callable[[Path], None]:
    return file_edit(relative, lambda p: p.write_text('{"state": ' + nested() + "}"))


def _sidecar_values(relative: str, key: str, transform: Callable[[list], list]) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        doc = json.loads(path.read_text())
        doc[key] = transform(doc[key])
        path.write_text(json.dumps(doc))
    return file_edit(relative, change)


def _inf_in_rows(rows: list) -> list:
    rows[2][1] = float("inf")
    return rows


# ---------------------------------------------------------------- the cases


def _q(file_part: str, field_name: str, words: str) -> list[str]:
    return [file_part, field_name, words]


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, fmt: str, build: Callable[[Path], None], **expect) -> None:
        out.append(Case(name, fmt, build, Expect(**expect)))

    # LeRobot v2.1 (episodes "0".."2")
    lr, cam = "lerobot", f"cameras.{LEROBOT_CAMERA.rsplit('.', 1)[-1]}"
    add("lerobot_symlinked_parquet", lr, lambda c: symlink_out(c, lerobot_data(1)), kept=["0", "2"],
        quarantined={"1": _q(lerobot_data(1), "path", "outside the dataset root")})
    add("lerobot_symlinked_video", lr, lambda c: symlink_out(c, lerobot_video(2)), kept=["0", "1"],
        quarantined={"2": _q(lerobot_video(2), "path", "outside the dataset root")})
    add("lerobot_symlinked_data_folder", lr, lambda c: symlink_out(c, "data/chunk-000"), kept=[],
        missing={k: "does not exist" for k in "012"})  # the listing does not follow the folder link
    add("lerobot_symlinked_info_json", lr, lambda c: symlink_out(c, "meta/info.json"), rc=2,
        message=("meta/info.json", "outside the dataset root"))
    add("lerobot_row_without_length", lr, file_edit("meta/episodes.jsonl", lambda p: edit_jsonl(
        p, lambda rows: [{k: v for k, v in r.items() if k != "length" or r["episode_index"] != 1} for r in rows])),
        rc=2, message=("meta/episodes.jsonl", "line 2: no 'length'"))
    add("lerobot_row_with_string_index", lr, file_edit("meta/episodes.jsonl", lambda p: edit_jsonl(
        p, lambda rows: [{**r, "episode_index": "1a"} if r["episode_index"] == 1 else r for r in rows])),
        rc=2, message=("meta/episodes.jsonl", "line 2: episode_index '1a' is not a non-negative integer"))
    add("lerobot_row_with_float_index", lr, file_edit("meta/episodes.jsonl", lambda p: edit_jsonl(
        p, lambda rows: [{**r, "episode_index": 1.5} if r["episode_index"] == 1 else r for r in rows])),
        rc=2, message=("meta/episodes.jsonl", "episode_index 1.5 is not a non-negative integer"))
    add("lerobot_row_not_an_object", lr, file_edit("meta/episodes.jsonl", lambda p: edit_jsonl(
        p, lambda rows: [*rows, [1, 2]])), rc=2, message=("meta/episodes.jsonl", "line 4: not a JSON object"))
    add("lerobot_row_invalid_json", lr, file_edit("meta/episodes.jsonl", lambda p: p.write_text(
        p.read_text() + '{"episode_index": 3,\n')), rc=2, message=("meta/episodes.jsonl", "line 4: invalid JSON"))
    add("lerobot_duplicated_episode_row", lr, file_edit("meta/episodes.jsonl", lambda p: edit_jsonl(
        p, lambda rows: [*rows, {**rows[1], "length": 3}])), kept=["0", "1", "2"], duplicates={"1": "1"})
    add("lerobot_task_row_without_index", lr, file_edit("meta/tasks.jsonl", lambda p: edit_jsonl(
        p, lambda rows: [{"task": r["task"]} for r in rows])), rc=2,
        message=("meta/tasks.jsonl", "line 1: no 'task_index'"))
    add("lerobot_info_not_json", lr, file_edit("meta/info.json", lambda p: p.write_text("{not json")), rc=2,
        message=("meta/info.json", "invalid JSON"))
    add("lerobot_info_deeply_nested", lr, file_edit("meta/info.json", lambda p: p.write_text(
        p.read_text()[:-1] + ', "deep": ' + nested() + "}")), rc=2,
        message=("meta/info.json", "nested deeper than 64 levels"))
    add("lerobot_info_features_not_objects", lr, file_edit("meta/info.json", lambda p: edit_json(
        p, lambda d: {**d, "features": {"action": 3}})), rc=2, message=("meta/info.json", "missing 'features'"))
    add("lerobot_template_escapes_root", lr, file_edit("meta/info.json", lambda p: edit_json(
        p, lambda d: {**d, "data_path": "../../outside/episode_{episode_index:06d}.parquet"})), rc=2,
        message=("escapes the dataset root",))
    add("lerobot_template_absolute", lr, file_edit("meta/info.json", lambda p: edit_json(
        p, lambda d: {**d, "data_path": "/etc/passwd"})), rc=2, message=("must be relative to the dataset root",))
    add("lerobot_template_malformed", lr, file_edit("meta/info.json", lambda p: edit_json(
        p, lambda d: {**d, "video_path": "videos/{video_key"})), rc=2, message=("malformed path template",))
    add("lerobot_template_attribute_access", lr, file_edit("meta/info.json", lambda p: edit_json(
        p, lambda d: {**d, "data_path": "{episode_index.__class__}"})), rc=2,
        message=("unsupported field",))
    add("lerobot_corrupt_middle_frame", lr, file_edit(lerobot_video(1), lambda p: corrupt_middle_frame(p, 3)),
        kept=["0", "2"], quarantined={"1": _q(lerobot_video(1), cam, "frame 3 cannot be decoded")})
    add("lerobot_video_resolution_disagrees", lr, _video_replaced(lerobot_video(0), height=32, width=48),
        kept=["1", "2"], quarantined={"0": _q(lerobot_video(0), cam, "video is 48x32, the metadata says 64x48")})
    add("lerobot_video_rate_disagrees", lr, _video_replaced(lerobot_video(2), fps=15, height=48, width=64),
        kept=["0", "1"], quarantined={"2": _q(lerobot_video(2), cam, "video runs at 15.0000 fps, metadata says 10")})
    add("lerobot_truncated_parquet", lr, truncate(lerobot_data(0)), kept=["1", "2"],
        quarantined={"0": _q(lerobot_data(0), "", "")})

    # LeRobot v3.0 (episodes "0".."3", two per shared file)
    v3 = "lerobot_v3"
    v3_meta = "meta/episodes/chunk-000/file-000.parquet"
    v3_video = f"videos/{LEROBOT_CAMERA}/chunk-000/file-000.mp4"
    add("lerobot_v3_duplicated_episode_row", v3, file_edit(v3_meta, _duplicate_v3_row), kept=["0", "1", "2", "3"],
        duplicates={"1": "1"})
    add("lerobot_v3_row_without_length", v3, file_edit(v3_meta, _v3_row_without_length), rc=2,
        message=(v3_meta, "length"))
    add("lerobot_v3_corrupt_frame_in_shared_video", v3, file_edit(v3_video, lambda p: corrupt_middle_frame(p, 8)),
        kept=["0", "2", "3"], quarantined={"1": _q(v3_video, cam, "frame 8 cannot be decoded")})
    add("lerobot_v3_symlinked_shared_video", v3, lambda c: symlink_out(c, v3_video), kept=["2", "3"],
        quarantined={k: _q(v3_video, "path", "outside the dataset root") for k in "01"})

    # DreamGen (LeRobot v2.1 with <DREAM> tasks)
    dg = "dreamgen"
    add("dreamgen_symlinked_video", dg, lambda c: symlink_out(c, lerobot_video(0)), kept=["1", "2"],
        quarantined={"0": _q(lerobot_video(0), "path", "outside the dataset root")})
    add("dreamgen_duplicated_episode_row", dg, file_edit("meta/episodes.jsonl", lambda p: edit_jsonl(
        p, lambda rows: [*rows, rows[2]])), kept=["0", "1", "2"], duplicates={"2": "2"})
    add("dreamgen_row_without_length", dg, file_edit("meta/episodes.jsonl", lambda p: edit_jsonl(
        p, lambda rows: [{k: v for k, v in r.items() if k != "length"} for r in rows])), rc=2,
        message=("meta/episodes.jsonl", "line 1: no 'length'"))
    add("dreamgen_corrupt_middle_frame", dg, file_edit(lerobot_video(2), lambda p: corrupt_middle_frame(p, 2)),
        kept=["0", "1"], quarantined={"2": _q(lerobot_video(2), cam, "frame 2 cannot be decoded")})

    # RLDS (records "<file>:0".."3", four declared)
    rk = [f"{RLDS_FILE}:{i}" for i in range(4)]
    add("rlds_bad_length_crc_resyncs", "rlds", rlds(lambda r: r[0] + _flip(r[1], 2) + r[2] + r[3]),
        kept=[rk[0], rk[2], rk[3]],
        quarantined={rk[1]: _q(RLDS_FILE, "tfrecord.length", "bad CRC of the record length")})
    add("rlds_length_and_header_garbage_resyncs", "rlds", rlds(lambda r: r[0] + b"\x13" * 40 + r[1][40:] + r[2] + r[3]),
        kept=[rk[0], rk[2], rk[3]], quarantined={rk[1]: _q(RLDS_FILE, "tfrecord.length", "bad CRC")})
    add("rlds_bad_data_crc", "rlds", rlds(lambda r: r[0] + r[1] + _flip(r[2], 60) + r[3]),
        kept=[rk[0], rk[1], rk[3]], quarantined={rk[2]: _q(RLDS_FILE, "tfrecord.data", "bad CRC of the record data")})
    add("rlds_truncated_after_two_records", "rlds", rlds(lambda r: r[0] + r[1]), kept=[rk[0], rk[1]],
        missing={f"{RLDS_FILE}:unread-0": "declares 4 records, 2 could be located",
                 f"{RLDS_FILE}:unread-1": "declares 4 records, 2 could be located"})
    add("rlds_truncated_mid_record", "rlds", rlds(lambda r: r[0] + r[1] + r[2] + r[3][:200]),
        kept=rk[:3], quarantined={rk[3]: _q(RLDS_FILE, "tfrecord.data", "truncated file")})
    add("rlds_record_twice", "rlds", rlds(lambda r: r[0] + r[1] + r[2] + r[0]), kept=rk[:3],
        duplicates={rk[3]: rk[0]})
    add("rlds_not_an_example", "rlds", rlds(lambda r: r[0] + frame_record(b"\x0a\xff\xff\xff\xff\x0f") + r[2] + r[3]),
        kept=[rk[0], rk[2], rk[3]], quarantined={rk[1]: _q(RLDS_FILE, "tfrecord.data", "not a tf.train.Example")})
    add("rlds_inf_state", "rlds", rlds(lambda r: r[0] + frame_record(rlds_example(1, _inf_at(vectors(1)))) + r[2]
                                       + r[3]),
        kept=[rk[0], rk[2], rk[3]], quarantined={rk[1]: _q("", "state", "non-finite value inf at step 2, dim 1")})
    add("rlds_dataset_info_invalid", "rlds", file_edit("1.0.0/dataset_info.json", lambda p: p.write_text("{[")),
        rc=2, message=("dataset_info.json", "invalid JSON"))
    add("rlds_features_deeply_nested", "rlds", file_edit("1.0.0/features.json", lambda p: p.write_text(nested())),
        rc=2, message=("features.json", "nested deeper than 64 levels"))
    add("rlds_symlinked_shard", "rlds", lambda c: symlink_out(c, f"1.0.0/{RLDS_FILE}"), kept=[],
        missing={RLDS_FILE: "outside the dataset root"})

    # ALOHA HDF5 (episode_0..2.hdf5)
    ak = [f"episode_{e}.hdf5" for e in range(3)]
    add("aloha_symlinked_episode_file", "aloha_hdf5", lambda c: symlink_out(c, ak[1]), kept=[ak[0], ak[2]],
        quarantined={ak[1]: _q(ak[1], "path", "outside the dataset root")})
    add("aloha_symlinked_folder", "aloha_hdf5", _many(lambda c: (data_dir(c) / "more").mkdir(),
                                                      lambda c: aloha_episode(data_dir(c) / "more/episode_9.hdf5", 9),
                                                      lambda c: symlink_out(c, "more")),
        kept=ak)  # the listing does not follow a folder link: its episode is never opened
    add("aloha_external_link", "aloha_hdf5", with_h5(ak[0], _external_link), kept=ak[1:],
        quarantined={ak[0]: _q(ak[0], "observations/qpos", "an external link to")})
    add("aloha_external_raw_storage", "aloha_hdf5", with_h5(ak[2], _external_storage), kept=ak[:2],
        quarantined={ak[2]: _q(ak[2], "action", "a dataset with external raw storage")})
    add("aloha_virtual_dataset", "aloha_hdf5", with_h5(ak[1], _virtual), kept=[ak[0], ak[2]],
        quarantined={ak[1]: _q(ak[1], "action", "a virtual dataset mapping")})
    add("aloha_unwritten_image_chunks", "aloha_hdf5",
        with_h5(ak[1], _unwritten_chunks("observations/images/cam_high", 4)), kept=[ak[0], ak[2]],
        quarantined={ak[1]: _q(ak[1], "cam_high", "2 of 6 chunks were never written")})
    add("aloha_unwritten_contiguous_action", "aloha_hdf5",
        with_h5(ak[0], lambda h5, c: replace_dataset(h5, "action")), kept=ak[1:],
        quarantined={ak[0]: _q(ak[0], "action", "was never written")})
    add("aloha_truncated_file", "aloha_hdf5", truncate(ak[2]), kept=ak[:2],
        quarantined={ak[2]: _q(ak[2], "file", "not a readable HDF5 file")})
    add("aloha_action_rows_mismatch", "aloha_hdf5", with_h5(ak[1], _set("action", lambda v: v[:-1])),
        kept=[ak[0], ak[2]], quarantined={ak[1]: _q(ak[1], "action", "shape mismatch")})
    add("aloha_inf_qpos", "aloha_hdf5", with_h5(ak[0], _set("observations/qpos", _inf_at)), kept=ak[1:],
        quarantined={ak[0]: _q("", "state", "non-finite value inf at step 2, dim 1")})
    add("aloha_episode_copied", "aloha_hdf5", copy_file(ak[0], "episode_3.hdf5"), kept=ak,
        duplicates={"episode_3.hdf5": ak[0]})

    # robomimic HDF5 (image.hdf5:demo_0..2)
    mk = [f"image.hdf5:demo_{d}" for d in range(3)]
    add("robomimic_unwritten_image_chunks", "robomimic_hdf5",
        with_h5("image.hdf5", _unwritten_chunks("data/demo_1/obs/agentview_image", 2)), kept=[mk[0], mk[2]],
        quarantined={mk[1]: _q("image.hdf5", "obs/agentview_image", "4 of 6 chunks were never written")})
    add("robomimic_external_link_refuses_the_file", "robomimic_hdf5", with_h5("image.hdf5", lambda h5, c: (
        h5.__setitem__("data/demo_2/obs/leak", h5py.ExternalLink(str(outside_h5(c, np.zeros((STEPS, 2)))),
                                                                 "/secret")))), kept=[],
        quarantined={"image.hdf5:*": _q("image.hdf5", "data/demo_2/obs/leak", "an external link")})
    add("robomimic_env_args_deeply_nested", "robomimic_hdf5", with_h5(
        "image.hdf5", lambda h5, c: h5["data"].attrs.__setitem__("env_args", nested())), kept=mk)
    add("robomimic_symlinked_file", "robomimic_hdf5", lambda c: symlink_out(c, "image.hdf5"), kept=[],
        quarantined={"image.hdf5:*": _q("image.hdf5", "path", "outside the dataset root")})
    add("robomimic_actions_rows_mismatch", "robomimic_hdf5",
        with_h5("image.hdf5", _set("data/demo_1/actions", lambda v: v[:-2])), kept=[mk[0], mk[2]],
        quarantined={mk[1]: _q("image.hdf5", "obs/agentview_image", "shape mismatch")})
    add("robomimic_nan_actions", "robomimic_hdf5", with_h5("image.hdf5", _set(
        "data/demo_2/actions", lambda v: np.where(np.arange(v.size).reshape(v.shape) == 5, np.nan, v))),
        kept=mk[:2], quarantined={mk[2]: _q("", "action", "non-finite value nan at step 0, dim 5")})

    # ROS MCAP (run_0..2.mcap)
    sk = [f"run_{b}.mcap" for b in range(3)]
    add("ros_truncated_bag", "ros", truncate(sk[1], 0.6), kept=[sk[0], sk[2]],
        quarantined={sk[1]: _q(sk[1], "mcap", "unreadable MCAP")})
    add("ros_symlinked_bag", "ros", lambda c: symlink_out(c, sk[2]), kept=sk[:2],
        quarantined={sk[2]: _q(sk[2], "path", "outside the dataset root")})
    add("ros_flipped_chunk_byte", "ros", file_edit(sk[0], lambda p: p.write_bytes(_flip(p.read_bytes(), 900))),
        kept=sk[1:], quarantined={sk[0]: _q(sk[0], "mcap", "unreadable MCAP")})
    add("ros_garbage_jpeg", "ros", lambda c: ros_bag(data_dir(c) / sk[1], 1, bad_jpeg_at=4), kept=[sk[0], sk[2]],
        quarantined={sk[1]: _q(sk[1], "/camera/compressed", "cannot be decoded")})
    add("ros_bag_copied", "ros", copy_file(sk[0], "run_3.mcap"), kept=sk, duplicates={"run_3.mcap": sk[0]})

    # zarr ReplayBuffer (episodes "0".."2")
    add("zarr_symlinked_chunk", "zarr_replay", _zarr_chunk_symlink, kept=["0", "2"],
        quarantined={"1": _q("", "data/state", "resolves outside the store")})
    add("zarr_absent_image_chunk", "zarr_replay", _zarr_remove_image_chunk, kept=["0", "1"],
        missing={"2": "data/img: missing image data for rows 12..17"})
    add("zarr_zarray_invalid", "zarr_replay", file_edit("data/action/.zarray", lambda p: p.write_text("{")), rc=2,
        message=("data/action/.zarray", "invalid JSON"))
    add("zarr_zarray_deeply_nested", "zarr_replay", file_edit("data/state/.zarray", lambda p: p.write_text(nested())),
        rc=2, message=("data/state/.zarray", "nested deeper than 64 levels"))
    add("zarr_inf_state", "zarr_replay", _zarr_inf, kept=["0", "2"],
        quarantined={"1": _q("", "state", "non-finite value inf at step 2, dim 3")})
    add("zarr_symlinked_zarray", "zarr_replay", lambda c: symlink_out(c, "data/action/.zarray"), rc=2,
        message=("data/action/.zarray", "outside the dataset root"))

    # video folder (ep_0..2.json + .mp4)
    fk = [f"ep_{e}.json" for e in range(3)]
    add("video_folder_corrupt_middle_frame", "video_folder",
        file_edit("ep_1.mp4", lambda p: corrupt_middle_frame(p, 3)),
        kept=[fk[0], fk[2]], quarantined={fk[1]: _q("ep_1.mp4", "cameras.video", "frame 3 cannot be decoded")})
    add("video_folder_symlinked_video", "video_folder", lambda c: symlink_out(c, "ep_2.mp4"), kept=fk[:2],
        quarantined={fk[2]: _q("ep_2.mp4", "path", "outside the dataset root")})
    add("video_folder_sidecar_deeply_nested", "video_folder", _sidecar_nested("ep_0.json"), kept=fk[1:],
        quarantined={fk[0]: _q("ep_0.json", "", "nested deeper than 64 levels")})
    add("video_folder_state_rows_mismatch", "video_folder", _sidecar_values("ep_1.json", "state", lambda r: r[:-1]),
        kept=[fk[0], fk[2]], quarantined={fk[1]: _q("ep_1.json", "action", "shape mismatch")})
    # the video-folder connector masks non-finite rows: the row is stored masked, as NaN (not +inf)
    add("video_folder_inf_action_masked", "video_folder", _sidecar_values("ep_2.json", "action", _inf_in_rows),
        kept=fk, masked={fk[2]: ["action", 2]})
    add("video_folder_truncated_video", "video_folder", truncate("ep_0.mp4", 0.5), kept=fk[1:],
        quarantined={fk[0]: _q("ep_0.mp4", "ep_0.mp4", "")})

    # world-model outputs (v0..2.mp4 + v0..2.json)
    wk = [f"v{e}.mp4" for e in range(3)]
    add("worldmodel_symlinked_video", "worldmodel", lambda c: symlink_out(c, wk[1]), kept=[wk[0], wk[2]],
        quarantined={wk[1]: _q(wk[1], "path", "outside the dataset root")})
    add("worldmodel_corrupt_middle_frame", "worldmodel", file_edit(wk[2], lambda p: corrupt_middle_frame(p, 6)),
        kept=wk[:2], quarantined={wk[2]: _q(wk[2], "cameras.video", "frame 6 cannot be decoded")})
    add("worldmodel_sidecar_deeply_nested", "worldmodel", file_edit("v0.json", lambda p: p.write_text(
        '{"prompt": ' + nested() + "}")), kept=wk[1:],
        quarantined={wk[0]: _q("v0.json", "", "nested deeper than 64 levels")})
    add("worldmodel_frames_disagree_with_spec", "worldmodel", file_edit("v1.json", lambda p: edit_json(
        p, lambda d: {**d, "num_output_frames": 20})), kept=[wk[0], wk[2]],
        quarantined={wk[1]: _q(wk[1], "num_output_frames", "")})
    add("worldmodel_truncated_video", "worldmodel", truncate(wk[0], 0.4), kept=wk[1:],
        quarantined={wk[0]: _q(wk[0], "video", "")})
    return out


def write_case(root: Path, case: Case, clean: Path | None = None) -> Path:
    """The damaged dataset of ``case`` under ``root/<case>/data``; returns that path.

    ``clean``: the format's clean dataset, copied instead of written again, so the case differs from
    it by the damage alone (video encoders are not byte-reproducible across runs on a loaded machine).
    """
    folder = root / case.name
    if clean is not None:
        shutil.copytree(clean, data_dir(folder), symlinks=True)
    else:
        CLEAN[case.format](data_dir(folder))
    case.build(folder)
    return data_dir(folder)


def write_clean(root: Path, name: str) -> Path:
    CLEAN[name](root / name / "data")
    return root / name / "data"


def main(out: str) -> None:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=False)
    manifest = []
    clean = {name: write_clean(root / "_clean", name) for name in CLEAN}
    for case in cases():
        write_case(root, case, clean[case.format])
        manifest.append({"name": case.name, "format": FORMAT_OF.get(case.format, case.format),
                         "options": {**OPTIONS.get(case.format, {}), **case.options}, "expect": asdict(case.expect)})
    (root / "corpus.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(manifest)} cases in {root}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fault-corpus")
