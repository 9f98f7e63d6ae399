"""zarr ReplayBuffer connector: a buffer written with zarr, the real PushT sample (mostly absent images), bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from connectors import detect_format, get_connector
from schemas import index_to_ns
from tests.conftest import REAL
from tests.connector_helpers import LOSSLESS, assert_quarantined, frames_of, ingest

PUSHT = REAL / "zarr" / "pusht-cchi-v7-replay" / "pusht_cchi_v7_replay.zarr"
ENDS = np.array([5, 12, 16])
H, W = 24, 32


def buffer_values(rows: int = 16) -> dict:
    rng = np.random.default_rng(3)
    return {"state": rng.normal(size=(rows, 5)).astype(np.float32),
            "action": rng.normal(size=(rows, 2)).astype(np.float32),
            "keypoint": rng.normal(size=(rows, 9, 2)).astype(np.float32),
            "img": rng.integers(0, 256, (rows, H, W, 3)).astype(np.float32),  # PushT: 0..255 stored as float
            "wrist": rng.integers(0, 256, (rows, H, W, 3), dtype=np.uint8)}


def write_buffer(path, values: dict, ends: np.ndarray, *, timestamps: np.ndarray | None = None) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for key, array in values.items():
        chunks = (4, *array.shape[1:])
        group.create_array(f"data/{key}", shape=array.shape, dtype=array.dtype, chunks=chunks)[:] = array
    if timestamps is not None:
        group.create_array("data/timestamp", shape=timestamps.shape, dtype=timestamps.dtype, chunks=(4,))[:] = \
            timestamps
    group.create_array("meta/episode_ends", shape=ends.shape, dtype=np.int64, chunks=ends.shape)[:] = ends


@pytest.fixture(scope="module")
def replay(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("zarr") / "toy_replay.zarr"
    values = buffer_values()
    write_buffer(root, values, ENDS)
    report, store, metas = ingest(root, tmp_path_factory.mktemp("zarr-store"), options={"fps": 10},
                                  config=LOSSLESS)
    return root, values, report, store, metas


def test_every_value_lands_in_the_store_exactly(replay):
    root, values, report, store, metas = replay
    assert detect_format(str(root)) == "zarr_replay"
    assert report.stored == 3 and not report.quarantined and not report.missing
    starts = np.r_[0, ENDS[:-1]]
    for index, (start, stop) in enumerate(zip(starts, ENDS, strict=True)):
        meta = metas[str(index)]
        n = stop - start
        steps = store.read_steps(meta)
        assert meta.num_steps == n and meta.control_fps == 10
        assert np.array_equal(steps.state, values["state"][start:stop])
        assert np.array_equal(steps.action, values["action"][start:stop])
        assert np.array_equal(steps.extras["keypoint"], values["keypoint"][start:stop].reshape(n, 18))
        assert np.array_equal(steps.timestamp_ns, index_to_ns(np.arange(n), meta.control_fps))
        for camera, expected in (("img", values["img"].astype(np.uint8)), ("wrist", values["wrist"])):
            frames = frames_of(store, meta, camera)
            assert len(frames) == meta.camera(camera).num_frames == n
            assert all(np.array_equal(a, b) for a, b in zip(frames, expected[start:stop], strict=True))


def test_timestamps_array_sets_the_clock(tmp_path):
    root = tmp_path / "timed.zarr"
    stamps = 1700000000.0 + np.cumsum(np.r_[0.0, np.full(15, 0.05)])  # 20 Hz wall-clock seconds
    write_buffer(root, {k: v for k, v in buffer_values().items() if k in ("state", "action")}, ENDS,
                 timestamps=stamps)
    connector = get_connector("zarr_replay")
    episode = connector.read(connector.discover(str(root)).refs[1])
    expected = np.rint(stamps[5:12] * 1e9).astype(np.int64) - np.int64(np.rint(stamps[5] * 1e9))
    assert np.array_equal(episode.steps.timestamp_ns, expected)
    assert episode.meta.control_fps == 20


def test_absent_image_chunks_are_missing_image_data_not_black_frames(tmp_path):
    root = tmp_path / "holes.zarr"
    values = buffer_values()
    write_buffer(root, values, ENDS)
    (root / "data" / "img" / "3.0.0.0").unlink()  # rows 12..15 = all of episode 2
    (root / "data" / "wrist" / "1.0.0.0").unlink()  # rows 4..7: part of episodes 0 and 1
    connector = get_connector("zarr_replay")
    discovery = connector.discover(str(root))
    assert [r.key for r in discovery.refs] == []
    reasons = dict(discovery.missing)
    assert "data/wrist: missing image data for rows 4..4" in reasons["0"]
    assert "data/wrist: missing image data for rows 5..7" in reasons["1"]
    assert "data/img: missing image data for rows 12..15" in reasons["2"]
    kept = connector.discover(str(root), {"missing_images": "drop_camera"})
    episode = connector.read(kept.refs[2])
    assert [c.name for c in episode.meta.cameras] == ["wrist"]
    assert episode.meta.extras["zarr.missing_image_data"] == "img"
    assert np.array_equal(episode.steps.state, values["state"][12:16])


def test_real_pusht_counts_and_values(tmp_path):
    from pipeline.store.episodes import EpisodeStore

    group = zarr.open_group(str(PUSHT), mode="r")
    ends = group["meta/episode_ends"][:]
    connector = get_connector("zarr_replay")
    assert detect_format(str(PUSHT)) == "zarr_replay"
    discovery = connector.discover(str(PUSHT))
    assert len(ends) == 206 and ends[-1] == 25650
    # SOURCE.md: images exist for rows 0..321 only, so episodes 0 and 1 are whole, episode 2 is not.
    assert [r.key for r in discovery.refs] == ["0", "1"]
    assert len(discovery.missing) == 204 and "rows 322..419" in dict(discovery.missing)["2"]
    all_low_dim = connector.discover(str(PUSHT), {"missing_images": "drop_camera"})
    assert len(all_low_dim.refs) == 206
    total = 0
    for ref in all_low_dim.refs[:3] + all_low_dim.refs[-2:]:
        episode = connector.read(ref)
        start, stop = ref.options["rows"]
        total += episode.meta.num_steps
        assert episode.meta.num_steps == stop - start
        assert np.array_equal(episode.steps.state, group["data/state"][start:stop])
        assert np.array_equal(episode.steps.action, group["data/action"][start:stop])
        assert np.array_equal(episode.steps.extras["n_contacts"], group["data/n_contacts"][start:stop, 0])
        assert [c.name for c in episode.meta.cameras] == (["img"] if int(ref.key) < 2 else [])
    assert np.array_equal(connector.read(all_low_dim.refs[0]).steps.state[0],
                          np.array([222.0, 97.0, 222.99382, 381.59903, 3.0079994], np.float32))
    episode = connector.read(discovery.refs[1])
    assert episode.meta.num_steps == 118 and episode.meta.embodiment == "pusht"
    store = EpisodeStore(str(tmp_path / "store"))
    meta = store.write_episode(episode, LOSSLESS.encode)
    frames = frames_of(store, meta, "img")
    expected = np.rint(group["data/img"][161:279]).astype(np.uint8)
    assert len(frames) == 118 and all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))
    assert expected.max() > 0  # real pictures, not fill-value zeros


@pytest.fixture(scope="module")
def bad(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("zarr-bad") / "bad.zarr"
    values = {k: v for k, v in buffer_values().items() if k in ("state", "wrist")}
    values["action"] = buffer_values()["action"][:14]  # ends say 16 rows
    write_buffer(root, values, np.array([4, 8, 12, 16]))
    (root / "data" / "state" / "1.0").unlink()  # episode 1: absent low-dim chunk
    chunk = root / "data" / "state" / "2.0"
    chunk.write_bytes(chunk.read_bytes()[:10])  # episode 2: cut chunk
    codec_root = tmp_path_factory.mktemp("zarr-codec") / "jpegxl.zarr"
    write_buffer(codec_root, {k: v for k, v in buffer_values().items() if k in ("state", "action", "wrist")}, ENDS)
    meta_path = codec_root / "data" / "wrist" / ".zarray"
    doc = json.loads(meta_path.read_text())
    doc["compressor"] = {"id": "imagecodecs_jpegxl", "level": 90}
    meta_path.write_text(json.dumps(doc))
    return (ingest(root, tmp_path_factory.mktemp("zarr-bad-store")),
            ingest(codec_root, tmp_path_factory.mktemp("zarr-codec-store")))


@pytest.mark.parametrize(("key", "field", "words"), [
    ("1", "data/state", "chunks absent for rows 4..7"),
    ("2", "data/state", "unreadable chunk data"),
    ("3", "data/action", "shape mismatch"),
])
def test_bad_input_is_quarantined(bad, key, field, words):
    report, _, metas = bad[0]
    assert_quarantined(report, key, file_part="bad.zarr", field=field, words=words, metas=metas)
    assert set(metas) == {"0"}


def test_unknown_codec_is_named(bad):
    report, _, metas = bad[1]
    assert not metas and not report.version_id and len(report.quarantined) == 3
    assert_quarantined(report, "0", file_part="jpegxl.zarr", field="data/wrist", words="imagecodecs_jpegxl",
                       metas=metas)
    assert "pip install imagecodecs" in report.quarantined[0]["reason"]


def test_zip_store(tmp_path):
    values = {k: v for k, v in buffer_values().items() if k in ("state", "action", "wrist")}
    path = tmp_path / "buffer.zarr.zip"
    store = zarr.storage.ZipStore(str(path), mode="w")
    group = zarr.open_group(store, mode="w", zarr_format=2)
    for key, array in values.items():
        group.create_array(f"data/{key}", shape=array.shape, dtype=array.dtype, chunks=(4, *array.shape[1:]))[:] = array
    group.create_array("meta/episode_ends", shape=ENDS.shape, dtype=np.int64, chunks=ENDS.shape)[:] = ENDS
    store.close()
    assert detect_format(str(path)) == "zarr_replay"
    connector = get_connector("zarr_replay")
    refs = connector.discover(str(path)).refs
    assert [r.key for r in refs] == ["0", "1", "2"]
    episode = connector.read(refs[1])
    assert np.array_equal(episode.steps.state, values["state"][5:12])
    frames = list(episode.videos["wrist"].frames())
    assert all(np.array_equal(a, b) for a, b in zip(frames, values["wrist"][5:12], strict=True))
    assert connector.checksum(refs[1]) != connector.checksum(refs[2])


def test_zarr_v3_layout_and_its_chunk_keys(tmp_path):
    path = tmp_path / "v3.zarr"
    values = buffer_values()
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for key in ("state", "wrist"):
        array = values[key]
        group.create_array(f"data/{key}", shape=array.shape, dtype=array.dtype, chunks=(4, *array.shape[1:]))[:] = array
    group.create_array("meta/episode_ends", shape=ENDS.shape, dtype=np.int64, chunks=ENDS.shape)[:] = ENDS
    (path / "data" / "wrist" / "c" / "3" / "0" / "0" / "0").unlink()  # v3 default keys: c/<i>/<j>/...
    connector = get_connector("zarr_replay")
    discovery = connector.discover(str(path))
    assert [r.key for r in discovery.refs] == ["0", "1"]
    assert "rows 12..15" in dict(discovery.missing)["2"]
    episode = connector.read(discovery.refs[1])
    assert np.array_equal(episode.steps.state, values["state"][5:12])
    frames = list(episode.videos["wrist"].frames())
    assert all(np.array_equal(a, b) for a, b in zip(frames, values["wrist"][5:12], strict=True))
