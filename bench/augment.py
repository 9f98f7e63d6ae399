"""Augmentation run throughput: the reference generator vs a copy-through generator, same run, same store.

    python -m bench.augment [--episodes 6] [--steps 90] [--size 240x320]

Both runs go through the whole loop (export the request, generate, quality gates, store, commit);
the copy-through generator returns the exported input videos unchanged, so the ratio is what the
reference generator's transforms cost on top of the machinery. Each run uses a fresh work folder
and its own ref.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.common import prepared_store, timed, write_result
from pipeline.samples import SampleSpec


def copy_generator(request: dict, request_dir: str, out_dir: str) -> dict:
    """Returns the parent's frames as they were exported (the cheapest possible generator)."""
    videos = {}
    for camera, spec in request["cameras"].items():
        shutil.copyfile(Path(request_dir) / spec["input_video_path"], Path(out_dir) / f"{camera}.mp4")
        videos[camera] = f"{camera}.mp4"
    return {"videos": videos, "model_id": "copy-through", "task": "transfer", "keeps_motion": True}


def main() -> None:
    from jobs.augment import run_augment
    from jobs.raycluster import init_ray

    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--size", default="240x320")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    spec = SampleSpec(num_episodes=args.episodes, min_steps=args.steps, max_steps=args.steps, height=height,
                      width=width)
    _, store = prepared_store(spec, name=f"augment-{args.episodes}x{args.steps}-{args.size}")
    init_ray()
    results = {}
    for name, generator in (("copy", "python:bench.augment:copy_generator"), ("reference", "reference")):
        with tempfile.TemporaryDirectory(prefix="augment-bench-") as workdir:
            seconds, report = timed(run_augment, str(store), source="latest", ref=f"bench-{name}",
                                    generator=generator, workdir=workdir)
        frames = report.frames
        results[name] = {"seconds": round(seconds, 2), "requests": report.extra["requests"],
                         "stored": report.stored + report.reused, "quarantined": len(report.quarantined),
                         "frames": frames, "frames_per_s": round(frames / seconds, 1)}
        print(f"{name:10s} {seconds:7.2f} s  {frames} frames  {frames / seconds:8.1f} frames/s  "
              f"quarantined {len(report.quarantined)}")
    ratio = results["reference"]["seconds"] / results["copy"]["seconds"]
    results["reference_over_copy"] = round(ratio, 2)
    print(f"reference / copy-through time: {ratio:.2f}x")
    print(f"wrote {write_result('augment', {'spec': vars(args), **results})}")


if __name__ == "__main__":
    main()
