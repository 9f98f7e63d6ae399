"""Decoder backends on CPU: colour conversion, resize and the device frame pipeline against the CPU
reference path, the backend registry, and torchcodec's CPU decoder against PyAV (when it loads)."""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pytest
import torch

from pipeline.shards import ViewConfig
from pipeline.shards.frames import CpuFramePipeline, DeviceFramePipeline, as_pipeline, pipeline_for
from pipeline.video import PyAVDecoder, VideoError, available_decoders
from pipeline.video.backends import (
    BackendUnavailable,
    available_backends,
    backend_names,
    backend_spec,
    build_backend,
    module_missing,
    unavailable_reason,
)
from pipeline.video.colour import ColourSpec, nv12_to_rgb, planar_to_rgb, yuv420p_to_rgb
from pipeline.video.resize import resize_frame
from pipeline.video.resize_torch import resize_batch
from tests.helpers import psnr
from tests.videos import (
    BT601,
    BT709,
    FULL,
    LIMITED,
    TensorDecoder,
    frame_image,
    make_video,
    pyav_frames,
    video_input,
)

TORCHCODEC_MISSING = module_missing("torchcodec.decoders")
needs_torchcodec = pytest.mark.skipif(TORCHCODEC_MISSING is not None,
                                      reason=f"torchcodec CPU backend not loadable here: {TORCHCODEC_MISSING}")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {
        "h264-untagged": make_video(root / "h264.mp4", "libx264"),
        "h264-bt709": make_video(root / "h264-709.mp4", "libx264", colorspace=BT709, color_range=LIMITED),
        "h264-bt601": make_video(root / "h264-601.mp4", "libx264", colorspace=BT601, color_range=LIMITED),
        "h264-full": make_video(root / "h264-full.mp4", "libx264", colorspace=BT709, color_range=FULL),
        "hevc-bt709": make_video(root / "hevc-709.mp4", "libx265", colorspace=BT709, color_range=LIMITED),
        "hevc-10bit": make_video(root / "hevc-10.mp4", "libx265", pix_fmt="yuv420p10le"),
        "h264-444": make_video(root / "h264-444.mp4", "libx264", pix_fmt="yuv444p"),
        "av1": make_video(root / "av1.mp4", "libsvtav1", frames=30, gop=10),
        "h264-long": make_video(root / "long.mp4", "libx264", frames=90, gop=15, height=144, width=176),
    }


# ------------------------------------------------------------------ colour: one rule for every backend


@pytest.mark.parametrize("name", ["h264-untagged", "h264-bt709", "h264-bt601", "h264-full", "hevc-bt709"])
def test_yuv_to_rgb_matches_pyav_for_each_matrix_and_range(videos, name):
    video = video_input(videos[name])
    spec = ColourSpec.of(video.probe)
    planes = pyav_frames(videos[name], fmt=video.probe.pix_fmt)  # Y, U, V planes as decoded
    reference = pyav_frames(videos[name])
    got = yuv420p_to_rgb(torch.from_numpy(np.stack(planes)), video.probe.height, video.probe.width, spec)
    got = got.permute(0, 2, 3, 1).numpy()
    for frame, (mine, theirs) in enumerate(zip(got, reference, strict=True)):
        assert np.abs(mine.astype(int) - theirs).max() <= 4, (name, frame)
        assert psnr(mine, theirs) >= 45, (name, frame)
    # The matrix matters: BT.601 and BT.709 differ by far more than the rounding allowed above.
    wrong = ColourSpec(*((0.2126, 0.0722) if spec.kr == 0.299 else (0.299, 0.114)), spec.full_range, "wrong")
    bad = yuv420p_to_rgb(torch.from_numpy(np.stack(planes)), video.probe.height, video.probe.width, wrong)
    assert psnr(bad.permute(0, 2, 3, 1).numpy()[0], reference[0]) < 36


def test_colour_spec_follows_the_tags(videos):
    assert ColourSpec.of(video_input(videos["h264-untagged"]).probe).name == "bt601 (untagged)"
    bt709 = ColourSpec.of(video_input(videos["h264-bt709"]).probe)
    assert (bt709.kr, bt709.kb, bt709.full_range) == (0.2126, 0.0722, False)
    assert ColourSpec.of(video_input(videos["h264-full"]).probe).full_range is True


