"""Exports of versions to other formats (LeRobot v2.1 / v3.0). Writers only: readers are connectors."""

from pipeline.export.lerobot import LAYOUTS, ExportConfig, ExportReport, check_output, export_lerobot
from pipeline.export.video import ExportError

__all__ = ["LAYOUTS", "ExportConfig", "ExportError", "ExportReport", "check_output", "export_lerobot"]
