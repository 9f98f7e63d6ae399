"""Content-addressed, immutable objects on any fsspec filesystem.

Every object lives at ``objects/<kind>/<sha[:2]>/<sha><ext>``. Writes never expose a partial
object: on local disk the bytes go to a temporary name in the same folder and are renamed into
place; on object stores a single PUT is already all-or-nothing. Writing an object that exists is
a no-op, which makes every stage idempotent and re-runs cheap.
"""

from __future__ import annotations

import contextlib
import errno
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


def is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool({"s3", "s3a"} & set(protocols))


class ExclusiveWriteUnsupported(OSError):
    """The filesystem offers no atomic create-if-absent (commits need local disk or S3)."""


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

    def create_exclusive(self, relative: str, data: bytes) -> bool:
        """Create ``relative`` with ``data`` only if it does not exist: True if this call created it.

        The primitive behind ref commits. Local disk: the bytes go to a temporary file that is
        hard-linked to the target (``link`` fails when the target exists, and the target never
        appears half written). S3: one PUT with ``If-None-Match: *`` (conditional write); a 412 or a
        409 (another conditional write in flight) means someone else got there first.
        """
        target = self.abspath(relative)
        parent = target.rsplit("/", 1)[0]
        if is_local(self.fs):
            os.makedirs(parent, exist_ok=True)
            temp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            try:
                with open(temp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(temp, target)
                except FileExistsError:
                    return False
                _fsync_dir(parent)
                return True
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        if is_s3(self.fs):
            try:
                self.fs.pipe_file(target, data, mode="create")
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno == errno.EBUSY:  # 409 ConditionalRequestConflict
                    return False
                raise
            return True
        raise ExclusiveWriteUnsupported(f"{self.fs.protocol}: no atomic create-if-absent; use local disk or S3")

    def read_fresh(self, relative: str) -> bytes | None:
        """The bytes of ``relative`` read straight from storage (no listing cache), or None if absent."""
        try:
            return self.fs.cat_file(self.abspath(relative))
        except FileNotFoundError:
            return None

    def exists_fresh(self, relative: str) -> bool:
        """``exists`` without trusting a cached listing (another process may have written it since)."""
        path = self.abspath(relative)
        self.fs.invalidate_cache(path)
        return self.fs.exists(path)

    def list_dir(self, relative: str) -> list[str]:
        """Names directly under ``relative`` (files and folders), fresh from storage; [] if absent."""
        path = self.abspath(relative).rstrip("/")
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != path})

    def read_bytes(self, relative: str) -> bytes:
        with self._open_for_read(relative) as handle:
            return handle.read()

    def sha256_of(self, relative: str) -> str:
        digest = hashlib.sha256()
        with self._open_for_read(relative) as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _open_for_read(self, relative: str) -> BinaryIO:
        """Open an object, not trusting a cached listing that says it is absent.

        On S3, fsspec answers from the listing it cached when this process last listed the folder; an
        object another process (a Ray worker) wrote since is then "not found". A miss is asked again,
        once, of the storage itself.
        """
        path = self.abspath(relative)
        try:
            return self.fs.open(path, "rb")
        except FileNotFoundError:
            self.fs.invalidate_cache(path)
            return self.fs.open(path, "rb")


def _fsync_dir(path: str) -> None:
    """Make a new directory entry durable (a crash after commit must not lose the ref)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_into(data: bytes | BinaryIO, handle: BinaryIO) -> None:
    if isinstance(data, (bytes, bytearray, memoryview)):
        handle.write(data)
        return
    while chunk := data.read(CHUNK):
        handle.write(chunk)
