"""Catalog queries: a version's episodes scanned batch by batch, never all in memory at once.

A version's catalog is a list of Parquet layers plus a deletion list. The live episodes are the
rows of every layer, where a later layer's row replaces an earlier row with the same
``episode_id`` (an append that re-ingested a changed episode), minus the deleted ids. Scans run on
``pyarrow.dataset`` with the query's columnar part pushed down as a filter expression (row-group
statistics prune whole groups) and projected to the columns asked for; the parts that need list or
map access (task text, recording date) are applied per batch. Only episode ids are ever held for a
whole catalog (to resolve shadowed rows), and only when a version has more than one layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipeline.settings import checked_settings
from schemas import CATALOG_SCHEMA

if TYPE_CHECKING:
    from pipeline.store.episodes import EpisodeStore


class _LayerRef(Protocol):
    path: str


class CatalogLayers(Protocol):
    """What a catalog scan needs of a version: its catalog layers (oldest first) and its deletion list.

    ``pipeline.store.versions.VersionManifest`` is one; naming the shape here keeps catalog free of versions."""

    catalog: list[_LayerRef]
    deleted: list[str]

RECORDED_AT = "recorded_at"  # extras key: when the episode was recorded (ISO 8601), set by connectors that know
SUCCESS_VALUES = ("any", "true", "false", "unknown")
_NS_PER_HOUR = 3_600_000_000_000


@dataclass(frozen=True)
class CatalogQuery:
    """Which episodes: every field left at its default matches everything."""

    episode_ids: tuple[str, ...] = ()
    embodiment: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    action_source: tuple[str, ...] = ()
    dataset: tuple[str, ...] = ()
    split: tuple[str, ...] = ()
    task: str = ""  # case-insensitive substring of any of the episode's task texts
    success: str = "any"  # any | true | false | unknown (null)
    min_steps: int | None = None
    max_steps: int | None = None
    since: str = ""  # ISO 8601 date or time (UTC when no zone), inclusive, on extras["recorded_at"]
    until: str = ""  # exclusive

    def __post_init__(self) -> None:
        if self.success not in SUCCESS_VALUES:
            raise ValueError(f"success must be one of {SUCCESS_VALUES}, got {self.success!r}")
        for bound in (self.since, self.until):
            if bound:
                parse_time(bound)

    def is_everything(self) -> bool:
        return self == CatalogQuery()

    def expression(self) -> pc.Expression | None:
        """The columnar part, pushed down into the Parquet scan."""
        terms = []
        for name in ("episode_ids", "embodiment", "kind", "action_source", "dataset", "split"):
            values = getattr(self, name)
            if values:
                column = "episode_id" if name == "episode_ids" else name
                terms.append(pc.field(column).isin(list(values)))
        if self.success == "true":
            terms.append(pc.field("success") == True)  # noqa: E712 (an expression, not a comparison)
        elif self.success == "false":
            terms.append(pc.field("success") == False)  # noqa: E712
        elif self.success == "unknown":
            terms.append(pc.field("success").is_null())
        if self.min_steps is not None:
            terms.append(pc.field("num_steps") >= self.min_steps)
        if self.max_steps is not None:
            terms.append(pc.field("num_steps") <= self.max_steps)
        return _and(terms)

    def batch_columns(self) -> set[str]:
        """Columns the per-batch part reads."""
        return ({"tasks"} if self.task else set()) | ({"extras"} if self.since or self.until else set())

    def batch_mask(self, batch: pa.RecordBatch) -> pa.Array | None:
        """The part needing list/map access: task text and recording date."""
        mask = None
        if self.task:
            tasks = batch.column("tasks")
            hits = pc.match_substring(pc.list_flatten(tasks), self.task, ignore_case=True)
            rows = pc.list_parent_indices(tasks).filter(hits)
            mask = pc.is_in(pa.array(range(batch.num_rows), pa.int64()), value_set=pc.unique(rows).cast(pa.int64()))
        if self.since or self.until:
            stamps = pc.map_lookup(batch.column("extras"), RECORDED_AT, "first").to_pylist()
            low = parse_time(self.since) if self.since else None
            high = parse_time(self.until) if self.until else None
            dated = pa.array([_in_range(s, low, high) for s in stamps], pa.bool_())
            mask = dated if mask is None else pc.and_(mask, dated)
        return mask

    def to_json(self) -> dict:
        """Only the fields that differ from the default (a readable record in manifests)."""
        default = CatalogQuery()
        return {f.name: (list(v) if isinstance(v, tuple) else v) for f in fields(self)
                if (v := getattr(self, f.name)) != getattr(default, f.name)}

    @staticmethod
    def from_json(data: dict) -> CatalogQuery:
        values = {k: (tuple(v) if isinstance(v, list) else v)
                  for k, v in checked_settings(CatalogQuery, data, "query fields").items()}
        return CatalogQuery(**values)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_json().items()) or "everything"


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime (naive values are UTC)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or time: {text!r}") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _in_range(stamp: str | None, low: datetime | None, high: datetime | None) -> bool:
    if not stamp:
        return False
    try:
        value = parse_time(stamp)
    except ValueError:
        return False
    return (low is None or value >= low) and (high is None or value < high)


def _and(terms: list[pc.Expression]) -> pc.Expression | None:
    out = None
    for term in terms:
        out = term if out is None else out & term
    return out


# ---------------------------------------------------------------- scanning


def layer_dataset(store: EpisodeStore, path: str) -> ds.Dataset:
    return ds.dataset(store.objects.abspath(path), format="parquet", filesystem=store.fs, schema=CATALOG_SCHEMA)


def _shadowed(store: EpisodeStore, manifest: CatalogLayers) -> list[set[str]]:
    """Per layer, the ids a later layer replaces (only the id column is read)."""
    later: set[str] = set()
    out: list[set[str]] = []
    for ref in reversed(manifest.catalog):
        out.append(set(later))
        if len(manifest.catalog) > 1:
            table = layer_dataset(store, ref.path).to_table(columns=["episode_id"])
            later.update(table.column("episode_id").to_pylist())
    return out[::-1]


def scan_catalog(store: EpisodeStore, manifest: CatalogLayers, columns: list[str] | None = None,
                 query: CatalogQuery | None = None, batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
    """The version's live rows matching ``query``, as record batches of ``columns`` (default: all)."""
    query = query or CatalogQuery()
    wanted = list(columns) if columns is not None else list(CATALOG_SCHEMA.names)
    read = list(dict.fromkeys([*wanted, *sorted(query.batch_columns())]))
    deleted = set(manifest.deleted)
    for ref, shadowed in zip(manifest.catalog, _shadowed(store, manifest), strict=True):
        hidden = deleted | shadowed
        terms = [e for e in (query.expression(),) if e is not None]
        if hidden:
            terms.append(~pc.field("episode_id").isin(sorted(hidden)))
        scanner = layer_dataset(store, ref.path).scanner(columns=read, filter=_and(terms), batch_size=batch_size)
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            mask = query.batch_mask(batch)
            if mask is not None:
                batch = batch.filter(mask)
            if batch.num_rows:
                yield batch.select(wanted)


