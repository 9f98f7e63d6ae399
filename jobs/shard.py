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

An episode whose stored video or steps cannot be decoded (corrupted after ingest) is quarantined: its
shard is written without it, the view is written all the same, and the report lists the episode, the
file and the reason (``quarantined``); the job never fails for one episode. Repair the store
(``actionreel versions verify --repair``) and re-run the job: the episode is planned again.
"""

from __future__ import annotations

import importlib
import json
import time
from collections import Counter
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

import typer

from jobs import choices
from jobs.cliutil import (
    Outcome,
    UserError,
    choice,
    command,
    echo,
    json_mode,
    parse_storage_options,
    require_store,
    run_process,
    split_list,
    storage_options_option,
    store_option,
)
from pipeline.store import retries as storage_faults  # light: no I/O stack imported

if TYPE_CHECKING:
    from pipeline.report import JobReport
    from pipeline.shards import ShardPlan, ShardSummary, ViewConfig
    from pipeline.store.episodes import EpisodeStore
    from pipeline.video.pool import DecodePool
    from pipeline.video.router import Devices, RouterConfig


class ShardWriter:
    """Ray Data actor: loads the catalog on its first batch, then writes the shards it is handed.

    Nothing is read from storage before a batch arrives: an actor the pool starts but never hands a
    shard would otherwise read the catalog, and any storage fault it rode out would never reach the
    job's report (its counts travel with the batches it returns).
    """

    def __init__(self, store_uri: str, storage_options: dict, version_id: str, view_json: dict,
                 decode_json: dict | None = None) -> None:
        from pipeline.shards import ViewConfig
        from pipeline.shards.frames import RoutedFrames
        from pipeline.video.router import Devices

        self._faults_since = storage_faults.snapshot()  # the catalog reads count with the first batch
        decode_json = decode_json or {}
        for module in decode_json.get("backend_modules", []):  # extra backends register themselves on import
            importlib.import_module(module)
        self._store_args, self._version_id = (store_uri, storage_options), version_id
        self.store, self.metas = None, None
        self.view = ViewConfig.from_json(view_json)
        devices = Devices.from_json(decode_json["devices"]) if decode_json.get("devices") else None
        self.frames = RoutedFrames(_router_config(self.view, decode_json.get("router", {})), devices,
                                   decode_json.get("threads"))

    def _load(self) -> None:
        from pipeline.store.episodes import EpisodeStore
        from pipeline.store.versions import load_catalog, resolve
        from schemas import table_to_metas

        self.store = EpisodeStore(*self._store_args)
        _, manifest = resolve(self.store, self._version_id)
        self.metas = {m.episode_id: m for m in table_to_metas(load_catalog(self.store, manifest))}

    def __call__(self, batch: dict) -> dict:
        from pipeline.shards import shard_paths
        from pipeline.shards.writer import write_shard_quarantining

        if self.metas is None:
            self._load()
        summaries, written, decoded, decode, fallbacks, quarantined, keys = [], [], [], [], [], [], []
        for text in batch["plan"]:
            plan = _plan_from_json(text)
            existed = all(self.store.objects.exists(p) for p in shard_paths(plan.key))
            outcome = write_shard_quarantining(self.store, self.view, plan, self.metas, self.frames)
            records, fell_back = self.frames.drain()
            summaries.append(json.dumps(outcome.summary.to_json()) if outcome.summary else "")
            written.append(not existed and outcome.summary is not None)
            decoded.append(outcome.decoded)
            decode.append(json.dumps([r | {"shard": plan.name} for r in records]))
            fallbacks.append(json.dumps([f | {"shard": plan.name} for f in fell_back]))
            quarantined.append(json.dumps([q | {"shard": plan.name} for q in outcome.quarantined]))
            keys.append(plan.key)
        faults = storage_faults.since(self._faults_since)
        self._faults_since = storage_faults.snapshot()
        retried = [json.dumps(faults)] + ["{}"] * (len(summaries) - 1)
        return {"summary": summaries, "written": written, "decoded": decoded, "decode": decode,
                "fallbacks": fallbacks, "storage_retries": retried,
                "quarantined": quarantined, "plan_key": keys}


def _router_config(view: ViewConfig, overrides: dict) -> RouterConfig:
    from pipeline.video.router import AUTO, RouterConfig

    config = replace(RouterConfig(), override=view.decoder or AUTO)
    if "gpu_order" in overrides:
        overrides = overrides | {"gpu_order": tuple(overrides["gpu_order"])}
    return replace(config, **overrides)


def _plan_from_json(text: str) -> ShardPlan:
    from pipeline.shards import SegmentPlan, ShardPlan

    data = json.loads(text)
    return ShardPlan(data["index"], tuple(SegmentPlan(**s) for s in data["segments"]), data.get("key", ""))


def run_shard(store_uri: str, view: ViewConfig, *, version: str = "latest", storage_options: dict | None = None,
              concurrency: int | None = None, ray_address: str | None = None, router: dict | None = None,
              devices: Devices | None = None, backend_modules: tuple[str, ...] = (),
              name: str | None = None) -> tuple[JobReport, str]:
    """Materialize ``view`` of a version. Returns the report and the view id.

    ``router``: RouterConfig fields to change (min_gpu_pixels, gpu_order, cpu_backend); ``devices``:
    what the actors route for instead of what they detect; ``backend_modules``: modules each actor
    imports first, which register extra decoder backends; ``name``: a name for the view (``views``)."""
    import ray

    from jobs.raycluster import init_ray
    from pipeline.progress import JobProgress, terminal_progress
    from pipeline.report import JobReport
    from pipeline.shards import ShardSummary, find_base_view, plan_view, write_view_manifest
    from pipeline.shards.manifest import ViewManifest
    from pipeline.shards.names import check_view_name, name_view
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import load_catalog, read_manifest, resolve
    from pipeline.video.pool import plan_decode_pool
    from schemas import table_to_metas

    started = time.perf_counter()
    faults_before = storage_faults.snapshot()
    if name:
        check_view_name(name)
    store = EpisodeStore(store_uri, storage_options)
    version_id, manifest = resolve(store, version)
    metas = table_to_metas(load_catalog(store, manifest))
    check_cameras(view, metas, version_id)
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
        with JobProgress("shard", len(items), enabled=terminal_progress() and not json_mode(), unit="frames",
                         item="shards") as bar:
            for row in rows.iter_rows():
                if row["summary"]:
                    new_summaries.append((row["plan_key"], ShardSummary.from_json(json.loads(row["summary"]))))
                report.quarantined.extend(json.loads(row["quarantined"]))
                written += bool(row["written"])
                decoded += int(row["decoded"])
                bar.advance(1, int(row["decoded"]))
                report.decode.extend(json.loads(row["decode"]))
                report.fallbacks.extend(json.loads(row["fallbacks"]))
                report.storage_retries = storage_faults.add(report.storage_retries,
                                                            json.loads(row["storage_retries"]))
    order = {p.key: i for i, p in enumerate(planned.new)}
    summaries = planned.kept + [s for _, s in sorted(new_summaries, key=lambda pair: order[pair[0]])]
    report.quarantined.sort(key=lambda q: (q["shard"], q["episode_id"]))
    cameras = list(view.cameras) if view.cameras is not None else sorted({c.name for m in metas for c in m.cameras})
    samples_path = _write_sample_table(store, view_id, summaries, {m.episode_id: m for m in metas})
    write_view_manifest(store.objects, ViewManifest(view_id, version_id, view, summaries, manifest.stats, view.decoder,
                                                    list(manifest.deleted), cameras, samples_path, planned.base_view))
    _fill_report(report, summaries, metas, view, view_id, planned.base_view, written, decoded, pool)
    report.storage_retries = storage_faults.add(report.storage_retries, storage_faults.since(faults_before))
    report.extra["view path"] = store.objects.abspath(view_dir(view_id))
    if name:
        name_view(store.objects, name, view_id, version_id)
        report.extra["view name"] = name
    report.seconds = time.perf_counter() - started
    return report, view_id


def _fill_report(report: JobReport, summaries: list[ShardSummary], metas, view: ViewConfig, view_id: str,
                 base_view: str, written: int, decoded: int, pool: DecodePool | None) -> None:
    report.stored = len({e for s in summaries for e in s.episodes})  # an episode cut across shards counts once
    report.steps = sum(s.num_steps for s in summaries)
    report.frames = sum(_frames_per_step(m, view) for m in metas)
    report.decoded = decoded
    report.bytes = sum(s.tar_bytes for s in summaries)
    report.decode.sort(key=lambda r: (r["shard"], r["episode_id"], r["camera"]))
    report.fallbacks.sort(key=lambda r: (r["shard"], r["episode_id"], r["camera"]))
    backends = Counter(r["backend"] for r in report.decode)
    report.extra = {"view": view_id, "base view": base_view or "(none)", "shards": len(summaries),
                    "episodes quarantined": len(report.quarantined),
                    "shards written": written, "shards reused": len(summaries) - written,
                    "frames decoded": decoded, "samples": sum(s.num_samples for s in summaries),
                    "decode pool": pool.why if pool else "(nothing to decode)",
                    "GPU fallbacks": len(report.fallbacks),
                    "decoded by": ", ".join(f"{b}: {n} videos" for b, n in sorted(backends.items())) or "-"}


def check_cameras(view: ViewConfig, metas: list, version_id: str) -> None:
    """Every camera the view names exists in some episode of the version (else the view has no frames)."""
    if view.cameras is None:
        return
    known = sorted({c.name for m in metas for c in m.cameras})
    unknown = [c for c in view.cameras if c not in known]
    if unknown:
        raise UserError(f"--cameras: version {version_id[:12]} has no camera {', '.join(unknown)}; "
                        f"its cameras are: {', '.join(known) or '(none)'}")


def _gpu_work(metas, view: ViewConfig, config: RouterConfig) -> bool:
    """Whether any video of the view could go to NVDEC: only then do the actors ask for GPUs."""
    from pipeline.shards.writer import view_cameras
    from pipeline.video.router import may_use_gpu

    return any(may_use_gpu(cam.codec, cam.pix_fmt, cam.width, cam.height, config)
               for meta in metas for cam in meta.cameras if cam.name in view_cameras(meta, view))


def _resources(pool: DecodePool) -> dict:
    return {"num_cpus": pool.num_cpus, "num_gpus": pool.num_gpus} if pool.uses_gpu else {"num_cpus": pool.num_cpus}


def _write_sample_table(store: EpisodeStore, view_id: str, summaries: list[ShardSummary], metas: dict) -> str:
    from pipeline.shards import ShardIndex
    from pipeline.shards.table import build_sample_table, sample_table_bytes

    indexes = [ShardIndex.from_json(json.loads(store.objects.read_bytes(s.index_path))) for s in summaries]
    path = f"{view_dir(view_id)}/samples.parquet"
    table = build_sample_table(indexes, metas, [set(s.excluded) for s in summaries])
    store.objects.write_atomic(path, sample_table_bytes(table))
    return path


def _frames_per_step(meta, view: ViewConfig) -> int:
    from pipeline.shards.writer import view_cameras

    return meta.num_steps * sum(1 for c in view_cameras(meta, view) if any(cam.name == c for cam in meta.cameras))


def view_dir(view_id: str) -> str:
    return f"views/{view_id}"  # pipeline.shards.manifest.view_dir, without importing it for --help


def parse_size(text: str) -> tuple[int, int]:
    """``224x224`` or ``480x640`` (height x width), both at least 1."""
    try:
        height, width = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 224x224") from None
    if height < 1 or width < 1:
        raise UserError(f"--size {text!r}: height and width must be at least 1, e.g. 224x224")
    return height, width


def _in_range(value: float | None, option: str, low: float, high: float | None = None) -> None:
    if value is None or (value >= low and (high is None or value <= high)):
        return
    bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
    raise UserError(f"{option} {value:g}: must be {bound}")


def view_from_options(size: str, cameras: str | None, frame_codec: str, jpeg_quality: int, jpeg_subsampling: str,
                      segment_steps: int, max_action_horizon: int | None, resize: str, pad_value: int,
                      shard_mb: float | None, min_shards: int, decoder: str, step_extras: str | None,
                      video_gop: int = 0) -> ViewConfig:
    """The command line's view options, each checked, as a ViewConfig."""
    height, width = parse_size(size)
    choice(frame_codec, choices.FRAME_CODECS, "--frame-codec")
    choice(jpeg_subsampling, choices.JPEG_SUBSAMPLING, "--jpeg-subsampling")
    choice(resize, choices.RESIZE_MODES, "--resize")
    choice(decoder, choices.DECODERS, "--decoder")
    _in_range(jpeg_quality, "--jpeg-quality", 1, 100)
    _in_range(pad_value, "--pad-value", 0, 255)
    _in_range(segment_steps, "--segment-steps", 1)
    _in_range(max_action_horizon, "--max-action-horizon", 1)
    _in_range(min_shards, "--min-shards", 1)
    _in_range(video_gop, "--video-gop", 0)
    if shard_mb is not None and shard_mb <= 0:
        raise UserError(f"--shard-mb {shard_mb:g}: the target shard size must be more than 0 MB (e.g. 1000)")
    picked = split_list(cameras)
    if picked is not None and not picked:
        raise UserError("--cameras: name at least one camera, or leave the option out for every camera")
    from pipeline.shards import ViewConfig

    return ViewConfig(cameras=picked, height=height, width=width, frame_codec=frame_codec, jpeg_quality=jpeg_quality,
                      jpeg_subsampling=jpeg_subsampling, segment_steps=segment_steps,
                      max_action_horizon=max_action_horizon or choices.DEFAULT_MAX_ACTION_HORIZON, resize=resize,
                      pad_value=pad_value,
                      target_shard_bytes=int(shard_mb * 1e6) if shard_mb else choices.DEFAULT_SHARD_BYTES,
                      min_shards=min_shards, decoder=decoder, step_extras=split_list(step_extras) or (),
                      video_gop=video_gop)


