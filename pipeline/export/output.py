"""Where an export goes: never in place, staged under a hidden name and renamed into place (local), and
episodes in one documented order (split, dataset, source key in natural order) shared by every layout.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.export.video import ExportError
from pipeline.store.episodes import EpisodeStore
from pipeline.store.objects import is_local
from schemas import EpisodeMeta

_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def _natural(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def episode_order(meta: EpisodeMeta) -> tuple:
    return _SPLIT_ORDER.get(meta.split, 3), meta.split, meta.dataset, _natural(meta.source_key), meta.episode_id


def check_output(store: EpisodeStore, fs: fsspec.AbstractFileSystem, root: str, metas: list[EpisodeMeta]) -> None:
    """Refuse an output inside (or around) the store or a local source, or one that exists non-empty."""
    def overlaps(a: str, b: str) -> bool:
        a, b = a.rstrip("/"), b.rstrip("/")
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")

    if is_local(fs):
        out = os.path.realpath(root)
        if is_local(store.fs) and overlaps(out, os.path.realpath(store.root)):
            raise ExportError("", "output", f"{out} overlaps the store at {store.root}: exports are never in place")
        for source in sorted({m.source_uri for m in metas if m.source_uri and "://" not in m.source_uri}):
            if overlaps(out, os.path.realpath(source)):
                raise ExportError("", "output", f"{out} overlaps the source dataset {source}: never in place")
    elif type(fs) is type(store.fs) and overlaps(fs._strip_protocol(root), store.root):
        raise ExportError("", "output", f"{root} overlaps the store at {store.root}: exports are never in place")
    if fs.exists(root) and (not fs.isdir(root) or fs.ls(root)):
        raise ExportError("", "output", f"{root} exists and is not empty")


class StagedOutput:
    """Where files go: a staging folder renamed into place (local), or the output itself (remote)."""

    def __init__(self, out: str, storage_options: dict | None) -> None:
        self.fs, self.target = fsspec.core.url_to_fs(out, **(storage_options or {}))
        self.target = self.target.rstrip("/")
        self.local = is_local(self.fs)
        if self.local:
            parent, name = os.path.split(os.path.abspath(self.target))
            self.root = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:8]}")
        else:
            self.root = self.target

    def put(self, relative: str, data: bytes) -> None:
        path = f"{self.root}/{relative}"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def parquet(self, relative: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="snappy")
        self.put(relative, sink.getvalue())

    def json(self, relative: str, data: object) -> None:
        self.put(relative, json.dumps(data, indent=2).encode())

    def jsonl(self, relative: str, rows: list[dict]) -> None:
        self.put(relative, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def commit(self) -> None:
        if self.local:
            if os.path.isdir(self.target):
                os.rmdir(self.target)  # empty (checked): the rename needs it gone
            os.makedirs(os.path.dirname(os.path.abspath(self.target)), exist_ok=True)
            os.rename(self.root, self.target)

    def abort(self) -> None:
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
