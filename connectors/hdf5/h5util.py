"""h5py access for the HDF5 connectors: files opened through fsspec, datasets read with named errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec
import h5py
import numpy as np

from connectors.base import DatasetError, EpisodeRef, SourceError
from connectors.common import natural_key, rgb_array
from connectors.fsutil import file_sha256, open_root

H5_SUFFIXES = (".hdf5", ".h5", ".he5")
FRAME_BATCH = 64
def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


@contextmanager
def open_h5(fs: fsspec.AbstractFileSystem, path: str, episode: str = "") -> Iterator[h5py.File]:
    """An HDF5 file for reading; a truncated or non-HDF5 file is a ``SourceError`` naming it."""
    handle = None
    try:
        try:
            if is_local(fs):
                h5 = h5py.File(path, "r")
            else:
                handle = fs.open(path, "rb")
                h5 = h5py.File(handle, "r")
        except FileNotFoundError as exc:
            raise SourceError(path, "file does not exist", episode, "file") from exc
        except OSError as exc:
            raise SourceError(path, f"not a readable HDF5 file (truncated or corrupt?): {exc}", episode,
                              "file") from exc
        with h5:
            refuse_foreign_storage(h5, path, episode)
            yield h5
    finally:
        if handle is not None:
            handle.close()


def refuse_foreign_storage(h5: h5py.File, path: str, episode: str = "") -> None:
    """Refuse a file whose bytes may come from other files: external links, external raw storage and
    virtual datasets mapping other files.

    HDF5 resolves those names against the working directory and environment prefixes
    (``HDF5_EXT_PREFIX``, ``HDF5_VDS_PREFIX``), not the dataset root, so no containment can be
    promised for them: an episode file must hold its own bytes. Links are visited without being
    followed (an external link is never opened).
    """
    problems: list[tuple[str, str]] = []

    def visit(name: str, link) -> None:
        if isinstance(link, h5py.ExternalLink):
            problems.append((name, f"an external link to {link.filename}:{link.path}"))
        elif isinstance(link, h5py.HardLink):
            item = h5.get(name)
            if isinstance(item, h5py.Dataset):
                if item.external:
                    problems.append((name, f"a dataset with external raw storage in {[e[0] for e in item.external]}"))
                elif item.is_virtual and any(v.file_name != "." for v in item.virtual_sources()):
                    problems.append((name, "a virtual dataset mapping "
                                     f"{sorted({v.file_name for v in item.virtual_sources()})}"))

    h5.visititems_links(visit)
    if problems:
        name, what = problems[0]
        raise SourceError(path, f"refusing HDF5 data stored outside this file: /{name} is {what} "
                          f"({len(problems)} such object(s))", episode, name)


def check_written(ds: h5py.Dataset, path: str, episode: str, field: str) -> None:
    """Refuse a dataset whose storage was never (fully) written: unwritten chunks read as the fill value
    (black frames, zero states) without any error from HDF5."""
    if ds.size == 0 or ds.is_virtual or ds.external:
        return
    if ds.chunks is None:
        if ds.id.get_storage_size() == 0 and ds.id.get_offset() is None:
            raise SourceError(path, f"{ds.name} was never written (it would read as the fill value)", episode,
                              field)
        return
    expected = 1
    for size, chunk in zip(ds.shape, ds.chunks, strict=True):
        expected *= -(-size // chunk)
    written = ds.id.get_num_chunks()
    if written < expected:
        raise SourceError(path, f"{ds.name}: {expected - written} of {expected} chunks were never written (they "
                          "would read as the fill value, not data)", episode, field)


def locate(uri: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    """The folder episode keys are relative to, and the HDF5 files there in natural order.

    ``uri`` is one file (the folder is its parent, the list holds only it) or a folder searched
    recursively.
    """
    fs, root = open_root(uri, storage_options)
    if not fs.exists(root):
        raise DatasetError(uri, "does not exist")
    if fs.isfile(root):
        folder, name = root.rsplit("/", 1) if "/" in root else (".", root)
        return fs, folder, [name]
    found = [p for p in fs.find(root) if p.lower().endswith(H5_SUFFIXES)]
    return fs, root, sorted((p[len(root) + 1:] for p in found), key=natural_key)


def get_dataset(group: h5py.Group, name: str, path: str, episode: str) -> h5py.Dataset:
    item = group.get(name)
    if item is None:
        raise SourceError(path, f"missing dataset {group.name.rstrip('/')}/{name}", episode, name)
    if not isinstance(item, h5py.Dataset):
        raise SourceError(path, f"{item.name} is a group, not a dataset", episode, name)
    check_written(item, path, episode, name)
    return item


def read_array(group: h5py.Group, name: str, path: str, episode: str, rows: int | None = None) -> np.ndarray:
    """A whole dataset as numpy; with ``rows`` its first dimension must equal the step count."""
    ds = get_dataset(group, name, path, episode)
    try:
        values = ds[()]
    except (OSError, ValueError, TypeError) as exc:
        raise SourceError(path, f"unreadable dataset {ds.name}: {exc}", episode, name) from exc
    values = np.asarray(values)
    if rows is not None and (values.ndim == 0 or values.shape[0] != rows):
        raise SourceError(path, f"shape mismatch: {ds.name} has shape {values.shape}, expected {rows} rows", episode,
                          name)
    if values.dtype.kind not in "fiub":
        raise SourceError(path, f"{ds.name} is not numeric (dtype {values.dtype})", episode, name)
    return values


def attr_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def raw_frames(fs: fsspec.AbstractFileSystem, path: str, dataset: str, episode: str, bgr: bool):
    """A frame producer over a (T, H, W, 3) uint8 dataset, read in batches (the file opens on demand)."""

    def produce() -> Iterator[np.ndarray]:
        with open_h5(fs, path, episode) as h5:
            ds = h5[dataset]
            check_written(ds, path, episode, dataset.lstrip("/"))
            for start in range(0, ds.shape[0], FRAME_BATCH):
                try:
                    batch = ds[start:start + FRAME_BATCH]
                except OSError as exc:
                    raise SourceError(path, f"unreadable frames from {start}: {exc}", episode, dataset) from exc
                for image in batch:
                    yield rgb_array(image, path, episode, dataset, bgr=bgr)

    return produce


def file_checksum(fs: fsspec.AbstractFileSystem, path: str, ref: EpisodeRef) -> str:
    digest = hashlib.sha256()
    identity = {"episode": ref.key, "dataset": ref.dataset,
                "options": {k: v for k, v in ref.options.items() if k != "storage_options"}}
    digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
    try:
        digest.update(file_sha256(fs, path).encode())
    except FileNotFoundError as exc:
        raise SourceError(path, "file does not exist", ref.key, "file") from exc
    return digest.hexdigest()
