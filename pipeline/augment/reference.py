"""The reference generator: transfer without model weights (OpenCV, deterministic per seed).

Each camera's input video gets one photometric transform (brightness, contrast, gamma, per-channel
gain, saturation, a little sensor noise) and one geometric transform (small rotation, zoom-in,
shift; reflected borders), drawn once per request from its seed and applied to every frame alike.
Frame count, rate and timing are the parent's, so the robot moves exactly as recorded: the parent's
actions and states stay valid (``task = transfer``, ``keeps_motion = true``). It exercises the whole
augmentation loop locally and in tests, and is a worked example of the plugin contract.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.augment.paths import inside_dir
from pipeline.augment.protocol import GenerationError
from pipeline.augment.request import GenerationRequest, GenerationResult
from pipeline.video import EncodeConfig, encode_frames

MODEL_ID = "actionreel/reference-transfer-v1"


@dataclass(frozen=True)
class Transform:
    brightness: float  # added, in levels
    contrast: float  # gain around mid-grey
    gamma: float
    gains: tuple[float, float, float]  # per RGB channel
    saturation: float
    noise_sigma: float
    rotation_deg: float
    scale: float  # >= 1: zoom in, so no border is invented at the corners
    shift: tuple[float, float]  # fraction of width / height

    def params(self) -> dict[str, str]:
        return {k: (",".join(f"{x:.4f}" for x in v) if isinstance(v, tuple) else f"{v:.4f}")
                for k, v in asdict(self).items()}


def sample_transform(seed: int, strength: float = 1.0, photometric: bool = True, geometric: bool = True,
                     salt: str = "") -> Transform:
    """One transform per (seed, salt): the job salts with the parent episode, so episodes differ."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _salt(salt), 0xA06])
    p = strength if photometric else 0.0
    g = strength if geometric else 0.0

    def draw(spread: float) -> float:
        return float(rng.uniform(-spread, spread))

    return Transform(
        brightness=draw(20) * p, contrast=1 + draw(0.2) * p, gamma=float(np.exp(draw(0.25) * p)),
        gains=(1 + draw(0.12) * p, 1 + draw(0.12) * p, 1 + draw(0.12) * p), saturation=1 + draw(0.35) * p,
        noise_sigma=float(rng.uniform(1.0, 3.0)) * p, rotation_deg=draw(3.0) * g,
        scale=1 + float(rng.uniform(0.0, 0.08)) * g, shift=(draw(0.03) * g, draw(0.03) * g))


def apply_transform(rgb: np.ndarray, t: Transform, noise: np.random.Generator) -> np.ndarray:
    height, width = rgb.shape[:2]
    image = rgb
    if t.rotation_deg or t.scale != 1 or any(t.shift):
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), t.rotation_deg, t.scale)
        matrix[:, 2] += (t.shift[0] * width, t.shift[1] * height)
        image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101)
    levels = np.arange(256, dtype=np.float64) / 255.0
    luts = []
    for gain in t.gains:
        curve = 255.0 * levels ** t.gamma
        curve = (curve - 128.0) * t.contrast + 128.0 + t.brightness
        luts.append(np.clip(curve * gain, 0, 255).astype(np.uint8))
    image = cv2.merge([cv2.LUT(image[..., c], luts[c]) for c in range(3)])
    out = image.astype(np.float32)
    if t.saturation != 1:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
        out = gray + (out - gray) * t.saturation
    if t.noise_sigma > 0:
        out += noise.normal(0.0, t.noise_sigma, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class ReferenceGenerator:
    """``generator(request, request_dir, out_dir) -> result`` for transfer requests."""

    def __init__(self, strength: float = 1.0, photometric: bool = True, geometric: bool = True, crf: int = 18) -> None:
        self.strength, self.photometric, self.geometric, self.crf = float(strength), photometric, geometric, int(crf)

    def identity(self) -> dict:
        return {"kind": "reference", "model_id": MODEL_ID, "strength": self.strength,
                "photometric": self.photometric, "geometric": self.geometric, "crf": self.crf}

    def __call__(self, request: dict, request_dir: str, out_dir: str) -> dict:
        started = time.perf_counter()
        req = GenerationRequest.from_json(request)
        transform = sample_transform(req.seed, self.strength, self.photometric, self.geometric,
                                     str(req.parent.get("episode_id", "")))
        videos = {}
        for number, (camera, spec) in enumerate(sorted(req.cameras.items())):
            source = inside_dir(request_dir, spec.input_video_path)
            noise = np.random.default_rng([int(req.seed) & 0xFFFFFFFF, _salt(req.request_id), number, 0xB0B])
            frames = (apply_transform(rgb, transform, noise) for rgb in _decode(source))
            data, count = encode_frames(frames, Fraction(spec.fps), spec.width, spec.height,
                                        EncodeConfig(crf=self.crf, preset="veryfast"))
            if count != spec.num_output_frames:
                raise GenerationError(f"{camera}: input video has {count} frames, request says "
                                      f"{spec.num_output_frames}", retryable=False, gate="frame_count")
            name = f"{camera}.mp4"
            (Path(out_dir) / name).write_bytes(data)
            videos[camera] = name
        return GenerationResult(request_id=req.request_id, videos=videos, model_id=MODEL_ID, task="transfer",
                                keeps_motion=True, seed=req.seed, params=transform.params(),
                                seconds=time.perf_counter() - started).to_json()


def generate(request: dict, request_dir: str, out_dir: str) -> dict:
    """The reference generator as a plain function (``python:pipeline.augment.reference:generate``)."""
    return ReferenceGenerator()(request, request_dir, out_dir)


def _salt(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _decode(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
