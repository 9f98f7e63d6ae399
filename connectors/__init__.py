"""Source connectors and their registry. Each connector implements ``connectors.base.Connector``."""

from __future__ import annotations

from connectors.base import Connector, DatasetError, Discovery, EpisodeRef, SourceError
from connectors.fsutil import open_root
from connectors.hdf5 import AlohaHdf5Connector, RobomimicHdf5Connector
from connectors.lerobot import LeRobotConnector
from connectors.rlds import RldsConnector
from connectors.ros import RosConnector
from connectors.video_folder import VideoFolderConnector
from connectors.worldmodel import DreamGenConnector, WorldModelConnector
from connectors.zarr_replay import ZarrReplayConnector

# Detection tries these in order: specific layouts first (DreamGen datasets are LeRobot datasets, so
# DreamGen comes before LeRobot). Robot clip folders (sidecars with states/actions) are claimed by the
# video-folder connector, which declines generation outputs; those fall to the world-model connector.
_REGISTRY: dict[str, Connector] = {c.name: c for c in (
    DreamGenConnector(), LeRobotConnector(), RldsConnector(), ZarrReplayConnector(), AlohaHdf5Connector(),
    RobomimicHdf5Connector(), RosConnector(), VideoFolderConnector(), WorldModelConnector())}


def formats() -> dict[str, str]:
    """Supported format names and what each reads."""
    return {name: c.description for name, c in _REGISTRY.items()}


def get_connector(name: str) -> Connector:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; supported: {', '.join(sorted(_REGISTRY))}") from None


def detect_format(uri: str, storage_options: dict | None = None) -> str:
    """The first registered format whose ``detect`` accepts ``uri``.

    When none does, the error names the subfolders that some format recognizes: a download folder
    holding one dataset (a TFDS data_dir, an archive's top folder) is the usual near miss.
    """
    name = _detect(uri, storage_options)
    if name is not None:
        return name
    hints = [f"{child} ({found})" for child in _subfolders(uri, storage_options)
             if (found := _detect(child, storage_options)) is not None]
    hint = f"; datasets found one level down: {', '.join(hints)}" if hints else "; pass --format to choose one"
    raise DatasetError(uri, f"no connector recognizes this source (known formats: {', '.join(sorted(_REGISTRY))})"
                       + hint)


def _detect(uri: str, storage_options: dict | None) -> str | None:
    for name, connector in _REGISTRY.items():
        try:
            if connector.detect(uri, storage_options):
                return name
        except (OSError, ValueError, SourceError):
            continue
    return None


def _subfolders(uri: str, storage_options: dict | None, limit: int = 32) -> list[str]:
    """Up to ``limit`` direct subfolders of ``uri`` (none when it is not a readable folder)."""
    try:
        fs, root = open_root(uri, storage_options)
        entries = fs.ls(root, detail=True)
    except (OSError, ValueError):
        return []
    folders = sorted(e["name"] for e in entries if e.get("type") == "directory")[:limit]
    prefix = uri.rstrip("/")
    return [f"{prefix}/{f.rstrip('/').rsplit('/', 1)[-1]}" for f in folders]


__all__ = ["Connector", "DatasetError", "Discovery", "EpisodeRef", "SourceError", "detect_format", "formats",
           "get_connector"]
