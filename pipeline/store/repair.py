"""Restore corrupted stored objects (steps, videos) from their source episode.

Objects are content-addressed: a stored object's path names the SHA-256 of the bytes it must hold. To
repair one, the source episode is read and stored again through an object store that writes nothing
but the corrupted paths, and each of those only when the rebuilt bytes hash to the recorded id: the
bytes go to a temporary name, are hashed on the way, and are renamed into place only on a match. A
source that changed since ingest rebuilds to other bytes (another path): the corrupted object is then
left as it is and the repair is refused with that reason, never replaced with different bytes.

Used by ``actionreel versions verify --repair`` (pipeline.store.verify.repair_store) and by re-ingest
(pipeline.ingest: an ingest-memo hit whose stored objects fail their hash is rebuilt from the source).
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pipeline.store.episodes import EpisodeStore
from pipeline.store.objects import CHUNK, ObjectRef, ObjectStore, is_local
from pipeline.video import EncodeConfig
from schemas import Episode, EpisodeMeta


class RepairRefused(Exception):
    """An object cannot be restored from its source; the message says why."""


@dataclass
class ObjectRepair:
    path: str
    status: str  # repaired | refused
    reason: str = ""


def stored_corruptions(store: EpisodeStore, meta: EpisodeMeta) -> dict[str, str]:
    """The episode's steps and video objects whose bytes do not hash to their recorded id: path -> id."""
    wanted = {meta.steps_path: meta.steps_sha256, **{c.video_path: c.video_sha256 for c in meta.cameras}}
    return {path: sha for path, sha in wanted.items() if _sha256(store.objects, path) != sha}


def rebuild_objects(store: EpisodeStore, episode: Episode, targets: dict[str, str],
                    encode: EncodeConfig | None = None) -> list[ObjectRepair]:
    """Store ``episode`` again, writing only the ``targets`` (path -> recorded sha256) it rebuilds exactly."""
    objects = _TargetedObjects(store.objects, targets)
    repairing = copy.copy(store)
    repairing.objects = objects
    repairing.write_episode(episode, encode)
    out = []
    for path, sha in sorted(targets.items()):
        if path in objects.rewritten and _sha256(store.objects, path) == sha:
            out.append(ObjectRepair(path, "repaired"))
        else:
            rebuilt = objects.produced.get(_kind_of(path), [])
            out.append(ObjectRepair(path, "refused", (
                f"the source rebuilds to other bytes ({', '.join(r[:16] for r in rebuilt) or 'nothing'}) than the "
                f"recorded {sha[:16]}: the source changed since ingest (or another encode config was used); "
                "the stored object is left as it is")))
    return out


def _kind_of(path: str) -> str:
    return path.split("/")[1] if path.startswith("objects/") else ""


class _TargetedObjects(ObjectStore):
    """An object store that writes only the target paths, and each only with bytes of its recorded hash."""

    def __init__(self, base: ObjectStore, targets: dict[str, str]) -> None:
        super().__init__(base.fs, base.root)
        self.targets = dict(targets)
        self.rewritten: list[str] = []
        self.produced: dict[str, list[str]] = {}  # kind -> sha256 of every object the rebuild produced

    def put_bytes(self, kind: str, data: bytes, ext: str) -> ObjectRef:
        sha = hashlib.sha256(data).hexdigest()
        return self._put(kind, sha, ext, len(data), lambda: iter([data]))

    def put_stream(self, kind: str, open_source: Callable[[], BinaryIO], ext: str) -> ObjectRef:
        digest, size = hashlib.sha256(), 0
        with open_source() as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)

        def chunks() -> Iterator[bytes]:
            with open_source() as source:
                while chunk := source.read(CHUNK):
                    yield chunk
        return self._put(kind, digest.hexdigest(), ext, size, chunks)

    def _put(self, kind: str, sha: str, ext: str, size: int, chunks: Callable[[], Iterator[bytes]]) -> ObjectRef:
        ref = ObjectRef(self.object_path(kind, sha, ext), sha, size)
        self.produced.setdefault(kind, []).append(sha)
        if self.targets.get(ref.path) == sha and _write_verified(self, ref.path, chunks(), sha):
            self.rewritten.append(ref.path)
        return ref

    def write_atomic(self, relative: str, data) -> None:
        raise RepairRefused(f"a repair writes stored objects only, not {relative}")


def _write_verified(objects: ObjectStore, relative: str, chunks: Iterator[bytes], sha: str) -> bool:
    """Write ``chunks`` to ``relative`` through a temporary name, renamed into place only if they hash to
    ``sha`` (the source is read a second time: it may change between the two reads)."""
    target = objects.abspath(relative)
    parent = target.rsplit("/", 1)[0]
    local = is_local(objects.fs)
    if local:
        os.makedirs(parent, exist_ok=True)
    if local:
        temp = f"{parent}/.tmp-{uuid.uuid4().hex}"
    else:
        handle_fd, temp = tempfile.mkstemp(prefix=".tmp-repair-")
        os.close(handle_fd)
    digest = hashlib.sha256()
    try:
        with open(temp, "wb") as handle:
            for chunk in chunks:
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if digest.hexdigest() != sha:
            return False
        if local:
            os.replace(temp, target)
        else:
            objects.fs.put_file(temp, target)  # one PUT: all or nothing
        return True
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _sha256(objects: ObjectStore, relative: str) -> str:
    try:
        return objects.sha256_of(relative)
    except FileNotFoundError:
        return "missing"
