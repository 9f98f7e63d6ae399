"""Connectors for world-model generation outputs.

- ``worldmodel``: Cosmos-style output folders (``{name}.mp4`` + ``{name}.json`` / ``{name}.txt``,
  control videos, request specs paired by sample name or an explicit mapping, commanded actions).
- ``dreamgen``: DreamGen-style LeRobot datasets whose actions come from an inverse-dynamics model.

Both produce ``kind = "synthetic"`` episodes with their lineage filled (see docs/synthetic.md).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from connectors.base import DatasetError, Discovery, EpisodeRef
from connectors.worldmodel.dreamgen import DreamGenConnector
from connectors.worldmodel.layout import scan
from connectors.worldmodel.reader import FORMAT, checksum_identity, dataset_name, read_output
from schemas import Episode, safe_name

__all__ = ["DreamGenConnector", "WorldModelConnector"]


class WorldModelConnector:
    name: ClassVar[str] = FORMAT
    description: ClassVar[str] = ("World-model generation outputs: mp4 + Cosmos-style spec/prompt sidecars, request "
                                  "specs, control videos, commanded actions")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        try:
            found = scan(uri, {"storage_options": storage_options, "max_files": 20_000})
        except DatasetError:
            return False
        return bool(found.specs) or any(o.sidecar or o.prompt_file or o.actions for o in found.outputs)

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        found = scan(uri, options)
        dataset = options.get("dataset") or safe_name(dataset_name(uri))
        # Each ref carries only its own output's files: a ref's size does not grow with the folder.
        refs = [EpisodeRef(format=self.name, dataset=dataset, uri=uri, key=o.video,
                           options={**options, "output": o.to_json()}) for o in found.outputs]
        return Discovery(format=self.name, dataset=dataset, uri=uri, refs=refs, warnings=found.warnings)

    def checksum(self, ref: EpisodeRef) -> str:
        return hashlib.sha256(checksum_identity(ref).encode()).hexdigest()

    def read(self, ref: EpisodeRef) -> Episode:
        return read_output(ref)
