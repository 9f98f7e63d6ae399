"""Loader start on a view of 10^3..10^6 episodes: seconds to the first batch and memory per process.

    python -m bench.scale_loader [--sizes 1000,10000,100000]

A real view of a few generated episodes is built once (ingest and shard on a local Ray); views of N
episodes are then synthesized on it: a sample table of N rows with new episode ids and a manifest
whose shard entries reuse the real shards (so nothing is decoded or written per size), which
measures what a loader does before its first batch at that size: read the manifest, the sample
table and the stats, build its step index, start its workers, read one batch. Memory is the peak
RSS of the training process and of each DataLoader worker (read from /proc before they exit).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import time
from dataclasses import replace

import psutil
import pyarrow as pa

from bench.common import BENCH_DIR, write_result
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.shards import ViewConfig, load_view
from pipeline.shards.manifest import ViewManifest, view_dir, write_view_manifest
from pipeline.shards.table import SAMPLE_TABLE_SCHEMA, sample_table_bytes
from pipeline.store.episodes import EpisodeStore

VIEW = ViewConfig(height=64, width=64, segment_steps=64, min_shards=4)


def template_view() -> tuple[str, ViewManifest]:
    """A real 4-shard view of 8 generated episodes: (store path, its manifest)."""
    from jobs.ingest import run_ingest
    from jobs.raycluster import init_ray
    from jobs.shard import run_shard

    root = BENCH_DIR / "scale-loader"
    shutil.rmtree(root, ignore_errors=True)
    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=8, min_steps=60, max_steps=60,
                                                              height=48, width=64))
    init_ray(num_cpus=os.cpu_count())
    store = str(root / "store")
    run_ingest(str(source), store)
    _, view_id = run_shard(store, VIEW)
    import ray

    ray.shutdown()  # the training process of a single-node run has no Ray: loader workers fork
    return store, load_view(EpisodeStore(store).objects, view_id)


def synthesize_view(store: str, template: ViewManifest, size: int, per_shard: int) -> str:
    """A view of ``size`` episodes (one sample each), ``per_shard`` samples per shard entry; the entries
    reuse the template's shards and their samples' rows cyclically (many table rows, one tar member)."""
    objects = EpisodeStore(store).objects
    samples = _template_samples(objects, template)
    real_rows = [samples.filter(pa.compute.equal(samples["shard"], s)).to_pylist() for s in range(len(template.shards))]
    columns: dict[str, list] = {name: [] for name in SAMPLE_TABLE_SCHEMA.names}
    shards = []
    for shard, first in enumerate(range(0, size, per_shard)):
        real = shard % len(template.shards)
        count = min(per_shard, size - first)
        ids = [f"scale-{i:08d}" for i in range(first, first + count)]
        for position, episode in enumerate(ids):
            row = dict(real_rows[real][position % len(real_rows[real])], shard=shard, episode_id=episode)
            row["key"] = f"{episode}.{row['segment']:05d}"
            for name in columns:
                columns[name].append(row[name])
        steps = sum(columns["num_steps"][-count:])
        shards.append(replace(template.shards[real], name=f"scale-{shard:06d}", episodes=ids, num_samples=count,
                              num_steps=int(steps), excluded=[]))
    view_id = f"scale-{size}"
    table = pa.Table.from_pydict(columns, schema=SAMPLE_TABLE_SCHEMA)
    samples_path = f"{view_dir(view_id)}/samples.parquet"
    objects.write_atomic(samples_path, sample_table_bytes(table))
    write_view_manifest(objects, replace(template, view_id=view_id, shards=shards, samples_path=samples_path,
                                         base_view=""))
    return view_id


def _template_samples(objects, template: ViewManifest) -> pa.Table:
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(objects.read_bytes(template.samples_path)))


def measure(store: str, view_id: str, size: int, workers: int) -> dict:
    from pipeline.loaders import ViewSource, VLAConfig, VLADataset, make_loader

    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    source = ViewSource(store, view_id)
    dataset = VLADataset(source, VLAConfig(batch_size=32, action_horizon=16, seed=0))
    built = time.perf_counter() - started
    loader = make_loader(dataset, num_workers=workers, prefetch_factor=2)
    iterator = iter(loader)
    batch = next(iterator)
    first = time.perf_counter() - started
    worker_rss = [child.memory_info().rss for child in process.children(recursive=True)
                  if child.is_running() and "python" in " ".join(child.cmdline()[:1])]
    row = {"episodes": size, "samples": len(source.table), "shards": len(source.manifest.shards),
           "dataset_build_s": round(built, 3), "first_batch_s": round(first, 3),
           "batch": len(batch["episode_id"]) if "episode_id" in batch else sorted(batch),
           "main_rss_mb": round(process.memory_info().rss / 2**20), "main_added_mb": round(
               (process.memory_info().rss - rss_before) / 2**20),
           "max_worker_rss_mb": round(max(worker_rss, default=0) / 2**20), "workers": workers}
    del iterator, loader, dataset
    row["wam_build_s"], row["map_build_s"] = _build_seconds(source)
    del source
    return row


def _build_seconds(source) -> tuple[float, float]:
    """Seconds to build the WAM clip dataset and the map-style VLA dataset on the same view."""
    from pipeline.loaders import WAMConfig, WAMDataset
    from pipeline.loaders.mapstyle import VLAMapDataset

    started = time.perf_counter()
    WAMDataset(source, WAMConfig(n_context=2, n_future=6, batch_size=8))
    wam = time.perf_counter() - started
    started = time.perf_counter()
    VLAMapDataset(source)
    return round(wam, 3), round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-shard", type=int, default=1000, help="samples per shard (1 GB shards of a 224x224 "
                        "two-camera view hold about 1,000 one-minute episodes)")
    args = parser.parse_args()
    store, template = template_view()
    rows = []
    for size in map(int, args.sizes.split(",")):
        started = time.perf_counter()
        view_id = synthesize_view(store, template, size, args.per_shard)
        row = measure(store, view_id, size, args.workers)
        row["synthesize_s"] = round(time.perf_counter() - started - row["first_batch_s"], 1)
        rows.append(row)
        print(row, flush=True)
    print("| episodes | samples | shards | dataset build s | first batch s | main RSS MB | max worker RSS MB "
          "| WAM build s | map-style build s |")
    print("|---" * 9 + "|")
    for r in rows:
        print(f"| {r['episodes']} | {r['samples']} | {r['shards']} | {r['dataset_build_s']} | {r['first_batch_s']} "
              f"| {r['main_rss_mb']} | {r['max_worker_rss_mb']} | {r['wam_build_s']} | {r['map_build_s']} |")
    print(f"written {write_result('scale_loader', {'cores': os.cpu_count(), 'rows': rows})}")


if __name__ == "__main__":
    main()
