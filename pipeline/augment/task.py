"""One attempt at one request: export, generate (or reuse a finished result), gate, store.

Independent of Ray: the job runs attempts as tasks and decides on retries. Work folder::

    requests/<request_id>/          the exported request (pipeline.augment.export)
    results/<request_id>/           a finished result: result.json + one mp4 per camera (renamed into
                                    place only after every gate passed, so its presence means "done")
    results/.tmp-<request_id>-...   an attempt in progress
    failed/<request_id>/attempt-<n>/  what a failed attempt produced, with failure.json (kept for a look)

A re-run finds ``results/<request_id>/`` and skips the generator; the store's ingest memo then
skips writing the episode again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.augment.episode import keeps_motion, result_actions, synthetic_episode
from pipeline.augment.export import export_request, request_dir
from pipeline.augment.generators import GenerationError, load_generator
from pipeline.augment.paths import read_json_file, write_json
from pipeline.augment.quality import QualityConfig, check_result
from pipeline.augment.request import RESULT_FORMAT, GenerationRequest, GenerationResult, RequestError, RequestPlan
from pipeline.ingest import IngestConfig, ingest_episode
from pipeline.store.episodes import EpisodeStore
from schemas import EpisodeMeta, make_episode_id, row_to_meta


@dataclass
class AttemptContext:
    """What every attempt of one run shares (plain values: it travels to Ray workers)."""

    store_uri: str
    workdir: str
    run_id: str
    generator: Any = None  # a spec string (see load_generator) or a generator object
    generator_options: dict = field(default_factory=dict)
    generator_identity: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)
    timeout_s: float = 600.0
    retry_on_quality: bool = True
    export_only: bool = False
    storage_options: dict = field(default_factory=dict)


@dataclass
class AttemptOutcome:
    request_id: str
    parent_id: str
    attempt: int
    status: str  # stored | reused | failed | waiting | exported
    generated: bool = False  # this attempt ran the generator (False: a finished result was reused)
    gate: str = ""  # what failed: export, timeout, generator, corrupt, a quality gate, validation
    reason: str = ""
    retryable: bool = False
    episode_id: str = ""
    row: dict | None = None
    stats: dict | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def result_dir(workdir: str | Path, request_id: str) -> Path:
    return Path(workdir) / "results" / request_id


def load_result(folder: Path) -> GenerationResult | None:
    path = folder / "result.json"
    if not path.is_file():
        return None
    try:
        return GenerationResult.from_json(read_json_file(path), str(path))
    except (RequestError, ValueError):
        return None


def run_attempt(ctx: AttemptContext, plan_json: dict, parent_row: dict, attempt: int) -> dict:
    """Returns ``AttemptOutcome.to_json()``; never raises for bad input or a failing generator."""
    started = time.perf_counter()
    plan = RequestPlan.from_json(plan_json)
    outcome = AttemptOutcome(plan.request_id, plan.parent_id, attempt, "failed",
                             episode_id=make_episode_id(plan.dataset, plan.request_id))
    try:
        _attempt(ctx, plan, row_to_meta(parent_row), outcome)
    except GenerationError as exc:
        outcome.status, outcome.gate, outcome.reason, outcome.retryable = "failed", exc.gate, exc.reason, exc.retryable
    except Exception as exc:  # one bad request never ends the run: it is reported with its reason
        outcome.status, outcome.gate = "failed", outcome.gate or "error"
        outcome.reason = f"{type(exc).__name__}: {exc}"
    outcome.seconds = time.perf_counter() - started
    return outcome.to_json()


def _attempt(ctx: AttemptContext, plan: RequestPlan, parent: EpisodeMeta, outcome: AttemptOutcome) -> None:
    store = EpisodeStore(ctx.store_uri, ctx.storage_options)
    steps = store.read_steps(parent).filled()
    folder = request_dir(ctx.workdir, plan.request_id)
    outcome.gate = "export"
    request = export_request(store, parent, plan, folder, steps)
    outcome.gate = ""
    if ctx.export_only:
        outcome.status = "exported"
        return
    done = result_dir(ctx.workdir, plan.request_id)
    result = load_result(done)
    work = done
    if result is None:
        generator = load_generator(ctx.generator, ctx.generator_options)
        if generator is None:
            outcome.status, outcome.reason = "waiting", "no result yet and no generator"
            return
        work = done.parent / f".tmp-{plan.request_id}-{outcome.attempt}-{uuid.uuid4().hex[:8]}"
        work.mkdir(parents=True)
        outcome.generated = True
        try:
            result = _generate(generator, request, folder, work, ctx.timeout_s)
        except GenerationError as exc:
            _set_aside(ctx, plan.request_id, outcome.attempt, work, [f"{exc.gate}: {exc.reason}"])
            raise
    keeps = keeps_motion(request, result)
    actions, _ = (None, "") if keeps else result_actions(request, result, folder, work)
    failures, checks = check_result(request, result, work, QualityConfig.from_json(ctx.quality), keeps,
                                    None if actions is None else len(actions))
    if failures:
        _set_aside(ctx, plan.request_id, outcome.attempt, work, [str(f) for f in failures])
        outcome.gate, outcome.reason = failures[0].gate, "; ".join(str(f) for f in failures)
        outcome.retryable = ctx.retry_on_quality
        return
    if work != done:
        write_json(work / "result.json", result.to_json())
        if done.exists():
            shutil.rmtree(done)
        work.rename(done)
    episode = synthetic_episode(parent, steps, request, result, done, checks, dataset=plan.dataset, run_id=ctx.run_id,
                                generator=ctx.generator_identity, request_folder=folder)
    stored = ingest_episode(store, plan.request_id, episode.meta.episode_id,
                            lambda: _checksum(folder, done, result, parent), lambda: episode, IngestConfig())
    if stored.status == "quarantined":
        outcome.gate, outcome.reason = "validation", stored.quarantine["reason"]
        return
    outcome.status, outcome.row, outcome.stats = stored.status, stored.row, stored.stats


def _generate(generator, request: GenerationRequest, folder: Path, work: Path, timeout_s: float) -> GenerationResult:
    """Call the generator with a deadline; a timed-out call is abandoned (its output folder is its own)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator")
    future = pool.submit(generator, request.to_json(), str(folder), str(work))
    try:
        raw = future.result(timeout=timeout_s)
    except FuturesTimeout:
        raise GenerationError(f"timed out after {timeout_s:g} s", gate="timeout") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if not isinstance(raw, dict):
        raise GenerationError(f"the generator returned {type(raw).__name__}, not a result object", gate="corrupt")
    try:
        result = GenerationResult.from_json({"format": RESULT_FORMAT, "request_id": request.request_id, **raw})
    except RequestError as exc:
        raise GenerationError(str(exc), gate="corrupt") from exc
    if result.request_id != request.request_id:
        raise GenerationError(f"result is for request {result.request_id}, not {request.request_id}",
                              gate="corrupt")
    if result.status != "ok":
        raise GenerationError(f"the generator reported status {result.status!r}")
    return result


def _set_aside(ctx: AttemptContext, request_id: str, attempt: int, work: Path, failures: list[str]) -> None:
    """Move a failing output out of the way (a finished result that fails is regenerated next time)."""
    target = Path(ctx.workdir) / "failed" / request_id / f"attempt-{attempt}"
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if work.exists():
        work.rename(target)
    write_json(target / "failure.json", {"request_id": request_id, "attempt": attempt, "failures": failures})


def _checksum(folder: Path, done: Path, result: GenerationResult, parent: EpisodeMeta) -> str:
    """Everything the synthetic episode is made of: request, result, videos, the parent's stored objects."""
    digest = hashlib.sha256()
    digest.update((folder / "request.json").read_bytes())
    digest.update(json.dumps(result.to_json(), sort_keys=True).encode())
    for name in sorted(result.videos.values()):
        with open(done / name, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    digest.update(json.dumps([parent.episode_id, parent.steps_sha256, parent.split]).encode())
    return digest.hexdigest()
