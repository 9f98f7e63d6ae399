"""Time offsets per key (LeRobot's ``delta_timestamps``) and windows read across segments and shards.

A sample at step ``t`` of an episode of ``L`` steps asks, per key, for steps ``t + d`` for each offset
``d``. LeRobot's rule (``LeRobotDataset._get_query_indices``) is kept exactly: the step read is
``clamp(t + d, 0, L - 1)`` and ``<key>_is_pad`` is True where ``t + d < 0`` or ``t + d >= L``, so a
padded position repeats the first or last step of the episode.

Offsets in seconds are converted per episode with its rational control rate: ``d = s * fps`` computed
with fractions (``0.1`` is read as 1/10, not the nearest double); a value that is not a whole number
of steps within ``tolerance_s`` is refused, as LeRobot's ``check_delta_timestamps`` does.

A window is never limited by how the view was sharded: a step outside the anchor's segment (and its
stored action look-ahead) is read from whichever segment of the episode holds it, in any shard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np

from pipeline.loaders.members import SampleReader
from pipeline.loaders.source import ViewSource

STEP_COLUMNS = ("state", "action", "timestamp", "task_index")  # stored per step in every sample
VALID_COLUMNS = {"state": "state_valid", "action": "action_valid"}  # masks that travel with their column
OFFSET_KEYS = ("cameras", *STEP_COLUMNS)


def check_offset_keys(offsets: Mapping[str, Sequence] | None, name: str) -> None:
    for key in offsets or {}:
        if key not in OFFSET_KEYS:
            raise ValueError(f"{name} key {key!r} is not one of {OFFSET_KEYS}")
        if len(offsets[key]) == 0:
            raise ValueError(f"{name}[{key!r}] is empty")


def seconds_to_steps(seconds: float, rate: Fraction, tolerance_s: float = 1e-4) -> int:
    """``seconds`` as a whole number of control steps at ``rate`` (exact rational arithmetic)."""
    exact = Fraction(repr(float(seconds))) * rate
    steps = round(exact)
    if abs(exact - steps) / rate > Fraction(repr(float(tolerance_s))):
        raise ValueError(f"offset {seconds} s is not a multiple of 1/{rate} s (within {tolerance_s} s)")
    return int(steps)


def steps_from_seconds(delta_timestamps: Mapping[str, Sequence[float]], rate: Fraction,
                       tolerance_s: float = 1e-4) -> dict[str, np.ndarray]:
    out = {}
    for key, values in delta_timestamps.items():
        try:
            out[key] = np.asarray([seconds_to_steps(s, rate, tolerance_s) for s in values], dtype=np.int64)
        except ValueError as exc:
            raise ValueError(f"delta_timestamps[{key!r}]: {exc}") from None
    return out


def query_steps(t: int, offsets: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps to read, is_pad) for step ``t`` of an episode of ``length`` steps: LeRobot's rule."""
    wanted = t + offsets
    return np.clip(wanted, 0, length - 1), (wanted < 0) | (wanted >= length)


class EpisodeSteps:
    """Every live segment of every episode of a view: (episode, step) -> (sample row, offset in it).

    Flat arrays (rows grouped by episode, each group by first step) and one id -> group map, so a
    million episodes cost a few arrays rather than two small arrays each."""

    def __init__(self, source: ViewSource) -> None:
        table = source.table
        self.step_start = table["step_start"]
        self.num_steps = table["num_steps"]
        rows, bounds, codes = table.by_episode(np.nonzero(table.live_rows(source.deleted))[0])
        self._rows, self._bounds = rows, bounds
        self._starts = self.step_start[rows]
        self._group = dict(zip(table.episodes[codes].tolist(), range(len(codes)), strict=True))

    def locate(self, episode: str, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sample rows, offsets) holding these steps of ``episode``."""
        group = self._group[episode]
        begin, end = self._bounds[group], self._bounds[group + 1]
        starts = self._starts[begin:end]
        position = np.searchsorted(starts, steps, side="right") - 1
        return self._rows[begin:end][position], steps - starts[position]


class WindowReader:
    """Reads step-column windows of an episode, starting from the anchor's own sample."""

    def __init__(self, reader: SampleReader, episodes: EpisodeSteps) -> None:
        self.reader = reader
        self.episodes = episodes

    def column(self, row: int, episode: str, name: str, steps: np.ndarray) -> np.ndarray:
        """Column ``name`` (a step column or its valid mask) at episode ``steps``; the anchor sample ``row``
        serves every step it stores (its action look-ahead included), others come from their segments."""
        values = getattr(self.reader.arrays(row), name)
        local = steps - int(self.episodes.step_start[row])
        inside = (local >= 0) & (local < len(values))
        if inside.all():
            return values[local]
        out = np.empty((len(steps), *values.shape[1:]), values.dtype)
        out[inside] = values[local[inside]]
        outside = np.nonzero(~inside)[0]
        rows, offsets = self.episodes.locate(episode, steps[outside])
        for other in np.unique(rows):
            select = rows == other
            out[outside[select]] = getattr(self.reader.arrays(int(other)), name)[offsets[select]]
        return out

    def frames_into(self, episode: str, camera: str, steps: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Decode the camera's frames of ``steps`` into ``out`` [T, H, W, 3]; False where a step has none."""
        rows, offsets = self.episodes.locate(episode, steps)
        present = np.zeros(len(steps), bool)
        for i, (row, offset) in enumerate(zip(rows.tolist(), offsets.tolist(), strict=True)):
            present[i] = self.reader.frame_into(row, camera, offset, out[i])
        return present
