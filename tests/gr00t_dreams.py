"""GR00T-Dreams output written the way its scripts write it (test fixtures, not a tidy LeRobot dataset).

``IDM_dump/raw_to_lerobot.py --cosmos_predict2`` builds each episode as a pandas DataFrame of
zero ``np.float32[44]`` state/action rows, ``timestamp = i / 16``, ``episode_index``/``index``/
``task_index`` int64 and ``annotation.<source> = [[task]]`` (list<int64>), with no ``frame_index``;
``df.to_parquet``; copies the 16 fps videos to ``videos/chunk-000/observation.images.<view>/
episode_NNNNNN.mp4``; writes ``info.json`` without ``codebase_version`` (``robot_type`` "dream",
``fps`` 8, ``shape`` (44,) whatever the embodiment, video features with a ``video_info`` block from
ffprobe) and copies the embodiment's ``modality.json`` / ``stats.json``.
``IDM_dump/dump_idm_actions.py`` then reads each episode back with pandas, sets every row's
``action`` to the IDM's float64 prediction (as wide as the modality's action groups: 44 gr1, 6
so100, 12 robocasa), writes it back with ``to_parquet`` (so ``list<double>``), copies meta/ and
videos/ and prefixes the tasks in ``tasks.jsonl`` (only there) with ``<DREAM>``.
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.video import encode_frames

# Copied from GR00T-Dreams IDM_dump/global_metadata/<embodiment>/modality.json (facts, abridged where marked).
_SO100_JOINTS = ["main_shoulder_pan", "main_shoulder_lift", "main_elbow_flex", "main_wrist_flex", "main_wrist_roll",
                 "main_gripper"]
MODALITY = {
    "so100": {
        "state": {name: {"start": i, "end": i + 1} for i, name in enumerate(_SO100_JOINTS)},
        "action": {name: {"start": i, "end": i + 1, "absolute": False} for i, name in enumerate(_SO100_JOINTS)},
        "video": {"webcam": {"original_key": "observation.images.webcam"}},
        "annotation": {"human.task_description": {"original_key": "task_index"}},
    },
    "gr1": {
        "state": {g: {"start": s, "end": e} for g, s, e in (
            ("left_arm", 0, 7), ("left_hand", 7, 13), ("left_leg", 13, 19), ("neck", 19, 22), ("right_arm", 22, 29),
            ("right_hand", 29, 35), ("right_leg", 35, 41), ("waist", 41, 44))},
        "action": {g: {"start": s, "end": e} for g, s, e in (
            ("left_arm", 0, 7), ("left_hand", 7, 13), ("left_leg", 13, 19), ("neck", 19, 22), ("right_arm", 22, 29),
            ("right_hand", 29, 35), ("right_leg", 35, 41), ("waist", 41, 44))},
        "video": {"ego_view": {"original_key": "observation.images.ego_view"}},
        "annotation": {"human.coarse_action": {}, "human.fine_action": {}, "human.validity": {}},  # abridged
    },
    "robocasa": {
        "state": {"base_position": {"start": 0, "end": 3},
                  "base_rotation": {"start": 3, "end": 7, "rotation_type": "quaternion"}},  # abridged (53 dims)
        "action": {
            "base_motion": {"start": 0, "end": 4, "absolute": False},
            "control_mode": {"start": 4, "end": 5, "dtype": "int64", "range": [0, 1]},
            "end_effector_position": {"start": 5, "end": 8, "absolute": False},
            "end_effector_rotation": {"start": 8, "end": 11, "absolute": False, "rotation_type": "axis_angle"},
            "gripper_close": {"start": 11, "end": 12, "dtype": "int64", "range": [0, 1]},
        },
        "video": {"left_view": {"original_key": "observation.images.left_view"}},  # abridged (3 views)
        "annotation": {"human.action.task_description": {}, "human.validity": {}},
    },
}
# raw_to_lerobot.py main(): embodiment -> annotation source and the output folder it is run with.
ANNOTATION_SOURCE = {"so100": "human.task_description", "gr1": "human.coarse_action",
                     "robocasa": "human.action.task_description"}
FOLDER = {"so100": "so100.data", "gr1": "gr1_unified.data", "robocasa": "robocasa_panda_omron.data"}
FRAMES = 93  # --cosmos_predict2: fixed frame count, timestamps at 16 fps, info.json fps 8
VIDEO_FPS = 16


def idm_width(embodiment: str) -> int:
    """dump_idm_actions.py: ``total_dim = max(end)`` over the modality's action groups."""
    return max(part["end"] for part in MODALITY[embodiment]["action"].values())


def write_raw_clips(raw: Path, embodiment: str, prompts: list[str], frames: int = FRAMES, seed: int = 0) -> Path:
    """preprocess_video.py output: ``videos/observation.images.<view>/<id>.mp4`` and ``labels/<id>.txt``."""
    rng = np.random.default_rng(seed)
    for i, prompt in enumerate(prompts):
        (raw / "labels").mkdir(parents=True, exist_ok=True)
        (raw / "labels" / f"clip{i:02d}.txt").write_text(prompt + "\n")
        for video_key in (v["original_key"] for v in MODALITY[embodiment]["video"].values()):
            base = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
            images = []
            for f in range(frames):
                image = base.copy()
                image[(f * 2) % 240:(f * 2) % 240 + 16, 100:116] = 255
                images.append(image)
            data, count = encode_frames(iter(images), Fraction(VIDEO_FPS), 256, 256)
            assert count == frames
            (raw / "videos" / video_key).mkdir(parents=True, exist_ok=True)
            (raw / "videos" / video_key / f"clip{i:02d}.mp4").write_bytes(data)
    return raw


