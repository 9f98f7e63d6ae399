"""The ``actionreel`` command line.

Every command module imports the pipeline (torch, Ray, PyAV, OpenCV, Arrow) inside its command
functions, so ``--help`` and argument errors answer at once. Exit codes: docs/cli.md.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from jobs import analytics as analytics_job
from jobs import augment as augment_job
from jobs import choices
from jobs import demo as demo_job
from jobs import ingest as ingest_job
from jobs import shard as shard_job
from jobs import stats as stats_job
from jobs import versions as versions_job
from jobs.cliutil import (
    CONTEXT,
    DEBUG_ENV,
    EXIT_USAGE,
    STATE,
    Outcome,
    choice,
    command,
    echo,
    error_line,
    exit_process,
    json_mode,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("actionreel")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"actionreel {_version()}")
        raise typer.Exit(0)


app = typer.Typer(no_args_is_help=True, add_completion=False, context_settings=CONTEXT,
                  pretty_exceptions_enable=False, help="ActionReel: robot data -> versioned shards -> loaders")


@app.callback()
def root(debug: bool = typer.Option(False, "--debug", help=f"Show the traceback of an error (or {DEBUG_ENV}=1)"),
         version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                      help="Print the version and exit")) -> None:
    """ActionReel: robot data -> versioned shards -> loaders. Exit codes: 0 done, 1 failed, 2 usage or
    input error, 3 done with quarantined episodes (--strict)."""
    STATE.debug = debug


app.command("ingest", context_settings=CONTEXT)(ingest_job.main)
app.command("shard", context_settings=CONTEXT)(shard_job.main)
app.command("views", context_settings=CONTEXT)(shard_job.views_cmd)
app.command("demo", context_settings=CONTEXT)(demo_job.main)
app.add_typer(versions_job.app, name="versions")
app.add_typer(augment_job.app, name="augment")
app.add_typer(stats_job.app, name="stats")
app.add_typer(analytics_job.app, name="analytics")
__import__("jobs.report", fromlist=["register"]).register(app)  # report, view (jobs/report.py)


@app.command("samples", context_settings=CONTEXT)
@command
def samples(
    out: str = typer.Argument(..., help="Folder to create"),
    episodes: int = typer.Option(12, "--episodes", min=1),
    layout: str = typer.Option("v3.0", "--layout", help="v3.0 or v2.1"),
    codec: str = typer.Option("libx264", "--codec", help="libx264 (H.264), libx265 (HEVC) or libsvtav1 (AV1)"),
    seed: int = typer.Option(0, "--seed"),
) -> Outcome:
    """Write a realistic LeRobot-layout sample dataset (no LeRobot needed)."""
    choice(layout, choices.SAMPLE_LAYOUTS, "--layout")
    choice(codec, choices.SAMPLE_CODECS, "--codec")
    from pipeline.samples import SampleSpec, write_sample_dataset

    path = write_sample_dataset(out, SampleSpec(num_episodes=episodes, layout=layout, codec=codec, seed=seed))
    echo(f"wrote {episodes} episodes ({layout}, {codec}) to {path}")
    return Outcome({"path": str(path), "episodes": episodes, "layout": layout, "codec": codec})


@app.command("formats", context_settings=CONTEXT)
@command
def formats() -> Outcome:
    """List the source formats ActionReel reads."""
    from rich.console import Console
    from rich.table import Table

    from connectors import formats as supported_formats

    found = supported_formats()
    if not json_mode():
        table = Table("format", "reads")
        for name, description in found.items():
            table.add_row(name, description)
        Console().print(table)
    return Outcome({"formats": found})


def main(argv: list[str] | None = None) -> int:
    """Run the command line; usage errors are one line on stderr and exit 2. Returns the exit code.

    While it runs, Ray's native output goes to its log file (jobs.raycluster). A caller that passes
    ``argv`` (a script or test running commands in its own process) gets its stderr back afterwards;
    the ``actionreel`` process keeps it redirected so that Ray's shutdown at exit stays quiet too."""
    STATE.command_line = True
    try:
        return _run(argv)
    finally:
        STATE.command_line = False
        raycluster = sys.modules.get("jobs.raycluster")
        if argv is not None and raycluster is not None:
            raycluster.restore_native_stderr()


def _run(argv: list[str] | None) -> int:
    group = typer.main.get_command(app)
    ray_calls = _ray_calls()
    try:
        result = group.main(args=argv, prog_name="actionreel", standalone_mode=False)
    except TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())  # a bare group: its help, as `--help` would print
            return EXIT_USAGE
        hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        typer.echo(error_line(exc).rstrip(".") + hint, err=True)
        return EXIT_USAGE
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    _name_ray_log(ray_calls)
    return result if isinstance(result, int) else 0


def _ray_calls() -> int:
    raycluster = sys.modules.get("jobs.raycluster")  # not imported for help and argument errors
    return raycluster.init_calls() if raycluster is not None else 0


def _name_ray_log(calls_before: int) -> None:
    """The last line names the file holding Ray's own messages, when this run used Ray."""
    raycluster = sys.modules.get("jobs.raycluster")
    if raycluster is not None and raycluster.init_calls() > calls_before and raycluster.ray_started():
        typer.echo(f"Ray's messages: {raycluster.ray_log_path()}", err=True)


def entry() -> None:
    """The ``actionreel`` console script: ``main``, then the process ends by ``exit_process``."""
    exit_process(main())


if __name__ == "__main__":
    entry()
