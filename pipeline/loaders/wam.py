"""WAM loader: clips of context + future frames with the actions that connect them.

A clip of an episode starts at step ``t0`` and holds frames at steps ``t0 + i*s``, i < T, with
``T = n_context + n_future`` and frame stride ``s`` (given, or control fps / target fps, which must
divide). Clips never cross episodes; a clip spanning several segments (samples) of its episode reads
each frame from the segment that holds it, so nothing is stored twice.

Action conventions (stated in every batch as ``action_convention``):

- ``transitions``: ``actions[i] = action[t0 + i*s]`` for i < T-1: the command issued at frame i's step,
  which drives frame i to frame i+1. Shape [B, T-1, Da].
- ``per_frame_k``: ``actions[i, j] = action[t0 + i*s + j]`` for i < T-1, j < k (k = s by default): all
  k control steps between frame i and frame i+1, for control rates k x the frame rate. [B, T-1, k, Da].

``action_mask`` is False where the source marked an action missing, and everywhere for video-only
sources (no action dims). A batch:

    frames        uint8 [B, K, T, 3, H, W]   frame_mask bool [B, K, T]
    actions       float32 (see above)        action_mask bool (same leading dims)
    state         float32 [B, T, Ds]         state at each frame's step (when include_state)
    steps         int64 [B, T]               the step of each frame
    instruction, embodiment, kind, action_source, dataset, episode_id, key (``<episode>:<t0>``)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
import torch

from pipeline.loaders.base import UnitDataset, order_config
from pipeline.loaders.members import SampleReader, native_widths, normalize_rows, stack_padded
from pipeline.loaders.normalize import Normalizer
from pipeline.loaders.source import SampleFilter, ViewSource

CONVENTIONS = ("transitions", "per_frame_k")


@dataclass(frozen=True)
class WAMConfig:
    n_context: int = 4
    n_future: int = 12
    frame_stride: int | None = None  # control steps between frames; or derive it from target_fps
    target_fps: float | None = None
    action_convention: str = "transitions"
    k: int | None = None  # per_frame_k: control steps per frame (default: the frame stride)
    anchor_stride: int = 1  # steps between consecutive clip starts
    cameras: tuple[str, ...] | None = None
    include_state: bool = True
    normalization: str = "none"
    clip: bool = False
    state_pad_to: int | None = None
    action_pad_to: int | None = None
    batch_size: int | None = 8
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 10_000
    rank: int | None = None
    world_size: int | None = None
    filter: SampleFilter = field(default_factory=SampleFilter)

    @property
    def frames(self) -> int:
        return self.n_context + self.n_future


def frame_stride(config: WAMConfig, control_fps: Fraction) -> int:
    """Control steps between clip frames: given, or native fps / target fps (which must divide exactly)."""
    if config.frame_stride is not None:
        return config.frame_stride
    if config.target_fps is None:
        return 1
    ratio = Fraction(control_fps) / Fraction(config.target_fps).limit_denominator(1001)
    if ratio.denominator != 1 or ratio < 1:
        raise ValueError(f"target fps {config.target_fps} does not divide the native {float(control_fps)} fps")
    return int(ratio)


@dataclass
class _Episode:
    rows: np.ndarray  # sample-table rows of its segments, by step
    starts: np.ndarray  # first step of each segment
    length: int
    stride: int


class ClipIndex:
    """Clip anchors per shard as (episode, first t0, count) intervals: memory grows with segments, not steps."""

    def __init__(self, source: ViewSource, keep: np.ndarray, config: WAMConfig) -> None:
        table = source.table
        self.episodes: list[_Episode] = []
        by_episode: dict[str, list[int]] = {}
        for row in np.nonzero(keep)[0]:
            by_episode.setdefault(table["episode_id"][row], []).append(int(row))
        span_frames = config.frames - 1
        intervals: list[list[tuple[int, int, int]]] = [[] for _ in source.manifest.shards]
        for rows in by_episode.values():
            rows = sorted(rows, key=lambda r: table["step_start"][r])
            stride = frame_stride(config, source_fps(source, rows[0]))
            length = int(table["episode_num_steps"][rows[0]])
            last_start = length - span_frames * stride  # exclusive: the last frame's step is < length
            episode = len(self.episodes)
            self.episodes.append(_Episode(np.asarray(rows), np.asarray([table["step_start"][r] for r in rows]),
                                          length, stride))
            a = config.anchor_stride
            for row in rows:
                begin = int(table["step_start"][row])
                end = min(begin + int(table["num_steps"][row]), last_start)
                first = -(-begin // a) * a
                if first < end:
                    intervals[int(table["shard"][row])].append((episode, first, (end - first + a - 1) // a))
        self.anchor_stride = config.anchor_stride
        self.intervals = [np.asarray(i, dtype=np.int64).reshape(-1, 3) for i in intervals]
        self.starts = [np.concatenate([[0], np.cumsum(i[:, 2])]) for i in self.intervals]
        self.counts = np.array([int(s[-1]) for s in self.starts], dtype=np.int64)

    def locate(self, shard: int, unit: int) -> tuple[int, int]:
        """(episode number, t0) of a shard-local clip."""
        position = int(np.searchsorted(self.starts[shard], unit, side="right")) - 1
        episode, first, _ = self.intervals[shard][position]
        return int(episode), int(first + (unit - self.starts[shard][position]) * self.anchor_stride)

    def step_location(self, episode: int, step: int) -> tuple[int, int]:
        """(sample-table row, offset in that sample) holding ``step`` of an episode."""
        e = self.episodes[episode]
        position = int(np.searchsorted(e.starts, step, side="right")) - 1
        return int(e.rows[position]), int(step - e.starts[position])


def source_fps(source: ViewSource, row: int) -> Fraction:
    num, den = source.table["fps_num"][row], source.table["fps_den"][row]
    return Fraction(int(num), int(den))


class WAMDataset(UnitDataset):
    def __init__(self, source: ViewSource, config: WAMConfig = WAMConfig(), epoch: int = 0) -> None:
        super().__init__(order_config(config.batch_size, config.seed, config.shuffle, config.shuffle_buffer,
                                      config.rank, config.world_size), config.batch_size is not None, epoch)
        if config.action_convention not in CONVENTIONS:
            raise ValueError(f"action_convention must be one of {CONVENTIONS}")
        if config.frames < 2:
            raise ValueError("a clip needs at least 2 frames")
        if config.k is not None and config.frame_stride is not None and config.k > config.frame_stride:
            raise ValueError(f"k={config.k} control steps per frame exceeds the frame stride {config.frame_stride}")
        self.source, self.config = source, config
        view = source.manifest.config
        self.cameras = list(config.cameras) if config.cameras is not None else list(source.manifest.cameras)
        self.height, self.width = view.height, view.width
        self.reader = SampleReader(source)
        self.normalizer = Normalizer(source.stats, config.normalization, config.clip)
        keep = config.filter.mask(source.table) & ~np.isin(source.table["episode_id"], list(source.deleted))
        self.clips = ClipIndex(source, keep, config)

    def unit_counts(self) -> np.ndarray:
        return self.clips.counts

    def identity(self) -> dict:
        return {"view": self.source.view_id, "config": asdict(self.config) | {"rank": None, "world_size": None}}

    def image_buffer_shape(self) -> tuple[int, ...]:
        return (self.order_config.batch_size, len(self.cameras), self.config.frames, self.height, self.width, 3)

    def build_batch(self, shards: np.ndarray, units: np.ndarray) -> dict:
        t = self.config.frames
        size = len(units)
        frames = self.image_buffer((size, len(self.cameras), t, self.height, self.width, 3))
        pixels = frames.numpy()
        frame_mask = np.zeros((size, len(self.cameras), t), bool)
        infos, keys, steps, states, actions, masks, instructions, strides = [], [], [], [], [], [], [], []
        for b, (shard, unit) in enumerate(zip(shards.tolist(), units.tolist(), strict=True)):
            episode, t0 = self.clips.locate(shard, unit)
            stride = self.clips.episodes[episode].stride
            strides.append(stride)
            clip_steps = t0 + stride * np.arange(t)
            state_rows = []
            for i, step in enumerate(clip_steps.tolist()):
                sample, offset = self.clips.step_location(episode, step)
                arrays = self.reader.arrays(sample)
                state_rows.append(arrays.state[offset])
                for c, camera in enumerate(self.cameras):
                    frame_mask[b, c, i] = self.reader.frame_into(sample, camera, offset, pixels[b, c, i])
            first_sample, first_offset = self.clips.step_location(episode, t0)
            first = self.reader.arrays(first_sample)
            action, mask = self._actions(episode, t0, stride)
            infos.append(first.info)
            keys.append(f"{first.info['episode_id']}:{t0}")
            steps.append(clip_steps)
            states.append(np.stack(state_rows))
            actions.append(action)
            masks.append(mask)
            task = int(first.task_index[first_offset])
            instructions.append(first.info["tasks"][task] if task >= 0 else "")
        embodiments = [i["embodiment"] for i in infos]
        action = normalize_rows(self.normalizer, embodiments, "action",
                                stack_padded(actions, self.config.action_pad_to, "action"),
                                native_widths(self.normalizer, "action"))
        batch = {
            "frames": frames.permute(0, 1, 2, 5, 3, 4),
            "frame_mask": torch.from_numpy(frame_mask),
            "actions": torch.from_numpy(action),
            "action_mask": torch.from_numpy(np.stack(masks)),
            "steps": torch.from_numpy(np.stack(steps).astype(np.int64)),
            "frame_stride": torch.tensor(strides, dtype=torch.int64),
            "action_convention": [self.config.action_convention] * size,
            "instruction": instructions,
            "embodiment": embodiments,
            "kind": [i["kind"] for i in infos],
            "action_source": [i["action_source"] for i in infos],
            "dataset": [i["dataset"] for i in infos],
            "episode_id": [i["episode_id"] for i in infos],
            "key": keys,
        }
        if self.config.include_state:
            state = stack_padded(states, self.config.state_pad_to, "state")
            batch["state"] = torch.from_numpy(normalize_rows(self.normalizer, embodiments, "state", state,
                                                             native_widths(self.normalizer, "state")))
        return batch

    def _actions(self, episode: int, t0: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.config.frames
        if self.config.action_convention == "transitions":
            action_steps = t0 + stride * np.arange(t - 1)
        else:
            k = self.config.k or stride
            action_steps = (t0 + stride * np.arange(t - 1))[:, None] + np.arange(k)[None, :]
        flat = action_steps.reshape(-1)
        values, valid = [], []
        for step in flat.tolist():
            sample, offset = self.clips.step_location(episode, step)
            arrays = self.reader.arrays(sample)
            values.append(arrays.action[offset])
            valid.append(bool(arrays.action_valid[offset]) and arrays.action.shape[1] > 0)
        values = np.stack(values).reshape(*action_steps.shape, -1)
        return values, np.asarray(valid).reshape(action_steps.shape)
