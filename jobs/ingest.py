"""Ingest job: source dataset -> validated episodes in the store -> one committed version.

    python -m jobs.ingest SOURCE --store STORE [--format lerobot] [--dataset NAME] [--ref latest]
        [--options connector-options.yaml] [--option fps=15 --option bgr_cameras=wrist]
        [--encode-preset veryfast] [--no-jpeg-passthrough]

Runs episode-parallel as a Ray Data pipeline on a local Ray, or unchanged under
``ray job submit --working-dir . -- python -m jobs.ingest ...``. The new version's parent is the
ref's head when the job started; if another writer moved the ref meanwhile the commit fails with
``RefConflict`` (a re-run is cheap: stored episodes are found in the ingest memo).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import ray
import typer
import yaml

from connectors import DatasetError, Discovery, EpisodeRef, detect_format, get_connector
from jobs.raycluster import init_ray
from pipeline.ingest import IngestConfig, IngestOutcome, ingest_episode, merge_stats, quarantine_inconsistent
from pipeline.lineage import resolve_parents, wants_parent
from pipeline.report import JobReport
from pipeline.store import EpisodeStore
from pipeline.versions import VersionError, VersionManifest, commit_version, read_manifest, ref_head, write_stats
from pipeline.video import EncodeConfig
from schemas import make_episode_id, meta_to_row, row_to_meta


def _ingest_row(row: dict, store_uri: str, storage_options: dict, config: IngestConfig,
                reused_stats: bool = True) -> dict:
    ref = EpisodeRef(**json.loads(row["ref"]))
    connector = get_connector(ref.format)
    store = EpisodeStore(store_uri, storage_options)
    outcome = ingest_episode(store, ref.key, make_episode_id(ref.dataset, ref.key),
                             lambda: connector.checksum(ref), lambda: connector.read(ref), config, reused_stats)
    return {"outcome": outcome.to_json()}


@dataclass
class Collected:
    """What one pass over a source produced: the discovery, every episode's outcome, the report so far."""

    discovery: Discovery
    outcomes: list[IngestOutcome]
    report: JobReport
    format: str
    options: dict


def collect_outcomes(source: str, store_uri: str, *, job: str = "ingest", format: str | None = None,
                     dataset: str | None = None, options: dict | None = None, storage_options: dict | None = None,
                     ray_address: str | None = None, config: IngestConfig | None = None,
                     reused_stats: bool = True, lineage_version: str | None = None) -> Collected:
    """Discover the source and store every episode not already stored (the ingest memo skips the rest).

    Episodes that name a parent (synthetic, derived) get it resolved against ``lineage_version``.
    """
    config = config or IngestConfig()
    options = dict(options or {})
    if dataset:
        options["dataset"] = dataset
    name = format or detect_format(source, options.get("storage_options"))
    discovery = get_connector(name).discover(source, options)
    report = JobReport(job=job, source=source, episodes_in=len(discovery.refs), warnings=list(discovery.warnings),
                       missing=[{"source_key": k, "reason": r} for k, r in discovery.missing])
    init_ray(ray_address)
    items = [{"ref": json.dumps(asdict(r), default=str)} for r in discovery.refs]
    outcomes = []
    if items:
        dataset_rows = ray.data.from_items(items, override_num_blocks=len(items)).map(
            _ingest_row, fn_kwargs={"store_uri": store_uri, "storage_options": storage_options or {},
                                    "config": config, "reused_stats": reused_stats})
        # One operator: Ray Data's per-operator reservation kept it to half the CPUs (one task at a time
        # on two cores); without it every CPU ingests an episode.
        dataset_rows.context.op_resource_reservation_enabled = False
        outcomes = quarantine_inconsistent([IngestOutcome.from_json(r["outcome"]) for r in dataset_rows.iter_rows()])
    _resolve_lineage(EpisodeStore(store_uri, storage_options), lineage_version, outcomes, report)
    report.quarantined = sorted((o.quarantine for o in outcomes if o.quarantine), key=lambda q: q["source_key"])
    report.stored = sum(o.status == "stored" for o in outcomes)
    report.reused = sum(o.status == "reused" for o in outcomes)
    report.decoded = report.stored
    return Collected(discovery, outcomes, report, name, options)


def _resolve_lineage(store: EpisodeStore, version_id: str | None, outcomes: list[IngestOutcome],
                     report: JobReport) -> None:
    """Parents named by stored episodes -> stored episode ids (and the parents' splits), in place."""
    children = [o for o in outcomes if o.row is not None and wants_parent(row_to_meta(o.row))]
    if not children:
        return
    manifest = read_manifest(store, version_id) if version_id else None
    metas, lineage = resolve_parents(store, manifest, [row_to_meta(o.row) for o in children])
    for outcome, meta in zip(children, metas, strict=True):
        outcome.row = meta_to_row(meta)
    report.extra.update(lineage.to_json())
    report.warnings.extend(f"lineage: {problem}" for problem in lineage.unresolved[:20])


