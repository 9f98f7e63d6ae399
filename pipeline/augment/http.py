"""Generators behind HTTP: the client a job calls, and a server that exposes any generator.

Protocol (one POST per request, JSON both ways, no multipart):

    POST <url>  Content-Type: application/json
      {<request JSON>, "files": {"<relative path>": "<base64>", ...}}   every file the request names
    200  {<result JSON>, "files": {"<camera>.mp4": "<base64>", ...}}   every file the result names
    4xx  {"error": "..."}   the request is bad: not retried (except 408 and 429)
    5xx  {"error": "..."}   the generator failed: retried

The client bounds the response size and times out per attempt; retries and the number of requests
in flight are the job's (``CallPolicy``). File names in either direction must stay inside their
folder (``pipeline.augment.paths.inside_dir``).
"""

from __future__ import annotations

import base64
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.augment.paths import UnsafePath, inside_dir, parse_json_bounded, write_atomic
from pipeline.augment.protocol import GenerationError, Generator, generator_identity

MAX_BODY_BYTES = 2 * 1024**3
MAX_FILES = 256  # files in one message: a result names a video per camera and an actions file
_READ_CHUNK = 1 << 20


def request_files(request: dict) -> list[str]:
    """Every file a request names, relative to its folder."""
    names = [request.get("input_path", ""), request.get("actions_path", ""), request.get("state_path", "")]
    for camera in (request.get("cameras") or {}).values():
        names.append(camera.get("input_video_path", ""))
        names.extend(frame.get("path", "") for frame in camera.get("conditioning_frames") or [])
    for control in (request.get("controls") or {}).values():
        if isinstance(control, dict):
            names.append(control.get("control_path", ""))
    return sorted({n for n in names if n})


def result_files(result: dict) -> list[str]:
    return sorted({*(result.get("videos") or {}).values(), *([result["actions_path"]] if result.get("actions_path")
                                                             else [])})


def pack_files(folder: str | Path, names: list[str]) -> dict[str, str]:
    return {name: base64.b64encode(inside_dir(folder, name).read_bytes()).decode("ascii") for name in names}


def unpack_files(folder: str | Path, files: dict, max_files: int = MAX_FILES) -> None:
    """Write the files of a message, each under a temp name then renamed (never half-written), all
    names checked first (a refused name writes nothing)."""
    if not isinstance(files, dict):
        raise ValueError("'files' must map relative paths to base64 data")
    if len(files) > max_files:
        raise ValueError(f"{len(files)} files, over the limit of {max_files}")
    targets = []
    for name, data in files.items():
        if not isinstance(data, str):
            raise ValueError(f"file {name!r}: data must be a base64 string, got {type(data).__name__}")
        targets.append((inside_dir(folder, name), data))
    for path, data in targets:
        write_atomic(path, base64.b64decode(data, validate=True))


class HttpGenerator:
    """Calls a remote generator; one attempt per call (the job retries)."""

    def __init__(self, url: str, timeout_s: float = 600.0, max_response_bytes: int = MAX_BODY_BYTES,
                 headers: dict | None = None, max_files: int = MAX_FILES) -> None:
        self.url = url
        self.timeout_s = float(timeout_s)  # for the whole call: connecting, waiting and reading the reply
        self.max_response_bytes = int(max_response_bytes)
        self.headers = dict(headers or {})
        self.max_files = int(max_files)

    def identity(self) -> dict:
        return {"kind": "http", "url": self.url}

    def __call__(self, request: dict, request_dir: str, out_dir: str) -> dict:
        body = json.dumps({**request, "files": pack_files(request_dir, request_files(request))}).encode()
        call = urllib.request.Request(self.url, data=body, method="POST",
                                      headers={"Content-Type": "application/json", **self.headers})
        deadline = time.monotonic() + self.timeout_s
        try:
            with urllib.request.urlopen(call, timeout=self.timeout_s) as response:
                data = self._read_before(response, deadline)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace")
            raise GenerationError(f"HTTP {exc.code} from {self.url}: {detail}",
                                  retryable=exc.code >= 500 or exc.code in (408, 429)) from exc
        except TimeoutError as exc:
            raise GenerationError(f"timed out after {self.timeout_s:g} s waiting for {self.url}",
                                  gate="timeout") from exc
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise GenerationError(f"timed out after {self.timeout_s:g} s waiting for {self.url}",
                                      gate="timeout") from exc
            raise GenerationError(f"cannot reach {self.url}: {reason}") from exc
        if len(data) > self.max_response_bytes:
            raise GenerationError(f"response over {self.max_response_bytes} bytes", retryable=False)
        try:
            result = parse_json_bounded(data)
            if not isinstance(result, dict):
                raise ValueError(f"the reply is a JSON {type(result).__name__}, not an object")
            files = result.pop("files", {})
            unpack_files(out_dir, files, self.max_files)
        except (ValueError, UnsafePath, TypeError, OSError) as exc:
            raise GenerationError(f"malformed response from {self.url}: {exc}", gate="corrupt") from exc
        return result

    def _read_before(self, response, deadline: float) -> bytes:
        """The body, at most ``max_response_bytes + 1`` bytes, read before ``deadline``: the per-attempt
        timeout bounds each socket wait, this bounds the whole reply (a server dripping bytes)."""
        chunks, size = [], 0
        while size <= self.max_response_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed while reading the reply")
            if response.fp is not None and getattr(response.fp, "raw", None) is not None:
                sock = getattr(response.fp.raw, "_sock", None)
                if sock is not None:
                    sock.settimeout(left)
            # read1: one receive at most, so a server dripping bytes cannot hold one call past the deadline
            chunk = response.read1(min(_READ_CHUNK, self.max_response_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


class GeneratorServer:
    """Serve a generator over the protocol above (threads: one request per connection)."""

    def __init__(self, generator: Generator, host: str = "127.0.0.1", port: int = 0,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.generator = generator
        handler = _handler(generator, max_body_bytes)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/generate"

    def start(self) -> GeneratorServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(generator: Generator, max_body: int):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the job reports
            return

        def do_GET(self) -> None:  # health and identity
            self._reply(200, {"status": "ok", "generator": generator_identity(generator)})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > max_body:
                self._reply(413 if length > max_body else 411, {"error": f"body of {length} bytes"})
                return
            try:
                request = parse_json_bounded(self.rfile.read(length))
                files = request.pop("files", {})
            except (ValueError, AttributeError) as exc:
                self._reply(400, {"error": f"invalid JSON: {exc}"})
                return
            with tempfile.TemporaryDirectory(prefix="actionreel-gen-") as tmp:
                request_dir, out_dir = Path(tmp) / "request", Path(tmp) / "out"
                out_dir.mkdir(parents=True)
                try:
                    unpack_files(request_dir, files)
                except (ValueError, UnsafePath) as exc:
                    self._reply(400, {"error": str(exc)})
                    return
                try:
                    result = generator(request, str(request_dir), str(out_dir))
                    result = {**result, "files": pack_files(out_dir, result_files(result))}
                except Exception as exc:  # the generator's failure is the client's 500, never the server's end
                    self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
                    return
            self._reply(200, result)

        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to tell it

    return Handler
