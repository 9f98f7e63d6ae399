"""Augmentation runs end to end: requests, the reference / Python / HTTP generators, gates, lineage, commits."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from jobs.augment import run_augment
from jobs.cli import app
from jobs.ingest import run_ingest
from pipeline.augment import CallPolicy, GeneratorServer, PlanOptions, QualityConfig, ReferenceGenerator
from pipeline.augment.quality import check_result
from pipeline.augment.request import REQUEST_FORMAT, GenerationRequest, GenerationResult
from pipeline.samples import read_frame_code
from pipeline.store.catalog import CatalogQuery
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, read_manifest, ref_head, resolve
from pipeline.video import PyAVDecoder
from schemas import table_to_metas
from tests.helpers import decode_all_frames
from tests.synthetic_helpers import FaultyGenerator, small_dataset, video_file


@pytest.fixture(scope="module")
def real_store(tmp_path_factory, ray_session):
    """4 real episodes (episode 3 in val), committed as ref ``latest``; returns (store path, version id)."""
    root = tmp_path_factory.mktemp("augment")
    report = run_ingest(str(small_dataset(root / "aloha-day1")), str(root / "store"))
    return root / "store", report.version_id


def _catalog(store_path: Path, ref: str) -> dict:
    store = EpisodeStore(str(store_path))
    return {m.episode_id: m for m in table_to_metas(load_catalog(store, resolve(store, ref)[1]))}


def _check_augmented(store_path: Path, ref: str, source_version: str, synthetic_expected: int) -> list:
    """The new version holds the source's episodes plus synthetic ones whose parents are stored there."""
    store = EpisodeStore(str(store_path))
    version = ref_head(store, ref)
    assert read_manifest(store, version).parent == source_version
    metas = _catalog(store_path, ref)
    real = {i: m for i, m in metas.items() if m.kind == "teleop"}
    synthetic = [m for m in metas.values() if m.kind == "synthetic"]
    assert len(real) == 4 and len(synthetic) == synthetic_expected
    for child in synthetic:
        parent = real[child.lineage.parent_episode_id]  # every parent is a stored episode of this version
        assert child.lineage.root_episode_id == parent.episode_id
        assert child.split == parent.split
        assert child.lineage.parent_frame_range == (0, parent.num_steps)
        a, b = store.read_steps(child), store.read_steps(parent)
        for name in ("action", "state", "timestamp_ns", "action_valid", "state_valid", "task_index"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)  # motion kept, exact
        assert child.action_source == parent.action_source == "recorded"
        assert [c.name for c in child.cameras] == [c.name for c in parent.cameras]
        assert all(c.num_frames == parent.num_steps for c in child.cameras)
        assert child.tasks == parent.tasks and child.lineage.prompt == parent.tasks[0]
    assert sorted(c.split for c in synthetic).count("val") == synthetic_expected // 4
    return synthetic


def test_reference_run_makes_a_child_version_and_a_rerun_skips_finished_requests(real_store):
    store_path, source = real_store
    report = run_augment(str(store_path), source=source, ref="augmented")
    assert (report.stored, len(report.quarantined), report.extra["generated"]) == (4, 0, 4)
    synthetic = _check_augmented(store_path, "augmented", source, 4)
    for child in synthetic:
        generator = child.lineage.generator
        assert (generator.model_id, generator.task, generator.seed) == ("actionreel/reference-transfer-v1",
                                                                        "transfer", 0)
        assert float(generator.params["scale"]) >= 1.0 and generator.params["resolution"] == "128x96"
        assert {c.kind for c in child.lineage.conditioning} == {"video", "frames"}
    assert len({s.lineage.generator.params["brightness"] for s in synthetic}) == 4  # one transform per episode
    again = run_augment(str(store_path), source=source, ref="augmented")
    assert again.extra["generated"] == 0 and again.extra["results reused (finished earlier)"] == 4
    assert again.version_id == report.version_id  # nothing new: the ref did not move


def test_photometric_transfer_keeps_every_frame_in_place(real_store):
    store_path, source = real_store
    report = run_augment(str(store_path), source=source, ref="photometric", generator="reference",
                         generator_options={"geometric": False}, query=CatalogQuery(split=("val",)))
    assert report.stored == 1
    [child] = [m for m in _catalog(store_path, "photometric").values() if m.kind == "synthetic"]
    store = EpisodeStore(str(store_path))
    frames = [rgb for _, rgb in PyAVDecoder(threads=1).frames(store.video_input(child.cameras[0]), range(30))]
    assert [read_frame_code(f) for f in frames] == [(3, i) for i in range(30)]  # episode 3 is the val one
    parent = _catalog(store_path, "photometric")[child.lineage.parent_episode_id].camera(child.cameras[0].name)
    source_frames = [rgb for _, rgb in PyAVDecoder(threads=1).frames(
        store.video_input(parent), range(parent.frame_start, parent.frame_start + 30))]
    assert np.abs(frames[5].astype(int) - source_frames[5].astype(int)).mean() > 3  # the pixels did change


