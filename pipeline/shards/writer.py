"""Write one shard: decode the frames its segments need, resize, encode, tar, index.

A sample is one episode segment, keyed ``<episode_id>_s<segment:04d>`` (no dots: WebDataset
splits keys at the first dot). Members:

    <key>.meta.json                    episode and segment facts (see docs/architecture.md)
    <key>.state.npy                    [num_steps, Ds], source dtype
    <key>.action.npy                   [num_action_steps, Da]: the segment plus look-ahead
    <key>.action_valid.npy             [num_action_steps] bool
    <key>.state_valid.npy              [num_steps] bool
    <key>.timestamp.npy                [num_steps] int64 ns from episode start
    <key>.task_index.npy               [num_steps] int32 into meta.tasks (-1: none)
    <key>.frame_index.npy              [num_steps, n_cameras] int32 source frame per step (-1: none)
    <key>.extra.<name>.npy             [num_steps, ...] a step extra the view names (``step_extras``), when present
    <key>.<camera>.<i:04d>.<codec>     frame of step step_start+i (absent when no frame is aligned)
    <key>.<camera>.mp4                 instead, in a video view: the segment's frames as one MP4
                                       (pipeline.shards.segments; meta.json lists its frames)

Arrays are written with ``np.save(allow_pickle=False)``; tar headers are deterministic (mtime 0,
uid 0) so equal inputs give byte-identical shards. A shard lives at ``shards/<key[:2]>/<key>.tar``
(plus ``.index.json``), ``key`` being its content key (``pipeline.shards.plan.shard_key``): a
shard already there is reused without decoding anything.

An episode whose stored steps or videos cannot be read or decoded (a video corrupted after ingest)
raises ``EpisodeDecodeError`` from ``write_shard``; ``write_shard_quarantining`` (what the shard job
calls) then writes the shard without that episode, under the content key of what it holds, and
returns the episode's quarantine record: one bad episode never fails the job, and a later run (after
``versions verify --repair``) plans the episode again because no shard of the view holds it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field

import av
import numpy as np

from pipeline.shards.frames import FramePipeline, as_pipeline
from pipeline.shards.images import encode_image, letterbox_region, npy_bytes  # noqa: F401  (encode_image: kept importable)
from pipeline.shards.index import SampleEntry, ShardIndex, ShardSummary, member_checksum, npy_split_checksum
from pipeline.shards.plan import SegmentPlan, ShardPlan, shard_key
from pipeline.shards.segments import SegmentMember, segment_members
from pipeline.shards.view import VIDEO_CODECS, ViewConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.video import FrameDecoder, VideoError
from schemas import EpisodeMeta, StepArrays, rate_to_str

BLOCK = tarfile.BLOCKSIZE
# What reading or decoding one episode's stored objects raises when their bytes are bad (PyAV, Arrow, ours).
EPISODE_READ_ERRORS = (VideoError, av.error.FFmpegError, ValueError, OSError, EOFError, RuntimeError, IndexError)


class EpisodeDecodeError(Exception):
    """One episode's stored steps or video cannot be read or decoded: names the episode, file and field."""

    def __init__(self, episode: str, path: str, field: str, problem: str) -> None:
        self.episode, self.path, self.field, self.problem = episode, path, field, problem
        super().__init__(f"episode {episode} ({path}): field '{field}': {problem}")

    def record(self, source_key: str = "") -> dict:
        """The shard report's quarantine entry (the shape of pipeline.report.quarantine_record)."""
        return {"source_key": source_key, "episode_id": self.episode, "file": self.path, "field": self.field,
                "reason": f"cannot decode the stored episode: {self.problem}"}


@dataclass
class ShardOutcome:
    summary: ShardSummary | None  # None when every episode of the plan was quarantined
    decoded: int
    quarantined: list[dict] = field(default_factory=list)


def sample_key(episode_id: str, segment: int) -> str:
    return f"{episode_id}_s{segment:04d}"


def view_cameras(meta: EpisodeMeta, view: ViewConfig) -> list[str]:
    """The view's cameras in view order (all of the episode's when the view names none)."""
    return list(view.cameras) if view.cameras is not None else [c.name for c in meta.cameras]


