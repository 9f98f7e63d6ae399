"""VLA loader: per-step samples (images + instruction + state -> action chunk) from a view's shards.

A batch (``batch_size`` set, the fast path; use ``make_loader`` = ``DataLoader(dataset, batch_size=None)``):

    images          uint8  [B, K, 3, H, W]   K = the loader's cameras; a view over a channels-last
                                             buffer (call .contiguous() if a kernel needs NCHW)
    image_mask      bool   [B, K]            False where the episode has no frame for that camera
    state           float32 [B, Ds]          state[t], normalized per embodiment
    state_valid     bool   [B]
    actions         float32 [B, H, Da]       actions[t : t+H]; past the episode end the last action
    action_is_pad   bool   [B, H]            True exactly where t+h >= episode length
    action_valid    bool   [B, H]            False where the source marked the action missing
    instruction     list[str]                the step's task text ("" when none)
    embodiment, kind, action_source, dataset, episode_id, key: list[str]; step, timestamp_ns: int64 [B]

Time offsets (``delta_steps`` in steps, or ``delta_timestamps`` in seconds, per key; see
``pipeline.loaders.offsets``) add a time axis T to the keys they name, with LeRobot's padding rule:

    cameras     -> images [B, K, T, 3, H, W], image_mask [B, K, T], images_is_pad [B, T]
    state       -> state [B, T, Ds], state_valid [B, T], state_is_pad [B, T]
    action      -> actions [B, T, Da], action_valid / action_is_pad [B, T]  (default: range(H))
    timestamp   -> timestamp_ns [B, T], timestamp_is_pad [B, T]
    task_index  -> task_index [B, T], task_index_is_pad [B, T]

Windows read across segment and shard bounds, so no horizon is limited by the view's look-ahead.
With ``batch_size=None`` it yields the same fields per sample (no batch dimension), for a DataLoader
that batches itself. The order is ``pipeline.loaders.order``: exact, seeded, equal batch counts on
every rank, independent of the number of workers when batching here. ``sample_transform`` runs on
every sample inside the worker (a torchvision v2 transform or any callable on the sample dict);
``batch_transform`` on every built batch (the presets of ``pipeline.loaders.presets``).

``on_corrupt``: a member failing its checksum or its decoding raises ``CorruptMemberError`` (shard,
member, sample key; ``"raise"``, the default) or leaves the step out of its batch (``"skip"``: the
batch is smaller; ``skip_log`` counts it; pipeline.loaders.integrity).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
import torch
from torch.utils.data import default_collate

from pipeline.loaders.base import UnitDataset, make_loader, order_config, unbatch
from pipeline.loaders.integrity import SKIP_KEY, CorruptMemberError, check_on_corrupt
from pipeline.loaders.members import SampleReader, native_widths, normalize_rows, stack_padded
from pipeline.loaders.normalize import Normalizer
from pipeline.loaders.offsets import (
    VALID_COLUMNS,
    EpisodeSteps,
    WindowReader,
    check_offset_keys,
    query_steps,
    steps_from_seconds,
)
from pipeline.loaders.source import SampleFilter, ViewSource, group_by_label

__all__ = ["VLAConfig", "VLADataset", "make_loader"]

Transform = Callable[[dict], dict]


@dataclass(frozen=True)
class VLAConfig:
    action_horizon: int = 50  # the action window when neither delta map names "action"
    delta_steps: Mapping[str, Sequence[int]] | None = None  # per key offsets in control steps
    delta_timestamps: Mapping[str, Sequence[float]] | None = None  # per key offsets in seconds
    tolerance_s: float = 1e-4  # how far a delta in seconds may be from a whole step
    cameras: tuple[str, ...] | None = None  # default: every camera of the view
    normalization: str = "none"  # none | mean_std | quantile | min_max
    clip: bool = False
    state_pad_to: int | None = None
    action_pad_to: int | None = None
    batch_size: int | None = 32
    drop_last: bool = True  # False: the epoch ends with a partial batch instead of dropping it
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 10_000
    rank: int | None = None  # default: torch.distributed's rank (0 when not initialized)
    world_size: int | None = None
    filter: SampleFilter = field(default_factory=SampleFilter)
    on_corrupt: str = "raise"  # or "skip": a step with a corrupt member is left out of its batch and counted

    def __post_init__(self) -> None:
        check_on_corrupt(self.on_corrupt)
        check_offset_keys(self.delta_steps, "delta_steps")
        check_offset_keys(self.delta_timestamps, "delta_timestamps")
        both = set(self.delta_steps or {}) & set(self.delta_timestamps or {})
        if both:
            raise ValueError(f"keys {sorted(both)} are given both in steps and in seconds")
        if self.action_horizon < 1:
            raise ValueError("action_horizon must be >= 1")

    def timed_keys(self) -> set[str]:
        """Keys that get a time axis (the action always has one)."""
        return set(self.delta_steps or {}) | set(self.delta_timestamps or {}) | {"action"}


class StepIndex:
    """Per shard, the kept samples and their cumulative step counts: shard-local step -> (sample, offset)."""

    def __init__(self, source: ViewSource, keep: np.ndarray) -> None:
        table = source.table
        shards = len(source.manifest.shards)
        self.rows: list[np.ndarray] = [np.zeros(0, np.int64)] * shards
        self.starts: list[np.ndarray] = [np.zeros(1, np.int64)] * shards
        kept = np.nonzero(keep)[0]
        for shard, rows in enumerate(group_by_label(kept, table["shard"][kept], shards)):  # rows ascending
            self.rows[shard] = rows
            self.starts[shard] = np.concatenate([[0], np.cumsum(table["num_steps"][rows])])
        self.counts = np.array([int(s[-1]) for s in self.starts], dtype=np.int64)

    def locate(self, shard: int, unit: int) -> tuple[int, int]:
        starts = self.starts[shard]
        position = int(np.searchsorted(starts, unit, side="right")) - 1
        return int(self.rows[shard][position]), int(unit - starts[position])


class VLADataset(UnitDataset):
    def __init__(self, source: ViewSource, config: VLAConfig = VLAConfig(), epoch: int = 0,
                 sample_transform: Transform | None = None, batch_transform: Transform | None = None) -> None:
        super().__init__(order_config(config.batch_size, config.seed, config.shuffle, config.shuffle_buffer,
                                      config.rank, config.world_size, config.drop_last),
                         config.batch_size is not None, epoch)
        view = source.manifest.config
        self.source = source
        self.config = config
        self.cameras = list(config.cameras) if config.cameras is not None else list(source.manifest.cameras)
        self.height, self.width = view.height, view.width
        self.reader = SampleReader(source)
        self.windows = WindowReader(self.reader, EpisodeSteps(source))
        self.normalizer = Normalizer(source.stats, config.normalization, config.clip)
        self.sample_transform, self.batch_transform = sample_transform, batch_transform
        self.timed = config.timed_keys()
        keep = config.filter.mask(source.table) & source.table.live_rows(source.deleted)
        self.steps = StepIndex(source, keep)
        self._offsets: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        rates = source.table["fps_num"][keep] * (1 << 32) + source.table["fps_den"][keep]
        for row in np.nonzero(keep)[0][np.unique(rates, return_index=True)[1]]:
            self.offsets_for(int(row))  # every episode rate now: seconds that are no whole step fail here

    def unit_counts(self) -> np.ndarray:
        return self.steps.counts

    def identity(self) -> dict:
        config = asdict(self.config) | {"rank": None, "world_size": None}
        config.pop("on_corrupt")  # does not shape the order: states saved under either setting stay valid
        return {"view": self.source.view_id, "config": config}

    def image_buffer_shape(self) -> tuple[int, ...]:
        return (self.order_config.batch_size, *self._image_shape())

    def _image_shape(self) -> tuple[int, ...]:
        c = self.config
        timed = (c.delta_steps or {}).get("cameras") or (c.delta_timestamps or {}).get("cameras")
        frames = (len(timed),) if timed else ()
        return (len(self.cameras), *frames, self.height, self.width, 3)

    def offsets_for(self, row: int) -> dict[str, np.ndarray]:
        """Per key, the step offsets for samples of this row's episode (seconds converted at its rate)."""
        table = self.source.table
        rate = (int(table["fps_num"][row]), int(table["fps_den"][row])) if row >= 0 else (1, 1)
        cached = self._offsets.get(rate)
        if cached is None:
            c = self.config
            cached = {"action": np.arange(c.action_horizon, dtype=np.int64)}
            cached |= {k: np.asarray(v, dtype=np.int64) for k, v in (c.delta_steps or {}).items()}
            if c.delta_timestamps:
                cached |= steps_from_seconds(c.delta_timestamps, Fraction(*rate), c.tolerance_s)
            for key in ("cameras", "state", "timestamp", "task_index"):
                cached.setdefault(key, np.zeros(1, np.int64))
            self._offsets[rate] = cached
        return cached

    # ------------------------------------------------------------ batches

    def build_batch(self, shards: np.ndarray, units: np.ndarray) -> dict:
        anchors = [self.steps.locate(shard, unit) for shard, unit in zip(shards.tolist(), units.tolist(), strict=True)]
        return self.build_anchors(anchors)

    def build_anchors(self, anchors: list[tuple[int, int]]) -> dict:
        """The batch of these (sample-table row, step offset in that sample) anchors.

        With ``on_corrupt="skip"`` an anchor whose members are corrupt is left out (the batch is smaller;
        its record goes under ``SKIP_KEY``); a batch of nothing but skips is ``{SKIP_KEY: records}``."""
        size = len(anchors)
        images = self.image_buffer((size, *self._image_shape()))
        pixels = images.numpy()
        image_mask = np.zeros(pixels.shape[:-3], bool)
        columns: dict[str, list[np.ndarray]] = {}
        rows, skipped = [], []
        for position, (row, offset) in enumerate(anchors):
            b = len(rows)
            try:
                anchor_columns, row_info = self._anchor(b, row, offset, pixels, image_mask)
            except CorruptMemberError as exc:
                if self.config.on_corrupt == "raise":
                    raise
                skipped.append(exc.record() | {"row": position})
                continue
            for key, values in anchor_columns.items():
                columns.setdefault(key, []).extend(values)
            rows.append(row_info)
        if not rows:
            return {SKIP_KEY: skipped}
        if skipped:
            images, image_mask = images[:len(rows)], image_mask[:len(rows)]
        batch = self._assemble(images, image_mask, columns, rows)
        if self.sample_transform is not None:
            batch = self._per_sample(batch)
        batch = self.batch_transform(batch) if self.batch_transform is not None else batch
        if skipped:
            batch[SKIP_KEY] = skipped
        return batch

    def _anchor(self, b: int, row: int, offset: int, pixels: np.ndarray, image_mask: np.ndarray
                ) -> tuple[dict[str, list[np.ndarray]], tuple]:
        """One anchor's columns and row facts; its frames go to batch row ``b``."""
        arrays = self.reader.arrays(row)
        info = arrays.info
        t = int(info["step_start"]) + offset
        offsets = self.offsets_for(row)
        length = int(info["episode_num_steps"])
        columns: dict[str, list[np.ndarray]] = {}
        for key in ("state", "action", "timestamp", "task_index"):
            steps, pad = query_steps(t, offsets[key], length)
            columns.setdefault(key, []).append(self.windows.column(row, info["episode_id"], key, steps))
            columns.setdefault(f"{key}_is_pad", []).append(pad)
            if key in VALID_COLUMNS:
                valid = self.windows.column(row, info["episode_id"], VALID_COLUMNS[key], steps)
                columns.setdefault(VALID_COLUMNS[key], []).append(valid & ~pad if key == "action" else valid)
        self._frames(b, row, offset, info["episode_id"], t, offsets["cameras"], length, pixels, image_mask, columns)
        task = int(arrays.task_index[offset])
        return columns, (info, t, info["tasks"][task] if task >= 0 else "")

    def _frames(self, b: int, row: int, offset: int, episode: str, t: int, offsets: np.ndarray, length: int,
                pixels: np.ndarray, image_mask: np.ndarray, columns: dict) -> None:
        if "cameras" not in self.timed:  # the anchor's own frame: its sample holds it
            for c, camera in enumerate(self.cameras):
                image_mask[b, c] = self.reader.frame_into(row, camera, offset, pixels[b, c])
            return
        steps, pad = query_steps(t, offsets, length)
        columns.setdefault("images_is_pad", []).append(pad)
        for c, camera in enumerate(self.cameras):
            image_mask[b, c] = self.windows.frames_into(episode, camera, steps, pixels[b, c])

    def _assemble(self, images: torch.Tensor, image_mask: np.ndarray, columns: dict, rows: list) -> dict:
        embodiments = [r[0]["embodiment"] for r in rows]
        squeeze = {key: key not in self.timed for key in ("state", "timestamp", "task_index")}

        def stacked(key: str) -> np.ndarray:
            values = np.stack(columns[key])
            return values[:, 0] if squeeze.get(key.removesuffix("_is_pad").removesuffix("_valid"), False) else values

        states = [s[0] for s in columns["state"]] if squeeze["state"] else columns["state"]
        state = normalize_rows(self.normalizer, embodiments, "state",
                               stack_padded(states, self.config.state_pad_to, "state"),
                               native_widths(self.normalizer, "state"))
        action = normalize_rows(self.normalizer, embodiments, "action",
                                stack_padded(columns["action"], self.config.action_pad_to, "action"),
                                native_widths(self.normalizer, "action"))
        image_dims = (0, 1, 2, 5, 3, 4) if "cameras" in self.timed else (0, 1, 4, 2, 3)
        batch = {
            "images": images.permute(*image_dims),
            "image_mask": torch.from_numpy(image_mask),
            "state": torch.from_numpy(state),
            "state_valid": torch.from_numpy(stacked("state_valid")),
            "actions": torch.from_numpy(action),
            "action_is_pad": torch.from_numpy(np.stack(columns["action_is_pad"])),
            "action_valid": torch.from_numpy(np.stack(columns["action_valid"])),
            "instruction": [r[2] for r in rows],
            "embodiment": embodiments,
            "kind": [r[0]["kind"] for r in rows],
            "action_source": [r[0]["action_source"] for r in rows],
            "dataset": [r[0]["dataset"] for r in rows],
            "episode_id": [r[0]["episode_id"] for r in rows],
            "key": [f"{r[0]['episode_id']}:{r[1]}" for r in rows],
            "step": torch.tensor([r[1] for r in rows], dtype=torch.int64),
            "timestamp_ns": torch.from_numpy(stacked("timestamp").astype(np.int64)),
        }
        for key in ("cameras", "state", "timestamp", "task_index"):
            if key in self.timed:
                name = "images" if key == "cameras" else key
                batch[f"{name}_is_pad"] = torch.from_numpy(np.stack(columns[f"{name}_is_pad"]))
        if "task_index" in self.timed:
            batch["task_index"] = torch.from_numpy(np.stack(columns["task_index"]).astype(np.int64))
        return batch

    def _per_sample(self, batch: dict) -> dict:
        """Run ``sample_transform`` on each sample (in the worker) and batch the results again."""
        size = len(batch["key"])
        samples = [self.sample_transform({k: v[i] if isinstance(v, (list, torch.Tensor)) else v
                                          for k, v in batch.items()}) for i in range(size)]
        return default_collate(samples)

    def sample_at(self, row: int, offset: int) -> dict:
        """One sample (no batch dimension): step ``offset`` of sample-table row ``row``. A corrupt sample
        raises CorruptMemberError even under ``on_corrupt="skip"``: there is no value to return."""
        batch = self.build_anchors([(row, offset)])
        if SKIP_KEY in batch:
            record = batch[SKIP_KEY][0]
            raise CorruptMemberError(record["shard"], record["member"], record["key"], record["reason"])
        return unbatch(batch)
