"""DreamGen-style LeRobot datasets: inverse-dynamics actions, placeholder state, the 8-vs-16 fps quirk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from connectors import detect_format, get_connector
from connectors.base import SourceError
from jobs.ingest import run_ingest
from pipeline.store import EpisodeStore
from pipeline.versions import load_catalog, resolve
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
        assert not steps.state_valid.any() and not steps.state.any()  # placeholder zeros, masked
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
