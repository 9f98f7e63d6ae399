"""Video-folder connector: videos + JSON/CSV/Parquet sidecars written here, the public clip layouts, bad input."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction

import av
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from connectors import detect_format, get_connector
from pipeline.video import encode_frames
from schemas import index_to_ns
from tests.conftest import REAL
from tests.connector_helpers import assert_quarantined, ingest, smooth_image

VPP = REAL / "video_with_json" / "vpp-rt1-bridge-clips"
IRASIM = REAL / "video_with_json" / "irasim-languagetable-example"
H, W = 32, 48


def write_video(path, count: int, fps: int, seed: int, codec_container: str = "mp4") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec_container == "mkv":
        with av.open(str(path), "w", format="matroska") as container:
            stream = container.add_stream("ffv1", rate=fps)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
            for i in range(count):
                for packet in stream.encode(av.VideoFrame.from_ndarray(smooth_image(H, W, seed + i), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path.read_bytes()
    data, _ = encode_frames((smooth_image(H, W, seed + i) for i in range(count)), Fraction(fps), W, H)
    path.write_bytes(data)
    return data


def values(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"state": rng.normal(size=(n, 3)), "action": rng.normal(size=(n, 2)), "gripper": rng.uniform(size=n)}


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("clips") / "clips"
    expected = {}
    # JSON beside <stem>_<camera>.mp4; the front camera runs at twice the control rate.
    a = values(1, 6)
    json_doc = {"timestamps": [0.1 * i for i in range(6)], "state": a["state"].tolist(), "action": a["action"].tolist(),
                "gripper": a["gripper"].tolist(), "instruction": "stack the cups", "operator": "station-3"}
    root.mkdir(parents=True)
    (root / "ep_a.json").write_text(json.dumps(json_doc))
    expected["ep_a.json"] = (a, {"front": write_video(root / "ep_a_front.mp4", 12, 20, 10),
                                 "wrist": write_video(root / "ep_a_wrist.mp4", 6, 10, 20)})
    # CSV with numbered columns beside a folder of camera videos.
    b = values(2, 5)
    columns = {"timestamp": [0.1 * i for i in range(5)], "instruction": ["open the drawer"] * 5}
    columns.update({f"state_{i}": b["state"][:, i] for i in range(3)})
    columns.update({f"action.{i}": b["action"][:, i] for i in range(2)})
    columns["gripper"] = b["gripper"]
    pacsv.write_csv(pa.table(columns), str(root / "ep_b.csv"))
    expected["ep_b.csv"] = (b, {"front": write_video(root / "ep_b" / "front.mp4", 5, 10, 30),
                                "wrist": write_video(root / "ep_b" / "wrist.mp4", 5, 10, 40)})
    # Parquet with list columns, in a clip-set layout: annotation/<split>/<n> names videos/<split>/<n>/rgb.mp4.
    c = values(3, 4)
    table = pa.table({"state": pa.array(c["state"].tolist(), pa.list_(pa.float64(), 3)),
                      "action": pa.array([*c["action"][:3].tolist(), [np.nan, np.nan]], pa.list_(pa.float64(), 2)),
                      "gripper": c["gripper"], "video_path": ["videos/val/7/rgb.mp4"] * 4})
    (root / "annotation" / "val").mkdir(parents=True)
    pq.write_table(table, root / "annotation" / "val" / "7.parquet")
    expected["annotation/val/7.parquet"] = (c, {"rgb": write_video(root / "videos" / "val" / "7" / "rgb.mp4", 4, 10,
                                                                   50)})
    report, store, metas = ingest(root, tmp_path_factory.mktemp("clips-store"), options={"fps": 10})
    return root, expected, report, store, metas


def test_values_land_exactly_and_videos_are_copied(clips):
    root, expected, report, store, metas = clips
    assert detect_format(str(root)) == "video_folder"
    assert report.stored == 3 and not report.quarantined, report.quarantined
    for key, (vals, videos) in expected.items():
        meta = metas[key]
        steps = store.read_steps(meta)
        n = vals["state"].shape[0]
        assert meta.num_steps == n and meta.control_fps == 10
        assert np.array_equal(steps.state, vals["state"])
        assert np.array_equal(steps.extras["gripper"], vals["gripper"])
        assert np.array_equal(steps.timestamp_ns, index_to_ns(np.arange(n), Fraction(10)))
        for camera, data in videos.items():
            cam = meta.camera(camera)
            assert cam.video_sha256 == hashlib.sha256(data).hexdigest() and cam.encoding == "source"
        if key == "annotation/val/7.parquet":
            assert meta.split == "val"
            assert np.array_equal(steps.action[:3], vals["action"][:3])
            assert steps.action_valid.tolist() == [True, True, True, False]  # the sidecar left it empty (NaN)
        else:
            assert np.array_equal(steps.action, vals["action"]) and steps.action_valid.all()
    a = metas["ep_a.json"]
    assert a.tasks == ["stack the cups"] and a.extras["sidecar.operator"] == "station-3"
    frame_index = store.read_steps(a).frame_index
    assert frame_index["front"].tolist() == [0, 2, 4, 6, 8, 10]  # 20 fps video, 10 Hz steps: nearest frame
    assert frame_index["wrist"].tolist() == list(range(6))
    assert metas["ep_b.csv"].tasks == ["open the drawer"]
    assert store.read_steps(metas["ep_b.csv"]).task_index.tolist() == [0] * 5


def test_real_vpp_clips_counts_and_values(tmp_path, ray_session):
    report, store, metas = ingest(VPP, tmp_path / "store")
    assert report.stored == 2 and not report.quarantined
    for key, video in (("rt1/annotation/val/1.json", "rt1/videos/val/1/rgb.mp4"),
                       ("bridge/annotation/val/10.json", "bridge/videos/val/10/rgb.mp4")):
        doc = json.loads((VPP / key).read_text())
        with av.open(str(VPP / video)) as container:
            decoded = sum(1 for _ in container.decode(video=0))
        meta = metas[key]
        steps = store.read_steps(meta)
        assert meta.num_steps == len(doc["state"]) == decoded and meta.camera("rgb").num_frames == decoded
        assert meta.control_fps == 3 and meta.tasks == doc["texts"] and meta.split == "val"
        assert meta.extras["sidecar.episode_id"] == doc["episode_id"]
        assert np.array_equal(steps.state, np.asarray(doc["state"], np.float64))
        assert np.array_equal(steps.action[:-1], np.asarray(doc["action"], np.float64))
        assert steps.action_valid.tolist() == [True] * (decoded - 1) + [False]  # T-1 transitions
        npy = np.load(VPP / video.replace("rgb.mp4", "state.npy"), allow_pickle=False)
        assert np.array_equal(steps.extras["npy.state"], npy)
    assert metas["rt1/annotation/val/1.json"].num_steps == 57 and metas["bridge/annotation/val/10.json"].num_steps == 24


def test_real_irasim_clip():
    connector = get_connector("video_folder")
    assert detect_format(str(IRASIM)) == "video_folder"
    refs = connector.discover(str(IRASIM)).refs
    assert [r.key for r in refs] == ["annotation/test/example.json"]
    episode = connector.read(refs[0])
    doc = json.loads((IRASIM / "annotation" / "test" / "example.json").read_text())
    assert episode.meta.num_steps == 18 == len(doc["actions"]) + 1 and episode.meta.control_fps == 4
    assert [c.name for c in episode.meta.cameras] == ["video"] and episode.meta.cameras[0].num_frames == 18
    assert np.array_equal(episode.steps.action[:17], np.asarray(doc["actions"]))
    assert not episode.steps.action_valid[17] and np.isnan(episode.steps.action[17]).all()
    assert episode.meta.tasks == [] and episode.meta.state_names == []  # none recorded: nothing invented
    assert episode.meta.extras["sidecar.episode_id"] == "000027"


@pytest.fixture(scope="module")
def bad(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("clips-bad") / "bad_clips"
    root.mkdir()
    for name in ("good", "cut", "dangling", "short", "mkv"):
        (root / f"{name}.json").write_text(json.dumps({"state": values(1, 5)["state"].tolist()}))
    write_video(root / "good.mp4", 5, 10, 0)
    data = write_video(root / "cut.mp4", 5, 10, 0)
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    (root / "dangling.json").write_text(json.dumps({"state": [[0.0]] * 5, "video_path": "videos/nowhere.mp4"}))
    write_video(root / "short.mp4", 3, 10, 0)
    write_video(root / "mkv.mkv", 5, 10, 0, codec_container="mkv")
    return ingest(root, tmp_path_factory.mktemp("clips-bad-store"))


@pytest.mark.parametrize(("key", "file_part", "field", "words"), [
    ("cut.json", "cut.mp4", "cut.mp4", "truncated or corrupt"),
    ("dangling.json", "dangling.json", "video_path", "not under the dataset root"),
    ("short.json", "short.json", "short.mp4", "shape mismatch"),
    ("mkv.json", "mkv.mkv", "cameras.video", "not MP4"),
])
def test_bad_input_is_quarantined(bad, key, file_part, field, words):
    report, _, metas = bad
    assert_quarantined(report, key, file_part=file_part, field=field, words=words, metas=metas, dataset="bad_clips")
    assert set(metas) == {"good.json"}
