"""Decode every packet of a video once, cheaply, to find the frames that cannot be shown.

Probing reads headers and timestamps only, and decoding the first and last frames misses garbage
in the middle of a file: such a file used to pass ingest and then fail every shard job of its
version. Here each packet goes through the decoder once, without converting any frame to RGB
(the expensive part of decoding), and a frame counts as bad when the decoder raises, flags it
corrupt (FFmpeg conceals damaged slices and marks the frame) or never outputs it.

Results are memoized per process by (uri, size, modification stamp): episodes of a LeRobot v3.0
file share one video, which is decoded once, and each episode is judged by the frames it uses.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import av

from pipeline.video.decode import VideoInput

_MEMO: OrderedDict[tuple, DecodeCheck] = OrderedDict()
_LOCK = threading.Lock()
_MEMO_SIZE = 64


@dataclass(frozen=True)
class DecodeCheck:
    """Which frames of a video decoded cleanly. ``stopped_at``: frames from there on were never reached."""

    num_frames: int
    bad: frozenset[int]
    stopped_at: int | None = None
    problem: str = ""

    def first_bad(self, first: int, last: int) -> int | None:
        """The first unusable frame in ``first..last`` (inclusive), or None."""
        if self.stopped_at is not None and self.stopped_at <= last:
            return min([i for i in self.bad if first <= i <= last] + [max(first, self.stopped_at)])
        hits = [i for i in self.bad if first <= i <= last]
        return min(hits) if hits else None


def check_frames(video: VideoInput, stamp: tuple = ()) -> DecodeCheck:
    """Decode every packet of ``video`` once; ``stamp`` (size, mtime, ...) keys the per-process memo."""
    key = (video.uri, *stamp) if stamp else None
    if key is not None:
        with _LOCK:
            if key in _MEMO:
                _MEMO.move_to_end(key)
                return _MEMO[key]
    result = _decode_all(video)
    if key is not None:
        with _LOCK:
            _MEMO[key] = result
            while len(_MEMO) > _MEMO_SIZE:
                _MEMO.popitem(last=False)
    return result


def _decode_all(video: VideoInput) -> DecodeCheck:
    probe = video.probe
    seen: set[int] = set()
    bad: set[int] = set()
    period = 1 / (probe.fps * probe.time_base)
    try:
        with av.open(video.open(), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for packet in container.demux(stream):
                for frame in stream.codec_context.decode(packet):
                    index = _index_of(frame, probe.start_pts, period, len(seen))
                    seen.add(index)
                    if frame.is_corrupt:
                        bad.add(index)
    except (av.error.FFmpegError, ValueError) as exc:
        reached = max(seen, default=-1) + 1
        return DecodeCheck(probe.num_frames, frozenset(bad | (set(range(reached)) - seen)), reached,
                           f"decoding stopped at frame {reached}: {exc}")
    missing = set(range(probe.num_frames)) - seen
    return DecodeCheck(probe.num_frames, frozenset(bad | missing))


def _index_of(frame: av.VideoFrame, start_pts: int, period, fallback: int) -> int:
    """The frame's index on the constant-rate grid (checked by the probe), else its output position."""
    if frame.pts is None:
        return fallback
    return round((frame.pts - start_pts) / period)
