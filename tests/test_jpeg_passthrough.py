"""Source JPEG frames kept as they are (pipeline.video.mjpeg): which frames pass, what the store records,
that stored frames decode to exactly the source's decode with frame-exact seeks, and every fallback."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from pipeline.store.episodes import EpisodeStore
from pipeline.video import EncodeConfig, PyAVDecoder, VideoInput, probe_video
from pipeline.video.mjpeg import PASSTHROUGH_PARAMS, JpegError, mux_jpeg_frames, parse_jpeg
from pipeline.video.router import Devices, RouterConfig, may_use_gpu, route_stream
from schemas import CameraInfo, Episode, EpisodeMeta, FrameSequence, StepArrays, index_to_ns, make_episode_id

H, W = 48, 64
FPS = Fraction(15)


def textured(seed: int, height: int = H, width: int = W) -> np.ndarray:
    """Gradients plus grain: libjpeg and FFmpeg decode such JPEGs differently, so equality means something."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([128 + 90 * np.sin(x / 7 + seed), 128 + 90 * np.cos(y / 5 - seed), 128 + 60 * np.sin((x + y) / 9)],
                    axis=-1)
    grain = np.random.default_rng(seed).normal(0, 12, (height, width, 3))
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, *params: int) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90, *params])[1] \
        .tobytes()


