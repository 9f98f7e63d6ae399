"""Shard job: one version + a view config -> WebDataset shards + per-shard indexes + view manifest.

    python -m jobs.shard --store STORE [--version latest] [--size 224x224] [--cameras a,b] ...

The plan starts from the nearest earlier view of the same config (the version's own, or an
ancestor's): its shards are kept wherever their episodes did not change, deleted or replaced
episodes are excluded in the new view manifest, and only new or changed episodes are decoded into
new shards (``pipeline.shards.reuse``). Shards are content-addressed, so a shard already on disk is
reused (a re-run after a crash finishes the rest).

New shards are written by a Ray Data actor pool, one shard per call. Each actor routes every video to
a decoder backend (pipeline.video.router: NVDEC for what the card decodes, CPU otherwise) and holds
``num_gpus`` of a GPU when the cluster has GPUs (several actors per GPU; pipeline.video.pool sizes the
pool), with at most two shards in flight per actor. A GPU failure on a file redoes that file on the
CPU; the report lists every such fallback and the backend of every video. The view manifest and the
sample table are written last.
"""

from __future__ import annotations

import importlib
import json
import time
from collections import Counter
from dataclasses import asdict, replace

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
from pipeline.shards.frames import RoutedFrames
from pipeline.shards.manifest import view_dir
from pipeline.shards.table import build_sample_table, sample_table_bytes
from pipeline.shards.writer import view_cameras
from pipeline.store import EpisodeStore
from pipeline.versions import load_catalog, read_manifest, resolve
from pipeline.video.pool import DecodePool, plan_decode_pool
from pipeline.video.router import AUTO, Devices, RouterConfig, may_use_gpu
from schemas import table_to_metas


class ShardWriter:
    """Ray Data actor: loads the catalog once, then writes the shards it is handed."""

    def __init__(self, store_uri: str, storage_options: dict, version_id: str, view_json: dict,
                 decode_json: dict | None = None) -> None:
        decode_json = decode_json or {}
        for module in decode_json.get("backend_modules", []):  # extra backends register themselves on import
            importlib.import_module(module)
        self.store = EpisodeStore(store_uri, storage_options)
        _, manifest = resolve(self.store, version_id)
        self.metas = {m.episode_id: m for m in table_to_metas(load_catalog(self.store, manifest))}
        self.view = ViewConfig.from_json(view_json)
        devices = Devices.from_json(decode_json["devices"]) if decode_json.get("devices") else None
        self.frames = RoutedFrames(_router_config(self.view, decode_json.get("router", {})), devices,
                                   decode_json.get("threads"))

    def __call__(self, batch: dict) -> dict:
        summaries, written, decoded, decode, fallbacks = [], [], [], [], []
        for text in batch["plan"]:
            plan = _plan_from_json(text)
            existed = all(self.store.objects.exists(p) for p in shard_paths(plan.key))
            summary, frames = write_shard(self.store, self.view, plan, self.metas, self.frames)
            records, fell_back = self.frames.drain()
            summaries.append(json.dumps(summary.to_json()))
            written.append(not existed)
            decoded.append(frames)
            decode.append(json.dumps([r | {"shard": plan.name} for r in records]))
            fallbacks.append(json.dumps([f | {"shard": plan.name} for f in fell_back]))
        return {"summary": summaries, "written": written, "decoded": decoded, "decode": decode,
                "fallbacks": fallbacks}


def _router_config(view: ViewConfig, overrides: dict) -> RouterConfig:
    config = replace(RouterConfig(), override=view.decoder or AUTO)
    if "gpu_order" in overrides:
        overrides = overrides | {"gpu_order": tuple(overrides["gpu_order"])}
    return replace(config, **overrides)


def _plan_from_json(text: str) -> ShardPlan:
    data = json.loads(text)
    return ShardPlan(data["index"], tuple(SegmentPlan(**s) for s in data["segments"]), data.get("key", ""))


def run_shard(store_uri: str, view: ViewConfig, *, version: str = "latest", storage_options: dict | None = None,
              concurrency: int | None = None, ray_address: str | None = None, router: dict | None = None,
              devices: Devices | None = None, backend_modules: tuple[str, ...] = ()) -> tuple[JobReport, str]:
    """Materialize ``view`` of a version. Returns the report and the view id.

    ``router``: RouterConfig fields to change (min_gpu_pixels, gpu_order, cpu_backend); ``devices``:
    what the actors route for instead of what they detect; ``backend_modules``: modules each actor
    imports first, which register extra decoder backends."""
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
    new_summaries, written, decoded, pool = [], 0, 0, None
    if planned.new:
        init_ray(ray_address)
        items = [{"plan": json.dumps(asdict(p))} for p in planned.new]
        gpu_work = _gpu_work(metas, view, _router_config(view, router or {}))
        pool = plan_decode_pool(ray.cluster_resources(), len(items), gpu_work=gpu_work, concurrency=concurrency)
        decode_json = {"router": router or {}, "devices": devices.to_json() if devices else None,
                       "backend_modules": list(backend_modules), "threads": pool.threads}
        rows = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardWriter, batch_size=1, **_resources(pool),
            compute=ray.data.ActorPoolStrategy(size=pool.size, max_tasks_in_flight_per_actor=pool.max_tasks_in_flight),
            fn_constructor_kwargs={"store_uri": store_uri, "storage_options": storage_options or {},
                                   "version_id": version_id,
                                   "view_json": view.identity() | {"decoder": view.decoder},
                                   "decode_json": decode_json})
        for row in rows.iter_rows():
            new_summaries.append(ShardSummary.from_json(json.loads(row["summary"])))
            written += bool(row["written"])
            decoded += int(row["decoded"])
            report.decode.extend(json.loads(row["decode"]))
            report.fallbacks.extend(json.loads(row["fallbacks"]))
    order = {p.key: i for i, p in enumerate(planned.new)}
    summaries = planned.kept + sorted(new_summaries, key=lambda s: order[s.name])
    cameras = list(view.cameras) if view.cameras is not None else sorted({c.name for m in metas for c in m.cameras})
    samples_path = _write_sample_table(store, view_id, summaries, {m.episode_id: m for m in metas})
    write_view_manifest(store.objects, ViewManifest(view_id, version_id, view, summaries, manifest.stats, view.decoder,
                                                    list(manifest.deleted), cameras, samples_path, planned.base_view))
    _fill_report(report, summaries, metas, view, view_id, planned.base_view, written, decoded, pool)
    report.seconds = time.perf_counter() - started
    return report, view_id


