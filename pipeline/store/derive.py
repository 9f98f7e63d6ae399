"""Versions derived from other versions: append, delete, select. Nothing existing is rewritten.

- **append**: the parent's catalog layers plus one new layer holding the added and changed
  episodes (a later layer's row replaces an earlier row of the same id). Unchanged episodes are
  not touched; ids the parent deleted are not brought back.
- **delete**: the parent's layers, with the ids added to the deletion list.
- **select**: one new layer holding exactly the rows of a catalog query over the source version.

Stats stay exact: a pure append merges the new episodes' stats into the parent's (sketches merge;
parent stats in an older format are recomputed instead); anything that removes or replaces
episodes recomputes from per-episode stats (``pipeline.store.statcache``), since a merged min, max
or sketch cannot be un-merged.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.stats import StatsSet
from pipeline.store.catalog import CatalogQuery, read_catalog_table, scan_catalog
from pipeline.store.episodes import EpisodeStore
from pipeline.store.objects import ObjectRef
from pipeline.store.statcache import stats_of_episodes
from pipeline.store.versions import (
    VersionError,
    VersionManifest,
    commit_version,
    commit_with_retry,
    load_stats,
    read_manifest,
    ref_head,
    resolve,
    write_stats,
)
from schemas import CATALOG_SCHEMA, EpisodeMeta, metas_to_table, table_to_metas

PROVENANCE = ("source_uri", "source_checksum")  # where a row came from, not what it holds


def content_key(row: dict) -> str:
    """What an episode holds (steps, videos, metadata), without where it was read from."""
    body = {k: v for k, v in row.items() if k not in PROVENANCE}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()


def meta_content_key(meta: EpisodeMeta) -> str:
    """``content_key`` of a row not yet in a catalog (through Arrow, so types match scanned rows)."""
    return content_key(metas_to_table([meta]).to_pylist()[0])


def live_content_keys(store: EpisodeStore, manifest: VersionManifest,
                      among: list[str] | None = None) -> dict[str, str]:
    """Content keys of the version's live episodes, or of those of ``among`` it holds.

    Classifying candidates needs only their own ids: the filter is pushed into the Parquet scan,
    so appending a thousand episodes to a million does not hash a million rows.
    """
    if among is not None and not among:
        return {}
    query = CatalogQuery(episode_ids=tuple(sorted(set(among)))) if among is not None else None
    keys: dict[str, str] = {}
    for batch in scan_catalog(store, manifest, query=query):
        for row in batch.to_pylist():
            keys[row["episode_id"]] = content_key(row)
    return keys


_NO_TOTALS = {"episodes": 0, "steps": 0, "frames": 0, "by_embodiment": {}}


def version_totals(store: EpisodeStore, manifest: VersionManifest) -> dict:
    """The totals block of a manifest (same shape the ingest job writes), from a scan of its catalog."""
    totals = json.loads(json.dumps(_NO_TOTALS))
    for batch in scan_catalog(store, manifest, ["embodiment", "num_steps", "cameras"]):
        for row in batch.to_pylist():
            _count(totals, row["embodiment"], row["num_steps"], sum(c["num_frames"] for c in row["cameras"] or []))
    return totals


def appended_totals(parent_totals: dict, added: list[EpisodeMeta]) -> dict:
    """A pure append's totals: the parent's plus the added rows, equal to a scan of the child (the
    child's rows are the parent's, then the new layer's, so embodiments appear in the same order)."""
    totals = json.loads(json.dumps(parent_totals))
    for meta in added:
        _count(totals, meta.embodiment, meta.num_steps, sum(c.num_frames for c in meta.cameras))
    return totals


def _count(totals: dict, embodiment: str, steps: int, frames: int) -> None:
    totals["episodes"] += 1
    totals["steps"] += steps
    totals["frames"] += frames
    entry = totals["by_embodiment"].setdefault(embodiment, {"episodes": 0, "steps": 0})
    entry["episodes"] += 1
    entry["steps"] += steps


def _with_totals(store: EpisodeStore, manifest: VersionManifest) -> VersionManifest:
    manifest.totals = version_totals(store, manifest)
    return manifest


def _live_metas(store: EpisodeStore, manifest: VersionManifest) -> list[EpisodeMeta]:
    return table_to_metas(read_catalog_table(store, manifest))


def write_catalog_table(store: EpisodeStore, table: pa.Table) -> ObjectRef:
    """A catalog layer from rows already in catalog form, sorted by id (equal rows, equal bytes)."""
    table = table.cast(CATALOG_SCHEMA).sort_by("episode_id")
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return store.objects.put_bytes("catalog", sink.getvalue(), ".parquet")


# ---------------------------------------------------------------- append


@dataclass
class Changes:
    """How candidate episodes relate to a parent version."""

    added: list[EpisodeMeta] = field(default_factory=list)
    changed: list[EpisodeMeta] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted_in_parent: list[str] = field(default_factory=list)  # not brought back

    @property
    def new_rows(self) -> list[EpisodeMeta]:
        return sorted(self.added + self.changed, key=lambda m: m.episode_id)


def classify(parent_keys: dict[str, str], parent_deleted: set[str], candidates: list[EpisodeMeta]) -> Changes:
    changes = Changes()
    for meta in sorted(candidates, key=lambda m: m.episode_id):
        if meta.episode_id in parent_deleted:
            changes.deleted_in_parent.append(meta.episode_id)
        elif meta.episode_id not in parent_keys:
            changes.added.append(meta)
        elif parent_keys[meta.episode_id] != meta_content_key(meta):
            changes.changed.append(meta)
        else:
            changes.unchanged.append(meta.episode_id)
    return changes


def append_manifest(store: EpisodeStore, parent_id: str | None, parent: VersionManifest | None, changes: Changes,
                    producer: dict) -> VersionManifest:
    """The child of ``parent`` holding its episodes plus ``changes.new_rows`` (added or replacing)."""
    new_rows = changes.new_rows
    layers = list(parent.catalog) if parent else []
    if new_rows:
        layers.append(store.write_catalog(new_rows))
    manifest = VersionManifest(catalog=layers, stats=None, totals={}, producer=producer, parent=parent_id,
                               deleted=list(parent.deleted) if parent else [])
    parent_stats = load_stats(store, parent) if parent is not None and not changes.changed else None
    if parent is None:  # a first version holds exactly the new rows: no need to read them back
        stats = stats_of_episodes(store, new_rows)
    elif parent_stats is not None and parent_stats.mergeable:
        stats = parent_stats
        stats.merge(stats_of_episodes(store, changes.added))
    else:  # replaced episodes, or parent stats in an older format: recompute from the episodes' steps
        stats = stats_of_episodes(store, _live_metas(store, manifest))
    manifest.stats = write_stats(store, stats) if new_rows or parent is None else parent.stats
    if parent is None:
        manifest.totals = appended_totals(_NO_TOTALS, new_rows)  # catalog order: by id, as new_rows
        return manifest
    if not changes.changed and _has_totals(parent.totals):
        manifest.totals = appended_totals(parent.totals, changes.added)
        return manifest
    return _with_totals(store, manifest)


def _has_totals(totals: dict) -> bool:
    return all(key in totals for key in ("episodes", "steps", "frames", "by_embodiment"))


# ---------------------------------------------------------------- delete


def delete_manifest(store: EpisodeStore, parent_id: str, parent: VersionManifest, ids: list[str] | None = None,
                    query: CatalogQuery | None = None, producer: dict | None = None) -> VersionManifest:
    """The child of ``parent`` without the episodes named by ``ids`` and/or matched by ``query``."""
    live = set(_ids(store, parent, None))
    targets = set(ids or [])
    unknown = sorted(targets - live)
    if unknown:
        raise VersionError(f"not in version {parent_id[:12]}: {', '.join(unknown[:10])}"
                           + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
    if query is not None:
        targets |= set(_ids(store, parent, query))
    if not targets:
        raise VersionError("nothing to delete: no episode matches")
    manifest = VersionManifest(catalog=list(parent.catalog), stats=None, totals={},
                               producer=producer or {"job": "delete"}, parent=parent_id,
                               deleted=sorted(set(parent.deleted) | targets))
    manifest.producer = {**manifest.producer, "deleted": len(targets)}
    manifest.stats = write_stats(store, stats_of_episodes(store, _live_metas(store, manifest)))
    return _with_totals(store, manifest)


def _ids(store: EpisodeStore, manifest: VersionManifest, query: CatalogQuery | None) -> list[str]:
    return [i for b in scan_catalog(store, manifest, ["episode_id"], query) for i in b.column(0).to_pylist()]


# ---------------------------------------------------------------- select


def select_manifest(store: EpisodeStore, source_id: str, source: VersionManifest, query: CatalogQuery,
                    producer: dict | None = None) -> VersionManifest:
    """A version holding exactly the rows of ``query`` over ``source`` (its parent, for lineage)."""
    table = read_catalog_table(store, source, query=query)
    metas = table_to_metas(table)
    layer = write_catalog_table(store, table)
    stats = stats_of_episodes(store, metas) if metas else StatsSet()
    manifest = VersionManifest(catalog=[layer], stats=write_stats(store, stats), totals={},
                               producer={"job": "select", "from": source_id, "query": query.to_json(),
                                         **(producer or {})},
                               parent=source_id)
    return _with_totals(store, manifest)


# ---------------------------------------------------------------- committing (the Python API)


def append_episodes(store: EpisodeStore, ref: str, candidates: list[EpisodeMeta], producer: dict,
                    attempts: int = 3) -> tuple[str, Changes]:
    """Commit the stored ``candidates`` that are new or changed as a child of the ref's head.

    On a conflict the changes are classified again against the new head and the commit retried.
    Returns the new head (the old one when nothing changed) and the changes it holds.
    """
    seen: dict[str, Changes] = {}

    def build(head: str | None) -> VersionManifest:
        parent = read_manifest(store, head) if head else None
        keys = live_content_keys(store, parent, [m.episode_id for m in candidates]) if parent else {}
        seen["changes"] = classify(keys, set(parent.deleted) if parent else set(), candidates)
        return append_manifest(store, head, parent, seen["changes"], producer)

    return commit_with_retry(store, ref, build, attempts, "append"), seen["changes"]


def delete_episodes(store: EpisodeStore, ref: str, ids: list[str] | None = None, query: CatalogQuery | None = None,
                    attempts: int = 3) -> str:
    """Commit a child of the ref's head without these episodes (by id and/or query). Returns its id."""
    producer = {"job": "delete", "query": query.to_json() if query else {}}

    def build(head: str | None) -> VersionManifest:
        if head is None:
            raise VersionError(f"no ref {ref!r} in {store.root}")
        return delete_manifest(store, head, read_manifest(store, head), ids, query, producer)

    return commit_with_retry(store, ref, build, attempts, "delete")


def select_version(store: EpisodeStore, source: str, query: CatalogQuery, ref: str | None = None) -> str:
    """Commit the rows of ``query`` over ``source`` (a ref or id) as a version; point ``ref`` at it."""
    source_id, manifest = resolve(store, source)
    derived = select_manifest(store, source_id, manifest, query)
    return commit_version(store, derived, ref, expect=ref_head(store, ref) if ref else None, message="select")
