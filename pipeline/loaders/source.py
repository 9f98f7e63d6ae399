"""What loaders read: a view manifest, its stats, shard indexes and byte ranges of shard members.

Nothing is listed: the view manifest names every shard with its counts. Shard indexes load lazily
(only when a shard is first touched) and are kept in a small LRU. File handles are opened per
process on first use, so a source built before DataLoader workers fork never shares a handle.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import fsspec
import numpy as np

from pipeline.objects import ObjectStore, is_local
from pipeline.refs import resolve_version_id
from pipeline.shards.index import SampleEntry, ShardIndex
from pipeline.shards.manifest import ViewManifest, load_view
from pipeline.shards.view import ViewConfig
from pipeline.stats import StatsSet


@dataclass
class ShardSteps:
    """A shard's samples and, for each local step number, which sample and offset it is."""

    index: ShardIndex
    sample_of_step: np.ndarray  # [num_steps] int32
    offset_of_step: np.ndarray  # [num_steps] int32

    @staticmethod
    def of(index: ShardIndex, excluded: frozenset[str] = frozenset()) -> ShardSteps:
        """Samples of ``excluded`` episodes (deleted or replaced in the view's version) own no steps."""
        counts = np.array([0 if s.episode_id in excluded else s.num_steps for s in index.samples], dtype=np.int64)
        sample_of_step = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        offset_of_step = (np.arange(counts.sum()) - np.repeat(starts, counts)).astype(np.int32)
        return ShardSteps(index, sample_of_step, offset_of_step)


class ViewSource:
    """Random access to the members of a materialized view, local or remote."""

    def __init__(self, store_uri: str, view_id: str, storage_options: dict | None = None,
                 index_cache_size: int = 64) -> None:
        self.store_uri = store_uri
        self.storage_options = dict(storage_options or {})
        self.view_id = view_id
        self._objects = self._open_objects()
        self.manifest: ViewManifest = load_view(self._objects, view_id)
        self.stats = self._load_stats()
        self._index_cache_size = index_cache_size
        self._indexes: OrderedDict[int, ShardSteps] = OrderedDict()
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @staticmethod
    def open(store_uri: str, version: str = "latest", view: ViewConfig | None = None, view_id: str | None = None,
             storage_options: dict | None = None) -> ViewSource:
        """By view id, or by version (ref or id) plus the view config it was sharded with."""
        if view_id is None:
            fs, root = fsspec.core.url_to_fs(store_uri, **(storage_options or {}))
            version_id = resolve_version_id(ObjectStore(fs, root), version)
            view_id = (view or ViewConfig()).view_id(version_id)
        return ViewSource(store_uri, view_id, storage_options)

    def _open_objects(self) -> ObjectStore:
        fs, root = fsspec.core.url_to_fs(self.store_uri, **self.storage_options)
        return ObjectStore(fs, root)

    def _load_stats(self) -> StatsSet:
        if self.manifest.stats is None:
            return StatsSet()
        return StatsSet.from_json(json.loads(self._objects.read_bytes(self.manifest.stats.path)))

    # ------------------------------------------------------------ process safety

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        state["_lock"] = None
        state["_objects"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._objects = self._open_objects()

    def _after_fork(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._handles = {}
            self._lock = threading.Lock()
            self._objects = self._open_objects()

    # ------------------------------------------------------------ reads

    @property
    def shard_steps(self) -> list[int]:
        return [s.num_steps for s in self.manifest.shards]

    def shard(self, shard: int) -> ShardSteps:
        self._after_fork()
        with self._lock:
            if shard in self._indexes:
                self._indexes.move_to_end(shard)
                return self._indexes[shard]
        summary = self.manifest.shards[shard]
        excluded = frozenset(summary.excluded) | frozenset(self.manifest.deleted)
        steps = ShardSteps.of(ShardIndex.from_json(json.loads(self._objects.read_bytes(summary.index_path))), excluded)
        if len(steps.sample_of_step) != summary.num_steps:
            raise ValueError(f"{summary.index_path}: {len(steps.sample_of_step)} live steps, the view manifest "
                             f"says {summary.num_steps}")
        with self._lock:
            self._indexes[shard] = steps
            while len(self._indexes) > self._index_cache_size:
                self._indexes.popitem(last=False)
        return steps

    def sample(self, shard: int, local_step: int) -> tuple[SampleEntry, int]:
        """The sample holding a shard-local step, and the step's offset inside that sample."""
        steps = self.shard(shard)
        return steps.index.samples[int(steps.sample_of_step[local_step])], int(steps.offset_of_step[local_step])

    def read(self, shard: int, offset: int, size: int) -> bytes:
        self._after_fork()
        path = self._objects.abspath(self.manifest.shards[shard].tar_path)
        if is_local(self._objects.fs):
            handle = self._handles.get(shard)
            if handle is None:
                handle = self._handles[shard] = os.open(path, os.O_RDONLY)
            data = os.pread(handle, size, offset)
        else:
            data = self._objects.fs.cat_file(path, start=offset, end=offset + size)
        if len(data) != size:
            raise OSError(f"{path}: short read at {offset} ({len(data)} of {size} bytes)")
        return data

    def member(self, shard: int, sample: SampleEntry, suffix: str) -> bytes | None:
        location = sample.members.get(suffix)
        return None if location is None else self.read(shard, *location)

    def close(self) -> None:
        for handle in self._handles.values():
            if isinstance(handle, int):
                os.close(handle)
        self._handles = {}
