"""A faulty S3 on loopback: an HTTP reverse proxy in front of moto's server that, while armed, answers
some requests the way a busy S3 does (``503 SlowDown``, S3's XML error body) and drops others (TCP
reset before the request reaches moto, so no write is half applied). Faults follow a fixed schedule
(every n-th request while armed), and every injected fault is counted, so a test can check that a
job's report counted exactly the faults it rode out."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 b"<Message>Please reduce your request rate.</Message><RequestId>FAULTY</RequestId></Error>")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class FaultyS3:
    """``endpoint_url`` forwards to ``upstream`` (host, port); ``arm(every, kinds)`` starts faults."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._every = 0
        self._kinds: tuple[str, ...] = ()
        self._seen = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def arm(self, every: int, kinds: tuple[str, ...] = ("SlowDown", "connection")) -> None:
        """Fault every ``every``-th request from now on, cycling through ``kinds``."""
        with self._lock:
            self._every, self._kinds, self._seen = every, kinds, 0
            self.injected.clear()

    def disarm(self) -> dict[str, int]:
        """Stop faulting; the faults injected since ``arm``."""
        with self._lock:
            self._every = 0
            return dict(self.injected)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _fault_for_next(self) -> str | None:
        with self._lock:
            self.requests += 1
            if not self._every:
                return None
            self._seen += 1
            if self._seen % self._every:
                return None
            kind = self._kinds[(self._seen // self._every - 1) % len(self._kinds)]
            self.injected[kind] += 1
            return kind

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    return self._chunked_body()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _chunked_body(self) -> bytes:
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def _slow_down(self) -> None:
                body = b"" if self.command == "HEAD" else SLOWDOWN_BODY
                self.send_response(503, "Slow Down")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                headers.pop("Expect", None)
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status, answer.reason)
                head = self.command == "HEAD"  # a HEAD answer's Content-Length is the object's size: keep it
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP_BY_HOP and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._fault_for_next()
                if fault == "connection":
                    self._reset()
                elif fault == "SlowDown":
                    self._slow_down()
                else:
                    self._forward(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
