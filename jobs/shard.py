"""Shard job: one version + a view config -> WebDataset shards + per-shard indexes + view manifest.

    python -m jobs.shard --store STORE [--version latest] [--size 224x224] [--cameras a,b] ...

The plan starts from the nearest earlier view of the same config (the version's own, or an
ancestor's): its shards are kept wherever their episodes did not change, deleted or replaced
episodes are excluded in the new view manifest, and only new or changed episodes are decoded into
new shards (``pipeline.shards.reuse``). Shards are content-addressed, so a shard already on disk
is reused (a re-run after a crash finishes the rest). New shards are written by a Ray Data actor
pool (each actor holds a decoder), one shard per call; the view manifest is written last.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import ray
import typer

from jobs.raycluster import init_ray
from pipeline.report import JobReport
from pipeline.shards import (
    SegmentPlan,
    ShardIndex,
    ShardPlan,
    ShardSummary,
    ViewConfig,
    ViewManifest,
    find_base_view,
    plan_view,
    shard_paths,
    write_shard,
    write_view_manifest,
)
from pipeline.shards.manifest import view_dir
from pipeline.shards.table import build_sample_table, sample_table_bytes
from pipeline.shards.writer import view_cameras
from pipeline.store import EpisodeStore
from pipeline.versions import load_catalog, read_manifest, resolve
from pipeline.video import available_decoders
from schemas import table_to_metas


class ShardWriter:
    """Ray Data actor: loads the catalog once, then writes the shards it is handed."""

    def __init__(self, store_uri: str, storage_options: dict, version_id: str, view_json: dict) -> None:
        self.store = EpisodeStore(store_uri, storage_options)
        _, manifest = resolve(self.store, version_id)
        self.metas = {m.episode_id: m for m in table_to_metas(load_catalog(self.store, manifest))}
        self.view = ViewConfig.from_json(view_json)
        self.decoder = available_decoders()[self.view.decoder]()

    def __call__(self, batch: dict) -> dict:
        summaries, written, decoded = [], [], []
        for text in batch["plan"]:
            plan = _plan_from_json(text)
            existed = all(self.store.objects.exists(p) for p in shard_paths(plan.key))
            summary, frames = write_shard(self.store, self.view, plan, self.metas, self.decoder)
            summaries.append(json.dumps(summary.to_json()))
            written.append(not existed)
            decoded.append(frames)
        return {"summary": summaries, "written": written, "decoded": decoded}


def _plan_from_json(text: str) -> ShardPlan:
    data = json.loads(text)
    return ShardPlan(data["index"], tuple(SegmentPlan(**s) for s in data["segments"]), data["key"])


def run_shard(store_uri: str, view: ViewConfig, *, version: str = "latest", storage_options: dict | None = None,
              concurrency: int | None = None, ray_address: str | None = None) -> tuple[JobReport, str]:
    """Materialize ``view`` of a version. Returns the report and the view id."""
    started = time.perf_counter()
    store = EpisodeStore(store_uri, storage_options)
    version_id, manifest = resolve(store, version)
    metas = table_to_metas(load_catalog(store, manifest))
    view_id = view.view_id(version_id)
    base = find_base_view(store.objects, version_id, lambda v: read_manifest(store, v).parent, view)
    base_metas = None
    if base is not None:
        base_metas = metas if base.version_id == version_id else table_to_metas(
            load_catalog(store, read_manifest(store, base.version_id)))
    planned = plan_view(store.objects, view, metas, base, base_metas)
    report = JobReport(job="shard", source=f"{store_uri}@{version_id[:12]}", episodes_in=len(metas),
                       version_id=version_id)
    new_summaries, written, decoded = [], 0, 0
    if planned.new:
        init_ray(ray_address)
        items = [{"plan": json.dumps(asdict(p))} for p in planned.new]
        rows = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardWriter, batch_size=1, num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=concurrency or min(len(items), _cpus())),
            fn_constructor_kwargs={"store_uri": store_uri, "storage_options": storage_options or {},
                                   "version_id": version_id,
                                   "view_json": view.identity() | {"decoder": view.decoder}})
        for row in rows.iter_rows():
            new_summaries.append(ShardSummary.from_json(json.loads(row["summary"])))
            written += bool(row["written"])
            decoded += int(row["decoded"])
    order = {p.key: i for i, p in enumerate(planned.new)}
    summaries = planned.kept + sorted(new_summaries, key=lambda s: order[s.name])
    cameras = list(view.cameras) if view.cameras is not None else sorted({c.name for m in metas for c in m.cameras})
    samples_path = _write_sample_table(store, view_id, summaries, {m.episode_id: m for m in metas})
    write_view_manifest(store.objects, ViewManifest(view_id, version_id, view, summaries, manifest.stats, view.decoder,
                                                    list(manifest.deleted), cameras, samples_path, planned.base_view))
    report.stored = sum(len(s.episodes) for s in summaries)
    report.steps = sum(s.num_steps for s in summaries)
    report.frames = sum(_frames_per_step(m, view) for m in metas)
    report.decoded = decoded
    report.bytes = sum(s.tar_bytes for s in summaries)
    report.extra = {"view": view_id, "base view": planned.base_view or "(none)", "shards": len(summaries),
                    "shards written": written, "shards reused": len(summaries) - written,
                    "frames decoded": decoded, "samples": sum(s.num_samples for s in summaries)}
    report.seconds = time.perf_counter() - started
    return report, view_id


def _write_sample_table(store: EpisodeStore, view_id: str, summaries: list[ShardSummary], metas: dict) -> str:
    indexes = [ShardIndex.from_json(json.loads(store.objects.read_bytes(s.index_path))) for s in summaries]
    path = f"{view_dir(view_id)}/samples.parquet"
    table = build_sample_table(indexes, metas, [set(s.excluded) for s in summaries])
    store.objects.write_atomic(path, sample_table_bytes(table))
    return path


def _frames_per_step(meta, view: ViewConfig) -> int:
    return meta.num_steps * sum(1 for c in view_cameras(meta, view) if any(cam.name == c for cam in meta.cameras))


def _cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def parse_size(text: str) -> tuple[int, int]:
    """``224x224`` or ``480x640`` (height x width)."""
    try:
        height, width = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"size must be HEIGHTxWIDTH, got {text!r}") from None
    return height, width


def main(
    store: str = typer.Option(..., "--store", help="Episode store root"),
    version: str = typer.Option("latest", "--version", help="Version id or ref"),
    size: str = typer.Option("224x224", "--size", help="Frame size HEIGHTxWIDTH"),
    cameras: str = typer.Option(None, "--cameras", help="Comma-separated cameras (default: all)"),
    frame_codec: str = typer.Option("jpg", "--frame-codec", help="jpg | png | npy"),
    jpeg_quality: int = typer.Option(95, "--jpeg-quality"),
    jpeg_subsampling: str = typer.Option("444", "--jpeg-subsampling", help="444 | 422 | 420"),
    segment_steps: int = typer.Option(64, "--segment-steps"),
    max_action_horizon: int = typer.Option(64, "--max-action-horizon"),
    shard_mb: float = typer.Option(1024.0, "--shard-mb", help="Target shard size in MB"),
    min_shards: int = typer.Option(1, "--min-shards"),
    decoder: str = typer.Option("pyav", "--decoder"),
    concurrency: int = typer.Option(None, "--concurrency", help="Writer actors (default: CPUs)"),
    report_path: str = typer.Option(None, "--report"),
    ray_address: str = typer.Option(None, "--ray-address"),
) -> None:
    """Materialize a view of a version as WebDataset shards."""
    height, width = parse_size(size)
    view = ViewConfig(cameras=tuple(cameras.split(",")) if cameras else None, height=height, width=width,
                      frame_codec=frame_codec, jpeg_quality=jpeg_quality, jpeg_subsampling=jpeg_subsampling,
                      segment_steps=segment_steps,
                      max_action_horizon=max_action_horizon, target_shard_bytes=int(shard_mb * 1e6),
                      min_shards=min_shards, decoder=decoder)
    report, view_id = run_shard(store, view, version=version, concurrency=concurrency, ray_address=ray_address)
    report.render()
    if report_path:
        report.write(report_path)
    typer.echo(f"shard: view {view_id}")


if __name__ == "__main__":
    typer.run(main)
