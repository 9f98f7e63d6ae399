"""LeRobot export: round trips through the real LeRobot-written v3.0 sample, layouts, refusals, modality.

LeRobot v3.0 (written by LeRobot itself) -> ActionReel -> LeRobot v3.0 and v2.1 -> ActionReel: every
state, action, timestamp, per-step task and frame count is equal, exported timestamps are spaced
1/fps within 1e-4 s, the v3.0 export copies the stored video objects byte for byte and the v2.1
cuts (remuxed, no re-encode) decode to the same pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import LEROBOT_V30

from pipeline.export import ExportConfig, ExportError, export_lerobot
from pipeline.export.lerobot_meta import name_groups
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.store.catalog import CatalogQuery
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from pipeline.video import PyAVDecoder
from schemas import table_to_metas


def _episodes(store_path) -> list:
    store = EpisodeStore(str(store_path))
    metas = table_to_metas(load_catalog(store, resolve(store, "latest")[1]))
    return sorted(metas, key=lambda m: int(m.source_key))


def _task_texts(store: EpisodeStore, meta) -> list[str]:
    steps = store.read_steps(meta)
    return [meta.tasks[i] if i >= 0 else "" for i in steps.task_index]


def _frames(store: EpisodeStore, cam, indices: list[int]) -> list[np.ndarray]:
    video = store.video_input(cam)
    return [rgb for _, rgb in PyAVDecoder(threads=1).frames(video, [cam.frame_start + i for i in indices])]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_session):
    from jobs.ingest import run_ingest

    root = tmp_path_factory.mktemp("export")
    report = run_ingest(str(LEROBOT_V30), str(root / "a"))
    assert report.stored == 3 and not report.quarantined
    return root


@pytest.mark.parametrize("layout", ["v3.0", "v2.1"])
def test_round_trip_through_lerobot(reference, layout):
    from jobs.ingest import run_ingest

    store_a = EpisodeStore(str(reference / "a"))
    out = reference / f"out-{layout}"
    report = export_lerobot(store_a, resolve(store_a, "latest")[1], str(out), ExportConfig(layout=layout))
    assert (report.episodes, report.steps, report.tasks) == (3, 135, 3)
    assert report.videos == ({"copy": 2} if layout == "v3.0" else {"remux": 6})
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == layout and info["fps"] == 30 and info["total_frames"] == 135

    for data in sorted((out / "data").rglob("*.parquet")):  # LeRobot's check: timestamps spaced 1/fps
        table = pq.read_table(data)
        episode = table.column("episode_index").to_numpy()
        stamps = table.column("timestamp").to_numpy().astype(np.float64)
        for index in np.unique(episode):
            ts = stamps[episode == index]
            assert ts[0] == 0.0
            assert np.abs(np.diff(ts) - 1 / 30).max() < 1e-4

    back = run_ingest(str(out), str(reference / f"b-{layout}"))
    assert back.stored == 3 and not back.quarantined
    store_b = EpisodeStore(str(reference / f"b-{layout}"))
    before, after = _episodes(reference / "a"), _episodes(reference / f"b-{layout}")
    assert [m.num_steps for m in before] == [m.num_steps for m in after] == [45, 45, 45]
    for a, b in zip(before, after, strict=True):
        steps_a, steps_b = store_a.read_steps(a), store_b.read_steps(b)
        assert steps_a.state.dtype == steps_b.state.dtype == np.float32
        assert np.array_equal(steps_a.state, steps_b.state) and np.array_equal(steps_a.action, steps_b.action)
        assert np.array_equal(steps_a.timestamp_ns, steps_b.timestamp_ns)
        assert _task_texts(store_a, a) == _task_texts(store_b, b) == [f"task {a.source_key}"] * 45
        assert [(c.name, c.num_frames) for c in a.cameras] == [(c.name, c.num_frames) for c in b.cameras]
        assert a.state_names == b.state_names and a.action_names == b.action_names
        for cam_a, cam_b in zip(a.cameras, b.cameras, strict=True):
            assert store_b.video_input(cam_b).probe.num_frames == (135 if layout == "v3.0" else 45)
            if layout == "v3.0":
                assert cam_b.video_sha256 == cam_a.video_sha256  # copied byte for byte
            else:
                picks = [0, 1, 22, 44]
                assert all(np.array_equal(x, y) for x, y in zip(_frames(store_a, cam_a, picks),
                                                               _frames(store_b, cam_b, picks), strict=True))
    modality = json.loads((out / "meta" / "modality.json").read_text())
    assert modality["state"] == {"state": {"start": 0, "end": 14}}  # names j0..j13 share no prefix group
    assert modality["video"] == {"top": {"original_key": "observation.images.top"},
                                 "wrist": {"original_key": "observation.images.wrist"}}


def test_selection_export_cuts_shared_videos(reference):
    """Exporting one episode of a multi-episode video cuts it out (not a copy of all 135 frames)."""
    store = EpisodeStore(str(reference / "a"))
    manifest = resolve(store, "latest")[1]
    target = next(m for m in table_to_metas(load_catalog(store, manifest)) if m.source_key == "1")
    out = reference / "one-v3"
    report = export_lerobot(store, manifest, str(out), ExportConfig(layout="v3.0"),
                            CatalogQuery(episode_ids=(target.episode_id,)))
    assert report.episodes == 1 and report.videos == {"remux": 2}
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert len(episodes) == 1 and episodes[0]["actionreel/episode_id"] == target.episode_id
    assert episodes[0]["videos/observation.images.top/from_timestamp"] == 0.0
    assert episodes[0]["videos/observation.images.top/to_timestamp"] == 1.5


def test_unaligned_cuts_are_reencoded_with_exact_frame_counts(tmp_path, ray_session):
    """Our sample writer puts a keyframe every 30 frames, so most episodes start mid-GOP."""
    from jobs.ingest import run_ingest

    source = write_sample_dataset(tmp_path / "src", SampleSpec(num_episodes=3, height=96, width=128, min_steps=31,
                                                               max_steps=37, episodes_per_file=3, seed=5))
    run_ingest(str(source), str(tmp_path / "store"))
    store = EpisodeStore(str(tmp_path / "store"))
    report = export_lerobot(store, resolve(store, "latest")[1], str(tmp_path / "out"), ExportConfig(layout="v2.1"))
    assert report.videos.get("reencode", 0) >= 2 and sum(report.videos.values()) == 6
    run_ingest(str(tmp_path / "out"), str(tmp_path / "back"))
    for a, b in zip(_episodes(tmp_path / "store"), _episodes(tmp_path / "back"), strict=True):
        assert [c.num_frames for c in a.cameras] == [c.num_frames for c in b.cameras] == [a.num_steps] * 2
        back = EpisodeStore(str(tmp_path / "back"))
        assert [back.video_input(c).probe.num_frames for c in b.cameras] == [a.num_steps] * 2
        assert np.array_equal(store.read_steps(a).action, back.read_steps(b).action)


def test_export_is_never_in_place(reference, tmp_path):
    store = EpisodeStore(str(reference / "a"))
    manifest = resolve(store, "latest")[1]
    for target in (reference / "a", reference / "a" / "export", Path(LEROBOT_V30) / "again"):
        with pytest.raises(ExportError, match="never in place"):
            export_lerobot(store, manifest, str(target))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_lerobot(store, manifest, str(busy))
    assert (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(ExportError, match="no episode"):
        export_lerobot(store, manifest, str(tmp_path / "none"), query=CatalogQuery(embodiment=("franka",)))
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none.partial-*"))


def test_modality_groups_from_names():
    aloha = [f"{side}_{j}" for side in ("left", "right") for j in ("waist", "shoulder", "elbow", "gripper")]
    assert name_groups(aloha, "state") == {"left": {"start": 0, "end": 4}, "right": {"start": 4, "end": 8}}
    assert name_groups(["x", "y", "z"], "action") == {"action": {"start": 0, "end": 3}}
    assert name_groups(["arm.a", "hand.b", "arm.c"], "state") == {"state": {"start": 0, "end": 3}}  # not contiguous
