"""ROS connector: resampling policies against a hand computation, bags written with mcap / rosbags, the real
Franka MCAP sample, episode splits and bad input."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from mcap.writer import Writer as McapWriter
from mcap_ros2.writer import Writer as Ros2McapWriter
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Ros2Writer
from rosbags.typesys import Stores, get_typestore

from connectors import detect_format, get_connector
from connectors.ros.resample import fixed_ticks
from schemas import index_to_ns
from tests.conftest import REAL
from tests.connector_helpers import (
    LOSSLESS,
    assert_jpeg_kept,
    assert_quarantined,
    frames_of,
    ingest,
    noise_image,
    psnr,
    smooth_image,
)

FRANKA = REAL / "mcap" / "labelbox-franka-teach-vr"
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
H, W = 48, 64
ROS2 = get_typestore(Stores.ROS2_HUMBLE)
ROS1 = get_typestore(Stores.ROS1_NOETIC)


def _stamp(ns: int) -> dict:
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


# ---------------------------------------------------------------- the alignment bag


def alignment_streams() -> dict:
    """JointState at 100 Hz with +-2 ms jitter and a 200 ms dropout; CompressedImage at 30 Hz; action at 100 Hz."""
    rng = np.random.default_rng(7)
    joint = [(T0 + k * 10 * MS + int(rng.integers(-2 * MS, 2 * MS)), k) for k in range(300)
             if not 100 <= k < 120]
    camera = [(T0 + 3 * MS + int(index_to_ns(i, Fraction(30))), i) for i in range(90)]
    action = [(T0 + 1 * MS + k * 10 * MS, k) for k in range(300)]
    return {"joint": joint, "camera": camera, "action": action,
            "images": [smooth_image(H, W, i) for i in range(90)]}


def joint_position(k: int) -> list[float]:
    return [float(k), -0.5 * k, 0.25 * k]


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def write_alignment_bag(path, streams: dict) -> None:
    with open(path, "wb") as handle:
        writer = Ros2McapWriter(handle)
        joint = writer.register_msgdef("sensor_msgs/msg/JointState",
                                       ROS2.generate_msgdef("sensor_msgs/msg/JointState", ros_version=2)[0])
        image = writer.register_msgdef("sensor_msgs/msg/CompressedImage",
                                       ROS2.generate_msgdef("sensor_msgs/msg/CompressedImage", ros_version=2)[0])
        array = writer.register_msgdef("std_msgs/msg/Float64MultiArray",
                                       ROS2.generate_msgdef("std_msgs/msg/Float64MultiArray", ros_version=2)[0])
        events = [(t, "joint", k) for t, k in streams["joint"]] + [(t, "camera", i) for t, i in streams["camera"]]
        events += [(t, "action", k) for t, k in streams["action"]]
        for t, kind, k in sorted(events):
            if kind == "joint":
                writer.write_message("/joint_states", joint, {
                    "header": {"stamp": _stamp(t), "frame_id": ""}, "name": ["j1", "j2", "j3"],
                    "position": joint_position(k), "velocity": [], "effort": []}, log_time=t)
            elif kind == "camera":
                writer.write_message("/camera/front/compressed", image, {
                    "header": {"stamp": _stamp(t), "frame_id": "cam"}, "format": "jpeg",
                    "data": _jpeg(streams["images"][k])}, log_time=t)
            else:
                writer.write_message("/command", array, {
                    "layout": {"dim": [], "data_offset": 0}, "data": [0.1 * k, 0.2 * k]}, log_time=t)
        writer.finish()


def alignment_mapping(policy: str) -> dict:
    return {"rate": 30, "tolerance_ms": 20,
            "cameras": {"front": {"topic": "/camera/front/compressed"}},
            "state": [{"topic": "/joint_states", "policy": policy}],
            "action": [{"topic": "/command", "field": "data", "policy": "nearest", "tolerance_ms": 5}],
            "task": "sort the parts"}


@pytest.fixture(scope="module")
def alignment(tmp_path_factory):
    root = tmp_path_factory.mktemp("ros-align") / "align"
    root.mkdir()
    streams = alignment_streams()
    write_alignment_bag(root / "run.mcap", streams)
    return root, streams


def hand_pick(policy: str, times: list[int], tick: int, tolerance: int) -> int | None:
    """The reference: plain loops over the messages, no numpy."""
    before = [i for i, t in enumerate(times) if t <= tick]
    if policy == "hold":
        return before[-1] if before else None
    if policy == "asof":
        return before[-1] if before and tick - times[before[-1]] <= tolerance else None
    best = min(range(len(times)), key=lambda i: (abs(times[i] - tick), times[i]))
    return best if abs(times[best] - tick) <= tolerance else None


@pytest.mark.parametrize("policy", ["hold", "asof", "nearest"])
def test_each_policy_equals_the_hand_computation(alignment, policy):
    root, streams = alignment
    connector = get_connector("ros")
    ref = connector.discover(str(root), {"mapping": alignment_mapping(policy)}).refs[0]
    episode = connector.read(ref)
    joint_times = [t for t, _ in streams["joint"]]
    start = min(joint_times[0], streams["action"][0][0])
    end = max(joint_times[-1], streams["action"][-1][0])
    ticks = [start + int(index_to_ns(i, Fraction(30))) for i in range((end - start) * 30 // 1_000_000_000 + 1)]
    assert episode.meta.num_steps == len(ticks) == 90 and episode.meta.control_fps == 30
    assert episode.steps.timestamp_ns.tolist() == [t - ticks[0] for t in ticks]
    for step, tick in enumerate(ticks):
        pick = hand_pick(policy, joint_times, tick, 20 * MS)
        if pick is None:
            assert not episode.steps.state_valid[step] and np.isnan(episode.steps.state[step]).all(), step
        else:
            assert episode.steps.state_valid[step], step
            assert episode.steps.state[step].tolist() == joint_position(streams["joint"][pick][1]), step
        frame = hand_pick("nearest", [t for t, _ in streams["camera"]], tick, int(index_to_ns(1, Fraction(30))) // 2)
        assert episode.steps.frame_index["front"][step] == (-1 if frame is None else frame)
    assert episode.meta.state_names == ["j1", "j2", "j3"] and episode.meta.tasks == ["sort the parts"]


def test_dropout_is_masked_by_asof_never_stale(alignment):
    root, streams = alignment
    connector = get_connector("ros")
    episodes = {p: connector.read(connector.discover(str(root), {"mapping": alignment_mapping(p)}).refs[0])
                for p in ("hold", "asof", "nearest")}
    ticks = episodes["asof"].steps.timestamp_ns
    first_tick = min(streams["joint"][0][0], streams["action"][0][0])
    inside = [i for i, t in enumerate(ticks) if T0 + 1020 * MS <= first_tick + t <= T0 + 1180 * MS]
    assert len(inside) == 5  # ticks well inside the 1.00-1.20 s dropout
    for i in inside:
        assert episodes["hold"].steps.state_valid[i]
        assert episodes["hold"].steps.state[i].tolist() == joint_position(99)  # held: stale, by request
        assert not episodes["asof"].steps.state_valid[i] and np.isnan(episodes["asof"].steps.state[i]).all()
        assert not episodes["nearest"].steps.state_valid[i]


def test_alignment_bag_through_the_store(alignment, ray_session, tmp_path):
    root, streams = alignment
    report, store, metas = ingest(root, tmp_path / "store", options={"mapping": alignment_mapping("asof")},
                                  config=LOSSLESS)
    meta = metas["run.mcap"]
    steps = store.read_steps(meta)
    assert report.stored == 1 and meta.camera("front").num_frames == 90
    episode = get_connector("ros").read(get_connector("ros").discover(
        str(root), {"mapping": alignment_mapping("asof")}).refs[0])
    assert np.array_equal(steps.state, episode.steps.state, equal_nan=True)
    assert np.array_equal(steps.state_valid, episode.steps.state_valid)
    assert np.array_equal(steps.frame_index["front"], episode.steps.frame_index["front"])
    assert np.array_equal(steps.action, episode.steps.action, equal_nan=True)
    frames = frames_of(store, meta, "front")
    assert min(psnr(a, b) for a, b in zip(frames, streams["images"], strict=True)) >= 40.0
    # CompressedImage JPEGs are stored as they are: the packets are the message bytes, decoded as the source.
    jpegs = [_jpeg(image) for image in streams["images"]]
    cam = meta.camera("front")
    assert (cam.encoding, cam.codec) == ("source", "mjpeg")
    with av.open(store.objects.abspath(cam.video_path)) as container:
        assert [bytes(p) for p in container.demux(video=0) if p.size] == jpegs
    decoded = [cv2.cvtColor(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
               for j in jpegs]
    assert all(np.array_equal(a, b) for a, b in zip(frames, decoded, strict=True))


def test_bgr_jpeg_topics_are_kept_and_swapped_on_decode(alignment, tmp_path):
    root, _ = alignment
    connector = get_connector("ros")
    mapping = alignment_mapping("asof")
    plain = connector.read(connector.discover(str(root), {"mapping": mapping}).refs[0])
    assert next(plain.videos["front"].encoded()).startswith(b"\xff\xd8")
    mapping["cameras"]["front"] = {"topic": "/camera/front/compressed", "bgr": True}
    swapped = connector.read(connector.discover(str(root), {"mapping": mapping}).refs[0])
    rgb = assert_jpeg_kept(plain, "front", tmp_path / "plain", "rgb")
    bgr = assert_jpeg_kept(swapped, "front", tmp_path / "swapped", "bgr")
    assert all(np.array_equal(a, b[..., ::-1]) for a, b in zip(bgr, rgb, strict=True))


def test_fixed_ticks_are_integer_and_exact():
    ticks = fixed_ticks(T0, T0 + 1_000_000_000, Fraction(30000, 1001))
    assert ticks.dtype == np.int64 and len(ticks) == 30
    assert (ticks - T0).tolist() == index_to_ns(np.arange(30), Fraction(30000, 1001)).tolist()


# ---------------------------------------------------------------- rosbag2 (sqlite3, mcap) and ROS 1


def known_stream(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"log": [T0 + seed * 10**9 + i * 50 * MS for i in range(n)],
            "position": rng.normal(size=(n, 3)), "pose": rng.normal(size=(n, 7)),
            "images": [noise_image(H, W, seed * 100 + i) for i in range(n)], "task": "wipe the table"}


def _messages(store, values: dict, ros1: bool):
    types = store.types
    header_kwargs = {"seq": 0} if ros1 else {}
    for i, log in enumerate(values["log"]):
        stamp_ns = log - 7 * MS  # header stamps 7 ms before logging: the header clock must be the one used
        time = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        header = types["std_msgs/msg/Header"](stamp=time, frame_id="base", **header_kwargs)
        joint = types["sensor_msgs/msg/JointState"](header=header, name=["b", "a", "c"],
                                                    position=values["position"][i][[1, 0, 2]],
                                                    velocity=np.zeros(0), effort=np.zeros(0))
        p = values["pose"][i]
        pose = types["geometry_msgs/msg/PoseStamped"](header=header, pose=types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
            orientation=types["geometry_msgs/msg/Quaternion"](x=p[3], y=p[4], z=p[5], w=p[6])))
        image = types["sensor_msgs/msg/Image"](header=header, height=H, width=W, encoding="rgb8", is_bigendian=0,
                                               step=W * 3, data=values["images"][i].reshape(-1))
        text = types["std_msgs/msg/String"](data=values["task"])
        yield log, [("/joint_states", "sensor_msgs/msg/JointState", joint),
                    ("/target_pose", "geometry_msgs/msg/PoseStamped", pose),
                    ("/camera/wrist/image_raw", "sensor_msgs/msg/Image", image),
                    ("/instruction", "std_msgs/msg/String", text)]


def write_rosbag(path, values: dict, *, ros1: bool = False, plugin=StoragePlugin.SQLITE3) -> None:
    store = ROS1 if ros1 else ROS2
    writer = Ros1Writer(path) if ros1 else Ros2Writer(path, version=9, storage_plugin=plugin)
    with writer:
        connections = {}
        for log, items in _messages(store, values, ros1):
            for topic, msgtype, message in items:
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                data = store.serialize_ros1(message, msgtype) if ros1 else store.serialize_cdr(message, msgtype)
                writer.write(connections[topic], log, data)


ROSBAG_MAPPING = {
    "rate_topic": "/joint_states", "clock": "header",
    "cameras": {"wrist": "/camera/wrist/image_raw"},
    "state": [{"topic": "/joint_states", "joints": ["a", "b", "c"], "policy": "nearest", "tolerance_ms": 0}],
    "action": [{"topic": "/target_pose", "policy": "asof", "tolerance_ms": 0}],
    "task": {"topic": "/instruction", "clock": "log_time"}, "embodiment": "ur5"}


@pytest.fixture(scope="module")
def rosbags_store(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("rosbags") / "bags"
    root.mkdir()
    bags = {"sqlite_bag": known_stream(6, 1), "mcap_bag": known_stream(5, 2), "legacy.bag": known_stream(4, 3)}
    write_rosbag(root / "sqlite_bag", bags["sqlite_bag"])
    write_rosbag(root / "mcap_bag", bags["mcap_bag"], plugin=StoragePlugin.MCAP)
    write_rosbag(root / "legacy.bag", bags["legacy.bag"], ros1=True)
    report, store, metas = ingest(root, tmp_path_factory.mktemp("rosbags-store"),
                                  options={"mapping": ROSBAG_MAPPING}, config=LOSSLESS)
    return root, bags, report, store, metas


def test_rosbag2_and_ros1_values_land_exactly(rosbags_store):
    root, bags, report, store, metas = rosbags_store
    assert detect_format(str(root)) == "ros"
    assert report.stored == 3 and not report.quarantined
    for key, values in bags.items():
        meta = metas[key]
        steps = store.read_steps(meta)
        n = len(values["log"])
        assert meta.num_steps == n and meta.control_fps == 20 and meta.embodiment == "ur5"
        assert meta.state_names == ["a", "b", "c"]  # reordered by joint name
        assert np.array_equal(steps.state, values["position"]) and steps.state_valid.all()
        assert np.array_equal(steps.action, values["pose"]) and steps.action_valid.all()
        assert steps.timestamp_ns.tolist() == [t - values["log"][0] for t in values["log"]]
        # Strings have no header: the task stream runs on log time, 7 ms after the first header-clock tick.
        assert meta.tasks == ["wipe the table"] and steps.task_index.tolist() == [-1] + [0] * (n - 1)
        assert steps.frame_index["wrist"].tolist() == list(range(n))
        frames = frames_of(store, meta, "wrist")
        assert all(np.array_equal(a, b) for a, b in zip(frames, values["images"], strict=True))  # raw rgb8


# ---------------------------------------------------------------- JSON MCAP, splits, the real sample


def write_json_mcap(path, events: list[tuple[int, str, dict]]) -> None:
    with open(path, "wb") as handle:
        writer = McapWriter(handle)
        writer.start(profile="", library="test")
        schema = writer.register_schema("Json", "jsonschema", b"{}")
        channels = {}
        for log, topic, doc in sorted(events, key=lambda e: e[0]):
            if topic not in channels:
                channels[topic] = writer.register_channel(topic, "json", schema)
            writer.add_message(channels[topic], log_time=log, publish_time=log, data=json.dumps(doc).encode())
        writer.finish()


def test_split_by_gap_and_by_marker_topic(tmp_path):
    bursts = [(0, 5), (3, 7), (7, 4)]  # (start second, messages at 10 Hz)
    events = [(T0 + s * 10**9 + i * 100 * MS, "/state", {"q": [s, i]}) for s, count in bursts for i in range(count)]
    events += [(T0 + s * 10**9 - MS, "/episode", {"data": True}) for s, _ in bursts]
    write_json_mcap(tmp_path / "recording.mcap", events)
    connector = get_connector("ros")
    for split in ({"by": "gap", "gap_s": 1.0}, {"by": "topic", "topic": "/episode", "field": "data"}):
        mapping = {"rate_topic": "/state", "state": [{"topic": "/state", "field": "q", "policy": "nearest",
                                                      "tolerance_ms": 0}], "split": split}
        refs = connector.discover(str(tmp_path / "recording.mcap"), {"mapping": mapping}).refs
        assert [r.key for r in refs] == ["recording.mcap#0", "recording.mcap#1", "recording.mcap#2"]
        for (second, count), ref in zip(bursts, refs, strict=True):
            episode = connector.read(ref)
            assert episode.meta.num_steps == count and episode.meta.control_fps == 10
            assert episode.steps.state.tolist() == [[second, i] for i in range(count)]


def test_real_franka_mcap_counts_and_values():
    from mcap.reader import make_reader

    connector = get_connector("ros")
    assert detect_format(str(FRANKA)) == "ros"
    mapping = {"rate_topic": "/joint_states", "clock": "header",
               "state": [{"topic": "/joint_states", "policy": "nearest", "tolerance_ms": 0}],
               "action": [{"topic": "/action", "field": "data", "clock": "header", "stamp_field": "timestamp",
                           "policy": "nearest", "tolerance_ms": 0}]}
    refs = connector.discover(str(FRANKA), {"mapping": mapping}).refs
    files = sorted(p.name for p in FRANKA.glob("*.mcap"))
    assert [r.key for r in refs] == files
    for ref in refs:
        with open(FRANKA / ref.key, "rb") as handle:
            reader = make_reader(handle)
            joints = [json.loads(m.data) for _, c, m in reader.iter_messages(topics=["/joint_states"])]
            summary = reader.get_summary()
            channel = next(i for i, c in summary.channels.items() if c.topic == "/joint_states")
            count = summary.statistics.channel_message_counts[channel]
        episode = connector.read(ref)
        assert episode.meta.num_steps == len(joints) == count
        assert episode.steps.state.tolist() == [j["position"] for j in joints]
        assert episode.meta.state_names == joints[0]["name"] and episode.meta.cameras == []
        assert episode.steps.action.tolist() == [[0.0] * 7] * len(joints)  # SOURCE.md: action is constant zero
        assert episode.meta.success is True
        assert episode.meta.extras["ros.metadata.robot_model.robot_type"] == "franka_fr3"
    assert [connector.read(r).meta.num_steps for r in refs] == [5, 4, 4, 3]


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("ros-bad") / "bad_bags"
    root.mkdir()
    joint = [(T0 + i * 100 * MS, "/joint_states", {"name": ["a", "b"], "position": [i, -i]}) for i in range(5)]
    images = [(T0 + i * 100 * MS + MS, "/cam", {"format": "jpeg", "data": ""}) for i in range(5)]
    good_jpeg = cv2.imencode(".jpg", smooth_image(H, W, 0))[1].tobytes()
    import base64

    ok_images = [(t, topic, {"format": "jpeg", "data": base64.b64encode(good_jpeg).decode()}) for t, topic, _ in images]
    write_json_mcap(root / "good.mcap", joint + ok_images)
    write_json_mcap(root / "no_camera.mcap", joint)
    ragged = [(t, topic, {"name": ["a", "b"], "position": [0.0] * (2 if i != 3 else 3)})
              for i, (t, topic, _) in enumerate(joint)]
    write_json_mcap(root / "ragged.mcap", ragged + ok_images)
    h264 = [(t, topic, {"format": "h264", "data": base64.b64encode(b"\x00\x00\x00\x01gd").decode()})
            for t, topic, _ in images]
    write_json_mcap(root / "h264.mcap", joint + h264)
    write_json_mcap(root / "cut.mcap", joint + ok_images)
    data = (root / "cut.mcap").read_bytes()
    (root / "cut.mcap").write_bytes(data[: len(data) // 2])
    mapping = {"rate_topic": "/joint_states", "cameras": {"cam": "/cam"},
               "state": [{"topic": "/joint_states", "field": "position", "policy": "nearest", "tolerance_ms": 0}]}
    return ingest(root, tmp_path_factory.mktemp("ros-bad-store"), options={"mapping": mapping})


@pytest.mark.parametrize(("key", "field", "words"), [
    ("no_camera.mcap", "/cam", "missing topic"),
    ("ragged.mcap", "/joint_states:position", "shape mismatch"),
    ("h264.mcap", "/cam", "unknown image codec 'h264'"),
    ("cut.mcap", "mcap", "truncated or corrupt"),
])
def test_bad_input_is_quarantined(bad, key, field, words):
    report, _, metas = bad
    assert_quarantined(report, key, file_part=key, field=field, words=words, metas=metas)
    assert set(metas) == {"good.mcap"}


def test_frames_are_read_again_beyond_the_memory_budget(alignment, monkeypatch):
    from connectors.ros import reader

    root, streams = alignment
    connector = get_connector("ros")
    ref = connector.discover(str(root), {"mapping": alignment_mapping("asof")}).refs[0]
    kept = list(connector.read(ref).videos["front"].frames())
    monkeypatch.setattr(reader, "MAX_KEPT_IMAGE_BYTES", 0)
    reread = list(connector.read(ref).videos["front"].frames())
    assert len(kept) == len(reread) == 90
    assert all(np.array_equal(a, b) for a, b in zip(kept, reread, strict=True))
    assert psnr(kept[45], streams["images"][45]) >= 40.0
