"""The shard job as a whole against bare decode of the same videos on the same cores.

    python -m bench.shard_job [--codec libx264|libx265|libsvtav1] [--episodes 12] [--rounds 2]

A generated LeRobot v3.0 dataset (480x640, 2 cameras, 30 fps) is ingested once (its videos are
copied into the store). Then, per round and back to back: the baseline decodes every frame the
version's episodes use to full-size RGB with PyAV, one process per core (each process a share of
the (episode, camera) videos); the shard job (`jobs.shard.run_shard`, a new view each round) runs
on a local Ray of as many CPUs: planning, decode -> 224x224 -> JPEG, tar, index, sample table and
commit all counted, Ray's own start excluded (it is started once before the rounds); then the same job
with the previous default frame path (``scaler="swscale"``: swscale to BGR, OpenCV's JPEG) as a second
baseline. Frames/s is the
number of frames the view holds (each camera frame once) over wall time; the ratio is the job's.

Shards are the job's unit of parallelism (one writer per shard) and a view of a small dataset is one
1 GB shard, written by one core: the view is planned with ``--min-shards`` (default: 2 per core), as
any dataset of more than a few GB of frames is, so the figure is the job's steady state. With
``--min-shards 1`` it shows the single-shard case.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor

from bench.common import BENCH_DIR, write_result
from pipeline.samples import SampleSpec, write_sample_dataset


def _decode_share(task: tuple[str, list[tuple[str, int, int]]]) -> int:
    """In a worker: decode each (video path, first frame, frame count) to RGB; returns frames decoded."""
    import cv2

    from pipeline.video import VideoInput, probe_video
    from pipeline.video.decode import PyAVDecoder

    cv2.setNumThreads(1)
    _, items = task
    decoder, done = PyAVDecoder(threads=1), 0
    for path, first, count in items:
        video = VideoInput(path, lambda p=path: p, probe_video(path, lambda p=path: p))
        done += sum(1 for _ in decoder.frames(video, range(first, first + count)))
    return done


def camera_videos(store_path: str) -> list[tuple[str, int, int]]:
    """(local video path, first frame, frames) of every camera of every episode of ``latest``."""
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.versions import load_catalog, resolve
    from schemas import table_to_metas

    store = EpisodeStore(store_path)
    _, manifest = resolve(store, "latest")
    return [(store.objects.abspath(c.video_path), c.frame_start, c.num_frames)
            for m in table_to_metas(load_catalog(store, manifest)) for c in m.cameras]


def bare_decode(pool: ProcessPoolExecutor, videos: list[tuple[str, int, int]], workers: int) -> tuple[int, float]:
    shares = [("", videos[i::workers]) for i in range(workers)]
    started = time.perf_counter()
    frames = sum(pool.map(_decode_share, shares))
    return frames, time.perf_counter() - started


def shard_job(store_path: str, round_: int, min_shards: int, scaler: str = "swscale-ycbcr") -> tuple[int, int, float]:
    """(frames decoded, shards, seconds) of one shard job writing a new view."""
    from jobs.shard import run_shard
    from pipeline.shards import ViewConfig

    view = ViewConfig(height=224, width=224, segment_steps=64 + round_, min_shards=min_shards,
                      scaler=scaler)  # a new view each round
    started = time.perf_counter()
    report, _ = run_shard(store_path, view)
    return int(report.decoded or 0), int(report.extra["shards"]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--min-shards", type=int, default=0, help="0: two per core")
    parser.add_argument("--size", default="480x640", help="camera HEIGHTxWIDTH of the generated dataset")
    args = parser.parse_args()
    from jobs.ingest import run_ingest
    from jobs.raycluster import init_ray

    workers = os.cpu_count() or 1
    min_shards = args.min_shards or 2 * workers
    root = BENCH_DIR / f"shard-job-{args.codec}"
    shutil.rmtree(root, ignore_errors=True)
    height, width = map(int, args.size.split("x"))
    source = write_sample_dataset(root / "source", SampleSpec(num_episodes=args.episodes, codec=args.codec,
                                                              min_steps=150, max_steps=250, height=height,
                                                              width=width))
    init_ray(num_cpus=workers)
    store = str(root / "store")
    run_ingest(str(source), store)
    videos = camera_videos(store)
    rows = []
    # spawned, not forked: a fork of a process running Ray's threads can hang in the child
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        bare_decode(pool, videos[:1], 1)  # start the pool's processes before timing
        for r in range(args.rounds):
            frames, seconds = bare_decode(pool, videos, workers)
            job_frames, shards, job_seconds = shard_job(store, r, min_shards)
            _, _, rgb_seconds = shard_job(store, r, min_shards, scaler="swscale")
            row = {"round": r, "frames": frames, "decode_fps": round(frames / seconds, 1), "shards": shards,
                   "job_frames": job_frames, "job_fps": round(frames / job_seconds, 1),
                   "job_s": round(job_seconds, 2), "ratio": round(seconds / job_seconds, 3),
                   "rgb_path_fps": round(frames / rgb_seconds, 1), "rgb_path_ratio": round(seconds / rgb_seconds, 3)}
            rows.append(row)
            print(row, flush=True)
    print(f"written {write_result(f'shard_job_{args.codec}', {'cores': workers, 'codec': args.codec, 'rows': rows})}")


if __name__ == "__main__":
    main()
