"""Refs: human names (``latest``, ``v3``, ``paper-2026``) for content-addressed version ids.

Works on a bare ``ObjectStore`` so loaders can resolve a ref without the store writer.
"""

from __future__ import annotations

import re
import time

from pipeline.objects import ObjectStore

REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


class VersionError(Exception):
    """A version or ref cannot be resolved or committed."""


def resolve_version_id(objects: ObjectStore, name_or_id: str) -> str:
    """A ref name, a full version id or a unique id prefix -> the version id."""
    if REF_NAME.match(name_or_id) and objects.exists(f"refs/{name_or_id}"):
        version_id = objects.read_bytes(f"refs/{name_or_id}").decode().strip()
    elif VERSION_ID.match(name_or_id):
        version_id = name_or_id
    elif re.fullmatch(r"[0-9a-f]{4,63}", name_or_id):
        pattern = objects.abspath(f"versions/{name_or_id}*.json")
        matches = [p.rsplit("/", 1)[-1][: -len(".json")] for p in objects.fs.glob(pattern)]
        if len(matches) != 1:
            raise VersionError(f"{name_or_id!r} matches {len(matches)} versions in {objects.root}")
        version_id = matches[0]
    else:
        raise VersionError(f"{name_or_id!r} is neither a ref nor a version id in {objects.root}")
    if not objects.exists(f"versions/{version_id}.json"):
        raise VersionError(f"no version {version_id} in {objects.root}")
    return version_id


def set_ref(objects: ObjectStore, name: str, version_id: str) -> None:
    if not REF_NAME.match(name) or ".." in name:
        raise VersionError(f"bad ref name {name!r}")
    if not objects.exists(f"versions/{version_id}.json"):
        raise VersionError(f"no version {version_id}")
    objects.write_atomic(f"refs/{name}", f"{version_id}\n".encode())
    _append_log(objects, name, version_id)


def _append_log(objects: ObjectStore, name: str, version_id: str) -> None:
    entry = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {version_id}\n".encode()
    path = f"refs/.log/{name}"
    previous = objects.read_bytes(path) if objects.exists(path) else b""
    objects.write_atomic(path, previous + entry)
