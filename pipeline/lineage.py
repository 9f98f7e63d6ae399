"""Parents of synthetic and derived episodes, resolved against a stored version.

A connector knows its parent only as the source saw it: an explicit episode id, or the parent's
dataset and source key (``extras["lineage.parent_dataset" / "lineage.parent_source_key" /
"lineage.parent_source_uri"]``). Here the reference becomes the stored parent's episode id, the
root is the parent's root (or the parent itself), and the child inherits the parent's split so a
synthetic copy of a validation episode never lands in training. References that match nothing,
or several episodes, stay unresolved and are reported: the child is kept, its lineage untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pipeline.store.catalog import CatalogQuery, scan_catalog
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import VersionManifest
from schemas import EpisodeMeta, make_episode_id

PARENT_DATASET = "lineage.parent_dataset"
PARENT_SOURCE_KEY = "lineage.parent_source_key"
PARENT_SOURCE_URI = "lineage.parent_source_uri"
RESOLVED = "lineage.parent_resolved"  # extras: "id" | "source_key" when resolved here
_COLUMNS = ["episode_id", "dataset", "source_key", "source_uri", "split", "lineage"]


@dataclass
class ParentRow:
    episode_id: str
    dataset: str
    source_key: str
    source_uri: str
    split: str
    root: str


@dataclass
class LineageReport:
    resolved: int = 0
    unresolved: list[str] = field(default_factory=list)  # "<child id>: <why>"

    def to_json(self) -> dict:
        return {"parents resolved": self.resolved, "parents unresolved": len(self.unresolved)}


def wants_parent(meta: EpisodeMeta) -> bool:
    return meta.lineage is not None and bool(meta.lineage.parent_episode_id or meta.extras.get(PARENT_SOURCE_KEY))


def resolve_parents(store: EpisodeStore, manifest: VersionManifest | None,
                    metas: list[EpisodeMeta]) -> tuple[list[EpisodeMeta], LineageReport]:
    """``metas`` with parents resolved against ``manifest`` (None: nothing to resolve against)."""
    report = LineageReport()
    children = [m for m in metas if wants_parent(m)]
    if not children:
        return metas, report
    if manifest is None:
        report.unresolved = [f"{m.episode_id}: no version to resolve the parent in" for m in children]
        return metas, report
    by_id, by_key = _candidates(store, manifest, children)
    out = []
    for meta in metas:
        if not wants_parent(meta):
            out.append(meta)
            continue
        parent, how, problem = _match(meta, by_id, by_key)
        if parent is None:
            report.unresolved.append(f"{meta.episode_id}: {problem}")
            out.append(meta)
            continue
        report.resolved += 1
        lineage = replace(meta.lineage, parent_episode_id=parent.episode_id, root_episode_id=parent.root)
        out.append(replace(meta, lineage=lineage, split=parent.split, extras={**meta.extras, RESOLVED: how}))
    return out, report


def _candidates(store: EpisodeStore, manifest: VersionManifest, children: list[EpisodeMeta]):
    """Stored rows the children may point at, by id and by source key (one scan of five columns)."""
    ids = {m.lineage.parent_episode_id for m in children if m.lineage.parent_episode_id}
    ids |= {make_episode_id(m.extras[PARENT_DATASET], m.extras[PARENT_SOURCE_KEY]) for m in children
            if m.extras.get(PARENT_DATASET) and m.extras.get(PARENT_SOURCE_KEY)}
    keys = {m.extras[PARENT_SOURCE_KEY] for m in children if m.extras.get(PARENT_SOURCE_KEY)}
    by_id: dict[str, ParentRow] = {}
    by_key: dict[str, list[ParentRow]] = {}
    query = None if keys else CatalogQuery(episode_ids=tuple(sorted(ids)))
    for batch in scan_catalog(store, manifest, _COLUMNS, query):
        for row in batch.to_pylist():
            if row["episode_id"] not in ids and row["source_key"] not in keys:
                continue
            lineage = row["lineage"] or {}
            parent = ParentRow(row["episode_id"], row["dataset"], row["source_key"], row["source_uri"], row["split"],
                               lineage.get("root_episode_id") or lineage.get("parent_episode_id") or row["episode_id"])
            by_id[parent.episode_id] = parent
            by_key.setdefault(parent.source_key, []).append(parent)
    return by_id, by_key


def _match(meta: EpisodeMeta, by_id: dict[str, ParentRow], by_key: dict[str, list[ParentRow]]):
    explicit = meta.lineage.parent_episode_id
    if explicit:
        if explicit in by_id:
            return by_id[explicit], "id", ""
        return None, "", f"parent {explicit} is not in the version"
    dataset, key, uri = (meta.extras.get(PARENT_DATASET, ""), meta.extras[PARENT_SOURCE_KEY],
                         meta.extras.get(PARENT_SOURCE_URI, ""))
    rows = [r for r in by_key.get(key, []) if (not dataset or r.dataset == dataset)
            and (not uri or r.source_uri.rstrip("/") == uri.rstrip("/"))]
    rows = [r for r in rows if r.episode_id != meta.episode_id]
    if len(rows) == 1:
        return rows[0], "source_key", ""
    what = f"source key {key!r}" + (f" of dataset {dataset!r}" if dataset else "") + (f" at {uri}" if uri else "")
    if not rows:
        return None, "", f"no stored episode has {what}"
    return None, "", f"{len(rows)} stored episodes have {what}; name the dataset or source uri"
