"""Refs: human names (``latest``, ``v3``, ``paper-2026``) for content-addressed version ids.

A ref is an append-only log of numbered entries, and its head is the highest entry:

    refs/<name>/log/000000000001.json   {"ref", "seq", "version", "previous", "time", "nonce"}
    refs/<name>/log/000000000002.json   ...
    refs/<name>/HEAD                    "<seq> <version>": a hint, written after each commit

Moving a ref is a compare-and-swap: read the head (seq ``n``, version ``v``), check ``v`` is the
expected version, then *create* entry ``n + 1`` with create-if-absent semantics (hard link on
local disk, ``If-None-Match: *`` on S3). Of two writers racing from the same head exactly one
creates the entry; the other gets ``RefConflict`` naming the new head and can retry on it. An
entry appears whole or not at all, so a writer killed mid-commit leaves the ref on a complete
version. The hint may lag (it is never ahead, being written after the entry): readers start from
it and probe forward, so a lost hint costs a few reads, never correctness. The log doubles as the
ref's history (``ref_log``). Works on a bare ``ObjectStore`` so loaders resolve refs without the
store writer.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass

from pipeline.store.objects import ObjectStore

REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
_PROBE_LIMIT = 100_000


class VersionError(Exception):
    """A version or ref cannot be resolved or committed."""


class RefConflict(VersionError):
    """The ref moved since it was read: someone else committed first. Retry on ``actual``."""

    def __init__(self, ref: str, expected: str | None, actual: str | None) -> None:
        self.ref, self.expected, self.actual = ref, expected, actual
        super().__init__(f"ref {ref!r} conflict: expected head {expected or '(none)'}, "
                         f"found {actual or '(none)'}; rebuild on the new head and retry")


@dataclass(frozen=True)
class RefEntry:
    ref: str
    seq: int
    version: str
    previous: str | None
    time: str
    nonce: str = ""
    message: str = ""

    def to_json(self) -> dict:
        return {"ref": self.ref, "seq": self.seq, "version": self.version, "previous": self.previous,
                "time": self.time, "nonce": self.nonce, "message": self.message}

    @staticmethod
    def from_json(data: dict) -> RefEntry:
        return RefEntry(str(data["ref"]), int(data["seq"]), str(data["version"]), data.get("previous"),
                        str(data.get("time", "")), str(data.get("nonce", "")), str(data.get("message", "")))


def check_ref_name(name: str) -> None:
    if not REF_NAME.match(name) or ".." in name:
        raise VersionError(f"bad ref name {name!r} (letters, digits, '.', '_', '-'; at most 100)")


def _entry_path(name: str, seq: int) -> str:
    return f"refs/{name}/log/{seq:012d}.json"


def _read_entry(objects: ObjectStore, name: str, seq: int) -> RefEntry | None:
    data = objects.read_fresh(_entry_path(name, seq))
    return None if data is None else RefEntry.from_json(json.loads(data))


def read_head(objects: ObjectStore, name: str) -> RefEntry | None:
    """The ref's current head entry, or None when the ref does not exist."""
    check_ref_name(name)
    hint = objects.read_fresh(f"refs/{name}/HEAD")
    seq = int(hint.split()[0]) if hint else 0
    entry = _read_entry(objects, name, seq) if seq else None
    if seq and entry is None:  # hint without its entry (ref deleted and re-created): fall back to a listing
        entries = ref_log(objects, name)
        if not entries:
            return None
        entry, seq = entries[-1], entries[-1].seq
    for _ in range(_PROBE_LIMIT):
        following = _read_entry(objects, name, seq + 1)
        if following is None:
            return entry
        entry, seq = following, seq + 1
    raise VersionError(f"ref {name!r}: more than {_PROBE_LIMIT} entries past its HEAD hint")


