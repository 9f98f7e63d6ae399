"""Video for exports: copy a stored stream as is, or cut an episode's frames out of it.

A cut is a remux (packets copied, timestamps shifted to start at zero, no re-encode) when the
episode's frames are whole GOPs of the stored stream: its first frame is a keyframe, the frame
after its last is a keyframe or the end, and its packets are contiguous in decode order. LeRobot's
own writer starts every episode on a keyframe, so its multi-episode files cut losslessly. The output
stream copies the source's codec parameters (``opaque``): it never opens an encoder, so codecs that
PyAV decodes under another name (AV1 via ``libdav1d``, LeRobot's default codec) remux too. Otherwise,
or when the muxer refuses the stream, the frames are decoded and re-encoded (H.264, explicit GOP and
quality). Either way the result is probed and must hold exactly the episode's frame count.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av

from pipeline.store.episodes import EpisodeStore
from pipeline.video import EncodeConfig, PyAVDecoder, VideoInput, encode_frames, probe_video
from schemas import CameraInfo


class ExportError(Exception):
    """An export cannot be written as asked. Names the episode, the field and the problem."""

    def __init__(self, episode: str, field: str, problem: str) -> None:
        self.episode, self.field, self.problem = episode, field, problem
        super().__init__(f"episode {episode}: {field}: {problem}" if episode else f"{field}: {problem}")


def read_object(store: EpisodeStore, cam: CameraInfo) -> bytes:
    return store.objects.read_bytes(cam.video_path)


def remux_range(video: VideoInput, first: int, count: int) -> bytes | None:
    """Frames ``first .. first+count-1`` as a new MP4 without re-encoding, or None when not GOP-aligned."""
    with av.open(video.open(), mode="r") as source:
        stream = source.streams.video[0]
        packets = [p for p in source.demux(stream) if p.size and p.pts is not None]
        order = sorted(range(len(packets)), key=lambda i: packets[i].pts)
        if first + count > len(order):
            return None
        rank = {index: position for position, index in enumerate(order)}
        chosen = [i for i in range(len(packets)) if first <= rank[i] < first + count]
        after = first + count
        aligned = (packets[order[first]].is_keyframe and (after == len(order) or packets[order[after]].is_keyframe)
                   and chosen == list(range(chosen[0], chosen[-1] + 1)))
        if not aligned:
            return None
        offset = packets[order[first]].pts
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format="mp4") as sink:
            out = sink.add_stream_from_template(stream, opaque=True)  # parameters copied, no encoder
            for index in chosen:
                packet = packets[index]
                packet.pts -= offset
                if packet.dts is not None:
                    packet.dts -= offset
                packet.stream = out
                sink.mux(packet)
    return buffer.getvalue()


def reencode_range(video: VideoInput, first: int, count: int, fps: Fraction, config: EncodeConfig) -> bytes:
    """Frames ``first .. first+count-1`` decoded and encoded again (one tick per frame, pts from 0)."""
    decoder = PyAVDecoder()
    frames = (rgb for _, rgb in decoder.frames(video, list(range(first, first + count))))
    data, written = encode_frames(frames, fps, video.probe.width, video.probe.height, config)
    if written != count:
        raise ExportError("", video.uri, f"re-encoded {written} frames, expected {count}")
    return data


def _try_remux(video: VideoInput, first: int, count: int) -> bytes | None:
    """``remux_range``, or None when the container refuses the copied stream (then the caller re-encodes)."""
    try:
        return remux_range(video, first, count)
    except (av.FFmpegError, ValueError):
        return None


def cut_episode(store: EpisodeStore, cam: CameraInfo, count: int, episode: str, config: EncodeConfig,
                allow_remux: bool = True) -> tuple[bytes, str, str]:
    """An MP4 holding exactly this episode's ``count`` frames of ``cam``: (bytes, "copy"|"remux"|"reencode",
    codec of the file written).

    A camera stored channel-swapped (``channel_order`` "bgr") is always re-encoded: other readers would
    show its bytes with red and blue exchanged.
    """
    video = store.video_input(cam)
    if cam.channel_order != "rgb":
        data, method = reencode_range(video, cam.frame_start, count, cam.fps, config), "reencode"
    elif cam.frame_start == 0 and video.probe.num_frames == count:
        data, method = read_object(store, cam), "copy"
    else:
        data = _try_remux(video, cam.frame_start, count) if allow_remux else None
        method = "remux"
        if data is None:
            data, method = reencode_range(video, cam.frame_start, count, cam.fps, config), "reencode"
    probe = probe_video(f"{episode}/{cam.name}", lambda: io.BytesIO(data))
    if probe.num_frames != count:
        raise ExportError(episode, f"cameras.{cam.name}", f"{method} gave {probe.num_frames} frames, expected {count}")
    return data, method, probe.codec
