"""World-model output connector: the real Cosmos sample, and generated Cosmos-style folders."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from connectors import DatasetError, SourceError, detect_format, get_connector
from jobs.ingest import run_ingest
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas
from tests.conftest import REAL
from tests.synthetic_helpers import video_file, write_json

COSMOS = REAL / "video_with_json" / "cosmos-predict2.5-nemo-digit"
MAPPING = {"video2world_nemo_2b.mp4": "output_Digit_Lift_movie",
           "video2world_nemo_2b_lora.mp4": {"sample": "output_Digit_Lift_movie", "model_id": "cosmos-2b-lora"}}


def _by_key(episodes):
    return {e.meta.source_key: e for e in episodes}


def _read_all(uri, options):
    connector = get_connector("worldmodel")
    found = connector.discover(str(uri), options)
    return found, _by_key(connector.read(r) for r in found.refs)


def test_cosmos_sample_ingests_with_prompt_seed_guidance_resolution_and_frames(tmp_path, ray_session):
    spec = json.loads((COSMOS / "video2world_cosmos_nemo_assets/nemo_image2world.json").read_text())
    prompt = (COSMOS / "video2world_cosmos_nemo_assets/output_Digit_Lift_movie.txt").read_text().strip()
    assert detect_format(str(COSMOS)) == "worldmodel"
    report = run_ingest(str(COSMOS), str(tmp_path / "store"), format="worldmodel",
                        options={"mapping": MAPPING, "embodiment": "digit"})
    assert report.stored == 2 and not report.quarantined
    store = EpisodeStore(str(tmp_path / "store"))
    metas = {m.source_key: m for m in table_to_metas(load_catalog(store, resolve(store, "latest")[1]))}
    assert sorted(metas) == ["video2world_lora/video2world_nemo_2b.mp4",
                             "video2world_lora/video2world_nemo_2b_lora.mp4"]
    for key, meta in metas.items():
        lineage, generator = meta.lineage, meta.lineage.generator
        assert (meta.kind, meta.embodiment, meta.num_steps, meta.control_fps) == ("synthetic", "digit", 93, 16)
        assert lineage.prompt == prompt == spec["samples"]["output_Digit_Lift_movie"]["prompt"]
        assert meta.tasks == [prompt]
        assert (generator.seed, generator.guidance, generator.task) == (0, 7.0, "image2world")
        assert generator.negative_prompt == spec["negative_prompt"]
        assert generator.params["resolution"] == "1280x704"
        assert generator.params["num_output_frames"] == "93" == str(spec["num_output_frames"])
        assert generator.params["fps"] == "16"
        assert (lineage.action_source, lineage.state_source) == ("none", "none")
        [image] = lineage.conditioning
        assert (image.kind, image.frame_index) == ("image", 0)
        assert image.uri.endswith("video2world_cosmos_nemo_assets/output_Digit_Lift_movie.jpg")
        jpg = (COSMOS / "video2world_cosmos_nemo_assets/output_Digit_Lift_movie.jpg").read_bytes()
        assert meta.extras["worldmodel.input_sha256"] == hashlib.sha256(jpg).hexdigest()
        [camera] = meta.cameras
        assert (camera.width, camera.height, camera.num_frames, camera.fps, camera.codec) == (1280, 704, 93, 16, "h264")
        assert camera.video_sha256 == hashlib.sha256((COSMOS / key).read_bytes()).hexdigest()  # stored as is
        steps = store.read_steps(meta)
        assert steps.state.shape == (93, 0) and steps.action.shape == (93, 0)
        assert not steps.state_valid.any() and not steps.action_valid.any()
        assert steps.timestamp_ns[-1] == 92 * 1_000_000_000 // 16
    assert metas["video2world_lora/video2world_nemo_2b_lora.mp4"].lineage.generator.model_id == "cosmos-2b-lora"
    assert metas["video2world_lora/video2world_nemo_2b.mp4"].lineage.generator.model_id == ""


def test_cosmos_sample_without_mapping_warns_and_keeps_the_videos():
    found, episodes = _read_all(COSMOS, {})
    assert len(found.refs) == 2
    assert all("pass a mapping" in w for w in found.warnings) and len(found.warnings) == 2
    for episode in episodes.values():
        assert episode.meta.lineage.prompt == ""
        assert episode.meta.lineage.generator.task == "other"
        assert episode.meta.num_steps == 93


def _generated_folder(root):
    """a: sidecar spec + control video + parent; b: request spec + prompt file; c: commanded actions."""
    video_file(root / "gen/a.mp4", 12, fps=8, seed=1)
    video_file(root / "gen/a_control_edge.mp4", 12, fps=8, seed=2)
    video_file(root / "inputs/a.png.mp4", 3, fps=8, seed=3)  # not a generated video: under inputs/, still found
    (root / "inputs/a.png").write_bytes(b"\x89PNG fake image bytes")
    write_json(root / "gen/a.json", {"inference_type": "transfer", "prompt": "a kitchen at night", "seed": 7,
                                     "guidance": 3.5, "num_steps": 35, "negative_prompt": "blurry",
                                     "num_output_frames": 12, "fps": 8, "input_path": "../inputs/a.png",
                                     "edge": {"control_weight": 0.4}, "resolution": "480",
                                     "parent": {"dataset": "aloha-day1", "source_key": "3", "frame_range": [0, 12]},
                                     "model_id": "cosmos-transfer-2b", "checkpoint_sha": "abc123"})
    video_file(root / "gen/b.mp4", 10, fps=8, seed=4)
    (root / "gen/b.txt").write_text("the robot opens the drawer\n")
    write_json(root / "specs/req.json", {"inference_type": "video2world", "seed": 1, "guidance": 7,
                                         "samples": {"b": {"prompt": "spec prompt", "input_path": "../../etc/passwd"},
                                                     "zz": {"prompt": "never generated"}}})
    video_file(root / "gen/c.mp4", 12, fps=8, seed=5)
    actions = np.arange(11 * 3, dtype=np.float32).reshape(11, 3) / 7
    np.save(root / "gen/c_actions.npy", actions, allow_pickle=False)
    return actions


def test_pairing_sidecars_controls_parent_and_commanded_actions(tmp_path):
    actions = _generated_folder(tmp_path)
    _, episodes = _read_all(tmp_path, {"dataset": "gen"})
    assert sorted(episodes) == ["gen/a.mp4", "gen/b.mp4", "gen/c.mp4", "inputs/a.png.mp4"]

    a = episodes["gen/a.mp4"].meta
    gen = a.lineage.generator
    assert (gen.model_id, gen.checkpoint_sha, gen.task, gen.seed, gen.guidance, gen.num_steps) == (
        "cosmos-transfer-2b", "abc123", "transfer", 7, 3.5, 35)
    assert gen.negative_prompt == "blurry" and a.lineage.prompt == "a kitchen at night"
    assert gen.params["requested_resolution"] == "480" and gen.params["resolution"] == "64x48"
    assert a.lineage.parent_frame_range == (0, 12)
    assert a.lineage.parent_episode_id == ""  # resolved against a store later (pipeline.lineage)
    assert (a.extras["lineage.parent_dataset"], a.extras["lineage.parent_source_key"]) == ("aloha-day1", "3")
    kinds = {c.kind: c for c in a.lineage.conditioning}
    assert kinds["image"].uri.endswith("/inputs/a.png")
    assert kinds["edge"].weight == 0.4 and kinds["edge"].uri.endswith("/gen/a_control_edge.mp4")
    assert a.extras["worldmodel.input_sha256"] == hashlib.sha256(b"\x89PNG fake image bytes").hexdigest()

    b = episodes["gen/b.mp4"].meta
    assert b.lineage.prompt == "the robot opens the drawer"  # the prompt file beside the video wins over the spec
    assert b.extras["worldmodel.sample"] == "b" and b.lineage.generator.task == "video2world"
    [video_input] = b.lineage.conditioning
    assert video_input.uri == "../../etc/passwd"  # recorded as given, never opened (outside the root)
    assert "worldmodel.input_sha256" not in b.extras

    c = episodes["gen/c.mp4"]
    assert c.meta.lineage.generator.task == "action2world" and c.meta.action_source == "commanded"
    np.testing.assert_array_equal(c.steps.action[:11], actions)
    assert c.steps.action_valid.tolist() == [True] * 11 + [False]
    assert c.meta.action_names == ["action_0", "action_1", "action_2"]
    assert episodes["inputs/a.png.mp4"].meta.lineage.generator.task == "other"


def test_spec_and_video_disagreeing_is_an_error_naming_the_field(tmp_path, ray_session):
    video_file(tmp_path / "out/x.mp4", 12, fps=8)
    write_json(tmp_path / "out/x.json", {"prompt": "p", "num_output_frames": 20})
    video_file(tmp_path / "out/y.mp4", 12, fps=8)
    write_json(tmp_path / "out/y.json", {"prompt": "p", "fps": 16})
    connector = get_connector("worldmodel")
    refs = {r.key: r for r in connector.discover(str(tmp_path / "out"), {}).refs}
    with pytest.raises(SourceError) as error:
        connector.read(refs["x.mp4"])
    assert error.value.field == "num_output_frames" and "12 frames" in str(error.value)
    with pytest.raises(SourceError) as error:
        connector.read(refs["y.mp4"])
    assert error.value.field == "fps"
    report = run_ingest(str(tmp_path / "out"), str(tmp_path / "store"), format="worldmodel")
    assert sorted(q["field"] for q in report.quarantined) == ["fps", "num_output_frames"]
    relaxed = connector.read(connector.discover(str(tmp_path / "out"), {"strict": False}).refs[0])
    assert relaxed.meta.lineage.generator.params["requested_num_output_frames"] == "20"


def test_mapping_errors_are_named(tmp_path):
    video_file(tmp_path / "v/out.mp4", 6)
    write_json(tmp_path / "s1/spec.json", {"inference_type": "image2world", "samples": {"s": {"prompt": "one"}}})
    write_json(tmp_path / "s2/spec.json", {"inference_type": "image2world", "samples": {"s": {"prompt": "two"}}})
    connector = get_connector("worldmodel")
    with pytest.raises(DatasetError, match="no request spec holds"):
        connector.discover(str(tmp_path), {"mapping": {"out.mp4": "missing"}})
    with pytest.raises(DatasetError, match="several request specs"):
        connector.discover(str(tmp_path), {"mapping": {"out.mp4": "s"}})
    found = connector.discover(str(tmp_path), {"mapping": {"out.mp4": "s2/spec.json#s"}})
    assert connector.read(found.refs[0]).meta.lineage.prompt == "two"


def test_video_only_episodes_shard_and_load_with_masked_actions(tmp_path, ray_session):
    from jobs.shard import run_shard
    from pipeline.loaders import ViewSource, WAMConfig, WAMDataset
    from pipeline.shards import ViewConfig

    for i in range(2):
        video_file(tmp_path / "out" / f"v{i}.mp4", 24, fps=8, seed=i)
        write_json(tmp_path / "out" / f"v{i}.json", {"prompt": f"prompt {i}", "seed": i})
    assert run_ingest(str(tmp_path / "out"), str(tmp_path / "store"), format="worldmodel").stored == 2
    view = ViewConfig(height=32, width=32, segment_steps=8, max_action_horizon=4)
    run_shard(str(tmp_path / "store"), view)
    dataset = WAMDataset(ViewSource.open(str(tmp_path / "store"), "latest", view),
                         WAMConfig(n_context=4, n_future=4, batch_size=4, shuffle=False))
    batch = next(iter(dataset))
    assert tuple(batch["frames"].shape) == (4, 1, 8, 3, 32, 32) and bool(batch["frame_mask"].all())
    assert tuple(batch["actions"].shape) == (4, 7, 0) and not bool(batch["action_mask"].any())
    assert set(batch["kind"]) == {"synthetic"} and set(batch["action_source"]) == {"none"}
    assert set(batch["instruction"]) <= {"prompt 0", "prompt 1"}
