"""``actionreel versions``: log, show, diff, refs, tag, append, delete, select, verify, gc, export.

    actionreel versions log latest --store STORE
    actionreel versions diff v1 latest --store STORE
    actionreel versions append /data/teleop-day2 --store STORE --ref latest
    actionreel versions delete --store STORE --id EPISODE --where task=spill
    actionreel versions select --store STORE --from latest --ref aloha-success \\
        --where embodiment=aloha --where success=true
    actionreel versions verify --store STORE [--repair]
    actionreel versions gc --store STORE [--delete]
    actionreel versions export latest OUT --store STORE --layout v2.1
    actionreel versions export latest OUT --store STORE --layout cosmos-action [--pose x,y,z,roll,pitch,yaw]

Filters (``--where KEY=VALUE``, repeatable; repeated list keys accumulate): episode_ids,
embodiment, kind, action_source, dataset, split (lists); task (substring); success
(true|false|unknown); min_steps, max_steps; since, until (ISO 8601, on extras.recorded_at).
Every commit is a compare-and-swap on the ref: on a conflict the command rebuilds on the new head
(append, delete) or stops with the conflict named.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jobs import choices
from jobs.cliutil import (
    CONTEXT,
    EXIT_FAILED,
    Outcome,
    UserError,
    choice,
    command,
    echo,
    json_mode,
    parse_storage_options,
    require_path,
    require_store,
    storage_options_option,
    store_option,
)

if TYPE_CHECKING:
    from pipeline.ingest import IngestConfig
    from pipeline.report import JobReport
    from pipeline.store.catalog import CatalogQuery
    from pipeline.store.episodes import EpisodeStore

app = typer.Typer(no_args_is_help=True, add_completion=False, context_settings=CONTEXT,
                  help="Dataset versions: log, show, diff, refs, tag, append, delete, select, verify, gc, export")
_INTS = {"min_steps", "max_steps"}
DEFAULT_GRACE_HOURS = 24.0  # pipeline.store.gc.DEFAULT_GRACE_S / 3600


def parse_where(items: list[str] | None) -> CatalogQuery:
    """``["embodiment=aloha", "embodiment=franka", "min_steps=50"]`` -> a CatalogQuery."""
    from pipeline.store.catalog import CatalogQuery

    lists = {f.name for f in fields(CatalogQuery) if f.type.startswith("tuple")}
    values: dict = {}
    known = {f.name for f in fields(CatalogQuery)}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise UserError(f"--where {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        if key in lists:
            values[key] = (*values.get(key, ()), *[v for v in value.split(",") if v])
        elif key in _INTS:
            try:
                values[key] = int(value)
            except ValueError:
                raise UserError(f"--where {item!r}: {key} takes a whole number") from None
        else:
            values[key] = value
    if "kind" in values:
        for kind in values["kind"]:
            choice(kind, choices.KINDS, "--where kind=")
    try:
        return CatalogQuery(**values)
    except ValueError as exc:
        raise UserError(f"--where: {exc}") from None


def _store(store: str, storage_options: str | None) -> EpisodeStore:
    """The existing store ``store`` (one line and exit 2 when there is none)."""
    from pipeline.store.episodes import EpisodeStore

    options = parse_storage_options(storage_options)
    require_store(store, options)
    return EpisodeStore(store, options or None)


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
    return typer.Exit(code)


STORE = store_option()
OPTIONS = storage_options_option()
WHERE = typer.Option(None, "--where", help="Filter KEY=VALUE (repeatable)")
IDS = typer.Option(None, "--id", help="Episode id (repeatable)")
CAMERAS = typer.Option(None, "--camera", help="cosmos-action: camera (repeatable; default: every camera)")
VERSIONS = typer.Argument(None, help="Versions or refs (default: every version a ref reaches)")
STRICT = typer.Option(False, "--strict", help="Exit 3 when any episode was quarantined")


# ---------------------------------------------------------------- Python API for append


def run_append(source: str, store_uri: str, *, ref: str = "latest", format: str | None = None,
               dataset: str | None = None, options: dict | None = None, storage_options: dict | None = None,
               ray_address: str | None = None, config: IngestConfig | None = None, attempts: int = 3) -> JobReport:
    """Ingest only what is new or changed at ``source`` and commit it as a child of the ref's head."""
    from jobs.ingest import collect_outcomes
    from pipeline.ingest import IngestConfig
    from pipeline.store.derive import append_episodes
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import read_manifest, ref_head
    from schemas import row_to_meta

    started = time.perf_counter()
    config = config or IngestConfig()
    store = EpisodeStore(store_uri, storage_options)
    got = collect_outcomes(source, store_uri, job="append", format=format, dataset=dataset, options=options,
                           storage_options=storage_options, ray_address=ray_address, config=config,
                           reused_stats=False, lineage_version=ref_head(store, ref))
    candidates = [row_to_meta(o.row) for o in got.outcomes if o.row is not None]
    producer = {"job": "append", "source": got.discovery.uri, "format": got.format, "dataset": got.discovery.dataset,
                "config": config.fingerprint()}
    report = got.report
    report.version_id, changes = append_episodes(store, ref, candidates, producer, attempts)
    report.steps = sum(m.num_steps for m in changes.new_rows)
    report.frames = sum(c.num_frames for m in changes.new_rows for c in m.cameras)
    report.extra |= {"added": len(changes.added), "changed": len(changes.changed), "unchanged": len(changes.unchanged),
                    "deleted in parent (not re-added)": len(changes.deleted_in_parent),
                    "parent": read_manifest(store, report.version_id).parent or "(none)"}
    report.seconds = time.perf_counter() - started
    from pipeline.report import keep_job_report

    keep_job_report(store.objects, report)
    return report


