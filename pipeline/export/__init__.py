"""Exports of versions to other formats (LeRobot v2.1 / v3.0, Cosmos action-conditioned). Writers only: readers
are connectors."""

from pipeline.export.cosmos import LAYOUT as COSMOS_LAYOUT
from pipeline.export.cosmos import CosmosExportConfig, export_cosmos
from pipeline.export.lerobot import LAYOUTS, ExportConfig, ExportReport, check_output, export_lerobot
from pipeline.export.video import ExportError

__all__ = ["COSMOS_LAYOUT", "LAYOUTS", "CosmosExportConfig", "ExportConfig", "ExportError", "ExportReport",
           "check_output", "export_cosmos", "export_lerobot"]
