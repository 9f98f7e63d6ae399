"""The ingest job: bad episodes are quarantined with reasons, the job completes; re-runs are free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.samples import SampleSpec, write_sample_dataset
from tests.conftest import REPO

SMALL = SampleSpec(num_episodes=6, height=96, width=128, min_steps=30, max_steps=40, layout="v2.1", seed=5)


def _run_ingest_cli(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "jobs.ingest", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)


def _corrupt(root: Path) -> None:
    """Episode 1: truncated mp4. Episode 2: parquet has 5 rows fewer than its video. Episode 3: a NaN action."""
    video = root / "videos/chunk-000/observation.images.cam_high/episode_000001.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    rows = root / "data/chunk-000/episode_000002.parquet"
    table = pq.read_table(rows)
    pq.write_table(table.slice(0, table.num_rows - 5), rows)
    episodes = [json.loads(line) for line in (root / "meta/episodes.jsonl").read_text().splitlines()]
    episodes[2]["length"] -= 5  # metadata agrees with the parquet; only the video disagrees
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    nan_file = root / "data/chunk-000/episode_000003.parquet"
    table = pq.read_table(nan_file)
    action = np.stack(table.column("action").to_numpy(zero_copy_only=False)).copy()
    action[7, 3] = np.nan
    column = pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), action.shape[1])
    pq.write_table(table.set_column(table.column_names.index("action"), "action", column), nan_file)


def test_bad_episodes_are_quarantined_with_reasons_and_the_job_exits_0(tmp_path):
    source = write_sample_dataset(tmp_path / "bad", SMALL)
    _corrupt(source)
    report_path = tmp_path / "report.json"
    result = _run_ingest_cli(str(source), "--store", str(tmp_path / "store"), "--report", str(report_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 episodes quarantined" in result.stdout or "3 quarantined" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["episodes_in"] == 6 and report["stored"] == 3 and len(report["quarantined"]) == 3
    reasons = {q["source_key"]: q for q in report["quarantined"]}
    assert set(reasons) == {"1", "2", "3"}
    assert reasons["1"]["field"] == "cameras.cam_high" and "episode_000001.mp4" in reasons["1"]["file"]
    assert reasons["2"]["field"].startswith("cameras.") and "35 steps" not in reasons["2"]["reason"]
    assert "frames but the episode has" in reasons["2"]["reason"]
    assert reasons["3"]["field"] == "action" and "step 7, dim 3" in reasons["3"]["reason"]

    # --strict: the same run (the good episodes reused, the bad ones quarantined again) exits 3, one line says why
    strict = _run_ingest_cli(str(source), "--store", str(tmp_path / "store"), "--strict")
    assert strict.returncode == 3, strict.stderr[-3000:]
    assert "--strict: 3 episodes quarantined (exit 3)" in strict.stderr
    for item in reasons.values():
        assert item["episode_id"] and item["reason"]
    # Nothing half written: every object in the store is complete (no temp files left behind).
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_missing_info_json_fails_in_one_line_naming_the_path(tmp_path):
    (tmp_path / "empty" / "meta").mkdir(parents=True)
    result = _run_ingest_cli(str(tmp_path / "empty"), "--store", str(tmp_path / "store"), "--format", "lerobot")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(tmp_path / "empty" / "meta" / "info.json") in lines[0]


def test_second_ingest_gives_the_same_version_and_decodes_nothing(sample_store, sample_source):
    from jobs.ingest import run_ingest

    store, first = sample_store
    assert first.stored == 12 and first.decoded == 12 and not first.quarantined
    second = run_ingest(str(sample_source), str(store))
    assert second.version_id == first.version_id
    assert second.stored == 0 and second.reused == 12 and second.decoded == 0


@pytest.mark.parametrize("bad", ["nan_state_unmasked"])
def test_validation_failure_never_writes_objects(tmp_path, bad):
    from fractions import Fraction

    from pipeline.store.episodes import EpisodeStore
    from schemas import CameraInfo, Episode, EpisodeMeta, EpisodeValidationError, FrameSequence, StepArrays

    n = 4
    meta = EpisodeMeta("ds-1", "ds", "t", "u", "1", "c", "teleop", "x", Fraction(10), n, ["s"], ["a"],
                       cameras=[CameraInfo("cam", 16, 16, Fraction(10), "", n)])
    steps = StepArrays(np.arange(n, dtype=np.int64) * 100_000_000, np.array([[0.0], [np.nan], [1.0], [2.0]],
                       np.float32), np.zeros((n, 1), np.float32), frame_index={"cam": np.arange(n)})
    frames = FrameSequence(lambda: iter([np.zeros((16, 16, 3), np.uint8)] * n), n, Fraction(10), 16, 16)
    store = EpisodeStore(str(tmp_path / "store"))
    with pytest.raises(EpisodeValidationError, match="state"):
        store.write_episode(Episode(meta, steps, {"cam": frames}))
    assert not (tmp_path / "store" / "objects").exists()
