"""``actionreel versions``: log, show, diff, refs, tag, append, delete, select, verify, gc, export.

    actionreel versions log latest --store STORE
    actionreel versions diff v1 latest --store STORE
    actionreel versions append /data/teleop-day2 --store STORE --ref latest
    actionreel versions delete --store STORE --id EPISODE --where task=spill
    actionreel versions select --store STORE --from latest --ref aloha-success \\
        --where embodiment=aloha --where success=true
    actionreel versions verify --store STORE
    actionreel versions gc --store STORE [--delete]
    actionreel versions export latest OUT --store STORE --layout v2.1

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

import typer
from rich.console import Console
from rich.table import Table

from connectors import DatasetError
from jobs.ingest import collect_outcomes
from pipeline.catalog import CatalogQuery, catalog_summary
from pipeline.derive import append_episodes, delete_episodes, select_version
from pipeline.export import ExportConfig, ExportError, export_lerobot
from pipeline.gc import DEFAULT_GRACE_S, collect_garbage
from pipeline.history import diff_versions, version_log
from pipeline.ingest import IngestConfig
from pipeline.refs import delete_ref, list_refs, read_head, update_ref
from pipeline.report import JobReport
from pipeline.store import EpisodeStore
from pipeline.verify import verify_store
from pipeline.versions import VersionError, read_manifest, ref_head, resolve
from schemas import row_to_meta

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Dataset versions: log, show, diff, refs, tag, append, delete, select, verify, gc, export")
_LISTS = {f.name for f in fields(CatalogQuery) if f.type.startswith("tuple")}
_INTS = {"min_steps", "max_steps"}


def parse_where(items: list[str] | None) -> CatalogQuery:
    """``["embodiment=aloha", "embodiment=franka", "min_steps=50"]`` -> a CatalogQuery."""
    values: dict = {}
    known = {f.name for f in fields(CatalogQuery)}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise typer.BadParameter(f"--where {item!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        if key in _LISTS:
            values[key] = (*values.get(key, ()), *[v for v in value.split(",") if v])
        elif key in _INTS:
            values[key] = int(value)
        else:
            values[key] = value
    try:
        return CatalogQuery(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _store(store: str, storage_options: str | None) -> EpisodeStore:
    return EpisodeStore(store, json.loads(storage_options) if storage_options else None)


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code)


STORE = typer.Option(..., "--store", help="Episode store root (path or fsspec URL)")
OPTIONS = typer.Option(None, "--storage-options", help="fsspec storage options as JSON")
AS_JSON = typer.Option(False, "--json", help="Print JSON")
WHERE = typer.Option(None, "--where", help="Filter KEY=VALUE (repeatable)")
IDS = typer.Option(None, "--id", help="Episode id (repeatable)")
VERSIONS = typer.Argument(None, help="Versions or refs (default: every version a ref reaches)")


# ---------------------------------------------------------------- Python API for append


def run_append(source: str, store_uri: str, *, ref: str = "latest", format: str | None = None,
               dataset: str | None = None, options: dict | None = None, storage_options: dict | None = None,
               ray_address: str | None = None, config: IngestConfig | None = None, attempts: int = 3) -> JobReport:
    """Ingest only what is new or changed at ``source`` and commit it as a child of the ref's head."""
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
    return report


# ---------------------------------------------------------------- commands


@app.command("log")
def log_cmd(name: str = typer.Argument("latest"), store: str = STORE, storage_options: str = OPTIONS,
            limit: int = typer.Option(50, "--limit"), as_json: bool = AS_JSON) -> None:
    """A version and its ancestors, newest first."""
    s = _store(store, storage_options)
    try:
        entries = version_log(s, resolve(s, name)[0], limit)
    except VersionError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in entries], indent=2))
        return
    table = Table("version", "job", "episodes", "steps", "refs", "committed")
    for e in entries:
        table.add_row(e.version_id[:12], e.job, str(e.episodes), str(e.steps), ",".join(e.refs),
                      "\n".join(e.committed[-3:]))
    Console().print(table)


