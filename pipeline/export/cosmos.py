"""Export a version as the dataset Cosmos action-conditioned post-training reads. Never in place.

cosmos-predict2's ``ActionConditionedDataset`` lists ``<root>/annotation/{train,val,test}/*.json``
and reads, per file: ``state`` (T rows, the first 6 being the end effector's xyz + roll/pitch/yaw),
``continuous_gripper_state`` (T values), ``videos`` (by camera id, ``{"video_path": ...}`` joined to
the root), ``episode_id``; ``len(state)`` must equal the video's frame count. It computes its own
actions from those (``pipeline.cosmos_action``), so ``action`` is written only as the source had it.

Written here: ``annotation/<split>/<name>.json`` and ``videos/<split>/<name>/<camera>.mp4`` (H.264
at the source rate, one frame per step: copied or remuxed when already H.264, else re-encoded).
``state`` is the 6 pose dims followed by the other state dims in source order (a Cosmos-layout
source comes back as it was); ``texts`` are the episode's tasks; ``episode_id`` and ``<name>`` are
the source's episode id when it had one (``sidecar.episode_id``), else the catalog id; other
sidecar fields come back as they were, except ``latent_videos`` (latents are not exported).
Splits come from the catalog. The pose and gripper dims are given (``pose``, ``gripper``) or
inferred from state names; data with no end-effector pose (joint space) is refused in one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from pipeline.cosmos_action import EULER_ROTATIONS, GRIPPER_EXTRA, infer_gripper_dim, infer_pose_dims
from pipeline.export.lerobot import ExportReport
from pipeline.export.output import StagedOutput, check_output, episode_order
from pipeline.export.video import ExportError, cut_episode, reencode_range
from pipeline.progress import JobProgress
from pipeline.store.catalog import CatalogQuery, read_catalog_table
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import VersionManifest
from pipeline.video import EncodeConfig
from schemas import EpisodeMeta, StepArrays, table_to_metas

LAYOUT = "cosmos-action"
COSMOS_SPLITS = ("train", "val", "test")
_NOT_CARRIED = {"latent_videos"}  # sidecar fields naming files this export does not write
_WRITTEN = {"state", "continuous_gripper_state", "videos", "episode_id", "texts", "action"}
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class CosmosExportConfig:
    pose: tuple[str, ...] | None = None  # 6 state names (or indices): x, y, z, roll, pitch, yaw
    gripper: str | None = None  # a step extra or a state name; default: continuous_gripper_state or "*gripper*"
    cameras: tuple[str, ...] | None = None  # default: every camera, in catalog order
    encode: EncodeConfig = field(default_factory=EncodeConfig)

    def __post_init__(self) -> None:
        if self.pose is not None and len(self.pose) != 6:
            raise ValueError(f"pose names 6 state dims (x, y, z, roll, pitch, yaw), got {len(self.pose)}")


@dataclass(frozen=True)
class _Dims:
    pose: list[int]
    gripper_extra: str | None
    gripper_dim: int | None
    how: str


def export_cosmos(store: EpisodeStore, manifest: VersionManifest, out: str,
                  config: CosmosExportConfig = CosmosExportConfig(), query: CatalogQuery | None = None,
                  storage_options: dict | None = None, progress: JobProgress | None = None) -> ExportReport:
    """Write the version's episodes (those matching ``query``) in Cosmos' action-conditioned layout."""
    metas = sorted(table_to_metas(read_catalog_table(store, manifest, query=query)), key=episode_order)
    if not metas:
        raise ExportError("", "selection", "no episode to export")
    for meta in metas:
        pose_dims(meta, config)  # refuse joint-space data before writing anything
    sink = StagedOutput(out, storage_options)
    check_output(store, sink.fs, sink.target, metas)
    report = ExportReport(out, LAYOUT)
    names = _names(metas)
    progress = progress or JobProgress("export", 0, enabled=False)
    progress.start(len(metas))
    try:
        for meta in metas:
            _write_episode(store, meta, names[meta.episode_id], config, sink, report)
            progress.advance(1, sum(c.num_frames for c in meta.cameras))
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    report.episodes, report.steps = len(metas), sum(m.num_steps for m in metas)
    report.tasks = len({t for m in metas for t in m.tasks})
    return report


def pose_dims(meta: EpisodeMeta, config: CosmosExportConfig, extras: set[str] | None = None) -> _Dims:
    """Which state dims are the pose and where the gripper is; ExportError (one line) when there is no pose."""
    names = list(meta.state_names)
    if config.pose is not None:
        pose = [_index(names, n, meta, "pose") for n in config.pose]
        how = "option"
    else:
        pose, how = infer_pose_dims(names), "state names"
        if pose is None and _cosmos_layout(meta):
            pose, how = list(range(6)), "Cosmos-layout sidecar (pose first)"
        if pose is None:
            raise ExportError(meta.episode_id, "state_names", f"no end-effector pose (xyz + roll/pitch/yaw) in "
                              f"state names {_short(names)}: Cosmos actions need one; joint-space data cannot be "
                              "exported as cosmos-action (name the dims with --pose if they are a pose)")
    if meta.rotation_type not in EULER_ROTATIONS:
        raise ExportError(meta.episode_id, "rotation_type", f"{meta.rotation_type!r}: Cosmos reads roll/pitch/yaw")
    gripper_extra, gripper_dim = None, None
    chosen = config.gripper
    if chosen is not None:
        if chosen in names:
            gripper_dim = names.index(chosen)
        else:
            gripper_extra = chosen
    elif extras is not None and GRIPPER_EXTRA in extras:
        gripper_extra = GRIPPER_EXTRA
    elif _cosmos_layout(meta) and extras is None:
        gripper_extra = GRIPPER_EXTRA  # checked per episode once its steps are read
    else:
        gripper_dim = infer_gripper_dim(names, pose)
    return _Dims(pose, gripper_extra, gripper_dim, how)


def _cosmos_layout(meta: EpisodeMeta) -> bool:
    """A clip-set sidecar in Cosmos' own layout (VPP / IRASim): its ``state`` starts with the pose."""
    return meta.source_format == "video_folder" and len(meta.state_names) >= 6 and any(
        k.startswith("sidecar.") for k in meta.extras)