def test_python_callable_generator(real_store):
    store_path, source = real_store
    report = run_augment(str(store_path), source=source, ref="callable",
                         generator="python:pipeline.augment.reference:generate", query=CatalogQuery(split=("val",)),
                         plan=PlanOptions(variants=2, seed=10, prompts=("{task}, at dusk", "{task}, studio light")))
    assert report.stored == 2
    synthetic = [m for m in _catalog(store_path, "callable").values() if m.kind == "synthetic"]
    assert sorted((m.lineage.generator.seed, m.lineage.prompt.split(", ")[1]) for m in synthetic) == [
        (10, "at dusk"), (11, "studio light")]
    assert all(m.lineage.generator.model_id == "actionreel/reference-transfer-v1" for m in synthetic)


def test_http_generator_on_loopback_with_a_concurrency_limit(real_store):
    store_path, source = real_store
    generator = FaultyGenerator({})
    server = GeneratorServer(generator, "127.0.0.1", 0).start()
    try:
        report = run_augment(str(store_path), source=source, ref="http", generator=server.url,
                             policy=CallPolicy(timeout_s=60, max_concurrency=1))
    finally:
        server.stop()
    assert report.stored == 4 and not report.quarantined
    assert sum(generator.calls.values()) == 4 and generator.max_in_flight == 1  # Ray had 2 CPUs to offer
    synthetic = _check_augmented(store_path, "http", source, 4)
    assert all(m.lineage.generator.model_id == "actionreel/reference-transfer-v1" for m in synthetic)
    assert json.loads(synthetic[0].extras["augment.generator"]) == {"kind": "http", "url": server.url}


def test_failing_generators_are_retried_or_quarantined_and_the_run_completes(real_store):
    store_path, source = real_store
    ids = sorted(m.episode_id for m in _catalog(store_path, source).values())
    faults = {ids[0]: "sleep", ids[1]: "corrupt", ids[2]: "short", ids[3]: "sleep_once"}
    generator = FaultyGenerator(faults, sleep_s=8.0)
    server = GeneratorServer(generator, "127.0.0.1", 0).start()
    try:
        report = run_augment(str(store_path), source=source, ref="faulty", generator=server.url,
                             policy=CallPolicy(timeout_s=3.0, max_attempts=2, max_concurrency=4, backoff_s=0.1))
    finally:
        server.stop()
    assert report.stored == 1 and report.extra["retries"] == 4 and report.extra["attempts"] == 8
    by_parent = {q["source_key"]: q for q in report.quarantined}
    assert len(by_parent) == 3 and all(q["attempts"] == 2 for q in report.quarantined)
    gates = report.extra["quarantined by gate"]
    assert gates == {"corrupt": 1, "frame_count": 1, "timeout": 1}
    assert report.extra["failed attempts by gate"] == {"corrupt": 2, "frame_count": 2, "timeout": 3}
    reasons = " | ".join(q["reason"] for q in report.quarantined)
    assert "29 frames, requested 30" in reasons and "timed out after 3 s" in reasons
    [child] = [m for m in _catalog(store_path, "faulty").values() if m.kind == "synthetic"]
    assert child.lineage.parent_episode_id == ids[3]  # timed out once, then made it
    failed = Path(report.quarantined[0]["file"])
    assert (failed / "attempt-1" / "failure.json").is_file()


def test_export_writes_cosmos_like_requests_and_external_results_are_ingested(real_store, tmp_path):
    store_path, source = real_store
    workdir = tmp_path / "work"
    report = run_augment(str(store_path), source=source, generator=None, export_only=True, workdir=str(workdir),
                         plan=PlanOptions(max_steps=20, conditioning_frames=2, inference_type="transfer",
                                          controls={"edge": {"control_weight": 0.5}}))
    assert report.extra["exported only"] == 4 and not report.version_id
    store = EpisodeStore(str(store_path))
    metas = _catalog(store_path, source)
    folders = sorted((workdir / "requests").iterdir())
    assert len(folders) == 4
    for folder in folders:
        doc = json.loads((folder / "request.json").read_text())
        assert doc["format"] == REQUEST_FORMAT and doc["name"] == folder.name
        request = GenerationRequest.from_json(doc)
        parent = metas[request.parent["episode_id"]]
        assert (request.num_output_frames, request.fps, request.resolution) == (20, "30/1",
                                                                               {"width": 128, "height": 96})
        assert request.parent["step_range"] == [0, 20] and request.parent["split"] == parent.split
        np.testing.assert_array_equal(np.load(folder / request.actions_path), store.read_steps(parent).action[:20])
        camera = request.cameras["cam_high"]
        assert [f["frame_index"] for f in camera.conditioning_frames] == [0, 1]
        png = cv2.cvtColor(cv2.imread(str(folder / camera.conditioning_frames[1]["path"])), cv2.COLOR_BGR2RGB)
        cam = parent.camera("cam_high")
        [(_, stored)] = PyAVDecoder(threads=1).frames(store.video_input(cam), [cam.frame_start + 1])
        np.testing.assert_array_equal(png, stored)  # lossless conditioning frame
        assert len(decode_all_frames(folder / camera.input_video_path)) == 20
        assert request.controls == {"edge": {"control_weight": 0.5}} and request.input_path == "input/cam_high.mp4"
    # a generator elsewhere fills results/<request_id>/; the job then ingests them without a generator
    for folder in folders[:2]:
        out = workdir / "results" / folder.name
        out.mkdir(parents=True)
        result = ReferenceGenerator(geometric=False)(json.loads((folder / "request.json").read_text()),
                                                     str(folder), str(out))
        (out / "result.json").write_text(json.dumps(result))
    report = run_augment(str(store_path), source=source, ref="external", generator="none", workdir=str(workdir),
                         plan=PlanOptions(max_steps=20, conditioning_frames=2, inference_type="transfer",
                                          controls={"edge": {"control_weight": 0.5}}))
    assert (report.stored, report.extra["waiting for a result"]) == (2, 2)
    synthetic = [m for m in _catalog(store_path, "external").values() if m.kind == "synthetic"]
    assert len(synthetic) == 2
    for child in synthetic:
        assert child.num_steps == 20 and child.lineage.parent_frame_range == (0, 20)
        edge = [c for c in child.lineage.conditioning if c.kind == "edge"]
        assert len(edge) == 1 and edge[0].weight == 0.5


