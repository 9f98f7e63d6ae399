"""RLDS / Open X-Embodiment / TFDS TFRecord connector, without TensorFlow.

A dataset is a TFDS build folder (``dataset_info.json``, ``features.json`` and
``<name>-<split>.tfrecord-XXXXX-of-YYYYY`` shards), a builder folder holding version folders, or
one TFRecord file. Each record is one episode; its key is ``<shard file>:<record index>``.
Options: ``fps``, ``embodiment``, ``camera_keys``, ``bgr_cameras``, ``state_keys``,
``action_keys``, ``instruction_key``, ``splits`` (see docs/formats.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import fsspec

from connectors.base import DatasetError, Discovery, EpisodeRef, SourceError
from connectors.common import dataset_name, option_list, option_rate
from connectors.fsutil import join_inside, open_root, read_json
from connectors.rlds.features import DatasetInfo, FeatureSpec, parse_dataset_info, parse_features, parse_shard_name
from connectors.rlds.reader import read_rlds_episode
from connectors.rlds.tfrecord import RecordSpan, read_record, scan_framing, scan_records
from schemas import Episode

__all__ = ["RldsConnector"]

# Control rates and robots of well-known Open X-Embodiment datasets; anything else needs the options.
KNOWN_DATASETS = {
    "bridge_dataset": (Fraction(5), "widowx"), "bridge": (Fraction(5), "widowx"),
    "fractal20220817_data": (Fraction(3), "google_robot"), "language_table": (Fraction(10), "xarm"),
    "droid": (Fraction(15), "franka"),
}
DEFAULT_FPS = Fraction(10)


@dataclass
class RldsLayout:
    fs: fsspec.AbstractFileSystem
    root: str
    files: list[str]  # paths relative to root
    info: DatasetInfo
    specs: dict[str, FeatureSpec] = field(default_factory=dict)


class RldsConnector:
    name: ClassVar[str] = "rlds"
    description: ClassVar[str] = ("RLDS / Open X-Embodiment / TFDS TFRecord datasets (dataset_info.json, "
                                  "features.json, tf.train.Example episodes), read without TensorFlow")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        fs, root = open_root(uri, storage_options)
        if fs.isfile(root):
            return ".tfrecord" in root.rsplit("/", 1)[-1]
        return bool(_shard_files(fs, _version_dir(fs, root)))

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        layout = load_layout(uri, options.get("storage_options"))
        dataset = dataset_name(uri if not layout.info.name else layout.info.name, options)
        wanted = option_list(options, "splits")
        fps, assumed = _rate(layout, options)
        warnings = [f"control rate unknown for this dataset: assumed {fps} Hz (pass the fps option)"] if assumed else []
        refs, missing = [], []
        for relative in layout.files:
            split = _split_of(relative, options)
            if wanted is not None and split not in wanted:
                continue
            declared = _declared_count(layout, relative, split)
            try:
                path = join_inside(layout.root, relative)
            except SourceError as exc:  # a shard symlinked out of the dataset: its records are not read
                missing.append((relative, f"{exc.problem} (declared records: "
                                          f"{'unknown' if declared is None else declared})"))
                continue
            with layout.fs.open(path, "rb") as handle:
                scan = scan_framing(handle, path, layout.fs.size(path))
            spans = scan.spans
            warnings.extend(f"{path}: {problem}" for problem in scan.problems)
            if declared is not None and declared != len(spans):
                warnings.append(f"{path}: dataset_info.json declares {declared} records, the file frames {len(spans)}")
            missing.extend(_unread(relative, len(spans), declared, scan.gaps))
            for span in spans:
                refs.append(EpisodeRef(format=self.name, dataset=dataset, uri=uri, key=f"{relative}:{span.index}",
                                       options={**options, "record": [span.offset, span.length]}))
        if not refs and not missing:
            raise DatasetError(uri, "no TFRecord episodes found" + (f" in splits {wanted}" if wanted else ""))
        return Discovery(format=self.name, dataset=dataset, uri=uri, refs=refs, missing=missing, warnings=warnings)

    def checksum(self, ref: EpisodeRef) -> str:
        layout = load_layout(ref.uri, ref.options.get("storage_options"))
        digest = hashlib.sha256()
        identity = {"episode": ref.key, "dataset": ref.dataset, "features": sorted(layout.specs.items()),
                    "options": {k: v for k, v in ref.options.items() if k != "storage_options"}}
        digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
        digest.update(_record(layout, ref))
        return digest.hexdigest()

    def read(self, ref: EpisodeRef) -> Episode:
        layout = load_layout(ref.uri, ref.options.get("storage_options"))
        relative = ref.key.rsplit(":", 1)[0]
        fps, _ = _rate(layout, ref.options)
        defaults = {"embodiment": KNOWN_DATASETS.get(layout.info.name, (None, "unknown"))[1]}
        return read_rlds_episode(_record(layout, ref), layout.specs, ref, join_inside(layout.root, relative),
                                 _split_of(relative, ref.options), fps, defaults)


def _record(layout: RldsLayout, ref: EpisodeRef) -> bytes:
    relative, index = ref.key.rsplit(":", 1)
    path = join_inside(layout.root, relative)
    record = ref.options.get("record")
    with layout.fs.open(path, "rb") as handle:
        if record is not None:
            span = RecordSpan(int(index), int(record[0]), record[1])
        else:
            spans, _ = scan_records(handle, path, layout.fs.size(path))
            if int(index) >= len(spans):
                raise SourceError(path, f"the file has {len(spans)} records", ref.key, "tfrecord")
            span = spans[int(index)]
        return read_record(handle, span, path, ref.key)


def _unread(relative: str, located: int, declared: int | None, gaps: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """Missing entries for records the file's framing hides: the declared count says how many; without
    one, each skipped byte range counts as (at least) one record."""
    where = ", ".join(f"bytes {a}..{b - 1}" for a, b in gaps)
    if declared is not None and declared > located:
        reason = (f"dataset_info.json declares {declared} records, {located} could be located"
                  + (f" (unreadable framing at {where})" if where else " (the file ends early)"))
        return [(f"{relative}:unread-{k}", reason) for k in range(declared - located)]
    if declared is None:
        return [(f"{relative}:gap-{a}", f"bytes {a}..{b - 1} hold no locatable record (bad framing): an unknown "
                 "number of records is lost there") for a, b in gaps]
    return []


def _rate(layout: RldsLayout, options: dict) -> tuple[Fraction, bool]:
    """The control rate and whether it was assumed (no option, dataset not in the known table)."""
    fps = option_rate(options)
    if fps is not None:
        return fps, False
    known = KNOWN_DATASETS.get(layout.info.name)
    return (known[0], False) if known else (DEFAULT_FPS, True)


def _split_of(relative: str, options: dict) -> str:
    parsed = parse_shard_name(relative.rsplit("/", 1)[-1])
    return parsed[1] if parsed else str(options.get("source_split", "train"))


def _declared_count(layout: RldsLayout, relative: str, split: str) -> int | None:
    lengths = layout.info.splits.get(split)
    name = relative.rsplit("/", 1)[-1]
    if not lengths or "-of-" not in name:
        return None
    shard = int(name.rsplit("-of-", 1)[0].rsplit("-", 1)[-1])
    return lengths[shard] if shard < len(lengths) else None


def _version_dir(fs: fsspec.AbstractFileSystem, root: str) -> str:
    """A builder folder holds version folders (``1.0.0/``): pick the highest one with shards."""
    if _shard_files(fs, root):
        return root
    versions = []
    for entry in fs.ls(root, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        parts = name.split(".")
        if entry.get("type") == "directory" and all(p.isdigit() for p in parts):
            versions.append((tuple(int(p) for p in parts), entry["name"].rstrip("/")))
    for _, path in sorted(versions, reverse=True):
        if _shard_files(fs, path):
            return path
    return root


def _shard_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if ".tfrecord" in n)


_CACHE: OrderedDict[str, tuple[float, RldsLayout]] = OrderedDict()
_LOCK = threading.Lock()
CACHE_SECONDS = 120.0  # long-lived workers re-read the metadata after this


def load_layout(uri: str, storage_options: dict | None = None) -> RldsLayout:
    """The dataset's shard files and feature specs (memoized per process: workers read many episodes)."""
    key = json.dumps([uri, storage_options], sort_keys=True, default=str)
    with _LOCK:
        if key in _CACHE and time.monotonic() - _CACHE[key][0] < CACHE_SECONDS:
            return _CACHE[key][1]
    fs, root = open_root(uri, storage_options)
    if fs.isfile(root):
        folder, name = root.rsplit("/", 1) if "/" in root else (".", root)
        layout = RldsLayout(fs, folder, [name], DatasetInfo())
    else:
        root = _version_dir(fs, root)
        files = _shard_files(fs, root)
        if not files:
            raise DatasetError(uri, "no *.tfrecord* files (is this a TFDS build folder?)")
        layout = RldsLayout(fs, root, files, DatasetInfo())
    info_path, features_path = f"{layout.root}/dataset_info.json", f"{layout.root}/features.json"
    if fs.exists(info_path):
        layout.info = parse_dataset_info(read_json(fs, info_path))
    if fs.exists(features_path):
        layout.specs = parse_features(read_json(fs, features_path), features_path)
    with _LOCK:
        _CACHE[key] = (time.monotonic(), layout)
        while len(_CACHE) > 64:
            _CACHE.popitem(last=False)
    return layout
