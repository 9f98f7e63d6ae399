"""``versions verify --repair`` and re-ingest restore a corrupted stored object from its source, byte for
byte; a source that changed since ingest is refused with the reason and the object is left untouched."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jobs.ingest import run_ingest
from pipeline.store.episodes import EpisodeStore
from pipeline.store.repair import rebuild_objects, stored_corruptions
from pipeline.store.verify import verify_store
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas


def _cli():
    from jobs.cli import app

    return app


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from pipeline.samples import SampleSpec, write_sample_dataset

    root = tmp_path_factory.mktemp("repair-source")
    return write_sample_dataset(root / "lerobot", SampleSpec(num_episodes=2, min_steps=30, max_steps=36, height=96,
                                                             width=128, episodes_per_file=1, seed=3))


@pytest.fixture()
def store(tmp_path, source, ray_session) -> EpisodeStore:
    root = tmp_path / "store"
    run_ingest(str(source), str(root))
    return EpisodeStore(str(root))


def _metas(store: EpisodeStore) -> list:
    return sorted(table_to_metas(load_catalog(store, resolve(store, "latest")[1])), key=lambda m: m.episode_id)


def _flip(path: Path) -> bytes:
    """Flip one byte in the middle of ``path``; returns the original bytes."""
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return original


def _verify(store: EpisodeStore, *extra: str):
    return CliRunner().invoke(_cli(), ["versions", "verify", "--store", store.root, "--no-views", *extra])


@pytest.mark.parametrize("what", ["steps", "video"])
def test_verify_reports_and_repair_restores_byte_identical(store, what):
    meta = _metas(store)[1]
    relative = meta.steps_path if what == "steps" else meta.cameras[0].video_path
    path = Path(store.objects.abspath(relative))
    original = _flip(path)

    result = _verify(store)
    assert result.exit_code == 1
    assert f"MISMATCH {relative} ({what}, episode {meta.episode_id}" in result.output
    assert "1 mismatches" in result.output

    result = _verify(store, "--repair")
    assert result.exit_code == 0, result.output
    assert f"REPAIRED {relative}" in result.output
    assert path.read_bytes() == original
    assert verify_store(store, views=False).ok
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]  # the temporary name is gone


def test_repair_refuses_a_source_that_changed_and_leaves_the_object(store, source):
    meta = _metas(store)[0]
    relative = meta.cameras[0].video_path
    path = Path(store.objects.abspath(relative))
    _flip(path)
    corrupted = path.read_bytes()
    try:
        for video in source.rglob("*.mp4"):  # every source video changed after ingest
            video.write_bytes(video.read_bytes() + b"\0")
        result = _verify(store, "--repair")
    finally:
        for video in source.rglob("*.mp4"):
            video.write_bytes(video.read_bytes()[:-1])
    assert result.exit_code == 1
    assert f"NOT REPAIRED {relative}: episode {meta.episode_id}: the source changed since ingest" in result.output
    assert path.read_bytes() == corrupted


def test_rebuilt_bytes_that_differ_are_never_written(store):
    meta = _metas(store)[0]
    path = Path(store.objects.abspath(meta.steps_path))
    _flip(path)
    corrupted = path.read_bytes()
    from jobs.versions import SourceEpisodes

    episode = SourceEpisodes(store)(resolve(store, "latest")[0], meta)
    steps = episode.steps
    changed = dataclasses.replace(episode, steps=dataclasses.replace(steps, state=np.asarray(steps.state) + 1))
    before = {p: p.stat().st_mtime_ns for p in Path(store.root, "objects").rglob("*") if p.is_file()}
    [result] = rebuild_objects(store, changed, {meta.steps_path: meta.steps_sha256})
    assert result.status == "refused"
    assert result.reason.startswith("the source rebuilds to other bytes (")
    assert f"than the recorded {meta.steps_sha256[:16]}" in result.reason
    assert path.read_bytes() == corrupted
    after = {p: p.stat().st_mtime_ns for p in Path(store.root, "objects").rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing added
    [result] = rebuild_objects(store, episode, {meta.steps_path: meta.steps_sha256})
    assert result.status == "repaired" and stored_corruptions(store, meta) == {}


def test_reingest_of_the_same_source_restores_a_corrupt_object(store, source):
    meta = _metas(store)[1]
    relative = meta.cameras[1].video_path
    path = Path(store.objects.abspath(relative))
    original = _flip(path)
    report = run_ingest(str(source), store.root)
    assert report.reused == 2 and report.quarantined == []
    assert f"episode {meta.episode_id}: corrupt stored object {relative} restored from the source" in report.warnings
    assert path.read_bytes() == original
    assert verify_store(store, views=False).ok
