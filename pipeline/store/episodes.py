"""The episode store: the system of record (steps Parquet + per-camera video + episode catalog).

Layout under the store root (local folder or fsspec URL):

    objects/steps/<sha[:2]>/<sha>.parquet     one episode's steps (schemas.steps_schema)
    objects/videos/<sha[:2]>/<sha>.mp4        a camera video (source stream copied, source JPEGs muxed, or encoded)
    objects/catalog/<sha[:2]>/<sha>.parquet   episode catalog of a version (schemas.CATALOG_SCHEMA)
    objects/stats/<sha[:2]>/<sha>.json        normalization statistics of a version
    index/ingested/<key[:2]>/<key>.json       ingest memo: (episode, source checksum, config) -> catalog row
    index/episode-stats/<key[:2]>/<key>.json  per-episode stats cache (pipeline.store.statcache)
    versions/<version_id>.json                immutable version manifests (pipeline.store.versions)
    refs/<name>/log/<seq>.json, refs/<name>/HEAD   human names -> version ids, compare-and-swap (pipeline.store.refs)
    views/<view_id>/view.json                 a version's view: which shards, which episodes excluded
    shards/<key[:2]>/<key>.tar (+ .index.json) content-addressed WebDataset shards (pipeline.shards)

See docs/versions.md for the commit protocol and what gc may remove.

Every object is content-addressed and immutable; see ``pipeline.store.objects``.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from dataclasses import replace

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.objects import ObjectRef, ObjectStore, is_local
from pipeline.store.retries import retrying_options
from pipeline.video import (
    EncodeConfig,
    VideoError,
    VideoInput,
    VideoProbe,
    encode_frames,
    probe_video,
)
from pipeline.video.integrity import check_frames
from pipeline.video.mjpeg import PASSTHROUGH_PARAMS, mux_jpeg_frames
from schemas import (
    CATALOG_SCHEMA,
    CHANNEL_ORDERS,
    CameraInfo,
    Episode,
    EpisodeMeta,
    FrameSequence,
    StepArrays,
    VideoFile,
    meta_to_row,
    metas_to_table,
    row_to_meta,
    steps_to_table,
    table_to_steps,
    validate_episode,
)

_COPYABLE_CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2",)


class EpisodeStoreError(Exception):
    """Writing an episode failed. Names the episode, the field and the file."""

    def __init__(self, episode: str, field: str, problem: str, path: str = "") -> None:
        self.episode, self.field, self.problem, self.path = episode, field, problem, path
        where = f" ({path})" if path else ""
        super().__init__(f"episode {episode}{where}: field '{field}': {problem}")


class EpisodeStore:
    """Read and write episodes, catalogs and memo records under one root."""

    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        fs, root = fsspec.core.url_to_fs(uri, **retrying_options(uri, self.storage_options))
        self.fs: fsspec.AbstractFileSystem = fs
        self.objects = ObjectStore(fs, root)
        self._probes: OrderedDict[str, VideoProbe] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def root(self) -> str:
        return self.objects.root

    def url(self, relative: str) -> str:
        """A full URL of an object, openable by fsspec with the store's storage options."""
        return self.fs.unstrip_protocol(self.objects.abspath(relative))

    # ------------------------------------------------------------ ingest memo

    @staticmethod
    def ingest_key(episode_id: str, source_checksum: str, config_fingerprint: str) -> str:
        return hashlib.sha256(f"{episode_id}\0{source_checksum}\0{config_fingerprint}".encode()).hexdigest()

    def lookup_ingested(self, key: str) -> EpisodeMeta | None:
        """The stored episode for a memo key, when it and all its objects exist."""
        path = f"index/ingested/{key[:2]}/{key}.json"
        if not self.objects.exists(path):
            return None
        meta = row_to_meta(json.loads(self.objects.read_bytes(path)))
        needed = [meta.steps_path, *(c.video_path for c in meta.cameras)]
        return meta if all(self.objects.exists(p) for p in needed) else None

    def remember_ingested(self, key: str, meta: EpisodeMeta) -> None:
        record = json.dumps(meta_to_row(meta), sort_keys=True).encode()
        self.objects.write_atomic(f"index/ingested/{key[:2]}/{key}.json", record)

    # ------------------------------------------------------------ episodes

    def write_episode(self, episode: Episode, encode: EncodeConfig | None = None) -> EpisodeMeta:
        """Validate, store videos and steps, and return the catalog row (objects filled in)."""
        validate_episode(episode)
        encode = encode or EncodeConfig()
        meta = episode.meta
        cameras = [self._store_camera(meta, cam, episode.videos[cam.name], encode) for cam in meta.cameras]
        meta = replace(meta, cameras=cameras)
        table = steps_to_table(meta, nan_behind_masks(episode.steps))
        steps = self.objects.put_bytes("steps", _parquet_bytes(table), ".parquet")
        return replace(meta, steps_path=steps.path, steps_sha256=steps.sha256, steps_bytes=steps.bytes)

    def read_steps(self, meta: EpisodeMeta) -> StepArrays:
        return table_to_steps(self.read_steps_table(meta))

    def read_steps_table(self, meta: EpisodeMeta, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.objects.abspath(meta.steps_path), filesystem=self.fs, columns=columns)

    def _store_camera(self, meta: EpisodeMeta, cam: CameraInfo, source, encode: EncodeConfig) -> CameraInfo:
        field = f"cameras.{cam.name}"
        try:
            if isinstance(source, VideoFile):
                return self._store_video_file(cam, source)
            if isinstance(source, FrameSequence):
                return self._store_frames(cam, source, encode)
        except VideoError as exc:
            raise EpisodeStoreError(meta.episode_id, field, exc.problem, exc.uri) from exc
        except (OSError, ValueError) as exc:
            raise EpisodeStoreError(meta.episode_id, field, str(exc)) from exc
        raise EpisodeStoreError(meta.episode_id, field, f"unsupported video source {type(source).__name__}")

    def _store_video_file(self, cam: CameraInfo, source: VideoFile) -> CameraInfo:
        fs, path = fsspec.core.url_to_fs(source.uri, **source.storage_options)
        opener = (lambda: path) if is_local(fs) else (lambda: fs.open(path, "rb"))
        probe = probe_video(source.uri, opener)
        needed = source.frame_start + source.num_frames
        if source.exclusive and probe.num_frames != source.num_frames:
            raise VideoError(source.uri, f"video has {probe.num_frames} frames but the episode has "
                                         f"{source.num_frames} steps with frames")
        if probe.num_frames < needed:
            raise VideoError(source.uri, f"video has {probe.num_frames} frames, the episode needs frames "
                                         f"{source.frame_start}..{needed - 1}")
        if abs(float(probe.fps) - float(source.fps)) > 1e-3 * float(source.fps):
            raise VideoError(source.uri, f"video runs at {float(probe.fps):.4f} fps, metadata says {float(source.fps)}")
        if cam.width and cam.height and (cam.width, cam.height) != (probe.width, probe.height):
            raise VideoError(source.uri, f"video is {probe.width}x{probe.height}, the metadata says "
                             f"{cam.width}x{cam.height}")
        info = fs.info(path)
        stamp = (info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""))
        _check_decodable(VideoInput(source.uri, opener, probe), source.frame_start, needed - 1, stamp)
        if probe.container not in _COPYABLE_CONTAINERS:
            raise VideoError(source.uri, f"container {probe.container} is not MP4; remux it before ingest")
        ref = self.objects.put_stream("videos", lambda: fs.open(path, "rb"), ".mp4")
        return self._camera_with(cam, probe, ref, source.frame_start, "source", "")

    def _store_frames(self, cam: CameraInfo, source: FrameSequence, encode: EncodeConfig) -> CameraInfo:
        refused = ""
        if source.encoded is not None and encode.jpeg_passthrough:
            if source.encoded_codec == "jpeg":
                stored = self._store_jpeg_frames(cam, source)
                if isinstance(stored, CameraInfo):
                    return stored
                refused = f"; jpeg passthrough refused: {stored}"
            else:
                refused = f"; no passthrough for {source.encoded_codec!r} frames"
        data, count = encode_frames(source.frames(), source.fps, source.width, source.height, encode)
        if count != source.num_frames:
            raise VideoError(cam.source_key or cam.name, f"{count} frames read, {source.num_frames} expected")
        ref = self.objects.put_bytes("videos", data, ".mp4")
        probe = probe_video(ref.path, lambda: io.BytesIO(data))
        return self._camera_with(cam, probe, ref, 0, "encoded", encode.describe(source.fps) + refused)

    def _store_jpeg_frames(self, cam: CameraInfo, source: FrameSequence) -> CameraInfo | str:
        """The source's JPEG bytes muxed as they are, or why not (then the caller decodes and encodes).

        Checked like a copied video: every frame's headers (pipeline.video.mjpeg), the exact count,
        one geometry, and the first and last frames decode to it. Any doubt falls back to the decode
        path, so passthrough never changes which episodes are accepted, only how fast.
        """
        uri = cam.source_key or cam.name
        if source.encoded_channel_order not in CHANNEL_ORDERS:
            return f"unknown channel order {source.encoded_channel_order!r}"
        muxed = mux_jpeg_frames(source.encoded(), source.fps, source.width, source.height)
        if muxed.data is None:
            return muxed.refused
        if muxed.count != source.num_frames:
            return f"{muxed.count} encoded frames, {source.num_frames} expected"
        data = muxed.data
        probe = probe_video(uri, lambda: io.BytesIO(data))
        if probe.num_frames != muxed.count or (probe.width, probe.height) != (source.width, source.height):
            return f"the muxed track probes as {probe.num_frames} frames of {probe.width}x{probe.height}"
        try:
            _check_decodable(VideoInput(uri, lambda: io.BytesIO(data), probe, source.encoded_channel_order), 0,
                             muxed.count - 1)
        except VideoError as exc:
            return exc.problem
        ref = self.objects.put_bytes("videos", data, ".mp4")
        return self._camera_with(cam, probe, ref, 0, "source", PASSTHROUGH_PARAMS, source.encoded_channel_order)

    @staticmethod
    def _camera_with(cam: CameraInfo, probe: VideoProbe, ref: ObjectRef, frame_start: int, encoding: str,
                     params: str, channel_order: str = "rgb") -> CameraInfo:
        return replace(cam, codec=probe.codec, width=probe.width, height=probe.height, pix_fmt=probe.pix_fmt,
                       fps=probe.fps, video_path=ref.path, video_sha256=ref.sha256, video_bytes=ref.bytes,
                       frame_start=frame_start, encoding=encoding, encode_params=params, channel_order=channel_order)

    # ------------------------------------------------------------ stored video

    def video_input(self, cam: CameraInfo) -> VideoInput:
        """A stored camera video, ready for a decoder (probes are cached per process)."""
        path = self.objects.abspath(cam.video_path)
        opener = (lambda: path) if is_local(self.fs) else (lambda: self.fs.open(path, "rb"))
        with self._lock:
            probe = self._probes.get(cam.video_sha256)
        if probe is None:
            probe = probe_video(cam.video_path, opener)
            with self._lock:
                self._probes[cam.video_sha256] = probe
                while len(self._probes) > 256:
                    self._probes.popitem(last=False)
        return VideoInput(self.url(cam.video_path), opener, probe, cam.channel_order)

    # ------------------------------------------------------------ catalogs

    def write_catalog(self, metas: list[EpisodeMeta]) -> ObjectRef:
        """A catalog object for these episodes, sorted by id so equal inputs give equal bytes."""
        table = metas_to_table(sorted(metas, key=lambda m: m.episode_id))
        return self.objects.put_bytes("catalog", _parquet_bytes(table), ".parquet")

    def read_catalog(self, path: str) -> pa.Table:
        table = pq.read_table(self.objects.abspath(path), filesystem=self.fs)
        return table.cast(CATALOG_SCHEMA) if table.schema != CATALOG_SCHEMA else table


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def _check_decodable(video: VideoInput, first: int, last: int, stamp: tuple = ()) -> None:
    """Every frame an episode uses decodes (each packet decoded once, no colour conversion): a corrupt
    middle frame is caught here, not by the shard job of every view of the version."""
    check = check_frames(video, stamp)
    bad = check.first_bad(first, last)
    if bad is not None:
        count = sum(first <= i <= last for i in check.bad)
        detail = f"; {check.problem}" if check.problem else ""
        raise VideoError(video.uri, f"frame {bad} cannot be decoded ({max(count, 1)} bad frame(s) in the "
                         f"episode's frames {first}..{last}){detail}")


def nan_behind_masks(steps: StepArrays) -> StepArrays:
    """Masked rows of float state/action hold NaN only: whatever the source left there (zeros, a held
    value, +inf) is not data, and a consumer that ignores the mask must not read it as data."""
    out = replace(steps)
    for column in ("state", "action"):
        values, valid = getattr(steps, column), getattr(steps, f"{column}_valid")
        if valid is None or values.dtype.kind != "f" or values.ndim != 2:
            continue
        masked = ~np.asarray(valid, bool)
        if masked.any() and not np.isnan(values[masked]).all():
            values = values.copy()
            values[masked] = np.nan
            setattr(out, column, values)
    return out
