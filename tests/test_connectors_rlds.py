"""RLDS / TFDS TFRecord connector: known values through the ingest job, the real Bridge sample, bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from connectors import detect_format, get_connector
from connectors.rlds.example_pb import Example
from connectors.rlds.tfrecord import frame_record, masked_crc32c
from schemas import index_to_ns, make_episode_id
from tests.conftest import REAL
from tests.connector_helpers import (
    LOSSLESS,
    assert_jpeg_kept,
    assert_quarantined,
    frames_of,
    ingest,
    psnr,
    smooth_image,
)

BRIDGE = REAL / "rlds_tfds" / "octo-bridge-debug" / "bridge_dataset"
H, W = 48, 64
TASKS = ["pick the red block", "open the drawer"]


def _tensor(shape, dtype="float32"):
    return {"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
            "tensor": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encoding": "none"}}


def _image(fmt):
    return {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
            "image": {"shape": {"dimensions": [str(H), str(W), "3"]}, "dtype": "uint8", "encodingFormat": fmt}}


def _dict(features):
    return {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
            "featuresDict": {"features": features}}


FEATURES = _dict({
    "steps": {"pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset",
              "sequence": {"feature": _dict({
                  "observation": _dict({"image": _image("jpeg"), "wrist": _image("png"), "state": _tensor([4])}),
                  "action": _tensor([3]), "reward": _tensor([]), "discount": _tensor([]),
                  "is_first": _tensor([], "bool"), "is_last": _tensor([], "bool"), "is_terminal": _tensor([], "bool"),
                  "language_instruction": {"text": {}}, "language_embedding": _tensor([5])}), "length": "-1"}},
    "episode_metadata": _dict({"file_path": {"text": {}}, "episode_id": _tensor([], "int32")}),
})


def make_episode(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "state": rng.normal(size=(n, 4)).astype(np.float32), "action": rng.normal(size=(n, 3)).astype(np.float32),
        "reward": np.r_[np.zeros(n - 1), 1.0].astype(np.float32), "discount": rng.uniform(size=n).astype(np.float32),
        "embedding": rng.normal(size=(n, 5)).astype(np.float32), "terminal": np.arange(n) == n - 1,
        "texts": [TASKS[0]] * (n // 2) + [TASKS[1]] * (n - n // 2),
        "image": [smooth_image(H, W, seed * 100 + t) for t in range(n)],
        "wrist": [np.random.default_rng(seed * 1000 + t).integers(0, 256, (H, W, 3), dtype=np.uint8) for t in range(n)],
        "episode_id": seed, "file_path": f"/data/raw/episode_{seed}.npy",
    }


def _jpeg(rgb):
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def _decoded(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _packets(store, cam) -> list[bytes]:
    with av.open(store.objects.abspath(cam.video_path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def _png(rgb):
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def serialize(ep: dict, *, drop: str = "", image_bytes=None, state=None) -> bytes:
    n = len(ep["texts"])
    example = Example()
    feature = example.features.feature
    floats = {"steps/observation/state": ep["state"] if state is None else state, "steps/action": ep["action"],
              "steps/reward": ep["reward"], "steps/discount": ep["discount"],
              "steps/language_embedding": ep["embedding"]}
    for key, values in floats.items():
        feature[key].float_list.value.extend(np.asarray(values, np.float32).reshape(-1).tolist())
    ints = {"steps/is_first": np.arange(n) == 0, "steps/is_last": np.arange(n) == n - 1,
            "steps/is_terminal": ep["terminal"], "episode_metadata/episode_id": [ep["episode_id"]]}
    for key, values in ints.items():
        feature[key].int64_list.value.extend([int(v) for v in values])
    feature["steps/language_instruction"].bytes_list.value.extend([t.encode() for t in ep["texts"]])
    feature["steps/observation/image"].bytes_list.value.extend(image_bytes or [_jpeg(i) for i in ep["image"]])
    feature["steps/observation/wrist"].bytes_list.value.extend([_png(i) for i in ep["wrist"]])
    feature["episode_metadata/file_path"].bytes_list.value.append(ep["file_path"].encode())
    if drop:
        del feature[drop]
    return example.SerializeToString()


def write_dataset(root, name: str, shards: dict[str, list[bytes]], lengths: dict[str, list[int]]) -> None:
    root.mkdir(parents=True)
    (root / "features.json").write_text(json.dumps(FEATURES))
    info = {"name": name, "version": "1.0.0", "fileFormat": "tfrecord",
            "splits": [{"name": s, "shardLengths": [str(x) for x in v]} for s, v in lengths.items()]}
    (root / "dataset_info.json").write_text(json.dumps(info))
    for file_name, records in shards.items():
        (root / file_name).write_bytes(b"".join(frame_record(r) for r in records))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlds") / "toy_rlds" / "1.0.0"
    episodes = {"train": [make_episode(1, 5), make_episode(2, 7), make_episode(3, 6)], "val": [make_episode(4, 4)]}
    write_dataset(root, "toy_rlds", {
        "toy_rlds-train.tfrecord-00000-of-00001": [serialize(e) for e in episodes["train"]],
        "toy_rlds-val.tfrecord-00000-of-00001": [serialize(e) for e in episodes["val"]],
    }, {"train": [3], "val": [1]})
    return root.parent, episodes


@pytest.fixture(scope="module")
def toy_store(toy, ray_session, tmp_path_factory):
    root, episodes = toy
    report, store, metas = ingest(root, tmp_path_factory.mktemp("rlds-store"), options={"fps": 15}, config=LOSSLESS)
    return report, store, metas, episodes


def test_masked_crc_matches_tensorflow_reference_values():
    # Reference values of TensorFlow's masked CRC-32C (crc32c of b"" is 0; of b"a" is 0xC1D04330).
    assert masked_crc32c(b"") == ((0 >> 15 | (0 << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    crc = 0xC1D04330
    assert masked_crc32c(b"a") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_every_value_lands_in_the_store_exactly(toy_store):
    report, store, metas, episodes = toy_store
    assert report.stored == 4 and not report.quarantined
    keys = {f"toy_rlds-train.tfrecord-00000-of-00001:{i}": e for i, e in enumerate(episodes["train"])}
    keys["toy_rlds-val.tfrecord-00000-of-00001:0"] = episodes["val"][0]
    assert set(metas) == set(keys)
    for key, ep in keys.items():
        meta = metas[key]
        n = len(ep["texts"])
        assert meta.episode_id == make_episode_id("toy_rlds", key)
        assert meta.split == ("val" if "val" in key else "train")
        assert meta.num_steps == n and meta.control_fps == 15
        assert meta.tasks == TASKS and meta.state_names == [f"state_{i}" for i in range(4)]
        assert meta.extras["rlds.episode_metadata.episode_id"] == str(ep["episode_id"])
        assert meta.extras["rlds.episode_metadata.file_path"] == ep["file_path"]
        steps = store.read_steps(meta)
        assert steps.state.dtype == np.float32 and np.array_equal(steps.state, ep["state"])
        assert np.array_equal(steps.action, ep["action"])
        assert np.array_equal(steps.reward, ep["reward"].astype(np.float64))
        assert np.array_equal(steps.is_terminal, ep["terminal"])
        assert np.array_equal(steps.extras["discount"], ep["discount"])
        assert np.array_equal(steps.extras["language_embedding"], ep["embedding"])
        assert np.array_equal(steps.timestamp_ns, index_to_ns(np.arange(n), meta.control_fps))
        assert steps.task_index.tolist() == [0] * (n // 2) + [1] * (n - n // 2)
        for camera in ("image", "wrist"):
            assert meta.camera(camera).num_frames == n
            assert np.array_equal(steps.frame_index[camera], np.arange(n))
        wrist = frames_of(store, meta, "wrist")
        assert all(np.array_equal(a, b) for a, b in zip(wrist, ep["wrist"], strict=True))  # PNG: lossless
        image = frames_of(store, meta, "image")
        assert min(psnr(a, b) for a, b in zip(image, ep["image"], strict=True)) >= 40.0  # JPEG source
        # The JPEG bytes are stored as they are and decode to exactly the source JPEG's decode.
        jpegs = [_jpeg(i) for i in ep["image"]]
        assert all(np.array_equal(a, _decoded(b)) for a, b in zip(image, jpegs, strict=True))
        cam = meta.camera("image")
        assert (cam.encoding, cam.codec) == ("source", "mjpeg") and "passthrough" in cam.encode_params
        assert _packets(store, cam) == jpegs
        assert (meta.camera("wrist").encoding, meta.camera("wrist").codec) == ("encoded", "h264")  # PNG: encoded


def test_bgr_cameras_option_swaps_channels(toy):
    root, episodes = toy
    connector = get_connector("rlds")
    ref = connector.discover(str(root), {"bgr_cameras": ["wrist"]}).refs[0]
    frames = list(connector.read(ref).videos["wrist"].frames())
    assert all(np.array_equal(a, b[:, :, ::-1]) for a, b in zip(frames, episodes["train"][0]["wrist"], strict=True))


def test_detected_as_rlds(toy):
    assert detect_format(str(toy[0])) == "rlds"
    assert detect_format(str(BRIDGE)) == "rlds"


def _raw_records(path):
    """The records of a TFRecord file by plain framing (no checksums): the reference count."""
    data = path.read_bytes()
    records, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        records.append(data[offset + 12:offset + 12 + length])
        offset += 16 + length
    return records


def test_real_bridge_sample_counts_and_values():
    connector = get_connector("rlds")
    discovery = connector.discover(str(BRIDGE))
    files = sorted((BRIDGE / "1.0.0").glob("*.tfrecord-*"))
    reference = {f.name: [dict(Example.FromString(r).features.feature) for r in _raw_records(f)] for f in files}
    assert len(discovery.refs) == sum(len(v) for v in reference.values()) == 50
    steps = frames = 0
    for ref in discovery.refs:
        name, index = ref.key.rsplit(":", 1)
        source = reference[name][int(index)]
        episode = connector.read(ref)
        n = len(source["steps/is_first"].int64_list.value)
        assert episode.meta.num_steps == n == 10
        assert len(episode.meta.cameras) == 4
        assert [c.num_frames for c in episode.meta.cameras] == [len(source["steps/observation/image_0"].bytes_list
                                                                    .value)] * 4
        state = np.asarray(source["steps/observation/state"].float_list.value, np.float32).reshape(n, 7)
        assert np.array_equal(episode.steps.state, state)
        assert np.array_equal(episode.steps.action,
                              np.asarray(source["steps/action"].float_list.value, np.float32).reshape(n, 7))
        assert episode.meta.tasks == [source["steps/language_instruction"].bytes_list.value[0].decode()]
        assert episode.meta.extras["rlds.episode_metadata.file_path"].startswith("/nfs/kun2/")
        steps += n
        frames += sum(c.num_frames for c in episode.meta.cameras)
    assert (steps, frames) == (500, 2000)
    # Spot check against SOURCE.md: four instructions, WidowX at 5 Hz, train and val hold the same records.
    tasks = {t for ref in discovery.refs for t in connector.read(ref).meta.tasks}
    assert tasks == {"put carrot on plate", "flip pot upright which is in sink",
                     "put cup from counter or drying rack into sink", "turn lever vertical to front"}
    first = connector.read(discovery.refs[0])
    assert first.meta.control_fps == 5 and first.meta.embodiment == "widowx"
    image = next(iter(first.videos["image_0"].frames()))
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(reference[files[0].name][0]["steps/observation/image_0"]
                                                       .bytes_list.value[0], np.uint8), cv2.IMREAD_COLOR),
                            cv2.COLOR_BGR2RGB)
    assert np.array_equal(image, expected)


def test_real_bridge_episode_through_the_store(tmp_path):
    from pipeline.store.episodes import EpisodeStore

    connector = get_connector("rlds")
    ref = connector.discover(str(BRIDGE)).refs[7]
    episode = connector.read(ref)
    expected = {name: list(source.frames()) for name, source in connector.read(ref).videos.items()}
    store = EpisodeStore(str(tmp_path / "store"))
    meta = store.write_episode(episode, LOSSLESS.encode)
    assert np.array_equal(store.read_steps(meta).state, episode.steps.state)
    for camera in meta.cameras:
        stored = frames_of(store, meta, camera.name)
        assert len(stored) == camera.num_frames == 10
        assert all(np.array_equal(a, b) for a, b in zip(stored, expected[camera.name], strict=True))


def test_a_jpeg_that_cannot_pass_through_is_decoded_and_encoded_with_the_reason(ray_session, tmp_path):
    root = tmp_path / "mixed_rlds" / "1.0.0"
    ep = make_episode(20, 5)
    jpegs = [_jpeg(i) for i in ep["image"]]
    bgr = cv2.cvtColor(ep["image"][3], cv2.COLOR_RGB2BGR)
    jpegs[3] = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    write_dataset(root, "mixed_rlds", {"mixed_rlds-train.tfrecord-00000-of-00001": [serialize(ep, image_bytes=jpegs)]},
                  {"train": [1]})
    _report, store, metas = ingest(root.parent, tmp_path / "store", config=LOSSLESS)
    meta = metas["mixed_rlds-train.tfrecord-00000-of-00001:0"]
    cam = meta.camera("image")
    assert cam.encoding == "encoded"
    assert cam.encode_params.endswith("jpeg passthrough refused: frame 3: progressive JPEG")
    assert all(np.array_equal(a, _decoded(b)) for a, b in zip(frames_of(store, meta, "image"), jpegs, strict=True))


def test_bgr_cameras_are_kept_as_jpeg_and_swapped_on_decode(toy, tmp_path):
    root, _ = toy
    connector = get_connector("rlds")
    plain = connector.read(connector.discover(str(root)).refs[0])
    swapped = connector.read(connector.discover(str(root), {"bgr_cameras": ["image"]}).refs[0])
    rgb = assert_jpeg_kept(plain, "image", tmp_path / "plain", "rgb")
    bgr = assert_jpeg_kept(swapped, "image", tmp_path / "swapped", "bgr")
    assert all(np.array_equal(a, b[..., ::-1]) for a, b in zip(bgr, rgb, strict=True))


@pytest.fixture(scope="module")
def bad_report(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("rlds-bad") / "bad_rlds"
    good = make_episode(10, 4)
    gif = [b"GIF89a" + bytes(30)] * 4
    corrupt = [_jpeg(i) for i in make_episode(17, 4)["image"]]
    corrupt[2] = corrupt[2][: len(corrupt[2]) // 2]  # a cut JPEG in the middle
    resized = [_jpeg(i) for i in make_episode(18, 4)["image"]]
    resized[1] = _jpeg(smooth_image(H // 2, W // 2, 1))
    shard0 = [serialize(good), serialize(make_episode(11, 4), image_bytes=gif),
              serialize(make_episode(12, 4), state=np.zeros((4, 3), np.float32)),
              serialize(make_episode(13, 4), drop="steps/action"),
              serialize(make_episode(17, 4), image_bytes=corrupt), serialize(make_episode(18, 4), image_bytes=resized)]
    bad_crc = bytearray(frame_record(serialize(make_episode(14, 4))))
    bad_crc[40] ^= 0xFF
    truncated = frame_record(serialize(make_episode(15, 4))) + frame_record(serialize(make_episode(16, 4)))[:500]
    write_dataset(root, "bad_rlds", {"bad_rlds-train.tfrecord-00000-of-00003": shard0}, {"train": [6, 1, 2]})
    (root / "bad_rlds-train.tfrecord-00001-of-00003").write_bytes(bytes(bad_crc))
    (root / "bad_rlds-train.tfrecord-00002-of-00003").write_bytes(truncated)
    return ingest(root, tmp_path_factory.mktemp("rlds-bad-store"))


@pytest.mark.parametrize(("key", "field", "words"), [
    ("bad_rlds-train.tfrecord-00000-of-00003:1", "steps/observation/image", "unknown image codec"),
    ("bad_rlds-train.tfrecord-00000-of-00003:2", "steps/observation/state", "shape mismatch"),
    ("bad_rlds-train.tfrecord-00000-of-00003:3", "steps/action", "missing"),
    ("bad_rlds-train.tfrecord-00000-of-00003:4", "steps/observation/image", "cannot be decoded"),
    ("bad_rlds-train.tfrecord-00000-of-00003:5", "steps/observation/image", "shape mismatch: frame 1"),
    ("bad_rlds-train.tfrecord-00001-of-00003:0", "tfrecord.data", "bad CRC"),
    ("bad_rlds-train.tfrecord-00002-of-00003:1", "tfrecord.data", "truncated"),
])
def test_bad_input_is_quarantined_and_the_job_completes(bad_report, key, field, words):
    report, _, metas = bad_report
    assert_quarantined(report, key, file_part=key.split(":")[0], field=field, words=words, metas=metas)


def test_bad_input_leaves_only_good_episodes_visible(bad_report):
    report, store, metas = bad_report
    assert report.version_id and len(report.quarantined) == 7
    assert set(metas) == {"bad_rlds-train.tfrecord-00000-of-00003:0", "bad_rlds-train.tfrecord-00002-of-00003:0"}
    memo_files = list((Path(store.root) / "index" / "ingested").rglob("*.json"))
    assert len(memo_files) == 2  # no memo, hence nothing reusable, for a quarantined episode
