"""Settings objects read from JSON/YAML: unknown keys are refused by name, never silently ignored."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def checked_settings(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """``data`` when each key is a field of the dataclass ``cls``; else ValueError naming the unknown ones."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; known: {sorted(known)}")
    return dict(data)
