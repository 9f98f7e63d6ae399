"""Generated inputs for the synthetic-data tests: a small LeRobot dataset with a val split, a
DreamGen-style copy of it, Cosmos-style output folders, and generators that misbehave on purpose."""

from __future__ import annotations

import json
import shutil
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.augment.reference import ReferenceGenerator
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.video import encode_frames

SMALL = SampleSpec(num_episodes=4, min_steps=30, max_steps=30, height=96, width=128, episodes_per_file=2)


def small_dataset(root: Path, spec: SampleSpec = SMALL) -> Path:
    """The sample robot, 4 episodes of 30 steps at 96x128; episode 3 is in the val split."""
    path = write_sample_dataset(root, spec)
    info = json.loads((path / "meta/info.json").read_text())
    info["splits"] = {"train": f"0:{spec.num_episodes - 1}", "val": f"{spec.num_episodes - 1}:{spec.num_episodes}"}
    (path / "meta/info.json").write_text(json.dumps(info, indent=2))
    return path


def dreamgen_dataset(root: Path, seed: int = 5) -> Path:
    """A DreamGen-style LeRobot v2.1 dataset: <DREAM> tasks, zero state, info.json fps 8 beside 16 fps data."""
    spec = SampleSpec(num_episodes=3, min_steps=24, max_steps=24, height=96, width=128, fps=16, layout="v2.1",
                      seed=seed)
    path = write_sample_dataset(root, spec)
    info = json.loads((path / "meta/info.json").read_text())
    info["fps"] = 8
    (path / "meta/info.json").write_text(json.dumps(info, indent=2))
    tasks = [json.loads(line) for line in (path / "meta/tasks.jsonl").read_text().splitlines()]
    (path / "meta/tasks.jsonl").write_text("".join(
        json.dumps({**t, "task": "<DREAM>" + t["task"]}) + "\n" for t in tasks))
    episodes = [json.loads(line) for line in (path / "meta/episodes.jsonl").read_text().splitlines()]
    (path / "meta/episodes.jsonl").write_text("".join(
        json.dumps({**e, "tasks": ["<DREAM>" + t for t in e["tasks"]]}) + "\n" for e in episodes))
    for data in sorted((path / "data").rglob("*.parquet")):
        table = pq.read_table(data)
        zeros = np.zeros((table.num_rows, 14), np.float32)
        state = pa.FixedSizeListArray.from_arrays(pa.array(zeros.reshape(-1)), 14)
        table = table.set_column(table.column_names.index("observation.state"), "observation.state", state)
        pq.write_table(table, data)
    return path


def video_file(path: Path, frames: int, fps: int = 8, size: tuple[int, int] = (64, 48), seed: int = 0,
               still: bool = False, blank: bool = False) -> Path:
    """An H.264 mp4 with moving blocks (or a still / blank picture)."""
    width, height = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)

    def images():
        for i in range(frames):
            if blank:
                yield np.zeros((height, width, 3), np.uint8)
                continue
            image = base.copy()
            if not still:
                x = (i * 5) % (width - 12)
                image[10:22, x:x + 12] = 255
            yield image

    data, count = encode_frames(images(), Fraction(fps), width, height)
    assert count == frames
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_json(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


class FaultyGenerator:
    """The reference generator, misbehaving for chosen parent episodes.

    ``faults[parent_episode_id]``: ``sleep`` (never answers in time), ``sleep_once`` (first call only),
    ``corrupt`` (mp4 bytes that are not a video), ``short`` (one frame missing), ``frozen`` (one
    picture repeated). Counts calls and the most calls it ever had in flight at once.
    """

    def __init__(self, faults: dict[str, str], sleep_s: float = 3.0) -> None:
        self.faults = dict(faults)
        self.sleep_s = sleep_s
        self.reference = ReferenceGenerator()
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def identity(self) -> dict:
        return {"kind": "faulty-test-generator"}

    def __call__(self, request: dict, request_dir: str, out_dir: str) -> dict:
        parent = request["parent"]["episode_id"]
        with self._lock:
            self.calls[parent] = self.calls.get(parent, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            call = self.calls[parent]
        try:
            return self._generate(request, request_dir, out_dir, self.faults.get(parent, ""), call)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _generate(self, request: dict, request_dir: str, out_dir: str, fault: str, call: int) -> dict:
        if fault == "sleep" or (fault == "sleep_once" and call == 1):
            time.sleep(self.sleep_s)
        else:
            time.sleep(0.2)  # long enough for concurrent calls to overlap
        result = self.reference(request, request_dir, out_dir)
        for camera, name in result["videos"].items():
            path = Path(out_dir) / name
            wanted = request["cameras"][camera]
            if fault == "corrupt":
                path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
            elif fault in ("short", "frozen"):
                count = wanted["num_output_frames"] - (1 if fault == "short" else 0)
                video_file(path, count, fps=int(Fraction(wanted["fps"])), size=(wanted["width"], wanted["height"]),
                           still=fault == "frozen")
        return result


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
