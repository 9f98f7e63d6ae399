"""A generation result as a synthetic episode with its lineage.

When the generator keeps the parent's motion (transfer), the episode keeps the parent's steps over
the request's range exactly: states, actions, masks, timestamps (re-based to 0), instructions,
rewards, and each camera's frame alignment shifted to the new video. Otherwise it gets one step per
generated frame; its actions are the commanded ones for ``action2world`` (the parent's actions the
request carried), the generator's labelled ones when the result brings some, or none (masked);
its state is masked (``state_source = none``). Widths and names stay the parent's either way, so
real and synthetic episodes of one robot mix in one loader.
"""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.augment.paths import inside_dir
from pipeline.augment.quality import VideoCheck
from pipeline.augment.request import GenerationRequest, GenerationResult
from schemas import (
    CameraInfo,
    ConditioningInput,
    Episode,
    EpisodeMeta,
    GeneratorInfo,
    LabelerInfo,
    Lineage,
    StepArrays,
    VideoFile,
    index_to_ns,
    make_episode_id,
)

SOURCE_FORMAT = "augment"


def keeps_motion(request: GenerationRequest, result: GenerationResult) -> bool:
    if result.keeps_motion is not None:
        return bool(result.keeps_motion)
    return (result.task or request.inference_type) == "transfer"


def root_of(parent: EpisodeMeta) -> str:
    lineage = parent.lineage
    if lineage is not None and (lineage.root_episode_id or lineage.parent_episode_id):
        return lineage.root_episode_id or lineage.parent_episode_id
    return parent.episode_id


def frames_uri(episode_id: str, camera: str) -> str:
    """How lineage names a stored episode's camera frames."""
    return f"episode:{episode_id}/{camera}"


def result_actions(request: GenerationRequest, result: GenerationResult, request_folder: Path,
                   result_folder: Path) -> tuple[np.ndarray | None, str]:
    """The actions a non-transfer episode carries, and their source (None, "none": no actions)."""
    if result.actions_path:
        values = np.load(inside_dir(result_folder, result.actions_path), allow_pickle=False)
        return values, result.action_source or "inverse_dynamics"
    if (result.task or request.inference_type) == "action2world":
        return np.load(inside_dir(request_folder, request.actions_path), allow_pickle=False), "commanded"
    return None, "none"


def synthetic_episode(parent: EpisodeMeta, parent_steps: StepArrays, request: GenerationRequest,
                      result: GenerationResult, result_folder: Path, checks: dict[str, VideoCheck], *,
                      dataset: str, run_id: str, generator: dict, request_folder: Path) -> Episode:
    keeps = keeps_motion(request, result)
    if keeps:
        steps, control_fps, tasks = _parent_steps(parent, parent_steps, request), parent.control_fps, parent.tasks
        action_source, state_source = parent.action_source, parent.state_source
    else:
        actions, action_source = result_actions(request, result, request_folder, result_folder)
        steps, control_fps = _generated_steps(parent, request, checks, actions)
        tasks, state_source = ([request.task] if request.task else []), "none"
    start, stop = request.parent["step_range"]
    lineage = Lineage(
        parent_episode_id=parent.episode_id,
        parent_frame_range=(int(start), int(stop)),
        root_episode_id=root_of(parent),
        generator=_generator(request, result, checks, generator),
        prompt=request.prompt,
        conditioning=_conditioning(parent, request),
        action_source=action_source,
        labeler=LabelerInfo(**{k: str(v) for k, v in result.labeler.items()
                               if k in ("model_id", "checkpoint_sha")}) if result.labeler else None,
        state_source=state_source,
    )
    cameras, videos = [], {}
    for name in request.cameras:
        check = checks[name]
        path = inside_dir(result_folder, result.videos[name])
        cameras.append(CameraInfo(name=name, width=check.width, height=check.height, fps=check.fps, codec="",
                                  num_frames=check.frames, source_key=result.videos[name]))
        videos[name] = VideoFile(uri=str(path), frame_start=0, num_frames=check.frames, fps=check.fps)
    meta = replace(
        parent, episode_id=make_episode_id(dataset, request.request_id), dataset=dataset,
        source_format=SOURCE_FORMAT, source_uri=str(result_folder), source_key=request.request_id,
        source_checksum="", kind="synthetic", control_fps=control_fps, num_steps=steps.num_steps,
        tasks=list(tasks), success=parent.success if keeps else None, cameras=cameras, lineage=lineage,
        extras={"augment.run": run_id, "augment.request": request.request_id,
                "augment.generator": json.dumps(generator, sort_keys=True)[:2000]},
        duration_ns=int(steps.timestamp_ns[-1]) + int(index_to_ns(1, control_fps)),
        steps_path="", steps_sha256="", steps_bytes=0)
    return Episode(meta=meta, steps=steps, videos=videos)


