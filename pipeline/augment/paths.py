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
    path = Path(base) / normal
    real_base, real = os.path.realpath(base), os.path.realpath(path)
    if real != real_base and not real.startswith(real_base.rstrip("/") + "/"):
        raise UnsafePath(f"refusing path {relative!r}: it resolves to {real}, outside {base} (a symlink)")
    return path


MAX_JSON_DEPTH = 64


def parse_json_bounded(data: bytes | str, max_depth: int = MAX_JSON_DEPTH):
    """JSON from an untrusted peer or file, nested at most ``max_depth`` levels (``ValueError`` otherwise)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return value


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
    return parse_json_bounded(path.read_bytes())
