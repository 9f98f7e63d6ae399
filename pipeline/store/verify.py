"""Verify: re-hash every object of some versions (and of their views) against the hashes recorded.

Checked, each once however many episodes share it: the version manifests (their id is their
SHA-256), catalog layers, stats, every live episode's steps and video objects, and for every view
of those versions each shard tar and shard index. A mismatch names the file, what it is and who
uses it (``episode X camera top video``, ``view V shard K tar``), with the expected and actual
hash ("missing" when the file is gone). Hashing runs on a thread pool (it is I/O bound on S3).

``repair_store`` restores the corrupted steps and video objects of a report from their source
episodes (pipeline.store.repair: rebuilt bytes must hash to the recorded id, written through a
temporary name); everything else (catalog layers, stats, manifests, shards) has no source to be
rebuilt from and is reported as not repairable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from pipeline.shards.manifest import ViewManifest
from pipeline.store.catalog import scan_catalog
from pipeline.store.episodes import EpisodeStore
from pipeline.store.gc import reachable_versions
from pipeline.store.repair import ObjectRepair, RepairRefused, rebuild_objects
from pipeline.store.versions import VersionManifest, read_manifest
from schemas import Episode, EpisodeMeta, row_to_meta


@dataclass
class Mismatch:
    path: str
    what: str
    used_by: str
    expected: str
    actual: str  # a sha256, "missing", or "unreadable: <reason>"

    def __str__(self) -> str:
        return f"{self.path} ({self.what}, {self.used_by}): expected {self.expected[:16]}, got {self.actual[:16]}"


@dataclass
class VerifyReport:
    versions: list[str]
    views: list[str]
    objects: int = 0
    bytes: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Check:
    path: str
    expected: str
    what: str
    used_by: list[str] = field(default_factory=list)


class _Checks:
    def __init__(self) -> None:
        self.items: dict[str, _Check] = {}

    def add(self, path: str, expected: str, what: str, used_by: str) -> None:
        check = self.items.setdefault(path, _Check(path, expected, what))
        if len(check.used_by) < 3:
            check.used_by.append(used_by)


def verify_store(store: EpisodeStore, versions: list[str] | None = None, views: bool = True,
                 threads: int = 8) -> VerifyReport:
    """Verify ``versions`` (default: every version a ref reaches) and their views."""
    chosen = sorted(versions if versions is not None else reachable_versions(store))
    report = VerifyReport(chosen, [])
    checks = _Checks()
    for version_id in chosen:
        manifest = _manifest(store, version_id, report)
        if manifest is not None:
            _version_checks(store, version_id, manifest, checks, report)
    if views:
        _view_checks(store, set(chosen), checks, report)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for check, (actual, size) in zip(checks.items.values(), pool.map(lambda c: _hash(store, c.path),
                                                                        checks.items.values()), strict=True):
            report.objects += 1
            report.bytes += size
            if actual != check.expected:
                report.mismatches.append(Mismatch(check.path, check.what, "; ".join(check.used_by), check.expected,
                                                  actual))
    report.mismatches.sort(key=lambda m: m.path)
    return report


def _manifest(store: EpisodeStore, version_id: str, report: VerifyReport) -> VersionManifest | None:
    path = f"versions/{version_id}.json"
    actual, size = _hash(store, path)
    report.objects += 1
    report.bytes += size
    if actual != version_id:
        report.mismatches.append(Mismatch(path, "version manifest", f"version {version_id[:12]}", version_id, actual))
        return None
    return VersionManifest.from_json(json.loads(store.objects.read_bytes(path)))


def _version_checks(store: EpisodeStore, version_id: str, manifest: VersionManifest, checks: _Checks,
                    report: VerifyReport) -> None:
    short = version_id[:12]
    bad_layers = []
    for layer in manifest.catalog:
        actual, _ = _hash(store, layer.path)
        if actual != layer.sha256:
            bad_layers.append(layer.path)
            report.mismatches.append(Mismatch(layer.path, "catalog layer", f"version {short}", layer.sha256, actual))
    if manifest.stats:
        checks.add(manifest.stats.path, manifest.stats.sha256, "stats", f"version {short}")
    if bad_layers:
        return  # a corrupt catalog cannot be trusted to name the episodes' objects
    for batch in scan_catalog(store, manifest, ["episode_id", "steps_path", "steps_sha256", "cameras"]):
        for row in batch.to_pylist():
            episode = row["episode_id"]
            checks.add(row["steps_path"], row["steps_sha256"], "steps", f"episode {episode}")
            for cam in row["cameras"] or []:
                checks.add(cam["video_path"], cam["video_sha256"], "video", f"episode {episode} camera {cam['name']}")


def _view_checks(store: EpisodeStore, versions: set[str], checks: _Checks, report: VerifyReport) -> None:
    for view_id in store.objects.list_dir("views"):
        path = f"views/{view_id}/view.json"
        try:
            view = ViewManifest.from_json(json.loads(store.objects.read_bytes(path)))
        except (FileNotFoundError, ValueError, KeyError) as exc:
            report.mismatches.append(Mismatch(path, "view manifest", f"view {view_id[:12]}", "a view manifest",
                                              f"unreadable: {exc}"))
            continue
        if view.version_id not in versions:
            continue
        report.views.append(view_id)
        for number, shard in enumerate(view.shards):
            who = f"view {view_id[:12]} shard {number} ({shard.name[:12]})"
            checks.add(shard.tar_path, shard.tar_sha256, "shard tar", who)
            if shard.index_sha256:
                checks.add(shard.index_path, shard.index_sha256, "shard index", who)


def _hash(store: EpisodeStore, path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    try:
        with store.fs.open(store.objects.abspath(path), "rb") as handle:
            while chunk := handle.read(8 * 1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return "missing", 0
    except OSError as exc:
        return f"unreadable: {exc}", 0
    return digest.hexdigest(), size


SourceReader = Callable[[str, EpisodeMeta], Episode]  # (version id, catalog row) -> the source episode
_REBUILDABLE = {"steps", "video"}
_NOT_REBUILDABLE = {
    "shard tar": "re-run the shard job after removing the shard's tar and index",
    "shard index": "re-run the shard job after removing the shard's tar and index",
}


@dataclass
class RepairReport:
    repairs: list[ObjectRepair] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status == "repaired" for r in self.repairs)

    def to_json(self) -> dict:
        return {"repairs": [asdict(r) for r in self.repairs], "ok": self.ok}


def repair_store(store: EpisodeStore, report: VerifyReport, read_source: SourceReader) -> RepairReport:
    """Restore every steps and video mismatch of ``report`` from a source episode that uses the object."""
    wanted = {m.path: m for m in report.mismatches if m.what in _REBUILDABLE}
    users = _object_users(store, report.versions, set(wanted))
    out = RepairReport()
    for mismatch in report.mismatches:
        if mismatch.what not in _REBUILDABLE:
            hint = _NOT_REBUILDABLE.get(mismatch.what, "it is written by the store itself, not read from a source")
            out.repairs.append(ObjectRepair(mismatch.path, "refused", f"a {mismatch.what} is not repairable: {hint}"))
            continue
        out.repairs.append(_repair_one(store, mismatch, users.get(mismatch.path, []), read_source))
    return out


def _repair_one(store: EpisodeStore, mismatch: Mismatch, users: list[tuple[str, EpisodeMeta]],
                read_source: SourceReader) -> ObjectRepair:
    if not users:
        return ObjectRepair(mismatch.path, "refused", "no live episode of the verified versions uses it")
    reasons = []
    for version_id, meta in users:  # the first episode whose source rebuilds it
        try:
            episode = read_source(version_id, meta)
            result = rebuild_objects(store, episode, {mismatch.path: mismatch.expected})[0]
        except RepairRefused as exc:
            result = ObjectRepair(mismatch.path, "refused", str(exc))
        except Exception as exc:  # a source that no longer reads: the reason, never a traceback
            result = ObjectRepair(mismatch.path, "refused", f"reading the source failed: {type(exc).__name__}: {exc}")
        if result.status == "repaired":
            return result
        reasons.append(f"episode {meta.episode_id}: {result.reason}")
    return ObjectRepair(mismatch.path, "refused", "; ".join(reasons))


Users = dict[str, list[tuple[str, EpisodeMeta]]]


def _object_users(store: EpisodeStore, versions: list[str], paths: set[str]) -> Users:
    """Per object path, the (version, catalog row) of every live episode that uses it."""
    found: Users = {}
    if not paths:
        return found
    for version_id in versions:
        try:
            manifest = read_manifest(store, version_id)
        except (FileNotFoundError, ValueError, KeyError):
            continue
        for batch in scan_catalog(store, manifest):
            for row in batch.to_pylist():
                used = {row["steps_path"], *(c["video_path"] for c in row["cameras"] or [])} & paths
                if used:
                    meta = row_to_meta(row)
                    for path in used:
                        found.setdefault(path, []).append((version_id, meta))
    return found
