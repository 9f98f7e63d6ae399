"""Arrow form of the episode schema: the catalog (one row per episode) and the steps table.

The catalog schema is fixed. The steps schema is fixed up to three families of columns that
depend on the episode: the element type and width of ``state``/``action`` (the source's dtype is
kept: float64 stays float64), one ``frame.<camera>`` column per camera, and ``extra.<name>``
columns carrying source-specific per-step values that the schema does not name.
"""

from __future__ import annotations

from dataclasses import asdict
from dataclasses import fields as dataclass_fields
from fractions import Fraction

import numpy as np
import pyarrow as pa

from schemas.episode import (
    CameraInfo,
    ConditioningInput,
    EpisodeMeta,
    GeneratorInfo,
    LabelerInfo,
    Lineage,
    StepArrays,
)
from schemas.version import SCHEMA_METADATA_KEY, SCHEMA_VERSION

FRAME_PREFIX = "frame."
EXTRA_PREFIX = "extra."

CAMERA_TYPE = pa.struct([
    ("name", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fps_num", pa.int64()),
    ("fps_den", pa.int64()),
    ("codec", pa.string()),
    ("pix_fmt", pa.string()),
    ("num_frames", pa.int64()),
    ("source_key", pa.string()),
    ("video_path", pa.string()),
    ("video_sha256", pa.string()),
    ("video_bytes", pa.int64()),
    ("frame_start", pa.int64()),
    ("encoding", pa.string()),
    ("encode_params", pa.string()),
    ("channel_order", pa.string()),
])

GENERATOR_TYPE = pa.struct([
    ("model_id", pa.string()),
    ("checkpoint_sha", pa.string()),
    ("task", pa.string()),
    ("seed", pa.int64()),
    ("guidance", pa.float64()),
    ("num_steps", pa.int64()),
    ("negative_prompt", pa.string()),
    ("params", pa.map_(pa.string(), pa.string())),
])

LINEAGE_TYPE = pa.struct([
    ("parent_episode_id", pa.string()),
    ("parent_frame_range", pa.list_(pa.int64(), 2)),
    ("root_episode_id", pa.string()),
    ("generator", GENERATOR_TYPE),
    ("prompt", pa.string()),
    ("conditioning", pa.list_(pa.struct([
        ("kind", pa.string()),
        ("uri", pa.string()),
        ("frame_index", pa.int64()),
        ("weight", pa.float64()),
    ]))),
    ("action_source", pa.string()),
    ("labeler", pa.struct([("model_id", pa.string()), ("checkpoint_sha", pa.string())])),
    ("state_source", pa.string()),
])

CATALOG_SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("dataset", pa.string()),
        ("source_format", pa.string()),
        ("source_uri", pa.string()),
        ("source_key", pa.string()),
        ("source_checksum", pa.string()),
        ("kind", pa.string()),
        ("embodiment", pa.string()),
        ("control_fps_num", pa.int64()),
        ("control_fps_den", pa.int64()),
        ("num_steps", pa.int64()),
        ("duration_ns", pa.int64()),
        ("state_names", pa.list_(pa.string())),
        ("action_names", pa.list_(pa.string())),
        ("state_dtype", pa.string()),
        ("action_dtype", pa.string()),
        ("action_space", pa.string()),
        ("action_representation", pa.string()),
        ("rotation_type", pa.string()),
        ("tasks", pa.list_(pa.string())),
        ("success", pa.bool_()),
        ("cameras", pa.list_(CAMERA_TYPE)),
        ("split", pa.string()),
        ("lineage", LINEAGE_TYPE),
        # Copies of lineage.{action,state}_source ("recorded" for teleop) so filters need no struct access.
        ("action_source", pa.string()),
        ("state_source", pa.string()),
        ("extras", pa.map_(pa.string(), pa.string())),
        ("schema_version", pa.string()),
        ("steps_path", pa.string()),
        ("steps_sha256", pa.string()),
        ("steps_bytes", pa.int64()),
    ],
    metadata={SCHEMA_METADATA_KEY: SCHEMA_VERSION.encode()},
)


# ---------------------------------------------------------------- catalog rows


def meta_to_row(meta: EpisodeMeta) -> dict:
    """An ``EpisodeMeta`` as a plain dict matching ``CATALOG_SCHEMA``."""
    row = {name: getattr(meta, name) for name in CATALOG_SCHEMA.names if name in EpisodeMeta.__dataclass_fields__}
    row["control_fps_num"] = meta.control_fps.numerator
    row["control_fps_den"] = meta.control_fps.denominator
    row["cameras"] = [_camera_to_row(c) for c in meta.cameras]
    row["lineage"] = _lineage_to_row(meta.lineage)
    row["action_source"] = meta.action_source
    row["state_source"] = meta.state_source
    row["extras"] = list(meta.extras.items())
    return row


