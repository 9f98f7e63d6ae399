"""Commanded actions given beside an action-conditioned generation (``.npy``, ``.json`` or ``.parquet``)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import SourceError
from connectors.fsutil import parse_json, read_bounded
from schemas import fixed_list_to_numpy
from schemas.episode import NUMERIC_DTYPES

MAX_ACTION_BYTES = 256 * 1024 * 1024


@dataclass
class Actions:
    values: np.ndarray  # [N, D] in the file's dtype
    names: list[str]
    meta: dict  # action_space, action_representation... when the file says


def read_actions(fs: fsspec.AbstractFileSystem, path: str, episode: str) -> Actions:
    data = read_bounded(fs, path, MAX_ACTION_BYTES)
    lower = path.lower()
    try:
        if lower.endswith(".npy"):
            actions = Actions(np.load(io.BytesIO(data), allow_pickle=False), [], {})
        elif lower.endswith(".json"):
            actions = _from_json(parse_json(data, path, where="actions"))
        elif lower.endswith(".parquet"):
            actions = _from_parquet(pq.read_table(io.BytesIO(data)))
        else:
            raise ValueError("unknown action file type")
    except (ValueError, TypeError, pa.ArrowException, json.JSONDecodeError) as exc:
        raise SourceError(path, f"unreadable actions: {exc}", episode, "actions") from exc
    values = actions.values
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise SourceError(path, f"actions must be [steps, dims], got shape {values.shape}", episode, "actions")
    if str(values.dtype) not in NUMERIC_DTYPES:
        raise SourceError(path, f"actions must be numeric, got {values.dtype}", episode, "actions")
    names = actions.names or [f"action_{i}" for i in range(values.shape[1])]
    if len(names) != values.shape[1]:
        raise SourceError(path, f"{len(names)} action names for {values.shape[1]} dims", episode, "action_names")
    return Actions(np.ascontiguousarray(values), [str(n) for n in names], actions.meta)


def _from_json(doc) -> Actions:
    if isinstance(doc, list):
        return Actions(np.asarray(doc, dtype=np.float64).astype(np.float32), [], {})
    if not isinstance(doc, dict):
        raise ValueError("expected a list of rows or an object with 'actions'")
    rows = doc.get("actions", doc.get("action"))
    if not isinstance(rows, list):
        raise ValueError("no 'actions' list")
    dtype = str(doc.get("dtype", "float32"))
    if dtype not in NUMERIC_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(NUMERIC_DTYPES)}")
    names = doc.get("names", doc.get("action_names")) or []
    meta = {k: str(doc[k]) for k in ("action_space", "action_representation", "rotation_type") if k in doc}
    return Actions(np.asarray(rows, dtype=np.float64).astype(dtype), list(names), meta)


def _from_parquet(table: pa.Table) -> Actions:
    column = next((c for c in ("action", "actions") if c in table.column_names), None)
    if column is None:
        raise ValueError(f"no 'action' column (columns: {table.column_names})")
    names = []
    metadata = table.schema.metadata or {}
    if b"action_names" in metadata:
        names = parse_json(metadata[b"action_names"], "action_names", where="parquet metadata")
    return Actions(fixed_list_to_numpy(table.column(column)), names, {})
