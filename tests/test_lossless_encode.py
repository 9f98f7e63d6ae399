"""The lossless encode option (raw and PNG sources stored pixel-exact): every frame decodes to its array."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.video.encode import LOSSLESS, EncodeConfig, encode_frames
from pipeline.video.probe import probe_video


@pytest.mark.parametrize("height,width", [(48, 64), (45, 63)])
def test_lossless_frames_decode_to_the_source_arrays_exactly(height, width):
    rng = np.random.default_rng(height)
    frames = rng.integers(0, 256, (12, height, width, 3), dtype=np.uint8)  # noise: nothing to hide behind
    data, count = encode_frames(iter(frames), Fraction(30), width, height, LOSSLESS)
    assert count == 12
    with av.open(io.BytesIO(data)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 12 and all(np.array_equal(a, b) for a, b in zip(frames, decoded, strict=True))
    probe = probe_video("lossless.mp4", lambda: io.BytesIO(data))
    assert (probe.codec, probe.num_frames, probe.width, probe.height) == ("h264", 12, width, height)


def test_default_encode_is_lossy_and_odd_sizes_still_fall_back_to_444():
    frames = np.random.default_rng(0).integers(0, 256, (4, 45, 63, 3), dtype=np.uint8)
    data, _ = encode_frames(iter(frames), Fraction(30), 63, 45, EncodeConfig())
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv444p"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert not np.array_equal(decoded[0], frames[0])
