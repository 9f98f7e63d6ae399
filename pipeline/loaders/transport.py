"""Reusable shared-memory image buffers between DataLoader workers and the training process.

Without it every batch's images go into a fresh shared-memory segment: the kernel zero-fills it page
by page, which for 32 x 2 x 480 x 640 x 3 bytes costs more than decoding the frames. With it, each
worker writes into a small ring of segments allocated once (before the workers fork); torch then
sends only a handle, and the training process maps the same segment again from its cache.

The contract that makes reuse safe: a batch's ``images``/``frames`` tensor is valid until the next
batch is requested from the loader (``BufferedLoader`` releases the previous slot then). Move it to
the GPU or ``clone()`` it before asking for the next batch. Each worker has ``slots`` buffers, more
than it can have in flight (``prefetch_factor`` queued + one held by the caller + one being built),
and blocks (backpressure) when none is free.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterator
from multiprocessing.context import BaseContext

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from pipeline.loaders.integrity import take_skips

SLOT_KEY = "_buffer_slot"
WORKER_PRELOAD = ["torch", "pipeline.loaders"]  # imported once in the fork server, not in every worker


def worker_context(num_workers: int) -> BaseContext | None:
    """How DataLoader workers start: from a fork server where Ray runs in this process, else the default.

    Forking a process that holds Ray's core-worker threads can crash it (seen as a segfault in the
    training process itself); Ray's own advice for DataLoader workers in Ray processes (Ray Train
    workers always are) is ``forkserver``. The server is a fresh interpreter with torch and the
    loaders preloaded, so each worker still starts by a fork, only not of this process. Elsewhere the
    platform default (fork on Linux) stays: it is the cheapest start and needs nothing picklable.
    """
    ray = sys.modules.get("ray")
    if num_workers == 0 or ray is None or not ray.is_initialized():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    return context


class SharedBatchRing:
    def __init__(self, num_workers: int, slots: int, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        nbytes = int(np.prod(self.shape))
        new_shared = torch.UntypedStorage._new_shared
        self.buffers = [[torch.empty(0, dtype=torch.uint8).set_(new_shared(nbytes)).view(self.shape)
                         for _ in range(slots)] for _ in range(num_workers)]
        self.free = torch.ones((num_workers, slots), dtype=torch.int32).share_memory_()
        self._next = 0  # per process: each worker counts its own slots

    def acquire(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """A free buffer of this worker (waiting for one), or None outside a worker or for another shape."""
        info = get_worker_info()
        if info is None or tuple(shape) != self.shape or info.id >= len(self.buffers):
            return None
        worker, slots = info.id, self.free.shape[1]
        flags = self.free.numpy()
        while True:
            for attempt in range(slots):
                slot = (self._next + attempt) % slots
                if flags[worker, slot]:
                    flags[worker, slot] = 0
                    self._next = slot + 1
                    return self.buffers[worker][slot], (worker, slot)
            time.sleep(0.0005)

    def release(self, worker: int, slot: int) -> None:
        self.free.numpy()[worker, slot] = 1


class BufferedLoader:
    """A DataLoader over a batching dataset whose image buffers are reused (see the module doc)."""

    yield_empty = False  # as SkipCountingLoader: yield ``{}`` for a batch of nothing but skipped samples

    def __init__(self, dataset, num_workers: int = 2, prefetch_factor: int = 4, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.num_workers, self.prefetch_factor, self.pin_memory = num_workers, prefetch_factor, pin_memory

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict]:
        ring = None
        if self.num_workers > 0:
            ring = SharedBatchRing(self.num_workers, self.prefetch_factor + 3, self.dataset.image_buffer_shape())
        self.dataset.ring = ring
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers,
                            prefetch_factor=self.prefetch_factor if self.num_workers else None,
                            pin_memory=self.pin_memory, persistent_workers=False,
                            multiprocessing_context=worker_context(self.num_workers))
        held = None
        try:
            for batch in loader:
                if held is not None:
                    ring.release(*held)
                slot = batch.pop(SLOT_KEY, None)
                held = tuple(int(x) for x in slot) if slot is not None and ring is not None else None
                batch = take_skips(batch, self.dataset.skip_log)
                if batch is None:
                    if self.yield_empty:
                        yield {}
                    continue
                batch = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
                if held is not None and self.pin_memory:  # the pinned copy is all the caller sees
                    ring.release(*held)
                    held = None
                yield batch
        finally:
            if held is not None:
                ring.release(*held)
            self.dataset.ring = None
