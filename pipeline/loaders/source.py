"""What loaders read: a view manifest, its stats, its sample table, and byte ranges of shard members.

Nothing is listed: the view manifest names every shard and the sample table (one Parquet read) holds
every sample's episode, steps and labels. Per-member byte offsets come from the per-shard indexes,
loaded only when a shard is first touched and kept in a small LRU.

Reads: local shards are read with ``pread``; remote shards (s3://, gs://...) either go through a
local ``ShardCache`` (byte cap, LRU eviction) or, without one, are read a whole sample at a time
(read-ahead, kept in a bounded LRU) with retries on transient errors. File handles and network
clients are opened per process on first use, so a source built before DataLoader workers fork never
shares them.

Integrity: every member read, on every path (pread, preadv into a batch buffer, shard cache, remote
read-ahead), is checked against the checksum its shard index records and raises
``CorruptMemberError`` (shard, member, sample key) on a mismatch. Shards with format 1 indexes carry no
checksums: they are served unchecked, with a warning naming the shard (``unchecked_shards`` lists them).
"""

from __future__ import annotations

import io
import json
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.loaders.cache import ShardCache, with_retries
from pipeline.loaders.integrity import CorruptMemberError
from pipeline.shards.index import SampleEntry, ShardIndex, member_checksum, split_checksum
from pipeline.shards.manifest import ViewManifest, load_view
from pipeline.shards.names import resolve_view_name
from pipeline.shards.view import ViewConfig
from pipeline.stats import StatsSet
from pipeline.store.objects import ObjectStore, is_local
from pipeline.store.refs import resolve_version_id

_TEXT_COLUMNS = ("key", "episode_id", "dataset", "embodiment", "kind", "action_source", "split")
_INT_COLUMNS = ("shard", "row", "segment", "step_start", "num_steps", "num_action_steps", "episode_num_steps",
                "fps_num", "fps_den")


