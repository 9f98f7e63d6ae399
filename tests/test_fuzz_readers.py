"""Property tests over the readers of untrusted bytes: for any input they return or raise the
reader's own error (``SourceError``; ``JpegError`` for the JPEG header check), never anything else,
within a bounded time (hypothesis' deadline) and without allocating what a header claims.

Inputs are both arbitrary bytes and valid files with bytes flipped, cut or spliced (most arbitrary
bytes fail at the first magic number; mutations reach the deeper parsing code).
"""

from __future__ import annotations

import contextlib
import io
import json
from fractions import Fraction

import fsspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import EpisodeRef, SourceError
from connectors.fsutil import MAX_JSON_DEPTH, parse_json, read_json
from connectors.rlds.example_pb import Example
from connectors.rlds.reader import read_rlds_episode
from connectors.rlds.tfrecord import frame_record, read_record, scan_framing
from connectors.ros.bags import McapBag, RosbagsBag
from connectors.video_folder.sidecar import load_sidecar
from pipeline.video.mjpeg import JpegError, parse_jpeg

pq_warm = pytest.importorskip("pyarrow.parquet")  # imported before the clock starts: a first import is not a read

FUZZ = settings(max_examples=100, deadline=10_000, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])


def mutate(data: bytes, draw) -> bytes:
    """``data`` with bytes flipped, a cut, or a splice of random bytes (what disks and transfers do)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "splice", "zero"]))
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[at:]
        elif kind == "zero":
            out[at:at + draw(st.integers(1, 64))] = bytes(min(64, len(out) - at))
        else:
            out[at:at] = draw(st.binary(min_size=1, max_size=32))
    return bytes(out)


def _example_bytes(steps: int = 3) -> bytes:
    example = Example()
    feature = example.features.feature
    feature["steps/observation/state"].float_list.value.extend([0.5] * steps * 2)
    feature["steps/action"].float_list.value.extend([0.25] * steps * 2)
    feature["steps/is_first"].int64_list.value.extend([1] + [0] * (steps - 1))
    feature["steps/is_last"].int64_list.value.extend([0] * (steps - 1) + [1])
    feature["steps/language_instruction"].bytes_list.value.extend([b"pick"] * steps)
    return example.SerializeToString()


EXAMPLE = _example_bytes()
TFRECORD = b"".join(frame_record(_example_bytes(n)) for n in (2, 3, 4))


def _scan_and_read(data: bytes) -> None:
    handle = io.BytesIO(data)
    scan = scan_framing(handle, "f.tfrecord", len(data))
    for span in scan.spans:
        with contextlib.suppress(SourceError):
            read_record(handle, span, "f.tfrecord", str(span.index))
    assert all(0 <= a < b <= len(data) for a, b in scan.gaps)


@FUZZ
@given(st.binary(max_size=512))
def test_tfrecord_framing_of_any_bytes(data):
    _scan_and_read(data)


@FUZZ
@given(st.data())
def test_tfrecord_framing_of_damaged_files(data):
    _scan_and_read(mutate(TFRECORD, data.draw))


def test_tfrecord_resync_finds_every_record_after_a_broken_length():
    records = [frame_record(_example_bytes(n)) for n in (2, 3, 4, 5)]
    damaged = bytearray(b"".join(records))
    damaged[len(records[0]) + 3] ^= 0x10  # record 1's length field
    scan = scan_framing(io.BytesIO(bytes(damaged)), "f", len(damaged))
    offsets = np.cumsum([0] + [len(r) for r in records[:-1]]).tolist()
    assert [(s.offset, s.length is None) for s in scan.spans] == [(offsets[0], False), (offsets[1], True),
                                                                  (offsets[2], False), (offsets[3], False)]
    assert scan.gaps == [(offsets[1] + 12, offsets[2])]
    handle = io.BytesIO(bytes(damaged))
    assert [read_record(handle, s, "f", "e") for s in scan.spans if s.length is not None] == [
        _example_bytes(2), _example_bytes(4), _example_bytes(5)]


REF = EpisodeRef(format="rlds", dataset="fuzz", uri="/fuzz", key="f.tfrecord:0")


def _read_example(data: bytes) -> None:
    try:
        episode = read_rlds_episode(data, {}, REF, "f.tfrecord", "train", Fraction(10), {})
    except SourceError:
        return
    assert episode.steps.num_steps >= 1


@FUZZ
@given(st.binary(max_size=256))
def test_example_parsing_of_any_bytes(data):
    _read_example(data)


@FUZZ
@given(st.data())
def test_example_parsing_of_damaged_examples(data):
    _read_example(mutate(EXAMPLE, data.draw))


def _mcap_bytes() -> bytes:
    from mcap_ros2.writer import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    out = io.BytesIO()
    writer = Writer(out)
    joint = writer.register_msgdef("sensor_msgs/msg/JointState",
                                   store.generate_msgdef("sensor_msgs/msg/JointState", ros_version=2)[0])
    for k in range(4):
        writer.write_message("/joint_states", joint, {
            "header": {"stamp": {"sec": 0, "nanosec": k * 1000}, "frame_id": ""}, "name": ["a", "b"],
            "position": [0.1 * k, 0.2], "velocity": [], "effort": []}, log_time=k * 1000)
    writer.finish()
    return out.getvalue()


MCAP = _mcap_bytes()


def _read_bag(tmp_path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    fs = fsspec.filesystem("file")
    bag = McapBag(fs, str(path), "e") if suffix == ".mcap" else RosbagsBag(fs, str(path), "e")
    try:
        topics = bag.topics()
        for _, _, message in bag.messages(list(topics)):
            assert message is not None
    except SourceError:
        pass


@FUZZ
@given(st.data())
def test_mcap_reader_of_damaged_files(tmp_path, data):
    _read_bag(tmp_path, mutate(MCAP, data.draw), ".mcap")


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([".mcap", ".bag"]))
def test_bag_readers_of_any_bytes(tmp_path, data, suffix):
    _read_bag(tmp_path, data, suffix)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=4), max_leaves=30)


def _load_sidecar(data: bytes, suffix: str) -> None:
    fs = fsspec.filesystem("memory")
    path = f"/fuzz-sidecar/ep{suffix}"
    fs.pipe(path, data)
    with contextlib.suppress(SourceError):
        load_sidecar(fs, path)


@FUZZ
@given(st.binary(max_size=256), st.sampled_from([".json", ".csv", ".parquet"]))
def test_sidecar_parsers_of_any_bytes(data, suffix):
    _load_sidecar(data, suffix)


@FUZZ
@given(JSON_VALUES)
def test_sidecar_parser_of_any_json(value):
    _load_sidecar(json.dumps(value).encode(), ".json")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deeply_nested_json_is_a_source_error_not_a_recursion_error(depth):
    fs = fsspec.filesystem("memory")
    fs.pipe("/fuzz-deep/ep.json", b"[" * depth + b"]" * depth)
    with pytest.raises(SourceError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        read_json(fs, "/fuzz-deep/ep.json")
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, "ok") is not None


def _jpeg() -> bytes:
    import cv2

    return cv2.imencode(".jpg", np.full((8, 16, 3), 90, np.uint8))[1].tobytes()


JPEG = _jpeg()


@FUZZ
@given(st.binary(max_size=256))
def test_jpeg_header_check_of_any_bytes(data):
    try:
        info = parse_jpeg(data)
    except JpegError:
        return
    assert info.width > 0 and info.height > 0


@FUZZ
@given(st.data())
def test_jpeg_header_check_of_damaged_jpegs(data):
    try:
        info = parse_jpeg(mutate(JPEG, data.draw))
    except JpegError:
        return
    assert info.width > 0 and info.height > 0
