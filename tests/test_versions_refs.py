"""Refs and commits: compare-and-swap on local disk and on S3 (moto's server), crash safety, gc of orphans.

The concurrency tests start two processes that each commit to one ref 20 times as fast as they
can, every commit built on the head it just read. No lost update: every commit either lands (and
is then in the ref's linear history exactly once, with the head it read as parent) or raises
``RefConflict``; the ref log has one entry per landed commit and never two for one head.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from fractions import Fraction
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.store.episodes import EpisodeStore  # noqa: E402
from pipeline.store.gc import collect_garbage  # noqa: E402
from pipeline.store.refs import RefConflict, read_head, ref_log, update_ref  # noqa: E402
from pipeline.store.versions import VersionManifest, commit_version, read_manifest, ref_head, resolve  # noqa: E402
from schemas import EpisodeMeta  # noqa: E402

COMMITS = 20


def _manifest(store: EpisodeStore, parent: str | None, tag: str, layer_bytes: int = 64) -> VersionManifest:
    """A manifest with a one-row catalog layer of its own (distinct content, so a distinct version)."""
    meta = EpisodeMeta(episode_id=f"t-{tag}", dataset="t", source_format="test", source_uri="", source_key=tag,
                       source_checksum="", kind="teleop", embodiment="x", control_fps=Fraction(30), num_steps=1,
                       state_names=[], action_names=[], extras={"pad": os.urandom(layer_bytes // 2).hex()})
    layer = store.write_catalog([meta])
    return VersionManifest(catalog=[layer], stats=None, totals={}, producer={"job": "test", "tag": tag},
                           parent=parent)


def _worker(uri: str, options: dict, writer: str, commits: int, barrier: str) -> list[dict]:
    store = EpisodeStore(uri, options)
    Path(barrier, writer).touch()
    deadline = time.time() + 60
    while len(os.listdir(barrier)) < 2 and time.time() < deadline:
        time.sleep(0.001)
    results = []
    for i in range(commits):
        head = ref_head(store, "main")
        manifest = _manifest(store, head, f"{writer}-{i}")
        try:
            version = commit_version(store, manifest, "main")
            results.append({"status": "ok", "version": version, "parent": head})
        except RefConflict as exc:
            assert exc.expected == head and exc.actual != head, exc
            results.append({"status": "conflict", "version": manifest.version_id, "parent": head})
    return results


def _race(uri: str, options: dict, tmp_path: Path) -> None:
    store = EpisodeStore(uri, options)
    base = commit_version(store, _manifest(store, None, "base"), "main")
    barrier = tmp_path / f"barrier-{uuid.uuid4().hex[:6]}"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, __file__, "worker", uri, json.dumps(options), name, str(COMMITS),
                               str(barrier)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
             for name in ("a", "b")]
    outputs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    results = [r for out in outputs for r in out]
    assert len(results) == 2 * COMMITS
    assert {r["status"] for r in results} <= {"ok", "conflict"}
    landed = [r for r in results if r["status"] == "ok"]
    assert landed, "no commit landed"
    assert len(landed) < len(results), "no conflict at all: the two writers never raced"

    log = ref_log(store.objects, "main")
    assert [e.seq for e in log] == list(range(1, len(landed) + 2))  # base + every landed commit, no gaps
    assert log[0].version == base and log[0].previous is None
    for before, after in itertools.pairwise(log):
        assert after.previous == before.version  # linear: each move started from the head before it
        assert read_manifest(store, after.version).parent == before.version
    assert sorted(e.version for e in log[1:]) == sorted(r["version"] for r in landed)  # no lost update
    for r in landed:
        assert read_manifest(store, r["version"]).parent == r["parent"]
    conflicted = {r["version"] for r in results if r["status"] == "conflict"}
    assert not conflicted & {e.version for e in log}  # a conflicted commit never became visible

    chain, current = [], ref_head(store, "main")
    while current is not None:
        chain.append(current)
        current = read_manifest(store, current).parent
    assert chain[::-1] == [e.version for e in log]
    assert read_head(store.objects, "main").seq == len(log)


def test_concurrent_commits_local(tmp_path):
    _race(str(tmp_path / "store"), {}, tmp_path)


@pytest.fixture
def s3_store(s3_endpoint):
    import boto3

    url, options = s3_endpoint
    bucket = f"refs-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/store", options


def test_concurrent_commits_s3(s3_store, tmp_path):
    uri, options = s3_store
    _race(uri, options, tmp_path)


def test_s3_exclusive_create_and_conflict(s3_store):
    uri, options = s3_store
    store = EpisodeStore(uri, options)
    assert store.objects.create_exclusive("refs/x/log/000000000001.json", b"one")
    assert not store.objects.create_exclusive("refs/x/log/000000000001.json", b"two")
    assert store.objects.read_bytes("refs/x/log/000000000001.json") == b"one"
    first = commit_version(store, _manifest(store, None, "first"), "main")
    second = _manifest(store, None, "stale")  # built on no head while the ref exists: must not land
    with pytest.raises(RefConflict) as info:
        commit_version(store, second, "main")
    assert info.value.actual == first
    assert resolve(store, "main")[0] == first


def test_s3_object_written_by_another_process_after_a_listing_is_read(s3_store):
    """A folder this process listed (and fsspec cached) gains an object written elsewhere (a Ray worker):
    reading it must not answer "not found" from the stale listing."""
    import s3fs

    uri, options = s3_store
    store = EpisodeStore(uri, options)
    store.objects.write_atomic("shards/ab/first.json", b"1")
    assert store.objects.list_dir("shards/ab") == ["first.json"]
    store.fs.find(store.objects.abspath("shards"))  # the listing fsspec keeps and answers from
    elsewhere = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    elsewhere.pipe(store.objects.abspath("shards/ab/second.json"), b"22")
    assert store.objects.read_bytes("shards/ab/second.json") == b"22"
    assert store.objects.sha256_of("shards/ab/second.json") == hashlib.sha256(b"22").hexdigest()
    with pytest.raises(FileNotFoundError):
        store.objects.read_bytes("shards/ab/absent.json")


def test_conflict_then_retry_on_new_head(tmp_path):
    store = EpisodeStore(str(tmp_path / "store"))
    v1 = commit_version(store, _manifest(store, None, "1"), "main")
    mine = _manifest(store, v1, "mine")
    theirs = commit_version(store, _manifest(store, v1, "theirs"), "main")
    with pytest.raises(RefConflict) as info:
        commit_version(store, mine, "main")
    assert info.value.actual == theirs
    retried = commit_version(store, _manifest(store, info.value.actual, "mine-again"), "main")
    assert ref_head(store, "main") == retried
    assert read_manifest(store, retried).parent == theirs
    with pytest.raises(RefConflict):
        update_ref(store.objects, "main", v1, expect=v1)  # expect is stale: the head is `retried`


def test_same_content_commit_is_a_no_op(tmp_path):
    store = EpisodeStore(str(tmp_path / "store"))
    manifest = _manifest(store, None, "x")
    v1 = commit_version(store, manifest, "main")
    again = VersionManifest(catalog=manifest.catalog, stats=None, totals={}, producer={"job": "rerun"}, parent=v1)
    assert commit_version(store, again, "main") == v1
    assert len(ref_log(store.objects, "main")) == 1


def _committer(uri: str, rounds: int) -> None:
    """Commit large manifests in a loop until killed."""
    store = EpisodeStore(uri)
    for i in range(rounds):
        head = ref_head(store, "main")
        manifest = _manifest(store, head, f"k-{i}", layer_bytes=2_000_000)
        manifest.producer["padding"] = "x" * 200_000  # a big manifest: the kill often lands mid-write
        with contextlib.suppress(RefConflict):
            commit_version(store, manifest, "main")


def test_killed_mid_commit_leaves_a_complete_version(tmp_path):
    uri = str(tmp_path / "store")
    store = EpisodeStore(uri)
    commit_version(store, _manifest(store, None, "base"), "main")
    for delay in (0.6, 0.9, 1.2, 1.5, 1.8):
        landed = len(ref_log(store.objects, "main"))
        proc = subprocess.Popen([sys.executable, __file__, "committer", uri, "1000"], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        # The delays count from the committer's first landed commit, so a slow start (a loaded machine spends
        # seconds on imports) cannot turn the test into killing a process that never committed.
        deadline = time.monotonic() + 120
        while len(ref_log(store.objects, "main")) == landed and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        head, manifest = resolve(store, "main")  # read_manifest re-hashes: a torn manifest would fail here
        assert manifest.version_id == head
        for layer in manifest.catalog:
            assert store.objects.sha256_of(layer.path) == layer.sha256
        for entry in ref_log(store.objects, "main"):
            assert store.objects.exists(f"versions/{entry.version}.json")
    assert len(ref_log(store.objects, "main")) > 1  # the committer did land some commits


def test_crash_before_ref_move_leaves_no_version_and_gc_reclaims(tmp_path):
    store = EpisodeStore(str(tmp_path / "store"))
    v1 = commit_version(store, _manifest(store, None, "1"), "main")
    orphan = _manifest(store, v1, "orphan")  # objects written, then the job "dies" before the commit
    orphan_layer = orphan.catalog[0].path
    store.objects.write_atomic(f"versions/{orphan.version_id}.json", orphan.canonical_bytes())
    (tmp_path / "store" / "objects" / ".tmp-leftover").write_bytes(b"partial")
    assert ref_head(store, "main") == v1

    dry = collect_garbage(store, delete=False, grace_s=0)
    garbage = {p for p, _ in dry.garbage}
    assert garbage == {orphan_layer, f"versions/{orphan.version_id}.json", "objects/.tmp-leftover"}
    assert store.objects.exists(orphan_layer)  # a dry run deletes nothing
    assert collect_garbage(store, delete=False).garbage == []  # younger than the default grace period

    done = collect_garbage(store, delete=True, grace_s=0)
    assert done.deleted == 3
    assert not store.objects.exists(orphan_layer)
    assert resolve(store, "main")[0] == v1
    assert collect_garbage(store, delete=False, grace_s=0).garbage == []


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        print(json.dumps(_worker(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])))
    elif sys.argv[1] == "committer":
        _committer(sys.argv[2], int(sys.argv[3]))