def raw_to_lerobot(raw: Path, out: Path, embodiment: str, frames: int = FRAMES) -> Path:
    """What ``raw_to_lerobot.py --cosmos_predict2`` writes (``frame_count`` fixed, here ``frames``)."""
    source = ANNOTATION_SOURCE[embodiment]
    folders = sorted(p for p in (raw / "videos").iterdir() if p.is_dir())
    ids = sorted({v.stem for folder in folders for v in folder.glob("*.mp4")})
    (out / "meta").mkdir(parents=True, exist_ok=True)
    annotation_to_index: dict[str, int] = {}
    episodes, total = [], 0
    for video_id in ids:
        annotation = (raw / "labels" / f"{video_id}.txt").read_text().strip()
        annotation_to_index.setdefault(annotation, len(annotation_to_index))
        index = len(episodes)
        data = {
            "observation.state": [np.zeros(44, dtype=np.float32)] * frames,
            "action": [np.zeros(44, dtype=np.float32)] * frames,
            "timestamp": [i / VIDEO_FPS for i in range(frames)],
            "episode_index": [index] * frames,
            "index": np.arange(total, total + frames),
            "task_index": [annotation_to_index[annotation]] * frames,
            f"annotation.{source}": [[annotation_to_index[annotation]]] * frames,
        }
        path = out / f"data/chunk-{index // 1000:03d}/episode_{index:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(data).to_parquet(path)
        for folder in folders:
            video = out / f"videos/chunk-{index // 1000:03d}/{folder.name}/episode_{index:06d}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / f"{video_id}.mp4", video)
        episodes.append({"episode_index": index, "tasks": [annotation], "length": frames, "video_id": video_id})
        total += frames
    _jsonl(out / "meta/tasks.jsonl", [{"task_index": i, "task": t} for t, i in annotation_to_index.items()])
    _jsonl(out / "meta/episodes.jsonl", episodes)
    features = {
        "observation.state": {"dtype": "float32", "shape": (44,), "names": [f"motor_{i}" for i in range(44)]},
        "action": {"dtype": "float32", "shape": (44,), "names": [f"motor_{i}" for i in range(44)]},
        f"annotation.{source}": {"dtype": "int64", "shape": (1,)},
    }
    for folder in folders:  # get_video_metadata(): ffprobe of the first video, r_frame_rate as a float
        features[folder.name] = {"dtype": "video", "shape": [256, 256, 3], "names": ["height", "width", "channel"],
                                 "video_info": {"video.fps": float(VIDEO_FPS), "video.codec": "h264",
                                                "video.pix_fmt": "yuv420p", "video.is_depth_map": False}}
    info = {"robot_type": "dream", "total_episodes": len(ids), "total_frames": total,
            "total_tasks": len(annotation_to_index), "total_videos": len(folders), "chunks_size": 1000,
            "total_chunks": (len(ids) + 999) // 1000, "fps": 8,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": features}
    (out / "meta/info.json").write_text(json.dumps(info, indent=4))
    (out / "meta/modality.json").write_text(json.dumps(MODALITY[embodiment], indent=4))
    width = len(_SO100_JOINTS) if embodiment == "so100" else 44
    stats = {key: {s: [0.0] * width for s in ("mean", "std", "min", "max", "q01", "q99")}
             for key in ("action", "observation.state")}
    (out / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    return out


def dump_idm_actions(dataset: Path, out: Path, embodiment: str, seed: int = 0) -> dict[int, np.ndarray]:
    """What ``dump_idm_actions.py`` writes: IDM actions (here seeded noise) per row. Returns them by episode."""
    rng = np.random.default_rng(seed)
    width = idm_width(embodiment)
    written = {}
    for path in sorted((dataset / "data").rglob("episode_*.parquet")):
        traj_data = pd.read_parquet(path)
        actions = rng.normal(size=(len(traj_data), width))
        for s in range(len(traj_data)):
            traj_data.at[s, "action"] = np.mean([actions[s]], axis=0)  # the mean over the horizon's predictions
        target = out / path.relative_to(dataset)
        target.parent.mkdir(parents=True, exist_ok=True)
        traj_data.to_parquet(target)
        written[int(path.stem.split("_")[1])] = actions
    shutil.copytree(dataset / "meta", out / "meta")
    tasks = [json.loads(line) for line in (out / "meta/tasks.jsonl").read_text().splitlines()]
    _jsonl(out / "meta/tasks.jsonl", [{**t, "task": t["task"] if t["task"].startswith("<DREAM>")
                                       else f"<DREAM>{t['task']}"} for t in tasks])
    shutil.copytree(dataset / "videos", out / "videos")
    return written


def gr00t_dreams_dataset(root: Path, embodiment: str = "so100", prompts: tuple[str, ...] = (
        "pick up the red cube", "put the cube in the bowl"), frames: int = FRAMES,
        seed: int = 0) -> tuple[Path, dict[int, np.ndarray]]:
    """The whole pipeline: raw clips -> raw_to_lerobot -> dump_idm_actions. Returns (dataset, IDM actions)."""
    raw = write_raw_clips(root / "raw", embodiment, list(prompts), frames, seed)
    lerobot = raw_to_lerobot(raw, root / FOLDER[embodiment], embodiment, frames)
    out = root / f"{FOLDER[embodiment]}_idm"
    return out, dump_idm_actions(lerobot, out, embodiment, seed)


def _jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
