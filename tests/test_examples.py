"""The examples train end to end on the sample view: plain PyTorch, torchrun DDP resumed after a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, free_port


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_plain_pytorch_example_trains_and_deploys_without_the_store(sample_view, tmp_path):
    store, view_id, _ = sample_view
    out = subprocess.run([sys.executable, "-m", "examples.train_plain", "--store", str(store), "--view-id", view_id,
                          "--steps", "30", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                         env=_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["steps"] == 30 and result["last_loss"] < result["first_loss"]
    assert result["deployed_chunk"] == [10, 14]
    assert (tmp_path / "norm_stats.json").exists() and (tmp_path / "policy.pt").exists()


def _torchrun(store: Path, view_id: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "examples.train_ddp", "--store", str(store), "--view-id", view_id,
               "--steps", "6", "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=600)


def _keys(out: Path, rank: int) -> list[tuple[int, list[str]]]:
    lines = (out / f"keys-rank{rank}.jsonl").read_text().splitlines()
    return [(row["step"], row["keys"]) for row in map(json.loads, lines)]


def test_ddp_example_resumed_after_a_kill_sees_the_identical_remaining_sequence(sample_view, tmp_path):
    store, view_id, _ = sample_view
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    done = _torchrun(store, view_id, reference)
    assert done.returncode == 0, done.stderr[-3000:]
    died = _torchrun(store, view_id, killed, "--kill-after", "3")
    assert died.returncode != 0  # rank 0 was SIGKILLed mid-epoch
    assert [step for step, _ in _keys(killed, 0)] == [1, 2, 3]
    resumed = _torchrun(store, view_id, killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in (0, 1):
        want = _keys(reference, rank)
        assert len(want) == 6 and _keys(killed, rank) == want, rank  # steps 1-3 before the kill, 4-6 resumed
    ranks = [k for _, keys in _keys(reference, 0) for k in keys], [k for _, keys in _keys(reference, 1) for k in keys]
    assert not set(ranks[0]) & set(ranks[1])  # ranks read disjoint samples
