"""Deterministic assignment of episode segments to shards, and the content key of a shard.

Episodes are taken in id order and cut into segments of ``segment_steps``. Whole episodes go to a
shard until the next would push it over the target size; an episode larger than the target is cut
between segments. When ``min_shards`` is what bounds the shard size (a dataset smaller than
``min_shards`` targets), the segments are instead cut into ``min_shards`` runs of equal estimated
size: shards are the job's unit of parallelism, and a greedy packing there leaves a small last shard
that one writer finishes while the others idle. Sizes are estimates (pixels x bytes-per-pixel), so
the plan, and with it every shard's content, is known before anything is decoded. A shard's key
hashes the view's content identity and, per segment, the episode, range and the fingerprint of the episode's content
(``pipeline.shards.writer.episode_fingerprint``): equal keys mean byte-identical shards, so a
shard on disk under its key is reused as is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from pipeline.shards.view import ViewConfig

SHARD_FORMAT = "actionreel.shard/2"  # bump when the writer's bytes change for equal inputs (2: member checksums)


@dataclass(frozen=True)
class SegmentPlan:
    episode_id: str
    segment: int
    step_start: int
    num_steps: int


@dataclass(frozen=True)
class ShardPlan:
    index: int
    segments: tuple[SegmentPlan, ...]
    key: str = ""  # content key (shard_key); names the shard's files

    @property
    def name(self) -> str:
        return self.key or f"shard-{self.index:06d}"

    @property
    def episodes(self) -> list[str]:
        return list(dict.fromkeys(s.episode_id for s in self.segments))

    @property
    def num_steps(self) -> int:
        return sum(s.num_steps for s in self.segments)


def segments_of(episode_id: str, num_steps: int, segment_steps: int) -> list[SegmentPlan]:
    return [SegmentPlan(episode_id, i, start, min(segment_steps, num_steps - start))
            for i, start in enumerate(range(0, num_steps, segment_steps))]


def plan_shards(episodes: list[tuple[str, int, int]], view: ViewConfig) -> list[ShardPlan]:
    """``episodes``: (episode id, num steps, num cameras in the view). Returns the shard plans."""
    ordered = sorted(episodes)
    bytes_per_step = [max(1, cams) * view.height * view.width * view.estimated_bytes_per_pixel + 2048
                      for _, _, cams in ordered]
    total = sum(n * b for (_, n, _), b in zip(ordered, bytes_per_step, strict=True))
    if view.min_shards > 1 and total / view.min_shards < view.target_shard_bytes:
        return _balanced(ordered, bytes_per_step, total, view)
    target = max(1.0, min(float(view.target_shard_bytes), total / view.min_shards))
    shards: list[list[SegmentPlan]] = [[]]
    size = 0.0
    for (episode_id, num_steps, _), per_step in zip(ordered, bytes_per_step, strict=True):
        episode_bytes = num_steps * per_step
        if shards[-1] and size + episode_bytes > target:
            shards.append([])
            size = 0.0
        for segment in segments_of(episode_id, num_steps, view.segment_steps):
            segment_bytes = segment.num_steps * per_step
            if shards[-1] and size + segment_bytes > target and size >= target / 2:
                shards.append([])
                size = 0.0
            shards[-1].append(segment)
            size += segment_bytes
    return [ShardPlan(i, tuple(s)) for i, s in enumerate(shards) if s]


def _balanced(ordered: list[tuple[str, int, int]], bytes_per_step: list[int], total: float,
              view: ViewConfig) -> list[ShardPlan]:
    """Segments in id order cut into ``view.min_shards`` contiguous runs of near-equal size: a segment
    goes to the shard its midpoint falls in (so runs are contiguous and no shard is a runt)."""
    share = total / view.min_shards
    shards: list[list[SegmentPlan]] = [[] for _ in range(view.min_shards)]
    before = 0.0
    for (episode_id, num_steps, _), per_step in zip(ordered, bytes_per_step, strict=True):
        for segment in segments_of(episode_id, num_steps, view.segment_steps):
            size = segment.num_steps * per_step
            shards[min(view.min_shards - 1, int((before + size / 2) // share))].append(segment)
            before += size
    return [ShardPlan(i, tuple(s)) for i, s in enumerate(s for s in shards if s)]


def shard_key(view: ViewConfig, segments: tuple[SegmentPlan, ...], fingerprints: dict[str, str]) -> str:
    """The content key of a shard holding ``segments`` of episodes with these content fingerprints."""
    body = {"format": SHARD_FORMAT, "view": view.content_identity(),
            "segments": [[s.episode_id, s.segment, s.step_start, s.num_steps, fingerprints[s.episode_id]]
                         for s in segments]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_keys(plans: list[ShardPlan], view: ViewConfig, fingerprints: dict[str, str]) -> list[ShardPlan]:
    return [replace(p, key=shard_key(view, p.segments, fingerprints)) for p in plans]
