"""The same jobs run unchanged under `ray job submit` against a `ray start --head` on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import resolve
from tests.conftest import REPO, free_port

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    temp = tmp_path_factory.mktemp("rayhead")
    gcs, dashboard = free_port(), free_port()
    # The job's `python` must be this interpreter (the venv), also when the venv is not activated.
    env = {**os.environ, "RAY_AUTH_MODE": "token",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=true",
         f"--temp-dir={temp}", f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
         f"--object-manager-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(address, head)
        yield address, env
    finally:  # also when the head never came up: never leave a cluster behind
        _stop(head)


def _wait_for_dashboard(address: str, head: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:  # up, and asking for the auth token
            return
        except OSError:
            if head.poll() is not None:
                pytest.fail("ray start --head exited")
            time.sleep(1)
    pytest.fail("the Ray dashboard did not come up")


def _stop(head: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)


def _submit(address: str, env: dict, *job: str) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", ".",
                           "--runtime-env", "infra/runtime_env.yaml", "--", "python", "-m", *job],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_ingest_and_shard_run_under_ray_job_submit(ray_head, tmp_path):
    address, env = ray_head
    source = write_sample_dataset(tmp_path / "src", SampleSpec(num_episodes=3, height=96, width=128, min_steps=20,
                                                               max_steps=30))
    store = tmp_path / "store"
    ingest = _submit(address, env, "jobs.ingest", str(source), "--store", str(store))
    assert ingest.returncode == 0, ingest.stdout[-3000:] + ingest.stderr[-3000:]
    assert "succeeded" in ingest.stdout + ingest.stderr
    version_id, manifest = resolve(EpisodeStore(str(store)), "latest")
    assert manifest.totals["episodes"] == 3
    shard = _submit(address, env, "jobs.shard", "--store", str(store), "--size", "64x64", "--shard-mb", "1")
    assert shard.returncode == 0, shard.stdout[-3000:] + shard.stderr[-3000:]
    views = list((store / "views").glob("*/view.json"))
    assert len(views) == 1 and version_id in views[0].read_text()
