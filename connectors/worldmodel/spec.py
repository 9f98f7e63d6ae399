"""The generation spec of one output: request defaults < request sample < prompt files < sidecar < mapping.

Later layers override earlier ones key by key. Paths inside a layer (``input_path``,
``prompt_path``, control paths) are relative to the file that names them and are only opened when
they stay inside the dataset root; otherwise they are recorded as given and never read.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec

from connectors.base import SourceError
from connectors.fsutil import join_inside, read_bounded, read_json
from connectors.worldmodel.layout import CONTROL_KINDS, MAX_SPEC_BYTES, Output

MAX_PROMPT_BYTES = 256 * 1024
PATH_KEYS = ("input_path", "video_path", "input_video_path", "image_path", "prompt_path")


@dataclass
class Spec:
    """Merged values, and for each key the folder (relative to the root) of the file that set it."""

    values: dict[str, Any] = field(default_factory=dict)
    base: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # which files contributed, in merge order

    def layer(self, data: dict, base: str, source: str) -> None:
        for key, value in data.items():
            self.values[key] = value
            self.base[key] = base
        if data:
            self.sources.append(source)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def resolve_spec(fs: fsspec.AbstractFileSystem, root: str, output: Output, episode: str) -> Spec:
    spec = Spec()
    stem = posixpath.basename(output.video).rsplit(".", 1)[0]
    if output.spec:
        data = _json_object(fs, root, output.spec, episode)
        folder = posixpath.dirname(output.spec)
        samples = data.get("samples")
        spec.layer({k: v for k, v in data.items() if k != "samples"}, folder, output.spec)
        if isinstance(samples, dict):
            entry = samples.get(output.sample)
            if not isinstance(entry, dict):
                raise SourceError(join_inside(root, output.spec), f"sample {output.sample!r} is not an object",
                                  episode, "samples")
            spec.layer(entry, folder, f"{output.spec}#{output.sample}")
        prompt_beside_spec = posixpath.join(folder, f"{output.sample}.txt")
        if output.sample and fs.exists(join_inside(root, prompt_beside_spec)):
            spec.layer({"prompt": _text(fs, root, prompt_beside_spec, episode)}, folder, prompt_beside_spec)
    if "prompt_path" in spec.values and "prompt" not in spec.values:
        _prompt_from_path(fs, root, spec, episode)
    if output.prompt_file:
        spec.layer({"prompt": _text(fs, root, output.prompt_file, episode)}, posixpath.dirname(output.video),
                   output.prompt_file)
    if output.sidecar:
        data = _json_object(fs, root, output.sidecar, episode)
        samples = data.pop("samples", None)
        spec.layer(data, posixpath.dirname(output.sidecar), output.sidecar)
        if isinstance(samples, dict):
            entry = samples.get(stem) or (next(iter(samples.values())) if len(samples) == 1 else None)
            if isinstance(entry, dict):
                spec.layer(entry, posixpath.dirname(output.sidecar), f"{output.sidecar}#samples")
    if output.overrides:
        spec.layer(output.overrides, "", "mapping")
    return spec


def inside(fs: fsspec.AbstractFileSystem, root: str, base: str, value: str) -> str:
    """The full path of ``value`` (relative to ``base``) when it stays inside the root and exists, else ""."""
    if not value or value.startswith(("/", "\\")) or "://" in value:
        return ""
    try:
        path = join_inside(root, posixpath.normpath(posixpath.join(base, value)))
    except SourceError:
        return ""
    return path if fs.exists(path) else ""


def controls(spec: Spec) -> dict[str, dict]:
    """Control inputs named in the spec (Cosmos-Transfer style ``{"edge": {"control_weight": 0.5}}``)."""
    out = {}
    for kind in CONTROL_KINDS:
        value = spec.get(kind)
        if isinstance(value, dict):
            out[kind] = {"weight": value.get("control_weight", value.get("weight")),
                         "path": value.get("control_path") or value.get("input_control") or "",
                         "base": spec.base.get(kind, "")}
    return out


def _json_object(fs: fsspec.AbstractFileSystem, root: str, relative: str, episode: str) -> dict:
    path = join_inside(root, relative)
    data = read_json(fs, path, MAX_SPEC_BYTES)
    if not isinstance(data, dict):
        raise SourceError(path, "a generation spec must be a JSON object", episode)
    return data


def _text(fs: fsspec.AbstractFileSystem, root: str, relative: str, episode: str) -> str:
    path = join_inside(root, relative)
    try:
        return read_bounded(fs, path, MAX_PROMPT_BYTES).decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise SourceError(path, f"prompt is not UTF-8: {exc}", episode, "prompt") from exc


def _prompt_from_path(fs: fsspec.AbstractFileSystem, root: str, spec: Spec, episode: str) -> None:
    path = inside(fs, root, spec.base.get("prompt_path", ""), str(spec.get("prompt_path")))
    if not path:
        return
    relative = path[len(root.rstrip("/")) + 1:]
    if path.endswith(".json"):
        data = read_json(fs, path, MAX_PROMPT_BYTES)
        text = data.get("prompt") or data.get("caption") if isinstance(data, dict) else None
        if isinstance(text, str):
            spec.layer({"prompt": text.strip()}, posixpath.dirname(relative), relative)
    else:
        spec.layer({"prompt": _text(fs, root, relative, episode)}, posixpath.dirname(relative), relative)
