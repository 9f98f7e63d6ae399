"""What checking every shard member's checksum costs the loaders: throughput with checks on vs off.

    python -m bench.loader_integrity [--batches 60] [--rounds 3]

Same run, same view, same batches: the VLA loader (batch 32, H = 50, both cameras, in this process so
that DataLoader worker start-up does not blur the figure) reads a JPEG view (224x224: the common case,
decoding dominates) and a raw ``npy`` view (224x224: no decoding, so hashing is the largest share it
can be), alternating on and off ``--rounds`` times; the best time of each is kept. The budget is a
ratio of at least 0.97 (checks cost at most 3 % of loader throughput).
"""

from __future__ import annotations

import argparse
import time

from bench.common import prepared_store, prepared_view, write_result
from pipeline.loaders import ViewSource, VLAConfig, VLADataset
from pipeline.shards import ViewConfig

BATCH = 32
BUDGET = 0.97


def _samples_per_s(store: str, view_id: str, batches: int, check: bool) -> float:
    source = ViewSource(store, view_id, check_members=check)
    dataset = VLADataset(source, VLAConfig(batch_size=BATCH, action_horizon=50, seed=0))
    iterator = iter(dataset)
    next(iterator)  # shard indexes loaded, caches warm: the steady state is measured
    started = time.perf_counter()
    samples = 0
    for _ in range(batches):
        samples += len(next(iterator)["key"])
    return samples / (time.perf_counter() - started)


def measure(store: str, view_id: str, batches: int, rounds: int) -> dict:
    best = {"on": 0.0, "off": 0.0}
    for _ in range(rounds):
        for mode in ("off", "on"):
            best[mode] = max(best[mode], _samples_per_s(store, view_id, batches, mode == "on"))
    ratio = best["on"] / best["off"]
    return {"samples_per_s_checks_on": round(best["on"], 1), "samples_per_s_checks_off": round(best["off"], 1),
            "ratio_on_over_off": round(ratio, 4), "within_budget": ratio >= BUDGET}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    _, store = prepared_store()
    results = {"batch": BATCH, "batches": args.batches, "rounds": args.rounds, "budget_ratio": BUDGET, "views": {}}
    for codec in ("jpg", "npy"):
        view_id = prepared_view(store, ViewConfig(height=224, width=224, frame_codec=codec, decoder="pyav"))
        results["views"][codec] = measure(str(store), view_id, args.batches, args.rounds)
        print(codec, results["views"][codec], flush=True)
    print(f"results: {write_result('loader_integrity', results)}")


if __name__ == "__main__":
    main()
