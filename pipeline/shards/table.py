"""The view's sample table (``views/<view_id>/samples.parquet``): one row per sample of every shard.

Loaders build their epoch plan from it (episode lengths, clip anchors, filters by kind or action
source) without opening a single shard index: one small read however many shards the view has.
Per-member byte offsets stay in the per-shard indexes, read lazily.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.shards.index import ShardIndex
from schemas import EpisodeMeta

SAMPLE_TABLE_SCHEMA = pa.schema([
    ("shard", pa.int32()),
    ("row", pa.int32()),  # position of the sample inside its shard index
    ("key", pa.string()),
    ("episode_id", pa.string()),
    ("segment", pa.int32()),
    ("step_start", pa.int64()),
    ("num_steps", pa.int32()),
    ("num_action_steps", pa.int32()),
    ("episode_num_steps", pa.int64()),
    ("dataset", pa.string()),
    ("embodiment", pa.string()),
    ("kind", pa.string()),
    ("action_source", pa.string()),
    ("split", pa.string()),
    ("fps_num", pa.int64()),
    ("fps_den", pa.int64()),
])


def build_sample_table(indexes: list[ShardIndex], metas: dict[str, EpisodeMeta],
                       excluded: list[set[str]] | None = None) -> pa.Table:
    """Live samples in shard order then tar order, episode facts joined from the version's catalog.

    A reused shard may hold samples of episodes the version deleted or replaced (its ``excluded``
    list, or ids absent from the catalog): those get no row, so no loader can yield them.
    """
    rows = []
    for shard, index in enumerate(indexes):
        gone = excluded[shard] if excluded else set()
        for row, sample in enumerate(index.samples):
            meta = metas.get(sample.episode_id)
            if meta is None or sample.episode_id in gone:
                continue
            rows.append({"shard": shard, "row": row, "key": sample.key, "episode_id": sample.episode_id,
                         "segment": sample.segment, "step_start": sample.step_start, "num_steps": sample.num_steps,
                         "num_action_steps": sample.num_action_steps, "episode_num_steps": meta.num_steps,
                         "dataset": meta.dataset, "embodiment": meta.embodiment, "kind": meta.kind,
                         "action_source": meta.action_source, "split": meta.split,
                         "fps_num": meta.control_fps.numerator, "fps_den": meta.control_fps.denominator})
    return pa.Table.from_pylist(rows, schema=SAMPLE_TABLE_SCHEMA)


def sample_table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
