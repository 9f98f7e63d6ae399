"""Routing and decode scheduling on CPU: which backend each codec/resolution/device combination gets,
how the decode actor pool is sized for a given cluster, and that a GPU backend which cannot be built
or fails on a file sends that file to the CPU, with the fallback reported (in the pipeline and in the
shard job). GPU backends are faked (tests/fake_backends.py)."""

from __future__ import annotations

import pytest

import tests.fake_backends as fakes
from pipeline.shards import ViewConfig
from pipeline.shards.frames import CpuFramePipeline, RoutedFrames
from pipeline.video import PyAVDecoder, VideoError
from pipeline.video.backends import BackendUnavailable, cuda_device_count
from pipeline.video.pool import plan_decode_pool
from pipeline.video.router import (
    MIN_GPU_PIXELS,
    NVDEC_RULES,
    Devices,
    RouterConfig,
    chroma_of,
    may_use_gpu,
    route_stream,
)
from tests.videos import make_video, video_input

H100 = (9, 0)
BOTH = ("nvcodec", "torchcodec-cuda")
GPU = Devices(1, H100, BOTH)


# ------------------------------------------------------------------ the routing table


@pytest.mark.parametrize(("codec", "pix_fmt", "depth", "size", "devices", "expected", "why"), [
    ("h264", "yuv420p", 8, (1920, 1080), GPU, "nvcodec", "NVDEC: H.264"),
    ("h264", "yuv420p", 8, (1920, 1080), Devices(1, H100, ("torchcodec-cuda",)), "torchcodec-cuda", "NVDEC"),
    ("h264", "yuv420p", 8, (640, 480), GPU, "nvcodec", "NVDEC"),  # 480p: at the threshold
    ("h264", "yuv420p", 8, (640, 479), GPU, "pyav", "below the GPU threshold"),
    ("h264", "yuvj420p", 8, (320, 240), GPU, "pyav", "below the GPU threshold"),
    ("h264", "yuv420p10le", 10, (1920, 1080), GPU, "pyav", "10-bit 420 is beyond NVDEC"),
    ("h264", "yuv444p", 8, (1920, 1080), GPU, "pyav", "444 chroma is not decoded on NVDEC"),
    ("h264", "yuv422p", 8, (1920, 1080), GPU, "pyav", "422 chroma"),
    ("h264", "yuv420p", 8, (4096, 2160), GPU, "nvcodec", "NVDEC"),
    ("h264", "yuv420p", 8, (5120, 2880), GPU, "pyav", "exceeds NVDEC's 4096x4096"),
    ("hevc", "yuv420p", 8, (1280, 720), GPU, "nvcodec", "HEVC"),
    ("hevc", "yuv420p10le", 10, (1920, 1080), GPU, "nvcodec", "HEVC"),
    ("hevc", "yuv420p10le", 10, (1920, 1080), Devices(1, H100, ("torchcodec-cuda",)), "pyav",
     "no installed GPU backend takes hevc 10-bit"),  # torchcodec-cuda is 8-bit only here
    ("hevc", "yuv420p12le", 12, (1920, 1080), GPU, "nvcodec", "Main12"),
    ("hevc", "yuv444p", 8, (1920, 1080), Devices(1, (7, 5), BOTH), "nvcodec", "4:4:4"),
    ("hevc", "yuv444p", 8, (1920, 1080), Devices(1, (6, 1), BOTH), "pyav", "needs compute capability 7.5+"),
    ("hevc", "yuv444p", 8, (1920, 1080), Devices(1, H100, ("torchcodec-cuda",)), "pyav", "no installed GPU"),
    ("hevc", "yuv422p10le", 10, (1920, 1080), GPU, "pyav", "422 chroma"),
    ("hevc", "yuv420p", 8, (8192, 4320), GPU, "nvcodec", "HEVC"),
    ("av1", "yuv420p", 8, (1920, 1080), Devices(1, (8, 0), BOTH), "nvcodec", "AV1"),  # A100
    ("av1", "yuv420p", 8, (1920, 1080), Devices(1, (7, 5), BOTH), "pyav", "needs compute capability 8.0+"),  # T4
    ("av1", "yuv420p10le", 10, (1920, 1080), Devices(1, (8, 6), BOTH), "nvcodec", "AV1"),
    ("av1", "yuv420p12le", 12, (1920, 1080), GPU, "pyav", "12-bit 420 is beyond NVDEC"),
    ("vp9", "yuv420p", 8, (1280, 720), GPU, "nvcodec", "VP9"),
    ("mpeg4", "yuv420p", 8, (1920, 1080), GPU, "pyav", "mpeg4 is not decoded on NVDEC here"),
    ("prores", "yuv422p10le", 10, (1920, 1080), GPU, "pyav", "prores is not decoded on NVDEC here"),
    ("h264", "yuv420p", 8, (1920, 1080), Devices(), "pyav", "no CUDA device"),
    ("h264", "yuv420p", 8, (1920, 1080), Devices(2, H100, ()), "pyav", "actionreel[gpu]"),
])
def test_each_stream_gets_the_backend_the_rules_say(codec, pix_fmt, depth, size, devices, expected, why):
    chosen = route_stream(codec, pix_fmt, depth, *size, devices)
    assert chosen.backend == expected
    assert why in chosen.reason
    assert chosen.device == ("cuda" if expected in BOTH else "cpu")


