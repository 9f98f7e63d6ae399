"""ROS connector: MCAP files (ROS 2 CDR and JSON encodings), rosbag2 folders (mcap or sqlite3 storage)
and ROS 1 bags, resampled onto a control rate by a mapping config (``connectors.ros.config``).

``uri`` is one bag or a folder holding bags (searched recursively; a rosbag2 folder is one bag).
Episodes split by file (key: the bag's path relative to the folder), by a marker topic or by time
gaps (key: ``<bag>#<n>``, with the episode's log-time window carried in the ref).
Options: ``mapping`` (a dict or a YAML/JSON file), ``embodiment``, ``kind``, ``split``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any, ClassVar

import fsspec

from connectors.base import DatasetError, Discovery, EpisodeRef, SourceError
from connectors.common import dataset_name, natural_key
from connectors.fsutil import file_sha256, join_inside, open_root
from connectors.ros.bags import MCAP_SUFFIX, ROS1_SUFFIX, Bag, is_bag_path, open_bag
from connectors.ros.config import Mapping, auto_mapping, load_mapping_doc, parse_mapping
from connectors.ros.fields import FieldError, get_path
from connectors.ros.reader import read_ros_episode
from schemas import NS_PER_S, Episode

__all__ = ["RosConnector"]


class RosConnector:
    name: ClassVar[str] = "ros"
    description: ClassVar[str] = ("ROS 2 MCAP (CDR and JSON), rosbag2 folders (mcap / sqlite3) and ROS 1 bags, "
                                  "resampled onto a control rate by a mapping config")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        fs, root = open_root(uri, storage_options)
        return bool(_bags(fs, root, limit=1))

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        doc = load_mapping_doc(options.get("mapping"))
        if doc is not None:
            options["mapping"] = doc
            parse_mapping(doc)  # fail early, once, on a bad config
        fs, root = open_root(uri, options.get("storage_options"))
        bags = _bags(fs, root)
        if not bags:
            raise DatasetError(uri, "no .mcap, .bag or rosbag2 folder (metadata.yaml) found")
        folder = root if fs.isdir(root) else root.rsplit("/", 1)[0]
        dataset = dataset_name(uri, options)
        refs, missing, warnings = [], [], []
        for path in bags:
            relative = path[len(folder) + 1:] if path != folder else path.rsplit("/", 1)[-1]
            by_file = doc is None or parse_mapping(doc).split.by == "file"
            try:
                mapping = _mapping(doc, open_bag(fs, path, relative), path)
                windows = None if by_file else _windows(open_bag(fs, path, relative), mapping)
            except SourceError as exc:  # an unreadable bag becomes one episode whose read reports why
                refs.append(EpisodeRef(format=self.name, dataset=dataset, uri=uri,
                                       key=relative if by_file else f"{relative}#0",
                                       options={**options, "window_error": exc.problem}))
                continue
            if windows is None:
                refs.append(EpisodeRef(format=self.name, dataset=dataset, uri=uri, key=relative, options=options))
                continue
            if not windows:
                missing.append((relative, f"no episode boundaries found by split '{mapping.split.by}'"))
            for number, window in enumerate(windows):
                refs.append(EpisodeRef(format=self.name, dataset=dataset, uri=uri, key=f"{relative}#{number}",
                                       options={**options, "window": list(window)}))
        if doc is None:
            warnings.append("no mapping option: topics mapped by message type (see docs/formats.md)")
        return Discovery(format=self.name, dataset=dataset, uri=uri, refs=refs, missing=missing, warnings=warnings)

    def checksum(self, ref: EpisodeRef) -> str:
        fs, path = _bag_path(ref)
        digest = hashlib.sha256()
        identity = {"episode": ref.key, "dataset": ref.dataset,
                    "options": {k: v for k, v in ref.options.items() if k != "storage_options"}}
        digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
        files = sorted(fs.find(path)) if fs.isdir(path) else [path]
        for file in files:
            try:
                digest.update(f"{file[len(path):]}:{file_sha256(fs, file)}".encode())
            except FileNotFoundError as exc:
                raise SourceError(file, "file does not exist", ref.key, "bag") from exc
        return digest.hexdigest()

    def read(self, ref: EpisodeRef) -> Episode:
        fs, path = _bag_path(ref)
        if ref.options.get("window_error"):
            raise SourceError(path, ref.options["window_error"], ref.key, "bag")
        bag = open_bag(fs, path, ref.key)
        window = ref.options.get("window")
        mapping = _mapping(load_mapping_doc(ref.options.get("mapping")), bag, path)
        return read_ros_episode(bag, mapping, ref, tuple(window) if window else None)


def _mapping(doc: dict | None, bag: Bag, path: str) -> Mapping:
    if doc is not None:
        return parse_mapping(doc, "mapping")
    mapping = auto_mapping(bag.topics())
    if not mapping.state and not mapping.cameras:
        raise SourceError(path, "no mapping option and no JointState or image topic to guess one from", bag.episode,
                          "mapping")
    return mapping


def _bag_path(ref: EpisodeRef) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = open_root(ref.uri, ref.options.get("storage_options"))
    relative = ref.key.split("#", 1)[0]
    if not fs.isdir(root):
        return fs, root
    return fs, join_inside(root, relative)


def _bags(fs: fsspec.AbstractFileSystem, root: str, limit: int | None = None) -> list[str]:
    """Bags at ``root``: the root itself, or every bag below it (rosbag2 folders are not entered)."""
    if not fs.exists(root):
        return []
    if is_bag_path(fs, root):
        return [root]
    if not fs.isdir(root):
        return []
    found: list[str] = []
    rosbag2 = sorted(p.rsplit("/", 1)[0] for p in fs.find(root) if p.endswith("/metadata.yaml"))
    for path in sorted(fs.find(root), key=natural_key):
        if any(path.startswith(f"{d}/") for d in rosbag2):
            continue
        if path.endswith((MCAP_SUFFIX, ROS1_SUFFIX)):
            found.append(path)
    found = sorted(found + rosbag2, key=natural_key)
    return found[:limit] if limit else found


def _windows(bag: Bag, mapping: Mapping) -> list[tuple[int, int]]:
    """Log-time windows of the episodes in one bag, split by a marker topic or by silences."""
    split = mapping.split
    if split.by == "gap":
        topic = split.topic or mapping.rate_topic or next(iter([*mapping.state, *mapping.action]), None)
        topic = topic if isinstance(topic, str) else topic.topic if topic else ""
        if not topic:
            raise SourceError(bag.path, "split by gap needs split.topic, rate_topic or a state topic", field="split")
        times = [t for _, t, _ in bag.messages([topic], decode=False)]
        if not times:
            raise SourceError(bag.path, "no messages on the split topic", field=topic)
        gap = round(split.gap_s * NS_PER_S)
        # Boundaries sit in the middle of each silence, so every message of the bag lands in one episode.
        windows, first = [], 0
        for before, after in itertools.pairwise(times):
            if after - before > gap:
                middle = (before + after) // 2
                windows.append((first, middle))
                first = middle + 1
        windows.append((first, 2**63 - 1))
        return windows
    marks: list[tuple[int, bool]] = []
    for _, log_time, message in bag.messages([split.topic], decode=bool(split.field)):
        starts = True
        if split.field:
            try:
                starts = bool(get_path(message, split.field))
            except FieldError as exc:
                raise SourceError(bag.path, f"split marker: {exc}", field=split.topic) from exc
        marks.append((log_time, starts))
    windows, opened = [], None
    for log_time, starts in marks:
        if opened is not None:
            windows.append((opened, log_time - 1))
            opened = None
        if starts:
            opened = log_time
    if opened is not None:
        windows.append((opened, 2**63 - 1))
    return windows
