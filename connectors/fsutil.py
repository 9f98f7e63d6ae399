"""fsspec helpers for connectors: bounded reads, paths that never escape their root, cached hashes."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
from collections import OrderedDict
from typing import Any

import fsspec

from connectors.base import DatasetError, SourceError

MAX_JSON_BYTES = 64 * 1024 * 1024
# Deeper documents are refused before anything walks them (no metadata format nests past a dozen levels).
MAX_JSON_DEPTH = 64
_HASH_CHUNK = 8 * 1024 * 1024


def open_root(uri: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root path of a dataset URI (local path or any fsspec URL)."""
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, root.rstrip("/") or "/"


def join_inside(root: str, relative: str, resolve: bool = True) -> str:
    """``root/relative``, refusing paths that are absolute, climb out of ``root`` or resolve outside it.

    ``resolve=False`` checks the spelling only: for paths listed up front (a whole dataset's episode
    table), whose resolution is checked when the episode is read, so one bad file quarantines one episode.
    """
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
        raise SourceError(root, f"refusing path {relative!r}: must be relative to the dataset root")
    normal = posixpath.normpath(relative)
    if normal == ".." or normal.startswith("../") or normal == ".":
        raise SourceError(root, f"refusing path {relative!r}: escapes the dataset root")
    path = f"{root}/{normal}"
    if resolve:
        check_resolves_inside(root, path)
    return path


def check_resolves_inside(root: str, path: str, episode: str = "", field: str = "path") -> None:
    """Refuse a local ``path`` whose resolution (every symlink followed) leaves ``root``.

    Lexical checks alone let a symlinked episode file or folder pull any file on the machine into the
    store. Object stores have no symlinks: their paths (no leading slash) are contained by spelling.
    """
    if not root.startswith("/"):
        return
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        raise SourceError(path, f"refusing path: it resolves to {real}, outside the dataset root {real_root} "
                          "(a symlink pointing out of the dataset)", episode, field)


def parse_json(data: bytes | str, path: str, max_depth: int = MAX_JSON_DEPTH, where: str = "") -> Any:
    """Untrusted JSON text to values, nested at most ``max_depth`` levels; every failure is a ``SourceError``.

    ``json.loads`` recurses once per level: a deeply nested document raises ``RecursionError`` (or
    crashes whatever walks it later), which no caller expects from a metadata file.
    """
    prefix = f"{where}: " if where else ""
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"{prefix}invalid JSON: {exc}") from exc
    except RecursionError:
        raise SourceError(path, f"{prefix}JSON nested deeper than {max_depth} levels") from None
    if json_depth(value) > max_depth:
        raise SourceError(path, f"{prefix}JSON nested deeper than {max_depth} levels")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def read_json(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file of bounded size and depth; errors name the file."""
    return parse_json(read_bounded(fs, path, max_bytes), path)


def read_jsonl(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int = MAX_JSON_BYTES) -> list[Any]:
    try:
        text = read_bounded(fs, path, max_bytes).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(path, f"not UTF-8 text: {exc}") from exc
    return [parse_json(line, path, where=f"line {number}")
            for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_bounded(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int) -> bytes:
    try:
        size = fs.size(path)
    except FileNotFoundError as exc:
        raise DatasetError(path, "file not found") from exc
    if size is not None and size > max_bytes:
        raise SourceError(path, f"{size} bytes is over the {max_bytes}-byte limit for this file")
    with fs.open(path, "rb") as handle:
        return handle.read(max_bytes + 1)[:max_bytes]


class _HashCache:
    """Content hashes of files, memoized by (path, size, modification stamp) within a process.

    A LeRobot v3 video file holds many episodes: without this each episode would re-hash it.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._items: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def sha256(self, fs: fsspec.AbstractFileSystem, path: str) -> str:
        info = fs.info(path)
        stamp = (fs.protocol, path, info.get("size"), str(info.get("mtime") or info.get("LastModified")
                                                          or info.get("ETag") or ""))
        with self._lock:
            if stamp in self._items:
                self._items.move_to_end(stamp)
                return self._items[stamp]
        digest = hashlib.sha256()
        with fs.open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._lock:
            self._items[stamp] = value
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return value


file_sha256 = _HashCache().sha256
