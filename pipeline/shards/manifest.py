"""The view manifest (``views/<view_id>/view.json``): the one file a loader reads to start.

It names the version, the view config, the stats object and every shard (content-addressed, under
``shards/``) with its live sample and step counts and the episodes it must skip, so the epoch
length is exact and no listing is needed. It is written last, atomically: a view without it is
incomplete and a re-run of the shard job finishes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline.shards.index import VIEW_FORMAT, ShardSummary
from pipeline.shards.view import ViewConfig
from pipeline.store.objects import ObjectRef, ObjectStore


@dataclass
class ViewManifest:
    view_id: str
    version_id: str
    config: ViewConfig
    shards: list[ShardSummary]
    stats: ObjectRef | None
    decoder: str
    deleted: list[str]
    cameras: list[str]  # every camera any sample may carry, in view order
    samples_path: str = ""  # the sample table (pipeline.shards.table), relative to the store root
    base_view: str = ""  # the view whose shards this one was planned on (reused where unchanged)

    @property
    def num_steps(self) -> int:
        return sum(s.num_steps for s in self.shards)

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    def to_json(self) -> dict:
        return {"format": VIEW_FORMAT, "view_id": self.view_id, "version_id": self.version_id,
                "config": self.config.identity(), "decoder": self.decoder,
                "stats": self.stats.to_json() if self.stats else None, "deleted": sorted(self.deleted),
                "cameras": list(self.cameras), "samples_path": self.samples_path, "base_view": self.base_view,
                "shards": [s.to_json() for s in self.shards],
                "totals": {"shards": len(self.shards), "samples": self.num_samples, "steps": self.num_steps,
                           "bytes": sum(s.tar_bytes for s in self.shards)}}

    @staticmethod
    def from_json(data: dict) -> ViewManifest:
        if data.get("format") != VIEW_FORMAT:
            raise ValueError(f"not a view manifest (format {data.get('format')!r})")
        return ViewManifest(str(data["view_id"]), str(data["version_id"]), ViewConfig.from_json(data["config"]),
                            [ShardSummary.from_json(s) for s in data["shards"]],
                            ObjectRef.from_json(data["stats"]) if data.get("stats") else None,
                            str(data.get("decoder", "")), list(data.get("deleted", [])),
                            list(data.get("cameras", [])), str(data.get("samples_path", "")),
                            str(data.get("base_view", "")))


def view_dir(view_id: str) -> str:
    return f"views/{view_id}"


def write_view_manifest(objects: ObjectStore, manifest: ViewManifest) -> str:
    path = f"{view_dir(manifest.view_id)}/view.json"
    objects.write_atomic(path, json.dumps(manifest.to_json(), sort_keys=True, indent=1).encode())
    return path


def load_view(objects: ObjectStore, view_id: str) -> ViewManifest:
    path = f"{view_dir(view_id)}/view.json"
    if not objects.exists(path):
        raise FileNotFoundError(f"no view {view_id} in {objects.root} (run the shard job)")
    return ViewManifest.from_json(json.loads(objects.read_bytes(path)))