def test_command_line_run(real_store, tmp_path):
    store_path, _ = real_store
    args = ["augment", "run", "--store", str(store_path), "--ref", "cli", "--where", "split=val",
            "--generator-option", "geometric=false", "--generator-option", "strength=0.5", "--variants", "2",
            "--report", str(tmp_path / "report.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stored"] == 2 and report["extra"]["requests"] == 2 and report["version_id"]
    identity = json.loads(report["extra"]["generator"])
    assert (identity["geometric"], identity["strength"]) == (False, 0.5)
    bad = CliRunner().invoke(app, ["augment", "run", "--store", str(store_path), "--quality", '{"nope": 1}'])
    assert bad.exit_code != 0 and "unknown quality settings" in bad.output


def _request(tmp_path: Path, frames: int = 12, fps: str = "8/1", size: tuple[int, int] = (64, 48)):
    doc = {"format": REQUEST_FORMAT, "request_id": "r1", "inference_type": "transfer", "prompt": "p", "task": "t",
           "seed": 0, "num_output_frames": frames, "fps": fps, "resolution": {"width": size[0], "height": size[1]},
           "parent": {"episode_id": "e", "step_range": [0, frames]},
           "cameras": {"main": {"input_video_path": "input/main.mp4", "conditioning_frames": [], "width": size[0],
                                "height": size[1], "fps": fps, "num_output_frames": frames,
                                "parent_frames": [0, frames]}}}
    return GenerationRequest.from_json(doc)


@pytest.mark.parametrize(("kind", "gates"), [
    ({}, []),
    ({"still": True}, ["frozen"]),
    ({"blank": True}, ["frozen", "blank"]),
    ({"frames": 11}, ["frame_count", "action_length"]),
    ({"fps": 10}, ["fps"]),
    ({"size": (48, 48)}, ["resolution"]),
])
def test_quality_gates_name_what_failed(tmp_path, kind, gates):
    request = _request(tmp_path)
    video_file(tmp_path / "main.mp4", kind.get("frames", 12), fps=kind.get("fps", 8), size=kind.get("size", (64, 48)),
               still=kind.get("still", False), blank=kind.get("blank", False))
    result = GenerationResult(request_id="r1", videos={"main": "main.mp4"})
    failures, checks = check_result(request, result, tmp_path, QualityConfig(), keeps_motion=True, action_rows=None)
    assert [f.gate for f in failures] == gates
    assert checks["main"].frames == kind.get("frames", 12) and checks["main"].fps == Fraction(kind.get("fps", 8))


def test_quality_gates_for_missing_corrupt_and_action_counts(tmp_path):
    request = _request(tmp_path)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 100)
    failures, _ = check_result(request, GenerationResult("r1", {"main": "bad.mp4"}), tmp_path, QualityConfig(),
                               True, None)
    assert [f.gate for f in failures] == ["corrupt"]
    failures, _ = check_result(request, GenerationResult("r1", {"main": "../escape.mp4"}), tmp_path, QualityConfig(),
                               True, None)
    assert [f.gate for f in failures] == ["missing"]
    video_file(tmp_path / "ok.mp4", 12)
    for rows, gates in ((12, []), (11, []), (9, ["action_length"])):
        failures, _ = check_result(request, GenerationResult("r1", {"main": "ok.mp4"}), tmp_path, QualityConfig(),
                                   False, rows)
        assert [f.gate for f in failures] == gates
    lenient = QualityConfig(max_frozen_fraction=1.0, max_blank_fraction=1.0)
    video_file(tmp_path / "black.mp4", 12, blank=True)
    assert check_result(request, GenerationResult("r1", {"main": "black.mp4"}), tmp_path, lenient, True, None)[0] == []