# ---------------------------------------------------------------- commands


def _resolve(s: EpisodeStore, name: str) -> tuple:
    from pipeline.store.versions import resolve

    return resolve(s, name)


@app.command("log")
@command
def log_cmd(name: str = typer.Argument("latest"), store: str = STORE, storage_options: str = OPTIONS,
            limit: int = typer.Option(50, "--limit")) -> Outcome:
    """A version and its ancestors, newest first."""
    from pipeline.store.history import version_log

    s = _store(store, storage_options)
    entries = version_log(s, _resolve(s, name)[0], limit)
    if not json_mode():
        from rich.console import Console
        from rich.table import Table

        table = Table("version", "job", "episodes", "steps", "refs", "committed")
        for e in entries:
            table.add_row(e.version_id[:12], e.job, str(e.episodes), str(e.steps), ",".join(e.refs),
                          "\n".join(e.committed[-3:]))
        Console().print(table)
    return Outcome({"versions": [e.to_json() for e in entries]})


@app.command("show")
@command
def show_cmd(name: str = typer.Argument("latest"), store: str = STORE, storage_options: str = OPTIONS,
             where: list[str] = WHERE) -> Outcome:
    """A version's manifest and its stats per embodiment and kind (episodes, steps, hours, bytes)."""
    from pipeline.store.catalog import catalog_summary

    s = _store(store, storage_options)
    query = parse_where(where)
    version_id, manifest = _resolve(s, name)
    summary = catalog_summary(s, manifest, query)
    if not json_mode():
        from rich.console import Console
        from rich.table import Table

        console = Console()
        console.print(f"version {version_id}\nparent  {manifest.parent or '(none)'}\njob     "
                      f"{json.dumps(manifest.producer, sort_keys=True)}\nlayers  {len(manifest.catalog)}   "
                      f"deleted {len(manifest.deleted)}")
        table = Table("embodiment", "kind", "episodes", "steps", "hours", "bytes")
        for g in summary:
            table.add_row(g.embodiment, g.kind, str(g.episodes), str(g.steps), f"{g.hours:.3f}", f"{g.bytes:,}")
        console.print(table)
    return Outcome({"version": version_id, "manifest": manifest.to_json(), "summary": [g.to_json() for g in summary]})


@app.command("diff")
@command
def diff_cmd(a: str = typer.Argument(...), b: str = typer.Argument("latest"), store: str = STORE,
             storage_options: str = OPTIONS,
             ids: bool = typer.Option(False, "--ids", help="List episode ids")) -> Outcome:
    """Episodes added, removed and changed from A to B, with counts and bytes per embodiment and kind."""
    from pipeline.store.history import diff_versions

    s = _store(store, storage_options)
    (a_id, a_man), (b_id, b_man) = _resolve(s, a), _resolve(s, b)
    diff = diff_versions(s, a_id, a_man, b_id, b_man)
    if not json_mode():
        _print_diff(diff, a_id, b_id, ids)
    return Outcome(diff.to_json())


