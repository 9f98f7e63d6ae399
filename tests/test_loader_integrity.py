"""Loader integrity: one flipped byte in any member of a real shard is an error naming shard, member and
sample key, or (``on_corrupt="skip"``) a skipped, counted sample; never a wrong value.

Each case copies a view's files into a fresh folder, flips one byte inside one member, and reads the
whole view: with "raise" the error names exactly that member; with "skip" every served value equals a
clean run's bit for bit, and the served keys are the clean keys minus exactly the expected ones.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from jobs.shard import run_shard
from pipeline.loaders import (
    ResumableLoader,
    ShardCache,
    ViewSource,
    VLAConfig,
    VLADataset,
    WAMConfig,
    WAMDataset,
    make_loader,
)
from pipeline.loaders.integrity import CorruptMemberError
from pipeline.shards import ViewConfig
from pipeline.shards.index import INDEX_FORMAT_V1, npy_split_checksum

HORIZON = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory, ray_session) -> Path:
    from jobs.ingest import run_ingest
    from pipeline.samples import SampleSpec, write_sample_dataset

    root = tmp_path_factory.mktemp("integrity")
    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=3, min_steps=40, max_steps=56, height=96,
                                                              width=128, episodes_per_file=2, seed=5))
    run_ingest(str(source), str(root / "store"))
    return root / "store"


def _view(codec: str) -> ViewConfig:
    return ViewConfig(height=48, width=64, frame_codec=codec, segment_steps=16, max_action_horizon=HORIZON,
                      target_shard_bytes=150_000, decoder="pyav")


@pytest.fixture(scope="module")
def views(store) -> dict[str, str]:
    return {codec: run_shard(str(store), _view(codec))[1] for codec in ("jpg", "npy", "mp4")}


def _copy_view(store: Path, view_id: str, out: Path) -> Path:
    """The files a loader reads (view manifest, sample table, stats, shards) copied under ``out``."""
    manifest = json.loads((store / "views" / view_id / "view.json").read_text())
    paths = [f"views/{view_id}/view.json", manifest["samples_path"]]
    paths += [manifest["stats"]["path"]] if manifest.get("stats") else []
    for shard in manifest["shards"]:
        paths += [shard["tar_path"], shard["index_path"]]
    for path in paths:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store / path, out / path)
    return out


def _member(source: ViewSource, suffix: str, sample: int | None = None) -> tuple[int, str, str, int, int]:
    """(sample row, tar path, sample key, data offset, size) of ``suffix`` in a middle sample holding it."""
    rows = [r for r in range(len(source.table)) if suffix in source.entry(r).members]
    row = rows[len(rows) // 2] if sample is None else sample
    entry = source.entry(row)
    offset, size = entry.members[suffix]
    return row, source.manifest.shards[int(source.table["shard"][row])].tar_path, entry.key, offset, size


def _flip(path: Path, position: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        value = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([value ^ 0x5A]))


def _served(dataset) -> dict[str, dict]:
    """Every served sample, by key, each field as a numpy array or a plain value."""
    out = {}
    for batch in dataset:
        for b, key in enumerate(batch["key"]):
            out[key] = {name: value[b].numpy() if isinstance(value, torch.Tensor) else value[b]
                        for name, value in batch.items() if isinstance(value, (list, torch.Tensor))}
    return out


def _config(**kwargs) -> VLAConfig:
    return VLAConfig(batch_size=8, shuffle=False, drop_last=False, action_horizon=HORIZON, **kwargs)


def _assert_bit_exact(got: dict[str, dict], clean: dict[str, dict]) -> None:
    for key, sample in got.items():
        for name, value in sample.items():
            if isinstance(value, np.ndarray):
                assert value.dtype == clean[key][name].dtype and value.tobytes() == clean[key][name].tobytes(), (
                    key, name)
            else:
                assert value == clean[key][name], (key, name)


_clean_cache: dict[tuple[str, str], dict] = {}


def _clean(store: Path, view_id: str, cameras: tuple[str, ...] | None) -> dict[str, dict]:
    key = (view_id, str(cameras))
    if key not in _clean_cache:
        _clean_cache[key] = _served(VLADataset(ViewSource(str(store), view_id), _config(cameras=cameras)))
    return _clean_cache[key]


def _steps_of(source: ViewSource, row: int, camera: str | None = None) -> set[str]:
    """Loader keys (``episode:step``) of the steps sample ``row`` holds (with a frame of ``camera``)."""
    entry = source.entry(row)
    info = json.loads(source.member(row, "meta.json"))
    steps = range(entry.step_start, entry.step_start + entry.num_steps)
    if camera is None:
        return {f"{entry.episode_id}:{t}" for t in steps}
    frames = np.load(io.BytesIO(source.member(row, "frame_index.npy")))
    column = info["cameras"].index(camera)
    return {f"{entry.episode_id}:{t}" for i, t in enumerate(steps) if frames[i, column] >= 0}


ARRAY_MEMBERS = ["meta.json", "state.npy", "state_valid.npy", "action.npy", "action_valid.npy", "timestamp.npy",
                 "task_index.npy"]
CASES = [("jpg", m, None) for m in ARRAY_MEMBERS] + [
    ("jpg", "cam_high.0005.jpg", "cam_high"),
    ("npy", "cam_high.0005.npy", "cam_high"),
    ("mp4", "cam_high.mp4", "cam_high"),
    ("mp4", "frame_index.npy", "cam_high"),
]


@pytest.mark.parametrize(("codec", "suffix", "camera"), CASES, ids=[f"{c}-{s}" for c, s, _ in CASES])
def test_flipped_byte_in_each_member_kind_raises_or_skips_exactly(store, views, tmp_path, codec, suffix, camera):
    view_id = views[codec]
    cameras = (camera,) if camera else ()
    clean = _clean(store, view_id, cameras)
    copy = _copy_view(store, view_id, tmp_path / "copy")
    probe = ViewSource(str(copy), view_id)
    row, tar, key, offset, size = _member(probe, suffix)
    expected_skipped = {f"{probe.entry(row).episode_id}:{probe.entry(row).step_start + 5}"} if (
        codec in ("jpg", "npy") and camera) else _steps_of(probe, row, camera if codec == "mp4" else None)
    _flip(copy / tar, offset + size - 1 if suffix.endswith(".npy") else offset + size // 2)

    with pytest.raises(CorruptMemberError) as raised:
        _served(VLADataset(ViewSource(str(copy), view_id), _config(cameras=cameras)))
    error = raised.value
    assert (error.shard, error.member, error.key) == (tar, f"{key}.{suffix}", key)
    assert str(error).startswith(f"shard {tar}: member {key}.{suffix} of sample {key}: checksum mismatch")

    dataset = VLADataset(ViewSource(str(copy), view_id), _config(cameras=cameras, on_corrupt="skip"))
    got = _served(dataset)
    assert set(clean) - set(got) == expected_skipped and set(got) <= set(clean)
    assert dataset.skipped == len(expected_skipped)
    assert [(r["shard"], r["member"], r["key"]) for r in dataset.skip_log.corrupt] == [(tar, f"{key}.{suffix}", key)]
    _assert_bit_exact(got, clean)


def test_workers_count_skips_and_the_resume_state_carries_them(store, views, tmp_path):
    view_id = views["jpg"]
    copy = _copy_view(store, view_id, tmp_path / "copy")
    probe = ViewSource(str(copy), view_id)
    row, tar, key, offset, size = _member(probe, "state.npy")
    _flip(copy / tar, offset + size - 1)
    expected = _steps_of(probe, row)
    clean = _clean(store, view_id, ())

    dataset = VLADataset(ViewSource(str(copy), view_id), _config(cameras=(), on_corrupt="skip"))
    got = {}
    for batch in make_loader(dataset, num_workers=2, prefetch_factor=2):
        got.update({k: b for b, k in enumerate(batch["key"])})
    assert set(clean) - set(got) == expected and dataset.skipped == len(expected)

    loader = ResumableLoader(VLADataset(ViewSource(str(copy), view_id), _config(cameras=(), on_corrupt="skip")),
                             num_workers=1)
    assert sum(len(b["key"]) for b in loader) == len(clean) - len(expected)
    state = loader.state_dict()
    assert state["integrity"]["skipped"] == len(expected)
    assert [r["member"] for r in state["integrity"]["corrupt"]] == [f"{key}.state.npy"]
    resumed = ResumableLoader(VLADataset(ViewSource(str(copy), view_id), _config(cameras=(), on_corrupt="skip")))
    resumed.load_state_dict(state)
    assert resumed.skipped == len(expected)
    checked = VLADataset(ViewSource(str(copy), view_id), _config(cameras=()))
    assert ResumableLoader(checked).load_state_dict(state) is None  # on_corrupt does not change the fingerprint


def test_wam_loader_raises_and_skips_clips_touching_the_corrupt_member(store, views, tmp_path):
    view_id = views["jpg"]
    copy = _copy_view(store, view_id, tmp_path / "copy")
    config = WAMConfig(n_context=1, n_future=2, batch_size=4, shuffle=False, cameras=("cam_high",))
    clean = _served(WAMDataset(ViewSource(str(store), view_id), config))
    probe = ViewSource(str(copy), view_id)
    row, tar, key, offset, size = _member(probe, "action.npy")
    _flip(copy / tar, offset + size - 1)
    with pytest.raises(CorruptMemberError) as raised:
        _served(WAMDataset(ViewSource(str(copy), view_id), config))
    assert (raised.value.member, raised.value.key) == (f"{key}.action.npy", key)
    skipping = WAMDataset(ViewSource(str(copy), view_id), dataclasses.replace(config, on_corrupt="skip"))
    got = _served(skipping)
    entry = probe.entry(row)
    # a clip reads the arrays of every sample holding one of its steps t0, t0 + 1, t0 + 2
    touching = {k for k in clean if k.split(":")[0] == entry.episode_id and
                entry.step_start - 2 <= int(k.split(":")[1]) < entry.step_start + entry.num_steps}
    assert set(clean) - set(got) == touching and skipping.skipped == len(touching) > 0
    _assert_bit_exact(got, clean)


@pytest.mark.parametrize("cached", [False, True], ids=["read-ahead", "shard-cache"])
def test_remote_reads_are_checked_too(store, views, tmp_path, cached):
    view_id = views["jpg"]
    copy = _copy_view(store, view_id, tmp_path / "copy")
    probe = ViewSource(str(copy), view_id)
    _, tar, key, offset, size = _member(probe, "cam_high.0005.jpg")
    _flip(copy / tar, offset + size // 2)
    memory = fsspec.filesystem("memory")
    root = f"/integrity-{cached}"
    for path in copy.rglob("*"):
        if path.is_file():
            memory.pipe_file(f"{root}/{path.relative_to(copy)}", path.read_bytes())
    cache = ShardCache(tmp_path / "cache", 1 << 30) if cached else None
    remote = ViewSource(f"memory://{root}", view_id, cache=cache)
    with pytest.raises(CorruptMemberError) as raised:
        _served(VLADataset(remote, _config(cameras=("cam_high",))))
    assert (raised.value.shard, raised.value.member) == (tar, f"{key}.cam_high.0005.jpg")


def _index_path(copy: Path, probe: ViewSource, row: int) -> Path:
    return copy / probe.manifest.shards[int(probe.table["shard"][row])].index_path


@pytest.mark.parametrize("split", [True, False], ids=["split-checksum", "whole-member-fallback"])
@pytest.mark.parametrize("where", ["header", "pixels"])
def test_raw_frame_checked_in_header_and_pixels_with_or_without_split_checksum(store, views, tmp_path, split,
                                                                               where):
    view_id = views["npy"]
    copy = _copy_view(store, view_id, tmp_path / "copy")
    probe = ViewSource(str(copy), view_id)
    suffix = "cam_high.0005.npy"
    row, tar, key, offset, size = _member(probe, suffix)
    data = probe.member(row, suffix)
    assert probe.entry(row).split_checksums[suffix] == npy_split_checksum(data)
    assert all(s.endswith(".npy") for s in probe.entry(row).split_checksums)  # raw frames only
    if not split:  # an index written before split checksums: the streaming whole-member check
        index_path = _index_path(copy, probe, row)
        index = json.loads(index_path.read_text())
        for sample in index["samples"]:
            sample["members"] = {k: v[:3] for k, v in sample["members"].items()}
        index_path.write_text(json.dumps(index))
        assert ViewSource(str(copy), view_id).entry(row).split_checksums == {}
        clean = _clean(store, view_id, ("cam_high",))
        _assert_bit_exact(_served(VLADataset(ViewSource(str(copy), view_id), _config(cameras=("cam_high",)))), clean)
    # the header's shape digits (inside the dict), or the last pixel byte
    position = offset + data.index(b"(") + 1 if where == "header" else offset + size - 1
    _flip(copy / tar, position)
    with pytest.raises(CorruptMemberError) as raised:
        _served(VLADataset(ViewSource(str(copy), view_id), _config(cameras=("cam_high",))))
    assert (raised.value.shard, raised.value.member, raised.value.key) == (tar, f"{key}.{suffix}", key)
    assert "checksum mismatch" in str(raised.value)


def test_format_1_index_is_read_unchecked_and_reported(store, views, tmp_path):
    view_id = views["jpg"]
    copy = _copy_view(store, view_id, tmp_path / "copy")
    probe = ViewSource(str(copy), view_id)
    row, tar, key, offset, _ = _member(probe, "meta.json")
    index_path = copy / probe.manifest.shards[int(probe.table["shard"][row])].index_path
    index = json.loads(index_path.read_text())
    index["format"] = INDEX_FORMAT_V1
    index.pop("checksum")
    for sample in index["samples"]:
        sample["members"] = {k: v[:2] for k, v in sample["members"].items()}
    index_path.write_text(json.dumps(index))
    clean = _clean(store, view_id, ())
    assert ViewSource(str(copy), view_id).unchecked_shards() == [tar]
    with pytest.warns(UserWarning, match=f"shard {tar}: format 1 index without member checksums"):
        assert _served(VLADataset(ViewSource(str(copy), view_id), _config(cameras=()))).keys() == clean.keys()
    _flip(copy / tar, offset + 1)  # meta.json's first quote: no checksum to catch it, but no longer JSON
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CorruptMemberError) as raised:
            _served(VLADataset(ViewSource(str(copy), view_id), _config(cameras=())))
    assert (raised.value.member, raised.value.key) == (f"{key}.meta.json", key)
    assert "cannot be decoded" in str(raised.value)


def test_on_corrupt_must_be_raise_or_skip():
    with pytest.raises(ValueError, match="on_corrupt must be one of"):
        VLAConfig(on_corrupt="ignore")
    with pytest.raises(ValueError, match="on_corrupt must be one of"):
        WAMConfig(on_corrupt="")
