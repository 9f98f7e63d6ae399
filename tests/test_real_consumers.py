"""Exports opened by LeRobot's own ``LeRobotDataset``, not by a re-implementation of it.

``make consumers`` builds the readers' environment (.venv-consumers: LeRobot 0.4.4 for v3.0, and
LeRobot 0.3.3, the v2.1 reader of openpi's pinned LeRobot, on a PYTHONPATH of its own; see
tests/consumers/requirements.txt). tests/consumers/lerobot_probe.py runs there and dumps what a
trainer gets: every parquet column as LeRobot loaded it and ``dataset[i]`` for probed steps. Each real
LeRobot sample (GR00T's demo v2.0, Unitree v2.1, ALOHA v3.0) is ingested and exported in both
layouts; the consumer must see the source's values in the source's dtype, the source's timestamps,
and for every probed step the very frame the source pairs with it (PyAV decode of the source video
nearest ``from_timestamp + timestamp``, pixel-equal), and must refuse exactly the steps the source
has no frame for (GR00T's demo: each episode's last step). Where the environment is missing, the
tests skip and say how to build it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import LEROBOT_V20, LEROBOT_V21, LEROBOT_V30
from tests.consumer_readers import nearest_frames

REPO = Path(__file__).resolve().parent.parent
CONSUMER_PYTHON = Path(os.environ.get("ACTIONREEL_CONSUMER_PYTHON", REPO / ".venv-consumers/bin/python"))
LEROBOT_V21_PATH = CONSUMER_PYTHON.parent.parent / "lerobot-v2.1"
PROBE = REPO / "tests/consumers/lerobot_probe.py"
SOURCES = {"gr00t": LEROBOT_V20, "unitree": LEROBOT_V21, "aloha": LEROBOT_V30}
LAYOUTS = ("v2.1", "v3.0")

pytestmark = pytest.mark.skipif(not (CONSUMER_PYTHON.parent.parent / ".installed").exists(),
                                reason="LeRobot's own readers are not installed: `make consumers` builds them")


def run_probe(root: Path, out: Path, indices: list[int], layout: str, deltas: dict | None = None) -> tuple:
    """LeRobot's reader on ``root`` in its own process: (arrays, meta)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(out.parent), "HF_HOME": str(out.parent / "hf"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(LEROBOT_V21_PATH) if layout == "v2.1" else ""}  # 0.3.3 shadows 0.4.4
    command = [str(CONSUMER_PYTHON), str(PROBE), str(root), str(out), "--indices", ",".join(map(str, indices))]
    if deltas is not None:
        command += ["--delta-timestamps", json.dumps(deltas)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads(Path(f"{out}.json").read_text())
    with np.load(f"{out}.npz") as arrays:
        return {k: arrays[k] for k in arrays.files}, meta


# ------------------------------------------------------------------ the source, read with pyarrow and PyAV


def source_episodes(root: Path) -> list[dict]:
    """The source's episodes in index order: rows, and per camera the video file and its from_timestamp."""
    info = json.loads((root / "meta/info.json").read_text())
    cameras = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    episodes = {}
    for path in sorted((root / "data").rglob("*.parquet")):
        table = pq.read_table(path)
        for index in sorted(set(table.column("episode_index").to_pylist())):
            rows = table.filter(np.asarray(table.column("episode_index").to_numpy() == index))
            episodes[index] = {"index": index, "table": rows, "videos": {}}
    if info["codebase_version"].startswith("v3"):
        meta = pq.read_table(sorted((root / "meta/episodes").rglob("*.parquet"))).to_pylist()
        for row in meta:
            for key in cameras:
                path = info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                 file_index=row[f"videos/{key}/file_index"])
                episodes[row["episode_index"]]["videos"][key] = (root / path, row[f"videos/{key}/from_timestamp"])
    else:
        for index, episode in episodes.items():
            for key in cameras:
                path = root / info["video_path"].format(episode_chunk=index // info["chunks_size"],
                                                        episode_index=index, video_key=key)
                if path.exists():  # GR00T's demo declares a camera that has no files
                    episode["videos"][key] = (path, 0.0)
    return [episodes[i] for i in sorted(episodes)]