def row_to_meta(row: dict) -> EpisodeMeta:
    """Inverse of ``meta_to_row`` (also accepts rows from ``Table.to_pylist``)."""
    fields = {name: row[name] for name in EpisodeMeta.__dataclass_fields__ if name in row}
    fields["control_fps"] = Fraction(row["control_fps_num"], row["control_fps_den"])
    fields["cameras"] = [_camera_from_row(c) for c in row["cameras"] or []]
    fields["lineage"] = _lineage_from_row(row.get("lineage"))
    fields["extras"] = dict(row.get("extras") or [])
    fields["tasks"] = list(row.get("tasks") or [])
    fields["state_names"] = list(row.get("state_names") or [])
    fields["action_names"] = list(row.get("action_names") or [])
    return EpisodeMeta(**fields)


def metas_to_table(metas: list[EpisodeMeta], batch: int = 4096) -> pa.Table:
    """Rows converted ``batch`` at a time: the Python row dicts of a million episodes, held at once,
    were most of a commit's memory; the table (and its Parquet bytes) is the same either way."""
    if len(metas) <= batch:
        return pa.Table.from_pylist([meta_to_row(m) for m in metas], schema=CATALOG_SCHEMA)
    return pa.concat_tables([pa.Table.from_pylist([meta_to_row(m) for m in metas[i:i + batch]], schema=CATALOG_SCHEMA)
                             for i in range(0, len(metas), batch)])


def table_to_metas(table: pa.Table) -> list[EpisodeMeta]:
    return [row_to_meta(r) for r in table.to_pylist()]


_CAMERA_FIELDS = tuple(f.name for f in dataclass_fields(CameraInfo) if f.name != "fps")


def _camera_to_row(cam: CameraInfo) -> dict:
    """A shallow field copy: every field is a scalar, and ``asdict``'s deep copy dominated catalog writes."""
    row = {name: getattr(cam, name) for name in _CAMERA_FIELDS}
    row["fps_num"], row["fps_den"] = cam.fps.numerator, cam.fps.denominator
    return row


def _camera_from_row(row: dict) -> CameraInfo:
    row = dict(row)
    row["fps"] = Fraction(row.pop("fps_num"), row.pop("fps_den"))
    row["channel_order"] = row.get("channel_order") or "rgb"  # absent before schema 1.1
    return CameraInfo(**row)


def _lineage_to_row(lineage: Lineage | None) -> dict | None:
    if lineage is None:
        return None
    row = asdict(lineage)
    if lineage.generator is not None:
        row["generator"]["params"] = list(lineage.generator.params.items())
    if lineage.parent_frame_range is not None:
        row["parent_frame_range"] = list(lineage.parent_frame_range)
    return row


def _lineage_from_row(row: dict | None) -> Lineage | None:
    if row is None:
        return None
    row = dict(row)
    gen = row.get("generator")
    if gen is not None:
        gen = dict(gen)
        gen["params"] = dict(gen.get("params") or [])
        row["generator"] = GeneratorInfo(**gen)
    row["labeler"] = LabelerInfo(**row["labeler"]) if row.get("labeler") else None
    row["conditioning"] = [ConditioningInput(**c) for c in row.get("conditioning") or []]
    pfr = row.get("parent_frame_range")
    row["parent_frame_range"] = tuple(pfr) if pfr is not None else None
    return Lineage(**row)


# ---------------------------------------------------------------- steps table


def steps_schema(meta: EpisodeMeta, steps: StepArrays) -> pa.Schema:
    """The steps schema for one episode (element types and camera columns depend on it)."""
    fields = [
        ("episode_id", pa.string()),
        ("step", pa.int64()),
        ("timestamp_ns", pa.int64()),
        ("state", _vector_type(meta.state_dtype, len(meta.state_names))),
        ("action", _vector_type(meta.action_dtype, len(meta.action_names))),
        ("state_valid", pa.bool_()),
        ("action_valid", pa.bool_()),
        ("reward", pa.float64()),
        ("is_first", pa.bool_()),
        ("is_last", pa.bool_()),
        ("is_terminal", pa.bool_()),
        ("task_index", pa.int32()),
    ]
    fields += [(FRAME_PREFIX + cam.name, pa.int32()) for cam in meta.cameras]
    fields += [(EXTRA_PREFIX + name, _extra_type(values)) for name, values in sorted(steps.extras.items())]
    return pa.schema(fields, metadata={SCHEMA_METADATA_KEY: SCHEMA_VERSION.encode()})