def run_ingest(source: str, store_uri: str, *, format: str | None = None, dataset: str | None = None,
               options: dict | None = None, ref: str | None = "latest", storage_options: dict | None = None,
               ray_address: str | None = None, config: IngestConfig | None = None) -> JobReport:
    """Ingest every episode found at ``source`` and commit a version. Bad episodes are quarantined."""
    started = time.perf_counter()
    config = config or IngestConfig()
    store = EpisodeStore(store_uri, storage_options)
    parent = ref_head(store, ref) if ref else None
    got = collect_outcomes(source, store_uri, format=format, dataset=dataset, options=options,
                           storage_options=storage_options, ray_address=ray_address, config=config,
                           lineage_version=parent)
    _commit(store, got.report, got.outcomes, got.discovery, got.format, got.options, config, ref, parent)
    got.report.seconds = time.perf_counter() - started
    return got.report


def _commit(store: EpisodeStore, report: JobReport, outcomes: list[IngestOutcome], discovery, format_name: str,
            options: dict, config: IngestConfig, ref: str | None, parent: str | None = None) -> None:
    kept = sorted((o for o in outcomes if o.row is not None), key=lambda o: o.episode_id)
    metas = [row_to_meta(o.row) for o in kept]
    report.steps = sum(m.num_steps for m in metas)
    report.frames = sum(c.num_frames for m in metas for c in m.cameras)
    objects = {m.steps_sha256: m.steps_bytes for m in metas}
    objects.update({c.video_sha256: c.video_bytes for m in metas for c in m.cameras})
    report.bytes = sum(objects.values())  # distinct objects: a v3.0 video file holds many episodes
    if not metas:
        report.warnings.append("no episode was stored: no version committed")
        return
    by_embodiment: dict[str, dict] = {}
    for meta in metas:
        entry = by_embodiment.setdefault(meta.embodiment, {"episodes": 0, "steps": 0})
        entry["episodes"] += 1
        entry["steps"] += meta.num_steps
    manifest = VersionManifest(
        catalog=[store.write_catalog(metas)],
        stats=write_stats(store, merge_stats(kept)),
        totals={"episodes": len(metas), "steps": report.steps, "frames": report.frames,
                "by_embodiment": by_embodiment},
        producer={"job": "ingest", "source": discovery.uri, "format": format_name, "dataset": discovery.dataset,
                  "options": {k: v for k, v in options.items() if k != "storage_options"},
                  "config": config.fingerprint()},
        parent=parent,
    )
    report.version_id = commit_version(store, manifest, ref)


def load_options(path: str | None, pairs: list[str] | None) -> dict:
    """Connector options from a JSON/YAML file, then ``key=value`` pairs (values parsed as YAML scalars/lists)."""
    options: dict = {}
    if path:
        text = Path(path).read_text()
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        if not isinstance(doc, dict):
            raise typer.BadParameter(f"{path} must hold a mapping of option names to values", param_hint="--options")
        options.update(doc)
        mapping = options.get("mapping")
        if isinstance(mapping, str) and not Path(mapping).is_absolute() and "://" not in mapping:
            options["mapping"] = str(Path(path).resolve().parent / mapping)  # relative to the options file
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="--option")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return options


def main(
    source: str = typer.Argument(..., help="Dataset path or fsspec URL"),
    store: str = typer.Option(..., "--store", help="Episode store root (path or fsspec URL)"),
    format: str = typer.Option(None, "--format", help="Source format (default: detected)"),
    dataset: str = typer.Option(None, "--dataset", help="Dataset name (default: folder name)"),
    ref: str = typer.Option("latest", "--ref", help="Ref to point at the new version"),
    embodiment: str = typer.Option(None, "--embodiment", help="Override the embodiment name"),
    kind: str = typer.Option(None, "--kind", help="teleop | sim | synthetic"),
    report_path: str = typer.Option(None, "--report", help="Also write the report as JSON here"),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster (default: RAY_ADDRESS or local)"),
    options_file: str = typer.Option(None, "--options", help="Connector options as a JSON or YAML file "
                                     "(e.g. fps, camera_keys, bgr_cameras, state_keys, mapping for ROS)"),
    option: Annotated[list[str] | None, typer.Option("--option", help="One connector option as key=value "
                                                      "(repeatable)")] = None,
    encode_preset: str = typer.Option("veryfast", "--encode-preset", help="x264 preset for raw image frames "
                                      "(ultrafast: ~1.5-2x faster ingest, 2-8x the bytes; docs/formats.md)"),
    jpeg_passthrough: bool = typer.Option(True, "--jpeg-passthrough/--no-jpeg-passthrough",
                                          help="Keep source JPEG frames as they are instead of encoding H.264"),
) -> None:
    """Ingest a source dataset into the episode store and commit a version."""
    options = load_options(options_file, option)
    options.update({k: v for k, v in {"embodiment": embodiment, "kind": kind}.items() if v})
    config = IngestConfig(encode=EncodeConfig(preset=encode_preset, jpeg_passthrough=jpeg_passthrough))
    try:
        report = run_ingest(source, store, format=format, dataset=dataset, options=options, ref=ref,
                            ray_address=ray_address, config=config)
    except (DatasetError, VersionError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    report.render()
    if report_path:
        report.write(report_path)
    typer.echo(f"ingest: {report.stored + report.reused} episodes stored, {len(report.quarantined)} quarantined, "
               f"version {report.version_id or '(none)'}")


if __name__ == "__main__":
    typer.run(main)