def _index(names: list[str], name: str, meta: EpisodeMeta, what: str) -> int:
    if name in names:
        return names.index(name)
    if name.isdigit() and int(name) < len(names):
        return int(name)
    raise ExportError(meta.episode_id, what, f"{name!r} is not a state name ({_short(names)})")


def _short(names: list[str]) -> str:
    return str(names if len(names) <= 8 else [*names[:8], f"... {len(names)} in all"])


def _names(metas: list[EpisodeMeta]) -> dict[str, str]:
    """File name per episode: the source's episode id when safe and unique within its split, else the catalog id."""
    wanted = {m.episode_id: _source_id(m) for m in metas}
    counts: dict[tuple[str, str], int] = {}
    for m in metas:
        counts[(m.split, wanted[m.episode_id])] = counts.get((m.split, wanted[m.episode_id]), 0) + 1
    return {m.episode_id: wanted[m.episode_id] if _SAFE.match(wanted[m.episode_id]) and counts[
        (m.split, wanted[m.episode_id])] == 1 else m.episode_id for m in metas}


def _source_id(meta: EpisodeMeta) -> str:
    raw = meta.extras.get("sidecar.episode_id")
    if raw is None:
        return meta.episode_id
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return str(value)


def _write_episode(store: EpisodeStore, meta: EpisodeMeta, name: str, config: CosmosExportConfig, sink: StagedOutput,
                   report: ExportReport) -> None:
    steps = store.read_steps(meta).filled()
    dims = pose_dims(meta, config, set(steps.extras))
    n = steps.num_steps
    if not steps.state_valid.all():
        raise ExportError(meta.episode_id, "state", f"{int((~steps.state_valid).sum())} steps have no state: "
                          "Cosmos computes every action from the state")
    gripper = _gripper(meta, steps, dims)
    order = dims.pose + [i for i in range(steps.state.shape[1]) if i not in dims.pose]
    if meta.split not in COSMOS_SPLITS:
        report.warnings.append(f"episode {meta.episode_id}: split {meta.split!r} is not one Cosmos reads "
                               f"({', '.join(COSMOS_SPLITS)})")
    doc: dict = {}
    for key, text in sorted(meta.extras.items()):
        field_name = key[len("sidecar."):]
        if key.startswith("sidecar.") and field_name not in _NOT_CARRIED | _WRITTEN:
            doc[field_name] = _json_value(text)
    if meta.tasks:
        doc["texts"] = list(meta.tasks)
    doc["videos"] = []
    for cam in _cameras(meta, config):
        relative = f"videos/{meta.split}/{name}/{cam.name}.mp4"
        sink.put(relative, _video(store, meta, steps, cam, n, config, report))
        doc["videos"].append({"video_path": relative})
    action = _actions(steps)
    if action is not None:
        doc["action"] = action
    doc["state"] = steps.state[:, order].tolist()
    doc["continuous_gripper_state"] = gripper.tolist()
    doc["episode_id"] = _source_id(meta)
    sink.json(f"annotation/{meta.split}/{name}.json", doc)


