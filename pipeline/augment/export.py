"""Export one generation request: the parent's frames, conditioning PNGs, actions and states, request.json.

Layout of ``<workdir>/requests/<request_id>/``::

    request.json                 written last: its presence means the export is complete
    input/<camera>.mp4           the parent's frames of the camera over the step range (H.264, CRF 18)
    cond/<camera>_<i:04d>.png    the first ``conditioning_frames`` of those frames, lossless
    actions.npy, state.npy       the parent's actions / states over the step range (source dtype)

Frames stream from the decoder into the encoder: one episode's video is never held in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from pipeline.augment.paths import read_json_file, write_atomic, write_json
from pipeline.augment.request import CameraRequest, GenerationRequest, PlanOptions, RequestError, RequestPlan
from pipeline.store.episodes import EpisodeStore
from pipeline.video import EncodeConfig, PyAVDecoder, encode_frames
from schemas import EpisodeMeta, StepArrays, rate_to_str

INPUT_ENCODE = EncodeConfig(crf=18, preset="veryfast")


def request_dir(workdir: str | Path, request_id: str) -> Path:
    return Path(workdir) / "requests" / request_id


def load_request(folder: Path) -> GenerationRequest | None:
    """The exported request in ``folder``, or None when it is absent or was cut short."""
    path = folder / "request.json"
    if not path.exists():
        return None
    try:
        return GenerationRequest.from_json(read_json_file(path), str(path))
    except (RequestError, ValueError):
        return None


def export_request(store: EpisodeStore, parent: EpisodeMeta, plan: RequestPlan, folder: Path,
                   steps: StepArrays | None = None) -> GenerationRequest:
    """Write the request's files (skipped when a complete export is already there)."""
    existing = load_request(folder)
    if existing is not None:
        return existing
    options = PlanOptions.from_json(plan.options)
    steps = steps if steps is not None else store.read_steps(parent).filled()
    start, stop = plan.step_range
    cameras = {name: _export_camera(store, parent, steps, name, start, stop, options.conditioning_frames, folder)
               for name in plan.cameras}
    write_atomic(folder / "actions.npy", _npy(steps.action[start:stop]))
    write_atomic(folder / "state.npy", _npy(steps.state[start:stop]))
    primary = cameras[plan.cameras[0]]
    if options.inference_type in ("image2world", "action2world") and primary.conditioning_frames:
        input_path = primary.conditioning_frames[0]["path"]
    else:
        input_path = primary.input_video_path
    request = GenerationRequest(
        request_id=plan.request_id, inference_type=options.inference_type, prompt=plan.prompt, task=plan.task,
        seed=plan.seed, num_output_frames=primary.num_output_frames, fps=primary.fps,
        resolution={"width": primary.width, "height": primary.height}, cameras=cameras,
        parent={"episode_id": parent.episode_id, "version": plan.version_id, "dataset": parent.dataset,
                "split": parent.split, "embodiment": parent.embodiment, "step_range": list(plan.step_range)},
        negative_prompt=options.negative_prompt, guidance=options.guidance, num_steps=options.num_steps,
        input_path=input_path, actions_path="actions.npy", action_names=list(parent.action_names),
        state_path="state.npy", state_names=list(parent.state_names), controls=dict(options.controls),
        params=dict(options.params))
    write_json(folder / "request.json", request.to_json())
    return request


def _export_camera(store: EpisodeStore, parent: EpisodeMeta, steps: StepArrays, name: str, start: int, stop: int,
                   conditioning: int, folder: Path) -> CameraRequest:
    cam = parent.camera(name)
    index = np.asarray(steps.frame_index[name][start:stop])
    aligned = index[index >= 0]
    if aligned.size == 0:
        raise ValueError(f"episode {parent.episode_id}: camera {name} has no frame in steps [{start}, {stop})")
    first, last = int(aligned.min()), int(aligned.max())
    wanted = np.arange(first, last + 1) + cam.frame_start
    frames = _frames_with_pngs(PyAVDecoder(threads=1).frames(store.video_input(cam), wanted.tolist()),
                               folder, name, conditioning)
    data, count = encode_frames(frames, cam.fps, cam.width, cam.height, INPUT_ENCODE)
    if count != last - first + 1:
        raise ValueError(f"episode {parent.episode_id}: camera {name}: decoded {count} frames, expected "
                         f"{last - first + 1}")
    write_atomic(folder / "input" / f"{name}.mp4", data)
    cond = [{"path": f"cond/{name}_{i:04d}.png", "frame_index": first + i} for i in range(min(conditioning, count))]
    return CameraRequest(input_video_path=f"input/{name}.mp4", conditioning_frames=cond, width=cam.width,
                         height=cam.height, fps=rate_to_str(cam.fps), num_output_frames=count,
                         parent_frames=(first, last + 1))


def _frames_with_pngs(decoded, folder: Path, camera: str, conditioning: int) -> Iterator[np.ndarray]:
    for number, (_, rgb) in enumerate(decoded):
        if number < conditioning:
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise ValueError(f"PNG encoding failed for {camera} frame {number}")
            write_atomic(folder / "cond" / f"{camera}_{number:04d}.png", png.tobytes())
        yield rgb


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
