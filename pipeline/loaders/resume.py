"""Exact mid-epoch resume for any ActionReel loader (VLA, WAM, mixtures).

``ResumableLoader`` wraps a batching ``UnitDataset`` in a DataLoader and counts the batches it has
handed out. Its state is the epoch and the number of *global* batches consumed (this rank's count x
world size: ranks step in lockstep under DDP, so any rank's state is every rank's). Because the order
is a pure function of (seed, epoch, position), loading that state and iterating yields exactly the
rest of the uninterrupted sequence.

May change between save and resume: the number of DataLoader workers, prefetching, pinning, the
world size (the remaining global batches are re-dealt round robin over the new ranks). Must not
change (checked through a fingerprint): the view(s), the loader config that shapes the order (seed,
batch size, shuffle settings, filters, mixture weights, horizons...).

The state also carries the dataset's ``skip_log`` (samples skipped for corrupt members and which
members, pipeline.loaders.integrity), so the count of a resumed run continues where it stopped. States
saved without it load with a count of zero.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.loaders.base import UnitDataset, make_loader
from pipeline.loaders.integrity import SkipLog

STATE_FORMAT = "actionreel.loader-state/1"


class ResumeError(ValueError):
    """A saved loader state does not belong to this loader."""


class ResumableLoader:
    def __init__(self, dataset: UnitDataset, num_workers: int = 2, pin_memory: bool = False,
                 prefetch_factor: int | None = 4, reuse_buffers: bool = False) -> None:
        if not dataset.batched:
            raise ValueError("ResumableLoader needs a batching dataset (batch_size set)")
        self.dataset = dataset
        self.num_workers, self.pin_memory, self.prefetch_factor = num_workers, pin_memory, prefetch_factor
        self.reuse_buffers = reuse_buffers
        self.epoch = dataset.epoch
        self.global_batch = dataset.start_global
        self._consumed_this_epoch = 0

    def __len__(self) -> int:
        self.dataset.set_position(self.epoch, self.global_batch)
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict]:
        """The rest of the current epoch; afterwards the loader stands at the start of the next."""
        world = self.dataset.order_config.world_size
        self.dataset.set_position(self.epoch, self.global_batch)
        loader = make_loader(self.dataset, self.num_workers, self.pin_memory, self.prefetch_factor, self.reuse_buffers)
        loader.yield_empty = True  # a batch whose samples were all skipped is consumed all the same
        for batch in loader:
            self.global_batch += world
            if batch:
                yield batch
        self.epoch += 1
        self.global_batch = 0

    @property
    def skipped(self) -> int:
        """Loader samples skipped for corrupt members so far (resumed runs included)."""
        return self.dataset.skip_log.skipped

    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "epoch": self.epoch, "global_batch": self.global_batch,
                "fingerprint": self.dataset.fingerprint(), "integrity": self.dataset.skip_log.to_json()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ResumeError(f"not a loader state (format {state.get('format')!r})")
        if state["fingerprint"] != self.dataset.fingerprint():
            raise ResumeError("the saved state belongs to a loader with a different view or order config")
        self.epoch, self.global_batch = int(state["epoch"]), int(state["global_batch"])
        self.dataset.skip_log = SkipLog.from_json(state.get("integrity", {}))