@app.command("show")
def show_cmd(name: str = typer.Argument("latest"), store: str = STORE, storage_options: str = OPTIONS,
             where: list[str] = WHERE, as_json: bool = AS_JSON) -> None:
    """A version's manifest and its stats per embodiment and kind (episodes, steps, hours, bytes)."""
    s = _store(store, storage_options)
    try:
        version_id, manifest = resolve(s, name)
    except VersionError as exc:
        raise _fail(exc) from None
    summary = catalog_summary(s, manifest, parse_where(where))
    if as_json:
        typer.echo(json.dumps({"version": version_id, "manifest": manifest.to_json(),
                               "summary": [g.to_json() for g in summary]}, indent=2))
        return
    console = Console()
    console.print(f"version {version_id}\nparent  {manifest.parent or '(none)'}\njob     "
                  f"{json.dumps(manifest.producer, sort_keys=True)}\nlayers  {len(manifest.catalog)}   "
                  f"deleted {len(manifest.deleted)}")
    table = Table("embodiment", "kind", "episodes", "steps", "hours", "bytes")
    for g in summary:
        table.add_row(g.embodiment, g.kind, str(g.episodes), str(g.steps), f"{g.hours:.3f}", f"{g.bytes:,}")
    console.print(table)


@app.command("diff")
def diff_cmd(a: str = typer.Argument(...), b: str = typer.Argument("latest"), store: str = STORE,
             storage_options: str = OPTIONS, ids: bool = typer.Option(False, "--ids", help="List episode ids"),
             as_json: bool = AS_JSON) -> None:
    """Episodes added, removed and changed from A to B, with counts and bytes per embodiment and kind."""
    s = _store(store, storage_options)
    try:
        (a_id, a_man), (b_id, b_man) = resolve(s, a), resolve(s, b)
    except VersionError as exc:
        raise _fail(exc) from None
    diff = diff_versions(s, a_id, a_man, b_id, b_man)
    if as_json:
        typer.echo(json.dumps(diff.to_json(), indent=2))
        return
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
def refs_cmd(store: str = STORE, storage_options: str = OPTIONS) -> None:
    """Every ref and the version it points at."""
    for name, version in sorted(list_refs(_store(store, storage_options).objects).items()):
        typer.echo(f"{name}\t{version}")


@app.command("tag")
def tag_cmd(name: str = typer.Argument(...), version: str = typer.Argument("latest"), store: str = STORE,
            storage_options: str = OPTIONS, force: bool = typer.Option(False, "--force", help="Move an existing ref"),
            delete: bool = typer.Option(False, "--delete", help="Remove the ref (gc may then reclaim)")) -> None:
    """Point a ref at a version (a new tag, or --force to move one), or --delete it."""
    s = _store(store, storage_options)
    try:
        if delete:
            delete_ref(s.objects, name)
            typer.echo(f"deleted ref {name}")
            return
        version_id = resolve(s, version)[0]
        head = read_head(s.objects, name)
        if head is not None and head.version != version_id and not force:
            raise VersionError(f"ref {name!r} points at {head.version[:12]}; pass --force to move it")
        if head is None or head.version != version_id:
            update_ref(s.objects, name, version_id, head.version if head else None, "tag")
    except VersionError as exc:
        raise _fail(exc) from None
    typer.echo(f"{name} -> {version_id}")


