"""VLA loader throughput vs a decode-per-sample baseline, same run, same machine; and memory at 1x vs 10x.

    python -m bench.vla_loader [--batches 150] [--baseline-batches 8]
    python -m bench.vla_loader --suite windows [--batches 40]

``--suite windows`` (time offsets, map-style access, look-ahead cost), each against a baseline in the
same run: (1) history of 2 frames x 2 cameras + state [-1, 0] + a 100-step action chunk vs today's
single frame + 50-step chunk, in decoded frames per second; (2) map-style random access
(``VLAMapDataset`` + a shuffled sampler) vs the decode-per-sample baseline below, in samples per second;
(3) shard bytes with a 100-step vs a 64-step stored look-ahead.

ActionReel: DataLoader(VLADataset) with 2 workers, batch 32, H = 50, 2 cameras, from shards.
Baseline: what LeRobot-style loaders do: a map-style dataset that, per sample and camera, opens the
source mp4 with PyAV, seeks to the frame's timestamp and decodes forward to it, then resizes;
state/action come from memory. Same DataLoader settings (2 workers, batch 32, shuffled).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.common import max_rss_mb, prepared_store, prepared_view, write_result
from pipeline.loaders import ViewSource, VLAConfig, VLADataset, VLAMapDataset, make_loader
from pipeline.samples import CAMERAS
from pipeline.shards import ViewConfig
from pipeline.video import resize_frame

HORIZON = 50
BATCH = 32


class DecodePerSampleDataset(torch.utils.data.Dataset):
    """Baseline: seek + decode the source mp4 for every sample (LeRobot-style)."""

    def __init__(self, source: Path, height: int, width: int) -> None:
        self.height, self.width = height, width
        info = json.loads((source / "meta/info.json").read_text())
        self.fps = Fraction(info["fps"])
        episodes = pq.read_table(source / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
        self.items, self.episodes = [], {}
        for row in episodes:
            data = pq.read_table(source / f"data/chunk-000/file-{row['data/file_index']:03d}.parquet")
            mask = np.asarray(data.column("episode_index").to_numpy() == row["episode_index"])
            state = np.stack(data.column("observation.state").to_numpy(zero_copy_only=False)[mask])
            action = np.stack(data.column("action").to_numpy(zero_copy_only=False)[mask])
            videos = {key: (source / f"videos/{key}/chunk-000/file-{row[f'videos/{key}/file_index']:03d}.mp4",
                            row[f"videos/{key}/from_timestamp"]) for key in CAMERAS}
            self.episodes[row["episode_index"]] = (state, action, videos)
            self.items += [(row["episode_index"], t) for t in range(row["length"])]

    def __len__(self) -> int:
        return len(self.items)

    def _frame(self, path: Path, seconds: float) -> np.ndarray:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            target = round(seconds / stream.time_base)
            container.seek(target, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts >= target - 1:
                    return resize_frame(frame.to_ndarray(format="rgb24"), self.height, self.width)
        raise RuntimeError(f"{path}: no frame at {seconds}")

    def __getitem__(self, i: int) -> dict:
        episode, t = self.items[i]
        state, action, videos = self.episodes[episode]
        images = np.stack([self._frame(path, start + t / float(self.fps)) for path, start in videos.values()])
        chunk = action[t: t + HORIZON]
        pad = HORIZON - len(chunk)
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
        return {"images": torch.from_numpy(images).permute(0, 3, 1, 2), "state": torch.from_numpy(state[t]),
                "actions": torch.from_numpy(chunk), "action_is_pad": torch.arange(HORIZON) >= HORIZON - pad}


def actionreel_rate(store: Path, view_id: str, batches: int, warmup: int = 3) -> float:
    source = ViewSource(str(store), view_id)
    seen, epoch, started = 0, 0, None
    while True:
        dataset = VLADataset(source, VLAConfig(batch_size=BATCH, action_horizon=HORIZON), epoch=epoch)
        for number, batch in enumerate(make_loader(dataset, num_workers=2, reuse_buffers=True)):
            if started is None and number + 1 == warmup:
                started = time.perf_counter()
                continue
            if started is not None:
                seen += batch["state"].shape[0]
                if seen >= batches * BATCH:
                    return seen / (time.perf_counter() - started)
        epoch += 1


def baseline_rate(source: Path, height: int, width: int, batches: int) -> float:
    dataset = DecodePerSampleDataset(source, height, width)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    next(iterator)  # warm-up: workers started
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        seen += next(iterator)["state"].shape[0]
    return seen / (time.perf_counter() - started)


HISTORY = {"cameras": [-1, 0], "state": [-1, 0], "action": list(range(100))}


def frames_rate(source: ViewSource, config: VLAConfig, batches: int, warmup: int = 3) -> float:
    """Decoded frames per second of the batching loader (2 workers, reused buffers)."""
    seen, epoch, started = 0, 0, None
    while True:
        dataset = VLADataset(source, config, epoch=epoch)
        for number, batch in enumerate(make_loader(dataset, num_workers=2, reuse_buffers=True)):
            if started is None and number + 1 == warmup:
                started = time.perf_counter()
                continue
            if started is not None:
                seen += int(np.prod(batch["image_mask"].shape))
                if seen >= batches * int(np.prod(batch["image_mask"].shape)):
                    return seen / (time.perf_counter() - started)
        epoch += 1


def map_style_rate(source: ViewSource, batches: int) -> float:
    """Samples per second of random access: ``VLAMapDataset`` under a shuffled torch sampler."""
    dataset = VLAMapDataset(source, VLAConfig(batch_size=None, action_horizon=HORIZON))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    next(iterator)
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:  # the sample data holds fewer batches than measured: the next epoch
            iterator = iter(loader)
            batch = next(iterator)
        seen += batch["state"].shape[0]
    return seen / (time.perf_counter() - started)


def view_bytes(store: Path, view_id: str) -> int:
    manifest = json.loads((store / f"views/{view_id}/view.json").read_text())
    return sum(int(shard["tar_bytes"]) for shard in manifest["shards"])


def windows_suite(batches: int, baseline_batches: int) -> dict:
    source_path, store = prepared_store()
    view = ViewConfig(height=224, width=224, target_shard_bytes=256_000_000, decoder="pyav")
    view_id = prepared_view(store, view)
    source = ViewSource(str(store), view_id)
    single = frames_rate(source, VLAConfig(batch_size=BATCH, action_horizon=HORIZON), batches)
    history = frames_rate(source, VLAConfig(batch_size=BATCH, delta_steps=HISTORY), batches // 2)
    mapped = map_style_rate(source, batches)
    baseline = baseline_rate(source_path, 224, 224, baseline_batches)
    short, long = (prepared_view(store, ViewConfig(cameras=(), max_action_horizon=h, decoder="pyav"))
                   for h in (64, 100))
    extra = view_bytes(store, long) - view_bytes(store, short)
    result = {
        "single_frame_frames_per_s": round(single, 1),
        "history_2x2_chunk100_frames_per_s": round(history, 1),
        "history_vs_single_ratio": round(history / single, 3),
        "map_style_random_samples_per_s": round(mapped, 1),
        "decode_per_sample_baseline_samples_per_s": round(baseline, 1),
        "map_style_vs_baseline_ratio": round(mapped / baseline, 1),
        "lookahead_100_vs_64_extra_bytes": extra,
        "lookahead_extra_vs_view_bytes": round(extra / view_bytes(store, view_id), 5),
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


def scaled_view(store: Path, view_id: str, factor: int) -> str:
    """A view listing the same shards ``factor`` times (and a sample table to match): a dataset factor x
    larger as far as the loader can tell, without writing factor x the bytes."""
    manifest = json.loads((store / f"views/{view_id}/view.json").read_text())
    shards = len(manifest["shards"])
    table = pq.read_table(store / manifest["samples_path"])
    copies = []
    for k in range(factor):
        shard = pa.array(table.column("shard").to_numpy() + k * shards, pa.int32())
        copies.append(table.set_column(table.column_names.index("shard"), "shard", shard))
    scaled_id = f"x{factor}-{view_id[:16]}"
    folder = store / f"views/{scaled_id}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables(copies), folder / "samples.parquet")
    manifest["shards"] = [dict(s, name=f"{s['name']}-{k}") for k in range(factor) for s in manifest["shards"]]
    manifest["view_id"], manifest["samples_path"] = scaled_id, f"views/{scaled_id}/samples.parquet"
    (folder / "view.json").write_text(json.dumps(manifest))
    return scaled_id


def memory_probe(store: str, view_id: str, batches: int) -> None:
    """Run in a fresh process: iterate ``batches`` batches, print peak RSS of the main process and workers."""
    source = ViewSource(store, view_id)
    dataset = VLADataset(source, VLAConfig(batch_size=BATCH, action_horizon=HORIZON))
    for number, _ in enumerate(make_loader(dataset, num_workers=2, reuse_buffers=True)):
        if number + 1 >= batches:
            break
    print(json.dumps(max_rss_mb()))


def memory_mb(store: Path, view_id: str, batches: int) -> dict:
    code = f"from bench.vla_loader import memory_probe; memory_probe({str(store)!r}, {view_id!r}, {batches})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    return json.loads(out.strip().splitlines()[-1])


VIEWS = {  # frame codec settings compared at each size (the first is the default view)
    "jpg q95 4:4:4 (default)": {},
    "jpg q90 4:2:0": {"jpeg_quality": 90, "jpeg_subsampling": "420"},
    "raw (npy)": {"frame_codec": "npy"},
    "video (mp4 segments)": {"frame_codec": "mp4"},
    "video (mp4 segments) GOP 8": {"frame_codec": "mp4", "video_gop": 8},
    "video (mp4 segments) all-intra": {"frame_codec": "mp4", "video_gop": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--baseline-batches", type=int, default=6)
    parser.add_argument("--suite", choices=["codecs", "windows"], default="codecs")
    parser.add_argument("--views", default=",".join(VIEWS), help="comma-separated labels of VIEWS to run")
    parser.add_argument("--sizes", default="480x640,224x224")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.suite == "windows":
        print(f"results: {write_result('vla_loader_windows', windows_suite(args.batches, args.baseline_batches))}")
        return
    source, store = prepared_store()
    results = {}
    for height, width in (tuple(map(int, size.split("x"))) for size in args.sizes.split(",")):
        base = baseline_rate(source, height, width, args.baseline_batches)
        row = {"baseline_samples_per_s": round(base, 1)}
        for label in args.views.split(","):
            options = VIEWS[label]
            view = ViewConfig(height=height, width=width, max_action_horizon=HORIZON, target_shard_bytes=256_000_000,
                              decoder="pyav", **options)
            view_id = prepared_view(store, view)
            big = scaled_view(store, view_id, 10)
            ours = actionreel_rate(store, big, args.batches)
            mem_1x, mem_10x = memory_mb(store, view_id, 40), memory_mb(store, big, 40)
            shard_bytes = view_bytes(store, view_id)
            row[label] = {"samples_per_s": round(ours, 1), "ratio_vs_baseline": round(ours / base, 1),
                          "peak_rss_mb_1x": mem_1x, "peak_rss_mb_10x": mem_10x, "shard_bytes": shard_bytes}
            print(f"{height}x{width} {label:24s}: ActionReel {ours:7,.0f} samples/s | decode-per-sample baseline "
                  f"{base:5,.0f} samples/s | ratio {ours / base:5.1f}x | shards {shard_bytes / 1e6:.1f} MB | "
                  f"peak RSS main/workers 1x "
                  f"{mem_1x['self']:.0f}/{mem_1x['children']:.0f} MB, 10x {mem_10x['self']:.0f}/"
                  f"{mem_10x['children']:.0f} MB", flush=True)
        results[f"{height}x{width}"] = row
    path = write_result("vla_loader", results)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
