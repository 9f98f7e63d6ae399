"""What checking every shard member's checksum costs the loaders: throughput with checks on vs off.

    python -m bench.loader_integrity [--batches 400] [--rounds 9]

Same run, same view, same batches: the VLA loader (batch 32, H = 50, both cameras, in this process so
that DataLoader worker start-up does not blur the figure) reads a JPEG view (224x224: the common case,
decoding dominates) and a raw ``npy`` view (224x224: no decoding, so hashing is the largest share it
can be), in ``--rounds`` back-to-back pairs (off, on; then on, off); the median of the pairs' ratios
is kept. The budget is a ratio of at least 0.97 (checks cost at most 3 % of loader throughput).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

from bench.common import prepared_store, prepared_view, write_result
from pipeline.loaders import ViewSource, VLAConfig, VLADataset
from pipeline.shards import ViewConfig

BATCH = 32
BUDGET = 0.97


def _samples_per_s(store: str, view_id: str, batches: int, check: bool) -> float:
    source = ViewSource(store, view_id, check_members=check)
    dataset = VLADataset(source, VLAConfig(batch_size=BATCH, action_horizon=50, seed=0))
    iterator = _epochs(dataset)
    next(iterator)  # shard indexes loaded, caches warm: the steady state is measured
    started = time.perf_counter()
    samples = 0
    for _ in range(batches):
        samples += len(next(iterator)["key"])
    return samples / (time.perf_counter() - started)


def _epochs(dataset: VLADataset) -> Iterator[dict]:
    """Batches of epoch after epoch (the sample dataset is smaller than the batches measured)."""
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        yield from dataset
        epoch += 1


def measure(store: str, view_id: str, batches: int, rounds: int) -> dict:
    """Rounds of (off, on) back to back; the ratio of each pair, and their median (this VM's speed drifts
    by 10 % within seconds, so one pair, or the best of each mode, says little)."""
    pairs = []
    for index in range(rounds):
        modes = ("off", "on") if index % 2 == 0 else ("on", "off")  # neither mode always goes first
        rates = {mode: _samples_per_s(store, view_id, batches, mode == "on") for mode in modes}
        pairs.append(rates)
    ratios = sorted(p["on"] / p["off"] for p in pairs)
    median = statistics.median(ratios)
    return {"samples_per_s_checks_on": round(statistics.median(p["on"] for p in pairs), 1),
            "samples_per_s_checks_off": round(statistics.median(p["off"] for p in pairs), 1),
            "ratio_on_over_off_median": round(median, 4), "ratios": [round(r, 4) for r in ratios],
            "within_budget": median >= BUDGET}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=9)
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
