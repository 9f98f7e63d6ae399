"""Train the tiny policy under Ray Train, fed by ``to_ray_dataset`` (runs on a 2-CPU cluster).

    python -m examples.train_ray --store STORE --view-id VIEW --steps 4

One Ray Train worker (1 CPU) builds this rank's loader from ``ray.train.get_context()`` and reads it
through a Ray Dataset whose builder actor takes the other CPU (``num_cpus`` is declared, so a cluster
too small for it fails at once with a message instead of waiting).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ray
import ray.train
import torch
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from examples.tiny_policy import TinyPolicy, train_step
from pipeline.loaders import ViewSource, VLAConfig, VLADataset
from pipeline.loaders.raydata import collate_numpy, to_ray_dataset

HORIZON = 8


def train_loop(config: dict) -> None:
    context = ray.train.get_context()
    loader_config = VLAConfig(batch_size=4, action_horizon=HORIZON, seed=2, cameras=("cam_high",),
                              rank=context.get_world_rank(), world_size=context.get_world_size())
    dataset = VLADataset(ViewSource(config["store"], config["view_id"]), loader_config)
    rows = to_ray_dataset(dataset, concurrency=1, num_cpus=config.get("builder_cpus", 1.0))
    model = ray.train.torch.prepare_model(TinyPolicy(1, 14, 14, HORIZON))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses, keys = [], []
    for batch in rows.iter_torch_batches(batch_size=4, collate_fn=collate_numpy):
        losses.append(train_step(model, optimizer, batch))
        keys.extend(batch["key"])
        if len(losses) == config["steps"]:
            break
    metrics = {"losses": losses, "keys": keys}
    if context.get_world_rank() == 0:  # Ray Train 2 keeps metrics only with checkpoints: write them out
        out = Path(config["storage_path"]) / "metrics.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics))
    ray.train.report(metrics)


def run(store: str, view_id: str, steps: int, storage_path: str, builder_cpus: float = 1.0) -> dict:
    trainer = TorchTrainer(train_loop, train_loop_config={"store": store, "view_id": view_id, "steps": steps,
                                                          "builder_cpus": builder_cpus, "storage_path": storage_path},
                           scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 1}),
                           run_config=ray.train.RunConfig(storage_path=storage_path, name="tiny-policy"))
    trainer.fit()
    return json.loads((Path(storage_path) / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--view-id", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--storage", default="/tmp/actionreel-ray-train")
    args = parser.parse_args()
    ray.init(num_cpus=2)
    try:
        print(json.dumps(run(args.store, args.view_id, args.steps, args.storage)))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
