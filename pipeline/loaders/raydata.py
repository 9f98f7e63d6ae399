"""The Ray Data path: a ``ray.data.Dataset`` of VLA or WAM samples, for ``iter_torch_batches`` and Ray Train.

Rows are built by the same ``UnitDataset.batch_at`` as the torch loader, in an actor pool, in the
same order (``preserve_order``), so ``ds.iter_torch_batches(batch_size=B, collate_fn=collate_numpy)``
with the loader's batch size yields exactly the torch loader's batches for the same seed
(``collate_numpy`` is a ``NumpyBatchCollateFn``: text fields stay lists; Ray's default cannot turn
strings into tensors, and plain collate functions are deprecated since Ray 2.47). Inside Ray Train, call
it once per worker with that worker's rank and world size (``ray.train.get_context()``), or pass the
dataset to the trainer and use ``ray.train.get_dataset_shard``.

Resources: the batch numbers enter as in-memory blocks (no read task), so the pipeline needs exactly
``concurrency`` builder actors of ``num_cpus`` each (``resource_needs``). Ray Data waits without a word
for resources it cannot get (13 minutes under Ray Train on 2 CPUs before this check), so
``to_ray_dataset`` checks that the cluster can place them, waiting at most ``wait_s`` for CPUs held by
other work, and otherwise raises ``RayResourceError`` saying what it needs and what there is.

Integrity: members are checked as in the torch loader (pipeline.loaders.integrity). Under
``on_corrupt="skip"`` a skipped sample's row is absent from the Ray Dataset and each builder actor logs
it (a warning naming shard, member and key) and counts it in its dataset's ``skip_log``; the driver's
dataset object does not see those counts.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import ray
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from pipeline.loaders.base import UnitDataset
from pipeline.loaders.integrity import take_skips

log = logging.getLogger(__name__)


class RayResourceError(RuntimeError):
    """The cluster cannot schedule the loader's actors."""


class _BatchBuilder:
    """Actor: builds global batch rows for the batch numbers it is handed."""

    def __init__(self, dataset: UnitDataset) -> None:
        self.dataset = dataset
        self.plan = dataset.plan()

    def __call__(self, batch: dict) -> dict:
        columns: dict[str, list] = {}
        for j in batch["id"].tolist():
            before = len(self.dataset.skip_log.corrupt)
            built = take_skips(self.dataset.batch_at(self.plan.positions(int(j))), self.dataset.skip_log) or {}
            for record in self.dataset.skip_log.corrupt[before:]:
                log.warning("skipped corrupt sample: shard %s member %s key %s: %s", record["shard"],
                            record["member"], record["key"], record["reason"])
            for key, value in built.items():
                if isinstance(value, torch.Tensor):
                    columns.setdefault(key, []).append(value.contiguous().numpy())
                else:
                    columns.setdefault(key, []).append(np.asarray(value, dtype=object))
        return {key: np.concatenate(values) for key, values in columns.items()}


class NumpyCollate(NumpyBatchCollateFn):
    """Numeric columns -> tensors, text columns -> lists of str (as the torch loader yields them)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        return {key: torch.from_numpy(np.array(value)) if value.dtype.kind in "biuf"  # a writable copy
                else [str(v) for v in value] for key, value in batch.items()}


collate_numpy = NumpyCollate()


def resource_needs(concurrency: int, num_cpus: float) -> dict[str, float]:
    """What the loader's actor pool holds while it runs."""
    return {"CPU": concurrency * num_cpus}


def check_resources(concurrency: int, num_cpus: float, wait_s: float = 10.0) -> None:
    """Raise ``RayResourceError`` unless the cluster can place the actor pool (now or within ``wait_s``)."""
    need = resource_needs(concurrency, num_cpus)["CPU"]
    total = float(ray.cluster_resources().get("CPU", 0.0))
    if need > total:
        raise RayResourceError(f"to_ray_dataset needs {need:g} CPUs ({concurrency} builder actors x {num_cpus:g} "
                               f"CPU) but the cluster has {total:g}: lower concurrency or num_cpus")
    deadline = time.monotonic() + wait_s
    while True:
        free = float(ray.available_resources().get("CPU", 0.0))
        if free >= need:
            return
        if time.monotonic() >= deadline:
            raise RayResourceError(f"to_ray_dataset needs {need:g} CPUs ({concurrency} builder actors x {num_cpus:g} "
                                   f"CPU) but only {free:g} of the cluster's {total:g} are free after {wait_s:g} s "
                                   "(Ray Train workers and other jobs hold the rest): lower concurrency or num_cpus")
        time.sleep(0.2)


def to_ray_dataset(dataset: UnitDataset, concurrency: int | None = None, num_cpus: float = 1.0,
                   wait_s: float = 10.0) -> ray.data.Dataset:
    """This rank's epoch of ``dataset`` (from its current position) as a Ray Dataset of samples.

    ``concurrency`` builder actors of ``num_cpus`` CPUs each (default: as many as the free CPUs allow,
    at least one). Fails fast (``RayResourceError``) when the cluster cannot place them.
    """
    if not dataset.batched:
        raise ValueError("build the loader with a batch_size: rows are produced a batch at a time")
    if concurrency is None:
        free = float(ray.available_resources().get("CPU", ray.cluster_resources().get("CPU", 1.0)))
        concurrency = max(1, int(free // num_cpus))
    check_resources(concurrency, num_cpus, wait_s)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    batches = dataset.plan().batches_per_rank
    ids = ray.data.from_items([{"id": j} for j in range(batches)], override_num_blocks=max(1, batches))
    return ids.map_batches(_BatchBuilder, fn_constructor_kwargs={"dataset": dataset}, batch_size=1,
                           compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=num_cpus)