def _fill_report(report: JobReport, summaries: list[ShardSummary], metas, view: ViewConfig, view_id: str,
                 base_view: str, written: int, decoded: int, pool: DecodePool | None) -> None:
    report.stored = sum(len(s.episodes) for s in summaries)
    report.steps = sum(s.num_steps for s in summaries)
    report.frames = sum(_frames_per_step(m, view) for m in metas)
    report.decoded = decoded
    report.bytes = sum(s.tar_bytes for s in summaries)
    report.decode.sort(key=lambda r: (r["shard"], r["episode_id"], r["camera"]))
    report.fallbacks.sort(key=lambda r: (r["shard"], r["episode_id"], r["camera"]))
    backends = Counter(r["backend"] for r in report.decode)
    report.extra = {"view": view_id, "base view": base_view or "(none)", "shards": len(summaries),
                    "shards written": written, "shards reused": len(summaries) - written,
                    "frames decoded": decoded, "samples": sum(s.num_samples for s in summaries),
                    "decode pool": pool.why if pool else "(nothing to decode)",
                    "GPU fallbacks": len(report.fallbacks),
                    "decoded by": ", ".join(f"{b}: {n} videos" for b, n in sorted(backends.items())) or "-"}


def _gpu_work(metas, view: ViewConfig, config: RouterConfig) -> bool:
    """Whether any video of the view could go to NVDEC: only then do the actors ask for GPUs."""
    return any(may_use_gpu(cam.codec, cam.pix_fmt, cam.width, cam.height, config)
               for meta in metas for cam in meta.cameras if cam.name in view_cameras(meta, view))


def _resources(pool: DecodePool) -> dict:
    return {"num_cpus": pool.num_cpus, "num_gpus": pool.num_gpus} if pool.uses_gpu else {"num_cpus": pool.num_cpus}


def _write_sample_table(store: EpisodeStore, view_id: str, summaries: list[ShardSummary], metas: dict) -> str:
    indexes = [ShardIndex.from_json(json.loads(store.objects.read_bytes(s.index_path))) for s in summaries]
    path = f"{view_dir(view_id)}/samples.parquet"
    table = build_sample_table(indexes, metas, [set(s.excluded) for s in summaries])
    store.objects.write_atomic(path, sample_table_bytes(table))
    return path


def _frames_per_step(meta, view: ViewConfig) -> int:
    return meta.num_steps * sum(1 for c in view_cameras(meta, view) if any(cam.name == c for cam in meta.cameras))


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
    shard_mb: float = typer.Option(None, "--shard-mb", help="Target shard size in MB (default: 1 GiB)"),
    min_shards: int = typer.Option(1, "--min-shards"),
    decoder: str = typer.Option("auto", "--decoder", help="auto (route per video) | pyav | torchcodec-cpu | "
                                                           "torchcodec-cuda | nvcodec"),
    concurrency: int = typer.Option(None, "--concurrency", help="Writer actors (default: CPUs)"),
    report_path: str = typer.Option(None, "--report"),
    ray_address: str = typer.Option(None, "--ray-address"),
) -> None:
    """Materialize a view of a version as WebDataset shards."""
    height, width = parse_size(size)
    view = ViewConfig(cameras=tuple(cameras.split(",")) if cameras else None, height=height, width=width,
                      frame_codec=frame_codec, jpeg_quality=jpeg_quality, jpeg_subsampling=jpeg_subsampling,
                      segment_steps=segment_steps,
                      max_action_horizon=max_action_horizon,
                      target_shard_bytes=int(shard_mb * 1e6) if shard_mb else ViewConfig.target_shard_bytes,
                      min_shards=min_shards, decoder=decoder)
    report, view_id = run_shard(store, view, version=version, concurrency=concurrency, ray_address=ray_address)
    report.render()
    if report_path:
        report.write(report_path)
    typer.echo(f"shard: view {view_id}")


if __name__ == "__main__":
    typer.run(main)
