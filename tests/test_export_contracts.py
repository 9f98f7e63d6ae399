"""LeRobot v2.1 exports opened the way LeRobot (also at openpi's pinned commit) and GR00T open them.

The readers' facts live in tests/consumer_readers.py (re-implemented from their source). On GR00T's
own demo: GR00T demo -> ingest -> v2.1 export keeps every source column's values and dtype, copies
the videos byte for byte, pairs the same frames from its own timestamps, and ingests back equal.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.export import ExportConfig, export_lerobot
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from pipeline.video import probe_video
from schemas import table_to_metas
from tests.conftest import LEROBOT_V20, LEROBOT_V21, LEROBOT_V30
from tests.consumer_readers import (
    GR00T_STAT_KEYS,
    gr00t_trajectory,
    lerobot_video_path,
    nearest_frames,
    open_gr00t,
    open_lerobot_v21,
    video_frame_times,
)
from tests.helpers import lerobot_source_episodes

SOURCES = {"gr00t": LEROBOT_V20, "unitree": LEROBOT_V21, "aloha": LEROBOT_V30}
DEMO_VIDEO = "observation.images.ego_view"


def _metas(store: EpisodeStore) -> list:
    return sorted(table_to_metas(load_catalog(store, resolve(store, "latest")[1])), key=lambda m: int(m.source_key))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ray_session):
    """Each real LeRobot sample ingested and exported as v2.1: name -> (store, export root, report)."""
    from jobs.ingest import run_ingest

    out = {}
    for name, path in SOURCES.items():
        root = tmp_path_factory.mktemp(f"contract-{name}")
        assert not run_ingest(str(path), str(root / "store")).quarantined
        store = EpisodeStore(str(root / "store"))
        report = export_lerobot(store, resolve(store, "latest")[1], str(root / "v21"), ExportConfig(layout="v2.1"))
        out[name] = (store, root / "v21", report)
    return out


@pytest.mark.parametrize("name", list(SOURCES))
def test_lerobot_v21_reader_opens_the_export(exported, name):
    store, root, _ = exported[name]
    dataset = open_lerobot_v21(root)
    info = dataset["info"]
    assert info["codebase_version"] == "v2.1"
    metas = _metas(store)
    assert [e["length"] for e in dataset["episodes"].values()] == [m.num_steps for m in metas]
    for key, feature in info["features"].items():
        if feature["dtype"] != "video":
            continue
        assert feature["names"] == ["height", "width", "channels"] and "video_info" not in feature
        assert set(feature["info"]) == {"video.fps", "video.height", "video.width", "video.channels", "video.codec",
                                        "video.pix_fmt", "video.is_depth_map", "has_audio"}
        assert feature["shape"] == (feature["info"]["video.height"], feature["info"]["video.width"], 3)
        for episode in dataset["episodes"]:  # video.codec names the codec of the files written
            path = lerobot_video_path(dataset, root, episode, key)
            assert probe_video(str(path), lambda path=path: open(path, "rb")).codec == feature["info"]["video.codec"]
    stats = json.loads((root / "meta/stats.json").read_text())
    for entry in stats.values():  # per-dimension arrays only: counts live in episodes_stats.jsonl
        assert set(entry) == set(GR00T_STAT_KEYS)


def test_every_column_is_a_feature_in_the_dtype_written(exported):
    _, root, _ = exported["gr00t"]
    info = json.loads((root / "meta/info.json").read_text())
    table = pq.read_table(root / "data/chunk-000/episode_000000.parquet")
    written = {f.name: f.type for f in table.schema}
    assert set(written) == {k for k, f in info["features"].items() if f["dtype"] != "video"}
    assert {k: info["features"][k]["dtype"] for k in ("timestamp", "next.reward", "next.done", "task_index",
                                                      "index", "annotation.human.validity",
                                                      "annotation.human.action.task_description")} == {
        "timestamp": "float64", "next.reward": "float64", "next.done": "bool", "task_index": "int64",
        "index": "int64", "annotation.human.validity": "int64", "annotation.human.action.task_description": "int64"}
    assert info["features"]["observation.state"] == {"dtype": "float64", "shape": [44],
                                                     "names": [f"motor_{i}" for i in range(44)]}


def test_gr00t_reader_opens_the_demo_export_with_the_source_groups(exported):
    _, root, _ = exported["gr00t"]
    dataset = open_gr00t(root)
    source_modality = json.loads((LEROBOT_V20 / "meta/modality.json").read_text())
    assert dataset["modality"]["state"] == source_modality["state"]
    assert dataset["modality"]["action"] == source_modality["action"]
    assert dataset["modality"]["video"] == source_modality["video"]
    assert dataset["modality"]["annotation"] == source_modality["annotation"]  # every source annotation, by name
    assert dataset["simplified"]["video"]["ego_view"] == {"resolution": [256, 256], "channels": 3, "fps": 20,
                                                          "original_key": DEMO_VIDEO}
    assert len(dataset["stats"]["state"]["left_arm"]["q01"]) == 7  # GR00T slices each entry by its groups
    source = lerobot_source_episodes(LEROBOT_V20)
    tasks = {json.loads(line)["task_index"]: json.loads(line)["task"]
             for line in (LEROBOT_V20 / "meta/tasks.jsonl").read_text().splitlines()}
    for episode in range(5):
        got = gr00t_trajectory(dataset, root, episode)
        table = source[episode]["table"]
        for subkey, column in (("human.action.task_description", "annotation.human.action.task_description"),
                               ("human.validity", "annotation.human.validity"),
                               ("human.coarse_action", "annotation.human.action.task_description")):
            assert got["language"][subkey] == [tasks[i] for i in table.column(column).to_pylist()]
        assert np.array_equal(got["state"]["right_hand"], source[episode]["state"][:, 29:35])


def test_gr00t_reader_opens_exports_of_plain_lerobot_data(exported):
    for name in ("unitree", "aloha"):
        _, root, _ = exported[name]
        dataset = open_gr00t(root)
        assert dataset["annotation"] == {"human.task_description": {"original_key": "task_index"}}
        for episode in range(len(dataset["episodes"])):
            got = gr00t_trajectory(dataset, root, episode)
            assert all(len(texts) == dataset["episodes"][episode]["length"] for texts in got["language"].values())


def test_gr00t_demo_columns_timestamps_and_videos_equal_the_source(exported):
    _, root, report = exported["gr00t"]
    assert report.videos == {"copy": 5}
    assert sum("have no ego_view frame" in w for w in report.warnings) == 5
    for episode in range(5):
        name = f"chunk-000/episode_{episode:06d}"
        source = pq.read_table(LEROBOT_V20 / f"data/{name}.parquet")
        out = pq.read_table(root / f"data/{name}.parquet")
        for column in source.column_names:
            a, b = source.column(column).combine_chunks(), out.column(column).combine_chunks()
            if hasattr(a.type, "value_type"):
                assert a.type.value_type == b.type.value_type, column
                a, b = a.flatten(), b.flatten()
            assert a.type == b.type and a.equals(b), column  # values and dtype, timestamps bit for bit
        src_video = LEROBOT_V20 / f"videos/chunk-000/{DEMO_VIDEO}/episode_{episode:06d}.mp4"
        out_video = root / f"videos/chunk-000/{DEMO_VIDEO}/episode_{episode:06d}.mp4"
        assert out_video.read_bytes() == src_video.read_bytes()
        # re-read with its own timestamps, the export pairs every step with the source's frame
        source_pairs = nearest_frames(source.column("timestamp").to_numpy(), video_frame_times(src_video))
        export_pairs = nearest_frames(out.column("timestamp").to_numpy(), video_frame_times(out_video))
        assert np.array_equal(export_pairs, source_pairs)
        assert source_pairs[0] == 1 and source_pairs[-1] == -1  # 0.05 s offset: frame i + 1, last step none


def test_gr00t_demo_export_ingests_back_equal(exported, tmp_path, ray_session):
    from jobs.ingest import run_ingest

    store, root, _ = exported["gr00t"]
    assert not run_ingest(str(root), str(tmp_path / "back")).quarantined
    back = EpisodeStore(str(tmp_path / "back"))
    for a, b in zip(_metas(store), _metas(back), strict=True):
        steps_a, steps_b = store.read_steps(a), back.read_steps(b)
        for field in ("timestamp_ns", "state", "action", "task_index", "reward", "is_terminal"):
            assert np.array_equal(getattr(steps_a, field), getattr(steps_b, field)), field
        assert steps_a.state.dtype == steps_b.state.dtype == np.float64
        assert steps_a.frame_index.keys() == steps_b.frame_index.keys()
        assert all(np.array_equal(steps_a.frame_index[c], steps_b.frame_index[c]) for c in steps_a.frame_index)
        assert steps_a.extras.keys() == steps_b.extras.keys()
        assert all(np.array_equal(steps_a.extras[k], steps_b.extras[k]) for k in steps_a.extras)
        assert [a.tasks[i] for i in steps_a.task_index] == [b.tasks[i] for i in steps_b.task_index]
        assert [c.video_sha256 for c in a.cameras] == [c.video_sha256 for c in b.cameras]
        assert a.extras["lerobot.modality"] == b.extras["lerobot.modality"]


def test_modality_file_overrides_the_source_groups(exported, tmp_path):
    from jobs.cli import app

    store, _, _ = exported["gr00t"]
    groups = {"state": {"arms": {"start": 0, "end": 44, "absolute": True, "rotation_type": None}},
              "action": {"arms": {"start": 0, "end": 44, "absolute": False}}}
    (tmp_path / "modality.json").write_text(json.dumps(groups))
    result = CliRunner().invoke(app, ["versions", "export", "latest", str(tmp_path / "out"), "--store", str(store.root),
                                      "--layout", "v2.1", "--modality", str(tmp_path / "modality.json")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out/meta/modality.json").read_text())
    assert written["state"] == groups["state"] and written["action"] == groups["action"]
    assert written["video"] == {"ego_view": {"original_key": DEMO_VIDEO}}  # not given: still the source's
    assert open_gr00t(tmp_path / "out")["stats"]["action"]["arms"]["mean"]
    (tmp_path / "bad.json").write_text('{"state": [1]}')
    bad = CliRunner().invoke(app, ["versions", "export", "latest", str(tmp_path / "out2"), "--store",
                                   str(store.root), "--modality", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "--modality" in bad.output and not (tmp_path / "out2").exists()
