"""The CPU frame path's fused scaler: the decoded picture converted and resized in one swscale pass.

Pinned here: its frames are exactly libswscale's AREA|FULL_CHR_H_INT|ACCURATE_RND|BITEXACT output
(read back from the .npy members, against a plain PyAV call), close to the OpenCV path the GPU resize
matches, unchanged at the source's own size, and ``scaler="opencv"`` still gives the old path's bytes."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from pipeline.shards.frames import CpuFramePipeline
from pipeline.shards.view import ViewConfig
from pipeline.video import PyAVDecoder
from tests.helpers import SWS_VIEW_SHRINK, psnr, resize_like_view
from tests.videos import frame_image, make_video, pyav_frames, video_input

INDICES = [0, 5, 6, 17, 23]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("scaler") / "h264.mp4", frames=24, height=240, width=320, gop=6)


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _swscale(path, height: int, width: int) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.reformat(width, height, format="rgb24", interpolation=SWS_VIEW_SHRINK).to_ndarray()
                for f in container.decode(video=0)]


def test_shrunk_frames_are_swscales_single_pass_exactly(clip):
    view = ViewConfig(height=72, width=88, frame_codec="npy")
    got = CpuFramePipeline(PyAVDecoder(threads=1)).encode_video(video_input(clip), INDICES, view)
    reference = _swscale(clip, 72, 88)
    assert list(got) == INDICES
    for index in INDICES:
        assert np.array_equal(_npy(got[index]), reference[index]), index


def test_fused_scaler_keeps_the_source_within_3_5_db_of_the_opencv_path(clip):
    """Against the frames that were encoded (resized with OpenCV): the one-pass scaler loses at most
    3.5 dB to decode -> RGB -> INTER_AREA on these saturated edges (measured: 39.0 vs 42.0 dB), and stays
    >= 36 dB of that path."""
    view = ViewConfig(height=72, width=88, frame_codec="npy")
    got = CpuFramePipeline(PyAVDecoder(threads=1)).encode_video(video_input(clip), INDICES, view)
    full = pyav_frames(clip)
    truth = {i: resize_like_view(frame_image(i, 240, 320), 72, 88) for i in INDICES}
    ours = np.mean([psnr(_npy(got[i]), truth[i]) for i in INDICES])
    opencv = np.mean([psnr(resize_like_view(full[i], 72, 88), truth[i]) for i in INDICES])
    assert ours >= opencv - 3.5, (ours, opencv)
    assert min(psnr(_npy(got[i]), resize_like_view(full[i], 72, 88)) for i in INDICES) >= 36


def test_native_size_frames_are_the_plain_decode_bit_for_bit(clip):
    view = ViewConfig(height=240, width=320, frame_codec="npy")
    got = CpuFramePipeline(PyAVDecoder(threads=1)).encode_video(video_input(clip), INDICES, view)
    full = pyav_frames(clip)
    for index in INDICES:
        assert np.array_equal(_npy(got[index]), full[index]), index


def test_jpeg_members_encode_the_swscale_frame_without_a_channel_swap(clip):
    view = ViewConfig(height=72, width=88)
    got = CpuFramePipeline(PyAVDecoder(threads=1)).encode_video(video_input(clip), INDICES, view)
    reference = _swscale(clip, 72, 88)
    for index in INDICES:
        decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(got[index], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert psnr(decoded, reference[index]) >= 40, index  # q95 4:4:4 of the same pixels
        assert psnr(decoded[..., ::-1], reference[index]) < 30, index  # a swapped pair of channels shows


def test_opencv_scaler_keeps_the_previous_bytes(clip):
    view = ViewConfig(height=72, width=88, frame_codec="npy", scaler="opencv")
    got = CpuFramePipeline(PyAVDecoder(threads=1)).encode_video(video_input(clip), INDICES, view)
    full = pyav_frames(clip)
    for index in INDICES:
        assert np.array_equal(_npy(got[index]), resize_like_view(full[index], 72, 88)), index


def test_scaler_is_part_of_the_view_identity():
    assert ViewConfig().view_id("v") != ViewConfig(scaler="opencv").view_id("v")
    assert ViewConfig().view_id("v") != ViewConfig(scaler="swscale").view_id("v")
    assert ViewConfig().content_identity()["scaler"] == "swscale-ycbcr"
    # where JPEG planes are not used, the default writes swscale's bytes and keeps those views' ids
    for other in ({"frame_codec": "npy"}, {"frame_codec": "png"}, {"resize": "pad"}, {"resize": "crop"}):
        assert ViewConfig(**other).view_id("v") == ViewConfig(scaler="swscale", **other).view_id("v"), other
    with pytest.raises(ValueError, match="scaler"):
        ViewConfig(scaler="pillow")


def _jpeg_planes(path, height: int, width: int, planar: str) -> list[tuple[np.ndarray, ...]]:
    """swscale's full-range YCbCr planes of every frame, by a plain PyAV call with the view's flags."""
    import av
    from av.video.reformatter import ColorRange

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            scaled = frame.reformat(width, height, format=planar, interpolation=SWS_VIEW_SHRINK,
                                    dst_color_range=ColorRange.JPEG)
            out.append(tuple(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
                             for p in scaled.planes))
    return out


@pytest.mark.parametrize(("subsampling", "planar"), [("444", "yuv444p"), ("420", "yuv420p")])
def test_default_jpeg_members_are_swscales_ycbcr_planes_encoded_as_they_are(clip, subsampling, planar):
    """No RGB frame in between: the member is libjpeg-turbo's JPEG of swscale's YCbCr planes, byte for byte."""
    import simplejpeg

    view = ViewConfig(height=72, width=88, jpeg_subsampling=subsampling)
    got = CpuFramePipeline(PyAVDecoder(threads=1)).encode_video(video_input(clip), INDICES, view)
    planes = _jpeg_planes(clip, 72, 88, planar)
    for index in INDICES:
        assert got[index] == simplejpeg.encode_jpeg_yuv_planes(*planes[index], quality=95), index
        height, width, _, sampling = simplejpeg.decode_jpeg_header(got[index])
        assert (height, width, sampling) == (72, 88, subsampling)


def test_ycbcr_members_decode_within_rounding_of_the_rgb_path(clip):
    """Against the RGB path (swscale to RGB, then the encoder's own RGB -> YCbCr): the same picture."""
    import simplejpeg

    decoder = CpuFramePipeline(PyAVDecoder(threads=1))
    planes = decoder.encode_video(video_input(clip), INDICES, ViewConfig(height=72, width=88))
    rgb = decoder.encode_video(video_input(clip), INDICES, ViewConfig(height=72, width=88, scaler="swscale"))
    reference = _swscale(clip, 72, 88)
    for index in INDICES:
        ours = simplejpeg.decode_jpeg(planes[index], colorspace="RGB")
        assert planes[index] != rgb[index]
        assert psnr(ours, simplejpeg.decode_jpeg(rgb[index], colorspace="RGB")) >= 42, index  # measured 44.0
        assert psnr(ours, reference[index]) >= 40, index


def test_bt709_pictures_take_the_rgb_path_with_their_own_matrix(tmp_path):
    """swscale applies no colour matrix between YUV layouts, and a JPEG's YCbCr is BT.601: a BT.709
    source is converted to RGB with its own matrix first (as a plain decode does), never mislabelled."""
    import simplejpeg

    path = make_video(tmp_path / "bt709.mp4", frames=6, height=240, width=320, colorspace=1)
    view = ViewConfig(height=72, width=88)
    got = CpuFramePipeline(PyAVDecoder(threads=1)).encode_video(video_input(path), [0, 3], view)
    bt709 = _swscale(path, 72, 88)
    as_bt601 = [simplejpeg.decode_jpeg(simplejpeg.encode_jpeg_yuv_planes(*p, quality=95), colorspace="RGB")
                for p in _jpeg_planes(path, 72, 88, "yuv444p")]
    for index in (0, 3):
        ours = simplejpeg.decode_jpeg(got[index], colorspace="RGB")
        assert psnr(ours, bt709[index]) >= 40, index
        assert psnr(as_bt601[index], bt709[index]) < psnr(ours, bt709[index]) - 6, index  # the matrix shows


def test_native_size_jpeg_members_keep_the_plain_decode(clip):
    """At the source's own size the default writes the RGB path's bytes: the JPEG of the plain decode."""
    decoder = CpuFramePipeline(PyAVDecoder(threads=1))
    default = decoder.encode_video(video_input(clip), INDICES, ViewConfig(height=240, width=320))
    rgb = decoder.encode_video(video_input(clip), INDICES, ViewConfig(height=240, width=320, scaler="swscale"))
    assert default == rgb