def shard_paths(key: str) -> tuple[str, str]:
    """Store-relative paths of a shard's tar and index."""
    return f"shards/{key[:2]}/{key}.tar", f"shards/{key[:2]}/{key}.index.json"


def episode_info(meta: EpisodeMeta, view: ViewConfig) -> dict:
    """The episode-level facts every sample's meta.json carries (segment facts are added per sample)."""
    cameras = view_cameras(meta, view)
    return {"episode_id": meta.episode_id, "dataset": meta.dataset, "embodiment": meta.embodiment,
            "kind": meta.kind, "action_source": meta.action_source, "state_source": meta.state_source,
            "split": meta.split, "episode_num_steps": meta.num_steps, "tasks": meta.tasks, "cameras": cameras,
            "control_fps": rate_to_str(meta.control_fps), "frame_codec": view.frame_codec}


def episode_fingerprint(meta: EpisodeMeta, view: ViewConfig) -> str:
    """A hash of everything of an episode that reaches its samples' bytes in this view.

    Steps and videos enter by their content hashes, so an episode whose provenance changed
    (re-ingested from a moved folder) but whose content did not keeps its shards.
    """
    videos = {c.name: [c.video_sha256, c.frame_start] for c in meta.cameras if c.name in view_cameras(meta, view)}
    body = {"info": episode_info(meta, view), "steps": meta.steps_sha256, "videos": videos}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _TarBuilder:
    """Append members with deterministic headers and remember where each one's data starts."""

    def __init__(self, handle) -> None:
        self.tar = tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT)

    def add(self, name: str, data: bytes) -> tuple[int, int]:
        """Append a member; returns (offset of its data, size)."""
        if len(name) > 99:
            raise ValueError(f"tar member name too long for USTAR: {name}")
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // BLOCK) * BLOCK
        return self.tar.offset - padded, len(data)

    @property
    def offset(self) -> int:
        return self.tar.offset

    def close(self) -> None:
        self.tar.close()


def write_shard(store: EpisodeStore, view: ViewConfig, plan: ShardPlan, metas: dict[str, EpisodeMeta],
                decoder: FrameDecoder | FramePipeline) -> tuple[ShardSummary, int]:
    """Write the shard of ``plan`` unless it exists already. Returns its summary and the frames decoded.

    ``decoder`` is a frame decoder (decoded, resized and encoded on the CPU) or a whole frame pipeline
    (pipeline.shards.frames: GPU, or routed per video)."""
    key = shard_key(view, plan.segments, {e: episode_fingerprint(metas[e], view) for e in plan.episodes})
    if plan.key and plan.key != key:
        raise ValueError(f"shard plan key {plan.key} does not match its content ({key}): catalog changed under the job")
    tar_path, index_path = shard_paths(key)
    if store.objects.exists(tar_path) and store.objects.exists(index_path):
        data = store.objects.read_bytes(index_path)
        return summarize(ShardIndex.from_json(json.loads(data)), index_path, hashlib.sha256(data).hexdigest()), 0
    digest = hashlib.sha256()
    samples: list[SampleEntry] = []
    decoded = 0
    with store.objects.open_atomic(tar_path) as handle:
        builder = _TarBuilder(_HashingWriter(handle, digest))
        for episode_id, segments in _by_episode(plan.segments):
            meta = metas[episode_id]
            steps = _guarded(meta, meta.steps_path, "steps", _read_steps, store, meta)
            if view.frame_codec in VIDEO_CODECS:
                videos = {}
                for name in view_cameras(meta, view):
                    path = next((c.video_path for c in meta.cameras if c.name == name), "")
                    videos |= _guarded(meta, path, f"cameras.{name}", segment_members, store, meta, steps, segments,
                                       [name], view, as_pipeline(decoder))
                decoded += sum(len(frames) for per in videos.values() for _, frames in per.values())
                for segment in segments:
                    samples.append(_write_video_sample(builder, meta, steps, segment, view, videos))
                continue
            frames = _encoded_frames(store, meta, steps, segments, view, decoder)
            decoded += sum(len(f) for f in frames.values())
            for segment in segments:
                samples.append(_write_sample(builder, meta, steps, segment, view, frames))
        builder.close()
        size = handle.tell()
    index = ShardIndex(key, tar_path, digest.hexdigest(), size, samples)
    data = json.dumps(index.to_json()).encode()  # members stay in tar order
    store.objects.write_atomic(index_path, data)
    return summarize(index, index_path, hashlib.sha256(data).hexdigest()), decoded


