"""Dataset-wide analytics as dask dataframes over the store's Parquet: per-episode step aggregates,
``--where`` queries over step columns, and step statistics recomputed from the steps objects.

Why dask: a version's steps are one Parquet object per episode; a question such as "episodes whose
gripper never closes" needs every step of every episode but only one column of each. Each dask
partition reads a batch of steps objects (only the columns a query names), reduces each episode to a
few numbers and drops the steps, so memory is one episode at a time per worker, whatever the
dataset's size. The scheduler is dask's own (threads) unless one is passed: ``scheduler=ray_dask_get``
(Ray's Dask-on-Ray) runs the same graph on the jobs' Ray cluster (docs/architecture.md, scale).

A where-expression is terms joined by ``and``: ``<agg>(<column>) <op> <number>``; ``agg`` one of
min, max, mean, sum, first, last; ``column`` a scalar step column (``reward``, ``extra.x``) or one
dimension of a vector column (``action[6]``, ``state[0]``); ``op`` one of < <= > >= == !=. Example:
``max(action[6]) < 0.5``.
"""

from __future__ import annotations

import operator
import re
from contextlib import nullcontext
from dataclasses import dataclass

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve

AGGREGATES = {"min": np.min, "max": np.max, "mean": np.mean, "sum": np.sum,
              "first": lambda v: v[0], "last": lambda v: v[-1]}
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
             "!=": operator.ne}
_TERM = re.compile(r"^\s*(\w+)\(\s*([\w.]+)\s*(?:\[\s*(\d+)\s*\])?\s*\)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+)\s*$")
EPISODES_PER_PARTITION = 64


class QueryError(ValueError):
    """A where-expression that cannot be read; the message names the term."""


@dataclass(frozen=True)
class Term:
    aggregate: str
    column: str
    dim: int | None
    op: str
    value: float

    @property
    def name(self) -> str:
        return f"{self.aggregate}({self.column}{'' if self.dim is None else f'[{self.dim}]'})"

    def holds(self, aggregated: pd.Series) -> pd.Series:
        return OPERATORS[self.op](aggregated, self.value)


def parse_where(text: str) -> list[Term]:
    terms = []
    for part in re.split(r"\s+and\s+", text.strip()):
        found = _TERM.match(part)
        if not found:
            raise QueryError(f"cannot read where-term {part!r}: expected '<agg>(<column>[<dim>]) <op> <number>'")
        aggregate, column, dim, op, value = found.groups()
        if aggregate not in AGGREGATES:
            raise QueryError(f"where-term {part!r}: aggregate {aggregate!r} is not one of {sorted(AGGREGATES)}")
        terms.append(Term(aggregate, column, None if dim is None else int(dim), op, float(value)))
    return terms


def _column_values(table: pa.Table, term: Term, where: str) -> np.ndarray:
    if term.column not in table.column_names:
        raise QueryError(f"{where}: no step column {term.column!r}")
    column = table.column(term.column).combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        if term.dim is None:
            raise QueryError(f"{where}: {term.column} is a vector: name a dimension, e.g. {term.column}[0]")
        width = column.type.list_size
        if term.dim >= width:
            raise QueryError(f"{where}: {term.column}[{term.dim}] outside its {width} dimensions")
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)[:, term.dim].astype(np.float64)
    if term.dim is not None:
        raise QueryError(f"{where}: {term.column} is a scalar column, it has no [{term.dim}]")
    return column.to_numpy(zero_copy_only=False).astype(np.float64)


def _aggregate_partition(items: list[tuple[str, str]], store_uri: str, storage_options: dict,
                         terms: tuple[Term, ...]) -> pd.DataFrame:
    """One partition: per episode (id, steps path) the value of every term's aggregate."""
    store = EpisodeStore(store_uri, storage_options)
    columns = sorted({t.column for t in terms})
    rows = []
    for episode_id, steps_path in items:
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(store.objects.abspath(steps_path), filesystem=store.fs)
        missing = [c for c in columns if c not in handle.schema_arrow.names]
        if missing:
            raise QueryError(f"episode {episode_id}: no step column {missing[0]!r}")
        table = handle.read(columns=columns)
        row: dict = {"episode_id": episode_id, "num_steps": table.num_rows}
        for term in terms:
            values = _column_values(table, term, f"episode {episode_id}")
            valid = values[~np.isnan(values)]  # null rewards: missing, not zero
            row[term.name] = float(AGGREGATES[term.aggregate](valid)) if valid.size else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["episode_id", "num_steps", *dict.fromkeys(t.name for t in terms)])


