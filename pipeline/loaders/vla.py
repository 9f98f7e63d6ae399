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

With ``batch_size=None`` it yields the same fields per sample (no batch dimension), for a DataLoader
that batches itself. The order is ``pipeline.loaders.order``: exact, seeded, equal batch counts on
every rank, independent of the number of workers when batching here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from pipeline.loaders.base import UnitDataset, make_loader, order_config
from pipeline.loaders.members import SampleReader, native_widths, normalize_rows, stack_padded
from pipeline.loaders.normalize import Normalizer
from pipeline.loaders.source import SampleFilter, ViewSource

__all__ = ["VLAConfig", "VLADataset", "make_loader"]


@dataclass(frozen=True)
class VLAConfig:
    action_horizon: int = 50
    cameras: tuple[str, ...] | None = None  # default: every camera of the view
    normalization: str = "none"  # none | mean_std | quantile | min_max
    clip: bool = False
    state_pad_to: int | None = None
    action_pad_to: int | None = None
    batch_size: int | None = 32
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 10_000
    rank: int | None = None  # default: torch.distributed's rank (0 when not initialized)
    world_size: int | None = None
    filter: SampleFilter = field(default_factory=SampleFilter)


class StepIndex:
    """Per shard, the kept samples and their cumulative step counts: shard-local step -> (sample, offset)."""

    def __init__(self, source: ViewSource, keep: np.ndarray) -> None:
        table = source.table
        shards = len(source.manifest.shards)
        self.rows: list[np.ndarray] = [np.zeros(0, np.int64)] * shards
        self.starts: list[np.ndarray] = [np.zeros(1, np.int64)] * shards
        kept = np.nonzero(keep)[0]
        for shard in range(shards):
            rows = kept[table["shard"][kept] == shard]
            self.rows[shard] = rows
            self.starts[shard] = np.concatenate([[0], np.cumsum(table["num_steps"][rows])])
        self.counts = np.array([int(s[-1]) for s in self.starts], dtype=np.int64)

    def locate(self, shard: int, unit: int) -> tuple[int, int]:
        starts = self.starts[shard]
        position = int(np.searchsorted(starts, unit, side="right")) - 1
        return int(self.rows[shard][position]), int(unit - starts[position])


class VLADataset(UnitDataset):
    def __init__(self, source: ViewSource, config: VLAConfig = VLAConfig(), epoch: int = 0) -> None:
        super().__init__(order_config(config.batch_size, config.seed, config.shuffle, config.shuffle_buffer,
                                      config.rank, config.world_size), config.batch_size is not None, epoch)
        view = source.manifest.config
        if config.action_horizon > view.max_action_horizon:
            raise ValueError(f"action_horizon {config.action_horizon} exceeds the view's max_action_horizon "
                             f"{view.max_action_horizon}: re-shard with a longer look-ahead")
        self.source = source
        self.config = config
        self.cameras = list(config.cameras) if config.cameras is not None else list(source.manifest.cameras)
        self.height, self.width = view.height, view.width
        self.reader = SampleReader(source)
        self.normalizer = Normalizer(source.stats, config.normalization, config.clip)
        keep = config.filter.mask(source.table) & ~np.isin(source.table["episode_id"], list(source.deleted))
        self.steps = StepIndex(source, keep)

    def unit_counts(self) -> np.ndarray:
        return self.steps.counts

    def identity(self) -> dict:
        return {"view": self.source.view_id, "config": asdict(self.config) | {"rank": None, "world_size": None}}

    def image_buffer_shape(self) -> tuple[int, ...]:
        return (self.order_config.batch_size, len(self.cameras), self.height, self.width, 3)

    def build_batch(self, shards: np.ndarray, units: np.ndarray) -> dict:
        size, horizon = len(units), self.config.action_horizon
        images = self.image_buffer((size, len(self.cameras), self.height, self.width, 3))
        pixels = images.numpy()
        image_mask = np.zeros((size, len(self.cameras)), bool)
        rows, states, state_valid, actions, pads, valids = [], [], [], [], [], []
        for b, (shard, unit) in enumerate(zip(shards.tolist(), units.tolist(), strict=True)):
            sample, offset = self.steps.locate(shard, unit)
            arrays = self.reader.arrays(sample)
            states.append(arrays.state[offset])
            state_valid.append(bool(arrays.state_valid[offset]))
            chunk, valid, pad = _action_window(arrays.action, arrays.action_valid, offset, horizon)
            actions.append(chunk)
            valids.append(valid)
            pads.append(pad)
            for c, camera in enumerate(self.cameras):
                image_mask[b, c] = self.reader.frame_into(sample, camera, offset, pixels[b, c])
            task = int(arrays.task_index[offset])
            rows.append((arrays.info, arrays.info["step_start"] + offset, int(arrays.timestamp[offset]),
                         arrays.info["tasks"][task] if task >= 0 else ""))
        embodiments = [r[0]["embodiment"] for r in rows]
        state = normalize_rows(self.normalizer, embodiments, "state",
                               stack_padded(states, self.config.state_pad_to, "state"),
                               native_widths(self.normalizer, "state"))
        action = normalize_rows(self.normalizer, embodiments, "action",
                                stack_padded(actions, self.config.action_pad_to, "action"),
                                native_widths(self.normalizer, "action"))
        return {
            "images": images.permute(0, 1, 4, 2, 3),
            "image_mask": torch.from_numpy(image_mask),
            "state": torch.from_numpy(state),
            "state_valid": torch.tensor(state_valid),
            "actions": torch.from_numpy(action),
            "action_is_pad": torch.from_numpy(np.stack(pads)),
            "action_valid": torch.from_numpy(np.stack(valids)),
            "instruction": [r[3] for r in rows],
            "embodiment": embodiments,
            "kind": [r[0]["kind"] for r in rows],
            "action_source": [r[0]["action_source"] for r in rows],
            "dataset": [r[0]["dataset"] for r in rows],
            "episode_id": [r[0]["episode_id"] for r in rows],
            "key": [f"{r[0]['episode_id']}:{r[1]}" for r in rows],
            "step": torch.tensor([r[1] for r in rows], dtype=torch.int64),
            "timestamp_ns": torch.tensor([r[2] for r in rows], dtype=torch.int64),
        }


def _action_window(action: np.ndarray, valid: np.ndarray, offset: int, horizon: int):
    """actions[t : t+H]; past the episode end the last action repeats and is marked as padding."""
    chunk = action[offset: offset + horizon]
    mask = valid[offset: offset + horizon]
    pad = np.zeros(horizon, bool)
    if chunk.shape[0] < horizon:
        fill = horizon - chunk.shape[0]
        pad[chunk.shape[0]:] = True
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fill, axis=0)])
        mask = np.concatenate([mask, np.zeros(fill, bool)])
    return chunk, mask, pad
