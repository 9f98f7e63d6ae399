"""openpi normalization statistics (``assets/<asset_id>/norm_stats.json``) from a version's steps.

openpi's ``scripts/compute_norm_stats.py`` iterates its LeRobot dataset after the repack and data
transforms: one sample per step, whose ``actions`` is the chunk of the next H actions with indices
clamped to the episode (the last action repeated past the end, as LeRobot's ``delta_timestamps``
query does), optionally made relative by ``DeltaActions`` (``actions[..., :len(mask)] -=
where(mask, state[..., :len(mask)], 0)`` with the chunk's first state); every row of every chunk is
one vector for its ``RunningStats``. With ``batch_size`` the trailing partial batch is dropped, as
its ``drop_last`` loader does. Here the same rows are built from the stored steps (no image is
decoded) and reduced exactly: mean and population std in float64, q01/q99 by ``np.quantile``'s
linear rule on the rows themselves. openpi's own q01/q99 are the left edge of the 5000-bin
histogram bin holding rank q*N (re-binned whenever min or max grows), so they sit up to about
(max - min) / 5000 below these.

The file is what ``openpi.shared.normalize.load`` reads: ``{"norm_stats": {"state": {"mean",
"std", "q01", "q99"}, "actions": {...}}}``; Pi-0 normalizes with mean/std, Pi-0-FAST and Pi-0.5
map [q01, q99] to [-1, 1]. One file per embodiment (openpi trains one robot per asset id).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from pipeline.export.output import episode_order
from pipeline.export.video import ExportError
from pipeline.store.catalog import CatalogQuery, read_catalog_table
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import VersionManifest
from schemas import EpisodeMeta, table_to_metas
from schemas.arrow import fixed_list_to_numpy

OPENPI_KEYS = ("state", "actions")
_FEATURE = re.compile(r"^(state|action)(?:\[(\d*):(\d*)\])?$")
_COLUMNS = ["state", "action", "state_valid", "action_valid"]


@dataclass(frozen=True)
class FeatureSlice:
    """A stored feature, optionally a range of its dimensions: ``state``, ``action[0:7]``."""

    feature: str
    start: int | None = None
    stop: int | None = None

    @staticmethod
    def parse(text: str) -> FeatureSlice:
        match = _FEATURE.match(text.strip())
        if not match:
            raise ValueError(f"feature {text!r}: expected state, action, or FEATURE[start:stop]")
        feature, start, stop = match.groups()
        return FeatureSlice(feature, int(start) if start else None, int(stop) if stop else None)

    def take(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        return (state if self.feature == "state" else action)[:, self.start:self.stop]


def bool_mask(dims: Iterable[int]) -> tuple[bool, ...]:
    """openpi's ``make_bool_mask``: (6, -1, 6, -1) -> six True, one False, six True, one False."""
    out: list[bool] = []
    for dim in dims:
        out.extend([dim > 0] * abs(dim))
    return tuple(out)


def parse_mask(text: str) -> tuple[bool, ...]:
    """``"6,-1,6,-1"`` (``make_bool_mask`` counts) -> the mask."""
    try:
        return bool_mask(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"delta mask {text!r}: expected make_bool_mask counts such as 6,-1,6,-1") from None