def _print_diff(diff, a_id: str, b_id: str, ids: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{a_id[:12]} -> {b_id[:12]}: +{len(diff.added)} -{len(diff.removed)} ~{len(diff.changed)} "
                  f"={diff.unchanged}; bytes +{diff.bytes_added:,} -{diff.bytes_removed:,}")
    table = Table("embodiment", "kind", "added", "removed", "changed", "bytes added")
    for g in diff.groups:
        table.add_row(g["embodiment"], g["kind"], *(f"{g[w]['episodes']} ({g[w]['steps']} steps)"
                                                    for w in ("added", "removed", "changed")),
                      f"{g['added']['bytes'] + g['changed']['bytes']:,}")
    console.print(table)
    if ids:
        for what in ("added", "removed", "changed"):
            for episode in getattr(diff, what):
                console.print(f"{what[0]} {episode}")


@app.command("refs")
@command
def refs_cmd(store: str = STORE, storage_options: str = OPTIONS) -> Outcome:
    """Every ref and the version it points at."""
    from pipeline.store.refs import list_refs

    refs = dict(sorted(list_refs(_store(store, storage_options).objects).items()))
    for name, version in refs.items():
        echo(f"{name}\t{version}")
    return Outcome({"refs": refs})


@app.command("tag")
@command
def tag_cmd(name: str = typer.Argument(...), version: str = typer.Argument("latest"), store: str = STORE,
            storage_options: str = OPTIONS, force: bool = typer.Option(False, "--force", help="Move an existing ref"),
            delete: bool = typer.Option(False, "--delete", help="Remove the ref (gc may then reclaim)")) -> Outcome:
    """Point a ref at a version (a new tag, or --force to move one), or --delete it."""
    from pipeline.store.refs import delete_ref, read_head, update_ref

    s = _store(store, storage_options)
    if delete:
        delete_ref(s.objects, name)
        echo(f"deleted ref {name}")
        return Outcome({"ref": name, "deleted": True})
    version_id = _resolve(s, version)[0]
    head = read_head(s.objects, name)
    if head is not None and head.version != version_id and not force:
        raise UserError(f"ref {name!r} points at {head.version[:12]}; pass --force to move it")
    if head is None or head.version != version_id:
        update_ref(s.objects, name, version_id, head.version if head else None, "tag")
    echo(f"{name} -> {version_id}")
    return Outcome({"ref": name, "version_id": version_id})


@app.command("append")
@command
def append_cmd(source: str = typer.Argument(..., help="Dataset path or fsspec URL"), store: str = STORE,
               storage_options: str = OPTIONS, ref: str = typer.Option("latest", "--ref"),
               format: str = typer.Option(None, "--format"), dataset: str = typer.Option(None, "--dataset"),
               embodiment: str = typer.Option(None, "--embodiment"),
               kind: str = typer.Option(None, "--kind", help="teleop | sim | synthetic"),
               ray_address: str = typer.Option(None, "--ray-address"),
               report_path: str = typer.Option(None, "--report"), strict: bool = STRICT) -> Outcome:
    """Ingest only new or changed episodes of SOURCE into a child of the ref's head."""
    from jobs.ingest import job_outcome

    choice(format, choices.FORMATS, "--format")
    choice(kind, choices.KINDS, "--kind")
    s = _store(store, storage_options)
    require_path(source, "source")
    options = {k: v for k, v in {"embodiment": embodiment, "kind": kind}.items() if v}
    report = run_append(source, store, ref=ref, format=format, dataset=dataset, options=options,
                        storage_options=s.storage_options or None,
                        ray_address=ray_address)
    if report_path:
        report.write(report_path)
    return job_outcome(report, strict, f"append: {report.extra.get('added', 0)} added, "
                       f"{report.extra.get('changed', 0)} changed, {len(report.quarantined)} quarantined, "
                       f"version {report.version_id}")


@app.command("delete")
@command
def delete_cmd(store: str = STORE, storage_options: str = OPTIONS, ref: str = typer.Option("latest", "--ref"),
               ids: list[str] = IDS, where: list[str] = WHERE) -> Outcome:
    """Delete episodes by id and/or filter: a child version with a deletion list (nothing rewritten)."""
    from pipeline.store.derive import delete_episodes
    from pipeline.store.versions import read_manifest

    s = _store(store, storage_options)
    query = parse_where(where) if where else None
    if not ids and query is None:
        raise UserError("name the episodes to delete with --id EPISODE or --where KEY=VALUE")
    version = delete_episodes(s, ref, list(ids or []), query)
    deleted = len(read_manifest(s, version).deleted)
    echo(f"{ref} -> {version} ({deleted} deleted in total)")
    return Outcome({"ref": ref, "version_id": version, "deleted": deleted})


