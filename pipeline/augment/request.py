"""Generation requests and results: the JSON an augmentation run hands a generator and gets back.

A request (``actionreel.generation_request/1``) is close to a Cosmos inference spec: ``name``,
``inference_type``, ``prompt``, ``negative_prompt``, ``seed``, ``guidance``, ``num_steps``,
``num_output_frames``, ``fps``, ``resolution`` and ``input_path``, plus per camera the input video
and conditioning frames (PNG), the parent's actions and states (``.npy``), control inputs and the
parent it came from. Paths are relative to the request's folder. A result
(``actionreel.generation_result/1``) names one mp4 per camera (relative to the result folder) and
says which model made it. docs/synthetic.md has both formats field by field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline.settings import checked_settings
from schemas import EpisodeMeta, safe_name

REQUEST_FORMAT = "actionreel.generation_request/1"
RESULT_FORMAT = "actionreel.generation_result/1"
INFERENCE_TYPES = ("transfer", "video2world", "image2world", "action2world")


class RequestError(ValueError):
    """A request or result document is malformed. Names the document and the field."""

    def __init__(self, where: str, field: str, problem: str) -> None:
        self.path, self.field, self.problem = where, field, problem
        super().__init__(f"{where}: field '{field}': {problem}")


@dataclass
class PlanOptions:
    """What to ask for, per selected episode (every field has a working default)."""

    cameras: tuple[str, ...] | None = None  # default: every camera of the episode
    variants: int = 1  # requests per episode (seeds seed, seed+1, ...)
    prompts: tuple[str, ...] = ("{task}",)  # templates; variant k uses prompts[k % len]; {task} = instruction
    negative_prompt: str = ""
    inference_type: str = "transfer"
    seed: int = 0
    guidance: float | None = None
    num_steps: int | None = None
    start_step: int = 0
    max_steps: int | None = None  # default: to the episode's end
    conditioning_frames: int = 1  # leading frames per camera written as PNG
    controls: dict[str, dict] = field(default_factory=dict)  # {"edge": {"control_weight": 0.5}}
    params: dict[str, str] = field(default_factory=dict)
    dataset_suffix: str = "-synthetic"

    def __post_init__(self) -> None:
        if self.inference_type not in INFERENCE_TYPES:
            raise ValueError(f"inference_type must be one of {INFERENCE_TYPES}, got {self.inference_type!r}")
        if self.variants < 1 or self.conditioning_frames < 0 or self.start_step < 0:
            raise ValueError("variants must be >= 1, conditioning_frames and start_step >= 0")
        if not self.prompts:
            raise ValueError("at least one prompt template is needed")

    def to_json(self) -> dict:
        data = asdict(self)
        data["cameras"] = list(self.cameras) if self.cameras is not None else None
        data["prompts"] = list(self.prompts)
        return data

    @staticmethod
    def from_json(data: dict) -> PlanOptions:
        values = checked_settings(PlanOptions, data, "plan options")
        if values.get("cameras") is not None:
            values["cameras"] = tuple(values["cameras"])
        if "prompts" in values:
            values["prompts"] = tuple(values["prompts"])
        return PlanOptions(**values)


@dataclass
class RequestPlan:
    """One request before export: small, JSON-able, shipped to the worker that exports and runs it."""

    request_id: str
    parent_id: str
    version_id: str
    dataset: str
    step_range: tuple[int, int]
    cameras: list[str]
    prompt: str
    task: str
    seed: int
    variant: int
    options: dict  # PlanOptions.to_json()

    def to_json(self) -> dict:
        return {**asdict(self), "step_range": list(self.step_range)}

    @staticmethod
    def from_json(data: dict) -> RequestPlan:
        return RequestPlan(**{**data, "step_range": tuple(data["step_range"])})


def plan_requests(metas: list[EpisodeMeta], version_id: str, options: PlanOptions) -> tuple[list[RequestPlan],
                                                                                            list[str]]:
    """Requests for these episodes (in episode-id order), and why any episode got none."""
    plans, skipped = [], []
    for meta in sorted(metas, key=lambda m: m.episode_id):
        start = options.start_step
        stop = meta.num_steps if options.max_steps is None else min(meta.num_steps, start + options.max_steps)
        cameras = [c.name for c in meta.cameras] if options.cameras is None else [
            c for c in options.cameras if any(cam.name == c for cam in meta.cameras)]
        if stop - start < 2:
            skipped.append(f"{meta.episode_id}: fewer than 2 steps in [{start}, {stop})")
            continue
        if not cameras:
            skipped.append(f"{meta.episode_id}: none of the cameras {list(options.cameras or [])}")
            continue
        task = meta.tasks[0] if meta.tasks else ""
        for variant in range(options.variants):
            prompt = options.prompts[variant % len(options.prompts)].replace("{task}", task)
            seed = options.seed + variant
            identity = {"parent": meta.episode_id, "steps": meta.steps_sha256, "split": meta.split,
                        "videos": {c.name: [c.video_sha256, c.frame_start] for c in meta.cameras},
                        "range": [start, stop], "cameras": cameras, "prompt": prompt, "task": task, "seed": seed,
                        "options": {k: v for k, v in options.to_json().items()
                                    if k not in ("variants", "prompts", "seed", "cameras", "start_step", "max_steps")}}
            digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
            plans.append(RequestPlan(request_id=f"r{digest}", parent_id=meta.episode_id, version_id=version_id,
                                     dataset=safe_name(meta.dataset + options.dataset_suffix), step_range=(start, stop),
                                     cameras=cameras, prompt=prompt, task=task, seed=seed, variant=variant,
                                     options=options.to_json()))
    return plans, skipped


@dataclass
class CameraRequest:
    input_video_path: str  # the parent's frames of this camera over the step range, as mp4
    conditioning_frames: list[dict]  # [{"path": "cond/<camera>_0000.png", "frame_index": 0}]
    width: int
    height: int
    fps: str  # rational, e.g. "30" or "30000/1001"
    num_output_frames: int
    parent_frames: tuple[int, int]  # [first, last + 1) in the parent's frame numbering of this camera


@dataclass
class GenerationRequest:
    request_id: str
    inference_type: str
    prompt: str
    task: str  # the robot instruction the synthetic episode keeps
    seed: int
    num_output_frames: int  # of the primary (first) camera
    fps: str
    resolution: dict  # {"width": W, "height": H} of the primary camera
    cameras: dict[str, CameraRequest]
    parent: dict  # episode_id, version, dataset, split, embodiment, step_range
    negative_prompt: str = ""
    guidance: float | None = None
    num_steps: int | None = None
    input_path: str = ""  # primary input: the video (transfer, video2world) or first PNG (image2world)
    actions_path: str = ""
    action_names: list[str] = field(default_factory=list)
    state_path: str = ""
    state_names: list[str] = field(default_factory=list)
    controls: dict[str, dict] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.request_id

    def to_json(self) -> dict:
        data = asdict(self)
        data["cameras"] = {k: {**asdict(v), "parent_frames": list(v.parent_frames)} for k, v in self.cameras.items()}
        return {"format": REQUEST_FORMAT, "name": self.name, **data}

    @staticmethod
    def from_json(data: dict, where: str = "request.json") -> GenerationRequest:
        if data.get("format") != REQUEST_FORMAT:
            raise RequestError(where, "format", f"expected {REQUEST_FORMAT!r}, got {data.get('format')!r}")
        known = {f.name for f in fields(GenerationRequest)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["cameras"] = {k: CameraRequest(**{**v, "parent_frames": tuple(v["parent_frames"])})
                                 for k, v in data["cameras"].items()}
            return GenerationRequest(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise RequestError(where, "cameras", f"malformed request: {exc}") from exc


@dataclass
class GenerationResult:
    request_id: str
    videos: dict[str, str]  # camera -> mp4 path relative to the result folder
    status: str = "ok"
    model_id: str = ""
    checkpoint_sha: str = ""
    task: str = ""  # transfer | video2world | image2world | action2world (default: the request's)
    keeps_motion: bool | None = None  # True: the parent's actions stay valid (default: task == transfer)
    seed: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    actions_path: str = ""  # optional actions the generator labelled
    action_source: str = ""  # for actions_path (e.g. inverse_dynamics)
    labeler: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"format": RESULT_FORMAT, **asdict(self)}

    @staticmethod
    def from_json(data: Any, where: str = "result.json") -> GenerationResult:
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise RequestError(where, "format", f"expected a {RESULT_FORMAT!r} object")
        videos = data.get("videos")
        if not isinstance(videos, dict) or not all(isinstance(v, str) for v in videos.values()):
            raise RequestError(where, "videos", "must map camera names to mp4 paths")
        known = {f.name for f in fields(GenerationResult)}
        try:
            result = GenerationResult(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise RequestError(where, "result", str(exc)) from exc
        result.params = {str(k): str(v) for k, v in (result.params or {}).items()}
        return result
