"""LeRobot data files: the step columns of an exported episode and the Parquet files that hold them.

The timestamps are the stored source clock in the source's dtype when LeRobot's spacing check passes
(else ``frame_index / fps``), and LeRobot's pairing rule applied to them must give the stored step ->
frame pairing (``check_pairing``); every other column keeps its source name and dtype. v2.1 writes
one file per episode, v3.0 files of many episodes up to a byte budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.export.lerobot_meta import NUMERIC_FEATURES, feature_stats
from pipeline.export.output import StagedOutput
from pipeline.export.video import ExportError
from pipeline.stats import FeatureStats
from pipeline.store.episodes import EpisodeStore
from schemas import (
    EXTRA_PREFIX,
    PAIRING_TOLERANCE_NS,
    EpisodeMeta,
    StepArrays,
    align_nearest,
    index_to_ns,
    ns_to_seconds,
    period_ns,
    seconds_to_ns,
)


@dataclass
class Columns:
    """The columns every exported episode gets and their dtypes: the same set in every file (LeRobot
    loads all parquet files as one table) and the source's dtypes where the catalog recorded them."""

    reward: bool
    done: bool
    extras: list[str]
    dtypes: dict[str, str]


@dataclass
class ExportedEpisode:
    """One exported episode as the metadata files describe it."""

    index: int
    meta: EpisodeMeta
    length: int
    tasks: list[str]
    data_chunk: int = 0
    data_file: int = 0
    start: int = 0  # dataset_from_index
    videos: dict[str, tuple[int, int, float, float]] = field(default_factory=dict)  # key -> chunk, file, from, to
    stats: dict[str, FeatureStats] = field(default_factory=dict)


_DEFAULT_DTYPES = {"timestamp": "float32", "next.reward": "float32", "frame_index": "int64",
                   "episode_index": "int64", "index": "int64", "task_index": "int64"}
EXACT_TIMESTAMP = "timestamp"  # step extra holding source seconds that integer ns cannot carry bit for bit


def plan_columns(store: EpisodeStore, metas: list[EpisodeMeta], warnings: list[str]) -> Columns:
    """Reward/done columns when any episode has them (or its source had them), extras every episode has."""
    reward = done = False
    seen: dict[str, int] = {}
    for meta in metas:
        table = store.read_steps_table(meta, columns=["reward", "is_terminal"])
        reward = reward or table.column("reward").null_count < table.num_rows or (
            "lerobot.dtype.next.reward" in meta.extras)
        done = done or bool(np.any(table.column("is_terminal").to_numpy(zero_copy_only=False))) or (
            "lerobot.dtype.next.done" in meta.extras)
        for name in pq.read_schema(store.objects.abspath(meta.steps_path), filesystem=store.fs).names:
            if name.startswith(EXTRA_PREFIX):
                seen[name[len(EXTRA_PREFIX):]] = seen.get(name[len(EXTRA_PREFIX):], 0) + 1
    extras = sorted(name for name, count in seen.items() if count == len(metas) and name != EXACT_TIMESTAMP
                    and name not in _DEFAULT_DTYPES and name not in ("observation.state", "action"))
    partial = sorted(name for name, count in seen.items() if count < len(metas) and name != EXACT_TIMESTAMP)
    if partial:
        warnings.append(f"step extras {partial} are in only some exported episodes: not exported "
                               "(every LeRobot data file must have the same columns)")
    first = metas[0].extras
    dtypes = {name: first.get(f"lerobot.dtype.{name}", default) for name, default in _DEFAULT_DTYPES.items()}
    return Columns(reward=reward, done=done, extras=extras, dtypes=dtypes)


def episode_timestamps(meta: EpisodeMeta, steps: StepArrays, dtype: str) -> np.ndarray:
    """The ``timestamp`` column: the stored source clock in the source dtype, or frame_index / fps when
    the source clock fails LeRobot's spacing check (1/fps within 1e-4 s) but stays within a quarter period."""
    n, fps = steps.num_steps, meta.control_fps
    exact = steps.extras.get(EXACT_TIMESTAMP)
    written = (np.asarray(exact) if exact is not None else ns_to_seconds(steps.timestamp_ns)).astype(dtype)
    spacing = np.abs(np.diff(written.astype(np.float64)) - fps.denominator / fps.numerator)
    if n < 2 or spacing.max() <= PAIRING_TOLERANCE_NS / 1e9:
        return written
    grid = index_to_ns(np.arange(n), fps)
    drift = np.abs(steps.timestamp_ns - steps.timestamp_ns[0] - grid)
    if int(drift.max()) > period_ns(fps) // 4:
        worst = int(drift.argmax())
        raise ExportError(meta.episode_id, "timestamp_ns", f"step {worst} is {int(drift[worst])} ns off the "
                          f"{fps} fps grid: LeRobot needs timestamps spaced 1/fps; resample first")
    return (np.arange(n, dtype=np.int64) * fps.denominator / fps.numerator).astype(dtype)


