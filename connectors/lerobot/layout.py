"""LeRobot dataset layouts v2.0, v2.1 and v3.0: metadata, episode table and file paths.

Read without importing LeRobot. Everything here comes from untrusted files: path templates are
filled by a restricted formatter and every resulting path must stay inside the dataset root.
"""

from __future__ import annotations

import json
import string
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import fsspec
import pyarrow.parquet as pq

from connectors.base import DatasetError, SourceError
from connectors.fsutil import join_inside, open_root, read_json, read_jsonl
from schemas import parse_rate

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")


@dataclass
class VideoSpan:
    """Where one camera of one episode lives: a file and, for v3.0, a time range inside it."""

    path: str
    from_timestamp: float | None = None
    to_timestamp: float | None = None


@dataclass
class EpisodeEntry:
    index: int
    length: int
    tasks: list[str]
    data_path: str
    videos: dict[str, VideoSpan] = field(default_factory=dict)


@dataclass
class Layout:
    """A LeRobot dataset's metadata, resolved to absolute paths inside the root."""

    uri: str
    fs: fsspec.AbstractFileSystem
    root: str
    version: str
    info: dict[str, Any]
    fps: Fraction
    features: dict[str, dict]
    tasks: dict[int, str]
    episodes: dict[int, EpisodeEntry]
    splits: dict[str, tuple[int, int]]

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "video"]

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "image"]

    def split_of(self, episode_index: int) -> str:
        for name, (start, stop) in self.splits.items():
            if start <= episode_index < stop:
                return {"validation": "val", "valid": "val", "eval": "val"}.get(name, name)
        return "train"

    def feature_shape(self, key: str) -> list[int]:
        return list(self.features.get(key, {}).get("shape") or [])

    def video_info(self, key: str) -> dict:
        feature = self.features.get(key, {})
        return feature.get("info") or feature.get("video_info") or {}


def format_template(template: str, **values: int | str) -> str:
    """``str.format`` restricted to plain named fields: no attribute or index access."""
    out = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if name not in values or conversion or not all(ch.isalnum() or ch == "_" for ch in name):
            raise DatasetError(template, f"unsupported field {{{name}}} in path template")
        if spec and not all(ch.isdigit() or ch in "d0" for ch in spec):
            raise DatasetError(template, f"unsupported format spec {spec!r} in path template")
        out.append(format(values[name], spec))
    return "".join(out)


_cache: OrderedDict[str, Layout] = OrderedDict()
_cache_lock = threading.Lock()


def load_layout(uri: str, storage_options: dict | None = None) -> Layout:
    """The layout at ``uri``, cached per process (a worker reads many episodes of one dataset).

    The cache key includes a stamp of the ``meta/`` files (one listing), so a dataset that grew
    since (new episodes appended at the source) is read again, also by long-lived workers.
    """
    key = json.dumps([uri, storage_options or {}, _meta_stamp(uri, storage_options)], sort_keys=True, default=str)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    layout = _load_layout(uri, storage_options)
    with _cache_lock:
        _cache[key] = layout
        while len(_cache) > 8:
            _cache.popitem(last=False)
    return layout


def _meta_stamp(uri: str, storage_options: dict | None) -> list:
    """Names, sizes and modification stamps of the files under ``meta/``."""
    fs, root = open_root(uri, storage_options)
    meta = f"{root}/meta"
    fs.invalidate_cache(meta)
    try:
        files = fs.find(meta, detail=True)
    except (FileNotFoundError, OSError):
        return []
    return sorted([path, info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("ETag") or "")]
                  for path, info in files.items())


def _load_layout(uri: str, storage_options: dict | None) -> Layout:
    fs, root = open_root(uri, storage_options)
    info_path = f"{root}/meta/info.json"
    if not fs.exists(info_path):
        raise DatasetError(info_path, "no meta/info.json: not a LeRobot dataset (or the wrong folder)")
    info = read_json(fs, info_path)
    if not isinstance(info, dict):
        raise DatasetError(info_path, "meta/info.json is not a JSON object")
    version = str(info.get("codebase_version", ""))
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(info_path, f"codebase_version {version!r} is not one of {SUPPORTED_VERSIONS}")
    try:
        fps = parse_rate(info["fps"])
    except (KeyError, ValueError) as exc:
        raise DatasetError(info_path, f"bad or missing fps: {exc}") from exc
    features = info.get("features")
    if not isinstance(features, dict):
        raise DatasetError(info_path, "missing 'features'")
    if version == "v3.0":
        tasks, episodes = _v3_tables(fs, root, info)
    else:
        tasks, episodes = _v2_tables(fs, root, info, features)
    return Layout(uri=uri, fs=fs, root=root, version=version, info=info, fps=fps, features=features,
                  tasks=tasks, episodes=episodes, splits=_parse_splits(info.get("splits") or {}))


