"""Train the tiny policy with DDP on CPU ranks (gloo), resumable mid-epoch after a kill.

    torchrun --nproc_per_node 2 -m examples.train_ddp --store STORE --view-id VIEW --steps 6 --out run/
    torchrun ... --kill-after 3     # dies (SIGKILL) right after step 3's checkpoint
    torchrun ... --resume           # continues from run/checkpoint.pt

Every step, rank 0 writes ``checkpoint.pt`` (model, optimizer, loader state) by temp name + rename, and
each rank appends the keys it trained on to ``keys-rank<r>.jsonl``. The loader state is
``ResumableLoader.state_dict()``: a resumed run sees exactly the batches the killed run had not reached.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from examples.tiny_policy import TinyPolicy, train_step
from pipeline.loaders import ResumableLoader, ViewSource, VLAConfig, VLADataset

HORIZON = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--view-id", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = VLAConfig(batch_size=4, action_horizon=HORIZON, normalization="quantile", seed=1, cameras=("cam_high",))
    dataset = VLADataset(ViewSource(args.store, args.view_id), config)  # rank / world from torch.distributed
    loader = ResumableLoader(dataset, num_workers=1)
    model = DistributedDataParallel(TinyPolicy(1, 14, 14, HORIZON))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    checkpoint_path = args.out / "checkpoint.pt"
    step = 0
    if args.resume:
        checkpoint = torch.load(checkpoint_path, weights_only=True)
        model.module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        step = checkpoint["step"]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"keys-rank{rank}.jsonl", "a") as log:
        while step < args.steps:
            for batch in loader:
                train_step(model, optimizer, batch)
                step += 1
                log.write(json.dumps({"step": step, "keys": batch["key"]}) + "\n")
                log.flush()
                if rank == 0:
                    save(checkpoint_path, {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                                           "loader": loader.state_dict(), "step": step})
                dist.barrier()  # every rank's step is logged and the checkpoint is on disk
                if args.kill_after == step and rank == 0:
                    os.kill(os.getpid(), signal.SIGKILL)
                if step == args.steps:
                    break
    dist.destroy_process_group()


def save(path: Path, state: dict) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    torch.save(state, temp)
    temp.replace(path)


if __name__ == "__main__":
    main()