def write_shard_quarantining(store: EpisodeStore, view: ViewConfig, plan: ShardPlan, metas: dict[str, EpisodeMeta],
                             decoder: FrameDecoder | FramePipeline) -> ShardOutcome:
    """``write_shard``, leaving out (and reporting) every episode that raises ``EpisodeDecodeError``.

    The shard then holds the other episodes under the content key of what it holds (never under the
    plan's key, which promises the quarantined episode too)."""
    segments, quarantined = plan.segments, []
    while segments:
        attempt = plan if not quarantined else ShardPlan(plan.index, segments)
        try:
            summary, decoded = write_shard(store, view, attempt, metas, decoder)
            return ShardOutcome(summary, decoded, quarantined)
        except EpisodeDecodeError as exc:
            quarantined.append(exc.record(metas[exc.episode].source_key))
            segments = tuple(s for s in segments if s.episode_id != exc.episode)
            if hasattr(decoder, "drain"):
                decoder.drain()  # the retry decodes the other episodes again and records them once
    return ShardOutcome(None, 0, quarantined)


def _guarded(meta: EpisodeMeta, path: str, field_name: str, read, *args):
    """``read(*args)``; a failure of the stored bytes becomes EpisodeDecodeError naming the episode and file."""
    try:
        return read(*args)
    except EpisodeDecodeError:
        raise
    except EPISODE_READ_ERRORS as exc:
        raise EpisodeDecodeError(meta.episode_id, path, field_name, f"{type(exc).__name__}: {exc}") from exc


def summarize(index: ShardIndex, index_path: str, index_sha256: str = "",
              excluded: frozenset[str] | set[str] = frozenset()) -> ShardSummary:
    """The view manifest's entry for a shard, counting only samples of episodes not ``excluded``."""
    live = [s for s in index.samples if s.episode_id not in excluded]
    episodes = list(dict.fromkeys(s.episode_id for s in live))
    return ShardSummary(index.shard, index.tar_path, index_path, index.tar_sha256, index.tar_bytes,
                        len(live), sum(s.num_steps for s in live), episodes, index_sha256, sorted(excluded))


class _HashingWriter:
    """File wrapper hashing what tarfile writes (tarfile pads the end past its own offset)."""

    def __init__(self, handle, digest) -> None:
        self.handle, self.digest = handle, digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.handle.tell()


def _by_episode(segments: Iterable[SegmentPlan]) -> list[tuple[str, list[SegmentPlan]]]:
    grouped: dict[str, list[SegmentPlan]] = {}
    for segment in segments:
        grouped.setdefault(segment.episode_id, []).append(segment)
    return list(grouped.items())


def _encoded_frames(store: EpisodeStore, meta: EpisodeMeta, steps: StepArrays, segments: list[SegmentPlan],
                    view: ViewConfig, decoder: FrameDecoder | FramePipeline) -> dict[str, dict[int, bytes]]:
    """Per camera, the encoded frames these segments use, keyed by frame index within the episode."""
    pipeline = as_pipeline(decoder)
    first = segments[0].step_start
    last = segments[-1].step_start + segments[-1].num_steps
    encoded: dict[str, dict[int, bytes]] = {}
    for name in view_cameras(meta, view):
        if name not in steps.frame_index:
            continue
        cam = meta.camera(name)
        used = np.unique(steps.frame_index[name][first:last])
        used = used[used >= 0]
        absolute = _guarded(meta, cam.video_path, f"cameras.{name}", _encode_camera, store, pipeline, cam,
                            (used + cam.frame_start).tolist(), view, meta.episode_id)
        encoded[name] = {index - cam.frame_start: data for index, data in absolute.items()}
    return encoded


def _read_steps(store: EpisodeStore, meta: EpisodeMeta) -> StepArrays:
    return store.read_steps(meta).filled()


