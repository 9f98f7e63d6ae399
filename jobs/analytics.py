"""``actionreel analytics``: dataset-wide questions answered from the store's Parquet with dask
(pipeline.analytics), without loading episodes into memory.

    actionreel analytics where --store STORE --where "max(action[6]) < 0.5"
    actionreel analytics moments --store STORE --feature action
"""

from __future__ import annotations

import typer

from jobs.cliutil import (
    CONTEXT,
    Outcome,
    choice,
    command,
    echo,
    parse_storage_options,
    require_store,
    storage_options_option,
    store_option,
)

app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT,
                  help="Dataset-wide step queries and statistics (dask over Parquet)")


def _options(store: str, storage_options: str | None) -> dict:
    options = parse_storage_options(storage_options)
    require_store(store, options)
    return options


@app.command("where")
@command
def where(store: str = store_option(), storage_options: str = storage_options_option(),
          where: str = typer.Option(..., "--where"), version: str = typer.Option("latest", "--version")) -> Outcome:
    """Episodes for which every term holds, e.g. --where "max(action[6]) < 0.5" (gripper never closes)."""
    from pipeline.analytics import episodes_where

    found = episodes_where(store, where, version, storage_options=_options(store, storage_options) or None)
    echo(found.to_csv(index=False).rstrip("\n"))
    echo(f"{len(found)} episodes", err=True)
    return Outcome({"episodes": found.to_dict(orient="records"), "count": len(found)})


@app.command("moments")
@command
def moments(store: str = store_option(), storage_options: str = storage_options_option(),
            feature: str = typer.Option("action", "--feature", help="state | action"),
            version: str = typer.Option("latest", "--version")) -> Outcome:
    """Per embodiment and dimension: count, mean, std, min, max recomputed from every steps object."""
    from pipeline.analytics import step_moments

    choice(feature, ("state", "action"), "--feature")
    table = step_moments(store, feature, version, storage_options=_options(store, storage_options) or None)
    echo(table.to_csv(index=False).rstrip("\n"))
    return Outcome({"feature": feature, "moments": table.to_dict(orient="records")})
