"""``actionreel augment``: world-model augmentation runs (export requests, generate, gate, ingest, commit).

    actionreel augment run --store STORE --from latest --where embodiment=aloha --generator reference
    actionreel augment run --store STORE --generator http://gpu-box:8000/generate --timeout 900 --concurrency 8
    actionreel augment export --store STORE --from latest --where split=train --workdir /scratch/reqs
    actionreel augment run --store STORE --generator none --workdir /scratch/reqs     # ingest external results
    actionreel augment serve --generator reference --port 8000

One Ray task per request attempt (``pipeline.augment.task.run_attempt``); this driver keeps at most
``--concurrency`` in flight, gives each a deadline, retries failed attempts up to ``--attempts``
with backoff, and commits the stored synthetic episodes as a child of the output ref's head. A
re-run with the same selection and settings finds its work folder and skips finished requests.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from jobs.cliutil import (
    CONTEXT,
    Outcome,
    UserError,
    command,
    json_mode,
    parse_storage_options,
    require_store,
    storage_options_option,
    store_option,
)
from jobs.versions import parse_where

if TYPE_CHECKING:
    from pipeline.augment import AttemptContext, CallPolicy, PlanOptions, QualityConfig
    from pipeline.report import JobReport
    from pipeline.store.catalog import CatalogQuery
    from pipeline.store.episodes import EpisodeStore

app = typer.Typer(no_args_is_help=True, add_completion=False, context_settings=CONTEXT,
                  help="World-model augmentation: export requests, generate, gate, ingest with lineage, commit")
REAL_KINDS = ("teleop", "sim")


@dataclass
class _Slot:
    index: int
    attempt: int
    not_before: float = 0.0


def _attempt_task(ctx: AttemptContext, plan: dict, parent: dict, attempt: int) -> dict:
    from pipeline.augment import run_attempt

    return run_attempt(ctx, plan, parent, attempt)


def run_augment(store_uri: str, *, source: str = "latest", ref: str | None = None,
                query: CatalogQuery | None = None, plan: PlanOptions | None = None, generator: Any = "reference",
                generator_options: dict | None = None, policy: CallPolicy | None = None,
                quality: QualityConfig | None = None, workdir: str | None = None, export_only: bool = False,
                storage_options: dict | None = None, ray_address: str | None = None) -> JobReport:
    """Run (or resume) an augmentation over the episodes ``query`` selects in ``source``."""
    from pipeline.augment import (
        AttemptContext,
        CallPolicy,
        PlanOptions,
        QualityConfig,
        commit_augmented,
        load_generator,
        plan_requests,
    )
    from pipeline.augment.generators import generator_identity
    from pipeline.augment.paths import write_json
    from pipeline.report import JobReport
    from pipeline.store.catalog import CatalogQuery, read_catalog_table
    from pipeline.store.episodes import EpisodeStore
    from pipeline.store.refs import read_head
    from pipeline.store.versions import VersionError, resolve
    from schemas import meta_to_row, row_to_meta, table_to_metas

    started = time.perf_counter()
    store = EpisodeStore(store_uri, storage_options)
    source_id, manifest = resolve(store, source)
    ref = ref or (source if read_head(store.objects, source) is not None else None)
    if ref is None and not export_only:
        raise VersionError(f"{source!r} is a version id, not a ref: name the ref to commit to")
    query = query or CatalogQuery()
    if not query.kind:
        query = replace(query, kind=REAL_KINDS)  # never augment synthetic episodes unless asked to
    plan = plan or PlanOptions()
    policy = policy or CallPolicy()
    quality = quality or QualityConfig()
    options = dict(generator_options or {})
    if isinstance(generator, str) and generator.startswith(("http://", "https://")):
        options.setdefault("timeout_s", policy.timeout_s)
    identity = generator_identity(load_generator(generator, options), generator)
    run_id = hashlib.sha256(json.dumps({"query": query.to_json(), "plan": plan.to_json(), "generator": identity},
                                       sort_keys=True, default=str).encode()).hexdigest()[:16]
    workdir = workdir or _default_workdir(store, run_id)
    metas = table_to_metas(read_catalog_table(store, manifest, query=query))
    plans, skipped = plan_requests(metas, source_id, plan)
    write_json(Path(workdir) / "run.json", {"run_id": run_id, "source": source_id, "query": query.to_json(),
                                            "plan": plan.to_json(), "generator": identity,
                                            "quality": quality.to_json(), "requests": len(plans)})
    report = JobReport(job="augment", source=f"{store_uri}@{source_id[:12]}", episodes_in=len(metas),
                       warnings=[f"skipped {s}" for s in skipped[:20]])
    ctx = AttemptContext(store_uri=store_uri, workdir=str(workdir), run_id=run_id, generator=generator,
                         generator_options=options, generator_identity=identity, quality=quality.to_json(),
                         timeout_s=policy.timeout_s, retry_on_quality=policy.retry_on_quality,
                         export_only=export_only, storage_options=dict(storage_options or {}))
    parents = {m.episode_id: meta_to_row(m) for m in metas}
    finals, attempts = _schedule(ctx, [(p.to_json(), parents[p.parent_id]) for p in plans], policy, ray_address)
    _summarize(report, finals, attempts, run_id, workdir, identity)
    synthetic = [row_to_meta(o["row"]) for o in finals if o["row"] is not None]
    report.steps = sum(m.num_steps for m in synthetic)
    report.frames = sum(c.num_frames for m in synthetic for c in m.cameras)
    objects = {m.steps_sha256: m.steps_bytes for m in synthetic} | {
        c.video_sha256: c.video_bytes for m in synthetic for c in m.cameras}
    report.bytes = sum(objects.values())
    if synthetic and not export_only:
        producer = {"job": "augment", "source": source_id, "run": run_id, "generator": identity,
                    "query": query.to_json(), "requests": len(plans)}
        report.version_id, changes, base = commit_augmented(store, ref, source_id, synthetic, producer)
        report.extra["parent version"] = base[:12]
        report.extra["synthetic added"] = len(changes.added) + len(changes.changed)
    elif not export_only:
        report.warnings.append("no synthetic episode was stored: no version committed")
    report.seconds = time.perf_counter() - started
    from pipeline.report import keep_job_report

    keep_job_report(store.objects, report)
    return report


def _default_workdir(store: EpisodeStore, run_id: str) -> str:
    from pipeline.store.objects import is_local

    if not is_local(store.fs):
        raise ValueError("the store is remote: pass a shared local folder as the work folder (--workdir)")
    return str(Path(store.objects.abspath(f"augment/{run_id}")))


def _schedule(ctx: AttemptContext, items: list[tuple[dict, dict]], policy: CallPolicy,
              ray_address: str | None) -> tuple[list[dict], list[dict]]:
    """Attempts on Ray: at most ``max_concurrency`` in flight, a deadline each, retries with backoff."""
    if not items:
        return [], []
    import ray

    from jobs.raycluster import init_ray
    from pipeline.progress import JobProgress, terminal_progress

    init_ray(ray_address)
    remote = ray.remote(num_cpus=1, max_retries=0)(_attempt_task)
    ctx_ref = ray.put(ctx)
    queue = deque(_Slot(i, 1) for i in range(len(items)))
    running: dict[Any, tuple[_Slot, float]] = {}
    finals: list[dict | None] = [None] * len(items)
    attempts: list[dict] = []
    hard_limit = 2 * policy.timeout_s + 120  # the task times the generator itself; this catches a stuck worker

    def settle(slot: _Slot, outcome: dict) -> None:
        attempts.append({k: v for k, v in outcome.items() if k not in ("row", "stats")})
        if outcome["status"] == "failed" and outcome["retryable"] and slot.attempt < policy.max_attempts:
            delay = policy.backoff_s * 2 ** (slot.attempt - 1)
            queue.append(_Slot(slot.index, slot.attempt + 1, time.monotonic() + delay))
        else:
            finals[slot.index] = outcome
            bar.advance(1, sum(int(c.get("num_frames") or 0) for c in (outcome.get("row") or {}).get("cameras") or []))

    bar = JobProgress("augment", len(items), enabled=terminal_progress() and not json_mode(), item="requests")
    with bar:
        _drive(queue, running, items, remote, ctx_ref, policy, hard_limit, settle)
    return [f for f in finals if f is not None], attempts


def _drive(queue: deque, running: dict, items: list[tuple[dict, dict]], remote: Any, ctx_ref: Any,
           policy: CallPolicy, hard_limit: float, settle: Any) -> None:
    """Keep at most ``max_concurrency`` attempts in flight until every request is settled."""
    import ray

    while queue or running:
        now = time.monotonic()
        for slot in [s for s in queue if s.not_before <= now]:
            if len(running) >= policy.max_concurrency:
                break
            queue.remove(slot)
            plan, parent = items[slot.index]
            running[remote.remote(ctx_ref, plan, parent, slot.attempt)] = (slot, now + hard_limit)
        if not running:
            time.sleep(max(0.0, min(s.not_before for s in queue) - time.monotonic()))
            continue
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        for handle in ready:
            slot, _ = running.pop(handle)
            try:
                outcome = ray.get(handle)
            except ray.exceptions.RayError as exc:
                plan, _ = items[slot.index]
                outcome = _lost(plan, slot, "worker", f"the task failed: {exc}")
            settle(slot, outcome)
        for handle, (slot, deadline) in list(running.items()):
            if time.monotonic() > deadline:
                ray.cancel(handle, force=True)
                running.pop(handle)
                settle(slot, _lost(items[slot.index][0], slot, "timeout", f"no answer within {hard_limit:g} s"))


def _lost(plan: dict, slot: _Slot, gate: str, reason: str) -> dict:
    return {"request_id": plan["request_id"], "parent_id": plan["parent_id"], "attempt": slot.attempt,
            "status": "failed", "generated": True, "gate": gate, "reason": reason, "retryable": True,
            "episode_id": "", "row": None, "stats": None, "seconds": 0.0}


def _summarize(report: JobReport, finals: list[dict], attempts: list[dict], run_id: str, workdir: str,
               identity: dict) -> None:
    status = Counter(o["status"] for o in finals)
    failures = Counter(a["gate"] for a in attempts if a["status"] == "failed")
    report.stored, report.reused = status["stored"], status["reused"]
    report.decoded = report.stored
    report.quarantined = [{"source_key": o["request_id"], "episode_id": o["episode_id"],
                           "file": _failed_folder(workdir, o["request_id"]), "field": o["gate"],
                           "reason": o["reason"], "attempts": o["attempt"]}
                          for o in finals if o["status"] == "failed"]
    generated = sum(1 for o in finals if o["status"] in ("stored", "reused") and o["generated"])
    report.extra.update({
        "run": run_id, "work folder": workdir, "generator": json.dumps(identity, sort_keys=True),
        "requests": len(finals), "generated": generated,
        "results reused (finished earlier)": sum(1 for o in finals if o["status"] in ("stored", "reused")
                                                 and not o["generated"]),
        "waiting for a result": status["waiting"], "exported only": status["exported"],
        "attempts": len(attempts), "retries": len(attempts) - len(finals),
        "failed attempts by gate": dict(sorted(failures.items())),
        "quarantined by gate": dict(sorted(Counter(q["field"] for q in report.quarantined).items())),
    })


def _failed_folder(workdir: str, request_id: str) -> str:
    folder = Path(workdir) / "failed" / request_id
    return str(folder) if folder.exists() else ""


# ---------------------------------------------------------------- command line


def _plan_from_cli(cameras: str | None, variants: int, prompts: list[str] | None, negative_prompt: str, seed: int,
                   guidance: float | None, num_steps: int | None, inference_type: str, start_step: int,
                   max_steps: int | None, conditioning_frames: int) -> PlanOptions:
    from pipeline.augment import PlanOptions

    try:
        return PlanOptions(cameras=tuple(c for c in cameras.split(",") if c) if cameras else None, variants=variants,
                           prompts=tuple(prompts) if prompts else ("{task}",), negative_prompt=negative_prompt,
                           seed=seed, guidance=guidance, num_steps=num_steps, inference_type=inference_type,
                           start_step=start_step, max_steps=max_steps, conditioning_frames=conditioning_frames)
    except ValueError as exc:
        raise UserError(str(exc)) from None


STORE = store_option()
OPTIONS = storage_options_option()
STRICT = typer.Option(False, "--strict", help="Exit 3 when any request was quarantined")
SOURCE = typer.Option("latest", "--from", help="Version (ref or id) to select parents from")
WHERE = typer.Option(None, "--where", help="Select parents: KEY=VALUE (repeatable; see `versions`)")
WORKDIR = typer.Option(None, "--workdir", help="Work folder (default: <store>/augment/<run id>)")
CAMERAS = typer.Option(None, "--cameras", help="Comma-separated cameras (default: all)")
PROMPTS = typer.Option(None, "--prompt", help="Prompt template, {task} = the instruction (repeatable)")
GEN_OPTIONS = typer.Option(None, "--generator-option", help="Generator option key=value (repeatable)")


@app.command("run")
@command
def run_cmd(store: str = STORE, storage_options: str = OPTIONS, source: str = SOURCE,
            ref: str = typer.Option(None, "--ref", help="Ref to commit to (default: --from when it is a ref; name "
                                    "another, e.g. --ref augmented, to keep --from where it is)"),
            where: list[str] = WHERE,
            generator: str = typer.Option("reference", "--generator", help="reference | python:module:name | "
                                          "http(s)://... | none"),
            generator_option: list[str] = GEN_OPTIONS, cameras: str = CAMERAS,
            variants: int = typer.Option(1, "--variants"), prompt: list[str] = PROMPTS,
            negative_prompt: str = typer.Option("", "--negative-prompt"), seed: int = typer.Option(0, "--seed"),
            guidance: float = typer.Option(None, "--guidance"), num_steps: int = typer.Option(None, "--num-steps"),
            inference_type: str = typer.Option("transfer", "--inference-type"),
            start_step: int = typer.Option(0, "--start-step"), max_steps: int = typer.Option(None, "--max-steps"),
            conditioning_frames: int = typer.Option(1, "--conditioning-frames"),
            timeout: float = typer.Option(600.0, "--timeout", help="Seconds per generator call"),
            attempts: int = typer.Option(3, "--attempts", help="Attempts per request"),
            concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight"),
            quality: str = typer.Option(None, "--quality", help="Quality gate settings as JSON or a JSON file"),
            workdir: str = WORKDIR, report_path: str = typer.Option(None, "--report"),
            ray_address: str = typer.Option(None, "--ray-address"), strict: bool = STRICT) -> Outcome:
    """Generate synthetic episodes for a selection and commit them beside the real ones."""
    from pipeline.augment import CallPolicy

    for value, option in ((variants, "--variants"), (attempts, "--attempts"), (concurrency, "--concurrency")):
        if value < 1:
            raise UserError(f"{option} {value}: must be at least 1")
    if timeout <= 0:
        raise UserError(f"--timeout {timeout:g}: must be more than 0 seconds")
    return _run_cli(store, storage_options, source, ref, where, generator, generator_option,
                    _plan_from_cli(cameras, variants, prompt, negative_prompt, seed, guidance, num_steps,
                                   inference_type, start_step, max_steps, conditioning_frames),
                    CallPolicy(timeout_s=timeout, max_attempts=attempts, max_concurrency=concurrency),
                    _quality(quality), workdir, False, report_path, ray_address, strict)


@app.command("export")
@command
def export_cmd(store: str = STORE, storage_options: str = OPTIONS, source: str = SOURCE, where: list[str] = WHERE,
               cameras: str = CAMERAS, variants: int = typer.Option(1, "--variants"), prompt: list[str] = PROMPTS,
               negative_prompt: str = typer.Option("", "--negative-prompt"), seed: int = typer.Option(0, "--seed"),
               inference_type: str = typer.Option("transfer", "--inference-type"),
               max_steps: int = typer.Option(None, "--max-steps"),
               conditioning_frames: int = typer.Option(1, "--conditioning-frames"), workdir: str = WORKDIR,
               ray_address: str = typer.Option(None, "--ray-address")) -> Outcome:
    """Write generation requests only (for a generator that runs elsewhere)."""
    from pipeline.augment import CallPolicy, QualityConfig

    return _run_cli(store, storage_options, source, None, where, "none", None,
                    _plan_from_cli(cameras, variants, prompt, negative_prompt, seed, None, None, inference_type, 0,
                                   max_steps, conditioning_frames), CallPolicy(), QualityConfig(), workdir, True, None,
                    ray_address, False)


@app.command("serve")
@command
def serve_cmd(generator: str = typer.Option("reference", "--generator"),
              generator_option: list[str] = GEN_OPTIONS,
              host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port")) -> None:
    """Serve a generator over HTTP (the protocol in docs/synthetic.md)."""
    from pipeline.augment import GeneratorServer, load_generator

    try:
        server = GeneratorServer(load_generator(generator, _pairs(generator_option)), host, port)
    except (ValueError, ImportError) as exc:
        raise UserError(f"--generator {generator}: {exc}") from None
    typer.echo(f"serving {generator} at {server.url}", err=json_mode())
    server.serve_forever()


def _pairs(items: list[str] | None) -> dict:
    """``["strength=0.5", "geometric=false"]`` -> ``{"strength": 0.5, "geometric": False}`` (YAML scalars)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--generator-option: expected key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def _quality(text: str | None) -> QualityConfig:
    from pipeline.augment import QualityConfig

    if not text:
        return QualityConfig()
    try:
        data = json.loads(Path(text).read_text() if Path(text).is_file() else text)
        return QualityConfig.from_json(data)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--quality: {exc}") from None


def _run_cli(store: str, storage_options: str | None, source: str, ref: str | None, where: list[str] | None,
             generator: str, generator_option: list[str] | None, plan: PlanOptions, policy: CallPolicy,
             quality: QualityConfig, workdir: str | None, export_only: bool, report_path: str | None,
             ray_address: str | None, strict: bool) -> Outcome:
    from jobs.ingest import job_outcome

    options = parse_storage_options(storage_options)
    require_store(store, options)
    query = parse_where(where)
    try:
        report = run_augment(store, source=source, ref=ref, query=query, plan=plan, generator=generator,
                             generator_options=_pairs(generator_option), policy=policy, quality=quality,
                             workdir=workdir, export_only=export_only, storage_options=options or None,
                             ray_address=ray_address)
    except (ValueError, ImportError) as exc:  # the generator's and the plan's own checks
        raise UserError(str(exc)) from None
    if report_path:
        report.write(report_path)
    line = (f"augment: {report.stored + report.reused} synthetic episodes, {len(report.quarantined)} quarantined, "
            f"version {report.version_id or '(none)'}")
    return job_outcome(report, strict, line)
