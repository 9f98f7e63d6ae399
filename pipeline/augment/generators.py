"""Generator plugins: anything that turns a request folder into videos.

The contract is one call, ``generator(request, request_dir, out_dir) -> result``, where ``request``
is the request JSON (``actionreel.generation_request/1``) as a dict, ``request_dir`` holds the files
it names, and the generator writes one mp4 per requested camera into ``out_dir`` and returns the
result JSON (``actionreel.generation_result/1``; ``format`` and ``request_id`` may be left out).
A generator may also offer ``identity() -> dict`` (model, checkpoint, settings): it names the run
and its outputs. Specs a job accepts (``load_generator``):

    reference                       the built-in transfer generator (OpenCV, no weights)
    python:package.module:name      a callable, or a class built with the generator options
    http://host:port/path           an HTTP endpoint (``pipeline.augment.http``)
    none                            no generator: only ingest results already in the work folder

Failures raise ``GenerationError``; ``retryable`` says whether another attempt may succeed.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from pipeline.augment.protocol import GenerationError, Generator, generator_identity

__all__ = ["CallPolicy", "CallableGenerator", "GenerationError", "Generator", "generator_identity", "load_generator"]


@dataclass(frozen=True)
class CallPolicy:
    """How a job calls a generator: per-attempt timeout, attempts per request, requests in flight."""

    timeout_s: float = 600.0
    max_attempts: int = 3
    max_concurrency: int = 4
    backoff_s: float = 0.5  # before attempt k: backoff_s * 2**(k-2)
    retry_on_quality: bool = True  # a result failing a quality gate is retried (generators are stochastic)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_attempts < 1 or self.max_concurrency < 1 or self.backoff_s < 0:
            raise ValueError("timeout_s > 0, max_attempts >= 1, max_concurrency >= 1, backoff_s >= 0 required")


class CallableGenerator:
    """A plain function ``fn(request, request_dir, out_dir) -> dict`` as a generator."""

    def __init__(self, fn, name: str = "") -> None:
        self.fn = fn
        self.name = name or f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', repr(fn))}"

    def identity(self) -> dict:
        return {"kind": "python", "callable": self.name}

    def __call__(self, request: dict, request_dir: str, out_dir: str) -> dict:
        return self.fn(request, request_dir, out_dir)


def load_generator(spec: str | Any, options: dict | None = None) -> Generator | None:
    """A generator from a spec string (see the module doc), or the object itself when already one."""
    options = dict(options or {})
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if not isinstance(spec, str):
        if not callable(spec):
            raise ValueError(f"a generator must be callable, got {type(spec).__name__}")
        return spec if hasattr(spec, "identity") else CallableGenerator(spec)
    if spec == "reference":
        from pipeline.augment.reference import ReferenceGenerator

        return ReferenceGenerator(**options)
    if spec.startswith(("http://", "https://")):
        from pipeline.augment.http import HttpGenerator

        return HttpGenerator(spec, **options)
    if spec.startswith("python:"):
        module_name, _, attr = spec[len("python:"):].partition(":")
        if not module_name or not attr:
            raise ValueError(f"expected python:package.module:name, got {spec!r}")
        target = getattr(importlib.import_module(module_name), attr)
        if inspect.isclass(target):
            return target(**options)
        if options:
            raise ValueError(f"{spec} is a function: generator options need a class")
        return CallableGenerator(target, spec[len("python:"):])
    raise ValueError(f"unknown generator {spec!r}: use reference, python:module:name, http(s)://... or none")