def test_nv12_p016_and_planar_layouts_convert_like_planar_420(videos):
    video = video_input(videos["h264-bt709"])
    h, w = video.probe.height, video.probe.width
    spec = ColourSpec.of(video.probe)
    planes = np.stack(pyav_frames(videos["h264-bt709"], fmt="yuv420p")).reshape(-1, h * 3 // 2 * w)
    y = planes[:, : h * w].reshape(-1, h, w)
    u = planes[:, h * w: h * w + h * w // 4].reshape(-1, h // 2, w // 2)
    v = planes[:, h * w + h * w // 4:].reshape(-1, h // 2, w // 2)
    expected = yuv420p_to_rgb(torch.from_numpy(planes), h, w, spec)
    nv12 = np.concatenate([y, np.stack([u, v], axis=-1).reshape(-1, h // 2, w)], axis=1)  # UVUV rows under Y
    assert torch.equal(nv12_to_rgb(torch.from_numpy(nv12), h, w, spec), expected)
    p016 = torch.from_numpy(nv12.astype(np.int32) << 8)  # 16-bit, MSB-aligned, as NVDEC writes 10/12-bit
    assert (nv12_to_rgb(p016, h, w, spec).int() - expected.int()).abs().max() <= 1
    full = np.concatenate([y, u.repeat(2, 1).repeat(2, 2), v.repeat(2, 1).repeat(2, 2)], axis=1)
    assert torch.equal(planar_to_rgb(torch.from_numpy(full), h, w, spec), expected)


def test_444_converts_like_pyav_and_ten_bit_as_faithfully_as_pyav(videos):
    video = video_input(videos["h264-444"])
    h, w = video.probe.height, video.probe.width
    raw = np.stack(pyav_frames(videos["h264-444"], fmt="yuv444p"))
    got = planar_to_rgb(torch.from_numpy(raw), h, w, ColourSpec.of(video.probe)).permute(0, 2, 3, 1).numpy()
    reference = pyav_frames(videos["h264-444"])
    assert min(psnr(a, b) for a, b in zip(got, reference, strict=True)) >= 45
    # 10-bit: FFmpeg's own output changes between releases, so compare fidelity to the source frames.
    video = video_input(videos["hevc-10bit"])
    raw = np.stack(pyav_frames(videos["hevc-10bit"], fmt="yuv420p10le")).astype(np.int32) << 6  # as P016
    got = yuv420p_to_rgb(torch.from_numpy(raw), h, w, ColourSpec.of(video.probe)).permute(0, 2, 3, 1).numpy()
    reference = pyav_frames(videos["hevc-10bit"])
    truth = [frame_image(i, h, w) for i in range(len(reference))]
    ours = np.mean([psnr(a, t) for a, t in zip(got, truth, strict=True)])
    theirs = np.mean([psnr(a, t) for a, t in zip(reference, truth, strict=True)])
    assert ours >= theirs - 0.5, (ours, theirs)
    assert min(psnr(a, b) for a, b in zip(got, reference, strict=True)) >= 27


# ------------------------------------------------------------------ resize on device, same rule as CPU


@pytest.mark.parametrize(("src", "dst"), [((480, 640), (224, 224)), ((1080, 1920), (224, 224)),
                                          ((720, 1280), (256, 256)), ((96, 128), (224, 224)),
                                          ((480, 640), (480, 640))])
def test_resize_batch_matches_opencv(src, dst):
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*src, 3), dtype=np.uint8), (0, 0), 1.2)
    expected = resize_frame(image, *dst)
    got = resize_batch(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(), *dst)[0].permute(1, 2, 0)
    diff = np.abs(got.numpy().astype(int) - expected)
    assert diff.max() <= 1
    assert (diff == 0).mean() >= (0.99 if dst[0] <= src[0] else 0.85)


# ------------------------------------------------------------------ frame pipelines


@pytest.mark.parametrize("codec", ["jpg", "npy", "png"])
def test_device_pipeline_on_cpu_matches_the_cpu_pipeline(videos, codec):
    video = video_input(videos["h264-long"])
    # the device resize reproduces OpenCV's INTER_AREA on RGB frames: compared with that CPU scaler
    view = ViewConfig(height=64, width=80, frame_codec=codec, scaler="opencv")
    indices = [3, 4, 40, 41, 42, 89]
    cpu = CpuFramePipeline(PyAVDecoder()).encode_video(video, indices, view)
    device = DeviceFramePipeline(TensorDecoder(PyAVDecoder()), batch_size=4)
    assert device.encoder_for(view) == "host"  # no GPU: resized on the device, encoded on the host
    got = device.encode_video(video, indices, view)
    assert list(got) == list(cpu) == indices
    for index in indices:
        a, b = _decode_member(cpu[index], codec), _decode_member(got[index], codec)
        assert a.shape == b.shape == (64, 80, 3)
        assert np.abs(a.astype(int) - b).max() <= (8 if codec == "jpg" else 1)
        assert psnr(a, b) >= 45


def test_bare_decoders_get_the_cpu_pipeline_and_tensor_decoders_the_device_one():
    assert isinstance(as_pipeline(PyAVDecoder()), CpuFramePipeline)
    assert isinstance(pipeline_for(PyAVDecoder()), CpuFramePipeline)
    assert isinstance(pipeline_for(TensorDecoder(PyAVDecoder())), CpuFramePipeline)  # CPU tensors: OpenCV path
    on_gpu = TensorDecoder(PyAVDecoder())
    on_gpu.device = "cuda:0"
    assert isinstance(pipeline_for(on_gpu), DeviceFramePipeline)
    routed = DeviceFramePipeline(TensorDecoder(PyAVDecoder()))
    assert as_pipeline(routed) is routed


def _decode_member(data: bytes, codec: str) -> np.ndarray:
    if codec == "npy":
        import io

        return np.load(io.BytesIO(data), allow_pickle=False)
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------ registry


def test_registry_knows_every_backend_and_pyav_is_always_there():
    assert {"pyav", "torchcodec-cpu", "torchcodec-cuda", "nvcodec"} <= set(backend_names())
    assert backend_names("cuda") == [n for n in backend_names() if backend_spec(n).device == "cuda"]
    assert "pyav" in available_decoders() and "nvcodec" not in backend_names("cpu")
    assert unavailable_reason("pyav") is None
    assert backend_spec("nvcodec").device == "cuda" and backend_spec("pyav").device == "cpu"
    assert isinstance(build_backend("pyav", threads=1), PyAVDecoder)
    with pytest.raises(BackendUnavailable, match="unknown decoder backend"):
        build_backend("no-such-backend")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA reports")
def test_gpu_backends_say_why_they_are_unavailable_without_cuda():
    for name in ("torchcodec-cuda", "nvcodec"):
        assert unavailable_reason(name) == "no CUDA device"
        assert name not in available_backends()
        with pytest.raises(BackendUnavailable, match="no CUDA device"):
            build_backend(name)


# ------------------------------------------------------------------ torchcodec CPU against PyAV


@needs_torchcodec
@pytest.mark.parametrize(("name", "indices"), [
    ("h264-long", [0, 1, 2, 44, 45, 46, 89]),  # start, a seek into the middle of a GOP, the last frame
    ("h264-long", [50, 51, 70]),  # first request already in the middle of the file
    ("hevc-bt709", [0, 7, 8, 23]),
    ("av1", [0, 13, 14, 29]),
    ("h264-bt709", list(range(24))),
])
def test_torchcodec_cpu_frames_equal_pyav(videos, name, indices):
    from pipeline.video.decode_torchcodec import TorchCodecDecoder

    video = video_input(videos[name])
    reference = pyav_frames(videos[name])
    got = list(TorchCodecDecoder("cpu", threads=1).frames(video, indices))
    assert [i for i, _ in got] == sorted(set(indices))
    for index, image in got:
        assert image.shape == reference[index].shape and image.dtype == np.uint8
        assert np.array_equal(image, reference[index]) or psnr(image, reference[index]) >= 45, (name, index)
        # and it is that frame, not a neighbour: neighbours differ by far more
        other = reference[index - 1] if index else reference[index + 1]
        assert psnr(image, other) < 40


@needs_torchcodec
def test_torchcodec_cpu_reads_file_objects_and_refuses_bad_indices(videos):
    from pipeline.video.decode import VideoInput
    from pipeline.video.decode_torchcodec import TorchCodecDecoder

    path = videos["h264-long"]
    video = video_input(path)
    as_file = VideoInput(video.uri, lambda: open(path, "rb"), video.probe)
    decoder = TorchCodecDecoder("cpu", threads=1)
    got = dict(decoder.frames(as_file, [60, 61]))
    reference = pyav_frames(path)
    assert np.array_equal(got[60], reference[60]) and np.array_equal(got[61], reference[61])
    with pytest.raises(VideoError, match="outside"):
        list(decoder.frames(video, [90]))


@needs_torchcodec
def test_torchcodec_cpu_in_the_device_pipeline_matches_the_cpu_pipeline(videos):
    from pipeline.video.decode_torchcodec import TorchCodecDecoder

    video = video_input(videos["h264-long"])
    view = ViewConfig(height=72, width=88)
    indices = [0, 30, 31, 60, 89]
    cpu = CpuFramePipeline(PyAVDecoder()).encode_video(video, indices, view)
    got = DeviceFramePipeline(TorchCodecDecoder("cpu", threads=1)).encode_video(video, indices, view)
    assert list(got) == indices
    for index in indices:
        assert psnr(_decode_member(cpu[index], "jpg"), _decode_member(got[index], "jpg")) >= 45


# ------------------------------------------------------------------ PyNvVideoCodec glue, with a stand-in binding


class _StandInNvc:
    """What the backend uses of PyNvVideoCodec, serving NV12 surfaces made from PyAV's decode (on CPU)."""

    class OutputColorType:
        NATIVE = "native"

    opened: ClassVar[list[str]] = []

    class SimpleDecoder:
        def __init__(self, path, gpu_id=0, use_device_memory=True, output_color_type=None):
            assert output_color_type == "native" and use_device_memory
            _StandInNvc.opened.append(path)
            self.planes = pyav_frames(path, fmt="yuv420p")

        def __len__(self):
            return len(self.planes)

        def get_batch_frames_by_index(self, indices):
            out = []
            for i in indices:
                plane = self.planes[i]
                h = plane.shape[0] * 2 // 3
                w = plane.shape[1]
                flat = plane.reshape(-1)
                u = flat[h * w: h * w + h * w // 4].reshape(h // 2, w // 2)
                v = flat[h * w + h * w // 4:].reshape(h // 2, w // 2)
                nv12 = np.concatenate([plane[:h], np.stack([u, v], -1).reshape(h // 2, w)])
                out.append(torch.from_numpy(nv12)[..., None])  # some bindings add a channel axis
            return out


def test_nvcodec_backend_glue_with_a_stand_in_binding(videos, monkeypatch):
    import sys

    from pipeline.video.decode import VideoInput
    from pipeline.video.decode_nvcodec import NvCodecDecoder

    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", _StandInNvc)
    decoder = NvCodecDecoder(device="cpu")
    for name in ("h264-bt709", "h264-bt601", "hevc-bt709"):
        video = video_input(videos[name])
        reference = pyav_frames(videos[name])
        got = dict(decoder.frames(video, [0, 9, 10, 23]))
        assert sorted(got) == [0, 9, 10, 23]
        for index, image in got.items():
            assert psnr(image, reference[index]) >= 45, (name, index)
    path = videos["h264-long"]
    video = video_input(path)
    spooled = VideoInput(video.uri, lambda: open(path, "rb"), video.probe)  # object-store input: a temp file
    got = dict(decoder.frames(spooled, [70]))
    assert psnr(got[70], pyav_frames(path)[70]) >= 45 and _StandInNvc.opened[-1] != str(path)
    with pytest.raises(VideoError, match="outside"):
        list(decoder.frames(video, [-1]))