def update_ref(objects: ObjectStore, name: str, version_id: str, expect: str | None, message: str = "") -> RefEntry:
    """Compare-and-swap: move ``name`` from ``expect`` (None: the ref must not exist) to ``version_id``."""
    check_ref_name(name)
    if not objects.exists_fresh(f"versions/{version_id}.json"):
        raise VersionError(f"no version {version_id} in {objects.root}")
    head = read_head(objects, name)
    current = head.version if head else None
    if current != expect:
        raise RefConflict(name, expect, current)
    seq = head.seq + 1 if head else 1
    entry = RefEntry(name, seq, version_id, current, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     uuid.uuid4().hex, message)
    data = json.dumps(entry.to_json(), sort_keys=True).encode()
    try:
        created = objects.create_exclusive(_entry_path(name, seq), data)
    except OSError:
        landed = _read_entry(objects, name, seq)  # an ambiguous failure: did our entry land after all?
        if landed is None or landed.nonce != entry.nonce:
            raise
        created = True
    if not created:
        head = read_head(objects, name)
        raise RefConflict(name, expect, head.version if head else None)
    objects.write_atomic(f"refs/{name}/HEAD", f"{seq} {version_id}\n".encode())
    return entry


def set_ref(objects: ObjectStore, name: str, version_id: str, message: str = "", attempts: int = 20) -> RefEntry:
    """Point ``name`` at ``version_id`` whatever it points at now (a forced move, still linearized)."""
    for _ in range(attempts):
        head = read_head(objects, name)
        if head is not None and head.version == version_id:
            return head
        try:
            return update_ref(objects, name, version_id, head.version if head else None, message)
        except RefConflict:
            time.sleep(0.01)
    raise VersionError(f"ref {name!r}: gave up after {attempts} conflicting attempts")


def ref_log(objects: ObjectStore, name: str) -> list[RefEntry]:
    """Every entry of a ref, oldest first (its history of moves)."""
    check_ref_name(name)
    entries = []
    for file in objects.list_dir(f"refs/{name}/log"):
        if re.fullmatch(r"\d{12}\.json", file):
            entry = _read_entry(objects, name, int(file[:12]))
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda e: e.seq)


def list_refs(objects: ObjectStore) -> dict[str, str]:
    """Every ref name -> the version id at its head."""
    out = {}
    for name in objects.list_dir("refs"):
        if REF_NAME.match(name):
            head = read_head(objects, name)
            if head is not None:
                out[name] = head.version
    return out


def delete_ref(objects: ObjectStore, name: str) -> None:
    """Remove a ref and its log: what only it reached becomes garbage for ``gc``."""
    check_ref_name(name)
    path = objects.abspath(f"refs/{name}")
    if not objects.fs.exists(path):
        raise VersionError(f"no ref {name!r} in {objects.root}")
    objects.fs.rm(path, recursive=True)


def resolve_version_id(objects: ObjectStore, name_or_id: str) -> str:
    """A ref name, a full version id or a unique id prefix -> the version id."""
    head = read_head(objects, name_or_id) if REF_NAME.match(name_or_id) and ".." not in name_or_id else None
    if head is not None:
        version_id = head.version
    elif VERSION_ID.match(name_or_id):
        version_id = name_or_id
    elif re.fullmatch(r"[0-9a-f]{4,63}", name_or_id):
        pattern = objects.abspath(f"versions/{name_or_id}*.json")
        objects.fs.invalidate_cache(objects.abspath("versions"))
        matches = [p.rsplit("/", 1)[-1][: -len(".json")] for p in objects.fs.glob(pattern)]
        if len(matches) != 1:
            raise VersionError(f"{name_or_id!r} matches {len(matches)} versions in {objects.root}")
        version_id = matches[0]
    else:
        raise VersionError(f"{name_or_id!r} is neither a ref nor a version id in {objects.root}")
    if not objects.exists_fresh(f"versions/{version_id}.json"):
        raise VersionError(f"no version {version_id} in {objects.root}")
    return version_id
