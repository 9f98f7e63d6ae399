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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from jobs import choices
from jobs.cliutil import (
    EXIT_QUARANTINED,
    Outcome,
    UserError,
    choice,
    command,
    echo,
    json_mode,
    parse_storage_options,
    require_path,
    run_process,
    storage_options_option,
    store_option,
)
from pipeline.store import retries as storage_faults  # light: no I/O stack imported

if TYPE_CHECKING:
    from connectors import Discovery
    from pipeline.ingest import IngestConfig, IngestOutcome
    from pipeline.report import JobReport
    from pipeline.store.episodes import EpisodeStore


def _ingest_row(row: dict, store_uri: str, storage_options: dict, config: IngestConfig,
                reused_stats: bool = True) -> dict:
    from connectors import EpisodeRef, get_connector
    from pipeline.ingest import ingest_episode
    from pipeline.store.episodes import EpisodeStore
    from schemas import make_episode_id

    ref = EpisodeRef(**json.loads(row["ref"]))
    connector = get_connector(ref.format)
    before = storage_faults.snapshot()
    store = EpisodeStore(store_uri, storage_options)
    outcome = ingest_episode(store, ref.key, make_episode_id(ref.dataset, ref.key),
                             lambda: connector.checksum(ref), lambda: connector.read(ref), config, reused_stats)
    return {"outcome": outcome.to_json(), "storage_retries": json.dumps(storage_faults.since(before))}


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
    import ray

    from connectors import detect_format
    from jobs.raycluster import init_ray
    from pipeline.ingest import IngestConfig, IngestOutcome, drop_duplicates, quarantine_inconsistent
    from pipeline.progress import JobProgress, terminal_progress
    from pipeline.report import JobReport, pairing_warnings
    from pipeline.store.episodes import EpisodeStore

    config = config or IngestConfig()
    options = dict(options or {})
    if dataset:
        options["dataset"] = dataset
    name = format or detect_format(source, options.get("storage_options"))
    discovery = discover_dataset(name, source, options)
    report = JobReport(job=job, source=source, episodes_in=len(discovery.refs), warnings=list(discovery.warnings),
                       missing=[{"source_key": k, "reason": r} for k, r in discovery.missing],
                       duplicates=[{"source_key": k, "episode_id": "", "same_as": k, "reason": r}
                                   for k, r in discovery.duplicates])
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
        with JobProgress(job, len(items), enabled=terminal_progress() and not json_mode()) as bar:
            for row in dataset_rows.iter_rows():
                outcomes.append(IngestOutcome.from_json(row["outcome"]))
                report.storage_retries = storage_faults.add(report.storage_retries,
                                                            json.loads(row["storage_retries"]))
                bar.advance(1, _frames_of(outcomes[-1]))
        outcomes = quarantine_inconsistent(outcomes)
        outcomes, repeated = drop_duplicates(outcomes, {r.key: i for i, r in enumerate(discovery.refs)})
        report.duplicates.extend(repeated)
    _resolve_lineage(EpisodeStore(store_uri, storage_options), lineage_version, outcomes, report)
    report.warnings.extend(pairing_warnings([o.row for o in outcomes if o.row is not None]))
    report.quarantined = sorted((o.quarantine for o in outcomes if o.quarantine), key=lambda q: q["source_key"])
    report.stored = sum(o.status == "stored" for o in outcomes)
    report.reused = sum(o.status == "reused" for o in outcomes)
    report.warnings.extend(f"episode {o.episode_id}: corrupt stored object {path} restored from the source"
                           for o in outcomes for path in o.repaired)
    report.decoded = report.stored
    return Collected(discovery, outcomes, report, name, options)


def _frames_of(outcome: IngestOutcome) -> int:
    """Video frames an ingested episode holds (0 when quarantined)."""
    if outcome.row is None:
        return 0
    return sum(int(camera.get("num_frames") or 0) for camera in outcome.row.get("cameras") or [])


def discover_dataset(name: str, source: str, options: dict) -> Discovery:
    """The connector's discovery, with every failure a ``DatasetError`` (one line, exit 2 in the CLI).

    Discovery reads the dataset's own metadata: whatever it trips on (a bad row, a refused path, a
    metadata file some check missed) concerns the whole dataset, never one episode.
    """
    from connectors import DatasetError, SourceError, get_connector

    try:
        return get_connector(name).discover(source, options)
    except DatasetError:
        raise
    except SourceError as exc:
        raise DatasetError(exc.path, exc.problem, exc.episode, exc.field) from exc
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError, OSError) as exc:
        raise DatasetError(source, f"unreadable dataset metadata ({type(exc).__name__}: {exc})") from exc


