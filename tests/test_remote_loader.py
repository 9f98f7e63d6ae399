"""Loaders over S3 (moto's server on loopback): same samples as locally, transient 500s retried,
the local shard cache never above its byte cap."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fsspec
import pytest
import torch

from pipeline.loaders import ResumableLoader, ShardCache, ViewSource, VLAConfig, VLADataset
from tests.conftest import create_bucket


class FlakyProxy:
    """Forwards HTTP to the S3 endpoint; answers 500 to the first GET of each shard tar."""

    def __init__(self, upstream_port: int) -> None:
        self.failed: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    fail = self.command == "GET" and self.path.split("?")[0].endswith(".tar") and \
                        self.path.split("?")[0] not in proxy.failed
                    if fail:
                        proxy.failed.append(self.path.split("?")[0])
                if fail:
                    self.send_response(500)
                    payload = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def remote_view(sample_view, s3_endpoint):
    store, view_id, _ = sample_view
    url, options = s3_endpoint
    create_bucket(url, "loader-test")
    fs = fsspec.filesystem("s3", **options)
    for sub in ("views", "shards", "objects/stats", "refs", "versions"):
        if (store / sub).exists():
            fs.put(str(store / sub), f"loader-test/store/{sub}", recursive=True)
    proxy = FlakyProxy(int(url.rsplit(":", 1)[1]))
    proxied = {**options, "client_kwargs": {**options["client_kwargs"], "endpoint_url": f"http://127.0.0.1:{proxy.port}"}}
    yield store, view_id, "s3://loader-test/store", proxied, proxy
    proxy.close()


def _local_keys(store, view_id, config):
    return [k for b in ResumableLoader(VLADataset(ViewSource(str(store), view_id), config), num_workers=0)
            for k in b["key"]]


def test_s3_with_cache_yields_the_local_sequence_and_stays_under_the_cap(remote_view, tmp_path):
    store, view_id, uri, options, proxy = remote_view
    config = VLAConfig(batch_size=16, seed=8, action_horizon=16)
    expected = _local_keys(store, view_id, config)
    local_source = ViewSource(str(store), view_id)
    largest = max(s.tar_bytes for s in local_source.manifest.shards)
    cap = largest * 2 + 1
    assert cap < sum(s.tar_bytes for s in local_source.manifest.shards)  # eviction must happen
    cache = ShardCache(tmp_path / "cache", max_bytes=cap)
    remote = ViewSource(uri, view_id, storage_options=options, cache=cache)
    local = VLADataset(local_source, config)
    keys, peak = [], 0
    for number, batch in enumerate(ResumableLoader(VLADataset(remote, config), num_workers=2)):
        keys += batch["key"]
        peak = max(peak, cache.used_bytes())
        assert cache.used_bytes() <= cap
        if number < 3:  # byte-equal tensors, not only keys
            want = local.batch_at(local.plan().positions(number))
            assert torch.equal(batch["images"], want["images"]) and torch.equal(batch["actions"], want["actions"])
    assert keys == expected
    assert proxy.failed, "no transient error was injected"
    assert 0 < peak <= cap


def test_s3_without_cache_reads_ranges_and_matches(remote_view):
    store, view_id, uri, options, _ = remote_view
    config = VLAConfig(batch_size=8, seed=2, action_horizon=16)
    remote = VLADataset(ViewSource(uri, view_id, storage_options=options), config)
    local = VLADataset(ViewSource(str(store), view_id), config)
    for j in range(4):
        got, want = remote.batch_at(remote.plan().positions(j)), local.batch_at(local.plan().positions(j))
        assert got["key"] == want["key"]
        assert torch.equal(got["images"], want["images"]) and torch.equal(got["state"], want["state"])
