"""Generation-output folders: which files belong to which generated video, and which request made it.

A folder (any depth) holds generated videos ``{name}.mp4`` with optional sidecars beside them:
``{name}.json`` (the resolved generation spec), ``{name}.txt`` (the prompt),
``{name}_control_{depth,edge,seg,vis,blur,wsm}.mp4`` (control videos) and commanded actions
(``{name}_actions.npy|json|parquet`` or ``{name}.npy|parquet``). Any other JSON holding
``samples: {sample: {...}}`` (or a single flat sample with ``inference_type``) is a Cosmos-style
request spec. A video pairs with the request sample of its own name, or with the one an explicit
mapping names (``{"out.mp4": "sample"}``, ``"spec.json#sample"`` or ``{"sample": ..., "spec": ...}``):
the nearest spec (fewest folders apart) wins; a tie is an error for a mapping, a warning otherwise.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from connectors.base import DatasetError, SourceError
from connectors.fsutil import join_inside, open_root, read_json

CONTROL_KINDS = ("depth", "edge", "seg", "vis", "blur", "wsm")
_CONTROL = re.compile(r"^(?P<stem>.+)_control_(?P<kind>" + "|".join(CONTROL_KINDS) + r")$")
ACTION_SUFFIXES = ("_actions.npy", "_actions.json", "_actions.parquet", ".npy", ".parquet")
MAX_FILES = 500_000
MAX_SPEC_BYTES = 1024 * 1024


@dataclass
class Output:
    """One generated video and the files that describe it (paths relative to the root)."""

    video: str
    sidecar: str = ""  # {name}.json: the resolved spec
    prompt_file: str = ""  # {name}.txt
    controls: dict[str, str] = field(default_factory=dict)  # kind -> {name}_control_{kind}.mp4
    actions: str = ""
    spec: str = ""  # request spec holding the sample
    sample: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)  # from the mapping entry

    def files(self) -> list[str]:
        """Every file the episode is read from (its checksum covers them)."""
        return sorted({p for p in (self.video, self.sidecar, self.prompt_file, self.actions, self.spec,
                                   *self.controls.values()) if p})

    @staticmethod
    def from_json(data: dict) -> Output:
        return Output(**data)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Scan:
    outputs: list[Output]
    warnings: list[str]
    specs: list[str]  # request specs found (paired or not)


def scan(uri: str, options: dict) -> Scan:
    """Find the generated videos under ``uri`` and pair each with its sidecars and request sample."""
    fs, root = open_root(uri, options.get("storage_options"))
    if not fs.isdir(root):
        raise DatasetError(uri, "not a folder of generation outputs")
    files = _relative_files(fs, root, int(options.get("max_files", MAX_FILES)))
    names = set(files)
    videos = [f for f in files if f.lower().endswith(".mp4") and not _CONTROL.match(_stem(f))]
    if not videos:
        raise DatasetError(uri, "no generated .mp4 videos found")
    claimed = {_sibling(v, ext) for v in videos for ext in (".json", *ACTION_SUFFIXES)}
    specs = _request_specs(fs, root, [f for f in files if f.lower().endswith(".json") and f not in claimed])
    mapping = options.get("mapping") or {}
    if not isinstance(mapping, dict):
        raise DatasetError(uri, "option 'mapping' must map video names to request samples")
    warnings: list[str] = []
    used_keys: set[str] = set()
    outputs = []
    for video in videos:
        output = _sidecars(video, names)
        entry, key = _mapping_entry(mapping, video)
        if key:
            used_keys.add(key)
        _pair(output, entry, specs, warnings, uri)
        outputs.append(output)
    for key in sorted(set(mapping) - used_keys):
        warnings.append(f"mapping entry {key!r} matches no generated video")
    return Scan(outputs, warnings, [s.path for s in specs])


def _relative_files(fs: fsspec.AbstractFileSystem, root: str, limit: int) -> list[str]:
    found = sorted(fs.find(root))
    if len(found) > limit:
        raise DatasetError(root, f"{len(found)} files is over the {limit}-file limit (option max_files)")
    prefix = root.rstrip("/") + "/"
    return [p[len(prefix):] for p in found if p.startswith(prefix)]


def _stem(path: str) -> str:
    name = posixpath.basename(path)
    return name.rsplit(".", 1)[0] if "." in name else name


def _sibling(video: str, suffix: str) -> str:
    return posixpath.join(posixpath.dirname(video), _stem(video) + suffix)


def _sidecars(video: str, names: set[str]) -> Output:
    output = Output(video=video)
    if (path := _sibling(video, ".json")) in names:
        output.sidecar = path
    if (path := _sibling(video, ".txt")) in names:
        output.prompt_file = path
    for kind in CONTROL_KINDS:
        if (path := _sibling(video, f"_control_{kind}.mp4")) in names:
            output.controls[kind] = path
    for suffix in ACTION_SUFFIXES:
        if (path := _sibling(video, suffix)) in names:
            output.actions = path
            break
    return output


@dataclass
class _Spec:
    path: str
    samples: list[str]


def _request_specs(fs: fsspec.AbstractFileSystem, root: str, candidates: list[str]) -> list[_Spec]:
    specs = []
    for relative in candidates:
        try:
            data = read_json(fs, join_inside(root, relative), MAX_SPEC_BYTES)
        except SourceError:
            continue  # not a request spec (too large or not JSON): ignored like any other file
        if isinstance(data, dict) and isinstance(data.get("samples"), dict):
            specs.append(_Spec(relative, sorted(str(k) for k in data["samples"])))
        elif isinstance(data, dict) and "inference_type" in data:
            specs.append(_Spec(relative, [str(data.get("name") or _stem(relative))]))
    return specs


def _mapping_entry(mapping: dict, video: str) -> tuple[dict | None, str]:
    for key in (video, posixpath.basename(video), _stem(video)):
        if key in mapping:
            value = mapping[key]
            if isinstance(value, str):
                spec, _, sample = value.rpartition("#")
                return {"sample": sample, "spec": spec}, key
            if isinstance(value, dict):
                return dict(value), key
            raise DatasetError(key, f"mapping entry must be a sample name or an object, got {value!r}")
    return None, ""


def _distance(a: str, b: str) -> int:
    parts_a = [p for p in posixpath.dirname(a).split("/") if p]
    parts_b = [p for p in posixpath.dirname(b).split("/") if p]
    common = 0
    for x, y in zip(parts_a, parts_b):  # noqa: B905 (prefix of two different lengths)
        if x != y:
            break
        common += 1
    return len(parts_a) + len(parts_b) - 2 * common


def _pair(output: Output, entry: dict | None, specs: list[_Spec], warnings: list[str], uri: str) -> None:
    sample = str(entry.get("sample") or "") if entry else _stem(output.video)
    wanted_spec = str(entry.get("spec") or "") if entry else ""
    if entry:
        output.overrides = {k: v for k, v in entry.items() if k not in ("sample", "spec")}
    if entry and not sample and not wanted_spec:
        return  # a mapping entry with overrides only
    holders = [s for s in specs if (not sample or sample in s.samples) and
               (not wanted_spec or wanted_spec in (s.path, posixpath.basename(s.path)))]
    if entry and not sample and len(holders) == 1 and len(holders[0].samples) == 1:
        sample = holders[0].samples[0]
    if not holders:
        if entry:
            raise DatasetError(uri, f"mapping for {output.video} names sample {sample!r}"
                               + (f" in {wanted_spec}" if wanted_spec else "") + ", which no request spec holds")
        if not output.sidecar:
            warnings.append(f"{output.video}: no generation spec (no {_stem(output.video)}.json and no request "
                            "sample of that name); pass a mapping to pair it")
        return
    best = min(_distance(output.video, s.path) for s in holders)
    nearest = [s for s in holders if _distance(output.video, s.path) == best]
    if len(nearest) > 1:
        message = (f"{output.video}: sample {sample!r} is in several request specs "
                   f"({', '.join(s.path for s in nearest)}); name one as 'spec.json#sample' in the mapping")
        if entry:
            raise DatasetError(uri, message)
        warnings.append(message)
        return
    output.spec, output.sample = nearest[0].path, sample