def _encode_camera(store: EpisodeStore, pipeline: FramePipeline, cam, indices: list[int], view: ViewConfig,
                   episode_id: str) -> dict[int, bytes]:
    return pipeline.encode_video(store.video_input(cam), indices, view, episode_id=episode_id, camera=cam.name)


def _write_video_sample(builder: _TarBuilder, meta: EpisodeMeta, steps: StepArrays, segment: SegmentPlan,
                        view: ViewConfig, videos: dict[str, dict[int, SegmentMember]]) -> SampleEntry:
    """A sample whose frames are one video segment per camera (``<camera>.mp4``)."""
    present = {name: per[segment.segment] for name, per in videos.items() if segment.segment in per}
    extra = {"segment_frames": {name: frames for name, (_, frames) in present.items()}}
    return _write_sample(builder, meta, steps, segment, view, {name: {} for name in videos}, extra,
                         {f"{name}.mp4": data for name, (data, _) in present.items()})


def _write_sample(builder: _TarBuilder, meta: EpisodeMeta, steps: StepArrays, segment: SegmentPlan,
                  view: ViewConfig, frames: dict[str, dict[int, bytes]], extra_info: dict | None = None,
                  videos: dict[str, bytes] | None = None) -> SampleEntry:
    start, stop = segment.step_start, segment.step_start + segment.num_steps
    action_stop = min(meta.num_steps, stop + view.max_action_horizon - 1)
    cameras = view_cameras(meta, view)
    present = [c for c in cameras if c in frames]
    key = sample_key(meta.episode_id, segment.segment)
    frame_index = np.stack([steps.frame_index[c][start:stop] if c in frames else np.full(stop - start, -1, np.int32)
                            for c in cameras], axis=1) if cameras else np.zeros((stop - start, 0), np.int32)
    info = {
        **episode_info(meta, view), "key": key, "segment": segment.segment, "step_start": start,
        "num_steps": stop - start, "num_action_steps": action_stop - start,
        "missing_cameras": [c for c in cameras if c not in present], **(extra_info or {}),
    }
    if view.resize == "pad":  # the loader restores the fill exactly where lossy codecs blurred it
        info["letterbox"] = {c: list(letterbox_region(meta.camera(c).height, meta.camera(c).width, view.height,
                                                      view.width)) for c in present}
        info["pad_value"] = view.pad_value
    members: dict[str, tuple[int, int]] = {}
    checksums: dict[str, str] = {}
    split_checksums: dict[str, int] = {}
    sample_offset = builder.offset

    def add(suffix: str, data: bytes) -> None:
        members[suffix] = builder.add(f"{key}.{suffix}", data)
        checksums[suffix] = member_checksum(data)

    add("meta.json", json.dumps(info, sort_keys=True).encode())
    add("state.npy", npy_bytes(steps.state[start:stop]))
    add("state_valid.npy", npy_bytes(steps.state_valid[start:stop]))
    add("action.npy", npy_bytes(steps.action[start:action_stop]))
    add("action_valid.npy", npy_bytes(steps.action_valid[start:action_stop]))
    add("timestamp.npy", npy_bytes(steps.timestamp_ns[start:stop]))
    add("task_index.npy", npy_bytes(steps.task_index[start:stop]))
    add("frame_index.npy", npy_bytes(frame_index))
    for name in view.step_extras:
        if name in steps.extras:
            add(f"extra.{name}.npy", npy_bytes(np.asarray(steps.extras[name])[start:stop]))
    for suffix, data in (videos or {}).items():
        add(suffix, data)
    for column, name in enumerate(cameras):
        for i, frame in enumerate(frame_index[:, column]):
            if frame >= 0 and videos is None:
                suffix, data = f"{name}.{i:04d}.{view.frame_codec}", frames[name][int(frame)]
                add(suffix, data)
                if view.frame_codec == "npy":  # read header and pixels apart (ViewSource.read_into)
                    split_checksums[suffix] = npy_split_checksum(data)
    return SampleEntry(key, sample_offset, builder.offset - sample_offset, meta.episode_id, segment.segment,
                       start, stop - start, action_stop - start, members, checksums, split_checksums)
