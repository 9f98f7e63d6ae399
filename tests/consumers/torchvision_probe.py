"""Run ActionReel's VLA loader with real torchvision v2 transforms as its per-sample hook.

torchvision does not load beside the project venv's CPU torch (the wheels pip offers there are CUDA
builds), so this runs under the consumer environment that ``make consumers`` builds, with the repo on
PYTHONPATH. Two transforms go through DataLoader workers:

- ``exact``: flip, centre crop, ``ToDtype(scale=True)``, ``Normalize`` (each a plain float32 formula,
  so the test recomputes it by hand from untransformed batches in the project venv);
- ``resized``: the same plus an antialiased ``Resize``, compared here with the same transform applied
  in this process to the untransformed samples.

Writes ``<out>.npz``: ``plain.<name>`` (untransformed batches), ``exact.images``, ``exact.pid``,
``resized.images``, ``resized.reference`` and ``<out>.json`` (batch keys of both runs).

    python torchvision_probe.py STORE VIEW_ID OUT
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import numpy as np
import torch
from torchvision.transforms import v2

from pipeline.loaders import ViewSource, VLAConfig, VLADataset, make_loader

BATCHES = 3
MEAN, STD = (0.5, 0.25, 0.75), (0.25, 0.5, 0.125)  # exact in binary: the hand computation can match bit for bit


class Tagged:
    """A torchvision transform on the sample dict, with the worker's pid added (proof it ran there)."""

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, sample: dict) -> dict:
        return self.transform(sample) | {"pid": torch.tensor(os.getpid())}


def exact_transform() -> v2.Compose:
    return v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.CenterCrop(200),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def resized_transform() -> v2.Compose:
    return v2.Compose([v2.CenterCrop(200), v2.Resize(112, antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("view_id")
    parser.add_argument("out")
    args = parser.parse_args()
    source = ViewSource(args.store, args.view_id)
    config = VLAConfig(batch_size=4, seed=8, action_horizon=4)
    plain = list(itertools.islice(iter(make_loader(VLADataset(source, config), num_workers=0)), BATCHES))

    def through_workers(transform: v2.Compose) -> list[dict]:
        dataset = VLADataset(source, config, sample_transform=Tagged(transform))
        return list(itertools.islice(iter(make_loader(dataset, num_workers=2)), BATCHES))

    exact, resized = through_workers(exact_transform()), through_workers(resized_transform())
    reference = resized_transform()
    arrays = {
        "plain.images": np.stack([b["images"].numpy() for b in plain]),
        "plain.actions": np.stack([b["actions"].numpy() for b in plain]),
        "exact.images": np.stack([b["images"].numpy() for b in exact]),
        "exact.actions": np.stack([b["actions"].numpy() for b in exact]),
        "exact.pid": np.stack([b["pid"].numpy() for b in exact]),
        "resized.images": np.stack([b["images"].numpy() for b in resized]),
        "resized.pid": np.stack([b["pid"].numpy() for b in resized]),
        "resized.reference": np.stack([np.stack([reference(image).numpy() for image in b["images"]])
                                       for b in plain]),
    }
    np.savez(f"{args.out}.npz", **arrays)
    keys = {name: [b["key"] for b in batches] for name, batches in
            (("plain", plain), ("exact", exact), ("resized", resized))}
    with open(f"{args.out}.json", "w") as handle:
        json.dump(keys | {"main_pid": os.getpid()}, handle)


if __name__ == "__main__":
    main()
