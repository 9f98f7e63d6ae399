"""Export a version (or a selection of it) as a LeRobot dataset: v2.1 or v3.0 layout. Never in place.

The output must not be inside the store, contain it, overlap an exported episode's local source,
or exist non-empty. Local exports are written into a hidden staging folder beside the output and
renamed into place at the end, so a failed export leaves nothing at the output path; remote
exports write ``meta/info.json`` last.

Episodes are ordered by (split, dataset, source key in natural order) and numbered from 0. Each
step's ``timestamp`` is the stored source clock, written back in the source's dtype (bit for bit:
GR00T's demo starts at 0.05 s) when it is spaced 1/fps within 1e-4 s as LeRobot checks, else
``frame_index / fps``; either way LeRobot's pairing rule (nearest frame to the timestamp, 1e-4 s)
applied to the written timestamps must give the stored step -> frame pairing, or the episode is
refused with the episode and field named rather than silently re-paired. Every other column keeps
its source name and dtype (``task_index``, ``index``, ``next.reward``, ``annotation.*``...), states
and actions their values bit for bit, and ``features`` lists each column as written. Videos: v2.1 needs one file per
episode (copied when the stored object is exactly the episode, else cut: remuxed when GOP-aligned,
re-encoded otherwise); v3.0 copies each stored object whole when the exported episodes cover all
its frames (a v3.0 source round-trips byte for byte) and cuts per episode otherwise. GR00T's
``meta/modality.json`` is written for both layouts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.export.lerobot_data import DataWriter, ExportedEpisode, episode_rows, plan_columns
from pipeline.export.lerobot_meta import (
    modality_json,
    numeric_feature,
    stats_entry,
    video_feature,
)
from pipeline.export.output import StagedOutput, check_output, episode_order
from pipeline.export.video import ExportError, cut_episode, read_object
from pipeline.progress import JobProgress
from pipeline.stats import FeatureStats
from pipeline.store.catalog import CatalogQuery, read_catalog_table
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import VersionManifest
from pipeline.video import EncodeConfig
from schemas import (
    EpisodeMeta,
    table_to_metas,
)

LAYOUTS = ("v2.1", "v3.0")


@dataclass(frozen=True)
class ExportConfig:
    layout: str = "v3.0"
    chunks_size: int = 1000
    data_file_bytes: int = 100 * 2**20  # v3.0: start a new data file past this many bytes of rows
    robot_type: str = ""  # default: the episodes' embodiment
    modality: dict | None = None  # explicit GR00T groups {"state": {...}, "action": {...}}
    encode: EncodeConfig = field(default_factory=EncodeConfig)  # for cuts that cannot be remuxed
    remux: bool = True

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")


@dataclass
class ExportReport:
    out: str
    layout: str
    episodes: int = 0
    steps: int = 0
    tasks: int = 0
    videos: dict[str, int] = field(default_factory=dict)  # method (copy/remux/reencode) -> files
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Camera:
    name: str
    key: str  # LeRobot feature key
    height: int
    width: int
    codec: str
    pix_fmt: str


# ---------------------------------------------------------------- checks


def _cameras(metas: list[EpisodeMeta]) -> list[_Camera]:
    first = metas[0]
    cameras = [_Camera(c.name, c.source_key if c.source_key.startswith("observation.images.")
                       else f"observation.images.{c.name}", c.height, c.width, c.codec, c.pix_fmt)
               for c in first.cameras]
    for meta in metas:
        for field_name in ("control_fps", "state_names", "action_names", "state_dtype", "action_dtype"):
            if getattr(meta, field_name) != getattr(first, field_name):
                raise ExportError(meta.episode_id, field_name, f"{getattr(meta, field_name)!r} differs from "
                                  f"{getattr(first, field_name)!r} (episode {first.episode_id}); a LeRobot dataset "
                                  "has one robot: select one embodiment")
        if sorted((c.name, c.height, c.width) for c in meta.cameras) != sorted(
                (c.name, c.height, c.width) for c in cameras):
            raise ExportError(meta.episode_id, "cameras", "camera names or sizes differ from the first episode's")
        for cam in meta.cameras:
            if cam.fps != meta.control_fps:
                raise ExportError(meta.episode_id, f"cameras.{cam.name}.fps", f"{cam.fps} fps differs from the "
                                  f"control rate {meta.control_fps}: LeRobot needs one frame per step")
    return cameras


# ---------------------------------------------------------------- writing


def export_lerobot(store: EpisodeStore, manifest: VersionManifest, out: str, config: ExportConfig = ExportConfig(),
                   query: CatalogQuery | None = None, storage_options: dict | None = None,
                   progress: JobProgress | None = None) -> ExportReport:
    """Write the version's episodes (those matching ``query``) as a LeRobot dataset at ``out``.

    ``progress`` counts episodes as their videos are written (a share of an episode per camera)."""
    metas = sorted(table_to_metas(read_catalog_table(store, manifest, query=query)), key=episode_order)
    if not metas:
        raise ExportError("", "selection", "no episode to export")
    progress = progress or JobProgress("export", 0, enabled=False)
    progress.start(len(metas))
    cameras = _cameras(metas)
    sink = StagedOutput(out, storage_options)
    check_output(store, sink.fs, sink.target, metas)
    report = ExportReport(out, config.layout)
    try:
        _write(store, metas, cameras, sink, config, report, progress)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return report


def _write(store: EpisodeStore, metas: list[EpisodeMeta], cameras: list[_Camera], sink: StagedOutput,
           config: ExportConfig, report: ExportReport, progress: JobProgress) -> None:
    tasks: dict[str, int] = {}
    episodes = [ExportedEpisode(i, m, m.num_steps, []) for i, m in enumerate(metas)]
    plan = plan_columns(store, metas, report.warnings)
    rows = DataWriter(sink, config.layout, config.chunks_size, config.data_file_bytes)
    schema: pa.Schema | None = None
    for episode in episodes:
        steps = store.read_steps(episode.meta).filled()
        table = episode_rows(episode, steps, tasks, plan, report.warnings, rows.next_index)
        schema = schema or table.schema
        rows.add(episode, table.cast(schema))
    rows.close()
    if not cameras:
        progress.advance(len(episodes))
    _write_videos(store, episodes, cameras, sink, config, report, progress)
    first = metas[0]
    features = _features(first, cameras, schema)
    task_list = sorted(tasks, key=tasks.get)
    info = _info(first, episodes, features, len(task_list), len(cameras), config)
    _write_meta(sink, episodes, task_list, info, config)
    source_modality = json.loads(first.extras["lerobot.modality"]) if "lerobot.modality" in first.extras else None
    sink.json("meta/modality.json", modality_json(first.state_names, first.action_names,
                                                  {c.name: c.key for c in cameras}, config.modality, source_modality,
                                                  [c for c in schema.names if c.startswith("annotation.")]))
    report.episodes, report.steps, report.tasks = len(episodes), sum(e.length for e in episodes), len(task_list)
    sink.json("meta/info.json", info)  # last: a reader sees a complete dataset or none


def _video_files(episodes: list[ExportedEpisode], cameras: list[_Camera]
                 ) -> Iterator[tuple[_Camera, list[ExportedEpisode]]]:
    """Per camera, the exported episodes grouped by the stored video object they use."""
    for camera in cameras:
        groups: dict[str, list[ExportedEpisode]] = {}
        for episode in episodes:
            groups.setdefault(episode.meta.camera(camera.name).video_sha256, []).append(episode)
        for group in groups.values():
            yield camera, group


def _write_videos(store: EpisodeStore, episodes: list[ExportedEpisode], cameras: list[_Camera], sink: StagedOutput,
                  config: ExportConfig, report: ExportReport, progress: JobProgress) -> None:
    files = {c.name: 0 for c in cameras}
    written: dict[str, set[str]] = {}

    def place(camera: _Camera, data: bytes, method: str) -> tuple[int, int]:
        number = files[camera.name]
        files[camera.name] += 1
        chunk = number // config.chunks_size
        sink.put(f"videos/{camera.key}/chunk-{chunk:03d}/file-{number:03d}.mp4", data)
        report.videos[method] = report.videos.get(method, 0) + 1
        return chunk, number

    done = (0.0, 0)  # the previous file's share of episodes and its frames, counted once it is written
    for camera, group in _video_files(episodes, cameras):
        progress.advance(*done)
        cams = [e.meta.camera(camera.name) for e in group]
        done = (len(group) / len(cameras), sum(c.num_frames for c in cams))
        fps = float(cams[0].fps)
        if config.layout == "v2.1":
            for episode, cam in zip(group, cams, strict=True):
                data, method, codec = cut_episode(store, cam, cam.num_frames, episode.meta.episode_id,
                                                  config.encode, config.remux)
                written.setdefault(camera.name, set()).add(codec)
                chunk = episode.index // config.chunks_size
                sink.put(f"videos/chunk-{chunk:03d}/{camera.key}/episode_{episode.index:06d}.mp4", data)
                report.videos[method] = report.videos.get(method, 0) + 1
            continue
        total = store.video_input(cams[0]).probe.num_frames
        spans = sorted((c.frame_start, c.num_frames) for c in cams)
        covered = [s for s, _ in spans] == list(np.cumsum([0] + [n for _, n in spans])[:-1]) and (
            spans[-1][0] + spans[-1][1] == total) and all(c.channel_order == "rgb" for c in cams)
        if covered:
            chunk, number = place(camera, read_object(store, cams[0]), "copy")
            written.setdefault(camera.name, set()).add(store.video_input(cams[0]).probe.codec)
            for episode, cam in zip(group, cams, strict=True):
                episode.videos[camera.key] = (chunk, number, cam.frame_start / fps,
                                              (cam.frame_start + cam.num_frames) / fps)
            continue
        for episode, cam in zip(group, cams, strict=True):
            data, method, codec = cut_episode(store, cam, cam.num_frames, episode.meta.episode_id, config.encode,
                                              config.remux)
            written.setdefault(camera.name, set()).add(codec)
            chunk, number = place(camera, data, method)
            episode.videos[camera.key] = (chunk, number, 0.0, cam.num_frames / fps)
    progress.advance(*done)
    for camera in cameras:  # info.json names the codec of the files actually written
        codecs = sorted(written.get(camera.name, ()))
        if len(codecs) > 1:
            report.warnings.append(f"camera {camera.name}: files written in several codecs {codecs} (some copied, "
                                   f"some re-encoded); info.json names {codecs[0]}")
        camera.codec = codecs[0] if codecs else camera.codec


def _fps_value(fps: Fraction) -> int | float:
    return fps.numerator if fps.denominator == 1 else float(fps)


def _features(meta: EpisodeMeta, cameras: list[_Camera], schema: pa.Schema) -> dict:
    """Every column of the data files, in the dtype written, then the cameras (LeRobot's feature order)."""
    features = {}
    for column in schema:
        value_type, width = column.type, None
        if pa.types.is_fixed_size_list(column.type):
            value_type, width = column.type.value_type, column.type.list_size
        names = {"observation.state": meta.state_names, "action": meta.action_names}.get(column.name)
        features[column.name] = numeric_feature(np.dtype(value_type.to_pandas_dtype()).name, width, names)
    for c in cameras:
        features[c.key] = video_feature(c.height, c.width, c.codec, c.pix_fmt, float(meta.control_fps))
    return features


def _info(first: EpisodeMeta, episodes: list[ExportedEpisode], features: dict, tasks: int, cameras: int,
          config: ExportConfig) -> dict:
    splits: dict[str, list[int]] = {}
    for episode in episodes:
        span = splits.setdefault(episode.meta.split, [episode.index, episode.index + 1])
        span[1] = episode.index + 1
    info = {"codebase_version": config.layout, "robot_type": config.robot_type or first.embodiment,
            "total_episodes": len(episodes), "total_frames": sum(e.length for e in episodes), "total_tasks": tasks,
            "chunks_size": config.chunks_size, "fps": _fps_value(first.control_fps),
            "splits": {k: f"{a}:{b}" for k, (a, b) in splits.items()}}
    if config.layout == "v2.1":
        info |= {"total_videos": len(episodes) * cameras,
                 "total_chunks": (len(episodes) + config.chunks_size - 1) // config.chunks_size,
                 "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                 "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    else:
        info |= {"data_files_size_in_mb": round(config.data_file_bytes / 2**20),
                 "video_files_size_in_mb": 500,
                 "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                 "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
    return info | {"features": features}


def _merged(episodes: list[ExportedEpisode]) -> dict:
    total: dict[str, FeatureStats] = {}
    for episode in episodes:
        for name, stats in episode.stats.items():
            if name in total:
                total[name].merge(stats)
            else:
                total[name] = FeatureStats.from_json(stats.to_json())
    return {name: stats_entry(stats, quantiles=True, count=False) for name, stats in total.items()}


def _write_meta(sink: StagedOutput, episodes: list[ExportedEpisode], tasks: list[str], info: dict,
                config: ExportConfig) -> None:
    sink.json("meta/stats.json", _merged(episodes))
    if config.layout == "v2.1":
        sink.jsonl("meta/tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(tasks)])
        sink.jsonl("meta/episodes.jsonl", [{"episode_index": e.index, "tasks": e.tasks, "length": e.length,
                                            "actionreel_episode_id": e.meta.episode_id} for e in episodes])
        sink.jsonl("meta/episodes_stats.jsonl", [
            {"episode_index": e.index, "stats": {k: stats_entry(s) for k, s in e.stats.items()}} for e in episodes])
        return
    frame = pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task"))
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    sink.put("meta/tasks.parquet", buffer.getvalue())
    rows = []
    for e in episodes:
        row = {"episode_index": e.index, "tasks": e.tasks, "length": e.length, "data/chunk_index": e.data_chunk,
               "data/file_index": e.data_file, "dataset_from_index": e.start, "dataset_to_index": e.start + e.length}
        for key, (chunk, number, start, stop) in sorted(e.videos.items()):
            row |= {f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": number,
                    f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": stop}
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                "actionreel/episode_id": e.meta.episode_id}
        for name, stats in e.stats.items():
            row |= {f"stats/{name}/{k}": v for k, v in stats_entry(stats).items()}
        rows.append(row)
    sink.parquet("meta/episodes/chunk-000/file-000.parquet", pa.Table.from_pylist(rows))
