"""Immutable, content-addressed dataset versions and the refs that name them.

A version manifest is canonical JSON naming its parent, catalog objects, deletions, stats and the
job/config that produced it. Its id is the SHA-256 of that JSON, so the same inputs give the same
id and a manifest can never change. Manifests carry no wall-clock time (it would break that);
commit times live in the ref log. A commit writes the manifest first (create-if-absent) and moves
the ref last: a crash in between leaves no visible version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.objects import ObjectRef
from pipeline.refs import VersionError, resolve_version_id, set_ref
from pipeline.stats import StatsSet
from pipeline.store import EpisodeStore
from schemas import CATALOG_SCHEMA, SCHEMA_VERSION

MANIFEST_FORMAT = "actionreel.version/1"
__all__ = ["MANIFEST_FORMAT", "VersionError", "VersionManifest", "commit_version", "load_catalog", "load_stats",
           "resolve", "set_ref", "write_stats"]


@dataclass
class VersionManifest:
    catalog: list[ObjectRef]
    stats: ObjectRef | None
    totals: dict
    producer: dict
    parent: str | None = None
    deleted: list[str] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION

    def to_json(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "schema_version": self.schema_version,
            "parent": self.parent,
            "catalog": [c.to_json() for c in self.catalog],
            "deleted": sorted(self.deleted),
            "stats": self.stats.to_json() if self.stats else None,
            "totals": self.totals,
            "producer": self.producer,
        }

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def version_id(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @staticmethod
    def from_json(data: dict) -> VersionManifest:
        if data.get("format") != MANIFEST_FORMAT:
            raise VersionError(f"not a version manifest (format {data.get('format')!r})")
        return VersionManifest(
            catalog=[ObjectRef.from_json(c) for c in data["catalog"]],
            stats=ObjectRef.from_json(data["stats"]) if data.get("stats") else None,
            totals=data.get("totals", {}),
            producer=data.get("producer", {}),
            parent=data.get("parent"),
            deleted=list(data.get("deleted", [])),
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )


def commit_version(store: EpisodeStore, manifest: VersionManifest, ref: str | None = "latest") -> str:
    """Write the manifest (if new) and point ``ref`` at it. Returns the version id."""
    version_id = manifest.version_id
    path = f"versions/{version_id}.json"
    if not store.objects.exists(path):
        store.objects.write_atomic(path, manifest.canonical_bytes())
    if ref:
        set_ref(store.objects, ref, version_id)
    return version_id


def resolve(store: EpisodeStore, name_or_id: str) -> tuple[str, VersionManifest]:
    """A ref name, a full version id or a unique id prefix -> (version id, manifest)."""
    version_id = resolve_version_id(store.objects, name_or_id)
    data = json.loads(store.objects.read_bytes(f"versions/{version_id}.json"))
    return version_id, VersionManifest.from_json(data)


def load_catalog(store: EpisodeStore, manifest: VersionManifest) -> pa.Table:
    """The version's episodes: its catalog objects concatenated, deletions removed."""
    tables = [store.read_catalog(ref.path) for ref in manifest.catalog]
    table = pa.concat_tables(tables) if tables else CATALOG_SCHEMA.empty_table()
    if manifest.deleted:
        keep = pc.invert(pc.is_in(table.column("episode_id"), value_set=pa.array(manifest.deleted)))
        table = table.filter(keep)
    return table


def load_stats(store: EpisodeStore, manifest: VersionManifest) -> StatsSet:
    if manifest.stats is None:
        return StatsSet()
    return StatsSet.from_json(json.loads(store.objects.read_bytes(manifest.stats.path)))


def write_stats(store: EpisodeStore, stats: StatsSet) -> ObjectRef:
    return store.objects.put_bytes("stats", json.dumps(stats.to_json(), sort_keys=True).encode(), ".json")
