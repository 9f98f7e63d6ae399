"""The schema contract: Arrow round trips keep values and dtypes exactly; validation names what is wrong."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from schemas import (
    CATALOG_SCHEMA,
    CameraInfo,
    Episode,
    EpisodeMeta,
    EpisodeValidationError,
    GeneratorInfo,
    Lineage,
    StepArrays,
    VideoFile,
    align_nearest,
    index_to_ns,
    make_episode_id,
    metas_to_table,
    ns_to_index,
    parse_rate,
    safe_name,
    steps_to_table,
    table_to_metas,
    table_to_steps,
    validate_episode,
)


def make_episode(n: int = 20, state_dtype=np.float64, lineage: Lineage | None = None) -> Episode:
    rng = np.random.default_rng(1)
    meta = EpisodeMeta(
        episode_id=make_episode_id("ds", "7"), dataset="ds", source_format="test", source_uri="mem://x",
        source_key="7", source_checksum="abc", kind="synthetic" if lineage else "teleop", embodiment="aloha",
        control_fps=Fraction(30000, 1001), num_steps=n, state_names=["a", "b", "c"], action_names=["x", "y"],
        state_dtype=np.dtype(state_dtype).name, action_dtype="float32", tasks=["pick", "place"],
        cameras=[CameraInfo("top", 64, 48, Fraction(30000, 1001), "h264", n)], lineage=lineage,
        extras={"robot": "aloha-stationary"},
    )
    steps = StepArrays(
        timestamp_ns=index_to_ns(np.arange(n), meta.control_fps),
        state=rng.normal(size=(n, 3)).astype(state_dtype),
        action=rng.normal(size=(n, 2)).astype(np.float32),
        frame_index={"top": np.arange(n, dtype=np.int32)},
        task_index=np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(np.int32),
        reward=np.where(np.arange(n) == n - 1, 1.0, np.nan),
        extras={"effort": rng.normal(size=(n, 4)).astype(np.float32), "flag": np.arange(n) % 2 == 0},
    )
    video = VideoFile("file:///none.mp4", 0, n, meta.control_fps)
    return Episode(meta, steps, {"top": video})


def test_steps_round_trip_is_bit_exact_and_keeps_dtypes():
    episode = make_episode(state_dtype=np.float64)
    back = table_to_steps(steps_to_table(episode.meta, episode.steps))
    assert back.state.dtype == np.float64 and back.action.dtype == np.float32
    assert np.array_equal(back.state.view(np.uint64), episode.steps.state.view(np.uint64))
    assert np.array_equal(back.action.view(np.uint32), episode.steps.action.view(np.uint32))
    assert np.array_equal(back.timestamp_ns, episode.steps.timestamp_ns)
    assert np.array_equal(back.frame_index["top"], np.arange(20))
    assert np.array_equal(back.task_index, episode.steps.task_index)
    assert np.isnan(back.reward[:-1]).all() and back.reward[-1] == 1.0
    assert np.array_equal(back.extras["effort"], episode.steps.extras["effort"])
    assert np.array_equal(back.extras["flag"], episode.steps.extras["flag"])
    table = steps_to_table(episode.meta, episode.steps)
    assert table.column("is_first").to_pylist() == [True] + [False] * 19
    assert table.column("is_last").to_pylist() == [False] * 19 + [True]
    assert table.column("reward").null_count == 19  # missing is null, not zero


def test_catalog_round_trip_with_lineage():
    lineage = Lineage(parent_episode_id="ds-1", parent_frame_range=(3, 40), root_episode_id="ds-1",
                      generator=GeneratorInfo("cosmos-predict2.5", "sha", "video2world", seed=7, guidance=7.0,
                                              params={"num_steps": "35"}),
                      prompt="a robot", action_source="inverse_dynamics", state_source="none")
    meta = make_episode(lineage=lineage).meta
    table = metas_to_table([meta])
    assert table.schema.equals(CATALOG_SCHEMA)
    assert table.column("action_source").to_pylist() == ["inverse_dynamics"]
    (back,) = table_to_metas(table)
    assert back == meta
    assert back.control_fps == Fraction(30000, 1001)


def test_catalogs_of_schema_1_0_read_with_rgb_channel_order(tmp_path):
    """1.0 cameras had no channel_order; such catalogs (cast, or scanned as a dataset) read as "rgb"."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    meta = make_episode().meta
    meta.cameras[0].channel_order = "bgr"
    table = metas_to_table([meta])
    cameras = table.schema.field("cameras").type.value_type
    old_camera = pa.struct([f for f in cameras if f.name != "channel_order"])
    rows = [[{k: v for k, v in cam.items() if k != "channel_order"} for cam in row] for row in
            table.column("cameras").to_pylist()]
    old = table.set_column(table.schema.get_field_index("cameras"), "cameras", pa.array(rows, pa.list_(old_camera)))
    pq.write_table(old, tmp_path / "catalog.parquet")
    scanned = ds.dataset(tmp_path / "catalog.parquet", format="parquet", schema=CATALOG_SCHEMA).to_table()
    for back in (table_to_metas(old.cast(CATALOG_SCHEMA))[0], table_to_metas(scanned)[0]):
        assert back.cameras[0].channel_order == "rgb"
        assert back.cameras[0].name == "top" and back.num_steps == meta.num_steps
    assert table_to_metas(table)[0].cameras[0].channel_order == "bgr"


