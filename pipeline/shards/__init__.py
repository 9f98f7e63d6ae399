"""WebDataset shards of a version: view config, shard plan, writer, index, view manifest."""

from pipeline.shards.index import SampleEntry, ShardIndex, ShardSummary
from pipeline.shards.manifest import ViewManifest, load_view, write_view_manifest
from pipeline.shards.plan import SegmentPlan, ShardPlan, plan_shards
from pipeline.shards.view import ViewConfig
from pipeline.shards.writer import sample_key, write_shard

__all__ = ["SampleEntry", "SegmentPlan", "ShardIndex", "ShardPlan", "ShardSummary", "ViewConfig", "ViewManifest",
           "load_view", "plan_shards", "sample_key", "write_shard", "write_view_manifest"]
