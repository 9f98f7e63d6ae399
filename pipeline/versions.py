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
import re
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.objects import ObjectRef
from pipeline.stats import StatsSet
from pipeline.store import EpisodeStore
from schemas import CATALOG_SCHEMA, SCHEMA_VERSION

MANIFEST_FORMAT = "actionreel.version/1"
_REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


class VersionError(Exception):
    """A version or ref cannot be resolved or committed."""


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
        set_ref(store, ref, version_id)
    return version_id


def set_ref(store: EpisodeStore, name: str, version_id: str) -> None:
    if not _REF_NAME.match(name) or ".." in name:
        raise VersionError(f"bad ref name {name!r}")
    if not store.objects.exists(f"versions/{version_id}.json"):
        raise VersionError(f"no version {version_id}")
    store.objects.write_atomic(f"refs/{name}", f"{version_id}\n".encode())
    _append_log(store, name, version_id)


def _append_log(store: EpisodeStore, name: str, version_id: str) -> None:
    entry = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {version_id}\n".encode()
    path = f"refs/.log/{name}"
    previous = store.objects.read_bytes(path) if store.objects.exists(path) else b""
    store.objects.write_atomic(path, previous + entry)


def resolve(store: EpisodeStore, name_or_id: str) -> tuple[str, VersionManifest]:
    """A ref name, a full version id or a unique id prefix -> (version id, manifest)."""
    version_id = name_or_id
    if _REF_NAME.match(name_or_id) and store.objects.exists(f"refs/{name_or_id}"):
        version_id = store.objects.read_bytes(f"refs/{name_or_id}").decode().strip()
    elif not _VERSION_ID.match(name_or_id):
        pattern = store.objects.abspath(f"versions/{name_or_id}*.json")
        matches = [p.rsplit("/", 1)[-1][: -len(".json")] for p in store.fs.glob(pattern)]
        if len(matches) != 1:
            raise VersionError(f"{name_or_id!r} names no ref and {len(matches)} versions in {store.uri}")
        version_id = matches[0]
    path = f"versions/{version_id}.json"
    if not store.objects.exists(path):
        raise VersionError(f"no version {version_id} in {store.uri}")
    return version_id, VersionManifest.from_json(json.loads(store.objects.read_bytes(path)))


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