def test_timebase_is_integer_and_does_not_drift():
    rate = Fraction(30000, 1001)
    ns = index_to_ns(np.arange(10_000_000, 10_000_010), rate)
    assert ns.dtype == np.int64
    assert ns[0] == round(10_000_000 * 1001 * 10**9 / 30000)  # exact, not accumulated
    assert np.array_equal(ns_to_index(ns, rate), np.arange(10_000_000, 10_000_010))
    assert parse_rate(29.97) == Fraction(2997, 100) and parse_rate("30000/1001") == rate and parse_rate(20.0) == 20


def test_align_nearest_respects_tolerance():
    frames = np.array([0, 33, 67, 100, 300])
    got = align_nearest(np.array([0, 16, 17, 50, 101, 200, 299]), frames, tolerance_ns=20)
    assert got.tolist() == [0, 0, 1, 1, 3, -1, 4]


def test_safe_names_have_no_dots():
    assert safe_name("observation.images.top") == "top"
    assert safe_name("cam.left/wrist") == "cam_left_wrist"
    assert "." not in make_episode_id("my.dataset", "a/b")


@pytest.mark.parametrize(
    ("mutate", "field", "needle"),
    [
        (lambda e: e.steps.action.__setitem__((4, 1), np.nan), "action", "step 4, dim 1 (y)"),
        (lambda e: setattr(e.meta, "episode_id", "bad.id"), "episode_id", "no dots"),
        (lambda e: setattr(e.meta, "kind", "real"), "kind", "'real'"),
        (lambda e: setattr(e.steps, "state", e.steps.state[:, :2]), "state", "2 dims but 3 names"),
        (lambda e: e.steps.timestamp_ns.__setitem__(3, e.steps.timestamp_ns[2]), "timestamp_ns", "step 3"),
        (lambda e: e.steps.timestamp_ns.__setitem__(0, -1), "timestamp_ns", "must not be negative"),
        (lambda e: e.steps.frame_index.__setitem__("top", np.full(20, 25, np.int32)), "frame.top", "out of"),
        (lambda e: setattr(e.steps, "task_index", np.full(20, 5, np.int32)), "task_index", "[-1, 2)"),
        (lambda e: setattr(e.meta, "state_dtype", "float32"), "state", "dtype float64"),
        (lambda e: setattr(e.meta.cameras[0], "channel_order", "rbg"), "cameras.top", "channel_order 'rbg'"),
    ],
)
def test_validation_names_episode_field_and_problem(mutate, field, needle):
    episode = make_episode()
    mutate(episode)
    with pytest.raises(EpisodeValidationError) as info:
        validate_episode(episode)
    assert info.value.field == field
    assert needle in str(info.value)
    assert info.value.episode in str(info.value)


def test_a_source_clock_that_starts_late_is_kept():
    episode = make_episode()
    episode.steps.timestamp_ns = episode.steps.timestamp_ns + 50_000_000  # GR00T's demo starts at 0.05 s
    validate_episode(episode)


def test_masked_nan_is_allowed_and_synthetic_needs_lineage():
    episode = make_episode()
    episode.steps.action[4, 1] = np.nan
    episode.steps.action_valid = np.arange(20) != 4
    validate_episode(episode)  # masked: fine
    episode.meta.kind = "synthetic"
    with pytest.raises(EpisodeValidationError, match="lineage"):
        validate_episode(episode)