def _vector_type(dtype: str, width: int) -> pa.DataType:
    """Fixed-size lists; an episode without state or action (width 0) gets empty variable lists,
    because Parquet cannot round-trip zero-size fixed lists."""
    element = pa.from_numpy_dtype(np.dtype(dtype))
    return pa.list_(element, width) if width else pa.list_(element)


def steps_to_table(meta: EpisodeMeta, steps: StepArrays) -> pa.Table:
    """The steps of one episode as an Arrow table (values kept exactly, in their own dtype)."""
    s = steps.filled()
    n = s.num_steps
    schema = steps_schema(meta, s)
    step = np.arange(n, dtype=np.int64)
    columns = {
        "episode_id": pa.array([meta.episode_id] * n, pa.string()),
        "step": pa.array(step),
        "timestamp_ns": pa.array(s.timestamp_ns),
        "state": _fixed_list(np.asarray(s.state), schema.field("state").type),
        "action": _fixed_list(np.asarray(s.action), schema.field("action").type),
        "state_valid": pa.array(s.state_valid),
        "action_valid": pa.array(s.action_valid),
        "reward": pa.array(s.reward, pa.float64(), from_pandas=True),  # NaN -> null
        "is_first": pa.array(step == 0),
        "is_last": pa.array(step == n - 1),
        "is_terminal": pa.array(s.is_terminal),
        "task_index": pa.array(s.task_index),
    }
    for cam in meta.cameras:
        columns[FRAME_PREFIX + cam.name] = pa.array(s.frame_index[cam.name], pa.int32())
    for name, values in sorted(s.extras.items()):
        columns[EXTRA_PREFIX + name] = _extra_array(values, schema.field(EXTRA_PREFIX + name).type)
    return pa.Table.from_pydict(columns, schema=schema)


def table_to_steps(table: pa.Table) -> StepArrays:
    """Inverse of ``steps_to_table``: numpy arrays in the stored dtypes."""
    frame_index = {
        name[len(FRAME_PREFIX):]: table.column(name).to_numpy().astype(np.int32)
        for name in table.column_names if name.startswith(FRAME_PREFIX)
    }
    extras = {
        name[len(EXTRA_PREFIX):]: fixed_list_to_numpy(table.column(name))
        for name in table.column_names if name.startswith(EXTRA_PREFIX)
    }
    reward = table.column("reward").to_numpy(zero_copy_only=False).astype(np.float64)
    return StepArrays(
        timestamp_ns=table.column("timestamp_ns").to_numpy().astype(np.int64),
        state=fixed_list_to_numpy(table.column("state")),
        action=fixed_list_to_numpy(table.column("action")),
        frame_index=frame_index,
        task_index=table.column("task_index").to_numpy().astype(np.int32),
        reward=reward,
        is_terminal=table.column("is_terminal").to_numpy(zero_copy_only=False).astype(bool),
        state_valid=table.column("state_valid").to_numpy(zero_copy_only=False).astype(bool),
        action_valid=table.column("action_valid").to_numpy(zero_copy_only=False).astype(bool),
        extras=extras,
    )


def fixed_list_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A (fixed-size) list column as an [N, D] array in its element dtype; scalars stay [N]."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), width)
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        values = arr.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(arr), -1) if len(arr) and values.size else values.reshape(len(arr), 0)
    return arr.to_numpy(zero_copy_only=False)


def _fixed_list(values: np.ndarray, list_type: pa.DataType) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=list_type.value_type)
    if not pa.types.is_fixed_size_list(list_type):  # width 0: every row an empty list
        return pa.ListArray.from_arrays(pa.array(np.zeros(values.shape[0] + 1, np.int32)), flat, type=list_type)
    return pa.FixedSizeListArray.from_arrays(flat, list_type.list_size)


def _extra_type(values: np.ndarray) -> pa.DataType:
    arr = np.asarray(values)
    element = pa.from_numpy_dtype(arr.dtype)
    return pa.list_(element, int(np.prod(arr.shape[1:]))) if arr.ndim > 1 else element


def _extra_array(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    arr = np.asarray(values)
    if pa.types.is_fixed_size_list(arrow_type):
        return _fixed_list(arr.reshape(arr.shape[0], -1), arrow_type)
    return pa.array(arr, type=arrow_type)