def episode_aggregates(store_uri: str, terms: list[Term], version: str = "latest",
                       storage_options: dict | None = None) -> dd.DataFrame:
    """A dask dataframe: one row per live episode of the version, one column per term's aggregate."""
    store = EpisodeStore(store_uri, storage_options or {})
    _, manifest = resolve(store, version)
    catalog = load_catalog(store, manifest).select(["episode_id", "steps_path"]).to_pylist()
    items = [(r["episode_id"], r["steps_path"]) for r in catalog]
    chunks = [items[i: i + EPISODES_PER_PARTITION] for i in range(0, len(items), EPISODES_PER_PARTITION)] or [[]]
    meta = _aggregate_partition([], store_uri, storage_options or {}, tuple(terms))
    meta = meta.astype({"episode_id": object, "num_steps": np.int64} | {t.name: np.float64 for t in terms})
    return dd.from_map(_aggregate_partition, chunks, store_uri=store_uri, storage_options=storage_options or {},
                       terms=tuple(terms), meta=meta, enforce_metadata=False)


def episodes_where(store_uri: str, where: str, version: str = "latest", storage_options: dict | None = None,
                   scheduler=None) -> pd.DataFrame:
    """The episodes of the version for which every term holds (episode id, steps, the terms' values)."""
    terms = parse_where(where)
    frame = episode_aggregates(store_uri, terms, version, storage_options)
    mask = None
    for term in terms:
        holds = term.holds(frame[term.name])
        mask = holds if mask is None else mask & holds
    with dask.config.set(scheduler=scheduler) if scheduler else nullcontext():
        result = frame[mask].compute()
    return result.sort_values("episode_id").reset_index(drop=True)


def _moments_partition(items: list[tuple[str, str, str]], store_uri: str, storage_options: dict,
                       feature: str) -> pd.DataFrame:
    """Per (embodiment, dim): count, sum, sum of squares, min, max of ``feature`` over valid steps."""
    import pyarrow.parquet as pq

    store = EpisodeStore(store_uri, storage_options)
    parts = []
    for embodiment, _, steps_path in items:
        table = pq.read_table(store.objects.abspath(steps_path), filesystem=store.fs,
                              columns=[feature, f"{feature}_valid"])
        column = table.column(feature).combine_chunks()
        width = column.type.list_size
        values = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float64)
        values = values[table.column(f"{feature}_valid").to_numpy(zero_copy_only=False).astype(bool)]
        parts.append(pd.DataFrame({"embodiment": embodiment, "dim": np.arange(width), "count": len(values),
                                   "sum": values.sum(0), "sumsq": (values**2).sum(0),
                                   "min": values.min(0) if len(values) else np.inf,
                                   "max": values.max(0) if len(values) else -np.inf}))
    columns = {"embodiment": object, "dim": np.int64, "count": np.int64, "sum": np.float64, "sumsq": np.float64,
               "min": np.float64, "max": np.float64}
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({k: pd.Series(dtype=v)
                                                                          for k, v in columns.items()})


def step_moments(store_uri: str, feature: str = "action", version: str = "latest",
                 storage_options: dict | None = None, scheduler=None) -> pd.DataFrame:
    """Per embodiment and dimension of ``feature`` (state | action): count, mean, std (population),
    min, max over the valid steps of every live episode, recomputed from the steps objects."""
    store = EpisodeStore(store_uri, storage_options or {})
    _, manifest = resolve(store, version)
    catalog = load_catalog(store, manifest).select(["embodiment", "episode_id", "steps_path"]).to_pylist()
    items = [(r["embodiment"], r["episode_id"], r["steps_path"]) for r in catalog]
    chunks = [items[i: i + EPISODES_PER_PARTITION] for i in range(0, len(items), EPISODES_PER_PARTITION)] or [[]]
    meta = _moments_partition([], store_uri, storage_options or {}, feature)
    parts = dd.from_map(_moments_partition, chunks, store_uri=store_uri, storage_options=storage_options or {},
                        feature=feature, meta=meta, enforce_metadata=False)
    grouped = parts.groupby(["embodiment", "dim"]).agg({"count": "sum", "sum": "sum", "sumsq": "sum",
                                                         "min": "min", "max": "max"})
    with dask.config.set(scheduler=scheduler) if scheduler else nullcontext():
        totals = grouped.compute().sort_index()
    mean = totals["sum"] / totals["count"]
    std = np.sqrt(np.maximum(totals["sumsq"] / totals["count"] - mean**2, 0.0))
    return pd.DataFrame({"count": totals["count"], "mean": mean, "std": std, "min": totals["min"],
                         "max": totals["max"]}).reset_index()


def catalog_frame(store_uri: str, version: str = "latest", storage_options: dict | None = None,
                  columns: tuple[str, ...] = ("episode_id", "dataset", "embodiment", "kind", "num_steps", "split",
                                              "success")) -> dd.DataFrame:
    """The version's catalog rows (scalar columns) as a dask dataframe, for group-bys and filters."""
    store = EpisodeStore(store_uri, storage_options or {})
    _, manifest = resolve(store, version)
    table = load_catalog(store, manifest).select(list(columns))
    return dd.from_pandas(table.to_pandas(), npartitions=max(1, table.num_rows // 100_000))

