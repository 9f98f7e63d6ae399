"""Version operations end to end on a small generated LeRobot v2.1 dataset that grows and changes.

History built once for the module (store ``teleop``, ref ``latest``):
  v1  ingest of episodes 0-3             -> view 1 (shards written from scratch)
  v2  append after episodes 4-5 appeared -> view 2 (v1's shards reused, only 4-5 decoded)
  v3  append after episode 1 changed     -> view 3 (episode 1's old samples excluded, new copy sharded)
  v4  delete of episode 2                -> view 4 (nothing written or decoded; loader skips episode 2)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.loaders import ViewSource, VLAConfig, VLADataset
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.shards import ViewConfig, load_view
from pipeline.store.catalog import RECORDED_AT, CatalogQuery, catalog_summary, episode_objects, read_catalog_table
from pipeline.store.derive import append_episodes, delete_episodes, select_version, version_totals
from pipeline.store.episodes import EpisodeStore
from pipeline.store.gc import collect_garbage
from pipeline.store.history import diff_versions, version_log
from pipeline.store.refs import delete_ref, set_ref
from pipeline.store.statcache import stats_of_episodes
from pipeline.store.verify import verify_store
from pipeline.store.versions import VersionManifest, commit_version, load_catalog, load_stats, read_manifest, resolve
from schemas import make_episode_id, table_to_metas

SPEC = SampleSpec(num_episodes=6, layout="v2.1", height=96, width=128, min_steps=30, max_steps=40, seed=3)
VIEW = ViewConfig(height=64, width=64, segment_steps=16, max_action_horizon=16, target_shard_bytes=250_000)
CAMERAS = 2


def eid(index: int) -> str:
    return make_episode_id("teleop", str(index))


@pytest.fixture(scope="module")
def history(tmp_path_factory, ray_session):
    from jobs.ingest import run_ingest
    from jobs.shard import run_shard
    from jobs.versions import run_append

    root = tmp_path_factory.mktemp("versions")
    src = write_sample_dataset(root / "teleop", SPEC)
    episodes_file = src / "meta" / "episodes.jsonl"
    all_lines = episodes_file.read_text()
    episodes_file.write_text("".join(all_lines.splitlines(keepends=True)[:4]))  # day 1: episodes 0-3
    store = str(root / "store")
    h = {"root": root, "src": src, "store": store}
    h["ingest"] = run_ingest(str(src), store, dataset="teleop")
    h["shard1"], h["view1"] = run_shard(store, VIEW)

    episodes_file.write_text(all_lines)  # day 2: episodes 4-5 recorded
    h["append"] = run_append(str(src), store, dataset="teleop")
    h["shard2"], h["view2"] = run_shard(store, VIEW)

    data_file = src / "data" / "chunk-000" / "episode_000001.parquet"  # episode 1 re-labelled at the source
    table = pq.read_table(data_file)
    action = table.column("action").combine_chunks()
    values = action.flatten().to_numpy().copy()
    values[0] += np.float32(0.25)
    h["changed_action0"] = values[:14].copy()
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), 14)
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", fixed), data_file)
    h["change"] = run_append(str(src), store, dataset="teleop")
    h["shard3"], h["view3"] = run_shard(store, VIEW)

    h["v4"] = delete_episodes(EpisodeStore(store), "latest", ids=[eid(2)])
    h["shard4"], h["view4"] = run_shard(store, VIEW)
    h["versions"] = [h["ingest"].version_id, h["append"].version_id, h["change"].version_id, h["v4"]]
    return h


def _metas(store: EpisodeStore, version: str) -> dict:
    return {m.episode_id: m for m in table_to_metas(load_catalog(store, resolve(store, version)[1]))}


def test_append_processes_only_new_episodes_and_diff_shows_exactly_them(history):
    store = EpisodeStore(history["store"])
    v1, v2 = history["versions"][:2]
    append = history["append"]
    assert (append.stored, append.reused) == (2, 4)  # the ingest memo skipped the 4 stored episodes
    assert append.extra["added"] == 2 and append.extra["changed"] == 0 and append.extra["unchanged"] == 4
    assert read_manifest(store, v2).parent == v1
    assert len(read_manifest(store, v2).catalog) == 2  # v1's layer kept as is, one new layer

    diff = diff_versions(store, v1, read_manifest(store, v1), v2, read_manifest(store, v2))
    assert diff.added == sorted([eid(4), eid(5)])
    assert diff.removed == [] and diff.changed == [] and diff.unchanged == 4
    metas2 = _metas(store, v2)
    new_objects = {}
    for episode in (eid(4), eid(5)):
        meta = metas2[episode]
        new_objects[meta.steps_sha256] = meta.steps_bytes
        new_objects.update({c.video_sha256: c.video_bytes for c in meta.cameras})
    assert diff.bytes_added == sum(new_objects.values()) and diff.bytes_removed == 0
    [group] = diff.groups
    assert (group["embodiment"], group["kind"]) == ("aloha", "teleop")
    assert group["added"] == {"episodes": 2, "steps": metas2[eid(4)].num_steps + metas2[eid(5)].num_steps,
                              "bytes": diff.bytes_added}
    assert group["removed"]["episodes"] == group["changed"]["episodes"] == 0
    assert [e.version_id for e in version_log(store, v2)] == [v2, v1]
    manifest2 = read_manifest(store, v2)  # a pure append adds to the parent's totals: equal to a full scan
    assert manifest2.totals == version_totals(store, manifest2)
    assert manifest2.totals["episodes"] == 6 and manifest2.totals["steps"] == sum(m.num_steps for m in metas2.values())


def test_a_first_commit_has_the_totals_and_stats_of_a_scan_of_its_own_catalog(history, tmp_path):
    """A version without a parent takes its totals and stats from the rows it commits, not from
    reading its catalog back: both must equal what that read-back gives."""
    source = EpisodeStore(history["store"])
    store_path = tmp_path / "first"
    shutil.copytree(Path(history["store"]) / "objects", store_path / "objects")
    store = EpisodeStore(str(store_path))
    metas = list(_metas(source, history["versions"][0]).values())[::-1]  # any order in
    head, changes = append_episodes(store, "fresh", metas, {"job": "test"})
    manifest = read_manifest(store, head)
    assert manifest.parent is None and len(changes.added) == len(metas) == 4
    assert manifest.totals == version_totals(store, manifest)
    assert manifest.totals["steps"] == sum(m.num_steps for m in metas)
    read_back = table_to_metas(load_catalog(store, manifest))
    assert json.dumps(load_stats(store, manifest).to_json(), sort_keys=True) == \
        json.dumps(stats_of_episodes(store, read_back).to_json(), sort_keys=True)


def test_append_reuses_every_unchanged_shard(history):
    store = EpisodeStore(history["store"])
    view1, view2 = load_view(store.objects, history["view1"]), load_view(store.objects, history["view2"])
    report1, report2 = history["shard1"], history["shard2"]
    assert len(view1.shards) >= 2
    assert report1.extra["shards written"] == len(view1.shards) and report1.extra["shards reused"] == 0
    new = [s for s in view2.shards if s.tar_path not in {t.tar_path for t in view1.shards}]
    assert view2.shards[: len(view1.shards)] == view1.shards  # every v1 shard, untouched, same entry
    assert report2.extra["shards reused"] == len(view1.shards)
    assert report2.extra["shards written"] == len(new) >= 1
    metas = _metas(store, history["versions"][1])
    new_steps = metas[eid(4)].num_steps + metas[eid(5)].num_steps
    assert report2.extra["frames decoded"] == report2.decoded == CAMERAS * new_steps  # no re-decode of v1
    assert sorted(e for s in new for e in s.episodes) == sorted([eid(4), eid(5)])
    assert view2.base_view == history["view1"]
    assert view2.num_steps == sum(m.num_steps for m in metas.values())


def test_changed_episode_replaces_its_row_and_only_it_is_resharded(history):
    store = EpisodeStore(history["store"])
    v2, v3 = history["versions"][1:3]
    change = history["change"]
    assert (change.stored, change.reused) == (1, 5)
    assert change.extra["changed"] == 1 and change.extra["added"] == 0
    diff = diff_versions(store, v2, read_manifest(store, v2), v3, read_manifest(store, v3))
    assert diff.changed == [eid(1)] and diff.added == [] and diff.removed == []
    metas3 = _metas(store, v3)
    assert len(metas3) == 6
    assert np.array_equal(store.read_steps(metas3[eid(1)]).action[0], history["changed_action0"])

    view2, view3 = load_view(store.objects, history["view2"]), load_view(store.objects, history["view3"])
    holding = [s for s in view2.shards if eid(1) in s.episodes]
    report = history["shard3"]
    assert report.extra["frames decoded"] == CAMERAS * metas3[eid(1)].num_steps
    assert report.extra["shards written"] == 1
    assert report.extra["shards reused"] == len(view3.shards) - 1
    for old in holding:  # the shard with episode 1's old copy is kept; its samples of episode 1 are excluded
        kept = next(s for s in view3.shards if s.tar_path == old.tar_path)
        assert eid(1) in kept.excluded and eid(1) not in kept.episodes
        assert kept.num_steps < old.num_steps
    assert [s for s in view3.shards if eid(1) in s.episodes] == [view3.shards[-1]]

    source = ViewSource(history["store"], history["view3"])
    dataset = VLADataset(source, VLAConfig(batch_size=1, action_horizon=16, shuffle=False))
    firsts = [b for b in dataset if b["episode_id"][0] == eid(1) and int(b["step"][0]) == 0]
    assert len(firsts) == 1  # the old copy never comes back
    assert np.array_equal(firsts[0]["actions"][0, 0].numpy(), history["changed_action0"])


def test_delete_is_honoured_by_shards_and_the_vla_loader(history):
    store = EpisodeStore(history["store"])
    v3, v4 = history["versions"][2:4]
    manifest = read_manifest(store, v4)
    assert manifest.deleted == [eid(2)] and manifest.catalog == read_manifest(store, v3).catalog  # no rewrite
    live = _metas(store, v4)
    assert sorted(live) == sorted(eid(i) for i in (0, 1, 3, 4, 5))
    report = history["shard4"]
    assert report.extra["shards written"] == 0 and report.decoded == 0
    view4 = load_view(store.objects, history["view4"])
    assert view4.deleted == [eid(2)]
    assert all(eid(2) not in s.episodes for s in view4.shards)
    assert any(eid(2) in s.excluded for s in view4.shards)

    source = ViewSource(history["store"], history["view4"])
    dataset = VLADataset(source, VLAConfig(batch_size=1, action_horizon=16, seed=7))
    assert len(dataset) == sum(m.num_steps for m in live.values())
    seen = [(b["episode_id"][0], int(b["step"][0])) for b in dataset]
    assert eid(2) not in {e for e, _ in seen}
    assert sorted(seen) == sorted((e, t) for e, m in live.items() for t in range(m.num_steps))
    assert manifest.totals["episodes"] == 5


def test_select_holds_exactly_the_rows_of_a_pyarrow_filter(history):
    store = EpisodeStore(history["store"])
    query = CatalogQuery(task="CUBE", min_steps=33, embodiment=("aloha",))
    version = select_version(store, "latest", query, ref="cubes")
    derived = load_catalog(store, read_manifest(store, version))

    table = load_catalog(store, resolve(store, "latest")[1])
    flat = pc.list_flatten(table.column("tasks"))
    has_cube = np.zeros(table.num_rows, bool)
    has_cube[pc.list_parent_indices(table.column("tasks")).to_numpy()[
        pc.match_substring(flat, "cube", ignore_case=True).to_numpy(zero_copy_only=False)]] = True
    mask = pc.and_(pc.and_(pa.array(has_cube), pc.greater_equal(table.column("num_steps"), 33)),
                   pc.equal(table.column("embodiment"), "aloha"))
    expected = table.filter(mask).sort_by("episode_id")
    assert 0 < expected.num_rows < table.num_rows
    assert derived.sort_by("episode_id").equals(expected)
    manifest = read_manifest(store, version)
    assert manifest.parent == resolve(store, "latest")[0] and manifest.deleted == []
    assert manifest.totals["episodes"] == expected.num_rows


def test_select_by_success_and_recording_date(history):
    store = EpisodeStore(history["store"])
    metas = sorted(_metas(store, "latest").values(), key=lambda m: m.episode_id)
    days = ["2026-03-01", "2026-03-02T10:00:00Z", "2026-03-03", "2026-03-04T23:59:59+02:00", ""]
    curated = [replace(m, success=i % 2 == 0, extras={**m.extras, **({RECORDED_AT: days[i]} if days[i] else {})})
               for i, m in enumerate(metas)]
    base = commit_version(store, VersionManifest([store.write_catalog(curated)], None, {}, {"job": "test"}), "curated",
                          expect=None)
    query = CatalogQuery(success="true", since="2026-03-01T12:00:00", until="2026-03-05")
    version = select_version(store, base, query, ref="curated-sel")
    derived = load_catalog(store, read_manifest(store, version)).sort_by("episode_id")

    table = read_catalog_table(store, read_manifest(store, base))
    stamps = pc.map_lookup(table.column("extras"), RECORDED_AT, "first")
    when = pc.strptime(pc.utf8_slice_codeunits(stamps, 0, 10), format="%Y-%m-%d", unit="s")
    expected = table.filter(pc.and_(pc.equal(table.column("success"), True),
                                    pc.and_(pc.greater_equal(when, pa.scalar(datetime(2026, 3, 2), pa.timestamp("s"))),
                                            pc.less(when, pa.scalar(datetime(2026, 3, 5), pa.timestamp("s"))))))
    assert derived.equals(expected.sort_by("episode_id"))
    assert derived.column("episode_id").to_pylist() == [metas[2].episode_id]  # day 3 succeeded; day 4's is false
    with pytest.raises(ValueError):
        CatalogQuery(since="yesterday")


def test_summary_per_embodiment_and_kind(history):
    store = EpisodeStore(history["store"])
    manifest = resolve(store, "latest")[1]
    metas = _metas(store, "latest")
    [group, total] = catalog_summary(store, manifest)
    assert (group.embodiment, group.kind, group.episodes) == ("aloha", "teleop", 5)
    assert group.steps == sum(m.num_steps for m in metas.values())
    assert group.hours == pytest.approx(group.steps / 30 / 3600, rel=1e-12)
    objects = {}
    for row in read_catalog_table(store, manifest).to_pylist():
        objects.update(episode_objects(row))
    assert group.bytes == total.bytes == sum(objects.values())


def test_verify_names_a_flipped_byte_in_a_shard_and_in_a_video(history):
    store = EpisodeStore(history["store"])
    clean = verify_store(store)
    assert clean.ok and clean.objects > 20 and set(history["versions"]) <= set(clean.versions)
    assert history["view4"] in clean.views
    view = load_view(store.objects, history["view4"])
    shard = view.shards[0]
    meta = _metas(store, "latest")[eid(0)]
    video = meta.cameras[1]
    flipped = []
    try:
        for relative in (shard.tar_path, video.video_path):
            path = Path(store.objects.abspath(relative))
            data = bytearray(path.read_bytes())
            flipped.append((path, bytes(data)))
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
        report = verify_store(store)
        assert not report.ok
        assert {m.path for m in report.mismatches} == {shard.tar_path, video.video_path}
        by_path = {m.path: m for m in report.mismatches}
        assert by_path[shard.tar_path].what == "shard tar" and "shard 0" in by_path[shard.tar_path].used_by
        assert by_path[shard.tar_path].expected == shard.tar_sha256
        assert by_path[video.video_path].what == "video"
        assert f"camera {video.name}" in by_path[video.video_path].used_by
        assert by_path[video.video_path].expected == video.video_sha256
        result = CliRunner().invoke(_cli(), ["versions", "verify", "--store", history["store"]])
        assert result.exit_code == 1 and shard.tar_path in result.output and video.video_path in result.output
    finally:
        for path, data in flipped:
            path.write_bytes(data)
    assert verify_store(store).ok


def test_gc_reclaims_what_only_a_deleted_ref_reached(history):
    store = EpisodeStore(history["store"])
    version = select_version(store, "latest", CatalogQuery(episode_ids=(eid(3), eid(5))), ref="scratch")
    layer = read_manifest(store, version).catalog[0].path
    delete_ref(store.objects, "scratch")
    report = collect_garbage(store, delete=False, grace_s=0)
    garbage = {p for p, _ in report.garbage}
    assert {f"versions/{version}.json", layer} <= garbage
    reachable = verify_store(store)
    assert not garbage & {m for m in _paths_of(store, reachable.versions)}  # nothing reachable is garbage
    done = collect_garbage(store, delete=True, grace_s=0)
    assert done.deleted == len(done.garbage) and not store.objects.exists(layer)
    assert verify_store(store).ok
    assert collect_garbage(store, delete=False, grace_s=0).garbage == []


def _paths_of(store: EpisodeStore, versions: list[str]) -> set[str]:
    paths = set()
    for version in versions:
        manifest = read_manifest(store, version)
        paths.add(f"versions/{version}.json")
        paths.update(ref.path for ref in manifest.catalog)
        for meta in table_to_metas(load_catalog(store, manifest)):
            paths.add(meta.steps_path)
            paths.update(c.video_path for c in meta.cameras)
    return paths


def _cli():
    from jobs.cli import app

    return app


def test_cli_log_show_diff_tag(history):
    runner, store = CliRunner(), history["store"]
    v1, v2 = history["versions"][:2]
    out = runner.invoke(_cli(), ["versions", "log", "latest", "--store", store, "--json"])
    assert out.exit_code == 0, out.output
    assert [e["version_id"] for e in json.loads(out.output)["versions"]] == history["versions"][::-1]
    out = runner.invoke(_cli(), ["versions", "diff", v1, v2, "--store", store, "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["added"] == sorted([eid(4), eid(5)])
    out = runner.invoke(_cli(), ["versions", "show", "latest", "--store", store, "--json"])
    assert json.loads(out.output)["summary"][-1]["episodes"] == 5
    assert runner.invoke(_cli(), ["versions", "tag", "day1", v1, "--store", store]).exit_code == 0
    moved = runner.invoke(_cli(), ["versions", "tag", "day1", v2, "--store", store])
    assert moved.exit_code == 2 and "--force" in moved.output  # a tag does not move silently
    assert runner.invoke(_cli(), ["versions", "tag", "day1", v2, "--store", store, "--force"]).exit_code == 0
    refs = runner.invoke(_cli(), ["versions", "refs", "--store", store]).output
    assert f"day1\t{v2}" in refs
    out = runner.invoke(_cli(), ["versions", "delete", "--store", store, "--ref", "day1", "--where", "task=marker"])
    assert out.exit_code == 0, out.output
    deleted = read_manifest(EpisodeStore(store), resolve(EpisodeStore(store), "day1")[0]).deleted
    catalog = load_catalog(EpisodeStore(store), read_manifest(EpisodeStore(store), v2))
    marker = [r["episode_id"] for r in catalog.to_pylist() if any("marker" in t for t in r["tasks"])]
    assert deleted == sorted(marker) and marker
    set_ref(EpisodeStore(store).objects, "day1", v1)


def test_operations_on_an_s3_store(history, s3_endpoint):
    import boto3
    import fsspec

    url, options = s3_endpoint
    boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="versions-ops")
    local = Path(history["root"]) / "s3-copy"
    shutil.copytree(history["store"], local)
    fs = fsspec.filesystem("s3", **options)
    fs.put(str(local) + "/", "versions-ops/store", recursive=True)
    store = EpisodeStore("s3://versions-ops/store", options)
    head = resolve(store, "latest")[0]
    assert head == history["versions"][3]
    version = delete_episodes(store, "latest", query=CatalogQuery(episode_ids=(eid(0),)))
    assert read_manifest(store, version).parent == head
    assert eid(0) not in {m.episode_id for m in table_to_metas(load_catalog(store, read_manifest(store, version)))}
    assert verify_store(store, [version]).ok
    garbage = collect_garbage(store, delete=False, grace_s=0)
    assert all(not p.startswith(("objects/steps", "objects/videos")) for p, _ in garbage.garbage)