def _parent_steps(parent: EpisodeMeta, steps: StepArrays, request: GenerationRequest) -> StepArrays:
    start, stop = request.parent["step_range"]
    s = steps.filled()
    window = slice(start, stop)
    frame_index = {}
    for name, camera in request.cameras.items():
        index = np.asarray(s.frame_index[name][window], dtype=np.int32)
        frame_index[name] = np.where(index >= 0, index - camera.parent_frames[0], -1).astype(np.int32)
    return StepArrays(timestamp_ns=s.timestamp_ns[window] - s.timestamp_ns[start], state=s.state[window],
                      action=s.action[window], frame_index=frame_index, task_index=s.task_index[window],
                      reward=s.reward[window], is_terminal=s.is_terminal[window], state_valid=s.state_valid[window],
                      action_valid=s.action_valid[window], extras={k: v[window] for k, v in s.extras.items()})


def _generated_steps(parent: EpisodeMeta, request: GenerationRequest, checks: dict[str, VideoCheck],
                     actions: np.ndarray | None) -> tuple[StepArrays, Fraction]:
    primary = checks[next(iter(request.cameras))]
    n, fps = primary.frames, primary.fps
    width = len(parent.action_names)
    action = np.zeros((n, width), np.dtype(parent.action_dtype))
    action_valid = np.zeros(n, bool)
    if actions is not None:
        rows = np.asarray(actions).reshape(len(actions), -1)
        if rows.shape[1] != width:
            raise ValueError(f"field 'actions': {rows.shape[1]} dims, the parent has {width}")
        count = min(len(rows), n)
        action[:count] = rows[:count].astype(action.dtype)
        action_valid[:count] = True
    frame_index = {name: np.where(np.arange(n) < checks[name].frames, np.arange(n), -1).astype(np.int32)
                   for name in request.cameras}
    steps = StepArrays(timestamp_ns=index_to_ns(np.arange(n), fps),
                       state=np.zeros((n, len(parent.state_names)), np.dtype(parent.state_dtype)), action=action,
                       frame_index=frame_index, task_index=np.zeros(n, np.int32) if request.task else None,
                       state_valid=np.zeros(n, bool), action_valid=action_valid)
    return steps, fps


def _generator(request: GenerationRequest, result: GenerationResult, checks: dict[str, VideoCheck],
               identity: dict) -> GeneratorInfo:
    primary = checks[next(iter(request.cameras))]
    params = {**{k: str(v) for k, v in request.params.items()}, **result.params,
              "inference_type": request.inference_type, "request_id": request.request_id,
              "resolution": f"{primary.width}x{primary.height}", "num_output_frames": str(primary.frames),
              "fps": str(primary.fps)}
    task = result.task or request.inference_type
    return GeneratorInfo(model_id=result.model_id or str(identity.get("model_id") or identity.get("url")
                                                         or identity.get("callable") or identity.get("kind", "")),
                         checkpoint_sha=result.checkpoint_sha or str(identity.get("checkpoint_sha", "")),
                         task=task if task in ("image2world", "video2world", "action2world", "transfer") else "other",
                         seed=request.seed if result.seed is None else int(result.seed), guidance=request.guidance,
                         num_steps=request.num_steps, negative_prompt=request.negative_prompt, params=params)


def _conditioning(parent: EpisodeMeta, request: GenerationRequest) -> list[ConditioningInput]:
    out = []
    video_input = request.inference_type in ("transfer", "video2world")
    for name, camera in request.cameras.items():
        if video_input:
            out.append(ConditioningInput(kind="video", uri=frames_uri(parent.episode_id, name),
                                         frame_index=camera.parent_frames[0]))
        for frame in camera.conditioning_frames:
            out.append(ConditioningInput(kind="frames", uri=frames_uri(parent.episode_id, name),
                                         frame_index=int(frame["frame_index"])))
    for kind, control in sorted(request.controls.items()):
        weight = control.get("control_weight", control.get("weight")) if isinstance(control, dict) else None
        out.append(ConditioningInput(kind=kind if kind in ("depth", "edge", "seg", "vis") else "other",
                                     uri=str(control.get("control_path", "")) if isinstance(control, dict) else "",
                                     weight=float(weight) if isinstance(weight, (int, float)) else None))
    if request.inference_type == "action2world":
        out.append(ConditioningInput(kind="actions", uri=f"episode:{parent.episode_id}/action",
                                     frame_index=int(request.parent["step_range"][0])))
    return out
