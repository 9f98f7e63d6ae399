"""S3 throttling and dropped connections during ingest and shard: the jobs ride them out with
backoff, count every fault they saw, and produce the same version id and byte-identical shards as a
run against a healthy S3. The store is on moto's server behind a faulty proxy (tests/s3_faults.py)."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest

from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.shards import ViewConfig
from tests.conftest import create_bucket
from tests.s3_faults import FaultyS3

VIEW = ViewConfig(height=48, width=64, segment_steps=32, max_action_horizon=8, target_shard_bytes=300_000,
                  decoder="pyav")


@pytest.fixture(scope="module")
def faulty_s3(s3_endpoint):
    url, options = s3_endpoint
    proxy = FaultyS3(urlparse(url).port)
    create_bucket(url, "faults")
    faulty = {**options, "client_kwargs": {**options["client_kwargs"], "endpoint_url": proxy.endpoint_url}}
    yield proxy, options, faulty
    proxy.close()


def _shards(store_uri: str, options: dict, view_id: str) -> list[tuple[str, str]]:
    from pipeline.store.episodes import EpisodeStore

    store = EpisodeStore(store_uri, options)
    manifest = json.loads(store.objects.read_bytes(f"views/{view_id}/view.json"))
    return [(s["name"], s["tar_sha256"]) for s in manifest["shards"]]


def _assert_counted(counted: dict, injected: dict) -> None:
    """Every injected fault seen once: a HEAD's 503 carries no body, so it counts as "HTTP 503"."""
    assert injected.get("SlowDown", 0) >= 1 and injected.get("connection", 0) >= 1
    assert counted.get("SlowDown", 0) + counted.get("HTTP 503", 0) == injected["SlowDown"]
    assert counted.get("connection", 0) == injected["connection"]
    assert set(counted) <= {"SlowDown", "HTTP 503", "connection"}


def test_throttling_and_resets_are_retried_counted_and_change_nothing(tmp_path, faulty_s3, ray_session):
    from jobs.ingest import run_ingest
    from jobs.shard import run_shard

    proxy, healthy, faulty = faulty_s3
    source = write_sample_dataset(tmp_path / "src", SampleSpec(num_episodes=4, height=48, width=64, min_steps=40,
                                                                max_steps=60))
    clean = run_ingest(str(source), "s3://faults/clean", storage_options=healthy)
    clean_view = run_shard("s3://faults/clean", VIEW, storage_options=healthy)
    assert clean.storage_retries == {} and clean_view[0].storage_retries == {}

    proxy.arm(every=9)
    report = run_ingest(str(source), "s3://faults/faulty", storage_options=faulty)
    injected = proxy.disarm()
    assert report.stored == 4 and not report.quarantined and report.version_id == clean.version_id
    _assert_counted(report.storage_retries, injected)

    proxy.arm(every=9)
    shard_report, view_id = run_shard("s3://faults/faulty", VIEW, storage_options=faulty)
    injected = proxy.disarm()
    assert view_id == clean_view[1]
    _assert_counted(shard_report.storage_retries, injected)
    assert _shards("s3://faults/faulty", healthy, view_id) == _shards("s3://faults/clean", healthy, view_id)
    assert shard_report.to_json()["storage_retries"] == shard_report.storage_retries
