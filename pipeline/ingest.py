"""Ingest one episode into the store: memo lookup, read, validate, write, per-episode stats.

Independent of connectors and Ray: the job passes in how to read and checksum the source episode.
Any failure becomes a quarantine record; it never propagates (one bad file must not kill a job).

An ingest-memo hit re-hashes the episode's stored steps and videos: one that no longer matches its
recorded id is restored from the source (pipeline.store.repair; listed in ``IngestOutcome.repaired``),
or, when the source rebuilds to other bytes, the episode is quarantined with that reason.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline.report import quarantine_record
from pipeline.stats import StatsSet, episode_stats
from pipeline.store.episodes import EpisodeStore, EpisodeStoreError
from pipeline.store.repair import rebuild_objects, stored_corruptions
from pipeline.store.statcache import episode_stats_of, remember_episode_stats
from pipeline.video import EncodeConfig
from schemas import SCHEMA_VERSION, Episode, EpisodeMeta, EpisodeValidationError, StepArrays, meta_to_row

# Bump when the bytes the store writes for the same source change (invalidates ingest memos).
# 2: source JPEGs muxed as they are; 3: OpenCV RGB->I420; 4: swapped JPEGs kept too; 5: steps keep the source
# clock and pair frames by timestamp, masked rows hold NaN
STORE_WRITER_VERSION = "5"


@dataclass(frozen=True)
class IngestConfig:
    encode: EncodeConfig = field(default_factory=EncodeConfig)

    def fingerprint(self) -> str:
        text = json.dumps({"schema": SCHEMA_VERSION, "writer": STORE_WRITER_VERSION, "encode": asdict(self.encode)},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class IngestOutcome:
    source_key: str
    episode_id: str
    status: str  # stored | reused | quarantined
    row: dict | None = None  # catalog row (schemas.meta_to_row)
    stats: dict | None = None  # StatsSet JSON of this episode
    quarantine: dict | None = None
    seconds: float = 0.0
    content: str = ""  # content_digest of the stored episode: equal digests are the same episode twice
    repaired: list[str] = field(default_factory=list)  # stored objects restored from the source on this run

    def to_json(self) -> str:
        # The fields are plain JSON values already: asdict() would deep-copy the stats' sketches for nothing.
        return json.dumps(vars(self))

    @staticmethod
    def from_json(text: str) -> IngestOutcome:
        return IngestOutcome(**json.loads(text))


def ingest_episode(store: EpisodeStore, source_key: str, episode_id: str, checksum: Callable[[], str],
                   read: Callable[[], Episode], config: IngestConfig, reused_stats: bool = True) -> IngestOutcome:
    """``reused_stats=False`` skips the stats of already-stored episodes (an append computes only what it adds)."""
    started = time.perf_counter()
    try:
        source_checksum = checksum()
        memo = store.ingest_key(episode_id, source_checksum, config.fingerprint())
        cached = store.lookup_ingested(memo)
        if cached is not None:
            repaired = _restore_corrupt(store, cached, source_checksum, read, config)
            stats = episode_stats_of(store, cached).to_json() if reused_stats else None
            outcome = IngestOutcome(source_key, episode_id, "reused", meta_to_row(cached), stats,
                                    content=content_digest(cached, store.read_steps(cached)), repaired=repaired)
        else:
            episode = read()
            if episode.meta.episode_id != episode_id:
                raise ValueError(f"connector produced episode id {episode.meta.episode_id}, expected {episode_id}")
            episode.meta.source_checksum = source_checksum
            meta = store.write_episode(episode, config.encode)
            store.remember_ingested(memo, meta)
            steps = episode.steps.filled()
            stats = episode_stats(meta.embodiment, steps.state, steps.action, steps.state_valid, steps.action_valid)
            remember_episode_stats(store, meta, stats)
            outcome = IngestOutcome(source_key, episode_id, "stored", meta_to_row(meta), stats.to_json(),
                                    content=content_digest(meta, store.read_steps(meta)))
    except Exception as exc:
        outcome = IngestOutcome(source_key, episode_id, "quarantined", quarantine=quarantine_record(
            source_key, episode_id, exc))
    outcome.seconds = time.perf_counter() - started
    return outcome


def _restore_corrupt(store: EpisodeStore, meta: EpisodeMeta, source_checksum: str, read: Callable[[], Episode],
                     config: IngestConfig) -> list[str]:
    """Restore the stored objects of a memo hit that fail their hash; raises when the source cannot."""
    corrupt = stored_corruptions(store, meta)
    if not corrupt:
        return []
    episode = read()
    episode.meta.source_checksum = source_checksum
    refused = [r for r in rebuild_objects(store, episode, corrupt, config.encode) if r.status != "repaired"]
    if refused:
        raise EpisodeStoreError(meta.episode_id, "objects", f"stored object {refused[0].path} is corrupt and "
                                f"cannot be restored: {refused[0].reason}", refused[0].path)
    return sorted(corrupt)


def content_digest(meta: EpisodeMeta, steps: StepArrays) -> str:
    """SHA-256 of what an episode holds, without its identity (id, source key, source path).

    Read back from the store, so a freshly stored and a reused episode hash the same way. Two
    source entries with equal digests are one episode recorded twice (a record copied into a
    second shard, a duplicated metadata row pointing at the same files).
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "embodiment": meta.embodiment, "fps": str(meta.control_fps), "state": meta.state_names,
        "action": meta.action_names, "tasks": meta.tasks,
        "cameras": sorted([c.name, c.video_sha256, c.frame_start, c.num_frames] for c in meta.cameras),
    }, sort_keys=True).encode())
    arrays = [steps.timestamp_ns, steps.state, steps.action, steps.state_valid, steps.action_valid, steps.reward,
              steps.task_index, steps.is_terminal, *(steps.frame_index[k] for k in sorted(steps.frame_index)),
              *(steps.extras[k] for k in sorted(steps.extras))]
    for array in arrays:
        if array is not None:
            value = np.ascontiguousarray(array)
            digest.update(f"{value.dtype.str}{value.shape}".encode())
            digest.update(value.tobytes() if value.dtype != object else repr(value.tolist()).encode())
    return digest.hexdigest()