def test_gpu_order_and_threshold_are_configurable():
    config = RouterConfig(gpu_order=("torchcodec-cuda", "nvcodec"), min_gpu_pixels=1280 * 720)
    assert route_stream("h264", "yuv420p", 8, 1920, 1080, GPU, config).backend == "torchcodec-cuda"
    assert route_stream("h264", "yuv420p", 8, 1280, 720, GPU, config).backend == "torchcodec-cuda"
    assert route_stream("h264", "yuv420p", 8, 640, 480, GPU, config).backend == "pyav"
    assert route_stream("h264", "yuv420p", 8, 640, 480, GPU, RouterConfig(cpu_backend="torchcodec-cpu")).backend \
        == "nvcodec"
    assert route_stream("h264", "yuv420p", 8, 320, 240, GPU, RouterConfig(cpu_backend="torchcodec-cpu")).backend \
        == "torchcodec-cpu"


def test_override_names_the_backend_for_every_video():
    for devices in (GPU, Devices()):
        chosen = route_stream("prores", "yuv444p", 12, 64, 64, devices, RouterConfig(override="nvcodec"))
        assert (chosen.backend, chosen.reason) == ("nvcodec", "config override")
    assert route_stream("h264", "yuv420p", 8, 1920, 1080, GPU, RouterConfig(override="pyav")).backend == "pyav"
    with pytest.raises(BackendUnavailable, match="unknown decoder backend 'nvdec'"):
        route_stream("h264", "yuv420p", 8, 1920, 1080, GPU, RouterConfig(override="nvdec"))


def test_rules_are_data_with_a_reason_each():
    assert {(r.codec, r.chroma) for r in NVDEC_RULES} == {("h264", "420"), ("hevc", "420"), ("hevc", "444"),
                                                          ("vp9", "420"), ("av1", "420")}
    assert all(r.why and r.max_width >= 4096 for r in NVDEC_RULES)
    assert MIN_GPU_PIXELS == 640 * 480
    assert [chroma_of(f) for f in ("yuv420p", "yuvj420p", "nv12", "yuv420p10le", "yuv422p10le", "yuv444p",
                                   "gbrp", "gray")] == ["420", "420", "420", "420", "422", "444", "444", "400"]


def test_planning_asks_for_gpus_only_when_some_video_could_use_one():
    assert may_use_gpu("h264", "yuv420p", 640, 480)
    assert may_use_gpu("av1", "yuv420p10le", 1920, 1080)
    assert not may_use_gpu("h264", "yuv420p", 320, 240)
    assert not may_use_gpu("h264", "yuv422p", 1920, 1080)
    assert not may_use_gpu("mpeg4", "yuv420p", 1920, 1080)
    assert not may_use_gpu("h264", "yuv420p", 1920, 1080, RouterConfig(override="pyav"))
    assert may_use_gpu("mpeg4", "yuv420p", 64, 64, RouterConfig(override="torchcodec-cuda"))