def decoded(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every frame of a video with its presentation time (s), as PyAV decodes it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return (np.array([float(Fraction(f.pts) * stream.time_base) for f in frames]),
                [f.to_ndarray(format="rgb24") for f in frames])


def probed_steps(lengths: list[int]) -> list[int]:
    """First two, middle and last two steps of every episode, as global indices."""
    out, start = [], 0
    for n in lengths:
        out += sorted({start + i for i in (0, 1, n // 2, n - 2, n - 1) if 0 <= i < n})
        start += n
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory, ray_session):
    """Each real sample ingested once and exported in both layouts: (name, layout) -> export root."""
    from jobs.ingest import run_ingest
    from pipeline.export import ExportConfig, export_lerobot
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import resolve

    out = {}
    for name, path in SOURCES.items():
        root = tmp_path_factory.mktemp(f"consumer-{name}")
        assert not run_ingest(str(path), str(root / "store")).quarantined
        store = EpisodeStore(str(root / "store"))
        for layout in LAYOUTS:
            export_lerobot(store, resolve(store, "latest")[1], str(root / layout), ExportConfig(layout=layout))
            out[name, layout] = root / layout
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(SOURCES))
def test_lerobot_itself_reads_the_source_values_and_frames(exports, tmp_path, name, layout):
    source = source_episodes(SOURCES[name])
    lengths = [e["table"].num_rows for e in source]
    indices = probed_steps(lengths)
    arrays, meta = run_probe(exports[name, layout], tmp_path / "probe", indices, layout)

    assert meta["codebase_version"] == layout and meta["lerobot"] == ("0.3.3" if layout == "v2.1" else "0.4.4")
    assert meta["num_episodes"] == len(source) and meta["num_frames"] == sum(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    episode_of = np.repeat(np.arange(len(source)), lengths)
    assert np.array_equal(arrays["column.episode_index"], episode_of)
    assert np.array_equal(arrays["column.index"], np.arange(sum(lengths)))
    assert np.array_equal(arrays["column.frame_index"], np.arange(sum(lengths)) - starts[episode_of])
    for column in source[0]["table"].column_names:  # the source's values, in the source's dtype
        if column in ("episode_index", "index", "frame_index"):
            continue
        want = [e["table"].column(column).combine_chunks() for e in source]
        if hasattr(want[0].type, "value_type"):
            want = np.concatenate([np.stack(w.to_numpy(zero_copy_only=False)) for w in want])
        else:
            want = np.concatenate([w.to_numpy(zero_copy_only=False) for w in want])
        got = arrays[f"column.{column}"]
        assert got.dtype == want.dtype and np.array_equal(got, want), column

    cameras = sorted(source[0]["videos"])
    assert meta["camera_keys"] == cameras
    videos = {(e, key): decoded(path)
              for e, episode in enumerate(source) for key, (path, _) in episode["videos"].items()}
    refused = []
    for index in indices:
        e = int(episode_of[index])
        timestamp = float(source[e]["table"].column("timestamp")[index - starts[e]].as_py())
        pairs = {key: nearest_frames(np.array([source[e]["videos"][key][1] + timestamp]), videos[e, key][0])[0]
                 for key in cameras}
        if any(frame < 0 for frame in pairs.values()):
            refused.append(index)
            continue
        at = int(np.flatnonzero(arrays["item_indices"] == index)[0])
        for key, frame in pairs.items():  # the frame the source pairs with this step, pixel for pixel
            assert np.array_equal(arrays[f"item.{key}"][at], videos[e, key][1][frame]), (index, key)
        assert arrays["item.frame_index"][at] == index - starts[e]
    assert sorted(int(i) for i in meta["errors"]) == refused  # the reader refuses exactly the frameless steps
    if name == "gr00t":  # timestamps 0.05 s after their frames: each episode's last step has none
        assert refused == [int(s) - 1 for s in starts[1:]]
        for index, message in meta["errors"].items():  # torchcodec: the frame one past the video's last
            e = int(episode_of[int(index)])
            assert message == f"IndexError: Invalid frame index={lengths[e]} for streamIndex=0; must be less than " \
                              f"{lengths[e]}", message
    else:
        assert refused == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lerobot_itself_loads_the_exported_statistics(exports, tmp_path, layout):
    _, meta = run_probe(exports["gr00t", layout], tmp_path / "probe", [], layout)
    # LeRobot 0.3 aggregates meta/episodes_stats.jsonl (counts there); 0.4 loads meta/stats.json
    want = ["count", "max", "mean", "min", "std"] if layout == "v2.1" else ["max", "mean", "min", "q01", "q99", "std"]
    for key in ("observation.state", "action"):
        assert meta["stats_keys"][key] == want, key
    features = meta["features"]
    assert features["observation.state"]["dtype"] == "float64" and features["next.done"]["dtype"] == "bool"
    assert features["observation.images.ego_view"]["info"]["video.codec"] == "h264"


def test_lerobot_delta_timestamps_equal_the_lerobot_preset(tmp_path, ray_session):
    """#14: the ``lerobot`` preset with ``delta_timestamps`` gives what LeRobot 0.4 itself gives."""
    import torch

    from jobs.ingest import run_ingest
    from jobs.shard import run_shard
    from pipeline.loaders import ViewSource, VLAConfig
    from pipeline.loaders.presets import lerobot_dataset
    from pipeline.shards import ViewConfig
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import load_catalog, resolve
    from schemas import table_to_metas

    run_ingest(str(LEROBOT_V30), str(tmp_path / "store"))
    view = ViewConfig(height=480, width=640, frame_codec="npy", decoder="pyav")
    _, view_id = run_shard(str(tmp_path / "store"), view)
    deltas = {"observation.state": [-0.1, -1 / 30, 0.0], "action": [k / 30 for k in range(-1, 15)],
              "observation.images.top": [-1 / 30, 0.0], "observation.images.wrist": [-1 / 30, 0.0]}
    ours = lerobot_dataset(ViewSource(str(tmp_path / "store"), view_id), deltas, float_images=True,
                           config=VLAConfig(batch_size=None, shuffle=False))
    got = list(itertools.islice(iter(ours), 135))
    store = EpisodeStore(str(tmp_path / "store"))
    metas = sorted(table_to_metas(load_catalog(store, resolve(store, "latest")[1])), key=lambda m: int(m.source_key))
    starts = np.cumsum([0] + [m.num_steps for m in metas]).tolist()
    start = {m.episode_id: first for m, first in zip(metas, starts, strict=False)}
    indices = [start[g["episode_id"]] + int(g["frame_index"]) for g in got]
    assert sorted(indices) == list(range(135))
    theirs, meta = run_probe(LEROBOT_V30, tmp_path / "probe", indices, "v3.0", deltas)
    assert meta["errors"] == {}
    for g, index in zip(got, indices, strict=True):
        at = int(np.flatnonzero(theirs["item_indices"] == index)[0])
        for key in ("observation.state", "action", "observation.state_is_pad", "action_is_pad", "timestamp",
                    "frame_index"):
            assert np.array_equal(g[key].numpy(), theirs[f"item.{key}"][at]), key
        for key in ("observation.images.top", "observation.images.wrist"):
            frames = np.round(g[key].numpy() * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)
            assert np.array_equal(frames, theirs[f"item.{key}"][at]), key
            assert torch.equal(g[f"{key}_is_pad"], torch.from_numpy(theirs[f"item.{key}_is_pad"][at]))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("steps", [12, 13])
def test_lerobot_itself_reads_av1_exports_v21_and_subset_v30(tmp_path, ray_session, steps):
    """AV1 sources written as LeRobot writes them (libsvtav1, g=2, crf=30, three episodes per file): the
    v2.1 export and a one-episode v3.0 export give LeRobot the source's frames, pixel for pixel where the
    cuts fall on keyframes (12 steps: stream copy); where they do not (13: re-encoded), every frame is
    nearest its own source frame (no shift) at >= 30 dB on these noisy 64x96 frames."""
    from jobs.ingest import run_ingest
    from pipeline.export import ExportConfig, export_lerobot
    from pipeline.samples import SampleSpec, write_sample_dataset
    from pipeline.store.catalog import CatalogQuery
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import load_catalog, resolve
    from schemas import table_to_metas

    source = write_sample_dataset(tmp_path / "src", SampleSpec(num_episodes=3, height=64, width=96, min_steps=steps,
                                                               max_steps=steps, codec="libsvtav1", episodes_per_file=3,
                                                               seed=2))
    assert not run_ingest(str(source), str(tmp_path / "store")).quarantined
    store = EpisodeStore(str(tmp_path / "store"))
    manifest = resolve(store, "latest")[1]
    middle = sorted(table_to_metas(load_catalog(store, manifest)), key=lambda m: int(m.source_key))[1]
    export_lerobot(store, manifest, str(tmp_path / "v21"), ExportConfig(layout="v2.1"))
    export_lerobot(store, manifest, str(tmp_path / "one"), ExportConfig(layout="v3.0"),
                   CatalogQuery(episode_ids=(middle.episode_id,)))
    everything = list(range(3 * steps))
    theirs, _ = run_probe(source, tmp_path / "source", everything, "v3.0")
    cameras = [k[len("item."):] for k in theirs if k.startswith("item.observation.images.")]
    assert len(cameras) == 2
    exports = ((tmp_path / "v21", "v2.1", everything), (tmp_path / "one", "v3.0", list(range(steps))))
    for root, layout, indices in exports:
        ours, meta = run_probe(root, tmp_path / layout, indices, layout)
        assert meta["errors"] == {} and meta["num_frames"] == len(indices)
        offset = 0 if layout == "v2.1" else steps  # the subset holds the source's middle episode
        for key in [*cameras, "observation.state", "action", "timestamp", "frame_index"]:
            want, got = theirs[f"item.{key}"][offset:offset + len(indices)], ours[f"item.{key}"]
            if key not in cameras or steps == 12:  # values always, frames where the bitstream is copied
                assert np.array_equal(got, want), (layout, key)
            else:  # re-encoded (H.264 crf 18): each frame nearest its own source frame, none shifted
                for i, frame in enumerate(got):
                    scores = [_psnr(frame, w) for w in want]
                    assert int(np.argmax(scores)) == i and scores[i] >= 30, (layout, key, i, scores[i])
        if steps == 12:
            assert {f["info"]["video.codec"] for f in meta["features"].values() if f["dtype"] == "video"} == {"av1"}
