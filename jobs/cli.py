"""The ``actionreel`` command line."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from connectors import formats as supported_formats
from jobs import augment as augment_job
from jobs import demo as demo_job
from jobs import ingest as ingest_job
from jobs import shard as shard_job
from jobs import versions as versions_job
from pipeline.samples import SampleSpec, write_sample_dataset

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="ActionReel: robot data -> versioned shards -> loaders")
app.command("ingest")(ingest_job.main)
app.command("shard")(shard_job.main)
app.command("demo")(demo_job.main)
app.add_typer(versions_job.app, name="versions")
app.add_typer(augment_job.app, name="augment")


@app.command("samples")
def samples(
    out: str = typer.Argument(..., help="Folder to create"),
    episodes: int = typer.Option(12, "--episodes", min=1),
    layout: str = typer.Option("v3.0", "--layout", help="v3.0 or v2.1"),
    codec: str = typer.Option("libx264", "--codec", help="libx264 (H.264) or libsvtav1 (AV1)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a realistic LeRobot-layout sample dataset (no LeRobot needed)."""
    path = write_sample_dataset(out, SampleSpec(num_episodes=episodes, layout=layout, codec=codec, seed=seed))
    typer.echo(f"wrote {episodes} episodes ({layout}, {codec}) to {path}")


@app.command("formats")
def formats() -> None:
    """List the source formats ActionReel reads."""
    table = Table("format", "reads")
    for name, description in supported_formats().items():
        table.add_row(name, description)
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
