"""Raw-array ingest encode vs LeRobot's own encoding of the same arrays: frames/s, PSNR, bytes; and lossless.

    python -m bench.raw_encode [--episodes 4] [--frames 120] [--size 480x640]

Raw camera arrays (ALOHA raw HDF5, robomimic, zarr: uint8 HxWx3 per step) are what the store encodes
itself. Baseline, same arrays, same run: LeRobot 0.4.x ``encode_video_frames`` (PyAV, libsvtav1,
``g=2``, ``crf=30``, ``yuv420p``, the encoder's default threads), one episode after another as its
``save_episode`` does (its PNG write/read round trip is not counted, which favours it). Ours: the
store's ``EncodeConfig`` (libx264 crf 18 veryfast, GOP 1 s, RGB -> YUV by swscale), with one encoder
thread in this process, with the encoder's own thread count, and one episode per core in forked worker
processes with one encoder thread each (how ingest runs it: one Ray task per episode per CPU);
``--encode-preset ultrafast`` the same three ways; and the earlier OpenCV colour conversion, for the
PSNR it cost. Lossless: ``LOSSLESS`` (libx264rgb qp 0 on RGB, and FFV1), checked
pixel-exact. PSNR is every decoded frame against its source array.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import multiprocessing.pool
import os
import time
from fractions import Fraction

import av
import cv2
import numpy as np

from bench.common import write_result
from pipeline.video.encode import LOSSLESS, EncodeConfig, encode_frames

FPS = Fraction(30)
LEROBOT = {"codec": "libsvtav1", "options": {"g": "2", "crf": "30"}, "pix_fmt": "yuv420p"}
FFV1 = EncodeConfig(codec="ffv1", pix_fmt="bgr0", crf=0, preset="", threads=1)


def camera_frames(seed: int, count: int, height: int, width: int) -> np.ndarray:
    """A camera-like episode: textured background, moving objects, sensor noise (real bitrates)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([96 + 60 * np.sin(xx / 97 + seed), 110 + 50 * np.cos(yy / 83),
                     120 + 40 * np.sin((xx + yy) / 151)], -1)
    base = cv2.GaussianBlur(base + rng.normal(0, 20, base.shape).astype(np.float32), (0, 0), 3)
    out = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        image = base.copy()
        cv2.circle(image, (int(width * (0.2 + 0.6 * (i % 30) / 30)), height // 2), height // 8, (230, 60, 40), -1)
        top = height // 4 + i % 40
        cv2.rectangle(image, (width // 3, top), (width // 2, top + height // 4), (40, 200, 90), -1)
        out[i] = np.clip(image + rng.normal(0, 3, image.shape).astype(np.float32), 0, 255)
    return out


def lerobot_encode(frames: np.ndarray) -> bytes:
    """What lerobot 0.4.x encode_video_frames does with an episode's frames (PIL RGB -> VideoFrame)."""
    os.environ.setdefault("SVT_LOG", "1")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(LEROBOT["codec"], FPS, options=LEROBOT["options"])
        stream.pix_fmt, stream.width, stream.height = LEROBOT["pix_fmt"], frames.shape[2], frames.shape[1]
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def ours_encode(task: tuple[np.ndarray, EncodeConfig]) -> bytes:
    frames, config = task
    return encode_frames(iter(frames), FPS, frames.shape[2], frames.shape[1], config)[0]


_EPISODES: list[np.ndarray] = []  # set before the worker pool forks: workers read the arrays, no copy


def _encode_in_worker(task: tuple[int, EncodeConfig]) -> bytes:
    index, config = task
    return ours_encode((_EPISODES[index], config))


def per_core_encode(pool: multiprocessing.pool.Pool, count: int, config: EncodeConfig) -> list[bytes]:
    """Every episode encoded by a worker process, one per core, one encoder thread each (as ingest)."""
    return pool.map(_encode_in_worker, [(i, config) for i in range(count)], chunksize=1)


def decoded(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def quality(episodes: list[np.ndarray], outputs: list[bytes]) -> tuple[float, float, bool]:
    """(mean PSNR, min PSNR, every frame pixel-exact) of the outputs against the source arrays."""
    values, exact = [], True
    for frames, data in zip(episodes, outputs, strict=True):
        for a, b in zip(frames, decoded(data), strict=True):
            mse = np.mean((a.astype(np.float64) - b) ** 2)
            exact &= mse == 0
            values.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
    return float(np.mean(values)), float(np.min(values)), bool(exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="480x640")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best one counts")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    cores = os.cpu_count() or 1
    episodes = [camera_frames(i, args.frames, height, width) for i in range(args.episodes)]
    total = args.episodes * args.frames
    configs = {"ours (libx264 crf18 veryfast, 1 thread)": EncodeConfig(),
               "ours (libx264 crf18 veryfast, auto threads)": EncodeConfig(threads=0),
               "ours (libx264 crf18 ultrafast, 1 thread)": EncodeConfig(preset="ultrafast"),
               "ours (libx264 crf18 ultrafast, auto threads)": EncodeConfig(preset="ultrafast", threads=0),
               "before: OpenCV RGB->YUV (veryfast, 1 thread)": EncodeConfig(rgb_to_yuv="opencv"),
               "lossless libx264rgb crf0": LOSSLESS, "lossless ffv1": FFV1}
    per_core = {f"ours (libx264 crf18 veryfast, {cores} processes x 1 thread, as ingest)": EncodeConfig(),
                f"ours (libx264 crf18 superfast, {cores} processes x 1 thread, as ingest)":
                    EncodeConfig(preset="superfast"),
                f"ours (libx264 crf18 ultrafast, {cores} processes x 1 thread, as ingest)":
                    EncodeConfig(preset="ultrafast")}
    _EPISODES[:] = episodes
    pool = multiprocessing.get_context("fork").Pool(cores)
    best: dict[str, float] = {}
    outputs: dict[str, list[bytes]] = {}
    lerobot_encode(episodes[0][:4])  # warm-up: encoder libraries loaded
    for _ in range(args.rounds):  # interleaved rounds: a busy spell hits every encoder alike
        started = time.perf_counter()
        outputs["lerobot (svtav1 g2 crf30)"] = [lerobot_encode(e) for e in episodes]
        best["lerobot (svtav1 g2 crf30)"] = max(best.get("lerobot (svtav1 g2 crf30)", 0),
                                                 total / (time.perf_counter() - started))
        for name, config in configs.items():
            started = time.perf_counter()
            outputs[name] = [ours_encode((e, config)) for e in episodes]
            best[name] = max(best.get(name, 0), total / (time.perf_counter() - started))
        for name, config in per_core.items():
            started = time.perf_counter()
            outputs[name] = per_core_encode(pool, len(episodes), config)
            best[name] = max(best.get(name, 0), total / (time.perf_counter() - started))
    pool.close()
    base = best["lerobot (svtav1 g2 crf30)"]
    rows = []
    raw_bytes = total * height * width * 3
    for name, fps in best.items():
        mean, worst, exact = quality(episodes, outputs[name])
        size = sum(len(d) for d in outputs[name])
        rows.append({"encoder": name, "frames_per_s": round(fps, 1), "x_lerobot": round(fps / base, 2),
                     "psnr_mean": round(mean, 2), "psnr_min": round(worst, 2), "pixel_exact": exact,
                     "bytes_per_frame": size // total, "x_raw_bytes": round(size / raw_bytes, 4)})
    print(f"{args.episodes} episodes x {args.frames} frames of {width}x{height}, {cores} cores, load {os.getloadavg()}")
    print("| encoder | frames/s | x LeRobot | PSNR mean | PSNR min | pixel-exact | bytes/frame | x raw |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['encoder']} | {r['frames_per_s']} | {r['x_lerobot']} | {r['psnr_mean']} | {r['psnr_min']} | "
              f"{r['pixel_exact']} | {r['bytes_per_frame']} | {r['x_raw_bytes']} |")
    print(f"written {write_result('raw_encode', {'size': args.size, 'frames': total, 'cores': cores, 'rows': rows})}")


if __name__ == "__main__":
    main()
