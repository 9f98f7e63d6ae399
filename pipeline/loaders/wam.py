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
- ``cosmos_ee_delta``: what Cosmos action-conditioned training computes from the state at the clip's
  frames (``pipeline.cosmos_action``): ``[R_i^T (p_{i+1} - p_i), euler(R_i^T R_{i+1}), gripper_{i+1}]``
  scaled by ``[20]*6 + [1]``, pose = state dims ``ee_pose_dims``, gripper = the step extra
  ``gripper_extra`` (the view must carry it: ``ViewConfig.step_extras``) or state dim ``gripper_dim``.
  [B, T-1, 7], never normalized (Cosmos' scale is the normalization); masked where a state is.
  Cosmos' own clips: ``n_context=1, n_future=12, frame_stride=1``.

``action_mask`` is False where the source marked an action missing, and everywhere for video-only
sources (no action dims). ``on_corrupt="skip"`` leaves a clip with a corrupt member out of its batch
(counted in ``skip_log``; pipeline.loaders.integrity) instead of raising ``CorruptMemberError``. A batch:

    frames        uint8 [B, K, T, 3, H, W]   frame_mask bool [B, K, T]
    actions       float32 (see above)        action_mask bool (same leading dims)
    state         float32 [B, T, Ds]         state at each frame's step (when include_state)
    steps         int64 [B, T]               the step of each frame
    extras        {name: float32 [B, T, ...]} each of ``step_extras`` at each frame's step (+ extras_mask [B, T])
    instruction, embodiment, kind, action_source, dataset, episode_id, key (``<episode>:<t0>``)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
import torch

from pipeline.cosmos_action import GRIPPER_EXTRA, ee_delta_actions
from pipeline.loaders.base import UnitDataset, order_config
from pipeline.loaders.integrity import SKIP_KEY, CorruptMemberError, check_on_corrupt
from pipeline.loaders.members import SampleReader, native_widths, normalize_rows, stack_padded
from pipeline.loaders.normalize import Normalizer
from pipeline.loaders.source import SampleFilter, ViewSource, group_by_label

CONVENTIONS = ("transitions", "per_frame_k", "cosmos_ee_delta")


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
    step_extras: tuple[str, ...] = ()  # step extras carried into batches (the view must hold them)
    ee_pose_dims: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # cosmos_ee_delta: state dims x, y, z, roll, pitch, yaw
    gripper_extra: str | None = GRIPPER_EXTRA  # cosmos_ee_delta: the gripper's step extra ...
    gripper_dim: int | None = None  # ... or its state dim (used when gripper_extra is None)
    on_corrupt: str = "raise"  # or "skip": a clip with a corrupt member is left out of its batch and counted

    def __post_init__(self) -> None:
        check_on_corrupt(self.on_corrupt)

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


class ClipIndex:
    """Clip anchors per shard as (episode, first t0, count) intervals: memory grows with segments, not steps.

    Episodes are numbered in order of first appearance among the kept rows; their segments are flat
    arrays (rows grouped by episode, each group by first step), so a million episodes cost a few
    arrays, and the intervals are computed for all segments at once.
    """

    def __init__(self, source: ViewSource, keep: np.ndarray, config: WAMConfig) -> None:
        table = source.table
        rows, bounds, _ = table.by_episode(np.nonzero(keep)[0])
        self._rows, self._bounds = rows, bounds
        self._starts = table["step_start"][rows]
        episode_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))  # each grouped row's episode
        first_rows = rows[bounds[:-1]]
        self.stride = _strides(config, table["fps_num"][first_rows], table["fps_den"][first_rows])
        self.length = table["episode_num_steps"][first_rows]
        last_start = self.length - (config.frames - 1) * self.stride  # exclusive: the last frame's step is < length
        a = config.anchor_stride
        begin = self._starts
        end = np.minimum(begin + table["num_steps"][rows], last_start[episode_of])
        first = -(-begin // a) * a
        usable = np.nonzero(first < end)[0]
        triples = np.stack([episode_of[usable], first[usable], (end[usable] - first[usable] + a - 1) // a], axis=1)
        per_shard = group_by_label(triples, table["shard"][rows][usable], len(source.manifest.shards))
        self.anchor_stride = a
        self.intervals = [part.astype(np.int64).reshape(-1, 3) for part in per_shard]  # (episode, first step) order
        self.starts = [np.concatenate([[0], np.cumsum(i[:, 2])]) for i in self.intervals]
        self.counts = np.array([int(s[-1]) for s in self.starts], dtype=np.int64)

    def locate(self, shard: int, unit: int) -> tuple[int, int]:
        """(episode number, t0) of a shard-local clip."""
        position = int(np.searchsorted(self.starts[shard], unit, side="right")) - 1
        episode, first, _ = self.intervals[shard][position]
        return int(episode), int(first + (unit - self.starts[shard][position]) * self.anchor_stride)

    def step_location(self, episode: int, step: int) -> tuple[int, int]:
        """(sample-table row, offset in that sample) holding ``step`` of an episode."""
        begin, end = self._bounds[episode], self._bounds[episode + 1]
        starts = self._starts[begin:end]
        position = int(np.searchsorted(starts, step, side="right")) - 1
        return int(self._rows[begin + position]), int(step - starts[position])


def _strides(config: WAMConfig, fps_num: np.ndarray, fps_den: np.ndarray) -> np.ndarray:
    """Each episode's frame stride, computed once per distinct rate."""
    if not len(fps_num):
        return np.zeros(0, dtype=np.int64)
    rates, inverse = np.unique(np.stack([fps_num, fps_den], axis=1), axis=0, return_inverse=True)
    per_rate = np.array([frame_stride(config, Fraction(int(n), int(d))) for n, d in rates], dtype=np.int64)
    return per_rate[inverse.reshape(-1)]


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
        needed = set(config.step_extras)
        if config.action_convention == "cosmos_ee_delta":
            _check_cosmos(config)
            if config.gripper_extra is not None:
                needed.add(config.gripper_extra)
        missing = sorted(needed - set(view.step_extras))
        if missing:
            raise ValueError(f"the view carries no step extras {missing} (it has {list(view.step_extras)}): shard "
                             "with ViewConfig.step_extras / --step-extras")
        self.cameras = list(config.cameras) if config.cameras is not None else list(source.manifest.cameras)
        self.height, self.width = view.height, view.width
        self.reader = SampleReader(source)
        self.normalizer = Normalizer(source.stats, config.normalization, config.clip)
        keep = config.filter.mask(source.table) & source.table.live_rows(source.deleted)
        self.clips = ClipIndex(source, keep, config)

    def unit_counts(self) -> np.ndarray:
        return self.clips.counts

    def identity(self) -> dict:
        config = asdict(self.config) | {"rank": None, "world_size": None}
        config.pop("on_corrupt")  # does not shape the order: states saved under either setting stay valid
        return {"view": self.source.view_id, "config": config}

    def image_buffer_shape(self) -> tuple[int, ...]:
        return (self.order_config.batch_size, len(self.cameras), self.config.frames, self.height, self.width, 3)

    def build_batch(self, shards: np.ndarray, units: np.ndarray) -> dict:
        t = self.config.frames
        size = len(units)
        frames = self.image_buffer((size, len(self.cameras), t, self.height, self.width, 3))
        pixels = frames.numpy()
        frame_mask = np.zeros((size, len(self.cameras), t), bool)
        clips: list[dict] = []
        skipped: list[dict] = []
        for position, (shard, unit) in enumerate(zip(shards.tolist(), units.tolist(), strict=True)):
            try:
                clips.append(self._clip(len(clips), shard, unit, pixels, frame_mask))
            except CorruptMemberError as exc:
                if self.config.on_corrupt == "raise":
                    raise
                skipped.append(exc.record() | {"row": position})
        if not clips:
            return {SKIP_KEY: skipped}
        size = len(clips)
        frames, frame_mask = frames[:size], frame_mask[:size]
        infos, keys, steps, states, actions, masks, instructions, strides, extras = (
            [c[name] for c in clips] for name in ("info", "key", "steps", "state", "action", "mask", "instruction",
                                                  "stride", "extras"))
        embodiments = [i["embodiment"] for i in infos]
        action = stack_padded(actions, self.config.action_pad_to, "action")
        if self.config.action_convention != "cosmos_ee_delta":  # Cosmos' scale is its normalization
            action = normalize_rows(self.normalizer, embodiments, "action", action,
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
        if self.config.step_extras:
            batch["extras"], batch["extras_mask"] = _stack_extras(extras, self.config.step_extras)
        if self.config.include_state:
            state = stack_padded(states, self.config.state_pad_to, "state")
            batch["state"] = torch.from_numpy(normalize_rows(self.normalizer, embodiments, "state", state,
                                                             native_widths(self.normalizer, "state")))
        if skipped:
            batch[SKIP_KEY] = skipped
        return batch

    def _clip(self, b: int, shard: int, unit: int, pixels: np.ndarray, frame_mask: np.ndarray) -> dict:
        """One clip's values; its frames go to batch row ``b``."""
        t = self.config.frames
        episode, t0 = self.clips.locate(shard, unit)
        stride = int(self.clips.stride[episode])
        clip_steps = t0 + stride * np.arange(t)
        state_rows, state_valid, extra_rows = [], [], {name: [] for name in self._extra_names()}
        for i, step in enumerate(clip_steps.tolist()):
            sample, offset = self.clips.step_location(episode, step)
            arrays = self.reader.arrays(sample)
            state_rows.append(arrays.state[offset])
            state_valid.append(bool(arrays.state_valid[offset]))
            for name, rows in extra_rows.items():
                values = self.reader.extra(sample, name)
                rows.append(None if values is None else values[offset])
            for c, camera in enumerate(self.cameras):
                frame_mask[b, c, i] = self.reader.frame_into(sample, camera, offset, pixels[b, c, i])
        first_sample, first_offset = self.clips.step_location(episode, t0)
        first = self.reader.arrays(first_sample)
        if self.config.action_convention == "cosmos_ee_delta":
            action, mask = self._cosmos_actions(np.stack(state_rows), np.asarray(state_valid), extra_rows)
        else:
            action, mask = self._actions(episode, t0, stride)
        task = int(first.task_index[first_offset])
        return {"info": first.info, "key": f"{first.info['episode_id']}:{t0}", "steps": clip_steps,
                "state": np.stack(state_rows), "action": action, "mask": mask, "stride": stride,
                "extras": extra_rows, "instruction": first.info["tasks"][task] if task >= 0 else ""}

    def _extra_names(self) -> list[str]:
        names = list(self.config.step_extras)
        if self.config.action_convention == "cosmos_ee_delta" and self.config.gripper_extra is not None:
            names.append(self.config.gripper_extra)
        return list(dict.fromkeys(names))

    def _cosmos_actions(self, state: np.ndarray, valid: np.ndarray, extras: dict[str, list]
                        ) -> tuple[np.ndarray, np.ndarray]:
        """[T-1, 7] Cosmos actions from the clip frames' full-precision states; masked where a state is missing."""
        config = self.config
        pose = state[:, list(config.ee_pose_dims)].astype(np.float64)
        if config.gripper_extra is not None:
            rows = extras[config.gripper_extra]
            present = np.array([r is not None for r in rows])
            gripper = np.array([np.asarray(r, np.float64).reshape(-1)[0] if r is not None else np.nan for r in rows])
        else:
            present = np.ones(len(state), bool)
            gripper = state[:, config.gripper_dim].astype(np.float64)
        ok = valid & present & np.isfinite(pose).all(axis=1) & np.isfinite(gripper)
        safe_pose = np.where(ok[:, None], pose, 0.0)
        action = ee_delta_actions(safe_pose, np.where(ok, gripper, 0.0))
        return action, ok[:-1] & ok[1:]

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


def _check_cosmos(config: WAMConfig) -> None:
    if len(config.ee_pose_dims) != 6:
        raise ValueError(f"ee_pose_dims names 6 state dims (x, y, z, roll, pitch, yaw), got {config.ee_pose_dims}")
    if config.gripper_extra is None and config.gripper_dim is None:
        raise ValueError("cosmos_ee_delta needs the gripper: gripper_extra or gripper_dim")


def _stack_extras(clips: list[dict[str, list]], names: tuple[str, ...]) -> tuple[dict, dict]:
    """Per name: float32 [B, T, ...] (zeros where a sample lacks it) and a bool [B, T] mask."""
    values, masks = {}, {}
    for name in names:
        rows = [clip[name] for clip in clips]
        shape = next((np.asarray(r).shape for clip in rows for r in clip if r is not None), ())
        out = np.zeros((len(rows), len(rows[0]), *shape), np.float32)
        mask = np.zeros((len(rows), len(rows[0])), bool)
        for b, clip in enumerate(rows):
            for i, row in enumerate(clip):
                if row is not None:
                    out[b, i], mask[b, i] = row, True
        values[name], masks[name] = torch.from_numpy(out), torch.from_numpy(mask)
    return values, masks
