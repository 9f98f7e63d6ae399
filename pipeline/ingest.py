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
from schemas import SCHEMA_VERSION, Episode, meta_to_row

# Bump when the bytes the store writes for the same source change (invalidates ingest memos).
STORE_WRITER_VERSION = "1"


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
        return json.dumps(asdict(self))

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


def merge_stats(outcomes: list[IngestOutcome]) -> StatsSet:
    """Stats of all stored episodes, merged in episode-id order (deterministic bytes)."""
    total = StatsSet()
    for outcome in sorted(outcomes, key=lambda o: o.episode_id):
        if outcome.stats is not None:
            total.merge(StatsSet.from_json(outcome.stats))
    return total
