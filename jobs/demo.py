"""The end-to-end demo: sample LeRobot data -> ingest -> shard -> VLA batches through a DataLoader.

    python -m jobs.demo --out demo-output
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer

from jobs.cliutil import Outcome, command, run_process


def run_demo(out: str, batches: int = 20, fresh: bool = True) -> dict:
    from rich.console import Console

    from jobs.ingest import run_ingest
    from jobs.shard import run_shard
    from pipeline.loaders import ViewSource, VLAConfig, VLADataset, make_loader
    from pipeline.samples import SampleSpec, write_sample_dataset
    from pipeline.shards import ViewConfig

    console = Console()
    root = Path(out)
    if fresh and root.exists():
        shutil.rmtree(root)
    source, store = root / "source-lerobot-v3", root / "store"
    started = time.perf_counter()
    if not source.exists():
        console.rule("1/4 sample dataset (LeRobot v3.0 layout, 2 cameras 480x640 H.264, 30 fps)")
        write_sample_dataset(source, SampleSpec())
    console.rule("2/4 ingest (Ray Data, local Ray)")
    ingest_report = run_ingest(str(source), str(store))
    ingest_report.render(console)
    console.rule("3/4 shard (decode -> resize 224x224 -> JPEG -> WebDataset tars)")
    view = ViewConfig(height=224, width=224, segment_steps=64, max_action_horizon=50, target_shard_bytes=16_000_000)
    shard_report, view_id = run_shard(str(store), view)
    shard_report.render(console)
    console.rule("4/4 VLA loader: DataLoader, 2 workers, batch 32, H=50, quantile normalization")
    source_view = ViewSource(str(store), view_id)
    dataset = VLADataset(source_view, VLAConfig(batch_size=32, action_horizon=50, normalization="quantile"))
    loader = make_loader(dataset, num_workers=2, reuse_buffers=True)
    seen, t0 = 0, time.perf_counter()
    first = None
    for number, batch in enumerate(loader):
        first = first or batch
        seen += batch["state"].shape[0]
        if number + 1 >= batches:
            break
    rate = seen / (time.perf_counter() - t0)
    for key, value in first.items():
        shape = tuple(value.shape) if hasattr(value, "shape") else f"list[{len(value)}]"
        console.print(f"  {key:14s} {shape} {getattr(value, 'dtype', '')}")
    console.print(f"  instruction[0] = {first['instruction'][0]!r}")
    console.print(f"[bold green]{seen} samples in {batches} batches, {rate:.0f} samples/s[/]; "
                  f"total demo time {time.perf_counter() - started:.0f} s")
    return {"ingest": ingest_report, "shard": shard_report, "samples_per_s": rate, "view_id": view_id}


@command
def main(out: str = typer.Option("demo-output", "--out"),
         batches: int = typer.Option(20, "--batches", min=1)) -> Outcome:
    """Run the demo end to end."""
    result = run_demo(out, batches)
    return Outcome({"out": out, "view_id": result["view_id"], "samples_per_s": round(result["samples_per_s"], 1),
                    "ingest": result["ingest"].to_json(), "shard": result["shard"].to_json()})


if __name__ == "__main__":
    run_process(main)
