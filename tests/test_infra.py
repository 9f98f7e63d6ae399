"""Deployment files name real things: RayJob entrypoints are real modules with real options."""

from __future__ import annotations

import importlib
import shlex

import click
import pytest
import typer
import yaml

from tests.conftest import REPO

MANIFESTS = sorted((REPO / "infra" / "kuberay").glob("*.yaml"))


def _command(module_name: str) -> click.Command:
    module = importlib.import_module(module_name)
    app = typer.Typer()
    app.command()(module.main)
    return typer.main.get_command(app)


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_rayjob_entrypoint_names_a_real_module_and_real_options(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert jobs, f"{path} holds no RayJob"
    for job in jobs:
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs.")
        command = _command(argv[2])
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        used = [a for a in argv[3:] if a.startswith("--")]
        assert used and all(opt in options for opt in used), (argv[2], set(used) - options)
        context = command.make_context(argv[2], argv[3:], resilient_parsing=False)  # parses: types and arity ok
        assert context.params
        groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
        assert {"cpu-workers", "gpu-workers"} <= set(groups)
        gpu_limits = groups["gpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert str(gpu_limits["nvidia.com/gpu"]) == "1"
        cpu_limits = groups["cpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" not in cpu_limits


def test_both_jobs_have_a_manifest():
    modules = {shlex.split(d["spec"]["entrypoint"])[2] for p in MANIFESTS for d in yaml.safe_load_all(p.read_text())
               if d and d.get("kind") == "RayJob"}
    assert {"jobs.ingest", "jobs.shard"} <= modules


def test_runtime_env_excludes_local_state():
    env = yaml.safe_load((REPO / "infra" / "runtime_env.yaml").read_text())
    assert {".venv", ".git"} <= set(env["excludes"])


def test_cli_shard_defaults_equal_the_python_view_defaults(sample_store):
    """`actionreel shard --size HxW` and `ViewConfig(height=H, width=W)` name the same view (README)."""
    from typer.testing import CliRunner

    from jobs.cli import app
    from pipeline.loaders import ViewSource
    from pipeline.shards import ViewConfig

    store, _ = sample_store
    result = CliRunner().invoke(app, ["shard", "--store", str(store), "--size", "40x56", "--decoder", "pyav"])
    assert result.exit_code == 0, result.output
    source = ViewSource.open(str(store), "latest", view=ViewConfig(height=40, width=56))
    assert source.manifest.config.height == 40 and source.manifest.num_steps > 0
