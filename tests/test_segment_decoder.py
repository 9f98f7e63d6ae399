"""The loader's segment decoder: pictures equal a whole-segment decode, decoded only as far as asked,
from the last keyframe at or before the picture."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.video.encode import EncodeConfig, encode_frames
from pipeline.video.segments import SegmentDecoder, decode_segment
from tests.videos import frame_image

FRAMES = 24


@pytest.fixture(scope="module")
def segment() -> bytes:
    frames = (frame_image(i, 48, 64) for i in range(FRAMES))
    data, count = encode_frames(frames, Fraction(30), 64, 48, EncodeConfig(gop_seconds=10, preset="medium"))
    assert count == FRAMES
    return data


def test_any_order_of_requests_gives_the_whole_decodes_pictures(segment):
    whole = decode_segment(segment, FRAMES, "s")
    decoder = SegmentDecoder(segment, FRAMES, "s")
    for position in (7, 3, 23, 0, 7, 12):
        assert np.array_equal(decoder.frame(position), whole[position]), position
    decoder.close()


def test_a_request_decodes_through_its_picture_and_no_further(segment):
    decoder = SegmentDecoder(segment, FRAMES, "s")
    decoder.frame(5)
    assert decoder.decoded == 6 and list(decoder._rgb) == [5]  # one RGB conversion, six decodes
    decoder.frame(2)
    assert decoder.decoded == 6 and sorted(decoder._rgb) == [2, 5]
    decoder.frame(9)
    assert decoder.decoded == 10  # on from where it stopped: no keyframe in between


def _gop_segment(gop: int) -> bytes:
    frames = (frame_image(i, 48, 64) for i in range(FRAMES))
    data, _ = encode_frames(frames, Fraction(30), 64, 48, EncodeConfig(gop_seconds=gop / 30, preset="medium"))
    return data


def test_a_request_starts_at_the_last_keyframe_at_or_before_its_picture():
    data = _gop_segment(6)  # keyframes at 0, 6, 12, 18
    whole = decode_segment(data, FRAMES, "s")
    decoder = SegmentDecoder(data, FRAMES, "s")
    assert np.array_equal(decoder.frame(20), whole[20]) and decoder.decoded == 3  # 18, 19, 20
    assert np.array_equal(decoder.frame(3), whole[3]) and decoder.decoded == 7  # back: 0..3
    assert np.array_equal(decoder.frame(20), whole[20]) and decoder.decoded == 7  # held: converted, not decoded
    assert np.array_equal(decoder.frame(21), whole[21]) and decoder.decoded == 11  # 18..21: references again
    assert np.array_equal(decoder.frame(14), whole[14]) and decoder.decoded == 14  # 12, 13, 14
    for position in range(FRAMES):
        assert np.array_equal(decoder.frame(position), whole[position]), position


def test_reordered_b_frames_decode_forward_from_the_start_and_stay_right():
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"bf": "2", "g": "8", "crf": "18"}
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(frame_image(i, 48, 64), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = buffer.getvalue()
    whole = decode_segment(data, FRAMES, "s")
    decoder = SegmentDecoder(data, FRAMES, "s")
    assert not decoder._seekable
    for position in (17, 2, 23, 9):
        assert np.array_equal(decoder.frame(position), whole[position]), position


def test_a_segment_shorter_than_its_sample_lists_names_where(segment):
    with pytest.raises(ValueError, match=r"sample k camera top: video segment holds 24 pictures, its sample "
                                         r"lists 26"):
        SegmentDecoder(segment, FRAMES + 2, "sample k camera top")
    with pytest.raises(ValueError, match="picture 30 outside the segment's 24"):
        SegmentDecoder(segment, FRAMES, "s").frame(30)


def test_garbage_is_a_value_error_naming_where():
    with pytest.raises(ValueError, match="sample k camera top: corrupt video segment"):
        SegmentDecoder(b"\x00" * 64, 4, "sample k camera top").frame(0)
