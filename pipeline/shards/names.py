"""View names: ``shard --name NAME`` records ``view-names/<NAME>.json`` -> the view id and its version.

A name is a label a person can remember for a content-addressed view id; naming a view again moves the
name to the new view (the file holds the latest). ``gc`` does not look there: a name never keeps a view
alive, and a name whose view was collected is listed as missing.
"""

from __future__ import annotations

import json
import re
import time

from pipeline.shards.manifest import view_dir
from pipeline.store.objects import ObjectStore

NAMES_DIR = "view-names"
VIEW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_view_name(name: str) -> str:
    if not VIEW_NAME.fullmatch(name):
        raise ValueError(f"bad view name {name!r}: letters, digits, '.', '_', '-', at most 100, "
                         "starting with a letter or digit")
    return name


def name_view(objects: ObjectStore, name: str, view_id: str, version_id: str) -> None:
    check_view_name(name)
    record = {"name": name, "view_id": view_id, "version_id": version_id, "named_at": time.time()}
    objects.write_atomic(f"{NAMES_DIR}/{name}.json", json.dumps(record, sort_keys=True).encode())


def view_names(objects: ObjectStore) -> dict[str, str]:
    """Every view id that has names -> its names, comma-joined (sorted)."""
    names: dict[str, list[str]] = {}
    for entry in objects.list_dir(NAMES_DIR):
        if entry.endswith(".json"):
            record = json.loads(objects.read_bytes(f"{NAMES_DIR}/{entry}"))
            names.setdefault(str(record["view_id"]), []).append(str(record["name"]))
    return {view_id: ",".join(sorted(found)) for view_id, found in names.items()}


def resolve_view_name(objects: ObjectStore, name: str) -> str | None:
    """The view id a name points at, or None when there is no such name."""
    if not VIEW_NAME.fullmatch(name) or not objects.exists(f"{NAMES_DIR}/{name}.json"):
        return None
    return str(json.loads(objects.read_bytes(f"{NAMES_DIR}/{name}.json"))["view_id"])


def list_views(objects: ObjectStore) -> list[dict]:
    """Every view of the store, oldest version first: id, names, version, size, cameras, shards, samples."""
    names = view_names(objects)
    rows = []
    for view_id in objects.list_dir("views"):
        path = f"{view_dir(view_id)}/view.json"
        if not objects.exists(path):
            rows.append({"view_id": view_id, "names": names.get(view_id, ""), "complete": False})
            continue
        data = json.loads(objects.read_bytes(path))
        config = data.get("config", {})
        rows.append({"view_id": view_id, "names": names.get(view_id, ""), "complete": True,
                     "version_id": data["version_id"], "size": f"{config.get('height')}x{config.get('width')}",
                     "frame_codec": config.get("frame_codec", ""), "cameras": list(data.get("cameras", [])),
                     "path": objects.abspath(view_dir(view_id)), **data.get("totals", {})})
    known = {row["view_id"] for row in rows}
    rows.extend({"view_id": view_id, "names": name, "complete": False, "missing": True}
                for view_id, name in names.items() if view_id not in known)
    return sorted(rows, key=lambda r: (r["names"] == "", r["names"], r["view_id"]))
