"""The loader's segment decoder: pictures equal a whole-segment decode, decoded only as far as asked."""

from __future__ import annotations

from fractions import Fraction

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
    assert len(decoder._pictures) == 6 and list(decoder._rgb) == [5]  # one RGB conversion, six decodes
    decoder.frame(2)
    assert len(decoder._pictures) == 6 and sorted(decoder._rgb) == [2, 5]


def test_a_segment_shorter_than_its_sample_lists_names_where(segment):
    decoder = SegmentDecoder(segment, FRAMES + 2, "sample k camera top")
    with pytest.raises(ValueError, match=r"sample k camera top: video segment decodes to 24 frames, its sample "
                                         r"lists 26"):
        decoder.frame(FRAMES + 1)
    with pytest.raises(ValueError, match="picture 30 outside the segment's 26"):
        decoder.frame(30)


def test_garbage_is_a_value_error_naming_where():
    with pytest.raises(ValueError, match="sample k camera top: corrupt video segment"):
        SegmentDecoder(b"\x00" * 64, 4, "sample k camera top").frame(0)
