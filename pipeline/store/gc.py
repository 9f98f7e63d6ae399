"""Garbage collection: remove what no ref reaches. A dry run unless asked to delete.

Roots are every version any ref ever pointed at (every entry of every ref log, not only heads:
someone may have pinned a version they read through a ref), closed over ``parent`` links. Kept:
their manifests, catalog layers (every row of a reachable layer, deleted or not: an ancestor had
it live), stats, the steps and video objects of those rows, their per-episode stats cache entries,
the views of reachable versions and the shards those views list, and ingest memo records whose
objects all stay. Everything else under ``objects/``, ``versions/``, ``views/``, ``shards/`` and
``index/`` is garbage, as are temporary files of interrupted writes.

Nothing younger than ``grace_s`` is deleted: a job that has written objects but not committed yet
must not lose them (a commit also refuses a manifest whose catalog or stats object vanished).
Deleting a ref (``pipeline.store.refs.delete_ref``) is how history is given up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.report import JOB_REPORTS
from pipeline.shards.manifest import ViewManifest
from pipeline.store.catalog import layer_dataset
from pipeline.store.episodes import EpisodeStore
from pipeline.store.refs import list_refs, ref_log
from pipeline.store.statcache import cache_path, stats_key
from pipeline.store.versions import VersionError, read_manifest

DEFAULT_GRACE_S = 24 * 3600
_AREAS = ("objects", "versions", "views", "shards", "index")


@dataclass
class GcReport:
    refs: dict[str, str]
    versions: int  # reachable
    delete: bool
    garbage: list[tuple[str, int]] = field(default_factory=list)  # (store-relative path, bytes)
    young: int = 0  # unreachable but younger than the grace period: kept
    deleted: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.garbage)

    def to_json(self) -> dict:
        return {"refs": self.refs, "versions": self.versions, "delete": self.delete, "young": self.young,
                "deleted": self.deleted, "bytes": self.bytes, "garbage": [list(g) for g in self.garbage],
                "warnings": self.warnings}


def reachable_versions(store: EpisodeStore, warnings: list[str] | None = None) -> set[str]:
    """Every version a ref log names, and all their ancestors."""
    todo = [e.version for name in list_refs(store.objects) for e in ref_log(store.objects, name)]
    seen: set[str] = set()
    while todo:
        version = todo.pop()
        if version in seen:
            continue
        try:
            manifest = read_manifest(store, version)
        except (FileNotFoundError, VersionError) as exc:
            if warnings is not None:
                warnings.append(f"version {version}: {exc}")
            seen.add(version)
            continue
        seen.add(version)
        if manifest.parent:
            todo.append(manifest.parent)
    return seen


@dataclass
class Reachable:
    paths: set[str] = field(default_factory=set)  # store-relative paths to keep
    views: set[str] = field(default_factory=set)  # view ids to keep


def reachable_objects(store: EpisodeStore, versions: set[str]) -> Reachable:
    keep = Reachable()
    layers: set[str] = set()
    for version in versions:
        keep.paths.add(f"versions/{version}.json")
        try:
            manifest = read_manifest(store, version)
        except (FileNotFoundError, VersionError):
            continue
        layers.update(ref.path for ref in manifest.catalog)
        if manifest.stats:
            keep.paths.add(manifest.stats.path)
    for layer in sorted(layers):
        keep.paths.add(layer)
        try:
            table = layer_dataset(store, layer).to_table(columns=["embodiment", "steps_sha256", "steps_path",
                                                                  "cameras"])
        except (OSError, ValueError) as exc:
            raise VersionError(f"catalog layer {layer} is unreadable ({exc}): gc cannot tell what it uses and "
                               "stops; run verify") from exc
        for row in table.to_pylist():
            keep.paths.add(row["steps_path"])
            keep.paths.update(c["video_path"] for c in row["cameras"] or [])
            keep.paths.add(cache_path(stats_key(row["steps_sha256"], row["embodiment"])))
    for view_id in store.objects.list_dir("views"):
        path = f"views/{view_id}/view.json"
        try:
            view = ViewManifest.from_json(json.loads(store.objects.read_bytes(path)))
        except (FileNotFoundError, ValueError, KeyError):
            continue
        if view.version_id in versions:
            keep.views.add(view_id)
            keep.paths.add(path)
            for shard in view.shards:
                keep.paths.update((shard.tar_path, shard.index_path))
    return keep


def collect_garbage(store: EpisodeStore, delete: bool = False, grace_s: float = DEFAULT_GRACE_S,
                    now: float | None = None) -> GcReport:
    """List (and with ``delete``, remove) everything no ref reaches and older than ``grace_s``."""
    now = time.time() if now is None else now
    report = GcReport(list_refs(store.objects), 0, delete)
    versions = reachable_versions(store, report.warnings)
    report.versions = len(versions)
    keep = reachable_objects(store, versions)
    root = store.root.rstrip("/") + "/"
    for area in _AREAS:
        base = store.objects.abspath(area)
        store.fs.invalidate_cache(base)
        if not store.fs.exists(base):
            continue
        for path, info in sorted(store.fs.find(base, detail=True).items()):
            relative = path[len(root):] if path.startswith(root) else path
            if _keep(store, relative, keep):
                continue
            if now - _mtime(info, now) < grace_s:
                report.young += 1
                continue
            report.garbage.append((relative, int(info.get("size") or 0)))
    if delete and report.garbage:
        paths = [store.objects.abspath(p) for p, _ in report.garbage]
        for start in range(0, len(paths), 500):
            store.fs.rm(paths[start: start + 500])
        report.deleted = len(paths)
    return report


def _keep(store: EpisodeStore, relative: str, keep: Reachable) -> bool:
    name = relative.rsplit("/", 1)[-1]
    if name.startswith(".tmp-"):
        return False
    if relative in keep.paths:
        return True
    if relative.startswith("views/"):
        return relative.split("/")[1] in keep.views and not relative.endswith("view.json")
    if relative.startswith("index/ingested/"):
        return _memo_alive(store, relative, keep)
    if relative.startswith(f"{JOB_REPORTS}/"):  # a job's report lives as long as the version it made
        return f"versions/{relative.split('/')[2]}.json" in keep.paths
    return False


def _memo_alive(store: EpisodeStore, relative: str, keep: Reachable) -> bool:
    """An ingest memo record stays while every object it names stays (else a re-ingest would be skipped)."""
    try:
        row = json.loads(store.objects.read_bytes(relative))
    except (FileNotFoundError, ValueError):
        return False
    needed = [row.get("steps_path", ""), *(c.get("video_path", "") for c in row.get("cameras") or [])]
    return all(p in keep.paths for p in needed)


def _mtime(info: dict, default: float) -> float:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return default
