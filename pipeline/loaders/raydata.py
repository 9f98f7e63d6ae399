"""The Ray Data path: a ``ray.data.Dataset`` of VLA or WAM samples, for ``iter_torch_batches`` and Ray Train.

Rows are built by the same ``UnitDataset.batch_at`` as the torch loader, in an actor pool, in the
same order (``preserve_order``), so ``ds.iter_torch_batches(batch_size=B, collate_fn=collate_numpy)``
with the loader's batch size yields exactly the torch loader's batches for the same seed (the collate
function keeps text fields as lists; Ray's default cannot turn strings into tensors). Inside Ray Train, call it once per
worker with that worker's rank and world size (``ray.train.get_context()``), or pass the dataset to the
trainer and use ``ray.train.get_dataset_shard``.
"""

from __future__ import annotations

import numpy as np
import ray
import torch

from pipeline.loaders.base import UnitDataset


class _BatchBuilder:
    """Actor: builds global batch rows for the batch numbers it is handed."""

    def __init__(self, dataset: UnitDataset) -> None:
        self.dataset = dataset
        self.plan = dataset.plan()

    def __call__(self, batch: dict) -> dict:
        columns: dict[str, list] = {}
        for j in batch["id"].tolist():
            built = self.dataset.batch_at(self.plan.positions(int(j)))
            for key, value in built.items():
                if isinstance(value, torch.Tensor):
                    columns.setdefault(key, []).append(value.contiguous().numpy())
                else:
                    columns.setdefault(key, []).append(np.asarray(value, dtype=object))
        return {key: np.concatenate(values) for key, values in columns.items()}


def collate_numpy(batch: dict[str, np.ndarray]) -> dict:
    """Numeric columns -> tensors, text columns -> lists of str (as the torch loader yields them)."""
    return {key: torch.from_numpy(np.array(value)) if value.dtype.kind in "biuf"  # a writable copy
            else [str(v) for v in value] for key, value in batch.items()}


def to_ray_dataset(dataset: UnitDataset, concurrency: int | None = None) -> ray.data.Dataset:
    """This rank's epoch of ``dataset`` (from its current position) as a Ray Dataset of samples.

    ``concurrency`` builder actors of one CPU each (default: the cluster's CPUs minus one: the read
    stage needs a CPU too, and an actor pool holding every CPU starves it).
    """
    if concurrency is None:
        concurrency = max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
    if not dataset.batched:
        raise ValueError("build the loader with a batch_size: rows are produced a batch at a time")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    batches = dataset.plan().batches_per_rank
    return ray.data.range(batches, override_num_blocks=max(1, batches)).map_batches(
        _BatchBuilder, fn_constructor_kwargs={"dataset": dataset}, batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1)
