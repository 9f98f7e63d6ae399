"""Format registry, detection of every real sample, and connector options from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from connectors import DatasetError, detect_format, formats
from jobs.cli import app
from jobs.ingest import load_options
from tests.conftest import LEROBOT_V20, LEROBOT_V21, REAL

SAMPLES = {
    "rlds": REAL / "rlds_tfds" / "octo-bridge-debug" / "bridge_dataset",
    "robomimic_hdf5": REAL / "hdf5_robosuite" / "robosuite-v1.0-lift-panda",
    "ros": REAL / "mcap" / "labelbox-franka-teach-vr",
    "zarr_replay": REAL / "zarr" / "pusht-cchi-v7-replay" / "pusht_cchi_v7_replay.zarr",
    "video_folder": REAL / "video_with_json" / "vpp-rt1-bridge-clips",
}


def test_registry_lists_every_family():
    assert set(formats()) == {"lerobot", "rlds", "aloha_hdf5", "robomimic_hdf5", "ros", "zarr_replay",
                              "video_folder", "worldmodel", "dreamgen"}


@pytest.mark.parametrize(("expected", "path"), [*SAMPLES.items(), ("lerobot", LEROBOT_V20), ("lerobot", LEROBOT_V21),
                                                ("robomimic_hdf5", SAMPLES["robomimic_hdf5"] / "demo.hdf5"),
                                                ("ros", next(SAMPLES["ros"].glob("*.mcap")))])
def test_every_real_sample_is_detected(expected, path):
    assert detect_format(str(path)) == expected


def test_unknown_layout_is_refused_with_the_known_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("no robot data here")
    with pytest.raises(DatasetError, match="pass --format"):
        detect_format(str(tmp_path))


def test_a_folder_one_level_above_a_dataset_names_it(tmp_path):
    download = SAMPLES["rlds"].parent  # a TFDS data_dir: <data_dir>/bridge_dataset/1.0.0/
    with pytest.raises(DatasetError, match=r"one level down: .*/bridge_dataset \(rlds\)$"):
        detect_format(str(download))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="pass --format"):
        detect_format(str(tmp_path))


def test_formats_command_lists_them():
    result = CliRunner().invoke(app, ["formats"], terminal_width=200)
    assert result.exit_code == 0
    for name in formats():
        assert name in result.output


def test_options_from_file_and_pairs(tmp_path):
    mapping = tmp_path / "ros.yaml"
    mapping.write_text(yaml.safe_dump({"rate": 30}))
    options_file = tmp_path / "options.yaml"
    options_file.write_text(yaml.safe_dump({"fps": 15, "camera_keys": ["image_0"], "mapping": "ros.yaml"}))
    options = load_options(str(options_file), ["fps=5", "bgr_cameras=[wrist, top]", "embodiment=widowx",
                                               "missing_images=drop_camera"])
    assert options == {"fps": 5, "camera_keys": ["image_0"], "bgr_cameras": ["wrist", "top"],
                       "embodiment": "widowx", "missing_images": "drop_camera", "mapping": str(mapping)}
    json_file = tmp_path / "options.json"
    json_file.write_text(json.dumps({"state_keys": ["state"]}))
    assert load_options(str(json_file), None) == {"state_keys": ["state"]}


def test_cli_ingest_passes_options_to_the_connector(tmp_path, ray_session):
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import load_catalog, resolve
    from schemas import table_to_metas

    options = tmp_path / "zarr.yaml"
    options.write_text(yaml.safe_dump({"missing_images": "drop_camera"}))
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["ingest", str(SAMPLES["zarr_replay"]), "--store", str(store), "--options",
                                      str(options), "--option", "fps=20", "--option", "embodiment=pusht_t",
                                      "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stored"] == 206 and report["missing"] == []
    _, manifest = resolve(EpisodeStore(str(store)), "latest")
    metas = table_to_metas(load_catalog(EpisodeStore(str(store)), manifest))
    assert {m.control_fps for m in metas} == {20} and {m.embodiment for m in metas} == {"pusht_t"}
    assert sum(m.num_steps for m in metas) == 25650
    assert sorted(len(m.cameras) for m in metas)[-2:] == [1, 1] and sum(len(m.cameras) for m in metas) == 2
    assert np.all([m.extras.get("zarr.missing_image_data") == "img" for m in metas if not m.cameras])
