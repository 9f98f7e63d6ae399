"""Job reports: what went in, what was stored, what was quarantined and why, and how fast."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table


def quarantine_record(source_key: str, episode_id: str, exc: BaseException) -> dict:
    """Why an episode was set aside: the file, episode and field named by the error when it has them."""
    return {
        "source_key": source_key,
        "episode_id": getattr(exc, "episode", "") or episode_id,
        "file": getattr(exc, "path", "") or getattr(exc, "uri", "") or getattr(exc, "source", ""),
        "field": getattr(exc, "field", ""),
        "reason": f"{type(exc).__name__}: {exc}",
    }


@dataclass
class JobReport:
    job: str
    source: str = ""
    episodes_in: int = 0
    stored: int = 0
    reused: int = 0
    decoded: int = 0
    quarantined: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frames: int = 0
    steps: int = 0
    bytes: int = 0
    seconds: float = 0.0
    version_id: str = ""
    extra: dict = field(default_factory=dict)
    decode: list[dict] = field(default_factory=list)  # shard job: backend (and why) of every video decoded
    fallbacks: list[dict] = field(default_factory=list)  # shard job: files a GPU backend failed, redone on CPU

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "frames_per_s": round(self.frames_per_s, 1)}

    def write(self, path: str) -> None:
        with open(path, "w") as handle:
            json.dump(self.to_json(), handle, indent=2, sort_keys=True)

    def render(self, console: Console | None = None) -> None:
        console = console or Console()
        table = Table(title=f"{self.job} report", show_header=False)
        for label, value in (
            ("source", self.source), ("episodes in", self.episodes_in), ("stored (new)", self.stored),
            ("reused (already stored)", self.reused), ("decoded", self.decoded),
            ("quarantined", len(self.quarantined)), ("missing at source", len(self.missing)),
            ("steps", self.steps), ("frames", self.frames), ("bytes", f"{self.bytes:,}"),
            ("seconds", f"{self.seconds:.1f}"), ("frames/s", f"{self.frames_per_s:.0f}"),
            ("version", self.version_id), *self.extra.items(),
        ):
            table.add_row(str(label), str(value))
        console.print(table)
        for warning in self.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
        for item in self.fallbacks:
            console.print(f"[yellow]GPU fallback[/] {item['file']} ({item['episode_id']}/{item['camera']}): "
                          f"{item['backend']} -> {item['retried_on']}: {item['reason']}")
        for item in self.quarantined:
            console.print(f"[red]quarantined[/] {item['source_key']} ({item['episode_id']}): {item['reason']}")
        if self.missing:
            console.print(f"[yellow]{len(self.missing)} episodes missing at the source[/] "
                          f"(first: {self.missing[0]['source_key']}: {self.missing[0]['reason']})")
