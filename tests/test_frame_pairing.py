"""Step <-> frame pairing follows the source's reader, checked on GR00T's own demo data.

LeRobot and GR00T pair step i with the video frame nearest ``from_timestamp + timestamp`` (within
1e-4 s). GR00T's demo stamps its rows from 0.05 s at 20 fps, so step i goes with frame i + 1 and the
last step has none. The loader must hand out exactly those frames: compared pixel for pixel on a raw
(``npy``) view at the source size with plain PyAV decoding and the nearest frame time.
"""

from __future__ import annotations

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.loaders import ViewSource, VLAConfig, VLADataset
from pipeline.shards import ViewConfig
from pipeline.store.catalog import CatalogQuery
from pipeline.store.derive import select_version
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas
from tests.conftest import LEROBOT_V20
from tests.consumer_readers import nearest_frames

EPISODE = 4  # the demo's shortest episode (328 steps): the raw view stays small
VIDEO = LEROBOT_V20 / f"videos/chunk-000/observation.images.ego_view/episode_{EPISODE:06d}.mp4"


def _pyav_frames(path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every frame's presentation time (s) and RGB pixels, decoded with plain PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    return np.array([t for t, _ in decoded]), [image for _, image in decoded]


@pytest.fixture(scope="module")
def raw_view(tmp_path_factory, ray_session):
    from jobs.ingest import run_ingest
    from jobs.shard import run_shard

    root = tmp_path_factory.mktemp("pairing")
    report = run_ingest(str(LEROBOT_V20), str(root))
    store = EpisodeStore(str(root))
    meta = next(m for m in table_to_metas(load_catalog(store, resolve(store, "latest")[1]))
                if m.source_key == str(EPISODE))
    select_version(store, "latest", CatalogQuery(episode_ids=(meta.episode_id,)), ref="one")
    view = ViewConfig(height=256, width=256, frame_codec="npy", segment_steps=82, max_action_horizon=1,
                      decoder="pyav", target_shard_bytes=1 << 30)
    _, view_id = run_shard(str(root), view, version="one")
    return root, view_id, report


def test_loader_frames_are_the_pyav_frames_nearest_each_timestamp(raw_view):
    root, view_id, _ = raw_view
    timestamps = pq.read_table(LEROBOT_V20 / f"data/chunk-000/episode_{EPISODE:06d}.parquet").column(
        "timestamp").to_numpy()
    times, frames = _pyav_frames(VIDEO)
    expected = nearest_frames(timestamps, times)
    assert expected[0] == 1 and np.array_equal(expected[:-1], np.arange(1, len(timestamps)))
    assert expected[-1] == -1  # 20.5 s + 0.05 s: past the last frame

    dataset = VLADataset(ViewSource(str(root), view_id), VLAConfig(batch_size=8, action_horizon=1, shuffle=False))
    seen = 0
    for batch in dataset:
        for b, step in enumerate(batch["step"].tolist()):
            frame = int(expected[step])
            assert bool(batch["image_mask"][b, 0]) == (frame >= 0), step
            if frame >= 0:
                got = batch["images"][b, 0].permute(1, 2, 0).numpy()
                assert np.array_equal(got, frames[frame]), (step, frame)
            else:
                assert not batch["images"][b, 0].any()
            seen += 1
    assert seen == len(timestamps) == 328


def test_job_report_names_the_offset_and_the_steps_without_a_frame(raw_view):
    _, _, report = raw_view
    assert ("dataset gr00t-robot-sim-picknplace camera ego_view: step timestamps are offset from the video by +1 "
            "frame(s) in 5 episode(s): step i is paired with frame i+1, as the source's own reader pairs them"
            ) in report.warnings
    assert any(w.startswith("dataset gr00t-robot-sim-picknplace camera ego_view: 5 step(s) in 5 episode(s) have no "
                            "frame within 1e-4 s") for w in report.warnings)
