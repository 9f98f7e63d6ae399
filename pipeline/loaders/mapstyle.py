"""Map-style access to a view: ``dataset[i]`` for any (episode, step), with any torch sampler.

Index ``i`` counts the steps of the kept episodes, episode after episode (in the view's sample-table
order), each episode's steps in order: ``episode_bounds()`` gives LeRobot's ``episode_data_index``
(``from`` / ``to`` per episode), so ``EpisodeAwareSampler`` (the same arguments and behaviour as
LeRobot's ``lerobot.datasets.sampler.EpisodeAwareSampler``) or any other sampler plugs in. A sample is
built by the same code as the iterable loader's (``VLADataset.build_anchors``), so ``ds[i]`` equals the
iterable loader's sample of that step, key by key. ``__getitems__`` builds a whole sampled batch in one
call (torch's DataLoader uses it when present).

Under ``on_corrupt="skip"``, ``__getitems__`` leaves corrupt samples out (fewer samples, counted in
``skip_log``); ``__getitem__`` of a corrupt sample raises ``CorruptMemberError``: it has no value to return.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.loaders.integrity import SkipLog, take_skips
from pipeline.loaders.source import ViewSource
from pipeline.loaders.vla import Transform, VLAConfig, VLADataset

PER_SAMPLE = VLAConfig(batch_size=None)


class VLAMapDataset(Dataset):
    def __init__(self, source: ViewSource, config: VLAConfig = PER_SAMPLE,
                 sample_transform: Transform | None = None, batch_transform: Transform | None = None) -> None:
        self.inner = VLADataset(source, config, sample_transform=sample_transform, batch_transform=batch_transform)
        table = source.table
        keep = config.filter.mask(table) & table.live_rows(source.deleted)
        rows, bounds, codes = table.by_episode(np.nonzero(keep)[0])  # episodes by first row, segments by step
        self.rows = rows
        steps = table["num_steps"][rows]
        self.starts = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)
        self.episode_ids = table.episodes[codes].tolist()
        lengths = np.add.reduceat(steps, bounds[:-1]) if len(rows) else np.zeros(0, np.int64)
        self.episode_to = np.cumsum(lengths).astype(np.int64)
        self.episode_from = self.episode_to - np.asarray(lengths, dtype=np.int64)
        self._episode_number = {e: n for n, e in enumerate(self.episode_ids)}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def anchor(self, index: int) -> tuple[int, int]:
        """(sample-table row, step offset in it) of dataset index ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} steps")
        index %= len(self)
        position = int(np.searchsorted(self.starts, index, side="right")) - 1
        return int(self.rows[position]), int(index - self.starts[position])

    def index_of(self, episode_id: str, step: int) -> int:
        """The dataset index of ``step`` of ``episode_id``."""
        number = self._episode_number[episode_id]
        if not 0 <= step < self.episode_to[number] - self.episode_from[number]:
            raise IndexError(f"episode {episode_id} has no step {step}")
        return int(self.episode_from[number] + step)

    def episode_bounds(self) -> dict[str, np.ndarray]:
        """LeRobot's ``episode_data_index``: per episode, its first index and one past its last."""
        return {"from": self.episode_from.copy(), "to": self.episode_to.copy()}

    @property
    def skip_log(self) -> SkipLog:
        return self.inner.skip_log

    def __getitem__(self, index: int) -> dict:
        return self.inner.sample_at(*self.anchor(int(index)))

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        batch = take_skips(self.inner.build_anchors([self.anchor(int(i)) for i in indices]), self.inner.skip_log)
        if batch is None:
            return []
        return [{k: v[b] if isinstance(v, (list, torch.Tensor)) else v for k, v in batch.items()}
                for b in range(len(batch["key"]))]


class EpisodeAwareSampler(Sampler[int]):
    """LeRobot's episode-aware sampler: the steps of the chosen episodes, optionally without the first /
    last frames of each (policies whose windows must not pad), shuffled by a seeded torch generator."""

    def __init__(self, dataset_from_indices: Sequence[int], dataset_to_indices: Sequence[int],
                 episode_indices_to_use: Sequence[int] | None = None, drop_n_first_frames: int = 0,
                 drop_n_last_frames: int = 0, shuffle: bool = False, seed: int | None = None) -> None:
        chosen = None if episode_indices_to_use is None else set(int(e) for e in episode_indices_to_use)
        self.indices = [i for episode, (start, end) in enumerate(zip(dataset_from_indices, dataset_to_indices,
                                                                     strict=True))
                        if chosen is None or episode in chosen
                        for i in range(int(start) + drop_n_first_frames, int(end) - drop_n_last_frames)]
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    @staticmethod
    def for_dataset(dataset: VLAMapDataset, **options) -> EpisodeAwareSampler:
        bounds = dataset.episode_bounds()
        return EpisodeAwareSampler(bounds["from"].tolist(), bounds["to"].tolist(), **options)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            yield from self.indices
            return
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed + self.epoch)
        for i in torch.randperm(len(self.indices), generator=generator).tolist():
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)