@command
def main(
    store: str = store_option(),
    storage_options: str = storage_options_option(),
    version: str = typer.Option("latest", "--version", help="Version id or ref"),
    size: str = typer.Option("224x224", "--size", help="Frame size HEIGHTxWIDTH"),
    cameras: str = typer.Option(None, "--cameras", help="Comma-separated cameras (default: all)"),
    frame_codec: str = typer.Option("jpg", "--frame-codec", help="jpg | png | npy | mp4 (video segments)"),
    video_gop: int = typer.Option(0, "--video-gop", help="mp4 segments encoded at another size: a keyframe every "
                                  "N pictures, for random access (0: one GOP per segment)"),
    jpeg_quality: int = typer.Option(95, "--jpeg-quality", help="1-100"),
    jpeg_subsampling: str = typer.Option("444", "--jpeg-subsampling", help="444 | 422 | 420"),
    segment_steps: int = typer.Option(64, "--segment-steps"),
    max_action_horizon: int = typer.Option(None, "--max-action-horizon",
                                           help=f"Actions stored past a segment's end (default "
                                           f"{choices.DEFAULT_MAX_ACTION_HORIZON})"),
    resize: str = typer.Option("stretch", "--resize", help="stretch | pad (letterbox, aspect kept) | crop"),
    pad_value: int = typer.Option(0, "--pad-value", help="Letterbox fill for --resize pad"),
    shard_mb: float = typer.Option(None, "--shard-mb", help="Target shard size in MB (default: 1 GiB)"),
    min_shards: int = typer.Option(1, "--min-shards"),
    decoder: str = typer.Option("auto", "--decoder", help="auto (route per video) | pyav | torchcodec-cpu | "
                                                           "torchcodec-cuda | nvcodec"),
    concurrency: int = typer.Option(None, "--concurrency", help="Writer actors (default: CPUs)"),
    step_extras: str = typer.Option(None, "--step-extras", help="Comma-separated step extras each sample carries "
                                    "(e.g. continuous_gripper_state for the WAM loader's cosmos_ee_delta)"),
    name: str = typer.Option(None, "--name", help="Name the view (listed by `actionreel views`)"),
    report_path: str = typer.Option(None, "--report", help="Also write the report as JSON here"),
    ray_address: str = typer.Option(None, "--ray-address"),
) -> Outcome:
    """Materialize a view of a version as WebDataset shards; prints where the view is and its id."""
    view = view_from_options(size, cameras, frame_codec, jpeg_quality, jpeg_subsampling, segment_steps,
                             max_action_horizon, resize, pad_value, shard_mb, min_shards, decoder, step_extras,
                             video_gop)
    _in_range(concurrency, "--concurrency", 1)
    if name:
        _check_name(name)
    options = parse_storage_options(storage_options)
    require_store(store, options)
    report, view_id = run_shard(store, view, version=version, storage_options=options, concurrency=concurrency,
                                ray_address=ray_address, name=name)
    if not json_mode():
        report.render()
    if report_path:
        report.write(report_path)
    path = report.extra["view path"]
    echo(f"shard: view {view_id}{f' (name {name})' if name else ''} at {path}")
    return Outcome({"view_id": view_id, "view_path": path, "name": name or "", "version_id": report.version_id,
                    "report": report.to_json()})


