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

from connectors.base import DatasetError
from connectors.fsutil import check_resolves_inside, join_inside, open_root, read_json, read_jsonl
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
    modality: dict[str, Any] = field(default_factory=dict)  # GR00T's meta/modality.json, when present
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (episode index, why it was dropped)

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
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DatasetError(template, f"malformed path template: {exc}") from exc
    for literal, name, spec, conversion in fields:
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


def load_layout(uri: str, storage_options: dict | None = None, default_version: str | None = None) -> Layout:
    """The layout at ``uri``, cached per process (a worker reads many episodes of one dataset).

    ``default_version`` is the layout assumed when info.json names no ``codebase_version`` (GR00T-Dreams
    writes none); without it such a dataset is refused.

    The cache key includes a stamp of the ``meta/`` files (one listing), so a dataset that grew
    since (new episodes appended at the source) is read again, also by long-lived workers.
    """
    key = json.dumps([uri, storage_options or {}, default_version, _meta_stamp(uri, storage_options)], sort_keys=True,
                     default=str)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    layout = _load_layout(uri, storage_options, default_version)
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


def _load_layout(uri: str, storage_options: dict | None, default_version: str | None = None) -> Layout:
    fs, root = open_root(uri, storage_options)
    info_path = join_inside(root, "meta/info.json", resolve=False)
    if not fs.exists(info_path):
        raise DatasetError(info_path, "no meta/info.json: not a LeRobot dataset (or the wrong folder)")
    check_resolves_inside(root, info_path)
    info = read_json(fs, info_path)
    if not isinstance(info, dict):
        raise DatasetError(info_path, "meta/info.json is not a JSON object")
    version = str(info.get("codebase_version") or default_version or "")
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(info_path, f"codebase_version {version!r} is not one of {SUPPORTED_VERSIONS}")
    try:
        fps = parse_rate(info["fps"])
    except (KeyError, ValueError) as exc:
        raise DatasetError(info_path, f"bad or missing fps: {exc}") from exc
    features = info.get("features")
    if not isinstance(features, dict) or not all(isinstance(f, dict) for f in features.values()):
        raise DatasetError(info_path, "missing 'features' (an object of feature objects)")
    duplicates: list[tuple[str, str]] = []
    if version == "v3.0":
        tasks, episodes = _v3_tables(fs, root, info, duplicates)
    else:
        tasks, episodes = _v2_tables(fs, root, info, features, duplicates)
    return Layout(uri=uri, fs=fs, root=root, version=version, info=info, fps=fps, features=features,
                  tasks=tasks, episodes=episodes, splits=_parse_splits(info.get("splits") or {}),
                  modality=_modality(fs, root), duplicates=duplicates)


def _modality(fs, root: str) -> dict[str, Any]:
    """GR00T's ``meta/modality.json`` (groups of the state/action vectors, video keys, annotations)."""
    path = f"{root}/meta/modality.json"
    if not fs.exists(path):
        return {}
    check_resolves_inside(root, path)
    modality = read_json(fs, path)
    if not isinstance(modality, dict) or not all(isinstance(v, dict) for v in modality.values()):
        raise DatasetError(path, "meta/modality.json must map each modality to an object of groups")
    return modality


def _parse_splits(splits: dict) -> dict[str, tuple[int, int]]:
    parsed = {}
    for name, span in splits.items():
        try:
            start, stop = (int(x) for x in str(span).split(":"))
        except ValueError:
            continue
        parsed[str(name)] = (start, stop)
    return parsed


def _row_int(row: Any, key: str, path: str, number: int) -> int:
    """A required non-negative integer of one metadata row (a bool or ``3.5`` is not an index)."""
    if not isinstance(row, dict):
        raise DatasetError(path, f"line {number}: not a JSON object", field=key)
    value = row.get(key)
    if value is None:
        raise DatasetError(path, f"line {number}: no {key!r}", field=key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DatasetError(path, f"line {number}: {key} {value!r} is not a non-negative integer", field=key)
    return value


def _v2_tables(fs, root: str, info: dict, features: dict,
               duplicates: list[tuple[str, str]]) -> tuple[dict[int, str], dict[int, EpisodeEntry]]:
    tasks = {}
    tasks_path = join_inside(root, "meta/tasks.jsonl")
    for number, row in enumerate(read_jsonl(fs, tasks_path), 1):
        index = _row_int(row, "task_index", tasks_path, number)
        if not isinstance(row.get("task"), str):
            raise DatasetError(tasks_path, f"line {number}: 'task' is not a string", field="task")
        tasks[index] = row["task"]
    chunk_size = int(info.get("chunks_size") or 1000)
    data_template = str(info.get("data_path") or "")
    video_template = str(info.get("video_path") or "")
    video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
    episodes: dict[int, EpisodeEntry] = {}
    episodes_path = join_inside(root, "meta/episodes.jsonl")
    for number, row in enumerate(read_jsonl(fs, episodes_path), 1):
        index = _row_int(row, "episode_index", episodes_path, number)
        length = _row_int(row, "length", episodes_path, number)
        if index in episodes:
            duplicates.append((str(index), f"{episodes_path} line {number} repeats episode_index {index}: "
                               "the first row is kept, this one is ignored"))
            continue
        chunk = index // chunk_size
        entry = EpisodeEntry(
            index=index,
            length=length,
            tasks=[str(t) for t in row.get("tasks") or []],
            data_path=join_inside(root, format_template(data_template, episode_chunk=chunk,
                                                        episode_index=index), resolve=False),
        )
        for key in video_keys:
            rel = format_template(video_template, episode_chunk=chunk, video_key=key, episode_index=index)
            entry.videos[key] = VideoSpan(join_inside(root, rel, resolve=False))
        episodes[index] = entry
    return tasks, episodes


def _v3_tables(fs, root: str, info: dict,
               duplicates: list[tuple[str, str]]) -> tuple[dict[int, str], dict[int, EpisodeEntry]]:
    tasks_path = join_inside(root, "meta/tasks.parquet")
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
            if entry.index in episodes:
                duplicates.append((str(entry.index), f"{path} repeats episode_index {entry.index}: the first row "
                                   "is kept, this one is ignored"))
                continue
            episodes[entry.index] = entry
    return tasks, episodes


def _v3_entry(root: str, row: dict, data_template: str, video_template: str, source: str) -> EpisodeEntry:
    try:
        index = int(row["episode_index"])
        length = int(row["length"])
        data_rel = format_template(data_template, chunk_index=int(row["data/chunk_index"]),
                                   file_index=int(row["data/file_index"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(source, f"episode row lacks or mistypes {exc}", field="meta/episodes") from exc
    entry = EpisodeEntry(index=index, length=length, tasks=list(row.get("tasks") or []),
                         data_path=join_inside(root, data_rel, resolve=False))
    prefixes = {c.split("/")[1] for c in row if c.startswith("videos/") and c.endswith("/chunk_index")}
    for key in sorted(prefixes):
        base = f"videos/{key}/"
        if row.get(base + "chunk_index") is None:
            continue
        rel = format_template(video_template, video_key=key, chunk_index=int(row[base + "chunk_index"]),
                              file_index=int(row[base + "file_index"]))
        entry.videos[key] = VideoSpan(join_inside(root, rel, resolve=False), float(row[base + "from_timestamp"]),
                                      float(row[base + "to_timestamp"]))
    return entry
