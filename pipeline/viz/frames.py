"""Pictures from stored videos: small JPEG thumbnails for the report, browser-playable previews for the viewer.

Browsers play H.264/VP9/AV1 in 4:2:0; a stored track in another codec (mjpeg, ffv1, hevc) or another
pixel format (the lossless option's RGB-plane H.264, 4:4:4) gets an H.264 4:2:0 preview, and so does
an episode that shares its video object with others (a LeRobot v3.0 file): the preview holds exactly
the episode's frames, so the page's video time 0 is the episode's first frame.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.store.episodes import EpisodeStore
from schemas import CameraInfo

BROWSER_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
BROWSER_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})


def evenly_spaced(count: int, total: int) -> list[int]:
    """``count`` distinct indices from 0 to ``total - 1``, first and last included."""
    if total <= 0 or count <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, total - 1, min(count, total)).round()})


def thumbnail_size(camera: CameraInfo, height: int) -> tuple[int, int]:
    width = max(2, round(camera.width * height / max(1, camera.height) / 2) * 2)
    return height, width


def thumbnails(store: EpisodeStore, camera: CameraInfo, frames: list[int], height: int = 72,
               quality: int = 70) -> list[str]:
    """JPEG data URIs of the episode's frames ``frames`` (counted from its first frame), ``height`` pixels high."""
    import cv2

    from pipeline.video import PyAVDecoder

    if not frames:
        return []
    th, tw = thumbnail_size(camera, height)
    wanted = [camera.frame_start + f for f in frames]
    images = dict(PyAVDecoder(threads=1).scaled_frames(store.video_input(camera), wanted, th, tw))
    out = []
    for index in wanted:
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(images[index][:, :, ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"JPEG encoding of frame {index} of {camera.video_path} failed")
        out.append("data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii"))
    return out


@dataclass
class Preview:
    path: Path
    how: str  # "stored" (the stored object as it is) | "transcoded" (an H.264 preview)
    codec: str  # the stored track's codec


def plays_as_stored(store: EpisodeStore, camera: CameraInfo) -> bool:
    """The stored object is one browser-playable track holding only this episode's frames."""
    if camera.codec not in BROWSER_CODECS or camera.pix_fmt not in BROWSER_PIX_FMTS or camera.frame_start:
        return False
    probe = store.video_input(camera).probe
    return probe.container.startswith(("mov", "mp4")) and probe.num_frames == camera.num_frames


def write_preview(store: EpisodeStore, camera: CameraInfo, out: Path, max_height: int = 480) -> Preview:
    """``out`` (an .mp4) plays this camera's frames of the episode in a browser."""
    from pipeline.video import EncodeConfig, PyAVDecoder, encode_frames

    out.parent.mkdir(parents=True, exist_ok=True)
    if plays_as_stored(store, camera):
        with store.fs.open(store.objects.abspath(camera.video_path), "rb") as source:
            out.write_bytes(source.read())
        return Preview(out, "stored", camera.codec)
    height = min(camera.height, max_height) // 2 * 2
    height, width = thumbnail_size(camera, height) if height != camera.height else (height, camera.width // 2 * 2)
    wanted = range(camera.frame_start, camera.frame_start + camera.num_frames)
    frames = (image for _, image in PyAVDecoder(threads=1).scaled_frames(store.video_input(camera), wanted,
                                                                          height, width))
    data, _ = encode_frames(frames, camera.fps, width, height, EncodeConfig(crf=26, preset="veryfast"))
    out.write_bytes(data)
    return Preview(out, "transcoded", camera.codec)
