"""The shard job's decode scheduling end to end (Ray, CPU only): videos routed to a GPU backend that
fails are redone on the CPU, the shards come out byte-identical to a CPU-only run, and the report
names every fallback (file, episode, camera, reason) and the backend of every video."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

import tests.fake_backends as fakes
from jobs.shard import run_shard
from pipeline.shards import ViewConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from pipeline.video.backends import cuda_device_count
from pipeline.video.router import Devices
from schemas import table_to_metas

# scaler="opencv": the CPU scaler the GPU resize reproduces, so GPU, fallback and CPU-only runs agree byte for byte
VIEW = ViewConfig(height=96, width=128, segment_steps=16, max_action_horizon=8, target_shard_bytes=400_000,
                  scaler="opencv")
FAKE_GPU = {"devices": Devices(1, (9, 0), (fakes.FLAKY, fakes.MISSING)), "backend_modules": ("tests.fake_backends",)}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, ray_session):
    from jobs.ingest import run_ingest
    from pipeline.samples import SampleSpec, write_sample_dataset

    root = tmp_path_factory.mktemp("decode-job")
    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=3, min_steps=40, max_steps=56,
                                                              episodes_per_file=1, seed=3))
    run_ingest(str(source), str(root / "store"))
    return root / "store"


@pytest.fixture(scope="module")
def cpu_run(small_store, tmp_path_factory):
    store = tmp_path_factory.mktemp("cpu") / "store"
    shutil.copytree(small_store, store)
    report, view_id = run_shard(str(store), VIEW)
    return store, report, _manifest(store, view_id)


def _manifest(store, view_id: str) -> dict:
    return json.loads((store / f"views/{view_id}/view.json").read_text())


def _shas(manifest: dict) -> dict[str, str]:
    return {s["name"]: s["tar_sha256"] for s in manifest["shards"]}


def _videos(store) -> dict[str, str]:
    """episode_id/camera -> the video object's URL, as decode records name it."""
    s = EpisodeStore(str(store))
    _, version = resolve(s, "latest")
    return {f"{m.episode_id}/{c.name}": s.url(c.video_path) for m in table_to_metas(load_catalog(s, version))
            for c in m.cameras}


@pytest.mark.skipif(cuda_device_count() > 0, reason="checks the routing of a cluster without GPUs")
def test_cpu_cluster_routes_every_video_to_pyav(cpu_run):
    _, report, manifest = cpu_run
    assert manifest["decoder"] == "auto" and len(manifest["shards"]) >= 2
    assert len(report.decode) == sum(len(s["episodes"]) for s in manifest["shards"]) * 2
    assert {(r["backend"], r["reason"]) for r in report.decode} == {("pyav", "no CUDA device")}
    assert report.fallbacks == [] and report.extra["GPU fallbacks"] == 0
    assert "no GPU in the cluster" in report.extra["decode pool"]


def test_file_failing_on_the_gpu_backend_is_retried_on_cpu_and_reported(small_store, cpu_run, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    videos = _videos(store)
    bad_key = sorted(videos)[1]
    bad_file = videos[bad_key]
    (store / bad_file.split(str(store) + "/", 1)[1]).with_suffix(".mp4" + fakes.FAIL_MARK).touch()
    report, view_id = run_shard(str(store), VIEW, router={"gpu_order": [fakes.FLAKY]}, **FAKE_GPU)

    assert _shas(_manifest(store, view_id)) == _shas(cpu_run[2])  # byte-identical to the CPU-only run
    failed = [r for r in report.decode if r.get("fallback_from")]
    assert {f"{r['episode_id']}/{r['camera']}" for r in failed} == {bad_key}
    assert [(f["file"], f["backend"], f["retried_on"]) for f in report.fallbacks] == \
        [(bad_file, fakes.FLAKY, "pyav")] * len(failed)
    shard_names = {s["name"] for s in _manifest(store, view_id)["shards"]}
    assert all("CUDA_ERROR_INVALID_SOURCE" in f["reason"] and f["shard"] in shard_names for f in report.fallbacks)
    backends = Counter(r["backend"] for r in report.decode)
    assert backends == {fakes.FLAKY: len(report.decode) - len(failed), "pyav": len(failed)}
    assert report.extra["GPU fallbacks"] == len(failed) >= 1
    assert {r["device"] for r in report.decode if r["backend"] == fakes.FLAKY} == {"cuda"}
    saved = tmp_path / "report.json"
    report.write(str(saved))
    assert json.loads(saved.read_text())["fallbacks"] == report.fallbacks


def test_gpu_backend_that_fails_to_import_sends_every_file_to_cpu(small_store, cpu_run, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    report, view_id = run_shard(str(store), VIEW, router={"gpu_order": [fakes.MISSING]}, **FAKE_GPU)

    assert _shas(_manifest(store, view_id)) == _shas(cpu_run[2])
    assert len(report.fallbacks) == len(report.decode) == len(cpu_run[1].decode)
    assert {r["backend"] for r in report.decode} == {"pyav"}
    assert {r["fallback_from"] for r in report.decode} == {fakes.MISSING}
    assert {f["file"] for f in report.fallbacks} == set(_videos(store).values())
    assert all("cannot build fake-nvdec-missing: ImportError" in f["reason"] for f in report.fallbacks)
