"""Looking back: a version's ancestry (``log``) and what changed between two versions (``diff``).

A diff compares the live episodes of two versions by ``pipeline.store.derive.content_key``: ids only in
B are *added*, only in A *removed*, in both with different content *changed*. Counts, steps and
bytes are broken down per (embodiment, kind). Bytes are distinct stored objects: ``bytes_added``
is what B stores that A does not (a video file shared by several episodes counts once), which is
the real storage cost of moving from A to B.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.store.catalog import episode_objects, scan_catalog
from pipeline.store.derive import content_key
from pipeline.store.episodes import EpisodeStore
from pipeline.store.refs import list_refs, ref_log
from pipeline.store.versions import VersionManifest, read_manifest


@dataclass
class LogEntry:
    version_id: str
    parent: str | None
    job: str
    episodes: int
    steps: int
    refs: list[str] = field(default_factory=list)  # refs whose head is this version
    committed: list[str] = field(default_factory=list)  # "<ref>@<time>" for every ref move onto it
    producer: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def version_log(store: EpisodeStore, version_id: str, limit: int = 100) -> list[LogEntry]:
    """The version and its ancestors, newest first (follows ``parent`` links)."""
    refs = list_refs(store.objects)
    heads: dict[str, list[str]] = {}
    for name, head in refs.items():
        heads.setdefault(head, []).append(name)
    moves: dict[str, list[str]] = {}
    for name in refs:
        for entry in ref_log(store.objects, name):
            moves.setdefault(entry.version, []).append(f"{entry.ref}@{entry.time}")
    out: list[LogEntry] = []
    current: str | None = version_id
    while current is not None and len(out) < limit:
        manifest = read_manifest(store, current)
        out.append(LogEntry(current, manifest.parent, str(manifest.producer.get("job", "")),
                            int(manifest.totals.get("episodes", 0)), int(manifest.totals.get("steps", 0)),
                            sorted(heads.get(current, [])), sorted(moves.get(current, [])), manifest.producer))
        current = manifest.parent
    return out


# ---------------------------------------------------------------- diff

_COLUMNS = None  # every column: the content key covers the whole row


@dataclass
class _Row:
    key: str
    embodiment: str
    kind: str
    steps: int
    objects: dict[str, int]


@dataclass
class VersionDiff:
    a: str
    b: str
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: int
    groups: list[dict]  # per (embodiment, kind): added/removed/changed {episodes, steps, bytes}
    bytes_added: int
    bytes_removed: int

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict:
        return asdict(self)


def _rows(store: EpisodeStore, manifest: VersionManifest) -> dict[str, _Row]:
    rows: dict[str, _Row] = {}
    for batch in scan_catalog(store, manifest, _COLUMNS):
        for row in batch.to_pylist():
            rows[row["episode_id"]] = _Row(content_key(row), row["embodiment"], row["kind"], int(row["num_steps"]),
                                           episode_objects(row))
    return rows


def diff_versions(store: EpisodeStore, a_id: str, a: VersionManifest, b_id: str, b: VersionManifest) -> VersionDiff:
    """What B has that A has not, and the reverse."""
    rows_a, rows_b = _rows(store, a), _rows(store, b)
    added = sorted(set(rows_b) - set(rows_a))
    removed = sorted(set(rows_a) - set(rows_b))
    changed = sorted(e for e in set(rows_a) & set(rows_b) if rows_a[e].key != rows_b[e].key)
    objects_a = {sha: n for r in rows_a.values() for sha, n in r.objects.items()}
    objects_b = {sha: n for r in rows_b.values() for sha, n in r.objects.items()}
    groups: dict[tuple[str, str], dict] = {}

    def count(what: str, ids: list[str], rows: dict[str, _Row], other: dict[str, int]) -> None:
        for episode in ids:
            row = rows[episode]
            group = groups.setdefault((row.embodiment, row.kind), {"embodiment": row.embodiment, "kind": row.kind})
            entry = group.setdefault(what, {"episodes": 0, "steps": 0, "objects": {}})
            entry["episodes"] += 1
            entry["steps"] += row.steps
            entry["objects"].update({sha: n for sha, n in row.objects.items() if sha not in other})

    count("added", added, rows_b, objects_a)
    count("removed", removed, rows_a, objects_b)
    count("changed", changed, rows_b, objects_a)
    for group in groups.values():
        for what in ("added", "removed", "changed"):
            entry = group.setdefault(what, {"episodes": 0, "steps": 0, "objects": {}})
            entry["bytes"] = sum(entry.pop("objects").values())
    return VersionDiff(a_id, b_id, added, removed, changed, len(set(rows_a) & set(rows_b)) - len(changed),
                       [groups[k] for k in sorted(groups)],
                       sum(n for sha, n in objects_b.items() if sha not in objects_a),
                       sum(n for sha, n in objects_a.items() if sha not in objects_b))