@app.command("select")
@command
def select_cmd(store: str = STORE, storage_options: str = OPTIONS, source: str = typer.Option("latest", "--from"),
               ref: str = typer.Option(..., "--ref", help="Ref to commit the selection to"),
               where: list[str] = WHERE) -> Outcome:
    """A derived version holding exactly the episodes of a query over another version."""
    from pipeline.store.derive import select_version
    from pipeline.store.versions import read_manifest

    s = _store(store, storage_options)
    query = parse_where(where)
    version = select_version(s, source, query, ref)
    episodes = read_manifest(s, version).totals["episodes"]
    echo(f"{ref} -> {version} ({episodes} episodes where {query.describe()})")
    return Outcome({"ref": ref, "version_id": version, "episodes": episodes})


@app.command("verify")
@command
def verify_cmd(versions: list[str] = VERSIONS, store: str = STORE, storage_options: str = OPTIONS,
               views: bool = typer.Option(True, "--views/--no-views"),
               repair: bool = typer.Option(False, "--repair", help="Restore corrupted steps/videos from their "
                                           "source episodes (rebuilt bytes must hash to the recorded id)")) -> Outcome:
    """Re-hash every object (steps, videos, catalogs, stats, manifests, shards) and report mismatches.

    Exit 0 when everything matches (after ``--repair``: when every mismatch was repaired), else 1."""
    from pipeline.store.verify import repair_store, verify_store

    s = _store(store, storage_options)
    ids = [_resolve(s, v)[0] for v in versions] if versions else None
    report = verify_store(s, ids, views)
    repaired = repair_store(s, report, SourceEpisodes(s)) if repair and not report.ok else None
    echo(f"verified {report.objects} objects ({report.bytes:,} bytes) of {len(report.versions)} versions "
         f"and {len(report.views)} views: {len(report.mismatches)} mismatches")
    for mismatch in report.mismatches:
        echo(f"MISMATCH {mismatch}")
    for item in repaired.repairs if repaired else []:
        echo(f"REPAIRED {item.path}" if item.status == "repaired" else f"NOT REPAIRED {item.path}: {item.reason}")
    ok = report.ok or (repaired is not None and repaired.ok)
    outcome = report.to_json() | ({"repair": repaired.to_json()} if repaired else {})
    return Outcome(outcome, 0 if ok else EXIT_FAILED)


class SourceEpisodes:
    """Reads a stored episode's source again: the ingest or append in its version's lineage that read
    its dataset names the source and connector options; the episode's source key finds it there."""

    def __init__(self, store: EpisodeStore) -> None:
        self.store = store
        self._discoveries: dict[str, object] = {}

    def __call__(self, version_id: str, meta):
        from connectors import get_connector
        from pipeline.store.repair import RepairRefused

        for producer in self._producers(version_id, meta):
            options = dict(producer.get("options") or {})
            discovery = self._discover(producer["format"], producer["source"], options)
            ref = next((r for r in discovery.refs if r.key == meta.source_key), None)
            if ref is None:
                continue
            connector = get_connector(ref.format)
            checksum = connector.checksum(ref)
            if checksum != meta.source_checksum:
                raise RepairRefused(f"the source changed since ingest: {ref.uri} (key {ref.key}) checksums "
                                    f"{checksum[:16]}, the catalog recorded {meta.source_checksum[:16]}")
            episode = connector.read(ref)
            episode.meta.source_checksum = checksum
            return episode
        raise RepairRefused(f"no ingest or append of dataset {meta.dataset} ({meta.source_format}) in the lineage "
                            f"of version {version_id[:12]} lists source key {meta.source_key}")

    def _producers(self, version_id: str, meta) -> list[dict]:
        from pipeline.store.versions import read_manifest

        found, current = [], version_id
        for _ in range(256):
            if not current:
                break
            manifest = read_manifest(self.store, current)
            producer = manifest.producer or {}
            if (producer.get("job") in ("ingest", "append") and producer.get("format") == meta.source_format
                    and producer.get("dataset") == meta.dataset):
                found.append(producer)
            current = manifest.parent
        return found

    def _discover(self, format_name: str, source: str, options: dict):
        from connectors import DatasetError
        from jobs.ingest import discover_dataset
        from pipeline.store.repair import RepairRefused

        key = json.dumps([format_name, source, options], sort_keys=True, default=str)
        if key not in self._discoveries:
            try:
                self._discoveries[key] = discover_dataset(format_name, source, options)
            except DatasetError as exc:
                raise RepairRefused(f"the source {source} cannot be read any more: {exc}") from exc
        return self._discoveries[key]


