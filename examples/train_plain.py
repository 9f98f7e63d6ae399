"""Train the tiny policy on a view with plain PyTorch, then deploy it without the store.

    python -m examples.train_plain --store STORE --view-id VIEW --steps 20 --out run/

Writes ``run/policy.pt`` and, beside it, ``run/norm_stats.json`` (the loader's normalization): the
deployment half loads both and turns a predicted chunk back into robot units with ``unnormalize``.
Prints one JSON line: the first and last losses and the deployed chunk's shape.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from examples.tiny_policy import TinyPolicy, train_step
from pipeline.loaders import Normalizer, ViewSource, VLAConfig, VLADataset, make_loader

HORIZON = 10


def train(store: str, view_id: str, steps: int, out: Path, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    source = ViewSource(store, view_id)
    config = VLAConfig(batch_size=8, action_horizon=HORIZON, normalization="quantile", seed=seed)
    dataset = VLADataset(source, config)
    first = next(iter(dataset))
    model = TinyPolicy(first["images"].shape[1], first["state"].shape[-1], first["actions"].shape[-1], HORIZON)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        dataset.set_epoch(epoch)
        for batch in make_loader(dataset, num_workers=2):
            losses.append(train_step(model, optimizer, batch))
            if len(losses) == steps:
                break
        epoch += 1
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "shape": [first["images"].shape[1], first["state"].shape[-1],
                                                        first["actions"].shape[-1]]}, out / "policy.pt")
    dataset.normalizer.export(out / "norm_stats.json")
    return {"first_loss": losses[0], "last_loss": losses[-1], "steps": len(losses)}


def deploy(out: Path, images: np.ndarray, state: np.ndarray, embodiment: str) -> np.ndarray:
    """What robot-side code does: no store, no view, only the checkpoint folder."""
    checkpoint = torch.load(out / "policy.pt", weights_only=True)
    model = TinyPolicy(*checkpoint["shape"], HORIZON)
    model.load_state_dict(checkpoint["model"])
    normalizer = Normalizer.load(out / "norm_stats.json")
    with torch.no_grad():
        normalized_state = normalizer(embodiment, "state", state.astype(np.float32)[None])
        chunk = model(torch.from_numpy(images)[None], torch.from_numpy(normalized_state)).numpy()[0]
    return normalizer.unnormalize(embodiment, "action", chunk)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--view-id", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = train(args.store, args.view_id, args.steps, args.out)
    sample = next(iter(VLADataset(ViewSource(args.store, args.view_id), VLAConfig(batch_size=None))))
    chunk = deploy(args.out, sample["images"].numpy(), sample["state"].numpy(), sample["embodiment"])
    print(json.dumps(result | {"deployed_chunk": list(chunk.shape)}))


if __name__ == "__main__":
    main()
