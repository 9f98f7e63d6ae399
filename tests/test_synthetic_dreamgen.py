"""DreamGen-style LeRobot datasets: inverse-dynamics actions, placeholder state, the 8-vs-16 fps quirk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from connectors import detect_format, get_connector
from connectors.base import SourceError
from jobs.ingest import run_ingest
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas
from tests.helpers import lerobot_source_episodes
from tests.synthetic_helpers import dreamgen_dataset, small_dataset

OPTIONS = {"labeler_model_id": "nvidia/gr00t-idm-gr1", "labeler_checkpoint_sha": "f00d",
           "generator_model_id": "cosmos-predict2-14b", "generator_task": "image2world"}


def test_dreamgen_dataset_becomes_honest_synthetic_episodes(tmp_path, ray_session):
    source = dreamgen_dataset(tmp_path / "dreams")
    assert detect_format(str(source)) == "dreamgen"
    found = get_connector("dreamgen").discover(str(source), OPTIONS)
    assert any("fps 8" in w and "using 16" in w for w in found.warnings)
    report = run_ingest(str(source), str(tmp_path / "store"), format="dreamgen", options=OPTIONS)
    assert report.stored == 3 and not report.quarantined
    store = EpisodeStore(str(tmp_path / "store"))
    metas = table_to_metas(load_catalog(store, resolve(store, "latest")[1]))
    raw = lerobot_source_episodes(source)
    tasks = {json.loads(line)["task"] for line in (source / "meta/tasks.jsonl").read_text().splitlines()}
    for meta in metas:
        lineage = meta.lineage
        assert (meta.kind, meta.source_format, meta.control_fps) == ("synthetic", "dreamgen", 16)
        assert (lineage.action_source, lineage.state_source) == ("inverse_dynamics", "none")
        assert (meta.action_source, meta.state_source) == ("inverse_dynamics", "none")
        assert (lineage.labeler.model_id, lineage.labeler.checkpoint_sha) == ("nvidia/gr00t-idm-gr1", "f00d")
        assert (lineage.generator.model_id, lineage.generator.task) == ("cosmos-predict2-14b", "image2world")
        assert meta.extras["dreamgen.declared_fps"] == "8" and meta.extras["dreamgen.task_prefix"] == "<DREAM>"
        assert all("<DREAM>" + t in tasks for t in meta.tasks) and lineage.prompt == meta.tasks[0]
        steps = store.read_steps(meta)
        source_rows = raw[int(meta.source_key)]
        np.testing.assert_array_equal(steps.action, source_rows["action"])  # the IDM's actions, bit for bit
        assert not steps.state_valid.any() and np.isnan(steps.state).all()  # placeholder zeros: masked, stored as NaN
        assert steps.action_valid.all()
        assert steps.timestamp_ns[1] == 62_500_000  # 1/16 s, not 1/8


def test_plain_lerobot_datasets_still_read_as_lerobot(tmp_path):
    source = small_dataset(tmp_path / "real")
    assert detect_format(str(source)) == "lerobot"
    dreams = dreamgen_dataset(tmp_path / "dreams")
    ref = get_connector("lerobot").discover(str(dreams)).refs[0]
    with pytest.raises(SourceError) as error:  # the LeRobot connector is unchanged: it trusts info.json's fps
        get_connector("lerobot").read(ref)
    assert error.value.field == "timestamp"


def test_explicit_fps_and_kept_state(tmp_path):
    source = dreamgen_dataset(tmp_path / "dreams")
    connector = get_connector("dreamgen")
    found = connector.discover(str(source), {"fps": 8})
    with pytest.raises(SourceError) as error:  # an explicit fps is trusted, so the 1/16 s timestamps drift
        connector.read(found.refs[0])
    assert error.value.field == "timestamp"
    found = connector.discover(str(source), {"state_source": "estimated", "keep_task_prefix": True})
    episode = connector.read(found.refs[0])
    assert episode.steps.state_valid is None or episode.steps.state_valid.all()
    assert episode.meta.state_source == "estimated" and episode.meta.tasks[0].startswith("<DREAM>")
    assert episode.meta.lineage.labeler is None and episode.meta.lineage.generator is None


# ---------------------------------------------------------------- GR00T-Dreams output as its scripts write it


@pytest.mark.parametrize(("embodiment", "tag", "width"), [("so100", "so100", 6),
                                                          ("robocasa", "robocasa_panda_omron", 12)])
def test_gr00t_dreams_output_ingests_as_written(tmp_path, ray_session, embodiment, tag, width):
    import pyarrow.parquet as pq

    from tests.gr00t_dreams import ANNOTATION_SOURCE, MODALITY, gr00t_dreams_dataset

    source, idm = gr00t_dreams_dataset(tmp_path / "dreams", embodiment, frames=40)
    info = json.loads((source / "meta/info.json").read_text())
    assert "codebase_version" not in info and info["fps"] == 8 and info["robot_type"] == "dream"  # the quirks
    assert pq.read_schema(source / "data/chunk-000/episode_000000.parquet").field("action").type.value_type == "double"
    assert detect_format(str(source)) == "dreamgen"
    found = get_connector("dreamgen").discover(str(source))
    assert any("fps 8" in w and "using 16" in w for w in found.warnings)
    assert any(f"action shape [44] but the rows hold {width} values" in w for w in found.warnings)
    report = run_ingest(str(source), str(tmp_path / "store"), format="dreamgen")
    assert report.stored == 2 and not report.quarantined
    store = EpisodeStore(str(tmp_path / "store"))
    metas = sorted(table_to_metas(load_catalog(store, resolve(store, "latest")[1])), key=lambda m: int(m.source_key))
    annotation = f"annotation.{ANNOTATION_SOURCE[embodiment]}"
    prompts = ["pick up the red cube", "put the cube in the bowl"]
    groups = sorted(MODALITY[embodiment]["action"].items(), key=lambda g: g[1]["start"])
    names = [n if g["end"] - g["start"] == 1 else f"{n}_{i}" for n, g in groups for i in range(g["end"] - g["start"])]
    for meta in metas:
        steps = store.read_steps(meta)
        assert (meta.embodiment, meta.extras["dreamgen.embodiment_from"]) == (tag, "modality.json")
        assert (meta.kind, meta.control_fps, meta.num_steps, meta.action_dtype) == ("synthetic", 16, 40, "float64")
        assert meta.action_names == names and len(meta.state_names) == 44 and meta.state_dtype == "float32"
        assert meta.extras["dreamgen.declared_fps"] == "8"
        assert meta.extras["dreamgen.declared_shape.action"] == "[44]"
        np.testing.assert_array_equal(steps.action, idm[int(meta.source_key)])  # the IDM's float64, bit for bit
        assert steps.action.shape == (40, width)
        assert np.isnan(steps.state).all() and not steps.state_valid.any() and meta.state_source == "none"  # masked
        assert steps.timestamp_ns.tolist() == [i * 62_500_000 for i in range(40)]
        assert meta.tasks == [prompts[int(meta.source_key)]]  # <DREAM> moved to extras
        assert steps.task_index.tolist() == [0] * 40 and steps.extras[annotation].tolist() == [0] * 40
        (camera,) = meta.cameras
        assert (camera.width, camera.height, camera.num_frames, camera.fps) == (256, 256, 40, 16)
        assert camera.source_key == next(iter(MODALITY[embodiment]["video"].values()))["original_key"]
        assert steps.frame_index[camera.name].tolist() == list(range(40))


def test_gr00t_dreams_embodiment_from_option_or_folder(tmp_path):
    from tests.gr00t_dreams import gr00t_dreams_dataset

    source, _ = gr00t_dreams_dataset(tmp_path / "dreams", "gr1", prompts=("wave",), frames=12)
    connector = get_connector("dreamgen")
    found = connector.discover(str(source), {"embodiment": "gr1_custom"})
    episode = connector.read(found.refs[0])
    assert episode.meta.embodiment == "gr1_custom" and episode.meta.extras["dreamgen.embodiment_from"] == "option"
    assert episode.steps.action.shape == (12, 44)  # gr1: as wide as declared, no width warning
    assert not any("rows hold" in w for w in found.warnings)
    (source / "meta/modality.json").unlink()  # no metadata: dump_idm_actions' own rule, the folder's prefix
    found = connector.discover(str(source))
    episode = connector.read(found.refs[0])
    assert episode.meta.embodiment == "gr1_unified" and episode.meta.extras["dreamgen.embodiment_from"] == "folder name"
    assert episode.meta.action_names == [f"motor_{i}" for i in range(44)]  # info.json's names fit the width


def test_gr00t_dreams_bad_annotation_cells_name_the_column(tmp_path):
    import pandas as pd

    from tests.gr00t_dreams import gr00t_dreams_dataset

    source, _ = gr00t_dreams_dataset(tmp_path / "dreams", "so100", prompts=("wave",), frames=8)
    path = source / "data/chunk-000/episode_000000.parquet"
    frame = pd.read_parquet(path)
    frame["annotation.human.task_description"] = [[0, 0]] * len(frame)  # two indices per cell
    frame.to_parquet(path)
    connector = get_connector("dreamgen")
    with pytest.raises(SourceError) as error:
        connector.read(connector.discover(str(source)).refs[0])
    assert error.value.field == "annotation.human.task_description" and "one task index per row" in str(error.value)
