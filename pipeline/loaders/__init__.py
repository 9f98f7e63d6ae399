"""Training-side readers. They read shards and manifests only: never the store writer or connectors."""

from pipeline.loaders.normalize import Normalizer
from pipeline.loaders.order import EpochOrder, OrderConfig
from pipeline.loaders.source import ViewSource
from pipeline.loaders.vla import VLAConfig, VLADataset, make_loader

__all__ = ["EpochOrder", "Normalizer", "OrderConfig", "VLAConfig", "VLADataset", "ViewSource", "make_loader"]
