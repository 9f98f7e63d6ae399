"""A small store written without Ray for the report and viewer tests: one episode whose camera is stored
as an mjpeg track (JPEG passthrough: browsers cannot play it, the viewer must transcode a preview), one
stored as H.264 and one as AV1 (both played as stored), with rewards, tasks and a success flag."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from pipeline.stats import StatsSet, episode_stats
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import VersionManifest, commit_version, write_stats
from pipeline.video import EncodeConfig, encode_frames
from schemas import (
    CameraInfo,
    Episode,
    EpisodeMeta,
    FrameSequence,
    StepArrays,
    VideoFile,
    index_to_ns,
    make_episode_id,
)

FPS = Fraction(10)
H, W = 96, 128
STEPS = 40


def moving_picture(index: int, seed: int) -> np.ndarray:
    """A bright square crossing a gradient: every frame differs, and none is blank."""
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([(x * 2 + seed * 40) % 256, (y * 2) % 256, np.full((H, W), 90)], axis=-1).astype(np.uint8)
    left = (index * 3) % (W - 24)
    image[30:54, left:left + 24] = (240, 40, 40)
    return image


def _source(track: str, pictures: list[np.ndarray], folder: Path) -> FrameSequence | VideoFile:
    """The camera as the connector would hand it over: JPEG frames, raw frames, or an AV1 file."""
    if track == "av1":
        data, _ = encode_frames(pictures, FPS, W, H, EncodeConfig(codec="libsvtav1", crf=35, preset="8"))
        path = folder / "av1.mp4"
        path.write_bytes(data)
        return VideoFile(str(path), 0, STEPS, FPS)
    encoded = None
    if track == "mjpeg":
        jpegs = [cv2.imencode(".jpg", p[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for p in pictures]
        encoded = lambda: iter(jpegs)  # noqa: E731
    return FrameSequence(lambda: iter(pictures), STEPS, FPS, W, H, encoded=encoded,
                         encoded_codec="jpeg" if encoded else "")


def _episode(key: str, seed: int, track: str, success: bool | None, folder: Path) -> Episode:
    pictures = [moving_picture(i, seed) for i in range(STEPS)]
    source = _source(track, pictures, folder)
    meta = EpisodeMeta(
        episode_id=make_episode_id("bench-arm", key), dataset="bench-arm", source_format="test",
        source_uri="mem://bench-arm", source_key=key, source_checksum=key, kind="teleop", embodiment="arm",
        control_fps=FPS, num_steps=STEPS, state_names=["shoulder", "elbow", "gripper"],
        action_names=["shoulder_cmd", "elbow_cmd", "gripper_cmd"], tasks=[f"move the red square ({key})"],
        success=success, cameras=[CameraInfo("front", W, H, FPS, "", STEPS, source_key="front")])
    t = np.arange(STEPS)
    state = np.stack([np.sin(t / 6 + seed), np.cos(t / 9), (t % 10) / 10], axis=1).astype(np.float32)
    steps = StepArrays(timestamp_ns=index_to_ns(t, FPS), state=state, action=(state * 0.5).astype(np.float32),
                       frame_index={"front": t.astype(np.int32)}, reward=(t == STEPS - 1).astype(np.float64),
                       task_index=np.zeros(STEPS, np.int32))
    return Episode(meta, steps, {"front": source})


def browser_store(root: Path) -> tuple[EpisodeStore, str, list[EpisodeMeta]]:
    """Three episodes (mjpeg, H.264 and AV1 cameras) committed as ``latest``; returns store, version id and
    metas in id order."""
    store = EpisodeStore(str(root / "store"))
    metas, stats = [], StatsSet()
    for key, seed, track, success in (("mjpeg", 0, "mjpeg", True), ("h264", 1, "h264", False), ("av1", 2, "av1", None)):
        episode = _episode(key, seed, track, success, root)
        meta = store.write_episode(episode)
        steps = episode.steps.filled()
        stats.merge(episode_stats(meta.embodiment, steps.state, steps.action, steps.state_valid, steps.action_valid))
        metas.append(meta)
    manifest = VersionManifest(catalog=[store.write_catalog(metas)], stats=write_stats(store, stats),
                               totals={"episodes": len(metas), "steps": STEPS * len(metas)},
                               producer={"job": "test"})
    return store, commit_version(store, manifest, "latest"), sorted(metas, key=lambda m: m.episode_id)
