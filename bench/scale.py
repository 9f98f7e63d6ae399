"""Catalog operations at 10^3..10^6 episodes: commit, load, log, diff, select, append of 1,000, stats merge,
view planning; seconds per size and the growth per 10x (1.0 per 10x = linear... 10.0 means linear).

    python -m bench.scale [--sizes 1000,10000,100000]   (10^6 takes long here: pass it explicitly)

Episodes are synthesized from one ingested episode of the demo dataset: new ids, the same steps and
video objects (so nothing is decoded and the per-episode stats cache is shared), which measures the
catalog, manifest and planning code paths alone. Growth is ``seconds(10N) / seconds(N)``: <= 10 is
no worse than linear. Peak memory (RSS) of the process is reported per size.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import time
from dataclasses import replace

from bench.common import BENCH_DIR, write_result
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.shards import ViewConfig
from pipeline.shards.plan import plan_shards
from pipeline.store.catalog import CatalogQuery
from pipeline.store.derive import append_episodes, select_version
from pipeline.store.episodes import EpisodeStore
from pipeline.store.history import diff_versions, version_log
from pipeline.store.statcache import episode_stats_of
from pipeline.store.versions import load_catalog, load_stats, resolve
from schemas import table_to_metas


def template_episode():
    """One generated episode stored in this process (no cluster needed): (store root, its meta)."""
    from connectors import get_connector

    root = BENCH_DIR / "scale-template"
    shutil.rmtree(root, ignore_errors=True)
    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=1, min_steps=60, max_steps=60,
                                                              height=48, width=64))
    connector = get_connector("lerobot")
    store = EpisodeStore(str(root / "store"))
    meta = store.write_episode(connector.read(connector.discover(str(source)).refs[0]))
    episode_stats_of(store, meta)  # cached, as the ingest job caches every stored episode's stats
    return root / "store", meta


def synthesized(template, count: int, prefix: str) -> list:
    return [replace(template, episode_id=f"{prefix}-{i:08d}", source_key=f"{prefix}/{i}") for i in range(count)]


def measure(size: int, template, store_root) -> dict:
    root = BENCH_DIR / "scale" / f"n{size}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(store_root / "objects", root / "objects")  # steps/videos/stats objects, no versions
    store = EpisodeStore(str(root))
    row: dict = {"episodes": size}

    def timed(name: str, fn):
        started = time.perf_counter()
        result = fn()
        row[f"{name}_s"] = round(time.perf_counter() - started, 3)
        return result

    metas = synthesized(template, size, "bench")
    base, _ = timed("commit", lambda: append_episodes(store, "latest", metas, {"job": "bench"}))
    _, manifest = resolve(store, base)
    table = timed("load_catalog", lambda: load_catalog(store, manifest))
    extra = synthesized(template, 1000, "more")
    head, _ = timed("append_1000", lambda: append_episodes(store, "latest", extra, {"job": "bench"}))
    _, child = resolve(store, head)
    timed("log", lambda: version_log(store, head))
    timed("diff", lambda: diff_versions(store, base, manifest, head, child))
    timed("select", lambda: select_version(store, "latest", CatalogQuery(min_steps=1), ref="selected"))
    timed("stats_merge", lambda: load_stats(store, child))
    view = ViewConfig()
    live = table_to_metas(table)
    timed("plan_view", lambda: plan_shards([(m.episode_id, m.num_steps, len(m.cameras)) for m in live], view))
    row["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    shutil.rmtree(root, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    store_root, template = template_episode()
    rows = []
    for size in map(int, args.sizes.split(",")):
        rows.append(measure(size, template, store_root))
        print(rows[-1], flush=True)
    ops = [k for k in rows[0] if k.endswith("_s")]
    for previous, row in itertools.pairwise(rows):
        factor = row["episodes"] / previous["episodes"]
        row["growth"] = {k[:-2]: round(row[k] / max(previous[k], 1e-3), 1) for k in ops}
        row["growth_per"] = factor
    print("| episodes | " + " | ".join(k[:-2] for k in ops) + " | peak RSS MB |")
    print("|---" * (len(ops) + 2) + "|")
    for r in rows:
        growth = r.get("growth", {})
        cells = [f"{r[k]}" + (f" ({growth[k[:-2]]}x)" if growth else "") for k in ops]
        print(f"| {r['episodes']} | " + " | ".join(cells) + f" | {r['max_rss_mb']} |")
    print(f"written {write_result('scale', {'cores': os.cpu_count(), 'rows': rows})}")


if __name__ == "__main__":
    main()
