"""Incremental view planning: a new version's view keeps every shard of an earlier view it can.

The base view is the nearest view with the same config among the version and its ancestors. Each
base shard is kept when at least one of its live episodes is still live in the new version with
the same content fingerprint; its other episodes (deleted, or replaced by a changed copy) become
``excluded`` in the new view's entry for that shard, and loaders skip their samples. Shards are
never rewritten. Episodes that no kept shard holds (new ones, changed ones) are planned into new
shards as usual. The new view therefore re-decodes nothing that did not change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.shards.index import ShardIndex, ShardSummary
from pipeline.shards.manifest import ViewManifest, load_view, view_dir
from pipeline.shards.plan import ShardPlan, plan_shards, with_keys
from pipeline.shards.view import ViewConfig
from pipeline.shards.writer import episode_fingerprint, summarize, view_cameras
from pipeline.store.objects import ObjectStore
from schemas import EpisodeMeta


@dataclass
class ViewPlan:
    kept: list[ShardSummary]  # shards of the base view, with their exclusions brought up to date
    new: list[ShardPlan]  # shards to write (or to find already written under their key)
    base_view: str = ""

    @property
    def num_shards(self) -> int:
        return len(self.kept) + len(self.new)


def find_base_view(objects: ObjectStore, version_id: str, parent_of: Callable[[str], str | None],
                   view: ViewConfig, max_depth: int = 64) -> ViewManifest | None:
    """The view of this config for the version itself or its nearest ancestor that has one."""
    current: str | None = version_id
    for _ in range(max_depth):
        if current is None:
            return None
        view_id = view.view_id(current)
        if objects.exists(f"{view_dir(view_id)}/view.json"):
            return load_view(objects, view_id)
        current = parent_of(current)
    return None


def plan_view(objects: ObjectStore, view: ViewConfig, metas: list[EpisodeMeta], base: ViewManifest | None = None,
              base_metas: list[EpisodeMeta] | None = None) -> ViewPlan:
    """Keep what ``base`` (a view of an earlier version, whose live episodes are ``base_metas``) can give."""
    fingerprints = {m.episode_id: episode_fingerprint(m, view) for m in metas}
    kept: list[ShardSummary] = []
    covered: set[str] = set()
    if base is not None:
        before = {m.episode_id: episode_fingerprint(m, view) for m in base_metas or []}
        present = [_present(objects, shard) for shard in base.shards]
        lost = {e for shard, ok in zip(base.shards, present, strict=True) if not ok for e in shard.episodes}
        for shard, ok in zip(base.shards, present, strict=True):
            live = [e for e in shard.episodes
                    if e in fingerprints and before.get(e) == fingerprints[e] and e not in lost]
            if not live or not ok:
                continue
            gone = set(shard.episodes) - set(live)
            kept.append(_exclude(objects, shard, gone) if gone else shard)
            covered.update(live)
    todo = [m for m in metas if m.episode_id not in covered]
    sizing = view if base is None else _single_min(view)
    plans = plan_shards([(m.episode_id, m.num_steps, len(view_cameras(m, view))) for m in todo], sizing)
    return ViewPlan(kept, with_keys(plans, view, fingerprints), base.view_id if base is not None else "")


def _single_min(view: ViewConfig) -> ViewConfig:
    """An increment is packed by target size alone: min_shards applies to a from-scratch plan."""
    data = view.identity() | {"decoder": view.decoder, "min_shards": 1}
    return ViewConfig.from_json(data)


def _present(objects: ObjectStore, shard: ShardSummary) -> bool:
    return objects.exists(shard.tar_path) and objects.exists(shard.index_path)


def _exclude(objects: ObjectStore, shard: ShardSummary, gone: set[str]) -> ShardSummary:
    """The shard's entry with more episodes excluded; live counts come from its index."""
    data = objects.read_bytes(shard.index_path)
    index = ShardIndex.from_json(json.loads(data))
    return summarize(index, shard.index_path, hashlib.sha256(data).hexdigest(), set(shard.excluded) | gone)