def check_pairing(meta: EpisodeMeta, steps: StepArrays, written: np.ndarray, warnings: list[str]) -> None:
    """LeRobot's reader pairs step i with the frame nearest ``timestamp[i]`` (1e-4 s): that must be the
    stored pairing. Steps without a frame stay without one (LeRobot's reader refuses to load them)."""
    query = seconds_to_ns(written.astype(np.float64))
    for cam in meta.cameras:
        frames = steps.frame_index.get(cam.name)
        expected = align_nearest(query, index_to_ns(np.arange(cam.num_frames), cam.fps), PAIRING_TOLERANCE_NS)
        if frames is None or not np.array_equal(frames, expected):
            step = 0 if frames is None else int(np.flatnonzero(frames != expected)[0])
            raise ExportError(meta.episode_id, f"frame.{cam.name}", f"step {step} is paired with frame "
                              f"{None if frames is None else int(frames[step])} but LeRobot's reader would pair "
                              f"it with frame {int(expected[step])} from its timestamp: LeRobot cannot express "
                              "this alignment")
        unpaired = int((frames < 0).sum())
        if unpaired:
            warnings.append(f"episode {meta.episode_id}: {unpaired} step(s) have no {cam.name} frame within "
                                   "1e-4 s of their timestamp (as in the source): LeRobot's reader raises on them")


class DataWriter:
    """Step rows to Parquet: one file per episode (v2.1) or files of many episodes (v3.0)."""

    def __init__(self, sink: StagedOutput, layout: str, chunks_size: int, data_file_bytes: int) -> None:
        self.sink, self.layout, self.chunks_size, self.data_file_bytes = sink, layout, chunks_size, data_file_bytes
        self.pending: list[pa.Table] = []
        self.pending_bytes = 0
        self.file = 0
        self.next_index = 0

    def add(self, episode: ExportedEpisode, table: pa.Table) -> None:
        episode.start = self.next_index
        self.next_index += table.num_rows
        if self.layout == "v2.1":
            episode.data_chunk = episode.index // self.chunks_size
            self.sink.parquet(f"data/chunk-{episode.data_chunk:03d}/episode_{episode.index:06d}.parquet", table)
            return
        if self.pending and self.pending_bytes + table.nbytes > self.data_file_bytes:
            self.flush()
        episode.data_chunk, episode.data_file = self.file // self.chunks_size, self.file
        self.pending.append(table)
        self.pending_bytes += table.nbytes

    def flush(self) -> None:
        if self.pending:
            chunk = self.file // self.chunks_size
            self.sink.parquet(f"data/chunk-{chunk:03d}/file-{self.file:03d}.parquet", pa.concat_tables(self.pending))
            self.pending, self.pending_bytes = [], 0
            self.file += 1

    def close(self) -> None:
        self.flush()


def _fixed(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def episode_rows(episode: ExportedEpisode, steps: StepArrays, tasks: dict[str, int], plan: Columns,
                 warnings: list[str], first_index: int) -> pa.Table:
    """One episode's data rows: LeRobot's columns in the source dtypes, task indices made global."""
    meta, n = episode.meta, steps.num_steps
    local = steps.task_index.copy()
    if meta.tasks and (local < 0).any():
        warnings.append(f"episode {meta.episode_id}: {int((local < 0).sum())} steps without an "
                               f"instruction get the episode's first task")
        local[local < 0] = 0
    texts = meta.tasks or [""]
    local = np.where(local < 0, 0, local)
    for text in texts:
        tasks.setdefault(text, len(tasks))
    to_global = np.array([tasks[t] for t in texts], dtype=np.int64)
    episode.tasks = [texts[i] for i in dict.fromkeys(local.tolist())]
    if not (steps.state_valid.all() and steps.action_valid.all()):
        warnings.append(f"episode {meta.episode_id}: LeRobot has no validity masks; masked state/action "
                               "rows are exported as stored")
    dtypes = plan.dtypes
    timestamps = episode_timestamps(meta, steps, dtypes["timestamp"])
    check_pairing(meta, steps, timestamps, warnings)
    frame = np.arange(n, dtype=np.int64)
    columns = {
        "observation.state": _fixed(steps.state),
        "action": _fixed(steps.action),
        "timestamp": pa.array(timestamps),
        "frame_index": pa.array(frame.astype(dtypes["frame_index"])),
        "episode_index": pa.array(np.full(n, episode.index, dtypes["episode_index"])),
        "index": pa.array((frame + first_index).astype(dtypes["index"])),
        "task_index": pa.array(to_global[local].astype(dtypes["task_index"])),
    }
    if plan.reward:
        columns["next.reward"] = pa.array(steps.reward.astype(dtypes["next.reward"]), from_pandas=True)
    if plan.done:
        columns["next.done"] = pa.array(steps.is_terminal)
    for name in plan.extras:
        values = np.asarray(steps.extras[name])
        if name.startswith("annotation.") and values.ndim == 1 and values.dtype.kind in "iu":
            # Task indices into the episode's list -> into tasks.jsonl, in the column's own dtype.
            values = np.where(values >= 0, to_global[np.clip(values, 0, len(to_global) - 1)], -1)
            values = values.astype(meta.extras.get(f"lerobot.dtype.{name}", "int64"))
        columns[name] = _fixed(values.reshape(n, -1)) if values.ndim > 1 else pa.array(values)
    episode.stats = {"observation.state": feature_stats(steps.state), "action": feature_stats(steps.action)}
    for name in NUMERIC_FEATURES:
        episode.stats[name] = feature_stats(columns[name].to_numpy())
    return pa.table(columns)
