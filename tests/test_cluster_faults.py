"""Cluster faults on a real multi-node Ray on loopback (a head and two worker raylets), store on S3 (moto):
a worker node killed mid-ingest or mid-shard costs nothing — the same version id and byte-identical
shards as a clean run — and a driver killed mid-job leaves no Ray process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline.samples import SampleSpec, write_sample_dataset
from tests.conftest import create_bucket

DRIVER = Path(__file__).with_name("cluster_faults_driver.py")
EPISODES = 6
RUN_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def cluster_source(tmp_path_factory) -> Path:
    spec = SampleSpec(num_episodes=EPISODES, height=96, width=128, min_steps=40, max_steps=60, episodes_per_file=1)
    return write_sample_dataset(tmp_path_factory.mktemp("cluster") / "src", spec)


def _run_driver(source: Path, endpoint: str, bucket: str, kill: str) -> dict:
    create_bucket(endpoint, bucket)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "CLUSTER_DUMP_AFTER_S": str(RUN_TIMEOUT_S - 20)}
    done = subprocess.run([sys.executable, str(DRIVER), str(source), endpoint, bucket, kill], env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"driver ({kill}) failed rc={done.returncode}:\n{done.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def clean_run(cluster_source, s3_endpoint) -> dict:
    return _run_driver(cluster_source, s3_endpoint[0], "cluster-clean", "none")


def test_clean_run_on_three_nodes_shards_every_episode(clean_run):
    assert clean_run["stored"] == EPISODES and clean_run["quarantined"] == 0
    tars = [p for p in clean_run["shards"] if p.endswith(".tar")]
    assert len(tars) >= 6
    assert clean_run["nodes"] == clean_run["alive_nodes"] == 3  # head + two workers


def _assert_same_result(killed: dict, clean: dict) -> None:
    """A killed node cost nothing: every episode in the version, the same version and view, same bytes."""
    assert killed["killer_error"] == "" and killed["victim_alive"] is False  # its raylet and workers are gone
    assert killed["stored"] + killed["reused"] == EPISODES and killed["quarantined"] == 0, killed
    assert killed["version"] == clean["version"] and killed["view"] == clean["view"]
    assert killed["samples"] == clean["samples"]
    assert killed["shards"] == clean["shards"]  # every shard, index, view manifest and sample table
    # the replacement joined (the dead node may still count as alive until its health checks time out)
    assert killed["alive_nodes"] >= 3


def test_worker_node_killed_mid_ingest_changes_nothing(cluster_source, s3_endpoint, clean_run):
    killed = _run_driver(cluster_source, s3_endpoint[0], "cluster-kill-ingest", "ingest")
    # the node went down while episodes were still being ingested (>= 2 done, not all)
    assert 2 <= killed["killed_at_progress"] < EPISODES, killed
    _assert_same_result(killed, clean_run)


def test_worker_node_killed_mid_shard_changes_nothing(cluster_source, s3_endpoint, clean_run):
    killed = _run_driver(cluster_source, s3_endpoint[0], "cluster-kill-shard", "shard")
    tars = [p for p in clean_run["shards"] if p.endswith(".tar")]
    assert 1 <= killed["killed_at_progress"] < len(tars), killed
    _assert_same_result(killed, clean_run)


def _ray_processes(temp_dir: str) -> list[psutil.Process]:
    """Processes of the Ray whose files live under ``temp_dir`` (their command lines name it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_killed_driver_leaves_no_ray_process(cluster_source, tmp_path):
    temp_dir = f"/tmp/rk{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": temp_dir}
    cli = [sys.executable, "-m", "jobs.cli", "ingest", str(cluster_source), "--store", str(tmp_path / "store")]
    driver = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any("default_worker" in " ".join(p.cmdline())
                                                 for p in _ray_processes(temp_dir)
                                                 if p.is_running()):
            time.sleep(0.2)
        started = _ray_processes(temp_dir)
        assert started, "the driver never started its Ray"
        assert driver.poll() is None, "the job ended before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.time() + 60
        while time.time() < deadline and (left := [p for p in _ray_processes(temp_dir) if p.is_running()
                                                   and p.status() != psutil.STATUS_ZOMBIE]):
            time.sleep(0.5)
        left = [p for p in _ray_processes(temp_dir) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"{len(left)} Ray processes outlived their driver: {[p.info['cmdline'][:2] for p in left]}"
        assert len(started) >= 3  # gcs, raylet, workers at least: the check above looked at something
    finally:
        if driver.poll() is None:
            driver.kill()
        for proc in _ray_processes(temp_dir):
            proc.kill()
