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


def pairing_warnings(rows: list[dict]) -> list[str]:
    """One line per (dataset, camera) whose step timestamps are offset from the video or miss frames.

    ``rows`` are catalog rows; connectors record what they found in the extras ``pairing.<camera>.*``.
    """
    found: dict[tuple[str, str], dict] = {}
    for row in rows:
        for key, value in dict(row.get("extras") or []).items():
            if not key.startswith("pairing."):
                continue
            camera, what = key[len("pairing."):].rsplit(".", 1)
            entry = found.setdefault((row["dataset"], camera), {"frame_shift": {}, "unpaired_steps": []})
            if what == "frame_shift":
                entry["frame_shift"][int(value)] = entry["frame_shift"].get(int(value), 0) + 1
            elif what == "unpaired_steps":
                entry["unpaired_steps"].append(int(value))
    lines = []
    for (dataset, camera), entry in sorted(found.items()):
        for shift, episodes in sorted(entry["frame_shift"].items()):
            lines.append(f"dataset {dataset} camera {camera}: step timestamps are offset from the video by "
                         f"{shift:+d} frame(s) in {episodes} episode(s): step i is paired with frame i{shift:+d}, "
                         "as the source's own reader pairs them")
        if entry["unpaired_steps"]:
            lines.append(f"dataset {dataset} camera {camera}: {sum(entry['unpaired_steps'])} step(s) in "
                         f"{len(entry['unpaired_steps'])} episode(s) have no frame within 1e-4 s of their timestamp: "
                         "stored without one (frame index -1, image mask false)")
    return lines


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
    # episodes listed twice by the source or content-identical to another: kept once (docs/reliability.md)
    duplicates: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frames: int = 0
    steps: int = 0
    bytes: int = 0
    seconds: float = 0.0
    version_id: str = ""
    extra: dict = field(default_factory=dict)
    decode: list[dict] = field(default_factory=list)  # shard job: backend (and why) of every video decoded
    fallbacks: list[dict] = field(default_factory=list)  # shard job: files a GPU backend failed, redone on CPU
    # transient object-storage faults ridden out (retried with backoff), by kind: pipeline.store.retries
    storage_retries: dict = field(default_factory=dict)

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
            ("duplicates (kept once)", len(self.duplicates)),
            ("storage faults retried", ", ".join(f"{k} {v}" for k, v in self.storage_retries.items()) or "0"),
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
        for item in self.duplicates:
            console.print(f"[yellow]duplicate[/] {item['source_key']}: {item['reason']}")
        if self.missing:
            console.print(f"[yellow]{len(self.missing)} episodes missing at the source[/] "
                          f"(first: {self.missing[0]['source_key']}: {self.missing[0]['reason']})")


# ---------------------------------------------------------------- kept with the version

JOB_REPORTS = "index/job-reports"  # index/job-reports/<version id>/<job>.json: what the job that made it saw


def job_report_path(version_id: str, job: str) -> str:
    return f"{JOB_REPORTS}/{version_id}/{job}.json"


def keep_job_report(objects, report: JobReport) -> str | None:
    """Store ``report`` beside the version it committed, so a dataset report can show its quarantine and
    warnings later. ``objects`` is the store's ``ObjectStore``. Returns the path, or None (no version)."""
    if not report.version_id:
        return None
    path = job_report_path(report.version_id, report.job)
    objects.write_atomic(path, json.dumps(report.to_json(), indent=2, sort_keys=True).encode())
    return path


def job_reports_of(objects, version_id: str) -> list[dict]:
    """The job reports kept with one version (sorted by job name); none for versions made before they were kept."""
    out = []
    for name in sorted(objects.list_dir(f"{JOB_REPORTS}/{version_id}")):
        if name.endswith(".json") and not name.startswith(".tmp-"):
            out.append(json.loads(objects.read_bytes(f"{JOB_REPORTS}/{version_id}/{name}")))
    return out
