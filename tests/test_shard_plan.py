"""Shard planning: whole episodes by target size, and equal runs when min_shards bounds the size."""

from __future__ import annotations

from pipeline.shards import ViewConfig, plan_shards
from pipeline.shards.plan import segments_of


def layout(plans) -> list[list[tuple[str, int, int]]]:
    return [[(s.episode_id, s.segment, s.num_steps) for s in p.segments] for p in plans]


def test_min_shards_cuts_equal_runs_of_segments_in_id_order():
    # 60 steps in 7 segments, 3 shards of 20 steps each: each segment goes where its midpoint falls
    view = ViewConfig(segment_steps=10, min_shards=3)
    plans = plan_shards([("c", 30, 1), ("a", 25, 1), ("b", 5, 1)], view)
    assert layout(plans) == [[("a", 0, 10), ("a", 1, 10)],
                             [("a", 2, 5), ("b", 0, 5), ("c", 0, 10)],
                             [("c", 1, 10), ("c", 2, 10)]]
    assert [p.index for p in plans] == [0, 1, 2]


def test_min_shards_runs_cover_every_segment_once_and_are_within_one_segment_of_an_equal_share():
    episodes = [(f"ep{i:03d}", 150 + (i * 37) % 101, 2) for i in range(24)]
    view = ViewConfig(height=224, width=224, segment_steps=64, min_shards=4)
    plans = plan_shards(episodes, view)
    assert len(plans) == 4
    flat = [s for p in plans for s in p.segments]
    assert flat == [s for e, n, _ in sorted(episodes) for s in segments_of(e, n, 64)]
    total = sum(n for _, n, _ in episodes)
    assert sum(p.num_steps for p in plans) == total
    assert all(abs(p.num_steps - total / 4) <= 64 for p in plans), [p.num_steps for p in plans]


def test_without_min_shards_whole_episodes_fill_shards_up_to_the_target():
    per_step = 224 * 224 * ViewConfig().estimated_bytes_per_pixel + 2048
    view = ViewConfig(segment_steps=10, target_shard_bytes=int(20 * per_step))
    plans = plan_shards([("c", 30, 1), ("a", 25, 1), ("b", 5, 1)], view)
    # a (25 steps) is larger than the target: cut between segments; b joins a's last segment; c is cut too
    assert layout(plans) == [[("a", 0, 10), ("a", 1, 10)], [("a", 2, 5), ("b", 0, 5)],
                             [("c", 0, 10), ("c", 1, 10)], [("c", 2, 10)]]
