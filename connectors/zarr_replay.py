"""zarr ReplayBuffer connector (diffusion_policy / UMI): ``data/<key>`` arrays cut by ``meta/episode_ends``.

Mapping (docs/formats.md): ``data/state`` (or the ``state_keys`` option, else every other low-dim
array) -> state, ``data/action`` -> action, ``data/timestamp`` -> timestamps (else the frame
clock), image arrays ``(N, H, W, 3)`` -> cameras (uint8, or float 0-255 as in PushT, rounded and
checked), other arrays -> ``extra.*``. Absent chunks, which zarr silently reads as the fill value,
are found by listing the store: an episode whose images are absent is reported missing (never
ingested as black frames); absent low-dim chunks quarantine the episode. Compressed image codecs
come from ``imagecodecs`` when installed; otherwise the error names the missing codec.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import fsspec
import numcodecs
import numpy as np

from connectors.base import DatasetError, Discovery, EpisodeRef, SourceError
from connectors.common import (
    build_meta,
    camera_name,
    check_dims,
    concat_columns,
    dataset_name,
    estimate_rate,
    frame_sequence,
    option_list,
    option_rate,
    vector_names,
)
from connectors.fsutil import check_resolves_inside, file_sha256, join_inside, open_root, parse_json, read_bounded
from schemas import CameraInfo, Episode, StepArrays, index_to_ns, seconds_to_ns

__all__ = ["ZarrReplayConnector"]

DEFAULT_FPS = Fraction(10)
PUSHT_KEYS = {"state", "action", "keypoint", "n_contacts"}
FRAME_BATCH = 64
MAX_BATCH_BYTES = 256 * 1024 * 1024
_MISSING_POLICIES = ("skip", "drop_camera")


@dataclass
class ArrayInfo:
    """An array's metadata, read from ``.zarray`` / ``zarr.json`` without opening it in zarr."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    codecs: list[str]
    zarr_format: int
    separator: str
    v3_default_keys: bool

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        joined = self.separator.join(str(c) for c in coords)
        return f"c{self.separator}{joined}" if self.v3_default_keys else joined

    def chunk_keys(self, start: int, stop: int) -> list[tuple[tuple[int, ...], str]]:
        """Every chunk holding rows ``start..stop-1`` (all chunks along the other axes)."""
        first, last = start // self.chunks[0], (stop - 1) // self.chunks[0]
        others = [range(-(-s // c)) for s, c in zip(self.shape[1:], self.chunks[1:], strict=True)]
        coords = [(i,) for i in range(first, last + 1)]
        for axis in others:
            coords = [(*c, j) for c in coords for j in axis]
        return [(c, self.chunk_key(c)) for c in coords]

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 4 and self.shape[-1] == 3


@dataclass
class ZarrLayout:
    uri: str
    fs: fsspec.AbstractFileSystem
    root: str
    zip_path: str  # non-empty for .zarr.zip stores
    arrays: dict[str, ArrayInfo]
    episode_ends: np.ndarray
    present: set[str] = field(default_factory=set)  # store keys of every chunk that exists
    outside: set[str] = field(default_factory=set)  # store keys that resolve out of the root (symlinks)


class ZarrReplayConnector:
    name: ClassVar[str] = "zarr_replay"
    description: ClassVar[str] = ("zarr ReplayBuffer (diffusion_policy / UMI: data/<key> + meta/episode_ends), "
                                  "directory or .zarr.zip")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        fs, root = open_root(uri, storage_options)
        if root.endswith(".zip") and fs.isfile(root):
            with fs.open(root, "rb") as handle, zipfile.ZipFile(handle) as archive:
                names = set(archive.namelist())
            return bool({"meta/episode_ends/.zarray", "meta/episode_ends/zarr.json"} & names)
        return fs.exists(f"{root}/meta/episode_ends/.zarray") or fs.exists(f"{root}/meta/episode_ends/zarr.json")

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        layout = load_layout(uri, options.get("storage_options"))
        policy = options.get("missing_images", "skip")
        if policy not in _MISSING_POLICIES:
            raise DatasetError(uri, f"option missing_images must be one of {_MISSING_POLICIES}, got {policy!r}")
        dataset = dataset_name(uri.removesuffix(".zip").removesuffix(".zarr"), options)
        cameras = _camera_keys(layout, options)
        refs, missing, warnings = [], [], []
        ends = layout.episode_ends
        total = _length(layout)
        if ends.size and int(ends[-1]) != total:
            warnings.append(f"meta/episode_ends ends at {int(ends[-1])} but data arrays have {total} rows")
        for index, (start, stop) in enumerate(_spans(ends)):
            if stop <= start:
                missing.append((str(index), f"empty episode (rows {start}..{stop})"))
                continue
            absent = {key: _absent_rows(layout, layout.arrays[key], start, stop) for key in cameras}
            absent = {k: v for k, v in absent.items() if v}
            if absent and policy == "skip":
                missing.append((str(index), "; ".join(f"data/{k}: missing image data for rows {v} (absent chunks "
                                                      "would read as the fill value, not frames)"
                                                      for k, v in absent.items())))
                continue
            ref_options = {**options, "rows": [start, stop]}
            if absent:
                ref_options["drop_cameras"] = sorted(absent)
            refs.append(EpisodeRef(format=self.name, dataset=dataset, uri=uri, key=str(index), options=ref_options))
        if missing:
            warnings.append(f"{len(missing)} of {len(ends)} episodes not ingested (first: episode {missing[0][0]}: "
                            f"{missing[0][1]})")
        return Discovery(format=self.name, dataset=dataset, uri=uri, refs=refs, missing=missing, warnings=warnings)

    def checksum(self, ref: EpisodeRef) -> str:
        layout = load_layout(ref.uri, ref.options.get("storage_options"))
        start, stop = _rows(layout, ref)
        digest = hashlib.sha256()
        identity = {"episode": ref.key, "dataset": ref.dataset, "rows": [start, stop],
                    "options": {k: v for k, v in ref.options.items() if k != "storage_options"}}
        digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
        if layout.zip_path:
            digest.update(file_sha256(layout.fs, layout.zip_path).encode())
            return digest.hexdigest()
        for name in sorted(layout.arrays):
            info = layout.arrays[name]
            _check_contained(layout, info, start, stop, _display(layout), ref.key)
            for _, key in info.chunk_keys(start, stop):
                path = f"{layout.root}/data/{name}/{key}"
                if f"data/{name}/{key}" in layout.present:
                    digest.update(f"{key}:{file_sha256(layout.fs, path)}".encode())
        return digest.hexdigest()

    def read(self, ref: EpisodeRef) -> Episode:
        layout = load_layout(ref.uri, ref.options.get("storage_options"))
        return _read_episode(layout, ref)


# ---------------------------------------------------------------- reading


def _read_episode(layout: ZarrLayout, ref: EpisodeRef) -> Episode:
    options = ref.options
    start, stop = _rows(layout, ref)
    n = stop - start
    where = _display(layout)
    cameras_keys = [k for k in _camera_keys(layout, options) if k not in set(options.get("drop_cameras") or ())]
    pusht = set(layout.arrays) >= PUSHT_KEYS
    action_key = options.get("action_key", "action")
    state_keys = option_list(options, "state_keys")
    if state_keys is None:
        state_keys = ["state"] if "state" in layout.arrays else sorted(
            k for k, a in layout.arrays.items() if k not in (action_key, "timestamp") and k not in cameras_keys
            and not a.is_image)
    group = _open_store(layout)

    def load(key: str) -> np.ndarray:
        if key not in layout.arrays:
            raise SourceError(where, f"missing array data/{key}", ref.key, f"data/{key}")
        info = layout.arrays[key]
        if info.shape[0] < stop:
            raise SourceError(where, f"shape mismatch: data/{key} has {info.shape[0]} rows, the episode needs rows "
                              f"{start}..{stop - 1}", ref.key, f"data/{key}")
        absent = _absent_rows(layout, info, start, stop)
        if absent:
            raise SourceError(where, f"chunks absent for rows {absent}: zarr would return the fill value", ref.key,
                              f"data/{key}")
        _check_contained(layout, info, start, stop, where, ref.key)
        array = _zarr_array(group, layout, key, where, ref.key)
        return _rows_of(array, start, stop, where, ref.key, f"data/{key}").reshape(n, -1)

    parts = [(k, load(k), vector_names(k, int(np.prod(layout.arrays[k].shape[1:])))) for k in state_keys]
    state, state_names = concat_columns(parts, n)
    action = load(action_key) if action_key in layout.arrays else np.zeros((n, 0), np.float32)
    timestamps, fps, fps_note = _timeline(layout, options, load, n, where, ref.key, pusht)
    used = {*state_keys, action_key, "timestamp", *_camera_keys(layout, options)}
    extras = {}
    for key in sorted(set(layout.arrays) - used):
        values = load(key)
        extras[key] = values[:, 0] if values.shape[1] == 1 else values
    cameras, videos = _cameras(layout, group, cameras_keys, start, stop, fps, where, ref.key)
    meta_extras = {"zarr.rows": f"{start}:{stop}", **fps_note}
    if options.get("drop_cameras"):
        meta_extras["zarr.missing_image_data"] = ",".join(options["drop_cameras"])
    steps = StepArrays(timestamp_ns=timestamps, state=state, action=action,
                       frame_index={c.name: np.arange(n, dtype=np.int32) for c in cameras},
                       state_valid=None if state.shape[1] else np.zeros(n, bool),
                       action_valid=None if action.shape[1] else np.zeros(n, bool), extras=extras)
    meta = build_meta(ref_dataset=ref.dataset, ref_key=ref.key, ref_uri=ref.uri, source_format="zarr_replay",
                      options=options, fps=fps, num_steps=n, state=state, state_names=state_names, action=action,
                      action_names=vector_names(action_key, action.shape[1]),
                      embodiment="pusht" if pusht else "unknown", kind="sim" if pusht else "teleop",
                      action_space="eef_pose" if pusht else "unknown",
                      action_representation="absolute" if pusht else "unknown",
                      extras=meta_extras, duration_ns=None if "timestamp" not in layout.arrays else
                      int(timestamps[-1]) + int(index_to_ns(1, fps)))
    meta.cameras = cameras
    return Episode(meta=meta, steps=steps, videos=videos)


def _timeline(layout, options, load, n, where, episode, pusht) -> tuple[np.ndarray, Fraction, dict[str, str]]:
    fps = option_rate(options)
    if "timestamp" in layout.arrays:
        seconds = load("timestamp").reshape(n).astype(np.float64)
        ns = seconds_to_ns(seconds)
        ns = ns - ns[0]
        bad = np.nonzero(np.diff(ns) <= 0)[0]
        if bad.size:
            raise SourceError(where, f"timestamps not increasing at row {int(bad[0]) + 1}", episode, "data/timestamp")
        if fps is None:
            fps = estimate_rate(float(np.median(np.diff(ns)))) if n > 1 else DEFAULT_FPS
            return ns.astype(np.int64), fps, {"zarr.fps_estimated": str(fps)}
        return ns.astype(np.int64), fps, {}
    note = {}
    if fps is None:
        fps = DEFAULT_FPS
        if not pusht:
            note = {"zarr.fps_assumed": str(fps)}
    return index_to_ns(np.arange(n), fps), fps, note


def _cameras(layout, group, keys, start, stop, fps, where, episode):
    cameras, videos, used = [], {}, set()
    n = stop - start
    for key in keys:
        info = layout.arrays.get(key)
        field_name = f"data/{key}"
        if info is None:
            raise SourceError(where, f"missing array {field_name}", episode, field_name)
        if not info.is_image:
            raise SourceError(where, f"shape mismatch: {info.shape} is not (N, H, W, 3)", episode, field_name)
        _check_contained(layout, info, start, stop, where, episode)
        array = _zarr_array(group, layout, key, where, episode)
        height, width = info.shape[1], info.shape[2]
        check_dims(height, width, where, episode, field_name)
        name = camera_name(key, used)

        batch = _batch_rows(info)

        def produce(array=array, field_name=field_name, batch=batch) -> Iterator[np.ndarray]:
            first = start
            while first < stop:
                last = min(stop, (first // batch + 1) * batch)  # batches end on chunk boundaries
                rows = _rows_of(array, first, last, where, episode, field_name)
                yield from _as_uint8(rows, where, episode, field_name, first)
                first = last

        cameras.append(CameraInfo(name=name, width=width, height=height, fps=fps, codec="", num_frames=n,
                                  source_key=field_name))
        videos[name] = frame_sequence(produce, n, fps, height, width, where, episode, field_name)
    return cameras, videos


def _batch_rows(info: ArrayInfo) -> int:
    """Rows per read: one chunk (each chunk is decompressed once), unless a chunk is too big to hold."""
    row_bytes = int(np.prod(info.shape[1:])) * np.dtype(info.dtype).itemsize
    return info.chunks[0] if info.chunks[0] * row_bytes <= MAX_BATCH_BYTES else FRAME_BATCH


def _rows_of(array, start: int, stop: int, where: str, episode: str, field_name: str) -> np.ndarray:
    """Rows of a zarr array; a corrupt chunk (bad compression, cut file) becomes an error naming the field."""
    try:
        return np.asarray(array[start:stop])
    except SourceError:
        raise
    except Exception as exc:  # codecs raise their own types (RuntimeError from blosc, ValueError...)
        raise SourceError(where, f"unreadable chunk data for rows {start}..{stop - 1}: {type(exc).__name__}: {exc}",
                          episode, field_name) from exc


def _as_uint8(batch: np.ndarray, where: str, episode: str, field_name: str, first_row: int) -> np.ndarray:
    """Images as uint8: float images hold 0..255 values (PushT); anything outside is an error."""
    if batch.dtype == np.uint8:
        return batch
    if batch.dtype.kind not in "fiu":
        raise SourceError(where, f"image dtype {batch.dtype} is not numeric", episode, field_name)
    finite = np.isfinite(batch) if batch.dtype.kind == "f" else np.ones(batch.shape, bool)
    outside = ~finite | (batch < 0) | (batch > 255)
    if outside.any():
        row = first_row + int(np.argwhere(outside)[0][0])
        raise SourceError(where, f"image values outside 0..255 at row {row}", episode, field_name)
    return np.rint(batch).astype(np.uint8)


# ---------------------------------------------------------------- layout and store


def _spans(ends: np.ndarray) -> list[tuple[int, int]]:
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(starts, ends.astype(np.int64), strict=True)]


def _rows(layout: ZarrLayout, ref: EpisodeRef) -> tuple[int, int]:
    rows = ref.options.get("rows")
    if rows is not None:
        return int(rows[0]), int(rows[1])
    index = int(ref.key)
    spans = _spans(layout.episode_ends)
    if not 0 <= index < len(spans):
        raise SourceError(_display(layout), f"no episode {index} ({len(spans)} episodes)", ref.key, "meta/episode_ends")
    return spans[index]


def _length(layout: ZarrLayout) -> int:
    return max((a.shape[0] for a in layout.arrays.values() if a.shape), default=0)


def _camera_keys(layout: ZarrLayout, options: dict) -> list[str]:
    chosen = option_list(options, "camera_keys")
    return chosen if chosen is not None else sorted(k for k, a in layout.arrays.items() if a.is_image)


def _absent_rows(layout: ZarrLayout, info: ArrayInfo, start: int, stop: int) -> str:
    """Rows whose chunks are not in the store, as ``a..b`` ranges (empty when all are there)."""
    rows: list[tuple[int, int]] = []
    for coords, key in info.chunk_keys(start, stop):
        if f"data/{info.name}/{key}" in layout.present:
            continue
        lo = max(start, coords[0] * info.chunks[0])
        hi = min(stop, (coords[0] + 1) * info.chunks[0]) - 1
        if not rows or rows[-1] != (lo, hi):
            rows.append((lo, hi))
    return ", ".join(f"{lo}..{hi}" for lo, hi in rows)


def _display(layout: ZarrLayout) -> str:
    return layout.zip_path or layout.root


def _open_store(layout: ZarrLayout):
    import zarr

    if layout.zip_path:
        return zarr.storage.ZipStore(layout.zip_path, mode="r")
    if "file" in (layout.fs.protocol if isinstance(layout.fs.protocol, tuple) else (layout.fs.protocol,)):
        return zarr.storage.LocalStore(layout.root, read_only=True)
    return zarr.storage.FsspecStore.from_url(layout.uri, read_only=True)


def _zarr_array(store, layout: ZarrLayout, key: str, where: str, episode: str):
    """The zarr array, after checking that every codec it needs is available here."""
    import zarr

    info = layout.arrays[key]
    _register_imagecodecs()
    for codec in info.codecs:
        if not _codec_available(codec, info.zarr_format):
            hint = " (install imagecodecs: pip install imagecodecs)" if "imagecodecs" in codec or codec in (
                "jpegxl", "jpeg2k", "jpeg", "png", "webp", "avif") else ""
            raise SourceError(where, f"codec {codec!r} is not available{hint}", episode, f"data/{key}")
    try:
        return zarr.open_array(store, path=f"data/{key}", mode="r")
    except (ValueError, KeyError, OSError) as exc:
        raise SourceError(where, f"cannot open array: {exc}", episode, f"data/{key}") from exc


_REGISTERED = False


def _register_imagecodecs() -> None:
    """imagecodecs is optional: when present, its numcodecs codecs (JPEG XL, ...) are registered once."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    try:
        from imagecodecs.numcodecs import register_codecs
    except ImportError:
        return
    register_codecs()


def _codec_available(codec: str, zarr_format: int) -> bool:
    if zarr_format == 2:
        try:
            numcodecs.get_codec({"id": codec})
        except (ValueError, KeyError, TypeError):
            return False
        except Exception:  # codecs with required arguments exist even when the bare config is refused
            return True
        return True
    import zarr.registry

    try:
        zarr.registry.get_codec_class(codec)
    except KeyError:
        return False
    return True


def _array_info(name: str, doc: dict, where: str) -> ArrayInfo:
    if doc.get("zarr_format") == 3:
        codecs = [c.get("name", "") for c in doc.get("codecs") or [] if isinstance(c, dict)]
        for codec in doc.get("codecs") or []:  # sharding nests the real codecs
            codecs += [c.get("name", "") for c in (codec.get("configuration") or {}).get("codecs") or []]
        encoding = doc.get("chunk_key_encoding") or {}
        separator = (encoding.get("configuration") or {}).get("separator")
        default = encoding.get("name", "default") == "default"
        chunks = doc["chunk_grid"]["configuration"]["chunk_shape"]
        return ArrayInfo(name, tuple(doc["shape"]), str(doc.get("data_type")), tuple(chunks), codecs, 3,
                         separator or ("/" if default else "."), default)
    codecs = [c["id"] for c in [doc.get("compressor"), *(doc.get("filters") or [])] if isinstance(c, dict)]
    try:
        return ArrayInfo(name, tuple(doc["shape"]), str(doc["dtype"]), tuple(doc["chunks"]), codecs, 2,
                         doc.get("dimension_separator") or ".", False)
    except KeyError as exc:
        raise DatasetError(where, f"array metadata lacks {exc}") from exc


_CACHE: OrderedDict[str, tuple[float, ZarrLayout]] = OrderedDict()
_LOCK = threading.Lock()
CACHE_SECONDS = 120.0  # long-lived workers re-list the store after this (chunks may have been added)


def load_layout(uri: str, storage_options: dict | None = None) -> ZarrLayout:
    """Array metadata, episode ends and the set of chunks present (memoized per process)."""
    key = json.dumps([uri, storage_options], sort_keys=True, default=str)
    with _LOCK:
        if key in _CACHE and time.monotonic() - _CACHE[key][0] < CACHE_SECONDS:
            return _CACHE[key][1]
    fs, root = open_root(uri, storage_options)
    layout = _zip_layout(uri, fs, root) if root.endswith(".zip") and fs.isfile(root) else _dir_layout(uri, fs, root)
    with _LOCK:
        _CACHE[key] = (time.monotonic(), layout)
        while len(_CACHE) > 16:
            _CACHE.popitem(last=False)
    return layout


def _metadata_docs(keys: dict[str, bytes], where: str) -> dict[str, dict]:
    docs = {}
    for key, data in keys.items():
        try:
            docs[key] = parse_json(data, f"{where}/{key}")
        except SourceError as exc:
            raise DatasetError(exc.path, exc.problem) from exc
    return docs


def _build(uri, fs, root, zip_path, listing: list[str], read) -> ZarrLayout:
    where = zip_path or root
    meta_names = {p for p in listing if p.rsplit("/", 1)[-1] in (".zarray", "zarr.json")}
    arrays: dict[str, ArrayInfo] = {}
    for path in sorted(meta_names):
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "data":
            doc = _metadata_docs({path: read(path)}, where)[path]
            if doc.get("zarr_format") == 3 and doc.get("node_type") != "array":
                continue
            arrays[parts[1]] = _array_info(parts[1], doc, f"{where}/{path}")
    ends_meta = next((p for p in ("meta/episode_ends/.zarray", "meta/episode_ends/zarr.json") if p in meta_names), None)
    if ends_meta is None or not arrays:
        raise DatasetError(where, "not a ReplayBuffer: needs data/<arrays> and meta/episode_ends")
    import zarr

    store = (zarr.storage.ZipStore(zip_path, mode="r") if zip_path else
             zarr.storage.LocalStore(root, read_only=True) if "file" in str(fs.protocol) else
             zarr.storage.FsspecStore.from_url(uri, read_only=True))
    ends = np.asarray(zarr.open_array(store, path="meta/episode_ends", mode="r")[:], dtype=np.int64).reshape(-1)
    if ends.size and (np.any(np.diff(ends) < 0) or ends[0] < 0):
        raise DatasetError(f"{where}/meta/episode_ends", "episode ends are not non-decreasing")
    return ZarrLayout(uri, fs, root, zip_path, arrays, ends, present=set(listing))


def _dir_layout(uri: str, fs: fsspec.AbstractFileSystem, root: str) -> ZarrLayout:
    if not fs.exists(root):
        raise DatasetError(uri, "does not exist")
    listing = [p[len(root) + 1:] for p in fs.find(root)]
    layout = _build(uri, fs, root, "", listing, lambda p: read_bounded(fs, join_inside(root, p), 16 * 1024 * 1024))
    layout.outside = {p for p in listing if not _resolves_inside(root, p)}
    return layout


def _resolves_inside(root: str, relative: str) -> bool:
    try:
        check_resolves_inside(root, f"{root}/{relative}")
    except SourceError:
        return False
    return True


def _check_contained(layout: ZarrLayout, info: ArrayInfo, start: int, stop: int, where: str, episode: str) -> None:
    """Refuse an episode whose chunks are symlinks out of the store (zarr would follow them)."""
    for _, key in info.chunk_keys(start, stop):
        name = f"data/{info.name}/{key}"
        if name in layout.outside:
            raise SourceError(where, f"refusing chunk {name}: it resolves outside the store (a symlink)", episode,
                              f"data/{info.name}")


def _zip_layout(uri: str, fs: fsspec.AbstractFileSystem, path: str) -> ZarrLayout:
    if "file" not in str(fs.protocol):
        raise DatasetError(uri, ".zarr.zip stores must be local files")
    with zipfile.ZipFile(path) as archive:
        listing = archive.namelist()
        docs = {name: archive.read(name) for name in listing if name.rsplit("/", 1)[-1] in (".zarray", "zarr.json")}
    return _build(uri, fs, path, path, listing, docs.__getitem__)