def _resolve_lineage(store: EpisodeStore, version_id: str | None, outcomes: list[IngestOutcome],
                     report: JobReport) -> None:
    """Parents named by stored episodes -> stored episode ids (and the parents' splits), in place."""
    from pipeline.lineage import resolve_parents, wants_parent
    from pipeline.store.versions import read_manifest
    from schemas import meta_to_row, row_to_meta

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
    from pipeline.ingest import IngestConfig
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import ref_head

    started = time.perf_counter()
    faults_before = storage_faults.snapshot()
    config = config or IngestConfig()
    store = EpisodeStore(store_uri, storage_options)
    parent = ref_head(store, ref) if ref else None
    got = collect_outcomes(source, store_uri, format=format, dataset=dataset, options=options,
                           storage_options=storage_options, ray_address=ray_address, config=config,
                           lineage_version=parent)
    _commit(store, got.report, got.outcomes, got.discovery, got.format, got.options, config, ref, parent)
    got.report.seconds = time.perf_counter() - started
    _keep_report(store, got.report, faults_before)
    return got.report


def _keep_report(store: EpisodeStore, report: JobReport, faults_before: dict[str, int]) -> None:
    """Keep the report with its version, counting the storage faults its own write rode out too.

    The write may itself be throttled or reset; it is then rewritten (atomically, same path) with the
    new count, until a write sees no new fault, so the kept and the returned report agree.
    """
    from pipeline.report import keep_job_report

    from_workers = dict(report.storage_retries)

    def counted() -> dict[str, int]:
        return storage_faults.add(from_workers, storage_faults.since(faults_before))

    for _ in range(8):
        report.storage_retries = counted()
        keep_job_report(store.objects, report)
        if counted() == report.storage_retries:
            return
    report.storage_retries = counted()


def _commit(store: EpisodeStore, report: JobReport, outcomes: list[IngestOutcome], discovery, format_name: str,
            options: dict, config: IngestConfig, ref: str | None, parent: str | None = None) -> None:
    from pipeline.ingest import merge_stats
    from pipeline.store.versions import VersionManifest, commit_version, write_stats
    from schemas import row_to_meta

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
    import yaml

    options: dict = {}
    if path:
        if not Path(path).is_file():
            raise UserError(f"--options: {path} does not exist; pass a JSON or YAML file of connector options")
        text = Path(path).read_text()
        try:
            doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise UserError(f"--options {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} "
                            f"({' '.join(str(exc).split())})") from None
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
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise UserError(f"--option {pair!r}: the value is not a YAML scalar or list") from None
    return options


def job_outcome(report: JobReport, strict: bool, line: str) -> Outcome:
    """A job's outcome: the report (rendered unless --json), the last line, exit 3 under --strict."""
    if not json_mode():
        report.render()
    echo(line)
    code = EXIT_QUARANTINED if strict and report.quarantined else 0
    if code:
        echo(f"--strict: {len(report.quarantined)} episodes quarantined (exit {code})", err=True)
    return Outcome(report.to_json(), code)


@command
def main(
    source: str = typer.Argument(..., help="Dataset path or fsspec URL"),
    store: str = store_option(),
    storage_options: str = storage_options_option(),
    format: str = typer.Option(None, "--format", help=f"Source format (default: detected): "
                               f"{' | '.join(choices.FORMATS)}"),
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
    lossless: bool = typer.Option(False, "--lossless", help="Store raw image frames pixel-exact (H.264 RGB "
                                  "qp 0, libx264rgb; ~5-10x the bytes of the default; docs/video.md)"),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 when any episode was quarantined"),
) -> Outcome:
    """Ingest a source dataset into the episode store and commit a version."""
    choice(format, choices.FORMATS, "--format")
    choice(kind, choices.KINDS, "--kind")
    choice(encode_preset, choices.X264_PRESETS, "--encode-preset")
    store_options = parse_storage_options(storage_options)
    options = load_options(options_file, option)
    require_path(source, "source", options.get("storage_options"))
    options.update({k: v for k, v in {"embodiment": embodiment, "kind": kind}.items() if v})
    from pipeline.ingest import IngestConfig
    from pipeline.video import EncodeConfig
    from pipeline.video.encode import LOSSLESS

    encode = replace(LOSSLESS, preset=encode_preset) if lossless else EncodeConfig(preset=encode_preset)
    config = IngestConfig(encode=replace(encode, jpeg_passthrough=jpeg_passthrough))
    report = run_ingest(source, store, format=format, dataset=dataset, options=options, ref=ref,
                        storage_options=store_options, ray_address=ray_address, config=config)
    if report_path:
        report.write(report_path)
    return job_outcome(report, strict, f"ingest: {report.stored + report.reused} episodes stored, "
                       f"{len(report.quarantined)} quarantined, version {report.version_id or '(none)'}")


if __name__ == "__main__":
    run_process(main)