@dataclass
class SampleTable:
    """Column arrays of the view's samples, in shard order then tar order.

    Text columns are object arrays whose repeated values share one ``str`` (read through Arrow's
    dictionary encoding), and ``episode_code`` numbers the episodes in order of first appearance
    (``episodes[code]`` is the id), so per-episode grouping is array work at a million episodes.
    """

    columns: dict[str, np.ndarray]
    episodes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __len__(self) -> int:
        return len(self.columns["shard"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @staticmethod
    def read(data: bytes) -> SampleTable:
        table = pq.read_table(io.BytesIO(data))
        columns = {name: table.column(name).to_numpy().astype(np.int64) for name in _INT_COLUMNS}
        for name in _TEXT_COLUMNS:
            columns[name], names, codes = _text_column(table.column(name))
            if name == "episode_id":
                episodes, columns["episode_code"] = names, codes
        return SampleTable(columns, episodes)

    def live_rows(self, deleted: frozenset[str] | set[str]) -> np.ndarray:
        """Mask of the rows whose episode is not in ``deleted`` (tested once per episode, not per row)."""
        if not deleted:
            return np.ones(len(self), bool)
        dead = np.fromiter((name in deleted for name in self.episodes), bool, len(self.episodes))
        return ~dead[self["episode_code"]]

    def by_episode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rows`` grouped by episode, episodes in order of first appearance among ``rows``, each
        episode's rows by ``step_start`` (ties in row order): (rows, group bounds, episode codes)."""
        rows = np.asarray(rows, dtype=np.int64)
        codes = self["episode_code"][rows]
        present, first = np.unique(codes, return_index=True)
        appearing = present[np.argsort(first, kind="stable")]  # episode codes by first row
        rank = np.empty(len(self.episodes), dtype=np.int64)
        rank[appearing] = np.arange(len(appearing))
        ranks = rank[codes]
        order = np.lexsort((self["step_start"][rows], ranks))
        bounds = np.searchsorted(ranks[order], np.arange(len(appearing) + 1))
        return rows[order], bounds, appearing


def group_by_label(values: np.ndarray, labels: np.ndarray, count: int) -> list[np.ndarray]:
    """``values`` split by their ``labels`` (0..count-1), each part in the values' order."""
    splits = np.cumsum(np.bincount(labels, minlength=count))[:-1]
    return np.split(values[np.argsort(labels, kind="stable")], splits)


def _text_column(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as an object array, the distinct values, each row's code into them)."""
    encoded = column.combine_chunks().dictionary_encode()
    if encoded.null_count:
        values = np.asarray(column.to_pylist(), dtype=object)
        names, codes = np.unique(values.astype(str), return_inverse=True)
        return values, names.astype(object), codes.astype(np.int64)
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return names[codes], names, codes


@dataclass(frozen=True)
class SampleFilter:
    """Which samples a loader may yield. Empty sets mean "no constraint"."""

    kinds: frozenset[str] = frozenset()
    exclude_action_sources: frozenset[str] = frozenset()
    splits: frozenset[str] = frozenset()
    exclude_episodes: frozenset[str] = field(default_factory=frozenset)

    def mask(self, table: SampleTable) -> np.ndarray:
        keep = np.ones(len(table), bool)
        if self.kinds:
            keep &= np.isin(table["kind"], list(self.kinds))
        if self.exclude_action_sources:
            keep &= ~np.isin(table["action_source"], list(self.exclude_action_sources))
        if self.splits:
            keep &= np.isin(table["split"], list(self.splits))
        if self.exclude_episodes:
            keep &= ~np.isin(table["episode_id"], list(self.exclude_episodes))
        return keep


class ViewSource:
    """Random access to the members of a materialized view, local or remote."""

    def __init__(self, store_uri: str, view_id: str, storage_options: dict | None = None,
                 cache: ShardCache | None = None, index_cache_size: int = 64,
                 readahead_bytes: int = 64 * 1024 * 1024, check_members: bool = True) -> None:
        self.store_uri = store_uri
        self.check_members = check_members  # False only to measure what the checks cost (bench/loader_integrity.py)
        self.storage_options = dict(storage_options or {})
        self.view_id = view_id
        self.cache = cache
        self._index_cache_size = index_cache_size
        self._readahead_bytes = readahead_bytes
        self._reset_process_state()
        self.manifest: ViewManifest = with_retries(lambda: load_view(self._objects, view_id))
        self.stats = self._load_stats()
        if not self.manifest.samples_path:
            raise ValueError(f"view {view_id} has no sample table: re-run the shard job")
        self.table = SampleTable.read(with_retries(lambda: self._objects.read_bytes(self.manifest.samples_path)))

    @staticmethod
    def open(store_uri: str, version: str = "latest", view: ViewConfig | None = None, view_id: str | None = None,
             storage_options: dict | None = None, cache: ShardCache | None = None,
             name: str | None = None) -> ViewSource:
        """By view id, by the name ``shard --name`` gave it, or by version (ref or id) plus the view config it was
        sharded with."""
        if name is not None:
            fs, root = fsspec.core.url_to_fs(store_uri, **(storage_options or {}))
            view_id = resolve_view_name(ObjectStore(fs, root), name)
            if view_id is None:
                raise FileNotFoundError(f"no view named {name!r} in {store_uri} (`actionreel views` lists them)")
        if view_id is None:
            fs, root = fsspec.core.url_to_fs(store_uri, **(storage_options or {}))
            version_id = resolve_version_id(ObjectStore(fs, root), version)
            view_id = (view or ViewConfig()).view_id(version_id)
        return ViewSource(store_uri, view_id, storage_options, cache)

    @property
    def deleted(self) -> frozenset[str]:
        return frozenset(self.manifest.deleted)

    def _load_stats(self) -> StatsSet:
        if self.manifest.stats is None:
            return StatsSet()
        return StatsSet.from_json(json.loads(with_retries(lambda: self._objects.read_bytes(self.manifest.stats.path))))

    # ------------------------------------------------------------ process safety

    def _reset_process_state(self) -> None:
        fs, root = fsspec.core.url_to_fs(self.store_uri, **self.storage_options)
        self._objects = ObjectStore(fs, root)
        self._local = is_local(fs)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._handles: dict[int, int] = {}
        self._indexes: OrderedDict[int, ShardIndex] = OrderedDict()
        self._blobs: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._blob_bytes = 0

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_") or k in (
            "_index_cache_size", "_readahead_bytes")}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_process_state()

    def _check_process(self) -> None:
        if os.getpid() != self._pid:  # forked: never reuse the parent's handles or clients
            fs = self._objects.fs
            if hasattr(fs, "clear_instance_cache"):
                fs.clear_instance_cache()
            self._reset_process_state()

    # ------------------------------------------------------------ shard indexes

    def shard_index(self, shard: int) -> ShardIndex:
        self._check_process()
        with self._lock:
            if shard in self._indexes:
                self._indexes.move_to_end(shard)
                return self._indexes[shard]
        path = self.manifest.shards[shard].index_path
        index = ShardIndex.from_json(json.loads(with_retries(lambda: self._objects.read_bytes(path))))
        if not index.checked:
            warnings.warn(f"shard {self.manifest.shards[shard].tar_path}: format 1 index without member checksums: "
                          "its members are served unchecked (re-run the shard job to rewrite it)", stacklevel=2)
        with self._lock:
            self._indexes[shard] = index
            while len(self._indexes) > self._index_cache_size:
                self._indexes.popitem(last=False)
        return index

    def entry(self, sample: int) -> SampleEntry:
        """The shard-index entry of a row of the sample table."""
        return self.shard_index(int(self.table["shard"][sample])).samples[int(self.table["row"][sample])]

    def unchecked_shards(self) -> list[str]:
        """Tar paths of the view's shards whose indexes hold no member checksums (format 1)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [s.tar_path for i, s in enumerate(self.manifest.shards) if not self.shard_index(i).checked]

    def corrupt(self, sample: int, suffix: str, problem: str) -> CorruptMemberError:
        """The error for member ``suffix`` of ``sample``: names shard, member and sample key."""
        entry = self.entry(sample)
        shard = self.manifest.shards[int(self.table["shard"][sample])].tar_path
        return CorruptMemberError(shard, f"{entry.key}.{suffix}", entry.key, problem)

    def _verify(self, sample: int, entry: SampleEntry, suffix: str, actual: str) -> None:
        expected = entry.checksums.get(suffix)
        if expected is not None and actual != expected:
            raise self.corrupt(sample, suffix, f"checksum mismatch (xxh3_64 recorded {expected}, read {actual})")

    # ------------------------------------------------------------ member reads

    def member(self, sample: int, suffix: str) -> bytes | None:
        """The bytes of one member of a sample (``state.npy``, ``top.0003.jpg``...), or None if absent."""
        entry = self.entry(sample)
        location = entry.members.get(suffix)
        if location is None:
            return None
        shard = int(self.table["shard"][sample])
        offset, size = location
        data = None
        if self._local or self.cache is not None:
            handle = self._handle(shard)
            if handle is not None:
                data = self._pread(handle, offset, size, sample, suffix)
        if data is None:
            blob = self._sample_blob(shard, entry)
            start = offset - entry.offset
            data = blob[start: start + size]
        if self.check_members and suffix in entry.checksums:
            self._verify(sample, entry, suffix, member_checksum(data))
        return data

    def read_into(self, sample: int, suffix: str, out: np.ndarray, skip: int) -> bool:
        """Copy a member's bytes after its first ``skip`` into ``out`` (exactly filled) with one ``preadv``
        when the shard is on local disk: no intermediate buffer. False when the member is absent."""
        entry = self.entry(sample)
        location = entry.members.get(suffix)
        if location is None:
            return False
        offset, size = location
        if size - skip != out.nbytes:
            raise self.corrupt(sample, suffix, f"holds {size - skip} bytes past its header, expected {out.nbytes}")
        shard = int(self.table["shard"][sample])
        handle = self._handle(shard) if (self._local or self.cache is not None) else None
        if handle is None:
            out.reshape(-1)[:] = np.frombuffer(self.member(sample, suffix), np.uint8, offset=skip)  # checked there
            return True
        header = bytearray(skip)
        body = memoryview(out).cast("B")
        if os.preadv(handle, [header, body], offset) != size:
            raise self.corrupt(sample, suffix, f"short read at offset {offset} (truncated shard?)")
        if self.check_members:
            self._verify_split(sample, entry, suffix, header, body)
        return True

    def _verify_split(self, sample: int, entry: SampleEntry, suffix: str, header: bytearray,
                      body: memoryview) -> None:
        """Check a member read as header and body: two one-shot hashes when the index holds its split
        checksum, else one streaming hash over both against the whole-member checksum."""
        expected = entry.split_checksums.get(suffix)
        if expected is not None:
            actual = split_checksum(header, body)
            if actual != expected:
                raise self.corrupt(sample, suffix, f"checksum mismatch (xxh3_64 header+body recorded "
                                                   f"{expected:016x}, read {actual:016x})")
        elif suffix in entry.checksums:
            digest = xxhash.xxh3_64(header)
            digest.update(body)
            self._verify(sample, entry, suffix, digest.hexdigest())

    def _handle(self, shard: int) -> int | None:
        handle = self._handles.get(shard)
        if handle is not None:
            return handle
        tar = self._objects.abspath(self.manifest.shards[shard].tar_path)
        if self._local:
            path = tar
        else:
            local = self.cache.fetch(self._objects.fs, tar, self.manifest.shards[shard].tar_bytes, with_retries)
            if local is None:
                return None
            path = str(local)
        handle = self._handles[shard] = os.open(path, os.O_RDONLY)
        return handle

    def _pread(self, handle: int, offset: int, size: int, sample: int, suffix: str) -> bytes:
        data = os.pread(handle, size, offset)
        if len(data) != size:
            raise self.corrupt(sample, suffix, f"short read at offset {offset} (truncated shard?)")
        return data

    def _sample_blob(self, shard: int, entry: SampleEntry) -> bytes:
        """Read-ahead for uncached remote shards: one ranged GET per sample, kept in a bounded LRU."""
        key = (shard, entry.offset)
        with self._lock:
            if key in self._blobs:
                self._blobs.move_to_end(key)
                return self._blobs[key]
        path = self._objects.abspath(self.manifest.shards[shard].tar_path)
        blob = with_retries(lambda: self._objects.fs.cat_file(path, start=entry.offset, end=entry.offset + entry.size))
        if len(blob) != entry.size:
            raise OSError(f"{path}: short read of sample {entry.key}")
        with self._lock:
            self._blobs[key] = blob
            self._blob_bytes += len(blob)
            while self._blob_bytes > self._readahead_bytes and len(self._blobs) > 1:
                _, dropped = self._blobs.popitem(last=False)
                self._blob_bytes -= len(dropped)
        return blob

    def close(self) -> None:
        for handle in self._handles.values():
            os.close(handle)
        self._handles = {}
