"""Episode sidecars (JSON, CSV or Parquet) read into named columns.

A JSON sidecar is an object of fields (lists are per-step columns) or a list of per-step
objects. CSV and Parquet sidecars are tables; numbered columns such as ``state_0, state_1`` or
``action.0`` are gathered into one vector column.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connectors.base import SourceError
from connectors.fsutil import read_bounded, read_json
from schemas import fixed_list_to_numpy

SIDECAR_SUFFIXES = (".json", ".csv", ".parquet")
MAX_SIDECAR_BYTES = 256 * 1024 * 1024
_NUMBERED = re.compile(r"^(?P<base>.+?)(?:[._]|\[)(?P<index>\d+)\]?$")


@dataclass
class Sidecar:
    """Fields of one episode sidecar: per-step ``columns`` and episode-level ``fields``."""

    path: str
    columns: dict[str, Any] = field(default_factory=dict)  # name -> list (JSON) or numpy array (tables)
    fields: dict[str, Any] = field(default_factory=dict)  # name -> scalar, string or nested value


def load_sidecar(fs: fsspec.AbstractFileSystem, path: str) -> Sidecar:
    suffix = path.rsplit(".", 1)[-1].lower()
    if suffix == "json":
        return _from_json(path, read_json(fs, path, MAX_SIDECAR_BYTES))
    data = read_bounded(fs, path, MAX_SIDECAR_BYTES)
    try:
        table = pq.read_table(io.BytesIO(data)) if suffix == "parquet" else pacsv.read_csv(io.BytesIO(data))
    except (pa.ArrowException, ValueError, OSError) as exc:  # ValueError: also bytes that are not UTF-8 text
        raise SourceError(path, f"unreadable {suffix} sidecar: {exc}") from exc
    try:
        return _from_table(path, table)
    except (pa.ArrowException, ValueError) as exc:  # column names or values that are not text / numbers
        raise SourceError(path, f"unreadable {suffix} sidecar: {exc}") from exc


def _from_json(path: str, doc: Any) -> Sidecar:
    if isinstance(doc, list) and doc and all(isinstance(row, dict) for row in doc):
        names = list(dict.fromkeys(k for row in doc for k in row))
        return Sidecar(path, columns={k: [row.get(k) for row in doc] for k in names})
    if not isinstance(doc, dict):
        raise SourceError(path, "a JSON sidecar must be an object or a list of per-step objects")
    sidecar = Sidecar(path)
    for key, value in doc.items():
        if isinstance(value, list) and value and not all(isinstance(v, (dict, str)) for v in value):
            sidecar.columns[key] = value
        else:
            sidecar.fields[key] = value
    return sidecar


def _from_table(path: str, table: pa.Table) -> Sidecar:
    sidecar = Sidecar(path)
    groups: dict[str, list[tuple[int, str]]] = {}
    for name in table.column_names:
        column = table.column(name)
        kind = column.type.value_type if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(
            column.type) else column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            sidecar.columns[name] = [str(v) if v is not None else None for v in column.to_pylist()]
            continue
        match = _NUMBERED.match(name)
        if match and not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)):
            groups.setdefault(match.group("base"), []).append((int(match.group("index")), name))
        else:
            sidecar.columns[name] = fixed_list_to_numpy(column)
    for base, members in groups.items():
        members.sort()
        if [i for i, _ in members] != list(range(len(members))):
            for _, name in members:  # not a 0..k-1 run: keep the columns apart
                sidecar.columns[name] = table.column(name).to_numpy(zero_copy_only=False)
            continue
        sidecar.columns[base] = np.stack([table.column(name).to_numpy(zero_copy_only=False) for _, name in members],
                                         axis=1)
    return sidecar


def first_key(sidecar: Sidecar, candidates: tuple[str, ...], chosen: str | None = None) -> str | None:
    """The first of ``candidates`` present in the sidecar (or the user's choice, which must be there)."""
    if chosen:
        if chosen not in sidecar.columns and chosen not in sidecar.fields:
            raise SourceError(sidecar.path, "missing field", "", chosen)
        return chosen
    return next((k for k in candidates if k in sidecar.columns or k in sidecar.fields), None)


def numeric_column(sidecar: Sidecar, key: str, episode: str) -> np.ndarray:
    """A per-step numeric column as [rows, width] (JSON lists of lists must be rectangular)."""
    value = sidecar.columns.get(key, sidecar.fields.get(key))
    try:
        arr = np.asarray(value, dtype=np.float64) if isinstance(value, list) else np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise SourceError(sidecar.path, f"shape mismatch: rows of different lengths or non-numbers ({exc})", episode,
                          key) from exc
    if arr.dtype.kind not in "fiub" or arr.ndim == 0:
        raise SourceError(sidecar.path, f"not a numeric per-step column (dtype {arr.dtype})", episode, key)
    return arr.reshape(arr.shape[0], -1)
