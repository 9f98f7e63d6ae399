"""Parents named by generation outputs resolve to stored episodes; the child inherits the parent's split."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jobs.ingest import run_ingest
from jobs.versions import run_append
from pipeline.lineage import PARENT_DATASET, PARENT_SOURCE_KEY, RESOLVED, resolve_parents
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, read_manifest, resolve
from schemas import Lineage, make_episode_id, table_to_metas
from tests.synthetic_helpers import small_dataset, video_file, write_json


@pytest.fixture(scope="module")
def store_with_real(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("lineage")
    source = small_dataset(root / "aloha-day1")
    run_ingest(str(source), str(root / "store"))
    return root


def _outputs(root):
    folder = root / "generated"
    for name, parent in (("by_key", {"dataset": "aloha-day1", "source_key": "3", "frame_range": [0, 12]}),
                         ("by_id", {"episode_id": make_episode_id("aloha-day1", "1")}),
                         ("by_key_only", {"source_key": "2"}),
                         ("unknown", {"dataset": "aloha-day1", "source_key": "99"})):
        video_file(folder / f"{name}.mp4", 12, fps=8, seed=len(name))
        write_json(folder / f"{name}.json", {"inference_type": "video2world", "prompt": name, "seed": 1,
                                             "parent": parent, "split": "train"})
    return folder


def test_append_resolves_parents_and_inherits_their_split(store_with_real):
    root = store_with_real
    report = run_append(str(_outputs(root)), str(root / "store"), format="worldmodel", options={"embodiment": "aloha"})
    assert report.extra["parents resolved"] == 3 and report.extra["parents unresolved"] == 1
    assert any("source key '99'" in w for w in report.warnings)
    store = EpisodeStore(str(root / "store"))
    version_id, manifest = resolve(store, "latest")
    assert read_manifest(store, version_id).parent is not None
    metas = {m.episode_id: m for m in table_to_metas(load_catalog(store, manifest))}
    by_prompt = {m.lineage.prompt: m for m in metas.values() if m.kind == "synthetic"}
    expected = {"by_key": "3", "by_id": "1", "by_key_only": "2"}
    for prompt, key in expected.items():
        child = by_prompt[prompt]
        parent = metas[make_episode_id("aloha-day1", key)]
        assert child.lineage.parent_episode_id == parent.episode_id  # a stored episode of this very version
        assert child.lineage.root_episode_id == parent.episode_id
        assert child.split == parent.split
        assert child.extras[RESOLVED] == ("id" if prompt == "by_id" else "source_key")
    assert by_prompt["by_key"].split == "val" and by_prompt["by_key"].lineage.parent_frame_range == (0, 12)
    assert by_prompt["unknown"].lineage.parent_episode_id == "" and by_prompt["unknown"].split == "train"


def test_ambiguous_and_missing_references_stay_unresolved(store_with_real):
    store = EpisodeStore(str(store_with_real / "store"))
    _, manifest = resolve(store, "latest")
    real = [m for m in table_to_metas(load_catalog(store, manifest)) if m.kind == "teleop"]
    template = replace(real[0], episode_id="child-1", kind="synthetic", split="train", lineage=Lineage())
    twin = replace(real[1], episode_id="twin-1", dataset="other", source_key=real[0].source_key)
    grandchild = replace(template, episode_id="child-2", lineage=Lineage(parent_episode_id="child-1"))
    asks = [replace(template, extras={PARENT_SOURCE_KEY: real[0].source_key}),
            replace(template, episode_id="child-3", extras={PARENT_SOURCE_KEY: real[0].source_key,
                                                             PARENT_DATASET: real[0].dataset}),
            replace(template, episode_id="child-4", lineage=Lineage(parent_episode_id="gone-1"))]
    from pipeline.store.derive import append_manifest, classify

    with_twin = append_manifest(store, None, manifest, classify({}, set(), [twin]), {"job": "test"})
    resolved, report = resolve_parents(store, with_twin, asks)
    assert resolved[0].lineage.parent_episode_id == "" and "2 stored episodes" in report.unresolved[0]
    assert resolved[1].lineage.parent_episode_id == real[0].episode_id  # the dataset disambiguates
    assert "gone-1 is not in the version" in report.unresolved[1]
    chained = replace(template, episode_id="child-1", lineage=Lineage(root_episode_id=real[0].episode_id,
                                                                      parent_episode_id=real[0].episode_id))
    with_child = append_manifest(store, None, manifest, classify({}, set(), [chained]), {"job": "test"})
    [deeper], _ = resolve_parents(store, with_child, [grandchild])
    assert deeper.lineage.parent_episode_id == "child-1" and deeper.lineage.root_episode_id == real[0].episode_id
