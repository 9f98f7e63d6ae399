"""What a connector must know about a generated video before the store sees it: frames, rate, size.

Connectors never decode (the store does); counting packets is enough for the episode's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import fsspec

from connectors.base import SourceError
from schemas import safe_name


@dataclass(frozen=True)
class VideoFacts:
    num_frames: int
    fps: Fraction
    width: int
    height: int
    codec: str


def video_facts(fs: fsspec.AbstractFileSystem, path: str, episode: str = "") -> VideoFacts:
    """Frame count (packets with data), average rate and geometry of the first video stream."""
    try:
        with fs.open(path, "rb") as handle, av.open(handle, mode="r") as container:
            if not container.streams.video:
                raise SourceError(path, "no video stream", episode, "video")
            stream = container.streams.video[0]
            count = sum(1 for packet in container.demux(stream) if packet.size and packet.pts is not None)
            rate = stream.average_rate or stream.guessed_rate
            context = stream.codec_context
            facts = VideoFacts(count, Fraction(rate) if rate else Fraction(0), context.width, context.height,
                               safe_name(context.name or ""))
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(path, f"unreadable video: {exc}", episode, "video") from exc
    if facts.num_frames < 1 or facts.fps <= 0:
        raise SourceError(path, f"no frames or no frame rate ({facts.num_frames} frames, {facts.fps} fps)",
                          episode, "video")
    return facts
