"""fsspec helpers for connectors: bounded reads, paths that never escape their root, cached hashes."""

from __future__ import annotations

import hashlib
import json
import posixpath
import threading
from collections import OrderedDict
from typing import Any

import fsspec

from connectors.base import DatasetError, SourceError

MAX_JSON_BYTES = 64 * 1024 * 1024
_HASH_CHUNK = 8 * 1024 * 1024


def open_root(uri: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root path of a dataset URI (local path or any fsspec URL)."""
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, root.rstrip("/") or "/"


def join_inside(root: str, relative: str) -> str:
    """``root/relative``, refusing paths that are absolute or climb out of ``root``."""
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
        raise SourceError(root, f"refusing path {relative!r}: must be relative to the dataset root")
    normal = posixpath.normpath(relative)
    if normal == ".." or normal.startswith("../") or normal == ".":
        raise SourceError(root, f"refusing path {relative!r}: escapes the dataset root")
    return f"{root}/{normal}"


def read_json(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file of bounded size; errors name the file."""
    data = read_bounded(fs, path, max_bytes)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"invalid JSON: {exc}") from exc


def read_jsonl(fs: fsspec.AbstractFileSystem, path: str, max_bytes: int = MAX_JSON_BYTES) -> list[Any]:
    rows = []
    for number, line in enumerate(read_bounded(fs, path, max_bytes).decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SourceError(path, f"invalid JSON on line {number}: {exc}") from exc
    return rows


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
