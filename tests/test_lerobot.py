"""LeRobot v2.0 / v2.1 / v3.0 -> store: every value exact, in the source dtype; quirks reported, not fatal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from connectors import DatasetError, get_connector
from connectors.base import SourceError
from connectors.fsutil import join_inside
from connectors.lerobot.layout import format_template
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import make_episode_id, table_to_metas
from tests.conftest import LEROBOT_V20, LEROBOT_V21, LEROBOT_V30
from tests.helpers import decode_all_frames, lerobot_source_episodes

SOURCES = {"v2.0": LEROBOT_V20, "v2.1": LEROBOT_V21, "v3.0": LEROBOT_V30}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, ray_session):
    from jobs.ingest import run_ingest

    out = {}
    for name, path in SOURCES.items():
        store = tmp_path_factory.mktemp(f"store-{name}")
        out[name] = (store, run_ingest(str(path), str(store)))
    return out


def _metas(store):
    s = EpisodeStore(str(store))
    _, manifest = resolve(s, "latest")
    return s, table_to_metas(load_catalog(s, manifest))


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_state_and_action_is_stored_exactly_in_source_dtype(ingested, name):
    store, report = ingested[name]
    source = lerobot_source_episodes(SOURCES[name])
    s, metas = _metas(store)
    assert len(metas) == len(source) and not report.quarantined
    dataset = metas[0].dataset
    for index, expected in source.items():
        meta = next(m for m in metas if m.episode_id == make_episode_id(dataset, str(index)))
        steps = s.read_steps(meta)
        assert steps.state.dtype == expected["state"].dtype and steps.action.dtype == expected["action"].dtype
        assert np.array_equal(steps.state, expected["state"]) and np.array_equal(steps.action, expected["action"])
        assert meta.num_steps == len(expected["state"])
        seconds = expected["table"].column("timestamp").to_numpy()
        assert np.array_equal(steps.timestamp_ns, np.rint(seconds.astype(np.float64) * 1e9).astype(np.int64))
        # Integer ns cannot carry GR00T's float64 seconds bit for bit: those are kept as they are too.
        assert np.array_equal(steps.extras.get("timestamp", seconds), seconds) and seconds.dtype == (
            np.float64 if name == "v2.0" else np.float32)
        shift = 1 if name == "v2.0" else 0  # GR00T's demo: timestamps start at 0.05 s, step i -> frame i + 1
        for cam in meta.cameras:
            assert cam.num_frames == meta.num_steps
            pairing = np.arange(shift, meta.num_steps + shift)
            pairing[pairing >= meta.num_steps] = -1
            assert np.array_equal(steps.frame_index[cam.name], pairing)


def test_gr00t_v20_quirks(ingested):
    store, report = ingested["v2.0"]
    assert any("observation.images.egoview" in w and "skipped" in w for w in report.warnings)
    assert any("camera ego_view" in w and "offset from the video by +1 frame(s) in 5 episode(s)" in w
               for w in report.warnings)
    assert any("camera ego_view: 5 step(s) in 5 episode(s) have no frame" in w for w in report.warnings)
    s, metas = _metas(store)
    assert {c.name for m in metas for c in m.cameras} == {"ego_view"}
    assert [m.num_steps for m in sorted(metas, key=lambda m: int(m.source_key))] == [416, 470, 470, 412, 328]
    assert all(m.state_dtype == "float64" and len(m.state_names) == 44 for m in metas)
    tasks = {int(json.loads(line)["task_index"]): json.loads(line)["task"]
             for line in (LEROBOT_V20 / "meta/tasks.jsonl").read_text().splitlines()}
    source = lerobot_source_episodes(LEROBOT_V20)
    for meta in metas:
        table = source[int(meta.source_key)]["table"]
        steps = s.read_steps(meta)
        wanted = [tasks[i] for i in table.column("annotation.human.action.task_description").to_pylist()]
        assert [meta.tasks[i] for i in steps.task_index] == wanted  # GR00T annotation -> per-step instruction
        validity = [tasks[i] for i in table.column("annotation.human.validity").to_pylist()]
        assert [meta.tasks[i] for i in steps.extras["annotation.human.validity"]] == validity
        # the instruction column is kept under its own name too (GR00T reads annotations by name)
        assert [meta.tasks[i] for i in steps.extras["annotation.human.action.task_description"]] == wanted
        source_modality = json.loads((LEROBOT_V20 / "meta/modality.json").read_text())
        assert json.loads(meta.extras["lerobot.modality"]) == source_modality
        assert meta.extras["lerobot.dtype.timestamp"] == meta.extras["lerobot.dtype.next.reward"] == "float64"
        assert meta.extras["lerobot.timestamp_offset_ns"] == "49999952"  # timestamps start at 0.05 s
        assert steps.is_terminal[-1] and not steps.is_terminal[:-1].any()  # next.done
        assert steps.reward[-1] == 1.0


def test_v21_partial_copy_reports_the_99_missing_episodes(ingested):
    store, report = ingested["v2.1"]
    assert report.episodes_in == 1 and report.stored + report.reused == 1
    assert len(report.missing) == 99 and all("does not exist" in m["reason"] for m in report.missing)
    _, (meta,) = _metas(store)
    assert meta.cameras[0].codec == "av1" and (meta.cameras[0].width, meta.cameras[0].height) == (640, 480)
    assert meta.state_names[0] == "kLeftShoulderPitch"  # nested [[...]] names flattened


def test_v30_reference_episodes_point_into_shared_files(ingested):
    store, _ = ingested["v3.0"]
    s, metas = _metas(store)
    by_index = {int(m.source_key): m for m in metas}
    assert [by_index[i].cameras[0].frame_start for i in range(3)] == [0, 45, 90]
    assert [by_index[i].tasks for i in range(3)] == [["task 0"], ["task 1"], ["task 2"]]
    assert len({c.video_sha256 for m in metas for c in m.cameras}) == 2  # one object per shared file
    frames = decode_all_frames(s.objects.abspath(by_index[1].camera("top").video_path))
    source = decode_all_frames(LEROBOT_V30 / "videos/observation.images.top/chunk-000/file-000.mp4")
    assert len(frames) == 135 and all(np.array_equal(a, b) for a, b in zip(frames, source, strict=True))


def test_missing_info_json_is_a_dataset_error(tmp_path):
    (tmp_path / "meta").mkdir()
    with pytest.raises(DatasetError, match=r"meta/info\.json"):
        get_connector("lerobot").discover(str(tmp_path))


def test_paths_from_metadata_cannot_escape_the_root(tmp_path):
    with pytest.raises(SourceError, match="escapes"):
        join_inside(str(tmp_path), "../../etc/passwd")
    with pytest.raises(SourceError):
        join_inside(str(tmp_path), "/etc/passwd")
    with pytest.raises(DatasetError, match="unsupported field"):
        format_template("data/{episode_index.__class__}", episode_index=1)
    assert format_template("data/chunk-{episode_chunk:03d}/e_{episode_index:06d}.parquet", episode_chunk=1,
                           episode_index=42) == "data/chunk-001/e_000042.parquet"