def read_catalog_table(store: EpisodeStore, manifest: CatalogLayers, columns: list[str] | None = None,
                       query: CatalogQuery | None = None) -> pa.Table:
    """``scan_catalog`` gathered into one table (for the episodes a job will touch anyway)."""
    names = list(columns) if columns is not None else list(CATALOG_SCHEMA.names)
    schema = pa.schema([CATALOG_SCHEMA.field(n) for n in names], metadata=CATALOG_SCHEMA.metadata)
    batches = list(scan_catalog(store, manifest, names, query))
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def episode_ids(store: EpisodeStore, manifest: CatalogLayers, query: CatalogQuery | None = None) -> list[str]:
    ids: list[str] = []
    for batch in scan_catalog(store, manifest, ["episode_id"], query):
        ids.extend(batch.column(0).to_pylist())
    return sorted(ids)


# ---------------------------------------------------------------- summaries

_SUMMARY_COLUMNS = ["embodiment", "kind", "num_steps", "duration_ns", "control_fps_num", "control_fps_den",
                    "steps_sha256", "steps_bytes", "cameras"]


@dataclass
class GroupSummary:
    embodiment: str
    kind: str
    episodes: int = 0
    steps: int = 0
    hours: float = 0.0
    bytes: int = 0  # distinct stored objects (a video file shared by episodes counts once)

    def to_json(self) -> dict:
        return {**asdict(self), "hours": round(self.hours, 6)}


def episode_objects(row: dict) -> dict[str, int]:
    """sha256 -> bytes of the objects one catalog row uses (steps and camera videos)."""
    objects = {row["steps_sha256"]: int(row["steps_bytes"] or 0)} if row.get("steps_sha256") else {}
    for cam in row.get("cameras") or []:
        if cam.get("video_sha256"):
            objects[cam["video_sha256"]] = int(cam.get("video_bytes") or 0)
    return objects


def catalog_summary(store: EpisodeStore, manifest: CatalogLayers,
                    query: CatalogQuery | None = None) -> list[GroupSummary]:
    """Episodes, steps, hours and bytes per (embodiment, kind), plus a last row for everything."""
    groups: dict[tuple[str, str], GroupSummary] = {}
    objects: dict[tuple[str, str], dict[str, int]] = {}
    everything: dict[str, int] = {}
    for batch in scan_catalog(store, manifest, _SUMMARY_COLUMNS, query):
        for row in batch.to_pylist():
            key = (row["embodiment"], row["kind"])
            group = groups.setdefault(key, GroupSummary(*key))
            group.episodes += 1
            group.steps += int(row["num_steps"])
            duration = int(row["duration_ns"] or 0) or (
                int(row["num_steps"]) * 1_000_000_000 * int(row["control_fps_den"]) // int(row["control_fps_num"]))
            group.hours += duration / _NS_PER_HOUR
            used = episode_objects(row)
            objects.setdefault(key, {}).update(used)
            everything.update(used)
    out = [groups[k] for k in sorted(groups)]
    for group in out:
        group.bytes = sum(objects[(group.embodiment, group.kind)].values())
    total = GroupSummary("*", "*", sum(g.episodes for g in out), sum(g.steps for g in out),
                         sum(g.hours for g in out), sum(everything.values()))
    return [*out, total]
