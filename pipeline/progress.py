"""Terminal progress for long jobs: episodes and frames done, rate, ETA.

Jobs drive it from the driver as results come back (from Ray Data's ``iter_rows`` or ``ray.wait``), so
it shows the work of every worker without Ray's own progress bars. It draws on stderr, only when stderr
is a terminal; ``enabled=False`` (``--json``, scripts, tests) makes every call a no-op.
"""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def terminal_progress() -> bool:
    """Whether a person is watching: both stdout and stderr are terminals."""
    return sys.stderr.isatty() and sys.stdout.isatty()


class _RateColumn(ProgressColumn):
    """The frames done so far and items (episodes, shards, requests) per second over the whole run: results
    from Ray arrive in bursts, so a windowed rate would swing."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = f"{task.completed / elapsed:.2f}/s" if task.completed and elapsed > 0 else "--/s"
        frames = int(task.fields.get("frames", 0))
        unit = task.fields.get("unit", "frames")
        return Text(f"{frames:,} {unit}  {rate}", style="progress.data.speed")


class JobProgress:
    """One bar per job: ``advance(episodes, frames)`` as each result arrives.

    A context manager; when disabled nothing is drawn and nothing is imported beyond rich.
    """

    def __init__(self, label: str, total: int, *, enabled: bool | None = None, unit: str = "frames",
                 item: str = "episodes", console: Console | None = None) -> None:
        self.enabled = terminal_progress() if enabled is None else enabled
        self.label, self.total, self.unit, self.item = label, total, unit, item
        self.episodes: float = 0
        self.frames = 0
        self._progress: Progress | None = None
        self._task = None
        self._console = console or Console(stderr=True)

    def __enter__(self) -> JobProgress:
        if self.total > 0:
            self.start(self.total)
        return self

    def start(self, total: int) -> None:
        """Draw the bar for ``total`` items (for work whose size is known only once it begins)."""
        self.total = total
        if not self.enabled or total <= 0 or self._progress is not None:
            return
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                                  TextColumn(self.item), _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), console=self._console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=total, frames=0, unit=self.unit, item=self.item)

    def advance(self, episodes: float = 1, frames: int = 0) -> None:
        """Count ``episodes`` more done and ``frames`` more written/decoded."""
        self.episodes += episodes
        self.frames += frames
        if self._progress is not None:
            self._progress.update(self._task, advance=episodes, frames=self.frames)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