def _check_name(name: str) -> None:
    from pipeline.shards.names import check_view_name

    try:
        check_view_name(name)
    except ValueError as exc:
        raise UserError(f"--name: {exc}") from None


@command
def views_cmd(store: str = store_option(), storage_options: str = storage_options_option()) -> Outcome:
    """List the store's views: id, name, version, size, cameras, shards, samples."""
    options = parse_storage_options(storage_options)
    require_store(store, options)
    from pipeline.shards.names import list_views
    from pipeline.store.episodes import EpisodeStore

    rows = list_views(EpisodeStore(store, options).objects)
    if not json_mode():
        _print_views(rows)
    return Outcome({"store": store, "views": rows})


def _print_views(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        echo("no views yet: make one with `actionreel shard --store STORE`")
        return
    table = Table("view", "name", "version", "size", "codec", "cameras", "shards", "samples")
    for row in rows:
        if not row["complete"]:
            state = "(view collected)" if row.get("missing") else "(incomplete)"
            table.add_row(row["view_id"][:16], row["names"], state, "", "", "", "", "")
            continue
        table.add_row(row["view_id"][:16], row["names"], row["version_id"][:12], row["size"], row["frame_codec"],
                      ",".join(row["cameras"]), str(row.get("shards", "")), str(row.get("samples", "")))
    Console(width=200).print(table)


if __name__ == "__main__":
    run_process(main)
