"""Ingest throughput per source format, next to the format's own reader merely reading the same data.

    python -m bench.ingest_formats [--out .bench/ingest_formats.json] [--only rlds,ros] [--scale 4]

For each family a dataset is written with the format's own library (``bench.format_samples``),
then three things are timed on the same data, in the same run:

- ``native``: the format's own reader yields every array and decoded image (TFRecord framing +
  protobuf + JPEG decode; h5py; mcap + mcap-ros2-support + JPEG decode; zarr; PyAV decode);
- ``connector``: ActionReel's connector discovers and reads every episode and produces every
  frame (one process, like the native reader);
- ``ingest``: the full ingest job on a local Ray already started and warmed up (read, validate,
  keep source JPEG frames as they are, encode raw frames to H.264 or copy video, write the store,
  commit a version).

Reported: frames/s of each, the ratios connector/native and ingest/native (target >= 0.7), and the
bytes stored per frame (JPEG passthrough and encoder presets trade speed against storage).
``--scale`` multiplies the episodes per format (default 4: 2,400-2,900 frames each), so that the job's
fixed cost (planning the Ray Data pipeline, committing the version: ~0.1-0.2 s) does not stand in
for per-frame throughput, as it would on a run of a fraction of a second.
"""

from __future__ import annotations

import json
import struct
import tempfile
import time
from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import typer
import zarr

from bench import format_samples as samples


def _native_rlds(path: Path) -> int:
    from connectors.rlds.example_pb import Example

    frames = 0
    for file in sorted(path.rglob("*.tfrecord-*")):
        data = file.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            feature = Example.FromString(data[offset + 12:offset + 12 + length]).features.feature
            np.asarray(feature["steps/observation/state"].float_list.value, np.float32)
            np.asarray(feature["steps/action"].float_list.value, np.float32)
            for blob in feature["steps/observation/image"].bytes_list.value:
                cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
                frames += 1
            offset += 16 + length
    return frames


def _native_hdf5(path: Path) -> int:
    frames = 0

    def visit(_name, item) -> None:
        nonlocal frames
        if isinstance(item, h5py.Dataset):
            values = item[()]
            if values.ndim == 4:
                frames += values.shape[0]

    for file in sorted(path.glob("*.hdf5")):
        with h5py.File(file, "r") as h5:
            h5.visititems(visit)
    return frames


def _native_aloha_jpeg(path: Path) -> int:
    """h5py reads the padded rows; each row is cut to its compress_len and decoded, as ALOHA's loaders do."""
    frames = 0
    for file in sorted(path.glob("*.hdf5")):
        with h5py.File(file, "r") as h5:
            lengths = h5["compress_len"][()].astype(np.int64)
            for c, cam in enumerate(sorted(h5["observations/images"])):
                for t, row in enumerate(h5[f"observations/images/{cam}"][()]):
                    cv2.imdecode(row[:lengths[c, t]], cv2.IMREAD_COLOR)
                    frames += 1
    return frames


