"""Video-folder connector: one video per camera per episode plus a JSON, CSV or Parquet sidecar.

Covers the public robot clip layouts (``annotation/<split>/<n>.json`` naming ``videos/<split>/<n>/
rgb.mp4`` relative to the dataset root, as in Video Prediction Policy and IRASim) and plain
folders (``<episode>.json`` beside ``<episode>.mp4`` / ``<episode>_<camera>.mp4`` /
``<episode>/<camera>.mp4``). The episode key is the sidecar path relative to the root.
Options: ``fps``, ``state_key``, ``action_key``, ``timestamp_key``, ``timestamp_unit``,
``instruction_key``, ``embodiment``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any, ClassVar

from connectors.base import DatasetError, Discovery, EpisodeRef, SourceError
from connectors.common import dataset_name, natural_key, split_name
from connectors.fsutil import file_sha256, join_inside, open_root
from connectors.video_folder.layout import VIDEO_SUFFIXES, referenced_videos
from connectors.video_folder.reader import read_video_episode
from connectors.video_folder.sidecar import SIDECAR_SUFFIXES, load_sidecar
from schemas import Episode

__all__ = ["VideoFolderConnector"]

MAX_FILES = 2_000_000
_DETECT_SIDECARS = 50


class VideoFolderConnector:
    name: ClassVar[str] = "video_folder"
    description: ClassVar[str] = ("Folders of videos (one per camera per episode) with JSON / CSV / Parquet "
                                  "sidecars of timestamps, states, actions and instructions")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        fs, root = open_root(uri, storage_options)
        if not fs.isdir(root):
            return False
        files = _listing(fs, root)
        if not any(f.lower().endswith(VIDEO_SUFFIXES) for f in files):
            return False
        names = set(files)
        for relative in [f for f in files if f.lower().endswith(SIDECAR_SUFFIXES)][:_DETECT_SIDECARS]:
            try:
                if referenced_videos(load_sidecar(fs, join_inside(root, relative)), fs, root, relative, names):
                    return True
            except SourceError:
                continue
        return False

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        fs, root = open_root(uri, options.get("storage_options"))
        if not fs.isdir(root):
            raise DatasetError(uri, "not a folder")
        files = _listing(fs, root)
        names = set(files)
        dataset = dataset_name(uri, options)
        refs, skipped = [], []
        for relative in sorted((f for f in files if f.lower().endswith(SIDECAR_SUFFIXES)), key=natural_key):
            try:
                videos = referenced_videos(load_sidecar(fs, join_inside(root, relative)), fs, root, relative, names)
            except SourceError:
                videos = None  # unreadable sidecar or dangling video: the read fails and names the problem
            if videos == {}:
                skipped.append(relative)
                continue
            ref_options = {**options, "videos": videos, "npy": _npy_beside(videos or {}, names)}
            ref_options.setdefault("split", _split_from_path(relative))
            refs.append(EpisodeRef(format=self.name, dataset=dataset, uri=uri, key=relative, options=ref_options))
        if not refs:
            raise DatasetError(uri, f"no sidecar (JSON/CSV/Parquet) names or sits beside a video "
                                    f"({len(skipped)} sidecars without videos)")
        warnings = [f"{len(skipped)} JSON/CSV/Parquet files name no video and were not read as episodes "
                    f"(first: {skipped[0]})"] if skipped else []
        return Discovery(format=self.name, dataset=dataset, uri=uri, refs=refs, warnings=warnings)

    def checksum(self, ref: EpisodeRef) -> str:
        fs, root = open_root(ref.uri, ref.options.get("storage_options"))
        videos, npy = _episode_files(fs, root, ref)
        digest = hashlib.sha256()
        identity = {"episode": ref.key, "dataset": ref.dataset,
                    "options": {k: v for k, v in ref.options.items() if k != "storage_options"}}
        digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
        for relative in [ref.key, *sorted(videos.values()), *npy]:
            path = join_inside(root, relative)
            try:
                digest.update(f"{relative}:{file_sha256(fs, path)}".encode())
            except FileNotFoundError as exc:
                raise SourceError(path, "file does not exist", ref.key, relative) from exc
        return digest.hexdigest()

    def read(self, ref: EpisodeRef) -> Episode:
        fs, root = open_root(ref.uri, ref.options.get("storage_options"))
        videos, npy = _episode_files(fs, root, ref)
        return read_video_episode(fs, root, ref, videos, npy)


def _episode_files(fs, root: str, ref: EpisodeRef) -> tuple[dict[str, str], list[str]]:
    videos = ref.options.get("videos")
    if videos:
        return dict(videos), list(ref.options.get("npy") or [])
    names = set(_listing(fs, root))
    videos = referenced_videos(load_sidecar(fs, join_inside(root, ref.key)), fs, root, ref.key, names)
    if not videos:
        raise SourceError(join_inside(root, ref.key), "the sidecar names no video", ref.key, "video_path")
    return videos, _npy_beside(videos, names)


def _listing(fs, root: str) -> list[str]:
    found = []
    for path in fs.find(root):
        found.append(path[len(root) + 1:])
        if len(found) > MAX_FILES:
            raise DatasetError(root, f"more than {MAX_FILES} files: point at a sub-folder")
    return found


def _npy_beside(videos: dict[str, str], names: set[str]) -> list[str]:
    """``.npy`` files in a folder that holds only this episode's videos (so they belong to it)."""
    out = []
    own = set(videos.values())
    for folder in sorted({posixpath.dirname(v) for v in own}):
        if not folder:
            continue
        inside = [n for n in names if posixpath.dirname(n) == folder]
        if {n for n in inside if n.lower().endswith(VIDEO_SUFFIXES)} <= own:
            out += sorted(n for n in inside if n.endswith(".npy"))
    return out


def _split_from_path(relative: str) -> str:
    """``annotation/val/1.json`` -> val: clip sets keep their splits as folder names."""
    for part in relative.split("/")[:-1]:
        if part.lower() in ("train", "training", "val", "valid", "validation", "test", "testing", "eval"):
            return split_name(part)
    return "train"
