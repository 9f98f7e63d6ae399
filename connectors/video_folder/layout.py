"""Which sidecar goes with which videos, and what a video holds (frame count and rate, by demuxing).

Video references inside a sidecar (``videos: [{video_path}]``, ``video_path``, ``videos: {cam:
path}``) are resolved against the sidecar's folder first, then each folder above it up to the
dataset root (public clip sets write them relative to the dataset root). Without references the
videos are found by name: ``<stem>.mp4``, ``<stem>_<camera>.mp4`` or ``<stem>/<camera>.mp4``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from fractions import Fraction

import av
import fsspec

from connectors.base import SourceError
from connectors.common import camera_name
from connectors.fsutil import join_inside
from connectors.video_folder.sidecar import Sidecar

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
_REFERENCE_KEYS = ("videos", "video_paths", "video_path", "video", "video_file")


@dataclass(frozen=True)
class VideoProbe:
    num_frames: int
    fps: Fraction
    width: int
    height: int
    codec: str


def referenced_videos(sidecar: Sidecar, fs: fsspec.AbstractFileSystem, root: str, relative: str,
                      files: set[str]) -> dict[str, str]:
    """Camera name -> video path relative to the root, for one sidecar (empty when it names none)."""
    folder = posixpath.dirname(relative)
    stem = posixpath.basename(relative).rsplit(".", 1)[0]
    named = _named_paths(sidecar)
    used: set[str] = set()
    if named:
        out = {}
        for label, path in named:
            resolved = _resolve(path, folder, files)
            if resolved is None:
                raise SourceError(sidecar.path, f"video {path!r} is not under the dataset root", relative,
                                  "video_path")
            out[camera_name(label or _label(posixpath.basename(resolved).rsplit(".", 1)[0], stem), used)] = resolved
        return out
    out = {}
    for path in sorted(files):
        if not path.lower().endswith(VIDEO_SUFFIXES):
            continue
        name = posixpath.basename(path).rsplit(".", 1)[0]
        parent = posixpath.dirname(path)
        if parent == folder and name == stem:
            out[camera_name("video", used)] = path
        elif parent == folder and name.startswith(f"{stem}_"):
            out[camera_name(name[len(stem) + 1:], used)] = path
        elif parent == posixpath.join(folder, stem):
            out[camera_name(name, used)] = path
    return out


def _label(video_stem: str, sidecar_stem: str) -> str:
    """A camera name that stays the same across episodes: ``ep7_wrist`` beside ``ep7.json`` -> ``wrist``."""
    if video_stem == sidecar_stem:
        return "video"
    if video_stem.startswith(f"{sidecar_stem}_"):
        return video_stem[len(sidecar_stem) + 1:]
    return video_stem


def _named_paths(sidecar: Sidecar) -> list[tuple[str, str]]:
    for key in _REFERENCE_KEYS:
        value = sidecar.fields.get(key, sidecar.columns.get(key))
        if value is None:
            continue
        if isinstance(value, str):
            return [("", value)]
        if isinstance(value, dict):
            return [(str(k), str(v)) for k, v in value.items() if isinstance(v, str)]
        if isinstance(value, list):
            pairs = []
            for item in value:
                if isinstance(item, str):
                    pairs.append(("", item))
                elif isinstance(item, dict):
                    path = item.get("video_path") or item.get("path") or item.get("file")
                    if isinstance(path, str):
                        pairs.append((str(item.get("camera") or item.get("name") or ""), path))
            if pairs:
                return pairs
    return []


def _resolve(path: str, folder: str, files: set[str]) -> str | None:
    """The first existing ``<folder or an ancestor>/<path>`` inside the root."""
    if not path or path.startswith("/") or "\\" in path:
        return None
    current = folder
    while True:
        candidate = posixpath.normpath(posixpath.join(current, path)) if current else posixpath.normpath(path)
        if not candidate.startswith("../") and candidate != ".." and candidate in files:
            return candidate
        if not current:
            return None
        current = posixpath.dirname(current)


def probe(fs: fsspec.AbstractFileSystem, root: str, relative: str, episode: str) -> VideoProbe:
    """Frame count (every packet demuxed, nothing decoded), rate and geometry of a video."""
    path = join_inside(root, relative)
    try:
        with fs.open(path, "rb") as handle, av.open(handle) as container:
            if not container.streams.video:
                raise SourceError(path, "no video stream", episode, relative)
            stream = container.streams.video[0]
            count = sum(1 for packet in container.demux(stream) if packet.size)
            rate = stream.average_rate or stream.guessed_rate
            ctx = stream.codec_context
            if not rate:
                raise SourceError(path, "video has no frame rate", episode, relative)
            return VideoProbe(count, Fraction(rate), ctx.width, ctx.height, ctx.name or "")
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(path, f"unreadable video (truncated or corrupt?): {exc}", episode, relative) from exc
