"""The connector protocol: discover episodes at a URI, checksum one, read one into the schema.

Connectors only read and normalize. They never write, never decode video (the store does) and
never talk to Ray. ``EpisodeRef`` is a small JSON-able value so a job can ship it to a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from schemas import Episode


class SourceError(Exception):
    """A source file is unreadable or inconsistent. Names the file, the episode and the field."""

    def __init__(self, path: str, problem: str, episode: str = "", field: str = "") -> None:
        self.path = path
        self.episode = episode
        self.field = field
        self.problem = problem
        parts = [path]
        if episode:
            parts.append(f"episode {episode}")
        if field:
            parts.append(f"field '{field}'")
        super().__init__(f"{': '.join(parts)}: {problem}")


class DatasetError(SourceError):
    """The dataset as a whole cannot be read (no metadata, unknown layout): nothing to ingest."""


@dataclass(frozen=True)
class EpisodeRef:
    """Where one source episode lives. Plain values only: it travels to Ray workers as is."""

    format: str
    dataset: str
    uri: str
    key: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Discovery:
    """What a connector found at a URI: episodes to read, plus what it had to skip and why."""

    format: str
    dataset: str
    uri: str
    refs: list[EpisodeRef]
    missing: list[tuple[str, str]] = field(default_factory=list)  # (source key, reason)
    # (source key, reason): entries the source lists twice; the first is kept, these are not read
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@runtime_checkable
class Connector(Protocol):
    """One source family. Implementations are stateless; options travel inside ``EpisodeRef``."""

    name: ClassVar[str]
    description: ClassVar[str]

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        """Cheap check: does ``uri`` look like this format?"""
        ...

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        """List the episodes at ``uri``. Raises ``DatasetError`` when the dataset is unreadable."""
        ...

    def checksum(self, ref: EpisodeRef) -> str:
        """A content hash of everything ``read(ref)`` depends on (skip work already stored)."""
        ...

    def read(self, ref: EpisodeRef) -> Episode:
        """The episode in the unified schema. Raises ``SourceError`` on bad input."""
        ...