def _parse_splits(splits: dict) -> dict[str, tuple[int, int]]:
    parsed = {}
    for name, span in splits.items():
        try:
            start, stop = (int(x) for x in str(span).split(":"))
        except ValueError:
            continue
        parsed[str(name)] = (start, stop)
    return parsed


def _v2_tables(fs, root: str, info: dict, features: dict) -> tuple[dict[int, str], dict[int, EpisodeEntry]]:
    tasks = {}
    for row in read_jsonl(fs, f"{root}/meta/tasks.jsonl"):
        tasks[int(row["task_index"])] = str(row["task"])
    chunk_size = int(info.get("chunks_size") or 1000)
    data_template = str(info.get("data_path") or "")
    video_template = str(info.get("video_path") or "")
    video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
    episodes = {}
    for row in read_jsonl(fs, f"{root}/meta/episodes.jsonl"):
        index = int(row["episode_index"])
        chunk = index // chunk_size
        entry = EpisodeEntry(
            index=index,
            length=int(row["length"]),
            tasks=[str(t) for t in row.get("tasks") or []],
            data_path=join_inside(root, format_template(data_template, episode_chunk=chunk,
                                                        episode_index=index)),
        )
        for key in video_keys:
            rel = format_template(video_template, episode_chunk=chunk, video_key=key, episode_index=index)
            entry.videos[key] = VideoSpan(join_inside(root, rel))
        episodes[index] = entry
    return tasks, episodes


def _v3_tables(fs, root: str, info: dict) -> tuple[dict[int, str], dict[int, EpisodeEntry]]:
    tasks_path = f"{root}/meta/tasks.parquet"
    try:
        table = pq.read_table(tasks_path, filesystem=fs)
    except (OSError, FileNotFoundError) as exc:
        raise DatasetError(tasks_path, f"cannot read tasks: {exc}") from exc
    text_column = "task" if "task" in table.column_names else next(
        (c for c in table.column_names if c != "task_index"), None)
    if text_column is None:
        raise DatasetError(tasks_path, "no task text column")
    tasks = dict(zip(table.column("task_index").to_pylist(), table.column(text_column).to_pylist(), strict=True))
    data_template = str(info.get("data_path") or "")
    video_template = str(info.get("video_path") or "")
    episodes = {}
    files = sorted(fs.glob(f"{root}/meta/episodes/*/*.parquet"))
    if not files:
        raise DatasetError(f"{root}/meta/episodes", "no episode metadata parquet files")
    for path in files:
        schema = pq.read_schema(path, filesystem=fs)
        wanted = [c for c in schema.names if not c.startswith("stats/")]
        for row in pq.read_table(path, filesystem=fs, columns=wanted).to_pylist():
            entry = _v3_entry(root, row, data_template, video_template, path)
            episodes[entry.index] = entry
    return tasks, episodes


def _v3_entry(root: str, row: dict, data_template: str, video_template: str, source: str) -> EpisodeEntry:
    try:
        index = int(row["episode_index"])
        data_rel = format_template(data_template, chunk_index=int(row["data/chunk_index"]),
                                   file_index=int(row["data/file_index"]))
    except (KeyError, TypeError) as exc:
        raise SourceError(source, f"episode row lacks {exc}", field="meta/episodes") from exc
    entry = EpisodeEntry(index=index, length=int(row["length"]), tasks=list(row.get("tasks") or []),
                         data_path=join_inside(root, data_rel))
    prefixes = {c.split("/")[1] for c in row if c.startswith("videos/") and c.endswith("/chunk_index")}
    for key in sorted(prefixes):
        base = f"videos/{key}/"
        if row.get(base + "chunk_index") is None:
            continue
        rel = format_template(video_template, video_key=key, chunk_index=int(row[base + "chunk_index"]),
                              file_index=int(row[base + "file_index"]))
        entry.videos[key] = VideoSpan(join_inside(root, rel), float(row[base + "from_timestamp"]),
                                      float(row[base + "to_timestamp"]))
    return entry