@app.command("gc")
@command
def gc_cmd(store: str = STORE, storage_options: str = OPTIONS,
           delete: bool = typer.Option(False, "--delete", help="Delete (default: dry run)"),
           grace_hours: float = typer.Option(DEFAULT_GRACE_HOURS, "--grace-hours",
                                             help="Never delete anything younger")) -> Outcome:
    """Remove objects no ref reaches (dry run unless --delete)."""
    from pipeline.store.gc import collect_garbage

    s = _store(store, storage_options)
    report = collect_garbage(s, delete=delete, grace_s=grace_hours * 3600)
    for path, size in report.garbage[:50]:
        echo(f"{'deleted' if delete else 'would delete'} {path} ({size:,} bytes)")
    echo(f"{len(report.garbage)} files, {report.bytes:,} bytes {'deleted' if delete else 'reclaimable'}; "
         f"{report.versions} versions reachable from {len(report.refs)} refs; {report.young} unreachable files "
         f"younger than {grace_hours} h kept")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    return Outcome(report.to_json() | {"deleted": delete})


def _modality_file(path: str) -> dict:
    """A GR00T modality.json given with ``--modality``: an object of known groups, each an object."""
    try:
        groups = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"--modality {path} does not exist; pass a GR00T modality.json file") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"--modality {path}: cannot read it as JSON: {exc}") from exc
    known = {"state", "action", "video", "annotation"}
    if not isinstance(groups, dict) or set(groups) - known or not all(isinstance(v, dict) for v in groups.values()):
        raise ValueError(f"--modality {path}: must be an object with groups among {sorted(known)}, each an object")
    return groups


@app.command("export")
@command
def export_cmd(name: str = typer.Argument("latest"), out: str = typer.Argument(..., help="New folder or URL"),
               store: str = STORE, storage_options: str = OPTIONS,
               layout: str = typer.Option("v3.0", "--layout", help="v3.0, v2.1 (LeRobot) or cosmos-action"),
               where: list[str] = WHERE, robot_type: str = typer.Option("", "--robot-type"),
               modality: str = typer.Option("", "--modality", help="GR00T modality.json whose groups replace "
                                            "the source's (state, action, video, annotation)"),
               pose: str = typer.Option(None, "--pose", help="cosmos-action: the 6 state names x,y,z,roll,pitch,yaw "
                                        "of the end effector (default: inferred from names)"),
               gripper: str = typer.Option(None, "--gripper", help="cosmos-action: gripper step extra or state name "
                                           "(default: continuous_gripper_state, else the state named *gripper*)"),
               cameras: list[str] = CAMERAS) -> Outcome:
    """Export a version (or a selection) as a LeRobot dataset or a Cosmos action-conditioned one, never in place."""
    from pipeline.export import COSMOS_LAYOUT, CosmosExportConfig, ExportConfig, export_cosmos, export_lerobot
    from pipeline.progress import JobProgress, terminal_progress

    choice(layout, choices.EXPORT_LAYOUTS, "--layout")
    s = _store(store, storage_options)
    query = parse_where(where)
    _, manifest = _resolve(s, name)
    bar = JobProgress("export", 0, enabled=terminal_progress() and not json_mode())
    try:
        with bar:
            if layout == COSMOS_LAYOUT:
                config = CosmosExportConfig(pose=tuple(p.strip() for p in pose.split(",")) if pose else None,
                                            gripper=gripper, cameras=tuple(cameras) if cameras else None)
                report = export_cosmos(s, manifest, out, config, query, progress=bar)
            else:
                groups = _modality_file(modality) if modality else None
                report = export_lerobot(s, manifest, out, ExportConfig(layout=layout, robot_type=robot_type,
                                                                       modality=groups), query, progress=bar)
    except ValueError as exc:  # the export's own checks of its settings
        raise UserError(str(exc)) from None
    kind = "Cosmos action-conditioned" if layout == COSMOS_LAYOUT else f"LeRobot {layout}"
    echo(f"exported {report.episodes} episodes ({report.steps} steps, {report.tasks} tasks) as {kind} to {out}; "
         f"videos {report.videos}")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    return Outcome({"out": out, "layout": layout, "episodes": report.episodes, "steps": report.steps,
                    "tasks": report.tasks, "videos": report.videos, "warnings": list(report.warnings)})
