"""Quality gates for generated videos, checked before anything reaches the store.

Per requested camera: the video exists and decodes (``missing``, ``corrupt``), has the requested
frame count (``frame_count``), rate (``fps``) and size (``resolution``), is not mostly frozen
(``frozen``: consecutive frames where almost no pixel changes) or blank (``blank``: flat frames);
and the steps the episode will have fit the frames (``action_length``). Thresholds are a
``QualityConfig``; every failure names the gate, the camera and the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.augment.paths import UnsafePath, inside_dir
from pipeline.augment.request import GenerationRequest, GenerationResult
from pipeline.settings import checked_settings
from pipeline.video import VideoError, probe_video

GATES = ("missing", "corrupt", "frame_count", "fps", "resolution", "frozen", "blank", "action_length")


@dataclass(frozen=True)
class QualityConfig:
    frame_tolerance: int = 0  # |frames - requested| allowed
    fps_tolerance: float = 1e-3  # relative
    check_resolution: bool = True
    max_frozen_fraction: float = 0.5  # of frame transitions
    frozen_delta: int = 10  # a pixel "changes" when its grey level moves more than this
    frozen_changed_fraction: float = 0.001  # a transition is frozen when fewer pixels change
    max_blank_fraction: float = 0.1  # of frames
    blank_std: float = 2.0  # a frame is blank when its grey levels vary less than this
    analysis_width: int = 256  # frames are shrunk to at most this width for the frozen/blank checks

    @staticmethod
    def from_json(data: dict) -> QualityConfig:
        return QualityConfig(**checked_settings(QualityConfig, data, "quality settings"))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class GateFailure:
    gate: str
    camera: str
    detail: str

    def __str__(self) -> str:
        return f"{self.gate}: {self.camera + ': ' if self.camera else ''}{self.detail}"


@dataclass
class VideoCheck:
    frames: int = 0
    fps: Fraction = Fraction(0)
    width: int = 0
    height: int = 0
    frozen: int = 0
    blank: int = 0


def check_result(request: GenerationRequest, result: GenerationResult, result_dir: Path, config: QualityConfig,
                 keeps_motion: bool, action_rows: int | None) -> tuple[list[GateFailure], dict[str, VideoCheck]]:
    """Every gate failure of a result (empty: it passes) and what was measured per camera.

    ``keeps_motion``: the episode keeps the parent's steps, so every camera needs all the parent's
    frames of the range. Otherwise it gets one step per frame of the first camera, and
    ``action_rows`` actions (None: none) must cover those frames (N, or N-1 transitions).
    """
    failures: list[GateFailure] = []
    checks: dict[str, VideoCheck] = {}
    for camera, wanted in request.cameras.items():
        name = result.videos.get(camera)
        try:
            path = inside_dir(result_dir, name) if name else None
        except UnsafePath as exc:
            failures.append(GateFailure("missing", camera, str(exc)))
            continue
        if path is None or not path.is_file():
            failures.append(GateFailure("missing", camera, "the result has no video for this camera"))
            continue
        try:
            check = measure(path, config)
        except VideoError as exc:
            gate = "fps" if "variable frame rate" in exc.problem else "corrupt"
            failures.append(GateFailure(gate, camera, exc.problem))
            continue
        checks[camera] = check
        failures.extend(_gates(camera, check, wanted.num_output_frames, Fraction(wanted.fps),
                               (wanted.width, wanted.height), config))
        if keeps_motion and check.frames < wanted.num_output_frames:
            failures.append(GateFailure("action_length", camera, f"the parent's steps need "
                                        f"{wanted.num_output_frames} frames, the video has {check.frames}"))
    primary = next(iter(request.cameras))
    if not keeps_motion and action_rows is not None and primary in checks:
        frames = checks[primary].frames
        if action_rows not in (frames, frames - 1):
            failures.append(GateFailure("action_length", primary, f"{action_rows} actions for {frames} frames "
                                                                  f"(expected {frames} or {frames - 1})"))
    return failures, checks


def _gates(camera: str, check: VideoCheck, frames: int, fps: Fraction, size: tuple[int, int],
           config: QualityConfig) -> list[GateFailure]:
    out = []
    if abs(check.frames - frames) > config.frame_tolerance:
        out.append(GateFailure("frame_count", camera, f"{check.frames} frames, requested {frames}"))
    if fps and abs(float(check.fps) - float(fps)) > config.fps_tolerance * float(fps):
        out.append(GateFailure("fps", camera, f"{float(check.fps):.4f} fps, requested {float(fps):.4f}"))
    if config.check_resolution and (check.width, check.height) != size:
        out.append(GateFailure("resolution", camera, f"{check.width}x{check.height}, requested {size[0]}x{size[1]}"))
    transitions = max(1, check.frames - 1)
    if check.frames > 1 and check.frozen / transitions > config.max_frozen_fraction:
        out.append(GateFailure("frozen", camera, f"{check.frozen} of {transitions} frame transitions frozen "
                                                 f"(max {config.max_frozen_fraction:.0%})"))
    if check.blank / max(1, check.frames) > config.max_blank_fraction:
        out.append(GateFailure("blank", camera, f"{check.blank} of {check.frames} frames blank "
                                                f"(max {config.max_blank_fraction:.0%})"))
    return out


def measure(path: Path, config: QualityConfig) -> VideoCheck:
    """Probe (packets, rate, size; CFR checked) and decode every frame for the frozen/blank counts."""
    probe = probe_video(str(path), lambda: str(path))
    check = VideoCheck(frames=probe.num_frames, fps=probe.fps, width=probe.width, height=probe.height)
    previous = None
    decoded = 0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                grey = _small_grey(frame.to_ndarray(format="rgb24"), config.analysis_width)
                decoded += 1
                if float(grey.std()) < config.blank_std:
                    check.blank += 1
                if previous is not None:
                    changed = np.count_nonzero(cv2.absdiff(grey, previous) > config.frozen_delta)
                    if changed < config.frozen_changed_fraction * grey.size:
                        check.frozen += 1
                previous = grey
    except av.error.FFmpegError as exc:
        raise VideoError(str(path), f"decode failed after {decoded} frames: {exc}") from exc
    if decoded != probe.num_frames:
        raise VideoError(str(path), f"{probe.num_frames} packets but {decoded} frames decode")
    return check


def _small_grey(rgb: np.ndarray, width: int) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if grey.shape[1] > width:
        grey = cv2.resize(grey, (width, max(1, round(grey.shape[0] * width / grey.shape[1]))),
                          interpolation=cv2.INTER_AREA)
    return grey
