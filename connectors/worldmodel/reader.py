"""Read one generated video (and its spec, prompt, controls, commanded actions) into a synthetic episode.

One step per generated frame at the video's rate. Video-only generations have no state and no
action (zero-width arrays, masks False, ``action_source = none``); commanded actions given beside
the video make it ``action2world`` with ``action_source = commanded`` (N actions for N frames, or
N-1 transitions, the last step then masked). The lineage holds the generator (model, checkpoint,
task, seed, guidance, steps, negative prompt, every other scalar of the spec as a parameter,
including the generated resolution and frame count), the prompt, and the conditioning inputs.
"""

from __future__ import annotations

import json
import posixpath

import numpy as np

from connectors.base import EpisodeRef, SourceError
from connectors.fsutil import file_sha256, join_inside, open_root
from connectors.worldmodel.actions import Actions, read_actions
from connectors.worldmodel.layout import Output
from connectors.worldmodel.probe import VideoFacts, video_facts
from connectors.worldmodel.spec import PATH_KEYS, Spec, controls, inside, resolve_spec
from schemas import (
    CameraInfo,
    ConditioningInput,
    Episode,
    EpisodeMeta,
    GeneratorInfo,
    Lineage,
    StepArrays,
    VideoFile,
    index_to_ns,
    make_episode_id,
    parse_rate,
)

FORMAT = "worldmodel"
_TASKS = {"image2world": "image2world", "video2world": "video2world", "action2world": "action2world",
          "action_conditioned": "action2world", "transfer": "transfer", "video2video": "transfer",
          "text2world": "other"}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_CONSUMED = {"prompt", "negative_prompt", "seed", "guidance", "num_steps", "num_sampling_step", "num_sampling_steps",
             "model_id", "model", "model_name", "checkpoint", "checkpoint_sha", "checkpoint_sha256", "embodiment",
             "split", "parent", "parent_episode_id", "parent_frame_range", "samples", "camera", "task"}
MODEL_KEYS = ("model_id", "model", "model_name", "checkpoint")


def output_of(ref: EpisodeRef) -> Output:
    return Output.from_json(ref.options["output"])


def read_output(ref: EpisodeRef) -> Episode:
    options = ref.options
    fs, root = open_root(ref.uri, options.get("storage_options"))
    output = output_of(ref)
    key = ref.key
    video_path = join_inside(root, output.video)
    facts = video_facts(fs, video_path, key)
    spec = resolve_spec(fs, root, output, key)
    _check_against_spec(spec, facts, video_path, key, bool(options.get("strict", True)))
    n = facts.num_frames
    actions = read_actions(fs, join_inside(root, output.actions), key) if output.actions else None
    action, action_valid = _align_actions(actions, n, join_inside(root, output.actions) if actions else "", key)
    prompt = str(spec.get("prompt") or "")
    camera = str(options.get("camera") or spec.get("camera") or "video")
    conditioning, input_sha = _conditioning(fs, root, spec, output, actions is not None)
    task = _generator_task(spec, conditioning, actions is not None)
    lineage = Lineage(
        parent_episode_id=str(_parent(spec).get("episode_id") or ""),
        parent_frame_range=_frame_range(spec, video_path, key),
        generator=GeneratorInfo(
            model_id=str(next((spec.get(k) for k in MODEL_KEYS if spec.get(k)), options.get("model_id", ""))),
            checkpoint_sha=str(spec.get("checkpoint_sha") or spec.get("checkpoint_sha256")
                               or options.get("checkpoint_sha", "")),
            task=task,
            seed=_number(spec, "seed", int, video_path, key),
            guidance=_number(spec, "guidance", float, video_path, key),
            num_steps=next((_number(spec, k, int, video_path, key) for k in
                            ("num_steps", "num_sampling_step", "num_sampling_steps") if spec.get(k) is not None), None),
            negative_prompt=str(spec.get("negative_prompt") or ""),
            params=_params(spec, facts),
        ),
        prompt=prompt,
        conditioning=conditioning,
        action_source="commanded" if actions is not None else "none",
        state_source="none",
    )
    extras = {"worldmodel.video": output.video, "worldmodel.spec": ",".join(spec.sources)}
    if output.sample:
        extras["worldmodel.sample"] = output.sample
    if input_sha:
        extras["worldmodel.input_sha256"] = input_sha
    extras.update(_parent_reference(spec))
    names = actions.names if actions is not None else []
    meta = EpisodeMeta(
        episode_id=make_episode_id(ref.dataset, key),
        dataset=ref.dataset,
        source_format=FORMAT,
        source_uri=ref.uri,
        source_key=key,
        source_checksum="",
        kind="synthetic",
        embodiment=str(options.get("embodiment") or spec.get("embodiment") or "unknown"),
        control_fps=facts.fps,
        num_steps=n,
        state_names=[],
        action_names=names,
        action_dtype=str(action.dtype),
        action_space=str(options.get("action_space") or (actions.meta.get("action_space") if actions else "")
                         or "unknown"),
        action_representation=str(options.get("action_representation")
                                  or (actions.meta.get("action_representation") if actions else "") or "unknown"),
        tasks=[prompt] if prompt else [],
        cameras=[CameraInfo(name=camera, width=facts.width, height=facts.height, fps=facts.fps, codec=facts.codec,
                            num_frames=n, source_key=output.video)],
        split=str(options.get("split") or spec.get("split") or "train"),
        lineage=lineage,
        extras=extras,
        duration_ns=int(index_to_ns(n, facts.fps)),
    )
    steps = StepArrays(
        timestamp_ns=index_to_ns(np.arange(n), facts.fps),
        state=np.zeros((n, 0), np.float32),
        action=action,
        frame_index={camera: np.arange(n, dtype=np.int32)},
        task_index=np.zeros(n, np.int32) if prompt else None,
        state_valid=np.zeros(n, bool),
        action_valid=action_valid,
    )
    video = VideoFile(uri=fs.unstrip_protocol(video_path), frame_start=0, num_frames=n, fps=facts.fps,
                      storage_options=options.get("storage_options") or {})
    return Episode(meta=meta, steps=steps, videos={camera: video})