def drop_duplicates(outcomes: list[IngestOutcome], order: dict[str, int]) -> tuple[list[IngestOutcome], list[dict]]:
    """Keep one of each set of content-identical episodes: the first in source order (``order``: source key ->
    position in the discovery). The others stay out of the version and are reported with what they repeat."""
    first: dict[str, IngestOutcome] = {}
    kept, dropped = [], []
    for outcome in sorted(outcomes, key=lambda o: (order.get(o.source_key, len(order)), o.source_key)):
        if outcome.row is None or not outcome.content:
            kept.append(outcome)
        elif outcome.content in first:
            same = first[outcome.content]
            dropped.append({"source_key": outcome.source_key, "episode_id": outcome.episode_id,
                            "same_as": same.source_key, "reason": f"content-identical to {same.source_key} "
                            f"({same.episode_id}): kept once, the first in source order"})
        else:
            first[outcome.content] = outcome
            kept.append(outcome)
    return kept, dropped


def quarantine_inconsistent(outcomes: list[IngestOutcome]) -> list[IngestOutcome]:
    """Episodes of one embodiment must share state and action widths (stats, shards and loaders rely on it).

    The most common widths of an embodiment win (ties: the first episode id); the other episodes are
    quarantined with the reason instead of failing the whole job when their stats cannot merge.
    """
    widths: dict[str, dict[tuple[int, int], list[str]]] = {}
    for outcome in sorted(outcomes, key=lambda o: o.episode_id):
        if outcome.row is not None and not _video_only(outcome.row):
            key = (len(outcome.row["state_names"] or []), len(outcome.row["action_names"] or []))
            widths.setdefault(outcome.row["embodiment"], {}).setdefault(key, []).append(outcome.episode_id)
    kept = {e: max(groups.items(), key=lambda kv: len(kv[1]))[0] for e, groups in widths.items()}
    out = []
    for outcome in outcomes:
        row = outcome.row
        if row is not None and not _video_only(row):
            state, action = len(row["state_names"] or []), len(row["action_names"] or [])
            expected = kept[row["embodiment"]]
            if (state, action) != expected:
                field_name = "state" if state != expected[0] else "action"
                error = EpisodeValidationError(outcome.episode_id, field_name, (
                    f"{state} state / {action} action dims, but most {row['embodiment']} episodes have "
                    f"{expected[0]} / {expected[1]}; set a distinct embodiment to keep them"), row["source_uri"])
                outcome = IngestOutcome(outcome.source_key, outcome.episode_id, "quarantined",
                                        quarantine=quarantine_record(outcome.source_key, outcome.episode_id, error),
                                        seconds=outcome.seconds)
        out.append(outcome)
    return out


def _video_only(row: dict) -> bool:
    """No state and no action (a generated video): it has no widths to disagree with."""
    return not row["state_names"] and not row["action_names"]


def merge_stats(outcomes: list[IngestOutcome]) -> StatsSet:
    """Stats of all stored episodes, merged in episode-id order (deterministic bytes)."""
    total = StatsSet()
    for outcome in sorted(outcomes, key=lambda o: o.episode_id):
        if outcome.stats is not None:
            total.merge(StatsSet.from_json(outcome.stats))
    return total