@pytest.mark.skipif(cuda_device_count() > 0, reason="checks what a machine without CUDA detects")
def test_a_machine_without_cuda_detects_no_gpu_and_routes_everything_to_pyav():
    devices = Devices.detect()
    assert devices == Devices(0, (0, 0), ())
    assert Devices.from_json(GPU.to_json()) == GPU
    assert route_stream("h264", "yuv420p", 8, 3840, 2160, devices).backend == "pyav"


# ------------------------------------------------------------------ the decode actor pool


@pytest.mark.parametrize(("resources", "tasks", "kwargs", "expected"), [
    ({"CPU": 2.0}, 5, {}, (2, 1.0, 0.0, 2, 1)),
    ({"CPU": 2.0}, 1, {}, (1, 1.0, 0.0, 2, 2)),
    ({"CPU": 16.0}, 100, {"concurrency": 4}, (4, 1.0, 0.0, 2, 4)),
    ({"CPU": 16.0, "GPU": 2.0}, 100, {}, (8, 2.0, 0.25, 2, 2)),  # 4 actors share each GPU
    ({"CPU": 16.0, "GPU": 2.0}, 2, {}, (2, 8.0, 1.0, 2, 8)),  # few shards: a whole GPU each
    ({"CPU": 16.0, "GPU": 1.0}, 3, {}, (3, 5.0, 0.3333, 2, 5)),
    ({"CPU": 4.0, "GPU": 2.0}, 100, {}, (4, 1.0, 0.5, 2, 1)),  # CPUs bound the actor count
    ({"CPU": 32.0, "GPU": 1.0}, 100, {"actors_per_gpu": 8, "max_in_flight": 3}, (8, 4.0, 0.125, 3, 4)),
    ({"CPU": 16.0, "GPU": 2.0}, 100, {"gpu_work": False}, (16, 1.0, 0.0, 2, 1)),  # nothing for NVDEC
    ({"CPU": 16.0, "GPU": 2.0}, 100, {"concurrency": 16}, (16, 1.0, 0.125, 2, 1)),
])
def test_decode_pool_for_fake_clusters(resources, tasks, kwargs, expected):
    pool = plan_decode_pool(resources, tasks, **kwargs)
    assert (pool.size, pool.num_cpus, pool.num_gpus, pool.max_tasks_in_flight, pool.threads) == expected
    assert pool.uses_gpu == (expected[2] > 0)
    assert pool.size * pool.num_gpus <= max(1.0, resources.get("GPU", 0)) + 1e-9 or "concurrency" in kwargs
    assert pool.size * pool.num_cpus <= resources["CPU"]


def test_decode_pool_rejects_nonsense():
    with pytest.raises(ValueError):
        plan_decode_pool({"CPU": 4}, 3, actors_per_gpu=0)
    with pytest.raises(ValueError):
        plan_decode_pool({"CPU": 4}, 3, max_in_flight=0)


# ------------------------------------------------------------------ fallback inside one actor


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "a": make_video(root / "a.mp4", frames=12, height=480, width=640),
        "b": make_video(root / "b.mp4", "libx265", frames=12, height=480, width=640),
        "small": make_video(root / "small.mp4", frames=12, height=240, width=320),
    }


# the scaler the GPU resize reproduces: a fallback file then gets the bytes the GPU would have written
VIEW = ViewConfig(height=60, width=80, scaler="opencv")
FAKE_GPU = Devices(1, H100, (fakes.FLAKY,))


def _cpu(video, indices):
    return CpuFramePipeline(PyAVDecoder()).encode_video(video, indices, VIEW)


def test_gpu_routed_files_use_the_gpu_backend_and_small_ones_the_cpu(clips):
    frames = RoutedFrames(RouterConfig(gpu_order=(fakes.FLAKY,)), FAKE_GPU, threads=1)
    for name in ("a", "small"):
        video = video_input(clips[name])
        assert frames.encode_video(video, [0, 5, 11], VIEW, episode_id="ep", camera=name) == _cpu(video, [0, 5, 11])
    records, fallbacks = frames.drain()
    assert [(r["camera"], r["backend"], r["device"]) for r in records] == [("a", fakes.FLAKY, "cuda"),
                                                                          ("small", "pyav", "cpu")]
    assert "below the GPU threshold" in records[1]["reason"] and fallbacks == []
    assert frames.drain() == ([], [])


