"""Motion JPEG: store a source's JPEG frames as they are, and decode them the way the connectors do.

Why: RLDS images, ROS CompressedImage topics and ALOHA's compressed rows already are an all-intra
stream of compressed frames. Decoding and re-encoding them to H.264 cost ~10x the read and a
generation of quality; muxing the source bytes into an MP4 ``mjpeg`` track (one packet per frame,
every packet a keyframe, so seeks are frame-exact) costs a header parse per frame and keeps the
frames bit-exact.

A frame passes through only when its headers say every decoder reads it the same way: baseline or
extended sequential 8-bit, three YCbCr components with 4:4:4, 4:2:2 or 4:2:0 sampling, no Adobe RGB/CMYK
transform, no EXIF rotation, the camera's width and height, and the same layout as the first frame.
Anything else (progressive, 12-bit, grey, a size change...) is *refused* with the reason and the
camera takes the decode + H.264 path, whose checks decide whether the episode is good. Stored frames
are decoded with libjpeg (OpenCV), the decoder the connectors use, so a passthrough frame decodes to
exactly the pixels the decode path would have encoded; FFmpeg decodes only what libjpeg rejects.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from pipeline.video.probe import VideoError, VideoProbe

PASSTHROUGH_PARAMS = "mjpeg passthrough (source JPEG bytes, one keyframe per frame)"
_SOF_SEQUENTIAL = {0xC0: "baseline", 0xC1: "extended sequential"}
_SOF_OTHER = {0xC2: "progressive", 0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical progressive",
              0xC7: "hierarchical lossless", 0xC9: "arithmetic", 0xCA: "arithmetic progressive",
              0xCB: "arithmetic lossless", 0xCD: "hierarchical arithmetic", 0xCE: "hierarchical arithmetic",
              0xCF: "hierarchical arithmetic lossless"}
_PIX_FMT = {((1, 1), (1, 1), (1, 1)): "yuvj444p", ((2, 1), (1, 1), (1, 1)): "yuvj422p",
            ((2, 2), (1, 1), (1, 1)): "yuvj420p"}
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # the next marker after entropy-coded data (not stuffing, not RST)
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # a video frame is never rotated by EXIF


class JpegError(ValueError):
    """Bytes that are not a complete JPEG image (no SOI, a segment past the end, no EOI...)."""


@dataclass(frozen=True)
class JpegInfo:
    width: int
    height: int
    sof: int  # the SOFn marker byte
    precision: int
    sampling: tuple[tuple[int, int], ...]  # (h, v) per component
    component_ids: tuple[int, ...]
    adobe_transform: int | None = None  # APP14 "Adobe" transform flag when present
    orientation: int = 1  # EXIF orientation (1: as stored)
    huffman: bool = True  # DHT segments present (motion-JPEG frames may rely on default tables)

    @property
    def pix_fmt(self) -> str:
        return _PIX_FMT.get(self.sampling, "")

    def refusal(self) -> str | None:
        """Why this frame cannot pass through unchanged, or None."""
        if self.sof not in _SOF_SEQUENTIAL:
            return f"{_SOF_OTHER.get(self.sof, f'SOF{self.sof - 0xC0}')} JPEG"
        if self.precision != 8:
            return f"{self.precision}-bit JPEG"
        if len(self.sampling) != 3:
            return f"{len(self.sampling)}-component JPEG (grey or CMYK)"
        if self.adobe_transform == 0 or self.component_ids == (ord("R"), ord("G"), ord("B")):
            return "RGB-coded JPEG (no YCbCr transform)"
        if not self.pix_fmt:
            return f"chroma sampling {self.sampling}"
        if not self.huffman:
            return "no Huffman tables (motion-JPEG frame relying on default tables)"
        if self.orientation != 1:
            return f"EXIF orientation {self.orientation} (decoders disagree on rotation)"
        return None


def parse_jpeg(data: bytes) -> JpegInfo:
    """The frame header of a JPEG, after walking every segment to EOI (a truncated file fails here)."""
    if data[:2] != b"\xff\xd8":
        raise JpegError("no JPEG start-of-image marker")
    pos, size = 2, len(data)
    frame: dict | None = None
    extra = {"adobe_transform": None, "orientation": 1, "huffman": False}
    scans = 0
    while True:
        while pos + 1 < size and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 2 > size or data[pos] != 0xFF:
            raise JpegError(f"no marker at byte {pos} (truncated or corrupt)")
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker < 0xC0:
            raise JpegError(f"invalid marker 0xFF{marker:02X} at byte {pos}")
        if pos + 4 > size:
            raise JpegError(f"segment header past the end at byte {pos}")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        body = data[pos + 4:pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            raise JpegError(f"segment 0xFF{marker:02X} at byte {pos} runs past the end")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = _frame_header(marker, body)
        else:
            _note_segment(marker, body, extra)
        pos += 2 + length
        if marker == 0xDA:
            if frame is None:
                raise JpegError("scan before the frame header")
            scans += 1
            found = _MARKER.search(data, pos)
            if found is None:
                raise JpegError("scan data runs to the end without an end-of-image marker (truncated)")
            pos = found.start()
    if frame is None or not scans:
        raise JpegError("no frame header or no scan")
    if frame["width"] == 0 or frame["height"] == 0:
        raise JpegError(f"image size {frame['width']}x{frame['height']}")
    return JpegInfo(**frame, **extra)


def _frame_header(marker: int, body: bytes) -> dict:
    if len(body) < 6:
        raise JpegError(f"frame header 0xFF{marker:02X} too short")
    precision, height, width, count = struct.unpack(">BHHB", body[:6])
    if len(body) < 6 + 3 * count:
        raise JpegError("frame header lists more components than it holds")
    comps = [body[6 + 3 * i: 9 + 3 * i] for i in range(count)]
    return {"width": width, "height": height, "sof": marker, "precision": precision,
            "sampling": tuple((c[1] >> 4, c[1] & 15) for c in comps), "component_ids": tuple(c[0] for c in comps)}


def _note_segment(marker: int, body: bytes, extra: dict) -> None:
    """What other segments say about decoding: Huffman tables present, Adobe transform, EXIF rotation."""
    if marker == 0xC4:
        extra["huffman"] = True
    elif marker == 0xEE and body[:5] == b"Adobe" and len(body) >= 12:
        extra["adobe_transform"] = body[11]
    elif marker == 0xE1 and body[:6] == b"Exif\x00\x00":
        extra["orientation"] = _exif_orientation(body[6:])


def _exif_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of IFD0, 1 when absent or unreadable (then decoders agree: no rotation)."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", tiff[4:8])
    if offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[offset:offset + 2])
    for i in range(min(count, 256)):
        entry = tiff[offset + 2 + 12 * i: offset + 14 + 12 * i]
        if len(entry) < 12:
            return 1
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == 0x0112 and kind == 3:
            return struct.unpack(order + "H", entry[8:10])[0]
    return 1


@dataclass
class Passthrough:
    """The outcome of muxing source JPEG frames: the MP4 bytes and frame count, or why not."""

    data: bytes | None
    count: int
    refused: str = ""


def mux_jpeg_frames(frames: Iterable[bytes], fps: Fraction, width: int, height: int) -> Passthrough:
    """Source JPEG frames as an MP4 ``mjpeg`` track with frame ``i`` at pts ``i`` (time base 1/fps).

    Stops at the first frame that cannot pass through and says why (frames are counted from 0).
    """
    try:
        return _mux(frames, fps, width, height)
    except av.error.FFmpegError as exc:
        return Passthrough(None, 0, f"muxing failed: {exc}")


def _mux(frames: Iterable[bytes], fps: Fraction, width: int, height: int) -> Passthrough:
    buffer = io.BytesIO()
    first: JpegInfo | None = None
    count = 0
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = None
        for data in frames:
            data = bytes(data)
            try:
                info = parse_jpeg(data)
            except JpegError as exc:
                return Passthrough(None, count, f"frame {count}: {exc}")
            why = info.refusal()
            if why is None and (info.width, info.height) != (width, height):
                why = f"{info.width}x{info.height}, the camera is {width}x{height}"
            if why is None and first is not None and info.sampling != first.sampling:
                why = f"chroma sampling {info.sampling} differs from frame 0's {first.sampling}"
            if why is not None:
                return Passthrough(None, count, f"frame {count}: {why}")
            if stream is None:
                first = info
                stream = container.add_stream("mjpeg", rate=fps)
                stream.width, stream.height, stream.pix_fmt = width, height, info.pix_fmt
                stream.time_base = 1 / fps
                container.start_encoding()
            packet = av.Packet(data)
            packet.stream = stream
            packet.time_base = 1 / fps
            packet.pts = packet.dts = count
            packet.duration = 1
            packet.is_keyframe = True
            container.mux(packet)
            count += 1
        if stream is None:
            return Passthrough(None, 0, "no frames")
    return Passthrough(buffer.getvalue(), count)


def decode_jpeg(data: bytes, probe: VideoProbe, uri: str, index: int, swapped: bool = False) -> np.ndarray:
    """One stored JPEG frame as HxWx3 RGB: libjpeg first, FFmpeg for what libjpeg rejects.

    ``swapped``: the JPEG holds an RGB image encoded as if BGR (camera ``channel_order`` "bgr"), so
    the standard decode's BGR is the RGB wanted.
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    if image is not None:
        image = image if swapped else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        try:
            context = av.CodecContext.create("mjpeg", "r")
            decoded = context.decode(av.Packet(data))
            image = decoded[0].to_ndarray(format="bgr24" if swapped else "rgb24") if decoded else None
        except av.error.FFmpegError as exc:
            raise VideoError(uri, f"frame {index} cannot be decoded: {exc}") from exc
    if image is None or image.shape != (probe.height, probe.width, 3):
        got = "nothing" if image is None else f"{image.shape}"
        raise VideoError(uri, f"frame {index} decodes to {got}, the stream is {probe.width}x{probe.height}")
    return image


def jpeg_frames(container, stream, video_uri: str, probe: VideoProbe, wanted: np.ndarray,
                swapped: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """The wanted frames of an ``mjpeg`` track: one seek (every frame is a keyframe), then demux only."""
    if wanted[0] > 0:
        container.seek(probe.frame_pts(int(wanted[0])), stream=stream, backward=True, any_frame=False)
    position = 0
    for packet in container.demux(stream):
        if not packet.size or packet.pts is None:
            continue
        index = round((packet.pts - probe.start_pts) * probe.time_base * probe.fps)
        if index < wanted[position]:
            continue
        if index > wanted[position]:
            raise VideoError(video_uri, f"frame {int(wanted[position])} missing (demuxer jumped to {index})")
        yield index, decode_jpeg(bytes(packet), probe, video_uri, index, swapped)
        position += 1
        if position == wanted.size:
            return
    raise VideoError(video_uri, f"video ended before frame {int(wanted[position])}")