def _json_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _gripper(meta: EpisodeMeta, steps: StepArrays, dims: _Dims) -> np.ndarray:
    if dims.gripper_extra is not None:
        values = steps.extras.get(dims.gripper_extra)
        if values is None:
            raise ExportError(meta.episode_id, dims.gripper_extra, f"no step extra {dims.gripper_extra!r} (extras: "
                              f"{sorted(steps.extras)}); name the gripper with --gripper")
        values = np.asarray(values)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ExportError(meta.episode_id, dims.gripper_extra, f"shape {list(values.shape)}: one value per step")
        return values
    if dims.gripper_dim is None:
        raise ExportError(meta.episode_id, "gripper", "no gripper state (no continuous_gripper_state extra and no "
                          "single state name with 'gripper'): name it with --gripper")
    return steps.state[:, dims.gripper_dim]


def _cameras(meta: EpisodeMeta, config: CosmosExportConfig):
    if config.cameras is None:
        return list(meta.cameras)
    by_name = {c.name: c for c in meta.cameras}
    missing = [c for c in config.cameras if c not in by_name]
    if missing:
        raise ExportError(meta.episode_id, "cameras", f"{missing} not among {sorted(by_name)}")
    return [by_name[c] for c in config.cameras]


def _video(store: EpisodeStore, meta: EpisodeMeta, steps: StepArrays, cam, n: int, config: CosmosExportConfig,
           report: ExportReport) -> bytes:
    """The camera's frames, one per step, as H.264 at the source rate."""
    frames = steps.frame_index.get(cam.name)
    if frames is None or not np.array_equal(frames, np.arange(n)) or cam.fps != meta.control_fps:
        raise ExportError(meta.episode_id, f"frame.{cam.name}", "frames are not one per step at the control rate: "
                          "Cosmos pairs state row i with video frame i")
    if cam.codec == "h264":
        data, method = cut_episode(store, cam, n, meta.episode_id, config.encode)
    else:
        data, method = reencode_range(store.video_input(cam), cam.frame_start, n, cam.fps, config.encode), "reencode"
    report.videos[method] = report.videos.get(method, 0) + 1
    return data


def _actions(steps: StepArrays) -> list | None:
    """The source's own actions: every step, or T-1 transitions when only the last step has none."""
    if steps.action.shape[1] == 0:
        return None
    valid = steps.action_valid
    if valid.all():
        return steps.action.tolist()
    if not valid[-1] and valid[:-1].all():
        return steps.action[:-1].tolist()
    return None
