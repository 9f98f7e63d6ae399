"""RGB -> YUV 4:2:0 before the encoder: BT.601 limited range, chroma the exact 2x2 average (swscale)."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from pipeline.video.encode import EncodeConfig, _converter, encode_frames

HEIGHT, WIDTH = 48, 64


def _image(seed: int = 1) -> np.ndarray:
    """Smooth colour texture: chroma varies inside every 2x2 block, so subsampling choices show."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), (0, 0), 1.5)


def _bt601(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y at full size, U and V averaged over each 2x2 block: the reference in exact arithmetic."""
    r, g, b = (image[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    def block_mean(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(HEIGHT // 2, 2, WIDTH // 2, 2).mean(axis=(1, 3))
    return y, block_mean(u), block_mean(v)


def _planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    packed = frame.to_ndarray()  # yuv420p: Y rows, then U, then V, each chroma plane row-packed
    quarter = HEIGHT // 4
    return (packed[:HEIGHT], packed[HEIGHT:HEIGHT + quarter].reshape(HEIGHT // 2, WIDTH // 2),
            packed[HEIGHT + quarter:].reshape(HEIGHT // 2, WIDTH // 2))


def _worst_errors(rgb_to_yuv: str) -> list[float]:
    image = _image()
    got = _planes(_converter("yuv420p", rgb_to_yuv)(image))
    return [float(np.abs(g - want).max()) for g, want in zip(got, _bt601(image), strict=True)]


def test_swscale_conversion_is_bt601_with_block_averaged_chroma_to_rounding() -> None:
    luma, u, v = _worst_errors("swscale")
    assert luma <= 0.51 and u <= 0.51 and v <= 0.51  # every sample is the reference, rounded


def test_opencv_conversion_misses_the_chroma_average_which_is_why_it_is_not_the_default() -> None:
    luma, u, v = _worst_errors("opencv")
    assert luma <= 0.53  # luma agrees; chroma is not the block average (that cost 2.4 dB on camera frames)
    assert max(u, v) > 4


def test_encoded_frames_keep_the_conversion_within_the_encoder_loss() -> None:
    frames = [_image(seed) for seed in range(6)]
    data, count = encode_frames(iter(frames), Fraction(10), WIDTH, HEIGHT, EncodeConfig(crf=0, preset="medium"))
    assert count == 6
    with av.open(io.BytesIO(data)) as container:
        decoded = [_planes(f) for f in container.decode(video=0)]
    assert len(decoded) == 6
    for image, planes in zip(frames, decoded, strict=True):  # crf 0 on 8-bit x264 is lossless YUV
        for got, want in zip(planes, _bt601(image), strict=True):
            assert np.abs(got - want).max() <= 0.51


def test_unknown_conversion_is_refused() -> None:
    with pytest.raises(ValueError, match="rgb_to_yuv 'nearest' is not one of swscale, opencv"):
        EncodeConfig(rgb_to_yuv="nearest")
