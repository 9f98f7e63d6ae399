"""LeRobot v2.0 / v2.1 / v3.0 connector (local paths and fsspec URIs; LeRobot is not imported).

Option ``default_codebase_version`` names the layout of a dataset whose info.json names none
(GR00T-Dreams output). Mapping (see docs/formats.md): ``observation.state`` -> state, ``action`` -> action (source dtype
kept), ``frame_index`` (or row order when absent, as in GR00T's v2.0 data) -> step and frame
index, ``timestamp`` -> ``timestamp_ns`` as the source has it (offset included; a drift from the
frame clock beyond a quarter period is an error), each camera's ``frame.<camera>`` -> the frame
nearest ``from_timestamp + timestamp`` within 1e-4 s as LeRobot and GR00T pair them (-1 when none),
``task_index`` or GR00T's ``annotation.human.action.task_description`` -> per-step instruction,
every ``annotation.*`` column -> an ``extra.*`` column of the same name indexing the episode's task
list, ``next.reward`` -> reward, ``next.done`` -> is_terminal, other numeric columns -> ``extra.*``;
GR00T's ``meta/modality.json`` and the source column dtypes -> catalog extras for exports.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from connectors.base import DatasetError, Discovery, EpisodeRef
from connectors.fsutil import check_resolves_inside, file_sha256, open_root
from connectors.lerobot.layout import Layout, load_layout
from connectors.lerobot.reader import read_episode
from schemas import Episode, safe_name

__all__ = ["LeRobotConnector"]


class LeRobotConnector:
    name: ClassVar[str] = "lerobot"
    description: ClassVar[str] = "LeRobot datasets v2.0, v2.1 and v3.0 (parquet + mp4 + meta/info.json)"

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        fs, root = open_root(uri, storage_options)
        return fs.exists(f"{root}/meta/info.json")

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        layout = load_layout(uri, options.get("storage_options"), options.get("default_codebase_version"))
        dataset = options.get("dataset") or safe_name(uri.rstrip("/").rsplit("/", 1)[-1])
        existing = _existing_files(layout)
        skipped, warnings = _absent_cameras(layout, existing)
        if skipped:
            options["skip_cameras"] = skipped
        refs, missing = [], []
        for index in sorted(layout.episodes):
            entry = layout.episodes[index]
            if entry.data_path not in existing:
                missing.append((str(index), f"data file {entry.data_path} does not exist"))
                continue
            refs.append(EpisodeRef(format=self.name, dataset=dataset, uri=uri, key=str(index), options=options))
        if missing:
            warnings.append(f"{len(missing)} of {len(layout.episodes)} episodes listed in the metadata "
                            f"have no data file (first: episode {missing[0][0]})")
        warnings.extend(reason for _, reason in layout.duplicates)
        return Discovery(format=self.name, dataset=dataset, uri=uri, refs=refs, missing=missing,
                         warnings=warnings, duplicates=list(layout.duplicates))

    def checksum(self, ref: EpisodeRef) -> str:
        layout = load_layout(ref.uri, ref.options.get("storage_options"), ref.options.get("default_codebase_version"))
        entry = layout.episodes[int(ref.key)]
        digest = hashlib.sha256()
        identity = {"version": layout.version, "fps": str(layout.fps), "features": layout.features,
                    "tasks": {str(k): layout.tasks[k] for k in sorted(layout.tasks)},
                    "modality": layout.modality, "episode": ref.key, "dataset": ref.dataset,
                    "options": {k: v for k, v in ref.options.items() if k != "storage_options"}}
        digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
        for path in [entry.data_path, *(span.path for span in entry.videos.values())]:
            check_resolves_inside(layout.root, path, ref.key)
            if layout.fs.exists(path):
                digest.update(f"{path}:{file_sha256(layout.fs, path)}".encode())
        return digest.hexdigest()

    def read(self, ref: EpisodeRef) -> Episode:
        return read_episode(load_layout(ref.uri, ref.options.get("storage_options"),
                                        ref.options.get("default_codebase_version")), ref)


def _existing_files(layout: Layout) -> set[str]:
    """One listing of the data and video trees instead of one existence check per file."""
    found: set[str] = set()
    for sub in ("data", "videos"):
        base = f"{layout.root}/{sub}"
        if layout.fs.exists(base):
            found.update(layout.fs.find(base))
    return found


def _absent_cameras(layout: Layout, existing: set[str]) -> tuple[list[str], list[str]]:
    """Cameras declared in info.json whose video exists for no episode: skipped, and said so."""
    skipped, warnings = [], []
    for key in layout.video_keys:
        if not any(entry.videos.get(key) and entry.videos[key].path in existing
                   for entry in layout.episodes.values()):
            skipped.append(key)
            warnings.append(f"camera {key!r} is declared in meta/info.json but no episode has its video: "
                            "skipped")
    if layout.episodes and not layout.video_keys and not layout.image_keys:
        warnings.append("no camera features: episodes are ingested without video")
    if not layout.episodes:
        raise DatasetError(f"{layout.root}/meta", "the metadata lists no episodes")
    return skipped, warnings
