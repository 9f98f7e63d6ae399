"""Video-segment members of a view (``frame_codec="mp4"``): per sample and camera, one short MP4.

At the source's own size (``video_passthrough``) the segment is the source's packets cut at keyframes
(no decode, no re-encode: loader frames equal a plain decode of the source bit for bit). Otherwise the
frames are decoded and resized like any view's (the episode's frame pipeline, as raw arrays) and
encoded as one H.264 GOP per segment. The sample's ``meta.json`` carries ``segment_frames``: per
camera, the frame index (within the episode) of each picture its segment decodes to, in order; a
step's frame is found there by its ``frame_index.npy`` entry.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np

from pipeline.shards.frames import FramePipeline
from pipeline.shards.plan import SegmentPlan
from pipeline.shards.view import ViewConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.video import VideoInput
from pipeline.video.segments import cut_segment, encode_segment
from schemas import CameraInfo, EpisodeMeta, StepArrays

SegmentMember = tuple[bytes, list[int]]  # the MP4 bytes, the episode frame index of each of its pictures


def passes_through(cam: CameraInfo, video: VideoInput, view: ViewConfig) -> bool:
    """Whether this camera's segments are cut from the source: its own size, a real video codec (a JPEG
    track is decoded by libjpeg, not by the video decoder a loader would use)."""
    return (view.video_passthrough and (cam.height, cam.width) == (view.height, view.width)
            and video.probe.codec != "mjpeg" and video.channel_order == "rgb")


def segment_members(store: EpisodeStore, meta: EpisodeMeta, steps: StepArrays, segments: list[SegmentPlan],
                    cameras: list[str], view: ViewConfig, pipeline: FramePipeline,
                    ) -> dict[str, dict[int, SegmentMember]]:
    """Per camera, per segment number: the segment member of these segments of one episode."""
    out: dict[str, dict[int, SegmentMember]] = {}
    for name in cameras:
        if name not in steps.frame_index:
            continue
        cam = meta.camera(name)
        video = store.video_input(cam)
        used = {s.segment: _used_frames(steps.frame_index[name], s) for s in segments}
        used = {k: v for k, v in used.items() if v.size}
        if passes_through(cam, video, view):
            out[name] = {k: _cut(video, cam.frame_start, frames) for k, frames in used.items()}
        else:
            out[name] = _encoded(video, cam, meta, name, used, view, pipeline)
    return out


def _used_frames(frame_index: np.ndarray, segment: SegmentPlan) -> np.ndarray:
    frames = np.unique(frame_index[segment.step_start: segment.step_start + segment.num_steps])
    return frames[frames >= 0]


def _cut(video: VideoInput, frame_start: int, frames: np.ndarray) -> SegmentMember:
    data, absolute = cut_segment(video, int(frames[0]) + frame_start, int(frames[-1]) + frame_start)
    return data, [index - frame_start for index in absolute]


def _encoded(video: VideoInput, cam: CameraInfo, meta: EpisodeMeta, name: str, used: dict[int, np.ndarray],
             view: ViewConfig, pipeline: FramePipeline) -> dict[int, SegmentMember]:
    """Decode + resize every frame these segments use once (as raw arrays), then encode each segment."""
    wanted = np.unique(np.concatenate(list(used.values()))) if used else np.zeros(0, np.int64)
    raw = pipeline.encode_video(video, (wanted + cam.frame_start).tolist(), replace(view, frame_codec="npy"),
                                episode_id=meta.episode_id, camera=name)
    arrays = {index - cam.frame_start: np.load(io.BytesIO(data), allow_pickle=False) for index, data in raw.items()}
    return {k: (encode_segment([arrays[int(i)] for i in frames], video.probe.fps, view.video_crf,
                               view.video_pix_fmt, view.video_gop), frames.tolist())
            for k, frames in used.items()}
