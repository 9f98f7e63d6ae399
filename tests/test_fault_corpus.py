"""The fault corpus (tests/faults/make_corpus.py) through the ingest job, one case per test.

Each case asserts the exact outcome: the exit code (2 with one line naming file and problem for a
dataset-level fault), which episodes are quarantined (file, episode, field, reason), missing or
kept once, that every other episode is bit-exact with a clean ingest of the same dataset (steps,
masks, timestamps and the stored video bytes or, where a file was written again, its decoded
frames), that the counts add up, and that nothing half-written is left in the store.

Raw frames are stored lossless here (``LOSSLESS``, as ``ingest --lossless``): a lossy x264 encode of
the same frames is not the same bytes on every CPU (x264's C/SSE2 and SSSE3-or-newer paths write two
different files of one 6-frame clip, and a CI run once stored a third within one run), so "the same
frames as the clean ingest" is asserted pixel-exact rather than against one encoder's rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.ingest import run_ingest
from pipeline.ingest import IngestConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from pipeline.video.encode import LOSSLESS
from schemas import make_episode_id, table_to_metas
from tests.connector_helpers import frames_of
from tests.faults.make_corpus import FORMAT_OF, OPTIONS, cases, write_case, write_clean

CASES = {case.name: case for case in cases()}
DATASET = "fault"
CONFIG = IngestConfig(encode=LOSSLESS)


def test_the_corpus_covers_all_nine_formats_with_sixty_cases_or_more():
    formats = {FORMAT_OF.get(c.format, c.format) for c in CASES.values()}
    assert formats == {"lerobot", "rlds", "aloha_hdf5", "robomimic_hdf5", "ros", "zarr_replay", "video_folder",
                       "worldmodel", "dreamgen"}
    assert len(CASES) >= 60
    assert sum("symlink" in name for name in CASES) >= 9
    assert sum(w in name for name in CASES for w in ("external", "virtual")) >= 4


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fault-corpus")


@pytest.fixture(scope="session")
def clean(corpus_root, ray_session):
    """Each format's clean dataset and its ingest, built on first use: (source path, {source key: snapshot})."""
    cache: dict[str, tuple[Path, dict[str, dict]]] = {}

    def get(name: str) -> tuple[Path, dict[str, dict]]:
        if name not in cache:
            source = write_clean(corpus_root / "clean", name)
            report = run_ingest(str(source), str(corpus_root / "clean-stores" / name),
                                format=FORMAT_OF.get(name, name), options=_options(name), config=CONFIG)
            assert not report.quarantined and not report.missing and not report.duplicates, report
            cache[name] = source, snapshot(corpus_root / "clean-stores" / name)
        return cache[name]

    return get


def _options(name: str) -> dict:
    return {**OPTIONS.get(name, {}), "dataset": DATASET}


def snapshot(store_path: Path) -> dict[str, dict]:
    """Every episode of the store's latest version, as the arrays and video hashes a consumer reads."""
    store = EpisodeStore(str(store_path))
    _, manifest = resolve(store, "latest")
    out = {}
    for meta in table_to_metas(load_catalog(store, manifest)):
        steps = store.read_steps(meta).filled()
        out[meta.source_key] = {
            "timestamp_ns": steps.timestamp_ns, "state": steps.state, "action": steps.action,
            "state_valid": steps.state_valid, "action_valid": steps.action_valid, "reward": steps.reward,
            "task_index": steps.task_index, "frames": {k: v for k, v in steps.frame_index.items()},
            "videos": sorted((c.name, c.video_sha256, c.frame_start, c.num_frames) for c in meta.cameras),
            "tasks": list(meta.tasks), "store": store, "meta": meta,
        }
    return out


def assert_bit_exact(got: dict, expected: dict, key: str) -> None:
    for name, value in expected.items():
        if name in ("store", "meta"):
            continue
        if name == "videos" and got[name] != value:  # another file (a shared one damaged elsewhere): same frames?
            assert [v[0::2] for v in got[name]] == [v[0::2] for v in value], key
            for camera in got["meta"].cameras:
                assert_same_frames(got["store"], got["meta"], expected["store"], expected["meta"], camera.name)
        elif name == "frames":
            assert sorted(got[name]) == sorted(value), key
            for camera, index in value.items():
                assert np.array_equal(got[name][camera], index), (key, camera)
        elif isinstance(value, np.ndarray):
            assert got[name].dtype == value.dtype and np.array_equal(got[name], value, equal_nan=True), (key, name)
        else:
            assert got[name] == value, (key, name)