def test_a_file_the_gpu_backend_fails_on_is_redone_on_cpu_and_reported(clips):
    marker = clips["b"].with_name(clips["b"].name + fakes.FAIL_MARK)
    marker.touch()
    try:
        frames = RoutedFrames(RouterConfig(gpu_order=(fakes.FLAKY,)), FAKE_GPU, threads=1)
        results = {name: frames.encode_video(video_input(clips[name]), [1, 2, 10], VIEW, episode_id="ep7",
                                             camera=name) for name in ("a", "b")}
    finally:
        marker.unlink()
    for name in ("a", "b"):
        assert results[name] == _cpu(video_input(clips[name]), [1, 2, 10])  # same bytes either way
    records, fallbacks = frames.drain()
    assert [(r["camera"], r["backend"], r.get("fallback_from")) for r in records] == [
        ("a", fakes.FLAKY, None), ("b", "pyav", fakes.FLAKY)]
    assert len(fallbacks) == 1
    assert fallbacks[0]["file"] == str(clips["b"]) and fallbacks[0]["episode_id"] == "ep7"
    assert fallbacks[0]["backend"] == fakes.FLAKY and fallbacks[0]["retried_on"] == "pyav"
    assert "CUDA_ERROR_INVALID_SOURCE" in fallbacks[0]["reason"]


def test_a_gpu_backend_that_fails_to_import_sends_every_file_to_cpu_once_built(clips):
    fakes.BUILD_ATTEMPTS.clear()
    frames = RoutedFrames(RouterConfig(gpu_order=(fakes.MISSING,)), Devices(1, H100, (fakes.MISSING,)), threads=1)
    for name in ("a", "b", "a"):
        video = video_input(clips[name])
        assert frames.encode_video(video, [0, 11], VIEW, camera=name) == _cpu(video, [0, 11])
    records, fallbacks = frames.drain()
    assert [r["backend"] for r in records] == ["pyav"] * 3
    assert [f["file"] for f in fallbacks] == [str(clips[n]) for n in ("a", "b", "a")]
    assert all("cannot build fake-nvdec-missing: ImportError: libnvcuvid.so.1" in f["reason"] for f in fallbacks)
    assert fakes.BUILD_ATTEMPTS == [fakes.MISSING]  # a failed import is remembered, not retried per file


@pytest.mark.skipif(cuda_device_count() > 0, reason="needs a machine without CUDA")
def test_forcing_a_real_gpu_backend_without_cuda_falls_back_and_says_why(clips):
    frames = RoutedFrames(RouterConfig(override="nvcodec"), threads=1)
    video = video_input(clips["a"])
    assert frames.encode_video(video, [3], VIEW) == _cpu(video, [3])
    _, fallbacks = frames.drain()
    assert len(fallbacks) == 1 and "no CUDA device" in fallbacks[0]["reason"]


def test_a_cpu_failure_is_not_swallowed(clips):
    frames = RoutedFrames(RouterConfig(gpu_order=(fakes.FLAKY,)), FAKE_GPU, threads=1)
    with pytest.raises(VideoError, match="outside"):  # CPU-routed: the error is the job's to handle
        frames.encode_video(video_input(clips["small"]), [99], VIEW)
    marker = clips["a"].with_name(clips["a"].name + fakes.FAIL_MARK)
    marker.touch()
    try:  # GPU-routed and failing, then failing on CPU too: the CPU's error comes out
        with pytest.raises(VideoError, match="outside"):
            frames.encode_video(video_input(clips["a"]), [99], VIEW)
    finally:
        marker.unlink()


def test_no_visible_cuda_device_is_known_without_importing_torch():
    """A CPU decode actor (Ray hides the GPUs from it) answers 0 devices without torch's 1.3 s import."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from pipeline.video.backends import cuda_device_count; "
            "print(cuda_device_count(), 'torch' in sys.modules)")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"], out.stdout + out.stderr
