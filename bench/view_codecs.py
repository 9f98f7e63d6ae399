"""View frame codecs side by side: bytes per frame and frames decoded per second for jpg, npy and mp4.

    python -m bench.view_codecs [--episodes 4] [--codec libsvtav1] [--sizes native,224]

One generated dataset (480x640 by default, AV1 as LeRobot stores it) is stored in this process and
its shards are written for each view with the CPU frame path (``write_shard``; no cluster needed).
Bytes per frame count the frame members only (``.jpg``/``.npy`` per step, ``.mp4`` per sample and
camera) over the frames they hold, as a ratio to the source video's own bytes per frame (the
baseline, same dataset). Decode rate: every frame member of the view decoded the way the loader
does (simplejpeg into a buffer, ``.npy`` read, a segment decoded whole by PyAV), frames per second
in this process, as a ratio to the JPEG view of the same size, same run.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tarfile
import time

import numpy as np
import simplejpeg

from bench.common import BENCH_DIR, write_result
from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.shards import ViewConfig, plan_shards, write_shard
from pipeline.shards.plan import with_keys
from pipeline.shards.writer import episode_fingerprint, view_cameras
from pipeline.store.episodes import EpisodeStore
from pipeline.video import PyAVDecoder
from pipeline.video.segments import decode_segment

CODECS = ("jpg", "npy", "mp4")


def stored(spec: SampleSpec, root) -> tuple[EpisodeStore, dict]:
    from connectors import get_connector

    shutil.rmtree(root, ignore_errors=True)
    source = write_sample_dataset(root / "source", spec)
    connector = get_connector("lerobot")
    store = EpisodeStore(str(root / "store"))
    metas = [store.write_episode(connector.read(ref)) for ref in connector.discover(str(source)).refs]
    return store, {m.episode_id: m for m in metas}


def source_bytes_per_frame(metas: dict) -> float:
    files = {c.video_sha256: c.video_bytes for m in metas.values() for c in m.cameras}
    return sum(files.values()) / sum(c.num_frames for m in metas.values() for c in m.cameras)


def shards_of(store: EpisodeStore, metas: dict, view: ViewConfig) -> list[str]:
    plans = plan_shards([(m.episode_id, m.num_steps, len(view_cameras(m, view))) for m in metas.values()], view)
    plans = with_keys(plans, view, {e: episode_fingerprint(m, view) for e, m in metas.items()})
    return [store.objects.abspath(write_shard(store, view, plan, metas, PyAVDecoder(threads=1))[0].tar_path)
            for plan in plans]


def measure(paths: list[str], codec: str, height: int, width: int) -> tuple[int, int, float]:
    """(frame member bytes, frames, frames decoded per second)."""
    total = frames = 0
    decode_s = 0.0
    out = np.empty((height, width, 3), np.uint8)
    for path in paths:
        with tarfile.open(path) as tar:
            infos = {}
            for member in tar.getmembers():
                data = tar.extractfile(member).read()
                key, suffix = member.name.split(".", 1)
                if suffix == "meta.json":
                    infos[key] = json.loads(data)
                    continue
                started = time.perf_counter()
                if suffix.endswith(".mp4"):
                    listed = infos[key]["segment_frames"][suffix[:-4]]
                    decode_segment(data, len(listed), member.name)
                    frames += len(listed)
                elif suffix.count(".") == 2 and suffix.endswith(".jpg"):  # <camera>.<i>.jpg
                    simplejpeg.decode_jpeg(data, "rgb", buffer=out)
                    frames += 1
                elif suffix.count(".") == 2 and suffix.endswith(".npy"):
                    np.load(io.BytesIO(data), allow_pickle=False)
                    frames += 1
                else:
                    continue
                decode_s += time.perf_counter() - started
                total += len(data)
    return total, frames, frames / decode_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--codec", default="libsvtav1")
    parser.add_argument("--sizes", default="native,224")
    args = parser.parse_args()
    spec = SampleSpec(num_episodes=args.episodes, codec=args.codec, min_steps=120, max_steps=160)
    store, metas = stored(spec, BENCH_DIR / f"view_codecs-{args.codec}")
    source = source_bytes_per_frame(metas)
    rows = []
    for size in args.sizes.split(","):
        height, width = (spec.height, spec.width) if size == "native" else (int(size), int(size))
        for codec in CODECS:
            view = ViewConfig(height=height, width=width, frame_codec=codec, segment_steps=64)
            started = time.perf_counter()
            paths = shards_of(store, metas, view)
            build_s = time.perf_counter() - started
            total, frames, fps = measure(paths, codec, height, width)
            rows.append({"size": f"{height}x{width}", "codec": codec, "bytes_per_frame": round(total / frames),
                         "x_source_bytes": round(total / frames / source, 2), "write_s": round(build_s, 1),
                         "decode_fps": round(fps, 1)})
        jpg = next(r for r in rows if r["size"] == f"{height}x{width}" and r["codec"] == "jpg")
        for row in rows:
            if row["size"] == jpg["size"]:
                row["decode_x_jpg"] = round(row["decode_fps"] / jpg["decode_fps"], 2)
    print(f"source ({args.codec}, {spec.height}x{spec.width}): {source:.0f} bytes/frame")
    print("| size | codec | bytes/frame | x source | frames decoded/s | x jpg | shard write s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['codec']} | {r['bytes_per_frame']} | {r['x_source_bytes']} | "
              f"{r['decode_fps']} | {r['decode_x_jpg']} | {r['write_s']} |")
    path = write_result("view_codecs", {"source_codec": args.codec, "source_bytes_per_frame": round(source),
                                        "episodes": args.episodes, "rows": rows})
    print(f"written {path}")


if __name__ == "__main__":
    main()
