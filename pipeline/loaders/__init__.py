"""Training-side readers. They read shards and manifests only: never the store writer or connectors."""

from pipeline.loaders.base import UnitDataset, make_loader
from pipeline.loaders.cache import ShardCache
from pipeline.loaders.mapstyle import EpisodeAwareSampler, VLAMapDataset
from pipeline.loaders.mixture import MixtureDataset, by_kind
from pipeline.loaders.normalize import Normalizer
from pipeline.loaders.order import BatchPlan, EpochOrder, OrderConfig
from pipeline.loaders.resume import ResumableLoader, ResumeError
from pipeline.loaders.source import SampleFilter, ViewSource
from pipeline.loaders.vla import VLAConfig, VLADataset
from pipeline.loaders.wam import WAMConfig, WAMDataset

__all__ = ["BatchPlan", "EpisodeAwareSampler", "EpochOrder", "MixtureDataset", "Normalizer", "OrderConfig",
           "ResumableLoader", "ResumeError", "SampleFilter", "ShardCache", "UnitDataset", "VLAConfig", "VLADataset",
           "VLAMapDataset", "ViewSource", "WAMConfig", "WAMDataset", "by_kind", "make_loader"]
