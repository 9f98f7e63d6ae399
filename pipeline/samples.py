"""A realistic sample dataset in LeRobot layout, written without LeRobot (pyarrow + PyAV).

A bimanual ALOHA-like robot: 14-d joint state and action (two 6-joint arms plus grippers) that
move smoothly through reach-grasp-lift-place motions, the state following the commanded action
with a first-order lag, several tasks, and two 480x640 H.264 cameras (``cam_high`` looks down at
the table, ``cam_left_wrist`` follows the left gripper). Every frame carries its episode and frame
number as a row of black/white blocks along the top edge (``read_frame_code``), so tests can
check frame-step alignment from pixels alone.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
STATE_NAMES = [f"{side}_{j}" for side in ("left", "right") for j in JOINTS]
TASKS = [
    "pick up the red cube and place it in the bowl",
    "stack the blue block on the green block",
    "hand the marker from the left gripper to the right gripper",
    "push the yellow box to the corner of the table",
]
CAMERAS = ["observation.images.cam_high", "observation.images.cam_left_wrist"]
CODE_BITS_FRAME = 12
CODE_BITS_EPISODE = 8
CODE_ROWS = 15  # the code strip is height / 15 tall


@dataclass(frozen=True)
class SampleSpec:
    num_episodes: int = 12
    fps: int = 30
    height: int = 480
    width: int = 640
    min_steps: int = 120
    max_steps: int = 200
    codec: str = "libx264"  # libx264 (H.264), libx265 (HEVC) or libsvtav1 (AV1)
    layout: str = "v3.0"  # or v2.1
    episodes_per_file: int = 4  # v3.0 only: how many episodes share a parquet / mp4 file
    seed: int = 0


def write_sample_dataset(out: str | Path, spec: SampleSpec = SampleSpec()) -> Path:
    """Write the dataset to ``out`` (created; must not exist or be empty). Returns the path."""
    if spec.codec not in CODEC_NAMES:
        raise ValueError(f"sample codec {spec.codec!r}: expected one of {', '.join(CODEC_NAMES)}")
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    rng = np.random.default_rng(spec.seed)
    lengths = rng.integers(spec.min_steps, spec.max_steps + 1, spec.num_episodes)
    episodes = [_episode(i, int(n), spec, rng) for i, n in enumerate(lengths)]
    if spec.layout == "v3.0":
        _write_v3(root, episodes, spec)
    elif spec.layout == "v2.1":
        _write_v21(root, episodes, spec)
    else:
        raise ValueError(f"layout must be v3.0 or v2.1, got {spec.layout!r}")
    return root


@dataclass
class _Episode:
    index: int
    task_index: int
    state: np.ndarray
    action: np.ndarray
    scene_seed: int

    @property
    def length(self) -> int:
        return self.state.shape[0]


def _episode(index: int, length: int, spec: SampleSpec, rng: np.random.Generator) -> _Episode:
    t = np.arange(length) / spec.fps
    phase = rng.uniform(0, 2 * np.pi, 14)
    freq = rng.uniform(0.15, 0.5, 14)
    amp = rng.uniform(0.2, 0.7, 14)
    home = np.tile([0.0, -0.6, 0.9, 0.0, -0.3, 0.0, 0.02], 2)
    action = home + amp * np.sin(2 * np.pi * freq * t[:, None] + phase)
    grip_cycle = (np.sin(2 * np.pi * t / max(t[-1], 1e-3) * 1.5 + phase[6]) > 0).astype(float)
    action[:, 6] = 0.01 + 0.06 * grip_cycle
    action[:, 13] = 0.01 + 0.06 * (1 - grip_cycle)
    state = np.empty_like(action)
    state[0] = action[0]
    for step in range(1, length):  # the arm lags the leader: first-order response
        state[step] = state[step - 1] + 0.35 * (action[step - 1] - state[step - 1])
    return _Episode(index, index % len(TASKS), state.astype(np.float32), action.astype(np.float32),
                    int(rng.integers(0, 2**31)))


# ---------------------------------------------------------------- rendering


def _background(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([120 + 40 * np.sin(xx / 90 + rng.uniform(0, 6)), 100 + 30 * np.cos(yy / 70),
                     80 + 20 * np.sin((xx + yy) / 120)], -1)
    grain = cv2.GaussianBlur(rng.normal(0, 12, (height, width, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def _arm_points(joints: np.ndarray, shoulder: tuple[float, float], scale: float, mirror: float) -> np.ndarray:
    angles = np.cumsum([joints[0] + (np.pi / 2 if mirror > 0 else -np.pi / 2), joints[1], joints[2], joints[4]])
    lengths = np.array([0.0, 0.32, 0.28, 0.12]) * scale
    xs = shoulder[0] + np.cumsum(lengths * np.sin(angles) * mirror)
    ys = shoulder[1] + np.cumsum(-lengths * np.cos(angles))
    return np.stack([xs, ys], 1)


def render_top(state: np.ndarray, background: np.ndarray, episode: int, frame: int) -> np.ndarray:
    image = background.copy()
    height, width = image.shape[:2]
    scale = min(height, width) * 0.9
    cv2.rectangle(image, (int(width * 0.42), int(height * 0.45)), (int(width * 0.52), int(height * 0.58)),
                  (200, 40, 40), -1)
    for arm, (shoulder_x, mirror) in enumerate(((0.12, 1.0), (0.88, -1.0))):
        joints = state[arm * 7: arm * 7 + 7]
        points = _arm_points(joints, (width * shoulder_x, height * 0.95), scale, mirror)
        color = (40, 40, 40) if arm == 0 else (60, 60, 90)
        cv2.polylines(image, [points.astype(np.int32)], False, color, 14, cv2.LINE_AA)
        tip = points[-1]
        opening = 10 + 300 * float(joints[6])
        for side in (-1, 1):
            cv2.line(image, (int(tip[0] + side * opening), int(tip[1])),
                     (int(tip[0] + side * opening), int(tip[1] - 25)), (230, 230, 230), 5, cv2.LINE_AA)
    _stamp_code(image, episode, frame)
    return image


def render_wrist(top: np.ndarray, state: np.ndarray, episode: int, frame: int) -> np.ndarray:
    height, width = top.shape[:2]
    scale = min(height, width) * 0.9
    tip = _arm_points(state[:7], (width * 0.12, height * 0.95), scale, 1.0)[-1]
    cx = int(np.clip(tip[0], width / 4, width * 3 / 4))
    cy = int(np.clip(tip[1], height / 4, height * 3 / 4))
    crop = top[cy - height // 4: cy + height // 4, cx - width // 4: cx + width // 4]
    image = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    _stamp_code(image, episode, frame)
    return image


def _stamp_code(image: np.ndarray, episode: int, frame: int) -> None:
    """Blocks across the full top edge, so any resize of the frame still reads back."""
    bits = [(frame >> b) & 1 for b in range(CODE_BITS_FRAME)] + [(episode >> b) & 1 for b in range(CODE_BITS_EPISODE)]
    height, width = image.shape[:2]
    block_h = max(8, height // CODE_ROWS)
    for position, bit in enumerate(bits):
        x0, x1 = position * width // len(bits), (position + 1) * width // len(bits)
        image[:block_h, x0:x1] = 255 if bit else 0


def read_frame_code(image: np.ndarray) -> tuple[int, int]:
    """(episode, frame) stamped into a frame by this generator, read back from any resize of it."""
    height, width = image.shape[:2]
    total = CODE_BITS_FRAME + CODE_BITS_EPISODE
    y = max(1, height // (2 * CODE_ROWS))
    values = []
    for position in range(total):
        x = int((position + 0.5) * width / total)
        values.append(int(image[max(0, y - 1): y + 2, max(0, x - 1): x + 2].mean() > 127))
    frame = sum(v << b for b, v in enumerate(values[:CODE_BITS_FRAME]))
    episode = sum(v << b for b, v in enumerate(values[CODE_BITS_FRAME:]))
    return episode, frame


def _camera_frames(episode: _Episode, spec: SampleSpec) -> dict[str, list[np.ndarray]]:
    background = _background(episode.scene_seed, spec.height, spec.width)
    top, wrist = [], []
    for step in range(episode.length):
        image = render_top(episode.state[step], background, episode.index, step)
        top.append(image)
        wrist.append(render_wrist(image, episode.state[step], episode.index, step))
    return {CAMERAS[0]: top, CAMERAS[1]: wrist}


_ENCODER_OPTIONS = {  # a keyframe a second and no B-frames for H.264/HEVC; LeRobot's own AV1 settings (g=2, crf=30)
    "libx264": lambda fps: {"crf": "20", "preset": "veryfast", "g": str(fps), "bf": "0"},
    "libx265": lambda fps: {"crf": "24", "preset": "veryfast",
                            "x265-params": f"keyint={fps}:min-keyint={fps}:bframes=0:log-level=none"},
    "libsvtav1": lambda fps: {"crf": "30", "preset": "10", "g": "2"},
}
CODEC_NAMES = {"libx264": "h264", "libx265": "hevc", "libsvtav1": "av1"}  # encoder -> info.json video.codec


def _encode(frames: list[np.ndarray], spec: SampleSpec) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(spec.codec, rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.time_base = Fraction(1, spec.fps)
        stream.options = _ENCODER_OPTIONS[spec.codec](spec.fps)
        for number, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = number
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


# ---------------------------------------------------------------- writing layouts


def _features(spec: SampleSpec, version: str) -> dict:
    video_info_key = "info" if version == "v3.0" else "video_info"
    features = {
        key: {"dtype": "video", "shape": [spec.height, spec.width, 3], "names": ["height", "width", "channels"],
              video_info_key: {"video.height": spec.height, "video.width": spec.width,
                               "video.codec": CODEC_NAMES[spec.codec],
                               "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": spec.fps,
                               "video.channels": 3, "has_audio": False}}
        for key in CAMERAS
    }
    features["observation.state"] = {"dtype": "float32", "shape": [14], "names": STATE_NAMES}
    features["action"] = {"dtype": "float32", "shape": [14], "names": STATE_NAMES}
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                        ("index", "int64"), ("task_index", "int64")):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _rows(episodes: list[_Episode], spec: SampleSpec, first_index: int) -> pa.Table:
    columns: dict[str, list] = {"observation.state": [], "action": [], "timestamp": [], "frame_index": [],
                                "episode_index": [], "index": [], "task_index": []}
    index = first_index
    for episode in episodes:
        n = episode.length
        columns["observation.state"].append(episode.state)
        columns["action"].append(episode.action)
        columns["timestamp"].append((np.arange(n) / spec.fps).astype(np.float32))
        columns["frame_index"].append(np.arange(n))
        columns["episode_index"].append(np.full(n, episode.index))
        columns["index"].append(np.arange(index, index + n))
        columns["task_index"].append(np.full(n, episode.task_index))
        index += n
    state = np.concatenate(columns.pop("observation.state"))
    action = np.concatenate(columns.pop("action"))
    table = {"observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), 14),
             "action": pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), 14)}
    table.update({k: pa.array(np.concatenate(v)) for k, v in columns.items()})
    return pa.table(table)


def _info(spec: SampleSpec, episodes: list[_Episode], version: str, data_path: str, video_path: str) -> dict:
    return {
        "codebase_version": version, "robot_type": "aloha", "total_episodes": len(episodes),
        "total_frames": int(sum(e.length for e in episodes)), "total_tasks": len(TASKS),
        "chunks_size": 1000, "fps": spec.fps, "splits": {"train": f"0:{len(episodes)}"},
        "data_path": data_path, "video_path": video_path, "features": _features(spec, version),
    }


def _write_v3(root: Path, episodes: list[_Episode], spec: SampleSpec) -> None:
    rows, index = [], 0
    for file_index, start in enumerate(range(0, len(episodes), spec.episodes_per_file)):
        group = episodes[start: start + spec.episodes_per_file]
        data_file = root / f"data/chunk-000/file-{file_index:03d}.parquet"
        data_file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_rows(group, spec, index), data_file)
        per_camera: dict[str, list[np.ndarray]] = {key: [] for key in CAMERAS}
        offset = 0
        for episode in group:
            for key, frames in _camera_frames(episode, spec).items():
                per_camera[key].extend(frames)
            row = {"episode_index": episode.index, "tasks": [TASKS[episode.task_index]], "length": episode.length,
                   "data/chunk_index": 0, "data/file_index": file_index, "dataset_from_index": index,
                   "dataset_to_index": index + episode.length}
            for key in CAMERAS:
                row[f"videos/{key}/chunk_index"] = 0
                row[f"videos/{key}/file_index"] = file_index
                row[f"videos/{key}/from_timestamp"] = offset / spec.fps
                row[f"videos/{key}/to_timestamp"] = (offset + episode.length) / spec.fps
            rows.append(row)
            offset += episode.length
            index += episode.length
        for key, frames in per_camera.items():
            video = root / f"videos/{key}/chunk-000/file-{file_index:03d}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            video.write_bytes(_encode(frames, spec))
    meta = root / "meta"
    (meta / "episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), meta / "episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": list(range(len(TASKS))), "task": TASKS}), meta / "tasks.parquet")
    info = _info(spec, episodes, "v3.0", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                 "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
    (meta / "info.json").write_text(json.dumps(info, indent=2))


def _write_v21(root: Path, episodes: list[_Episode], spec: SampleSpec) -> None:
    index = 0
    for episode in episodes:
        data_file = root / f"data/chunk-000/episode_{episode.index:06d}.parquet"
        data_file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_rows([episode], spec, index), data_file)
        index += episode.length
        for key, frames in _camera_frames(episode, spec).items():
            video = root / f"videos/chunk-000/{key}/episode_{episode.index:06d}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            video.write_bytes(_encode(frames, spec))
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    tasks = "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS))
    (meta / "tasks.jsonl").write_text(tasks)
    (meta / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e.index, "tasks": [TASKS[e.task_index]], "length": e.length}) + "\n"
        for e in episodes))
    info = _info(spec, episodes, "v2.1", "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                 "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4")
    (meta / "info.json").write_text(json.dumps(info, indent=2))
