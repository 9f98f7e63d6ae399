"""Files named inside request and result documents: relative, never outside their folder; atomic writes."""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from pathlib import Path


class UnsafePath(ValueError):
    pass


def inside_dir(base: str | Path, relative: str) -> Path:
    """``base/relative``, refusing absolute paths and paths that climb out of ``base``."""
    if not isinstance(relative, str) or not relative or relative.startswith(("/", "\\")) or "\\" in relative \
            or "\x00" in relative or ":" in relative:
        raise UnsafePath(f"refusing path {relative!r}: must be relative to {base}")
    normal = posixpath.normpath(relative)
    if normal in (".", "..") or normal.startswith("../"):
        raise UnsafePath(f"refusing path {relative!r}: escapes {base}")
    return Path(base) / normal


def write_atomic(path: str | Path, data: bytes) -> None:
    """Temp name then rename: readers see the whole file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    temp.write_bytes(data)
    os.replace(temp, path)


def write_json(path: str | Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())


def read_json_file(path: str | Path, max_bytes: int = 16 * 1024 * 1024) -> dict:
    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path}: over the {max_bytes}-byte limit")
    return json.loads(path.read_bytes())
