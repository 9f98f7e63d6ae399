"""The generator contract shared by every generator plugin and the job that calls them.

Kept apart from ``pipeline.augment.generators`` (which builds generators from spec strings and so
imports every built-in one) so built-in generators can name the contract without importing their loader.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class GenerationError(Exception):
    def __init__(self, reason: str, retryable: bool = True, gate: str = "generator") -> None:
        self.reason, self.retryable, self.gate = reason, retryable, gate
        super().__init__(reason)


@runtime_checkable
class Generator(Protocol):
    def __call__(self, request: dict, request_dir: str, out_dir: str) -> dict:
        ...


def generator_identity(generator: Generator | None, spec: Any = "") -> dict:
    if generator is None:
        return {"kind": "none"}
    if hasattr(generator, "identity"):
        return dict(generator.identity())
    return {"kind": "object", "spec": str(spec)}