def _native_ros(path: Path) -> int:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    frames = 0
    for file in sorted(path.glob("*.mcap")):
        with open(file, "rb") as handle:
            for item in make_reader(handle, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
                if item.channel.topic == "/camera/compressed":
                    cv2.imdecode(np.frombuffer(item.decoded_message.data, np.uint8), cv2.IMREAD_COLOR)
                    frames += 1
    return frames


def _native_zarr(path: Path) -> int:
    group = zarr.open_group(str(path), mode="r")
    ends = group["meta/episode_ends"][:]
    start = 0
    for end in ends:
        for key in ("state", "action", "img"):
            group[f"data/{key}"][start:end]
        start = int(end)
    return int(ends[-1])


def _native_video(path: Path) -> int:
    frames = 0
    for sidecar in sorted(path.glob("*.json")):
        json.loads(sidecar.read_text())
        with av.open(str(sidecar.with_suffix(".mp4"))) as container:
            for frame in container.decode(video=0):
                frame.to_ndarray(format="rgb24")
                frames += 1
    return frames


# bench row -> (connector format, writer of `scale` x its base number of episodes, the format's own reader,
# connector options)
FAMILIES = {
    "rlds": ("rlds", lambda root, scale: samples.write_rlds(root, episodes=12 * scale), _native_rlds, {}),
    "aloha_hdf5": ("aloha_hdf5", lambda root, scale: samples.write_aloha(root, episodes=4 * scale), _native_hdf5, {}),
    "aloha_hdf5_jpeg": ("aloha_hdf5", lambda root, scale: samples.write_aloha(root, episodes=4 * scale,
                                                                              compress=True), _native_aloha_jpeg, {}),
    "robomimic_hdf5": ("robomimic_hdf5", lambda root, scale: samples.write_robomimic(root, demos=10 * scale),
                       _native_hdf5, {}),
    "ros": ("ros", lambda root, scale: samples.write_ros(root, bags=3 * scale), _native_ros,
            {"mapping": samples.ROS_MAPPING}),
    "zarr_replay": ("zarr_replay", lambda root, scale: samples.write_zarr(root, episodes=6 * scale), _native_zarr, {}),
    "video_folder": ("video_folder", lambda root, scale: samples.write_video_folder(root, episodes=8 * scale),
                     _native_video, {}),
}


def _connector_read(name: str, path: Path, options: dict) -> int:
    from connectors import get_connector

    connector = get_connector(name)
    frames = 0
    for ref in connector.discover(str(path), options).refs:
        episode = connector.read(ref)
        for source in episode.videos.values():
            if hasattr(source, "frames"):
                frames += sum(1 for _ in source.frames())
            else:  # an existing video file is copied, not decoded: count what it holds
                frames += source.num_frames
    return frames


def _timed(fn, *args) -> tuple[int, float]:
    started = time.perf_counter()
    frames = fn(*args)
    return frames, time.perf_counter() - started


def run(only: list[str] | None = None, scale: int = 4) -> list[dict]:
    from jobs.ingest import run_ingest
    from jobs.raycluster import init_ray

    init_ray()
    rows = []
    with tempfile.TemporaryDirectory(prefix="actionreel-bench-") as tmp:
        # Warm-up: Ray's worker processes import the project once; that is not per-format cost.
        warm = Path(tmp) / "warm-up"
        warm.mkdir()
        run_ingest(str(samples.write_zarr(warm, episodes=4, steps=5)), str(warm / "store"))
        for name, (format_name, write, native, options) in FAMILIES.items():
            if only and name not in only:
                continue
            path = write(Path(tmp), scale)
            native_frames, native_s = _timed(native, path)
            connector_frames, connector_s = _timed(_connector_read, format_name, path, options)
            started = time.perf_counter()
            report = run_ingest(str(path), str(Path(tmp) / f"store-{name}"), format=format_name, options=options)
            ingest_s = time.perf_counter() - started
            assert native_frames == connector_frames == report.frames, (name, native_frames, connector_frames,
                                                                        report.frames)
            rows.append({"format": name, "episodes": report.stored, "frames": report.frames,
                         "stored_kib_per_frame": report.bytes / 1024 / max(report.frames, 1),
                         "native_fps": native_frames / native_s, "connector_fps": connector_frames / connector_s,
                         "ingest_fps": report.frames / ingest_s,
                         "connector_ratio": native_s / connector_s, "ingest_ratio": native_s / ingest_s})
    return rows


def encode_ceiling(frames: int = 300) -> tuple[float, float]:
    """Frames/s of the store's default H.264 encode alone and of JPEG passthrough alone (header checks +
    mux), one process: the bounds on ingesting raw and JPEG image sequences."""
    from fractions import Fraction

    from pipeline.video import EncodeConfig, encode_frames
    from pipeline.video.mjpeg import mux_jpeg_frames

    pictures = [samples.picture(i) for i in range(frames)]
    started = time.perf_counter()
    encode_frames(iter(pictures), Fraction(30), samples.W, samples.H, EncodeConfig())
    encode_fps = frames / (time.perf_counter() - started)
    jpegs = [samples.jpeg(p) for p in pictures]
    started = time.perf_counter()
    assert mux_jpeg_frames(jpegs, Fraction(30), samples.W, samples.H).count == frames
    return encode_fps, frames / (time.perf_counter() - started)


def main(out: str = typer.Option(".bench/ingest_formats.json", "--out"),
         only: str = typer.Option("", "--only", help="Comma-separated formats (default: all)"),
         scale: int = typer.Option(4, "--scale", min=1, help="Episodes per format, as a multiple of the base")) -> None:
    rows = run([s for s in only.split(",") if s] or None, scale)
    header = f"{'format':<16} {'episodes':>8} {'frames':>7} {'native f/s':>11} {'connector f/s':>14} " \
             f"{'ingest f/s':>11} {'conn/native':>12} {'ingest/native':>14} {'KiB/frame':>10}"
    print(header)
    for r in rows:
        print(f"{r['format']:<16} {r['episodes']:>8} {r['frames']:>7} {r['native_fps']:>11.0f} "
              f"{r['connector_fps']:>14.0f} {r['ingest_fps']:>11.0f} {r['connector_ratio']:>12.2f} "
              f"{r['ingest_ratio']:>14.2f} {r['stored_kib_per_frame']:>10.1f}")
    encode_fps, passthrough_fps = encode_ceiling()
    print(f"H.264 encode alone ({samples.W}x{samples.H}, default EncodeConfig, one process): {encode_fps:.0f} "
          f"frames/s; JPEG passthrough alone: {passthrough_fps:.0f} frames/s")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"rows": rows, "encode_fps": encode_fps, "passthrough_fps": passthrough_fps},
                                    indent=2))


if __name__ == "__main__":
    typer.run(main)
