"""Runs ingest and shard on a real multi-node Ray (one head, two worker raylets on loopback) against an S3
store, optionally killing a worker node mid-job; prints one JSON line with what the jobs produced.

Run as a subprocess by tests/test_cluster_faults.py so that a hang is bounded by the test's timeout and
every Ray process of the cluster goes with it:

    python tests/cluster_faults_driver.py SOURCE ENDPOINT BUCKET {none|ingest|shard}
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path

import psutil
import ray
from ray.cluster_utils import Cluster

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.ingest import run_ingest  # noqa: E402
from jobs.shard import run_shard  # noqa: E402
from pipeline.shards import ViewConfig  # noqa: E402
from pipeline.store.episodes import EpisodeStore  # noqa: E402

WORKER_CPUS = 1


class NodeKiller:
    """Kills one worker node (its raylet and every worker process on it) once the job has visibly made
    progress on the store, then adds a fresh node so the cluster keeps its size, as an autoscaler would.

    The job runs in a thread and the watching in the main thread: starting a node installs signal
    handlers, which Python allows only there."""

    def __init__(self, cluster: Cluster, victim, store: EpisodeStore, prefix: str, suffix: str, after: int) -> None:
        self.cluster, self.victim, self.store = cluster, victim, store
        self.prefix, self.suffix, self.after = prefix, suffix, after
        self.killed_at_progress = -1
        self.error = ""
        self.victim_alive = True

    def _progress(self) -> int:
        fs, base = self.store.fs, self.store.objects.abspath(self.prefix)
        try:
            return sum(1 for p in fs.find(base) if p.endswith(self.suffix))
        except FileNotFoundError:
            return 0

    def _victim_alive_after(self, seconds: float) -> bool:
        """Whether a process of the killed node (its raylet, a worker it started) is alive after ``seconds``.

        They are found by the node's raylet socket, which each names on its command line."""
        socket_name = self.victim._raylet_socket_name
        deadline = time.time() + seconds
        while (alive := self.victim.any_processes_alive() or _processes_naming(socket_name)) and time.time() < deadline:
            time.sleep(0.2)
        return bool(alive)

    def run(self, job):
        """``job()``'s result, with the node killed (and replaced) under it once progress shows."""
        outcome: dict = {}

        def work() -> None:
            try:
                outcome["value"] = job()
            except BaseException as exc:  # re-raised in the main thread
                outcome["error"] = exc

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        while thread.is_alive() and self.killed_at_progress < 0:
            self.store.fs.invalidate_cache()
            progress = self._progress()
            if progress >= self.after:
                self.killed_at_progress = progress
                try:
                    self.cluster.remove_node(self.victim, allow_graceful=False)
                    self.victim_alive = self._victim_alive_after(10.0)
                    self.cluster.add_node(num_cpus=WORKER_CPUS)
                except Exception as exc:  # reported in the result
                    self.error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def _processes_naming(text: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(text in part for part in proc.info["cmdline"] or []):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def shard_digests(store: EpisodeStore) -> dict[str, str]:
    """SHA-256 of every shard, index, view manifest and sample table in the store, by store path."""
    out = {}
    for prefix in ("shards", "views"):
        base = store.objects.abspath(prefix)
        paths = store.fs.find(base) if store.fs.exists(base) else []
        out |= {p[p.index(f"/{prefix}/") + 1:]: hashlib.sha256(store.fs.cat_file(p)).hexdigest()
                for p in sorted(paths)}
    return out


def main() -> None:
    source, endpoint, bucket, kill = sys.argv[1:5]
    faulthandler.dump_traceback_later(float(os.environ.get("CLUSTER_DUMP_AFTER_S", "400")), exit=True)
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    uri = f"s3://{bucket}/store"
    os.environ["PYTHONPATH"] = f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"  # the raylets' workers import the repo
    # No dashboard: its module process was seen spinning a core after a node kill and ignoring SIGTERM,
    # so Cluster.shutdown() waited on it for ever (nothing here uses the dashboard).
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=WORKER_CPUS) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    store = EpisodeStore(uri, options)
    result: dict = {"nodes": len(ray.nodes())}
    try:
        ingest = partial(run_ingest, source, uri, storage_options=options, ray_address=cluster.address)
        if kill == "ingest":
            killer = NodeKiller(cluster, workers[0], store, "index/ingested", ".json", after=2)
            report = killer.run(ingest)
            result["killed_at_progress"] = killer.killed_at_progress
            result["killer_error"] = killer.error
            result["victim_alive"] = killer.victim_alive
        else:
            report = ingest()
        result |= {"version": report.version_id, "stored": report.stored, "reused": report.reused,
                   "quarantined": len(report.quarantined),
                   "quarantine_reasons": [q.get("reason", "") for q in report.quarantined],
                   "episodes_in": report.episodes_in}
        view = ViewConfig(height=64, width=64, frame_codec="npy", segment_steps=32, target_shard_bytes=1 << 16,
                          min_shards=6)
        shard = partial(run_shard, uri, view, storage_options=options, ray_address=cluster.address, concurrency=2)
        if kill == "shard":
            killer = NodeKiller(cluster, workers[1], store, "shards", ".tar", after=1)
            shard_report, view_id = killer.run(shard)
            result["killed_at_progress"] = killer.killed_at_progress
            result["killer_error"] = killer.error
            result["victim_alive"] = killer.victim_alive
        else:
            shard_report, view_id = shard()
        result |= {"view": view_id, "shards": shard_digests(store), "samples": shard_report.extra["samples"]}
        result["alive_nodes"] = sum(n["Alive"] for n in ray.nodes())
    finally:
        ray.shutdown()
        cluster.shutdown()
    faulthandler.cancel_dump_traceback_later()
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
