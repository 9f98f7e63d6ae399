"""Immutable, content-addressed dataset versions and the refs that name them.

A version manifest is canonical JSON naming its parent, catalog layers, deletions, stats and the
job/config that produced it. Its id is the SHA-256 of that JSON, so the same inputs give the same
id and a manifest can never change. Manifests carry no wall-clock time (it would break that);
commit times live in the ref log. A commit writes every object first, then the manifest, and
moves the ref last with a compare-and-swap (``pipeline.store.refs``): a crash in between leaves no
visible version, and two writers racing on one ref cannot both win. See docs/versions.md.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.stats import StatsSet
from pipeline.store.catalog import read_catalog_table
from pipeline.store.episodes import EpisodeStore
from pipeline.store.objects import ObjectRef
from pipeline.store.refs import RefConflict, VersionError, read_head, resolve_version_id, set_ref, update_ref
from schemas import SCHEMA_VERSION

MANIFEST_FORMAT = "actionreel.version/1"
PARENT = "<parent>"  # commit_version's default expectation: the ref's head is the manifest's parent
__all__ = ["MANIFEST_FORMAT", "PARENT", "RefConflict", "VersionError", "VersionManifest", "commit_version",
           "commit_with_retry", "load_catalog", "load_stats", "read_manifest", "ref_head", "resolve", "set_ref",
           "write_stats"]


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

    def same_content(self, other: VersionManifest) -> bool:
        """Same episodes, deletions, stats and schema: committing one on top of the other adds nothing."""
        return ([c.sha256 for c in self.catalog], sorted(self.deleted), self.stats, self.schema_version) == (
            [c.sha256 for c in other.catalog], sorted(other.deleted), other.stats, other.schema_version)


def write_manifest(store: EpisodeStore, manifest: VersionManifest) -> str:
    """Store the manifest under its id (idempotent: equal content, equal bytes, equal name)."""
    for ref in [*manifest.catalog, *([manifest.stats] if manifest.stats else [])]:
        if not store.objects.exists_fresh(ref.path):
            raise VersionError(f"manifest names {ref.path}, which is not in {store.root}")
    version_id = manifest.version_id
    path = f"versions/{version_id}.json"
    if not store.objects.exists_fresh(path):
        store.objects.write_atomic(path, manifest.canonical_bytes())
    return version_id


def commit_version(store: EpisodeStore, manifest: VersionManifest, ref: str | None = "latest", *,
                   expect: str | None = PARENT, message: str = "") -> str:
    """Write the manifest and move ``ref`` to it if the ref's head is ``expect``. Returns the version id.

    ``expect`` defaults to the manifest's parent (None: the ref must not exist yet). Raises
    ``RefConflict`` when another writer moved the ref first; nothing visible changes then. When the
    head already holds the same content (a re-run), the head's id is returned and nothing is written.
    """
    expected = manifest.parent if expect == PARENT else expect
    head = read_head(store.objects, ref) if ref else None
    if head is not None and head.version == expected and read_manifest(store, head.version).same_content(manifest):
        return head.version
    version_id = write_manifest(store, manifest)
    if ref:
        if head is not None and head.version == version_id:
            return version_id
        update_ref(store.objects, ref, version_id, expected, message or str(manifest.producer.get("job", "")))
    return version_id


def commit_with_retry(store: EpisodeStore, ref: str, build: Callable[[str | None], VersionManifest],
                      attempts: int = 5, message: str = "") -> str:
    """Build a manifest on the ref's current head and commit it; on a conflict rebuild on the new head."""
    for attempt in range(attempts):
        head = ref_head(store, ref)
        try:
            return commit_version(store, build(head), ref, expect=head, message=message)
        except RefConflict:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def ref_head(store: EpisodeStore, ref: str) -> str | None:
    """The version id a ref points at now, or None when the ref does not exist."""
    head = read_head(store.objects, ref)
    return head.version if head else None


def read_manifest(store: EpisodeStore, version_id: str) -> VersionManifest:
    data = store.objects.read_bytes(f"versions/{version_id}.json")
    if hashlib.sha256(data).hexdigest() != version_id:
        raise VersionError(f"versions/{version_id}.json does not hash to its name: the manifest is corrupt")
    return VersionManifest.from_json(json.loads(data))


def resolve(store: EpisodeStore, name_or_id: str) -> tuple[str, VersionManifest]:
    """A ref name, a full version id or a unique id prefix -> (version id, manifest)."""
    version_id = resolve_version_id(store.objects, name_or_id)
    return version_id, read_manifest(store, version_id)


def load_catalog(store: EpisodeStore, manifest: VersionManifest) -> pa.Table:
    """The version's live episodes: later layers replace earlier rows of the same id, deletions removed."""
    return read_catalog_table(store, manifest)


def load_stats(store: EpisodeStore, manifest: VersionManifest) -> StatsSet:
    if manifest.stats is None:
        return StatsSet()
    return StatsSet.from_json(json.loads(store.objects.read_bytes(manifest.stats.path)))


def write_stats(store: EpisodeStore, stats: StatsSet) -> ObjectRef:
    return store.objects.put_bytes("stats", json.dumps(stats.to_json(), sort_keys=True).encode(), ".json")
