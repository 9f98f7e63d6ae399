"""``actionreel report`` on a 1,000-episode version: seconds and HTML size (targets: < 60 s on 2 cores, < 50 MB).

    python -m bench.report [--episodes 1000] [--synthetic 200]

Four episodes of the sample robot are stored in this process (640x480, two cameras, 90-150 steps);
the version's episodes reuse their steps and videos under new ids in three datasets, and a fifth
of them are synthetic children with a generator, a prompt and a parent. A job report with 25
quarantined episodes and warnings is kept with the version, and the report also shows the diff
from the real-only parent version: every section of the page has the work of a real version to do,
at the real frame size (the contact sheets and lineage pairs decode 640x480 video).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace

from bench.common import BENCH_DIR, max_rss_mb, write_result
from pipeline.report import JobReport, keep_job_report
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.store.derive import append_episodes
from pipeline.store.episodes import EpisodeStore
from pipeline.viz.report import write_report
from schemas import GeneratorInfo, Lineage

DATASETS = ("lab-a", "lab-b", "lab-c")


def templates(root):
    """Four stored sample episodes (no cluster needed)."""
    from connectors import get_connector

    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=4, min_steps=90, max_steps=150))
    connector = get_connector("lerobot")
    store = EpisodeStore(str(root / "store"))
    return store, [store.write_episode(connector.read(ref)) for ref in connector.discover(str(source)).refs]


def build(store: EpisodeStore, stored: list, episodes: int, synthetic: int) -> tuple[str, str]:
    """A real-only version, then its child with ``synthetic`` children; returns (parent id, child id)."""
    real = [replace(stored[i % len(stored)], episode_id=f"{DATASETS[i % 3]}-{i:06d}", dataset=DATASETS[i % 3],
                    source_key=f"{DATASETS[i % 3]}/{i}", split="val" if i % 10 == 0 else "train",
                    success=None if i % 7 == 0 else i % 4 != 0) for i in range(episodes - synthetic)]
    parent, _ = append_episodes(store, "latest", real, {"job": "bench"})
    quarantine = JobReport(job="ingest", source="bench", episodes_in=len(real) + 25, stored=len(real),
                           version_id=parent, warnings=["lab-b camera wrist: 3 step(s) in 1 episode(s) have no frame"],
                           quarantined=[{"source_key": f"lab-c/bad-{i}", "episode_id": f"lab-c-bad-{i}",
                                         "file": f"/data/lab-c/episode_{i:06d}.parquet", "field": "action",
                                         "reason": f"SourceError: episode {i}: action has NaN in row {i * 3}"}
                                        for i in range(25)])
    keep_job_report(store.objects, quarantine)
    children = []
    for i in range(synthetic):
        base = real[i * 3 % len(real)]
        lineage = Lineage(parent_episode_id=base.episode_id, root_episode_id=base.episode_id,
                          generator=GeneratorInfo(model_id="nvidia/Cosmos-Transfer2.5-2B", task="transfer", seed=i),
                          prompt=f"the same motion at dusk, variant {i}", action_source="recorded")
        children.append(replace(base, episode_id=f"{base.dataset}-synthetic-{i:06d}", kind="synthetic",
                                dataset=f"{base.dataset}-synthetic", source_key=f"synthetic/{i}", lineage=lineage))
    child, _ = append_episodes(store, "latest", children, {"job": "augment"})
    return parent, child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--synthetic", type=int, default=200)
    args = parser.parse_args()
    root = BENCH_DIR / "report"
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    store, stored = templates(root)
    parent, child = build(store, stored, args.episodes, args.synthetic)
    prepared = time.perf_counter() - started
    out = root / "report.html"
    started = time.perf_counter()
    size = write_report(store, str(out), child, diff_against=parent)
    seconds = time.perf_counter() - started
    # as a user runs it: a fresh process (imports included); its peak memory is the children's RSS
    command = [sys.executable, "-m", "jobs.cli", "report", child, "--store", str(root / "store"), "--diff", parent,
               "--out", str(root / "report-cli.html")]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    cli_seconds = time.perf_counter() - started
    rss = max_rss_mb()
    result = {"episodes": args.episodes, "synthetic": args.synthetic, "cores": os.cpu_count(),
              "report_s": round(seconds, 2), "cli_report_s": round(cli_seconds, 2), "html_mb": round(size / 1e6, 2),
              "cli_peak_rss_mb": round(rss["children"]), "prepare_s": round(prepared, 1)}
    print(result)
    print(f"written {write_result('report', result)}; the page: {out}")


if __name__ == "__main__":
    main()
