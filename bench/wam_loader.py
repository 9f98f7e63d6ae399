"""WAM clip throughput vs decoding the same clips from the source mp4s, and time to first batch at 1,000 shards.

    python -m bench.wam_loader [--batches 40]

Clips: 16 frames, 2 cameras, 224x224, at frame stride 1 (30 fps) and 3 (10 fps). ActionReel reads them
from a view's shards through a DataLoader with 2 workers; the baseline is a map-style dataset that,
per clip and camera, opens the source mp4 with PyAV, seeks to the clip's first frame and decodes
forward through its last, resizing the frames it keeps. Same DataLoader settings.
Time to first batch: a view of 1,000 shards (the sample view's shards listed repeatedly, with a
sample table to match), from opening the view to the first batch out of a 2-worker DataLoader.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.common import prepared_store, prepared_view, write_result
from pipeline.loaders import ViewSource, WAMConfig, WAMDataset, make_loader
from pipeline.samples import CAMERAS
from pipeline.shards import ViewConfig
from pipeline.video import resize_frame

FRAMES = 16
BATCH = 8


class DecodeClipDataset(torch.utils.data.Dataset):
    """Baseline: seek + decode the source mp4 for every clip."""

    def __init__(self, source: Path, stride: int, size: int = 224) -> None:
        self.stride, self.size = stride, size
        self.fps = Fraction(json.loads((source / "meta/info.json").read_text())["fps"])
        episodes = pq.read_table(source / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
        self.items = []
        for row in episodes:
            videos = [(source / f"videos/{key}/chunk-000/file-{row[f'videos/{key}/file_index']:03d}.mp4",
                       row[f"videos/{key}/from_timestamp"]) for key in CAMERAS]
            span = (FRAMES - 1) * stride + 1
            self.items += [(videos, t0) for t0 in range(0, row["length"] - span + 1)]

    def __len__(self) -> int:
        return len(self.items)

    def _clip(self, path: Path, start_s: float, t0: int) -> np.ndarray:
        wanted = {t0 + i * self.stride for i in range(FRAMES)}
        frames = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            first = round((start_s + t0 / float(self.fps)) / stream.time_base)
            container.seek(first, stream=stream, backward=True)
            for frame in container.decode(stream):
                index = round(float(frame.pts * stream.time_base - start_s) * float(self.fps))
                if index in wanted:
                    frames.append(resize_frame(frame.to_ndarray(format="rgb24"), self.size, self.size))
                    if len(frames) == FRAMES:
                        break
        return np.stack(frames)

    def __getitem__(self, i: int) -> dict:
        videos, t0 = self.items[i]
        clip = np.stack([self._clip(path, start, t0) for path, start in videos])
        return {"frames": torch.from_numpy(clip).permute(0, 1, 4, 2, 3)}


def actionreel_rate(store: Path, view_id: str, stride: int, batches: int) -> float:
    config = WAMConfig(n_context=4, n_future=12, frame_stride=stride, batch_size=BATCH, seed=0)
    dataset = WAMDataset(ViewSource(str(store), view_id), config)
    seen, started = 0, None
    for number, batch in enumerate(make_loader(dataset, num_workers=2, reuse_buffers=True)):
        if number == 2:
            started = time.perf_counter()
        elif started is not None:
            seen += batch["frames"].shape[0]
            if seen >= batches * BATCH:
                break
    return seen / (time.perf_counter() - started)


def baseline_rate(source: Path, stride: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(DecodeClipDataset(source, stride), batch_size=BATCH, shuffle=True,
                                         num_workers=2, generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    next(iterator)
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        seen += next(iterator)["frames"].shape[0]
    return seen / (time.perf_counter() - started)


def thousand_shard_view(store: Path, view_id: str, shards: int = 1000) -> str:
    manifest = json.loads((store / f"views/{view_id}/view.json").read_text())
    base = manifest["shards"]
    table = pq.read_table(store / manifest["samples_path"])
    copies = []
    for k in range(shards // len(base) + 1):
        column = pa.array(table.column("shard").to_numpy() + k * len(base), pa.int32())
        copies.append(table.set_column(table.column_names.index("shard"), "shard", column))
    big = pa.concat_tables(copies)
    big = big.filter(pa.compute.less(big.column("shard"), shards))
    new_id = f"s{shards}-{view_id[:16]}"
    folder = store / f"views/{new_id}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(big, folder / "samples.parquet")
    manifest["shards"] = [dict(base[i % len(base)], name=f"{base[i % len(base)]['name']}-{i}") for i in range(shards)]
    manifest["view_id"], manifest["samples_path"] = new_id, f"views/{new_id}/samples.parquet"
    (folder / "view.json").write_text(json.dumps(manifest))
    return new_id


def time_to_first_batch(store: Path, view_id: str) -> dict:
    from pipeline.loaders import VLAConfig, VLADataset

    out = {}
    for name, build in (("vla", lambda s: VLADataset(s, VLAConfig(batch_size=32, action_horizon=50))),
                        ("wam", lambda s: WAMDataset(s, WAMConfig(batch_size=BATCH, frame_stride=3)))):
        started = time.perf_counter()
        source = ViewSource(str(store), view_id)
        dataset = build(source)
        next(iter(make_loader(dataset, num_workers=2)))
        out[name] = round(time.perf_counter() - started, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--baseline-batches", type=int, default=3)
    args = parser.parse_args()
    source, store = prepared_store()
    torch.set_num_threads(1)
    results = {}
    for label, options in (("jpg q95 4:4:4 (default)", {}), ("raw (npy)", {"frame_codec": "npy"})):
        view_id = prepared_view(store, ViewConfig(height=224, width=224, max_action_horizon=64, decoder="pyav",
                                                  target_shard_bytes=256_000_000, **options))
        for stride in (1, 3):
            ours = actionreel_rate(store, view_id, stride, args.batches)
            base = baseline_rate(source, stride, args.baseline_batches)
            results[f"{label}, stride {stride}"] = {"clips_per_s": round(ours, 1),
                                                    "baseline_clips_per_s": round(base, 1),
                                                    "ratio": round(ours / base, 1)}
            print(f"WAM 16x2x224x224 {label:24s} stride {stride}: ActionReel {ours:6.1f} clips/s | "
                  f"decode-from-mp4 baseline {base:5.1f} clips/s | ratio {ours / base:4.1f}x", flush=True)
    default_view = prepared_view(store, ViewConfig(height=224, width=224, max_action_horizon=64, decoder="pyav",
                                                   target_shard_bytes=256_000_000))
    big = thousand_shard_view(store, default_view)
    ttfb = time_to_first_batch(store, big)
    results["time_to_first_batch_1000_shards_s"] = ttfb
    print(f"time to first batch, 1,000-shard view, 2 workers: VLA {ttfb['vla']:.2f} s, WAM {ttfb['wam']:.2f} s")
    print(f"results: {write_result('wam_loader', results)}")


if __name__ == "__main__":
    main()
