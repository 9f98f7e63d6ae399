"""The dataset report and the episode viewer hold the version's own numbers, exactly.

A LeRobot v2.1 source of 4 episodes with one unreadable parquet (quarantined by ingest) and a
reference-generator augment on top (3 synthetic children): the report's JSON block and tables must
equal the catalog, the stats object, the ingest job's report and the lineage, value for value.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from jobs.augment import run_augment
from jobs.cli import app
from jobs.ingest import run_ingest
from pipeline.report import job_report_path
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.store.episodes import EpisodeStore
from pipeline.store.gc import collect_garbage
from pipeline.store.versions import load_catalog, load_stats, resolve
from pipeline.viz.html import num
from pipeline.viz.report import render_report
from pipeline.viz.viewer import page_name, write_rerun, write_viewer
from schemas import table_to_metas
from tests.helpers import decode_all_frames, psnr


@pytest.fixture(scope="module")
def versions(tmp_path_factory, ray_session):
    """(store path, ingest report, ingest version, augmented version)."""
    root = tmp_path_factory.mktemp("report")
    source = write_sample_dataset(root / "robot", SampleSpec(num_episodes=4, min_steps=30, max_steps=40, height=96,
                                                             width=128, layout="v2.1", seed=3))
    broken = source / "data/chunk-000/episode_000002.parquet"
    broken.write_bytes(broken.read_bytes()[:200])
    ingest = run_ingest(str(source), str(root / "store"))
    augment = run_augment(str(root / "store"), source=ingest.version_id, ref="augmented")
    assert (len(ingest.quarantined), augment.stored) == (1, 3)
    return root / "store", ingest, ingest.version_id, augment.version_id


def _numbers(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def _metas(store: EpisodeStore, version: str) -> list:
    return sorted(table_to_metas(load_catalog(store, resolve(store, version)[1])), key=lambda m: m.episode_id)


@pytest.fixture(scope="module")
def report_page(versions):
    store_path, _, ingested, _ = versions
    return render_report(EpisodeStore(str(store_path)), "augmented", diff_against=ingested)


def test_counts_equal_the_catalog(versions, report_page):
    store = EpisodeStore(str(versions[0]))
    metas = _metas(store, "augmented")
    numbers = _numbers(report_page)
    assert numbers["version"] == versions[3] and numbers["refs"] == ["augmented"]
    assert numbers["totals"]["episodes"] == len(metas) == 6
    assert numbers["totals"]["steps"] == sum(m.num_steps for m in metas)
    for column in ("dataset", "embodiment", "kind", "split"):
        expected: dict[str, list[int]] = {}
        for m in metas:
            entry = expected.setdefault(getattr(m, column), [0, 0])
            entry[0] += 1
            entry[1] += m.num_steps
        assert {k: [g["episodes"], g["steps"]] for k, g in numbers["by"][column].items()} == expected, column
    assert {k: g["episodes"] for k, g in numbers["by"]["kind"].items()} == {"synthetic": 3, "teleop": 3}
    assert (numbers["lineage"]["real"], numbers["lineage"]["synthetic"]) == (3, 3)


def test_stats_equal_the_stats_object_bit_for_bit(versions, report_page):
    store = EpisodeStore(str(versions[0]))
    stats = load_stats(store, resolve(store, "augmented")[1])
    numbers = _numbers(report_page)["stats"]
    meta = _metas(store, "augmented")[0]
    assert sorted(numbers) == sorted(stats.groups) == ["aloha"]
    for feature, names in (("state", meta.state_names), ("action", meta.action_names)):
        summary = stats.summary("aloha", feature)
        shown = numbers["aloha"][feature]
        assert shown["names"] == names and len(names) == 14
        assert shown["count"] == summary["count"] == sum(m.num_steps for m in _metas(store, "augmented"))
        for key in ("mean", "std", "q01", "q99", "min", "max"):
            np.testing.assert_array_equal(np.array(shown[key]), np.array(summary[key]), err_msg=f"{feature} {key}")
        table = re.search(rf'<table id="stats-aloha-{feature}">(.*?)</table>', report_page, re.S).group(1)
        first = re.findall(r"<td[^>]*>(.*?)</td>", table.split("</tr>")[1])
        assert first == ["0", names[0], *(num(summary[k][0]) for k in ("mean", "std", "q01", "q99", "min", "max"))]


def test_quarantine_rows_equal_the_ingest_report(versions, report_page):
    _, ingest, ingested, _ = versions
    rows = _numbers(report_page)["quarantine"]
    assert [(r["version"], r["job"], r["file"], r["episode"], r["field"], r["reason"]) for r in rows] == [
        (ingested, "ingest", q["file"], q["episode_id"], q["field"], q["reason"]) for q in ingest.quarantined]
    assert rows[0]["file"].endswith("data/chunk-000/episode_000002.parquet") and rows[0]["episode"] == "2"
    table = re.search(r'<table id="quarantine">(.*?)</table>', report_page, re.S).group(1)
    assert table.count("<tr>") == 2  # header and the one quarantined episode
    assert html.escape(ingest.quarantined[0]["reason"], quote=True) in table


def test_lineage_rows_name_each_parent_generator_and_prompt(versions, report_page):
    store = EpisodeStore(str(versions[0]))
    synthetic = [m for m in _metas(store, "augmented") if m.kind == "synthetic"]
    rows = _numbers(report_page)["lineage"]["rows"]
    assert [(r["episode_id"], r["parent"], r["generator"], r["prompt"], r["action_source"]) for r in rows] == [
        (m.episode_id, m.lineage.parent_episode_id, m.lineage.generator.model_id, m.lineage.prompt, m.action_source)
        for m in synthetic]
    assert {r["generator"] for r in rows} == {"actionreel/reference-transfer-v1"}


def test_diff_lists_the_synthetic_episodes_as_added(versions, report_page):
    store = EpisodeStore(str(versions[0]))
    diff = _numbers(report_page)["diff"]
    assert diff["added"] == [m.episode_id for m in _metas(store, "augmented") if m.kind == "synthetic"]
    assert (diff["removed"], diff["changed"], diff["unchanged"]) == ([], [], 3)
    assert '<section id="diff">' in report_page


def test_progress_counts_every_section_and_thumbnail(versions, report_page):
    import io

    from rich.console import Console

    from pipeline.progress import JobProgress

    store_path, _, ingested, _ = versions
    screen = io.StringIO()
    bar = JobProgress("report", 0, enabled=True, unit="thumbnails", item="sections",
                      console=Console(file=screen, force_terminal=True, width=160))
    with bar:
        page = render_report(EpisodeStore(str(store_path)), "augmented", diff_against=ingested, progress=bar)
    assert page == report_page  # drawing progress changes nothing on the page
    assert bar.episodes == 7 and bar.frames == page.count("<img ") > 0  # six sections and the diff
    assert "7/7" in screen.getvalue() and f"{bar.frames} thumbnails" in screen.getvalue()


def test_page_is_self_contained_with_one_plotly_bundle(report_page):
    from plotly.offline import get_plotlyjs

    assert report_page.count(get_plotlyjs()[:300]) == 1
    assert "<script src" not in report_page and "<link" not in report_page
    assert not re.search(r'src="(https?:)?//', report_page)
    # contact sheets: 2 datasets x 3 episodes x 2 cameras x 6 frames; lineage: 3 pairs x (3 + 3) frames
    assert report_page.count('src="data:image/jpeg;base64,') == 72 + 18


def test_first_thumbnail_is_the_first_frame(versions, report_page):
    store = EpisodeStore(str(versions[0]))
    first = sorted((m for m in _metas(store, "augmented") if m.dataset == "robot"), key=lambda m: m.episode_id)[0]
    camera = first.cameras[0]
    uri = re.search(r'<img alt="[^"]* frame 0" src="data:image/jpeg;base64,([^"]+)"', report_page).group(1)
    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    frame = decode_all_frames(store.objects.abspath(camera.video_path))[camera.frame_start]
    expected = cv2.resize(frame, (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_AREA)
    assert thumb.shape == (72, 96, 3) and psnr(thumb, expected) > 28


def test_gc_keeps_the_job_reports_of_reachable_versions(versions):
    store_path, _, ingested, augmented = versions
    store = EpisodeStore(str(store_path))
    kept = {job_report_path(ingested, "ingest"), job_report_path(augmented, "augment")}
    assert all(store.objects.exists(p) for p in kept)
    garbage = {path for path, _ in collect_garbage(store, grace_s=0).garbage}
    assert not kept & garbage


def test_viewer_pages_hold_the_steps_and_link_parents(versions, tmp_path):
    store = EpisodeStore(str(versions[0]))
    metas = _metas(store, "augmented")
    result = write_viewer(store, tmp_path / "viewer", "augmented")
    assert sorted(result.pages) == [m.episode_id for m in metas] and result.listed == 6
    assert {p.how for p in result.previews} == {"stored"}  # v2.1: one H.264 file per episode and camera
    index = result.index.read_text()
    assert index.count('<tr class="episode"') == 6 and "<script src" not in index
    child = next(m for m in metas if m.kind == "synthetic")
    page = result.pages[child.episode_id].read_text()
    data = json.loads(re.search(r'id="episode-data">(.*?)</script>', page, re.S).group(1))
    steps = store.read_steps(child)
    np.testing.assert_array_equal(np.array(data["state"]["values"]).T, steps.state.astype(np.float64))
    np.testing.assert_array_equal(np.array(data["action"]["values"]).T, steps.action.astype(np.float64))
    assert data["cameras"][0]["frames"] == steps.frame_index[child.cameras[0].name].tolist()
    assert f'href="{page_name(child.lineage.parent_episode_id)}.html"' in page
    assert html.escape(child.tasks[0]) in page and '<script src="../plotly.min.js">' in page
    for camera in child.cameras:
        assert (tmp_path / "viewer/episodes" / page_name(child.episode_id) / f"{camera.name}.mp4").stat().st_size > 0


def test_rerun_recording_has_every_camera_and_dimension(versions, tmp_path):
    from rerun.chunk import RrdReader

    store = EpisodeStore(str(versions[0]))
    meta = _metas(store, "augmented")[0]
    images = write_rerun(store, tmp_path / "episode.rrd", [meta])
    assert images == meta.num_steps * len(meta.cameras)
    paths = {c.entity_path for c in RrdReader(tmp_path / "episode.rrd").store().schema().component_columns()}
    base = f"/episodes/{meta.episode_id}"
    expected = {f"{base}/state/{n}" for n in meta.state_names} | {f"{base}/action/{n}" for n in meta.action_names}
    expected |= {f"{base}/cameras/{c.name}" for c in meta.cameras}
    assert expected <= paths and not {p for p in paths if p.startswith(base)} - expected


def test_cli_report_view_and_their_one_line_errors(versions, tmp_path):
    store = str(versions[0])
    runner = CliRunner()
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", "augmented", "--store", store, "--out", str(out)])
    assert result.exit_code == 0 and result.output.startswith(f"report: {out} (") and out.stat().st_size > 4_000_000
    for args, message in (
        (["report", "nosuch", "--store", store, "--out", str(out)], "error: 'nosuch' is neither a ref nor a version"),
        (["report", "--store", str(tmp_path / "none"), "--out", str(out)], f"store {tmp_path / 'none'} does not exist"),
        (["report", "--store", store, "--out", str(tmp_path)], f"error: --out {tmp_path} is a folder"),
        (["report", "--store", store, "--diff", "nosuch", "--out", str(out)], "error: 'nosuch' is neither a ref"),
        (["report", "--store", store, "--out", str(tmp_path / "no/r.html")], "does not exist"),
        (["view", "--store", store, "--id", "nosuch", "--out", str(tmp_path / "v")], "error: episode nosuch is not in"),
        (["view", "--store", store, "--rerun", str(tmp_path / "x.txt")], "a Rerun recording file ends in .rrd"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and result.output.count("\n") == 1, (args, result.output)
    result = runner.invoke(app, ["view", "augmented", "--store", store, "--out", str(tmp_path / "v"),
                                 "--where", "kind=synthetic", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert result.output == f"viewer: {tmp_path / 'v' / 'index.html'} (2 episode pages of 3 episodes)\n"


def test_report_and_view_print_their_outcome_as_one_json_object(versions, tmp_path, capsys):
    from jobs.cli import main

    store, out = str(versions[0]), tmp_path / "r.html"
    assert main(["report", "augmented", "--store", store, "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    outcome = json.loads(printed)
    assert printed.count("\n") == 1 and outcome["report"] == str(out) and outcome["bytes"] == out.stat().st_size
    assert main(["view", "augmented", "--store", store, "--out", str(tmp_path / "v"), "--where", "kind=synthetic",
                 "--limit", "2", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome == {"version": "augmented", "index": str(tmp_path / "v" / "index.html"), "pages": 2, "listed": 3}
    assert main(["report", "nosuch", "--store", store, "--out", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": f"'nosuch' is neither a ref nor a version id in {store}",
                                        "exit_code": 2}


def test_mjpeg_track_gets_an_h264_preview_and_browser_codecs_play_as_stored(tmp_path):
    from tests.viz_helpers import browser_store

    store, _, metas = browser_store(tmp_path)
    result = write_viewer(store, tmp_path / "viewer")
    assert [m.source_key for m in metas] == ["av1", "mjpeg", "h264"]  # id order
    assert [(p.codec, p.how) for p in result.previews] == [("av1", "stored"), ("mjpeg", "transcoded"),
                                                           ("h264", "stored")]
    with av.open(str(result.previews[1].path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    preview = decode_all_frames(result.previews[1].path)
    stored = decode_all_frames(store.objects.abspath(metas[1].cameras[0].video_path))
    assert len(preview) == len(stored) == metas[1].num_steps
    assert min(psnr(a, b) for a, b in zip(preview, stored, strict=True)) > 30
    for index in (0, 2):
        stored_file = Path(store.objects.abspath(metas[index].cameras[0].video_path))
        assert result.previews[index].path.read_bytes() == stored_file.read_bytes()


def test_hostile_text_stays_text_and_a_broken_video_only_loses_its_thumbnails(tmp_path):
    from dataclasses import replace

    from pipeline.store.versions import VersionManifest, commit_version
    from tests.viz_helpers import browser_store

    store, version, metas = browser_store(tmp_path)
    hostile = "</script><script>alert(1)</script><!--"
    renamed = [replace(metas[0], dataset=hostile, tasks=[hostile])]
    broken = metas[1].cameras[0]
    Path(store.objects.abspath(broken.video_path)).write_bytes(b"not a video")
    manifest = VersionManifest(catalog=[store.write_catalog(renamed + metas[1:])],
                               stats=resolve(store, version)[1].stats, totals={}, producer={"job": "test"})
    commit_version(store, manifest, "hostile", expect=None)
    page = render_report(store, "hostile")
    assert hostile not in page and page.count("<script>alert") == 0
    assert _numbers(page)["by"]["dataset"] == {hostile: {"episodes": 1, "steps": 40, "seconds": 4.0},
                                               "bench-arm": {"episodes": 2, "steps": 80, "seconds": 8.0}}
    assert page.count("no thumbnails: ") == 1
    assert page.count('src="data:image/jpeg;base64,') == 2 * 6  # the two readable videos


def test_an_episode_sharing_a_v3_video_file_gets_a_preview_of_its_own_frames(tmp_path):
    from connectors import get_connector
    from pipeline.viz.frames import write_preview

    source = write_sample_dataset(tmp_path / "v3", SampleSpec(num_episodes=2, min_steps=12, max_steps=16, height=48,
                                                              width=64, episodes_per_file=2))
    connector = get_connector("lerobot")
    store = EpisodeStore(str(tmp_path / "store"))
    metas = [store.write_episode(connector.read(ref)) for ref in connector.discover(str(source)).refs]
    cameras = [m.cameras[0] for m in metas]
    assert cameras[0].video_sha256 == cameras[1].video_sha256 and cameras[1].frame_start == cameras[0].num_frames
    whole = decode_all_frames(store.objects.abspath(cameras[0].video_path))
    for index, camera in enumerate(cameras):
        preview = write_preview(store, camera, tmp_path / f"preview-{index}.mp4")
        assert preview.how == "transcoded"
        frames = decode_all_frames(preview.path)
        expected = whole[camera.frame_start: camera.frame_start + camera.num_frames]
        assert len(frames) == len(expected) == camera.num_frames
        assert min(psnr(a, b) for a, b in zip(frames, expected, strict=True)) > 30
