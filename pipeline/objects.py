"""Content-addressed, immutable objects on any fsspec filesystem.

Every object lives at ``objects/<kind>/<sha[:2]>/<sha><ext>``. Writes never expose a partial
object: on local disk the bytes go to a temporary name in the same folder and are renamed into
place; on object stores a single PUT is already all-or-nothing. Writing an object that exists is
a no-op, which makes every stage idempotent and re-runs cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import fsspec

CHUNK = 8 * 1024 * 1024
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@dataclass(frozen=True)
class ObjectRef:
    path: str  # relative to the store root
    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}

    @staticmethod
    def from_json(data: dict) -> ObjectRef:
        return ObjectRef(str(data["path"]), str(data["sha256"]), int(data["bytes"]))


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


class ObjectStore:
    """Immutable objects under ``root`` (a local folder or an fsspec URL)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")

    def abspath(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    @staticmethod
    def object_path(kind: str, sha256: str, ext: str) -> str:
        return f"objects/{kind}/{sha256[:2]}/{sha256}{ext}"

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.abspath(relative))

    def put_bytes(self, kind: str, data: bytes, ext: str) -> ObjectRef:
        sha = hashlib.sha256(data).hexdigest()
        ref = ObjectRef(self.object_path(kind, sha, ext), sha, len(data))
        if not self.exists(ref.path):
            self.write_atomic(ref.path, data)
        return ref

    def put_stream(self, kind: str, open_source: Callable[[], BinaryIO], ext: str) -> ObjectRef:
        """Store a (possibly large) stream: hash it first, then copy it unless already present."""
        digest, size = hashlib.sha256(), 0
        with open_source() as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        ref = ObjectRef(self.object_path(kind, digest.hexdigest(), ext), digest.hexdigest(), size)
        if not self.exists(ref.path):
            with open_source() as source:
                self.write_atomic(ref.path, source)
        return ref

    def write_atomic(self, relative: str, data: bytes | BinaryIO) -> None:
        """Write a whole file so readers see all of it or nothing."""
        target = self.abspath(relative)
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if is_local(self.fs):
            temp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            try:
                with open(temp, "wb") as handle:
                    _copy_into(data, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, target)
            finally:
                if os.path.exists(temp):
                    os.unlink(temp)
        else:
            with self.fs.open(target, "wb") as handle:  # one PUT (or multipart commit): atomic
                _copy_into(data, handle)

    @contextlib.contextmanager
    def open_atomic(self, relative: str) -> Iterator[BinaryIO]:
        """A writable handle whose file appears at ``relative`` only if the block succeeds."""
        target = self.abspath(relative)
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        local_dir = parent if is_local(self.fs) else None
        handle = tempfile.NamedTemporaryFile(dir=local_dir, prefix=".tmp-", delete=False)
        try:
            with handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(handle.name, _FILE_MODE)
            if local_dir is not None:
                os.replace(handle.name, target)
            else:
                self.fs.put_file(handle.name, target)
        finally:
            if os.path.exists(handle.name):
                os.unlink(handle.name)

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open(self.abspath(relative), "rb") as handle:
            return handle.read()

    def sha256_of(self, relative: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(self.abspath(relative), "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


def _copy_into(data: bytes | BinaryIO, handle: BinaryIO) -> None:
    if isinstance(data, (bytes, bytearray, memoryview)):
        handle.write(data)
        return
    while chunk := data.read(CHUNK):
        handle.write(chunk)
