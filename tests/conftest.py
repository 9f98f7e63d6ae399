"""Shared fixtures: one local Ray per test session, generated sample data, an ingested store, a view,
and a real S3 endpoint (moto's server) on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The read-only sample data beside the repository (../shared/data); ACTIONREEL_SHARED_DATA points elsewhere.
SHARED = Path(os.environ.get("ACTIONREEL_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL = SHARED / "real"
REFERENCE = SHARED / "reference"

LEROBOT_V20 = REAL / "lerobot_v2.0" / "gr00t-robot-sim-picknplace"
LEROBOT_V21 = REAL / "lerobot_v2.1" / "unitree-g1-pick-bottle"
LEROBOT_V30 = REFERENCE / "lerobot_v3.0_h264_aloha_small"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (starting Ray costs seconds)."""
    import ray

    from jobs.raycluster import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def sample_source(tmp_path_factory) -> Path:
    """The generated LeRobot v3.0 sample dataset (the one `actionreel samples` writes)."""
    from pipeline.samples import SampleSpec, write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("samples") / "lerobot-v3", SampleSpec())


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory, sample_source, ray_session):
    """The sample dataset ingested once: (store path, ingest report)."""
    from jobs.ingest import run_ingest

    store = tmp_path_factory.mktemp("store")
    report = run_ingest(str(sample_source), str(store))
    return store, report


@pytest.fixture(scope="session")
def sample_view(sample_store):
    """A 224x224 view of the sample store in several shards: (store path, view id, view config)."""
    from jobs.shard import run_shard
    from pipeline.shards import ViewConfig

    store, _ = sample_store
    # decoder pinned to the CPU reference path: the byte-reproducibility test rebuilds it with PyAV,
    # and on a GPU machine "auto" would route these 480p videos to NVDEC.
    view = ViewConfig(height=224, width=224, segment_steps=32, max_action_horizon=50, target_shard_bytes=6_000_000,
                      decoder="pyav")
    _, view_id = run_shard(str(store), view)
    return store, view_id, view


LETTERBOX_PAD = 17  # not black: padding that equals it is the fill, not dark content


@pytest.fixture(scope="session")
def letterbox_view(sample_store):
    """A 224x224 letterboxed (resize="pad") view of the sample store's high camera: (store, view id, config)."""
    from jobs.shard import run_shard
    from pipeline.shards import ViewConfig

    store, _ = sample_store
    view = ViewConfig(cameras=("cam_high",), height=224, width=224, segment_steps=64, resize="pad",
                      pad_value=LETTERBOX_PAD, decoder="pyav")
    _, view_id = run_shard(str(store), view)
    return store, view_id, view


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server) on loopback; yields (endpoint_url, storage_options)."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"}}
    yield url, options
    proc.terminate()
    proc.wait(timeout=10)


def create_bucket(endpoint_url: str, name: str) -> None:
    """A bucket on the test S3 endpoint (s3fs's mkdir sends a location constraint moto rejects)."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=name)
