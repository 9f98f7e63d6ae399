"""Shared benchmark setup: a generated dataset, ingested and sharded once, cached under .bench/."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.shards import ViewConfig

BENCH_DIR = Path(os.environ.get("ACTIONREEL_BENCH_DIR", Path(__file__).resolve().parents[1] / ".bench"))


def prepared_store(spec: SampleSpec | None = None, name: str = "default") -> tuple[Path, Path]:
    """(source dataset, ingested store) for ``spec`` (default: the demo's), built on first use."""
    from jobs.ingest import run_ingest

    spec = spec or SampleSpec()
    root = BENCH_DIR / name
    source, store = root / "source", root / "store"
    if not (root / "ready").exists():
        if not source.exists():
            write_sample_dataset(source, spec)
        run_ingest(str(source), str(store))
        (root / "ready").write_text("ok")
    return source, store


def prepared_view(store: Path, view: ViewConfig) -> str:
    from jobs.shard import run_shard

    _, view_id = run_shard(str(store), view)
    return view_id


def max_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its (finished) children, in MB."""
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def write_result(name: str, result: dict) -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
