"""GPU vs all CPU cores: frames/s for decode alone and for the shard path (decode -> 224x224 resize ->
JPEG q95 4:4:4; the default swscale pass to JPEG's YCbCr planes, the swscale pass to BGR before it, and
the first RGB + OpenCV one), for H.264, HEVC and
AV1 at 480p, 720p and 1080p, same machine, same run.

    python -m bench.gpu_decode [--frames 150] [--repeat 2] [--backends pyav,torchcodec-cpu,nvcodec,...]

CPU rows run one process per core, each decoding whole files with one thread: how the shard job's
CPU actors use a machine. GPU rows run ACTORS_PER_GPU processes per GPU (how its GPU actors share a
card), each holding its own decoder, with frames kept on the GPU through resize and JPEG. Ratios are
against the PyAV all-core row of the same video. Backends are measured in interleaved rounds and the
best round counts, so other load on the machine does not favour one of them. Without a CUDA device
the GPU rows are skipped and the run says so. Test videos are generated here with PyAV (libx264,
libx265, libsvtav1; GOP 1 s, no B-frames, like the store's re-encoded cameras) and cached under
.bench/gpu_decode/.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import av
import cv2
import numpy as np

from bench.common import BENCH_DIR, write_result
from pipeline.shards import ViewConfig
from pipeline.video.backends import CUDA, backend_spec, cuda_device_count, unavailable_reason
from pipeline.video.pool import ACTORS_PER_GPU

CODECS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
SIZES = {"480p": (480, 854), "720p": (720, 1280), "1080p": (1080, 1920)}
VIEW = ViewConfig(height=224, width=224, jpeg_quality=95, jpeg_subsampling="444")
VIEWS = {"shard": VIEW, "shard_rgb": ViewConfig(height=224, width=224, scaler="swscale"),
         "shard_opencv": ViewConfig(height=224, width=224, scaler="opencv")}
# shard: the default (swscale to JPEG's YCbCr planes); shard_rgb: swscale to BGR, then OpenCV's JPEG
# (the default before it); shard_opencv: decode -> full-size RGB -> OpenCV resize (the first path)
MODES = ("decode", "shard", "shard_rgb", "shard_opencv")
FPS = 30


def make_video(path: Path, codec: str, height: int, width: int, frames: int) -> Path:
    """A camera-like clip: textured background, moving objects, sensor noise (so bitrates are real)."""
    if path.exists():
        return path
    os.environ.setdefault("SVT_LOG", "1")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([96 + 60 * np.sin(xx / 97), 110 + 50 * np.cos(yy / 83), 120 + 40 * np.sin((xx + yy) / 151)], -1)
    base = cv2.GaussianBlur(base + rng.normal(0, 20, base.shape).astype(np.float32), (0, 0), 3)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(CODECS[codec], rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = {"crf": "23", "g": str(FPS)}
        options |= {"preset": "10"} if codec == "av1" else {"preset": "veryfast", "bf": "0"}
        options |= {"x265-params": "log-level=none"} if codec == "hevc" else {}
        stream.options = options
        for i in range(frames):
            image = base.copy()
            cx, cy = int(width * (0.2 + 0.6 * (i % FPS) / FPS)), int(height * 0.5)
            cv2.circle(image, (cx, cy), height // 8, (230, 60, 40), -1)
            top = height // 4 + i % 40
            cv2.rectangle(image, (width // 3, top), (width // 2, top + height // 4), (40, 200, 90), -1)
            image += rng.normal(0, 3, image.shape).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def _run(task: tuple[str, str, str, int]) -> int:
    """In a worker: decode (or run the shard path on) every frame of ``path`` ``repeat`` times."""
    backend, path, mode, repeat = task
    import torch

    cv2.setNumThreads(1)  # one process per core: no library may fan out threads behind the count
    torch.set_num_threads(1)

    from pipeline.shards.frames import pipeline_for
    from pipeline.video import VideoInput, probe_video
    from pipeline.video.backends import build_backend

    decoder = build_backend(backend, threads=1)
    video = VideoInput(path, lambda: path, probe_video(path, lambda: path))
    indices = list(range(video.probe.num_frames))
    done = 0
    for _ in range(repeat):
        if mode in VIEWS:
            done += len(pipeline_for(decoder).encode_video(video, indices, VIEWS[mode]))
        elif hasattr(decoder, "batches") and str(getattr(decoder, "device", "cpu")).startswith("cuda"):
            for chunk, _batch in decoder.batches(video, indices, 16):
                done += len(chunk)
            torch.cuda.synchronize()
        else:
            done += sum(1 for _ in decoder.frames(video, indices))
    return done


def measure(pool, backend: str, path: Path, mode: str, workers: int, repeat: int) -> float:
    """Aggregate frames/s of ``workers`` processes each decoding the whole file ``repeat`` times."""
    started = time.perf_counter()
    frames = sum(pool.map(_run, [(backend, str(path), mode, repeat)] * workers))
    return frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best one counts "
                                                              "(other work on the machine only slows runs down)")
    parser.add_argument("--backends", default="pyav,torchcodec-cpu,nvcodec,torchcodec-cuda")
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--sizes", default=",".join(SIZES))
    args = parser.parse_args()

    cores, gpus = os.cpu_count() or 1, cuda_device_count()
    root = BENCH_DIR / "gpu_decode"
    root.mkdir(parents=True, exist_ok=True)
    runnable, skipped = [], {}
    for name in args.backends.split(","):
        reason = unavailable_reason(name)
        (skipped.__setitem__(name, reason) if reason else runnable.append(name))
    print(f"machine: {platform.processor() or platform.machine()}, {cores} CPU cores, {gpus} CUDA device(s)")
    if gpus == 0:
        print("no CUDA device present: GPU rows skipped (run this on a machine with an NVIDIA GPU for them)")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")

    rows = []
    ctx = mp.get_context("spawn")  # CUDA cannot be forked into workers
    pools = {}
    try:
        for codec in args.codecs.split(","):
            for size in args.sizes.split(","):
                height, width = SIZES[size]
                path = make_video(root / f"{codec}-{size}-{args.frames}.mp4", codec, height, width, args.frames)
                workers = {b: gpus * ACTORS_PER_GPU if backend_spec(b).device == CUDA else cores for b in runnable}
                for backend in runnable:  # warm-up: imports, CUDA contexts, file cache
                    pool = pools.get(workers[backend]) or pools.setdefault(workers[backend], ctx.Pool(workers[backend]))
                    pool.map(_run, [(backend, str(path), "shard", 1)] * workers[backend])
                best: dict[tuple[str, str], float] = {}
                for _ in range(args.rounds):  # interleaved, so a busy spell hits every backend alike
                    for backend in runnable:
                        for mode in MODES:
                            fps = measure(pools[workers[backend]], backend, path, mode, workers[backend], args.repeat)
                            best[backend, mode] = max(best.get((backend, mode), 0.0), fps)
                for backend in runnable:
                    row = {"codec": codec, "size": size, "backend": backend, "workers": workers[backend]}
                    row["shard_x_decode"] = round(best[backend, "shard"] / best[backend, "decode"], 2)
                    row["rgb_x_decode"] = round(best[backend, "shard_rgb"] / best[backend, "decode"], 2)
                    row["opencv_x_decode"] = round(best[backend, "shard_opencv"] / best[backend, "decode"], 2)
                    for mode in MODES:
                        row[f"{mode}_fps"] = round(best[backend, mode], 1)
                        base = best.get(("pyav", mode))
                        row[f"{mode}_x_pyav"] = round(best[backend, mode] / base, 2) if base else None
                    rows.append(row)
                    print(_line(row), flush=True)
    finally:
        for pool in pools.values():
            pool.terminate()
    _table(rows)
    path = write_result("gpu_decode", {"cores": cores, "cuda_devices": gpus, "frames": args.frames,
                                       "repeat": args.repeat, "rounds": args.rounds, "skipped": skipped,
                                       "load_average": os.getloadavg(), "rows": rows})
    print(f"written {path}")


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def _line(row: dict) -> str:
    ratio = _ratio
    return (f"{row['codec']:5} {row['size']:6} {row['backend']:16} x{row['workers']:<3} "
            f"decode {row['decode_fps']:8.1f} f/s ({ratio(row['decode_x_pyav'])})   "
            f"shard path {row['shard_fps']:8.1f} f/s ({ratio(row['shard_x_pyav'])}, "
            f"{row['shard_x_decode']:.2f}x own decode; "
            f"RGB path {row['rgb_x_decode']:.2f}x; OpenCV-resize path {row['opencv_x_decode']:.2f}x)")


def _table(rows: list[dict]) -> None:
    print("\n| codec | size | backend | processes | decode f/s | vs PyAV | shard path f/s | vs PyAV | "
          "shard / decode | RGB path (swscale to BGR + OpenCV JPEG) / decode | first path (RGB + OpenCV) / decode |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['codec']} | {r['size']} | {r['backend']} | {r['workers']} | {r['decode_fps']} | "
              f"{r['decode_x_pyav'] or '-'} | {r['shard_fps']} | {r['shard_x_pyav'] or '-'} | "
              f"{r['shard_x_decode']} | {r['rgb_x_decode']} | {r['opencv_x_decode']} |")


if __name__ == "__main__":
    main()
