"""GPU decode and encode against the CPU reference path. Run where CUDA is present; elsewhere every
test here is skipped with the reason. Per backend, a test is skipped when that backend cannot be
built here (library not installed: ``pip install actionreel[gpu]``), again with the reason."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import cv2
import numpy as np
import pytest

from pipeline.shards import ViewConfig
from pipeline.shards.frames import CpuFramePipeline, DeviceFramePipeline
from pipeline.video import PyAVDecoder
from pipeline.video.backends import available_backends, build_backend, cuda_device_count, unavailable_reason
from pipeline.video.colour import ColourSpec
from tests.helpers import psnr
from tests.videos import BT601, BT709, LIMITED, make_video, pyav_frames, video_input

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cuda_device_count() == 0,
                                                  reason="no CUDA device: GPU decode/encode tests need an NVIDIA GPU")]
GPU_BACKENDS = ("nvcodec", "torchcodec-cuda")


def _backend(name: str):
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"{name} unavailable here: {reason}")
    return build_backend(name)


@pytest.fixture(scope="module")
def hd_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("hd")
    size = {"height": 720, "width": 1280, "frames": 48, "gop": 12}
    return {
        "h264-bt601": make_video(root / "h264-601.mp4", "libx264", colorspace=BT601, color_range=LIMITED, **size),
        "h264-bt709": make_video(root / "h264-709.mp4", "libx264", colorspace=BT709, color_range=LIMITED, **size),
        "h264-untagged": make_video(root / "h264.mp4", "libx264", **size),
        "hevc-bt709": make_video(root / "hevc-709.mp4", "libx265", colorspace=BT709, color_range=LIMITED, **size),
        "hevc-bt601": make_video(root / "hevc-601.mp4", "libx265", colorspace=BT601, color_range=LIMITED, **size),
    }


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("name", ["h264-bt601", "h264-bt709", "h264-untagged", "hevc-bt709", "hevc-bt601"])
def test_gpu_frames_match_cpu_frames(hd_videos, backend, name):
    decoder = _backend(backend)
    video = video_input(hd_videos[name])
    reference = pyav_frames(hd_videos[name])
    indices = [0, 1, 17, 18, 30, 47]  # includes a seek into the middle of a GOP
    seen = []
    for chunk, batch in decoder.batches(video, indices, 4):
        assert batch.device.type == "cuda" and batch.dtype.is_floating_point is False
        for index, frame in zip(chunk, batch.permute(0, 2, 3, 1).cpu().numpy(), strict=True):
            cpu = reference[index]
            assert psnr(frame, cpu) >= 38, (backend, name, index)
            # colour conversion: a BT.601/709 mix-up shifts channel means by several levels here
            shift = np.abs(frame.reshape(-1, 3).mean(0) - cpu.reshape(-1, 3).mean(0))
            assert shift.max() <= 1.5, (backend, name, index, shift, ColourSpec.of(video.probe).name)
            seen.append(index)
    assert seen == indices


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_resize_and_jpeg_match_the_cpu_pipeline(hd_videos, backend):
    decoder = _backend(backend)
    video = video_input(hd_videos["h264-bt709"])
    view = ViewConfig(height=224, width=224)
    indices = [0, 12, 13, 40]
    pipeline = DeviceFramePipeline(decoder)
    got = pipeline.encode_video(video, indices, view)
    cpu = CpuFramePipeline(PyAVDecoder()).encode_video(video, indices, view)
    assert list(got) == indices
    for index in indices:
        a = cv2.imdecode(np.frombuffer(cpu[index], np.uint8), cv2.IMREAD_COLOR)
        b = cv2.imdecode(np.frombuffer(got[index], np.uint8), cv2.IMREAD_COLOR)
        assert a.shape == b.shape == (224, 224, 3)
        assert psnr(a, b) >= 38, (backend, index, pipeline.encoder_for(view))


def test_shard_job_on_gpu_is_equivalent_to_the_cpu_job(sample_store, sample_view, tmp_path):
    from jobs.shard import run_shard

    if not available_backends("cuda"):
        pytest.skip(f"no GPU decoder backend installed: {[unavailable_reason(n) for n in GPU_BACKENDS]}")
    store, view_id, cpu_view = sample_view  # built with decoder="pyav"
    gpu_store = tmp_path / "store"
    shutil.copytree(sample_store[0], gpu_store, ignore=shutil.ignore_patterns("views"))
    gpu_config = ViewConfig(**{**cpu_view.__dict__, "decoder": "auto"})
    report, gpu_view_id = run_shard(str(gpu_store), gpu_config)
    assert gpu_view_id == view_id  # the decoder is not part of the view's identity
    assert report.fallbacks == [], report.fallbacks
    assert {r["device"] for r in report.decode} == {"cuda"}, report.decode[:3]
    assert report.extra["decode pool"].startswith(("1 GPU", f"{cuda_device_count()} GPU"))
    cpu_manifest = json.loads((store / f"views/{view_id}/view.json").read_text())
    gpu_manifest = json.loads((gpu_store / f"views/{view_id}/view.json").read_text())
    assert [(s["name"], s["num_samples"], s["num_steps"], s["episodes"]) for s in gpu_manifest["shards"]] == \
        [(s["name"], s["num_samples"], s["num_steps"], s["episodes"]) for s in cpu_manifest["shards"]]
    worst = float("inf")
    for cpu_shard, gpu_shard in zip(cpu_manifest["shards"], gpu_manifest["shards"], strict=True):
        with tarfile.open(store / cpu_shard["tar_path"]) as a, tarfile.open(gpu_store / gpu_shard["tar_path"]) as b:
            assert a.getnames() == b.getnames()
            for name in a.getnames():
                da, db = a.extractfile(name).read(), b.extractfile(name).read()
                if name.endswith(".jpg"):
                    ia = cv2.imdecode(np.frombuffer(da, np.uint8), cv2.IMREAD_COLOR)
                    ib = cv2.imdecode(np.frombuffer(db, np.uint8), cv2.IMREAD_COLOR)
                    worst = min(worst, psnr(ia, ib))
                elif name.endswith(".json"):
                    assert json.loads(da) == json.loads(db), name
                else:
                    assert np.array_equal(np.load(io.BytesIO(da), allow_pickle=False),
                                          np.load(io.BytesIO(db), allow_pickle=False)), name
    assert worst >= 38, worst