def source_decode(data: bytes) -> np.ndarray:
    """What a connector (and a test) gets from the source JPEG: OpenCV's decode, as RGB."""
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def with_segment(data: bytes, marker: int, body: bytes) -> bytes:
    """``data`` with one more segment right after SOI."""
    return data[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + data[2:]


def exif(orientation: int) -> bytes:
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    return b"Exif\x00\x00" + tiff


# ---------------------------------------------------------------- which frames pass


def test_parse_accepts_sequential_ycbcr_jpegs_and_names_what_it_refuses():
    image = textured(1)
    accepted = {(): "yuvj420p",
                (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422): "yuvj422p",
                (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444): "yuvj444p",
                (cv2.IMWRITE_JPEG_RST_INTERVAL, 2): "yuvj420p", (cv2.IMWRITE_JPEG_OPTIMIZE, 1): "yuvj420p"}
    for params, pix_fmt in accepted.items():
        info = parse_jpeg(jpeg(image, *params))
        assert (info.width, info.height, info.pix_fmt, info.refusal()) == (W, H, pix_fmt, None), params
    assert parse_jpeg(with_segment(jpeg(image), 0xE1, exif(1))).refusal() is None
    refused = {
        "progressive JPEG": jpeg(image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "1-component JPEG": cv2.imencode(".jpg", image[..., 0])[1].tobytes(),
        "EXIF orientation 6": with_segment(jpeg(image), 0xE1, exif(6)),
        "RGB-coded JPEG": with_segment(jpeg(image), 0xEE, b"Adobe" + bytes([0, 100, 0, 0, 0, 0, 0])),
    }
    for words, data in refused.items():
        assert words in (parse_jpeg(data).refusal() or ""), words


@pytest.mark.parametrize(("cut", "words"), [
    (lambda d: d[: len(d) // 2], "truncated"),
    (lambda d: d[:-2], "truncated"),
    (lambda d: d[2:], "start-of-image"),
    (lambda d: d[:2] + b"\xff\x00" + bytes(40), "invalid marker"),
    (lambda d: d[:200], "past the end"),
])
def test_parse_rejects_incomplete_jpegs(cut, words):
    with pytest.raises(JpegError, match=words):
        parse_jpeg(cut(jpeg(textured(2))))


def test_mux_refuses_a_size_or_layout_change_and_says_which_frame():
    frames = [jpeg(textured(i)) for i in range(4)]
    smaller = [*frames[:2], jpeg(textured(2, H // 2, W // 2)), *frames[3:]]
    assert mux_jpeg_frames(smaller, FPS, W, H).refused == f"frame 2: {W // 2}x{H // 2}, the camera is {W}x{H}"
    mixed = [*frames[:3], jpeg(textured(3), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)]
    assert mux_jpeg_frames(mixed, FPS, W, H).refused.startswith("frame 3: chroma sampling")
    assert mux_jpeg_frames([*frames[:1], frames[1][:300]], FPS, W, H).refused.startswith("frame 1: ")
    assert mux_jpeg_frames([], FPS, W, H).refused == "no frames"


# ---------------------------------------------------------------- the stored track


@pytest.fixture(scope="module")
def track():
    frames = [jpeg(textured(i)) for i in range(30)]
    muxed = mux_jpeg_frames(frames, FPS, W, H)
    assert muxed.refused == "" and muxed.count == 30
    probe = probe_video("track.mp4", lambda: io.BytesIO(muxed.data))
    return frames, muxed.data, VideoInput("track.mp4", lambda: io.BytesIO(muxed.data), probe)


def test_muxed_track_holds_the_source_bytes_one_keyframe_per_frame(track):
    frames, data, video = track
    assert (video.probe.codec, video.probe.num_frames, video.probe.fps) == ("mjpeg", 30, FPS)
    assert (video.probe.width, video.probe.height, video.probe.pix_fmt) == (W, H, "yuvj420p")
    with av.open(io.BytesIO(data)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert [bytes(p) for p in packets] == frames
    assert all(p.is_keyframe for p in packets)
    assert [video.probe.frame_pts(i) for i in range(30)] == [p.pts for p in packets]


@pytest.mark.parametrize("wanted", [[0], [29], [7, 8, 20], [13], list(range(30))])
def test_stored_frames_decode_to_the_source_decode_at_exact_indices(track, wanted):
    frames, _, video = track
    got = list(PyAVDecoder(threads=1).frames(video, wanted))
    assert [i for i, _ in got] == wanted
    for index, image in got:
        assert np.array_equal(image, source_decode(frames[index])), index


def test_ffmpeg_alone_would_not_decode_to_the_source_pixels(track):
    """Why the decoder uses libjpeg for mjpeg: FFmpeg's chroma upsampling differs from the connectors'."""
    frames, data, _ = track
    with av.open(io.BytesIO(data)) as container:
        ffmpeg = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert not np.array_equal(ffmpeg, source_decode(frames[0]))


def test_router_keeps_mjpeg_on_the_cpu_even_with_a_gpu():
    gpu = Devices(1, (9, 0), ("nvcodec", "torchcodec-cuda"))
    chosen = route_stream("mjpeg", "yuvj420p", 8, 1920, 1080, gpu)
    assert chosen.backend == "pyav" and "mjpeg" in chosen.reason
    assert not may_use_gpu("mjpeg", "yuvj420p", 1920, 1080)
    for config in (RouterConfig(override="torchcodec-cuda"), RouterConfig(cpu_backend="torchcodec-cpu")):
        assert route_stream("mjpeg", "yuvj420p", 8, 1920, 1080, gpu, config).backend == "pyav", config
        assert not may_use_gpu("mjpeg", "yuvj420p", 1920, 1080, config)
    assert route_stream("h264", "yuv420p", 8, 1920, 1080, Devices(1, (9, 0), ("nvcodec",))).backend == "nvcodec"


# ---------------------------------------------------------------- the store


def episode_with(source: FrameSequence, n: int) -> Episode:
    meta = EpisodeMeta(
        episode_id=make_episode_id("jpegs", "0"), dataset="jpegs", source_format="test", source_uri="mem://jpegs",
        source_key="0", source_checksum="x", kind="teleop", embodiment="arm", control_fps=FPS, num_steps=n,
        state_names=["a"], action_names=["b"], cameras=[CameraInfo("front", W, H, FPS, "", n, source_key="img")])
    steps = StepArrays(timestamp_ns=index_to_ns(np.arange(n), FPS), state=np.zeros((n, 1), np.float32),
                       action=np.zeros((n, 1), np.float32), frame_index={"front": np.arange(n, dtype=np.int32)})
    return Episode(meta, steps, {"front": source})


def sequence(jpegs: list[bytes], decoded: list[np.ndarray] | None = None) -> tuple[FrameSequence, list[int]]:
    """A camera offering ``jpegs``; the list counts calls of ``frames`` (the decode path)."""
    calls: list[int] = []

    def frames():
        calls.append(1)
        return iter(decoded if decoded is not None else [source_decode(d) for d in jpegs])

    return FrameSequence(frames, len(jpegs), FPS, W, H, encoded=lambda: iter(jpegs), encoded_codec="jpeg"), calls


def stored_frames(store: EpisodeStore, cam: CameraInfo) -> list[np.ndarray]:
    return [f for _, f in PyAVDecoder(threads=1).frames(store.video_input(cam), list(range(cam.num_frames)))]


def test_store_keeps_the_jpeg_bytes_and_never_decodes_them(tmp_path):
    jpegs = [jpeg(textured(i)) for i in range(12)]
    source, calls = sequence(jpegs)
    store = EpisodeStore(str(tmp_path / "store"))
    cam = store.write_episode(episode_with(source, 12)).camera("front")
    assert not calls
    assert (cam.encoding, cam.encode_params, cam.codec, cam.pix_fmt) == ("source", PASSTHROUGH_PARAMS, "mjpeg",
                                                                          "yuvj420p")
    assert (cam.width, cam.height, cam.num_frames, cam.fps) == (W, H, 12, FPS)
    with av.open(store.objects.abspath(cam.video_path)) as container:
        assert [bytes(p) for p in container.demux(video=0) if p.size] == jpegs
    assert all(np.array_equal(a, source_decode(b)) for a, b in zip(stored_frames(store, cam), jpegs, strict=True))


def test_store_falls_back_to_encoding_with_the_reason(tmp_path):
    jpegs = [jpeg(textured(i)) for i in range(6)]
    jpegs[4] = jpeg(textured(4, H // 2, W // 2))
    decoded = [textured(i) for i in range(6)]  # what a connector's decode path hands over (here: any valid frames)
    source, calls = sequence(jpegs, decoded)
    store = EpisodeStore(str(tmp_path / "store"))
    lossless = EncodeConfig(codec="libx264rgb", crf=0, pix_fmt="rgb24")
    cam = store.write_episode(episode_with(source, 6), lossless).camera("front")
    assert calls == [1] and cam.encoding == "encoded" and cam.codec == "h264"
    assert cam.encode_params.endswith(f"; jpeg passthrough refused: frame 4: {W // 2}x{H // 2}, the camera is {W}x{H}")
    assert all(np.array_equal(a, b) for a, b in zip(stored_frames(store, cam), decoded, strict=True))


def test_passthrough_can_be_switched_off(tmp_path):
    source, calls = sequence([jpeg(textured(i)) for i in range(5)])
    cam = EpisodeStore(str(tmp_path / "store")).write_episode(
        episode_with(source, 5), EncodeConfig(jpeg_passthrough=False)).camera("front")
    assert calls == [1] and cam.encoding == "encoded" and cam.codec == "h264" and "refused" not in cam.encode_params


def test_a_short_jpeg_stream_goes_to_the_decode_path_whose_count_check_decides(tmp_path):
    jpegs = [jpeg(textured(i)) for i in range(5)]
    source = FrameSequence(lambda: iter([source_decode(d) for d in jpegs]), 6, FPS, W, H,
                           encoded=lambda: iter(jpegs), encoded_codec="jpeg")
    with pytest.raises(Exception, match="5 frames read, 6 expected"):
        EpisodeStore(str(tmp_path / "store")).write_episode(episode_with(source, 6))


# ---------------------------------------------------------------- through the jobs


def write_rlds(root, episodes: dict[int, list[bytes]]):
    """A minimal RLDS dataset (TFRecord framing + tf.train.Example) with one JPEG camera."""
    from connectors.rlds.example_pb import Example
    from connectors.rlds.tfrecord import frame_record

    folder = root / "jpeg_rlds" / "1.0.0"
    folder.mkdir(parents=True)
    records = []
    for seed, jpegs in episodes.items():
        n = len(jpegs)
        example = Example()
        feature = example.features.feature
        feature["steps/observation/state"].float_list.value.extend([float(seed + t) for t in range(n)])
        feature["steps/action"].float_list.value.extend([float(-t) for t in range(n)])
        feature["steps/is_first"].int64_list.value.extend([1] + [0] * (n - 1))
        feature["steps/is_last"].int64_list.value.extend([0] * (n - 1) + [1])
        feature["steps/observation/image"].bytes_list.value.extend(jpegs)
        records.append(frame_record(example.SerializeToString()))
    (folder / "jpeg_rlds-train.tfrecord-00000-of-00001").write_bytes(b"".join(records))
    (folder / "dataset_info.json").write_text('{"name": "jpeg_rlds", "splits": [{"name": "train", '
                                              f'"shardLengths": ["{len(episodes)}"]}}]}}')
    return folder.parent


def test_shard_job_cuts_passthrough_videos_at_exact_frames(ray_session, tmp_path):
    import json
    import tarfile

    from jobs.ingest import run_ingest
    from jobs.shard import run_shard
    from pipeline.shards import ViewConfig

    episodes = {seed: [jpeg(textured(seed * 50 + t)) for t in range(n)] for seed, n in ((0, 11), (1, 7))}
    report = run_ingest(str(write_rlds(tmp_path, episodes)), str(tmp_path / "store"), options={"fps": 10})
    assert report.stored == 2 and not report.quarantined
    view = ViewConfig(height=H, width=W, frame_codec="npy", segment_steps=4, max_action_horizon=2)
    shard_report, view_id = run_shard(str(tmp_path / "store"), view)
    assert {d["backend"] for d in shard_report.decode} == {"pyav"}
    assert all("mjpeg" in d["reason"] for d in shard_report.decode)
    manifest = json.loads((tmp_path / "store" / f"views/{view_id}/view.json").read_text())
    seeds = {make_episode_id("jpeg_rlds", f"jpeg_rlds-train.tfrecord-00000-of-00001:{s}"): s for s in episodes}
    seen = {s: [] for s in episodes}
    for shard in manifest["shards"]:
        with tarfile.open(tmp_path / "store" / shard["tar_path"]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if not name.endswith(".meta.json"):
                continue
            meta = json.loads(data)
            seed = seeds[meta["episode_id"]]
            for i in range(meta["num_steps"]):
                image = np.load(io.BytesIO(members[f"{meta['key']}.image.{i:04d}.npy"]), allow_pickle=False)
                step = meta["step_start"] + i
                assert np.array_equal(image, source_decode(episodes[seed][step])), (seed, step)
                seen[seed].append(step)
    assert {s: sorted(v) for s, v in seen.items()} == {s: list(range(len(j))) for s, j in episodes.items()}


def test_cli_switches_passthrough_off_and_picks_the_preset(ray_session, tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app
    from pipeline.store.versions import load_catalog, resolve
    from schemas import table_to_metas

    source = write_rlds(tmp_path, {0: [jpeg(textured(t)) for t in range(5)]})
    store_path = tmp_path / "store"
    result = CliRunner().invoke(app, ["ingest", str(source), "--store", str(store_path), "--no-jpeg-passthrough",
                                      "--encode-preset", "ultrafast", "--option", "fps=10"])
    assert result.exit_code == 0, result.output
    store = EpisodeStore(str(store_path))
    (meta,) = table_to_metas(load_catalog(store, resolve(store, "latest")[1]))
    cam = meta.camera("image")
    assert (cam.encoding, cam.codec) == ("encoded", "h264")
    assert "preset=ultrafast" in cam.encode_params and "threads=1" in cam.encode_params