def checksum_identity(ref: EpisodeRef) -> str:
    """The options, key and file hashes ``read_output`` depends on."""
    fs, root = open_root(ref.uri, ref.options.get("storage_options"))
    output = output_of(ref)
    hashes = {p: file_sha256(fs, join_inside(root, p)) for p in output.files()}
    spec = resolve_spec(fs, root, output, ref.key)
    for key in PATH_KEYS:
        path = inside(fs, root, spec.base.get(key, ""), str(spec.get(key) or ""))
        if path:
            hashes[key] = file_sha256(fs, path)
    options = {k: v for k, v in ref.options.items() if k not in ("storage_options", "output")}
    return json.dumps({"format": FORMAT, "dataset": ref.dataset, "key": ref.key, "output": output.to_json(),
                       "options": options, "files": hashes}, sort_keys=True, default=str)


def _check_against_spec(spec: Spec, facts: VideoFacts, path: str, key: str, strict: bool) -> None:
    """A video that is not what its spec asked for is most likely paired with the wrong spec."""
    if not strict:
        return
    requested = spec.get("num_output_frames", spec.get("num_frames"))
    if requested is not None and _as_int(requested) != facts.num_frames:
        raise SourceError(path, f"video has {facts.num_frames} frames but its spec asked for {requested} "
                                "(wrong pairing? pass a mapping, or strict=false)", key, "num_output_frames")
    fps = spec.get("fps")
    if fps is not None:
        try:
            wanted = parse_rate(fps)
        except (ValueError, ZeroDivisionError) as exc:
            raise SourceError(path, f"bad fps {fps!r}", key, "fps") from exc
        if abs(float(wanted) - float(facts.fps)) > 1e-3 * float(wanted):
            raise SourceError(path, f"video runs at {float(facts.fps):.4f} fps but its spec says {fps}", key, "fps")


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _number(spec: Spec, name: str, kind, path: str, key: str):
    value = spec.get(name)
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError) as exc:
        raise SourceError(path, f"{name} must be a number, got {value!r}", key, name) from exc
    if isinstance(value, bool) or (kind is float and not np.isfinite(number)):
        raise SourceError(path, f"{name} must be a finite number, got {value!r}", key, name)
    return number


