"""AV1 sources (LeRobot's default codec) through v2.1 and subset v3.0 exports.

The sources are encoded the way LeRobot encodes them: PyAV libsvtav1, g=2, crf=30, yuv420p, several
episodes per file. A cut on whole GOPs is a stream copy (AV1 stays AV1, same pixels); a cut that is
not falls back to a re-encode (H.264) with the exact frame count, and info.json names the codec of
the files written. Remuxing used to fail with ``UnknownCodecError: libdav1d`` before any fallback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.export import ExportConfig, export_lerobot
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.store.catalog import CatalogQuery
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from pipeline.video import PyAVDecoder, probe_video
from schemas import table_to_metas
from tests.consumer_readers import lerobot_video_path, open_lerobot_v21
from tests.helpers import decode_all_frames


def _metas(store: EpisodeStore) -> list:
    return sorted(table_to_metas(load_catalog(store, resolve(store, "latest")[1])), key=lambda m: int(m.source_key))


def _stored_frames(store: EpisodeStore, cam) -> list[np.ndarray]:
    video = store.video_input(cam)
    return [rgb for _, rgb in PyAVDecoder(threads=1).frames(video, list(range(cam.frame_start,
                                                                              cam.frame_start + cam.num_frames)))]


def _codec(path) -> str:
    return probe_video(str(path), lambda: open(path, "rb")).codec


@pytest.fixture(scope="module")
def av1_stores(tmp_path_factory, ray_session):
    """Two AV1 v3.0 sources of 3 episodes in one file: 12 steps each (every cut on a keyframe) and 13."""
    from jobs.ingest import run_ingest

    stores = {}
    for steps in (12, 13):
        root = tmp_path_factory.mktemp(f"av1-{steps}")
        source = write_sample_dataset(root / "src", SampleSpec(num_episodes=3, height=64, width=96, min_steps=steps,
                                                               max_steps=steps, codec="libsvtav1", episodes_per_file=3,
                                                               seed=2))
        assert _codec(source / "videos/observation.images.cam_high/chunk-000/file-000.mp4") == "av1"
        assert not run_ingest(str(source), str(root / "store")).quarantined
        stores[steps] = (EpisodeStore(str(root / "store")), root)
    return stores


def test_gop_aligned_av1_cuts_are_stream_copies_in_v21(av1_stores):
    store, root = av1_stores[12]
    report = export_lerobot(store, resolve(store, "latest")[1], str(root / "v21"), ExportConfig(layout="v2.1"))
    assert report.videos == {"remux": 6}  # 3 episodes x 2 cameras
    dataset = open_lerobot_v21(root / "v21")
    for key, feature in dataset["info"]["features"].items():
        if feature["dtype"] != "video":
            continue
        assert feature["info"]["video.codec"] == "av1"
        for meta in _metas(store):
            path = lerobot_video_path(dataset, root / "v21", int(meta.source_key), key)
            assert _codec(path) == "av1"
            cam = next(c for c in meta.cameras if key.endswith(c.name))
            got = decode_all_frames(path)
            assert len(got) == cam.num_frames == 12
            assert all(np.array_equal(a, b) for a, b in zip(got, _stored_frames(store, cam), strict=True))


def test_av1_subset_v30_export_remuxes_one_episode(av1_stores):
    store, root = av1_stores[12]
    target = _metas(store)[1]
    report = export_lerobot(store, resolve(store, "latest")[1], str(root / "one"), ExportConfig(layout="v3.0"),
                            CatalogQuery(episode_ids=(target.episode_id,)))
    assert report.episodes == 1 and report.videos == {"remux": 2}
    info = json.loads((root / "one/meta/info.json").read_text())
    for cam in target.cameras:
        path = root / f"one/videos/observation.images.{cam.name}/chunk-000/file-000.mp4"
        assert _codec(path) == info["features"][f"observation.images.{cam.name}"]["info"]["video.codec"] == "av1"
        assert all(np.array_equal(a, b) for a, b in zip(decode_all_frames(path), _stored_frames(store, cam),
                                                       strict=True))


def test_unaligned_av1_cuts_fall_back_to_reencode(av1_stores, tmp_path, ray_session):
    from jobs.ingest import run_ingest

    store, root = av1_stores[13]  # starts 0, 13, 26: episode 0 ends and episode 1 starts mid-GOP
    report = export_lerobot(store, resolve(store, "latest")[1], str(root / "v21"), ExportConfig(layout="v2.1"))
    assert report.videos == {"reencode": 4, "remux": 2}
    assert any("several codecs ['av1', 'h264']" in w for w in report.warnings)
    dataset = open_lerobot_v21(root / "v21")
    assert [_codec(lerobot_video_path(dataset, root / "v21", i, "observation.images.cam_high")) for i in range(3)] == [
        "h264", "h264", "av1"]
    assert not run_ingest(str(root / "v21"), str(tmp_path / "back")).quarantined
    back = EpisodeStore(str(tmp_path / "back"))
    for a, b in zip(_metas(store), _metas(back), strict=True):
        assert [c.num_frames for c in b.cameras] == [c.num_frames for c in a.cameras] == [13, 13]
        assert np.array_equal(store.read_steps(a).action, back.read_steps(b).action)

    middle = _metas(store)[1]
    one = export_lerobot(store, resolve(store, "latest")[1], str(root / "one"), ExportConfig(layout="v3.0"),
                         CatalogQuery(episode_ids=(middle.episode_id,)))
    assert one.videos == {"reencode": 2}
    info = json.loads((root / "one/meta/info.json").read_text())
    path = root / "one/videos/observation.images.cam_high/chunk-000/file-000.mp4"
    assert _codec(path) == info["features"]["observation.images.cam_high"]["info"]["video.codec"] == "h264"
    assert len(decode_all_frames(path)) == 13