@dataclass(frozen=True)
class NormStatsConfig:
    action_horizon: int = 50
    delta_mask: tuple[bool, ...] | None = None  # DeltaActions' mask; None: absolute actions
    keys: dict[str, FeatureSlice] = field(default_factory=lambda: {"state": FeatureSlice("state"),
                                                                    "actions": FeatureSlice("action")})
    batch_size: int | None = None  # drop the trailing partial batch, as compute_norm_stats' loader does

    def __post_init__(self) -> None:
        if self.action_horizon < 1:
            raise ValueError(f"action horizon must be >= 1, got {self.action_horizon}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        unknown = sorted(set(self.keys) - set(OPENPI_KEYS))
        if unknown or "actions" not in self.keys:
            raise ValueError(f"keys must name openpi's {OPENPI_KEYS} (actions required), got {sorted(self.keys)}")
        if self.delta_mask is not None and "state" not in self.keys:
            raise ValueError("a delta mask needs the state key (DeltaActions subtracts the state)")


@dataclass
class EpisodeRows:
    """One episode's mapped state and actions in the stored dtype, with their masks."""

    state: np.ndarray  # [n, Ds]
    actions: np.ndarray  # [n, Da]
    state_valid: np.ndarray  # [n] bool
    action_valid: np.ndarray  # [n] bool


@dataclass
class _Concatenated:
    """All episodes end to end; ``last[i]`` is the global index of step i's episode's last step."""

    state: np.ndarray
    actions: np.ndarray
    state_valid: np.ndarray
    action_valid: np.ndarray
    last: np.ndarray


def _concatenate(episodes: Iterable[EpisodeRows], batch_size: int | None) -> _Concatenated:
    parts = [e for e in episodes if len(e.actions)]
    if not parts:
        raise ValueError("no steps to compute statistics from")
    lengths = np.array([len(e.actions) for e in parts])
    ends = np.cumsum(lengths)
    last = np.repeat(ends - 1, lengths)
    total = int(ends[-1])
    keep = total - total % batch_size if batch_size else total
    if keep == 0:
        raise ValueError(f"{total} samples make no full batch of {batch_size}")
    return _Concatenated(np.concatenate([e.state for e in parts]), np.concatenate([e.actions for e in parts]),
                         np.concatenate([e.state_valid for e in parts]),
                         np.concatenate([e.action_valid for e in parts]), last[:keep])


def _order_statistics(values: np.ndarray, ranks: list[int]) -> dict[int, float]:
    """The values of these 0-based ranks; ``values`` is reordered in place."""
    values.partition(sorted(set(ranks)))
    return {r: float(values[r]) for r in ranks}


def _tail_order_statistics(values: np.ndarray, ranks: list[int]) -> dict[int, float] | None:
    """Order statistics of ranks in the tails from the tails alone: every value at or below a cut
    (ranks in the low half) or at or above one (high half), the cuts read off a sample.

    A value's rank among the values at or below a cut is its rank in the whole, so the answer is
    exact whenever the cut keeps enough values (checked by counting), else None and the caller
    partitions everything. A 50 M-row column costs two comparisons and two compressions.
    """
    n = values.shape[0]
    sample = np.sort(values[:: max(1, n >> 16)])
    margin = 8 * math.sqrt(sample.shape[0]) + 2  # sample-quantile rank noise, many sigmas
    scale = (sample.shape[0] - 1) / max(n - 1, 1)
    out: dict[int, float] = {}
    low_ranks, high_ranks = [r for r in ranks if 2 * r < n], [r for r in ranks if 2 * r >= n]
    if low_ranks:
        cut = sample[min(sample.shape[0] - 1, math.ceil(max(low_ranks) * scale + margin))]
        tail = values[values <= cut]
        if tail.shape[0] <= max(low_ranks):
            return None
        out |= _order_statistics(tail, low_ranks)
    if high_ranks:
        cut = sample[max(0, math.floor(min(high_ranks) * scale - margin))]
        tail = values[values >= cut]
        offset = n - tail.shape[0]  # values below the cut
        if offset > min(high_ranks):
            return None
        out |= {r + offset: v for r, v in _order_statistics(tail, [r - offset for r in high_ranks]).items()}
    return out


def exact_quantiles(values: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    """``np.quantile(values.astype(float64), q)`` (its default linear rule), bit for bit.

    ``values`` may be reordered in place.
    """
    n = values.shape[0]
    positions = []
    for q in quantiles:  # numpy's virtual index and bounds for the linear method
        virtual = (n - 1) * q
        low = min(max(math.floor(virtual), 0), n - 1)
        positions.append((low, min(low + 1, n - 1), virtual - math.floor(virtual)))
    ranks = sorted({r for low, high, _ in positions for r in (low, high)})
    found = _tail_order_statistics(values, ranks) if n >= 1 << 20 else None
    found = found or _order_statistics(values, ranks)
    out = []
    for low, high, fraction in positions:  # numpy's _lerp
        a, b = found[low], found[high]
        difference = b - a
        out.append(b - difference * (1 - fraction) if fraction >= 0.5 else a + difference * fraction)
    return out


class _Moments:
    """Count, mean and population variance accumulated block by block in float64, around a shift
    (the first block's mean) so that values far from zero lose no precision."""

    def __init__(self) -> None:
        self.count, self.shift, self.total, self.squares = 0, None, 0.0, 0.0

    def add(self, block: np.ndarray) -> None:
        if block.shape[0] == 0:
            return
        wide = block.astype(np.float64)
        if self.shift is None:
            self.shift = float(wide.mean())
        wide -= self.shift
        self.count += wide.shape[0]
        self.total += float(wide.sum())
        self.squares += float(np.dot(wide, wide))

    def mean_std(self) -> tuple[float, float]:
        centre = self.total / self.count
        return self.shift + centre, math.sqrt(max(0.0, self.squares / self.count - centre * centre))


def _reduce(values: np.ndarray, moments: _Moments | None = None) -> dict[str, float]:
    if values.shape[0] == 0:
        raise ValueError("no valid rows (every step masked)")
    if moments is None:
        moments = _Moments()
        for start in range(0, values.shape[0], 1 << 20):
            moments.add(values[start:start + (1 << 20)])
    mean, std = moments.mean_std()
    q01, q99 = exact_quantiles(values, (0.01, 0.99))
    return {"mean": mean, "std": std, "q01": q01, "q99": q99}


@dataclass
class _Chunks:
    """Per chunk offset h, the step each row reads (clamped to its episode) and which rows count."""

    index: list[np.ndarray]
    ok: list[np.ndarray | None]  # None: every row of that offset counts
    rows: int


def _chunks(data: _Concatenated, config: NormStatsConfig) -> _Chunks:
    count = len(data.last)
    steps = np.arange(count, dtype=np.int64)
    last = data.last.astype(np.int64)
    every_row = bool(data.action_valid.all()) and (not config.delta_mask or bool(data.state_valid[:count].all()))
    row_ok = data.state_valid[:count] if config.delta_mask else np.ones(count, bool)
    index, ok, rows = [], [], 0
    for h in range(config.action_horizon):
        at = np.minimum(steps + h, last).astype(np.int32 if len(data.actions) < 2**31 else np.int64)
        valid = None if every_row else row_ok & data.action_valid[at]
        index.append(at)
        ok.append(None if valid is None or valid.all() else valid)
        rows += count if ok[-1] is None else int(ok[-1].sum())
    return _Chunks(index, ok, rows)


def _action_column(data: _Concatenated, chunks: _Chunks, config: NormStatsConfig, dim: int) -> dict[str, float]:
    """Column ``dim`` of every counted chunk row, in the stored dtype (DeltaActions subtracts in it)."""
    mask = config.delta_mask or ()
    column = np.ascontiguousarray(data.actions[:, dim])
    reference = data.state[: len(data.last), dim] if dim < len(mask) and mask[dim] else None
    values = np.empty(chunks.rows, dtype=column.dtype)  # openpi's in-place -= keeps the actions' dtype
    moments, filled = _Moments(), 0
    for index, ok in zip(chunks.index, chunks.ok, strict=True):
        block = np.take(column, index, out=values[filled:filled + len(index)]) if ok is None else np.take(column, index)
        if reference is not None:
            np.subtract(block, reference, out=block, casting="same_kind")
        if ok is not None:
            block = block[ok]
            values[filled:filled + block.shape[0]] = block
        moments.add(block)
        filled += block.shape[0]
    return _reduce(values, moments)


def _stack(columns: list[dict[str, float]]) -> dict[str, list[float]]:
    return {name: [c[name] for c in columns] for name in ("mean", "std", "q01", "q99")}


def compute_norm_stats(episodes: Iterable[EpisodeRows], config: NormStatsConfig,
                       threads: int = 2) -> dict[str, dict[str, list[float]]]:
    """openpi's ``{"state": {...}, "actions": {...}}`` for these episodes (in dataset order).

    Dimensions are independent and numpy releases the GIL, so they run on ``threads`` threads.
    """
    data = _concatenate(episodes, config.batch_size)
    mask = config.delta_mask or ()
    if mask and data.state.shape[1] < len(mask):
        raise ValueError(f"delta mask covers {len(mask)} dims but the state has {data.state.shape[1]}")
    if data.actions.shape[1] < len(mask):
        raise ValueError(f"delta mask covers {len(mask)} dims but the actions have {data.actions.shape[1]}")
    out = {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        if "state" in config.keys and data.state.shape[1]:
            kept = data.state[: len(data.last)][data.state_valid[: len(data.last)]]
            out["state"] = _stack(list(pool.map(lambda d: _reduce(np.ascontiguousarray(kept[:, d])),
                                                range(kept.shape[1]))))
        chunks = _chunks(data, config)
        out["actions"] = _stack(list(pool.map(lambda d: _action_column(data, chunks, config, d),
                                              range(data.actions.shape[1]))))
    return out


def read_episode_rows(store: EpisodeStore, meta: EpisodeMeta, config: NormStatsConfig) -> EpisodeRows:
    """The episode's steps mapped to openpi's keys (stored dtype kept: DeltaActions runs in it)."""
    table = pq.read_table(store.objects.abspath(meta.steps_path), filesystem=store.fs, columns=_COLUMNS)
    state, action = fixed_list_to_numpy(table.column("state")), fixed_list_to_numpy(table.column("action"))
    empty = np.zeros((len(action), 0), state.dtype)
    return EpisodeRows(config.keys["state"].take(state, action) if "state" in config.keys else empty,
                       config.keys["actions"].take(state, action),
                       table.column("state_valid").to_numpy(zero_copy_only=False).astype(bool),
                       table.column("action_valid").to_numpy(zero_copy_only=False).astype(bool))


def _episodes_by_embodiment(store: EpisodeStore, manifest: VersionManifest,
                            query: CatalogQuery | None) -> dict[str, list[EpisodeMeta]]:
    groups: dict[str, list[EpisodeMeta]] = {}
    for meta in table_to_metas(read_catalog_table(store, manifest, query=query)):
        groups.setdefault(meta.embodiment, []).append(meta)
    # each group in the order a LeRobot export (openpi's dataset) holds its episodes
    return {name: sorted(metas, key=episode_order) for name, metas in sorted(groups.items())}


def norm_stats_json(stats: dict[str, dict[str, list[float]]]) -> str:
    """The file as openpi's ``normalize.save`` writes it (pydantic ``model_dump_json(indent=2)``)."""
    return json.dumps({"norm_stats": stats}, indent=2)


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".norm_stats.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


@dataclass
class NormStatsReport:
    files: dict[str, str] = field(default_factory=dict)  # embodiment -> written path
    steps: dict[str, int] = field(default_factory=dict)  # embodiment -> samples (chunks) counted


def _iter_rows(store: EpisodeStore, metas: list[EpisodeMeta], config: NormStatsConfig) -> Iterator[EpisodeRows]:
    for meta in metas:
        yield read_episode_rows(store, meta, config)


def export_norm_stats(store: EpisodeStore, manifest: VersionManifest, assets_dir: str,
                      config: NormStatsConfig = NormStatsConfig(), *, embodiment: str | None = None,
                      asset_id: str | None = None, query: CatalogQuery | None = None) -> NormStatsReport:
    """Write ``<assets_dir>/<asset_id>/norm_stats.json`` per embodiment (asset id: the embodiment's name)."""
    groups = _episodes_by_embodiment(store, manifest, query)
    if embodiment is not None:
        if embodiment not in groups:
            raise ExportError("", "embodiment", f"no episode of embodiment {embodiment!r} "
                                                f"(the version has {', '.join(groups) or 'none'})")
        groups = {embodiment: groups[embodiment]}
    if not groups:
        raise ExportError("", "selection", "no episode to compute statistics from")
    if asset_id is not None and len(groups) > 1:
        raise ExportError("", "asset_id", f"one asset id for {len(groups)} embodiments ({', '.join(groups)}): "
                                          "choose one with --embodiment")
    report = NormStatsReport()
    for name, metas in groups.items():
        try:
            stats = compute_norm_stats(_iter_rows(store, metas, config), config)
        except ValueError as exc:
            raise ExportError("", f"embodiment {name}", str(exc)) from None
        path = os.path.join(assets_dir, asset_id or name, "norm_stats.json")
        _write_atomic(path, norm_stats_json(stats))
        total = sum(m.num_steps for m in metas)
        report.files[name] = path
        report.steps[name] = total - total % config.batch_size if config.batch_size else total
    return report
