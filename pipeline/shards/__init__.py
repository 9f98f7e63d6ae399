"""WebDataset shards of a version: view config, shard plan, writer, index, view manifest, reuse."""

from pipeline.shards.index import SampleEntry, ShardIndex, ShardSummary
from pipeline.shards.manifest import ViewManifest, load_view, write_view_manifest
from pipeline.shards.plan import SegmentPlan, ShardPlan, plan_shards, shard_key
from pipeline.shards.reuse import ViewPlan, find_base_view, plan_view
from pipeline.shards.view import ViewConfig
from pipeline.shards.writer import episode_fingerprint, sample_key, shard_paths, write_shard

__all__ = ["SampleEntry", "SegmentPlan", "ShardIndex", "ShardPlan", "ShardSummary", "ViewConfig", "ViewManifest",
           "ViewPlan", "episode_fingerprint", "find_base_view", "load_view", "plan_shards", "plan_view", "sample_key",
           "shard_key", "shard_paths", "write_shard", "write_view_manifest"]