def assert_same_frames(store, meta, clean_store, clean_meta, camera: str) -> None:
    got, want = frames_of(store, meta, camera), frames_of(clean_store, clean_meta, camera)
    assert len(got) == len(want), (camera, len(got), len(want))
    differing = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if not np.array_equal(a, b)]
    if differing:  # name what differs: which frames, by how much, and how each file was written
        first = differing[0]
        worst = int(np.abs(got[first].astype(np.int16) - want[first].astype(np.int16)).max())
        params = [(c.encoding, c.encode_params, c.video_sha256[:12]) for m in (meta, clean_meta)
                  for c in m.cameras if c.name == camera]
        raise AssertionError(f"{camera}: frames {differing[:8]} of {len(got)} differ from the clean ingest "
                             f"(frame {first}: max |diff| {worst}); this ingest vs clean: {params}")


def masked_as_nan(expected: dict, column: str, row: int) -> dict:
    """The clean episode with one row of ``column`` masked: NaN values, valid False."""
    out = dict(expected)
    values, valid = expected[column].copy(), expected[f"{column}_valid"].copy()
    values[row], valid[row] = np.nan, False
    out[column], out[f"{column}_valid"] = values, valid
    return out


def no_half_written_files(store_path: Path) -> list[str]:
    if not store_path.exists():
        return []
    return [str(p) for p in store_path.rglob("*") if p.name.startswith(".tmp") or ".tmp-" in p.name
            or p.name.endswith((".tmp", ".partial"))]


def _cli_options(name: str) -> list[str]:
    args = []
    for key, value in OPTIONS.get(name, {}).items():
        if isinstance(value, (str, int, float)):
            args += ["--option", f"{key}={value}"]
    return args


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault_case(name, corpus_root, clean, ray_session):
    case = CASES[name]
    expect = case.expect
    clean_source, baseline = clean(case.format)
    source = write_case(corpus_root / "cases", case, clean_source)
    store_path = corpus_root / "stores" / name
    fmt = FORMAT_OF.get(case.format, case.format)
    if expect.rc == 2:
        result = CliRunner().invoke(app, ["ingest", str(source), "--store", str(store_path), "--format", fmt,
                                          "--dataset", DATASET, *_cli_options(case.format)])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert "Traceback" not in result.output
        for words in expect.message:
            assert words in lines[0], lines[0]
        assert not (store_path / "refs").exists() or not any((store_path / "refs").iterdir())
        assert no_half_written_files(store_path) == []
        return

    report = run_ingest(str(source), str(store_path), format=fmt, options={**_options(case.format), **case.options},
                        config=CONFIG)
    quarantined = {q["source_key"]: q for q in report.quarantined}
    assert sorted(quarantined) == sorted(expect.quarantined), report.quarantined
    for key, (file_part, field_name, words) in expect.quarantined.items():
        record = quarantined[key]
        assert file_part in record["file"], record
        assert record["field"] == field_name, record
        assert record["episode_id"] in {key, make_episode_id(DATASET, key)}, record
        assert words in record["reason"], record
    missing = {m["source_key"]: m["reason"] for m in report.missing}
    assert sorted(missing) == sorted(expect.missing), report.missing
    for key, words in expect.missing.items():
        assert words in missing[key], missing[key]
    duplicates = {d["source_key"]: d["same_as"] for d in report.duplicates}
    assert duplicates == expect.duplicates, report.duplicates

    content_duplicates = sum(bool(d["episode_id"]) for d in report.duplicates)
    assert report.episodes_in == report.stored + report.reused + len(report.quarantined) + content_duplicates
    assert report.stored + report.reused == len(expect.kept)
    assert no_half_written_files(store_path) == []

    if not expect.kept:
        assert report.version_id == ""
        return
    got = snapshot(store_path)
    assert sorted(got) == sorted(expect.kept)
    for key in expect.kept:
        expected = baseline[key]
        if key in expect.masked:
            expected = masked_as_nan(expected, *expect.masked[key])
        assert_bit_exact(got[key], expected, key)