@app.command("append")
def append_cmd(source: str = typer.Argument(..., help="Dataset path or fsspec URL"), store: str = STORE,
               ref: str = typer.Option("latest", "--ref"), format: str = typer.Option(None, "--format"),
               dataset: str = typer.Option(None, "--dataset"), embodiment: str = typer.Option(None, "--embodiment"),
               kind: str = typer.Option(None, "--kind"), ray_address: str = typer.Option(None, "--ray-address"),
               report_path: str = typer.Option(None, "--report")) -> None:
    """Ingest only new or changed episodes of SOURCE into a child of the ref's head."""
    options = {k: v for k, v in {"embodiment": embodiment, "kind": kind}.items() if v}
    try:
        report = run_append(source, store, ref=ref, format=format, dataset=dataset, options=options,
                            ray_address=ray_address)
    except (DatasetError, VersionError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    report.render()
    if report_path:
        report.write(report_path)


@app.command("delete")
def delete_cmd(store: str = STORE, storage_options: str = OPTIONS, ref: str = typer.Option("latest", "--ref"),
               ids: list[str] = IDS, where: list[str] = WHERE) -> None:
    """Delete episodes by id and/or filter: a child version with a deletion list (nothing rewritten)."""
    s = _store(store, storage_options)
    query = parse_where(where) if where else None
    if not ids and query is None:
        raise _fail(ValueError("name episodes with --id or --where"))
    try:
        version = delete_episodes(s, ref, list(ids or []), query)
    except VersionError as exc:
        raise _fail(exc) from None
    typer.echo(f"{ref} -> {version} ({len(read_manifest(s, version).deleted)} deleted in total)")


@app.command("select")
def select_cmd(store: str = STORE, storage_options: str = OPTIONS, source: str = typer.Option("latest", "--from"),
               ref: str = typer.Option(..., "--ref", help="Ref to commit the selection to"),
               where: list[str] = WHERE) -> None:
    """A derived version holding exactly the episodes of a query over another version."""
    s = _store(store, storage_options)
    query = parse_where(where)
    try:
        version = select_version(s, source, query, ref)
    except VersionError as exc:
        raise _fail(exc) from None
    typer.echo(f"{ref} -> {version} ({read_manifest(s, version).totals['episodes']} episodes where "
               f"{query.describe()})")


@app.command("verify")
def verify_cmd(versions: list[str] = VERSIONS, store: str = STORE, storage_options: str = OPTIONS,
               views: bool = typer.Option(True, "--views/--no-views"), as_json: bool = AS_JSON) -> None:
    """Re-hash every object (steps, videos, catalogs, stats, manifests, shards) and report mismatches."""
    s = _store(store, storage_options)
    try:
        ids = [resolve(s, v)[0] for v in versions] if versions else None
    except VersionError as exc:
        raise _fail(exc) from None
    report = verify_store(s, ids, views)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        typer.echo(f"verified {report.objects} objects ({report.bytes:,} bytes) of {len(report.versions)} versions "
                   f"and {len(report.views)} views: {len(report.mismatches)} mismatches")
        for mismatch in report.mismatches:
            typer.echo(f"MISMATCH {mismatch}")
    if not report.ok:
        raise typer.Exit(1)


@app.command("gc")
def gc_cmd(store: str = STORE, storage_options: str = OPTIONS,
           delete: bool = typer.Option(False, "--delete", help="Delete (default: dry run)"),
           grace_hours: float = typer.Option(DEFAULT_GRACE_S / 3600, "--grace-hours",
                                             help="Never delete anything younger")) -> None:
    """Remove objects no ref reaches (dry run unless --delete)."""
    s = _store(store, storage_options)
    try:
        report = collect_garbage(s, delete=delete, grace_s=grace_hours * 3600)
    except VersionError as exc:
        raise _fail(exc) from None
    for path, size in report.garbage[:50]:
        typer.echo(f"{'deleted' if delete else 'would delete'} {path} ({size:,} bytes)")
    typer.echo(f"{len(report.garbage)} files, {report.bytes:,} bytes {'deleted' if delete else 'reclaimable'}; "
               f"{report.versions} versions reachable from {len(report.refs)} refs; {report.young} unreachable files "
               f"younger than {grace_hours} h kept")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command("export")
def export_cmd(name: str = typer.Argument("latest"), out: str = typer.Argument(..., help="New folder or URL"),
               store: str = STORE, storage_options: str = OPTIONS,
               layout: str = typer.Option("v3.0", "--layout", help="v3.0 or v2.1"), where: list[str] = WHERE,
               robot_type: str = typer.Option("", "--robot-type")) -> None:
    """Export a version (or a selection) as a LeRobot dataset, never in place."""
    s = _store(store, storage_options)
    try:
        _, manifest = resolve(s, name)
        report = export_lerobot(s, manifest, out, ExportConfig(layout=layout, robot_type=robot_type),
                                parse_where(where))
    except (VersionError, ExportError, ValueError) as exc:
        raise _fail(exc) from None
    typer.echo(f"exported {report.episodes} episodes ({report.steps} steps, {report.tasks} tasks) as LeRobot "
               f"{layout} to {out}; videos {report.videos}")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