def _align_actions(actions: Actions | None, n: int, path: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """N actions for N frames, or N-1 transitions (frame t -> t+1; the last step has none, masked)."""
    if actions is None:
        return np.zeros((n, 0), np.float32), np.zeros(n, bool)
    values = actions.values
    if values.shape[0] == n:
        return values, np.ones(n, bool)
    if values.shape[0] == n - 1:
        padded = np.concatenate([values, np.zeros((1, values.shape[1]), values.dtype)])
        valid = np.ones(n, bool)
        valid[-1] = False
        return padded, valid
    raise SourceError(path, f"{values.shape[0]} actions for {n} frames (expected {n} or {n - 1})", key, "actions")


def _conditioning(fs, root: str, spec: Spec, output: Output, has_actions: bool):
    out: list[ConditioningInput] = []
    input_sha = ""
    for name in ("input_path", "video_path", "input_video_path", "image_path"):
        value = spec.get(name)
        if not value:
            continue
        path = inside(fs, root, spec.base.get(name, ""), str(value))
        is_image = str(value).lower().endswith(_IMAGE_EXTS)
        out.append(ConditioningInput(kind="image" if is_image else "video",
                                     uri=fs.unstrip_protocol(path) if path else str(value),
                                     frame_index=0 if is_image else None))
        if path and not input_sha:
            input_sha = file_sha256(fs, path)
    named = controls(spec)
    for kind in sorted(set(named) | set(output.controls)):
        entry = named.get(kind, {})
        path = join_inside(root, output.controls[kind]) if kind in output.controls else inside(
            fs, root, entry.get("base", ""), str(entry.get("path") or ""))
        weight = entry.get("weight")
        out.append(ConditioningInput(kind=kind, uri=fs.unstrip_protocol(path) if path else str(entry.get("path", "")),
                                     weight=float(weight) if isinstance(weight, (int, float)) else None))
    if has_actions:
        out.append(ConditioningInput(kind="actions", uri=fs.unstrip_protocol(join_inside(root, output.actions))))
    return out, input_sha


def _generator_task(spec: Spec, conditioning: list[ConditioningInput], has_actions: bool) -> str:
    named = _TASKS.get(str(spec.get("inference_type") or "").lower())
    if named:
        return named
    kinds = {c.kind for c in conditioning}
    if kinds - {"image", "video", "actions"}:
        return "transfer"
    if has_actions:
        return "action2world"
    return "image2world" if "image" in kinds else "video2world" if "video" in kinds else "other"


def _params(spec: Spec, facts: VideoFacts) -> dict[str, str]:
    params = {}
    for key, value in spec.values.items():
        if key in _CONSUMED or key in ("depth", "edge", "seg", "vis", "blur", "wsm"):
            continue
        if isinstance(value, str):
            params[key] = value
        elif isinstance(value, (bool, int, float, list)) or value is None:
            text = json.dumps(value)
            if len(text) <= 1024:
                params[key] = text
    if "resolution" in params:
        params["requested_resolution"] = params.pop("resolution")
    params["resolution"] = f"{facts.width}x{facts.height}"
    requested = spec.get("num_output_frames", spec.get("num_frames"))
    if requested is not None and _as_int(requested) != facts.num_frames:
        params["requested_num_output_frames"] = str(requested)
    params["num_output_frames"] = str(facts.num_frames)
    params["fps"] = str(facts.fps)
    return params


def _parent(spec: Spec) -> dict:
    parent = spec.get("parent")
    out = dict(parent) if isinstance(parent, dict) else {}
    if spec.get("parent_episode_id"):
        out["episode_id"] = spec.get("parent_episode_id")
    if spec.get("parent_frame_range") is not None:
        out["frame_range"] = spec.get("parent_frame_range")
    return out


def _frame_range(spec: Spec, path: str, key: str) -> tuple[int, int] | None:
    value = _parent(spec).get("frame_range")
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise SourceError(path, f"parent frame_range must be [start, stop], got {value!r}", key, "parent.frame_range")
    return int(value[0]), int(value[1])


def _parent_reference(spec: Spec) -> dict[str, str]:
    """Parent facts the store resolves later (``pipeline.lineage``): dataset, source key, source uri."""
    parent = _parent(spec)
    return {f"lineage.parent_{name}": str(parent[name]) for name in ("dataset", "source_key", "source_uri")
            if parent.get(name) not in (None, "")}


def dataset_name(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/")) or "worldmodel"
