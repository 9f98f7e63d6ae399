"""Ingest one episode into the store: memo lookup, read, validate, write, per-episode stats.

Independent of connectors and Ray: the job passes in how to read and checksum the source episode.
Any failure becomes a quarantine record; it never propagates (one bad file must not kill a job).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pipeline.report import quarantine_record
from pipeline.statcache import episode_stats_of, remember_episode_stats
from pipeline.stats import StatsSet, episode_stats
from pipeline.store import EpisodeStore
from pipeline.video import EncodeConfig
from schemas import SCHEMA_VERSION, Episode, EpisodeValidationError, meta_to_row

# Bump when the bytes the store writes for the same source change (invalidates ingest memos).
STORE_WRITER_VERSION = "4"  # 2: source JPEGs muxed as they are; 3: OpenCV RGB->I420; 4: swapped JPEGs kept too


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
            stats = episode_stats_of(store, cached).to_json() if reused_stats else None
            outcome = IngestOutcome(source_key, episode_id, "reused", meta_to_row(cached), stats)
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
            outcome = IngestOutcome(source_key, episode_id, "stored", meta_to_row(meta), stats.to_json())
    except Exception as exc:
        outcome = IngestOutcome(source_key, episode_id, "quarantined", quarantine=quarantine_record(
            source_key, episode_id, exc))
    outcome.seconds = time.perf_counter() - started
    return outcome


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
