"""How the shard job's decode actors are sized: a pure function of the cluster's resources.

GPU clusters get ``actors_per_gpu`` actors per GPU, each holding a fractional ``num_gpus`` share
(NVDEC has several engines per card and one actor leaves them idle while it demuxes, resizes and
writes tar members), and the cluster's CPUs split between them for the CPU-side work and the videos
routed to CPU. CPU clusters get one actor per core. Either way each actor takes at most
``max_in_flight`` shards at a time, which bounds the work (and memory) in flight: backpressure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ACTORS_PER_GPU = 4
MAX_IN_FLIGHT = 2  # one shard being written, one queued behind it


@dataclass(frozen=True)
class DecodePool:
    size: int  # actors
    num_cpus: float  # per actor
    num_gpus: float  # per actor (0: CPU actors)
    max_tasks_in_flight: int  # per actor
    threads: int  # CPU decode threads per actor
    why: str

    @property
    def uses_gpu(self) -> bool:
        return self.num_gpus > 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


def plan_decode_pool(resources: Mapping[str, float], num_tasks: int, *, gpu_work: bool = True,
                     concurrency: int | None = None, actors_per_gpu: int = ACTORS_PER_GPU,
                     max_in_flight: int = MAX_IN_FLIGHT) -> DecodePool:
    """``resources``: what ``ray.cluster_resources()`` returns ({"CPU": 16, "GPU": 2, ...}).
    ``gpu_work``: whether any video of the view could go to NVDEC (router.may_use_gpu)."""
    if actors_per_gpu < 1 or max_in_flight < 1:
        raise ValueError("actors_per_gpu and max_in_flight must be >= 1")
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0))
    tasks = max(1, num_tasks)
    if gpus > 0 and gpu_work:
        size = max(1, min(tasks, concurrency or gpus * actors_per_gpu, cpus))
        num_gpus = round(min(1.0, gpus / size), 4)
        per_actor = max(1, cpus // size)
        return DecodePool(size, float(per_actor), num_gpus, max_in_flight, per_actor,
                          f"{gpus} GPU(s): {size} actors with {num_gpus} GPU and {per_actor} CPU each")
    size = max(1, min(tasks, concurrency or cpus))
    threads = max(1, cpus // size)
    why = "no GPU in the cluster" if gpus == 0 else "no video of this view goes to a GPU"
    return DecodePool(size, 1.0, 0.0, max_in_flight, threads, f"{why}: {size} CPU actors, {threads} thread(s) each")
