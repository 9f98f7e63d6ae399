"""``actionreel stats``: statistics of a version for trainers' own loaders (openpi's norm_stats.json)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from jobs.cliutil import CONTEXT, Outcome, UserError, command, echo
from jobs.versions import OPTIONS, STORE, WHERE, _resolve, _store, parse_where

if TYPE_CHECKING:
    from pipeline.export.norm_stats import FeatureSlice

app = typer.Typer(no_args_is_help=True, add_completion=False, context_settings=CONTEXT,
                  help="Statistics of a version: export openpi's norm_stats.json")

KEYS = typer.Option(None, "--key", help="OPENPI_KEY=FEATURE (repeatable), e.g. state=state\\[0:8]")


def _keys(items: list[str] | None) -> dict[str, FeatureSlice]:
    """``["state=state[0:8]", "actions=action"]`` -> openpi key -> stored feature (defaults kept)."""
    from pipeline.export.norm_stats import FeatureSlice

    keys = {"state": FeatureSlice("state"), "actions": FeatureSlice("action")}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--key {item!r}: expected OPENPI_KEY=FEATURE, e.g. state=state[0:8]")
        keys[key.strip()] = FeatureSlice.parse(value)
    return keys


@app.command("export")
@command
def export_cmd(name: str = typer.Argument("latest", help="Version id or ref"),
               assets_dir: str = typer.Argument(..., help="openpi assets folder: <dir>/<asset id>/norm_stats.json"),
               store: str = STORE, storage_options: str = OPTIONS,
               horizon: int = typer.Option(50, "--horizon", help="Action horizon H (the model's action_horizon)"),
               delta_mask: str = typer.Option(None, "--delta-mask",
                                              help="DeltaActions mask as make_bool_mask counts, e.g. 6,-1,6,-1"),
               key: list[str] = KEYS,
               batch_size: int = typer.Option(None, "--batch-size",
                                              help="Drop the trailing partial batch as compute_norm_stats does"),
               embodiment: str = typer.Option(None, "--embodiment", help="Only this embodiment"),
               asset_id: str = typer.Option(None, "--asset-id", help="Folder name (default: the embodiment)"),
               where: list[str] = WHERE) -> Outcome:
    """Write openpi's norm_stats.json per embodiment from a version's steps (no video is decoded)."""
    from pipeline.export.norm_stats import NormStatsConfig, export_norm_stats, parse_mask

    try:
        config = NormStatsConfig(action_horizon=horizon, delta_mask=parse_mask(delta_mask) if delta_mask else None,
                                 keys=_keys(key), batch_size=batch_size)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    s = _store(store, storage_options)
    query = parse_where(where)
    _, manifest = _resolve(s, name)
    report = export_norm_stats(s, manifest, assets_dir, config, embodiment=embodiment, asset_id=asset_id, query=query)
    for group, path in report.files.items():
        echo(f"{group}: {report.steps[group]} samples (chunks of {horizon}) -> {path}")
    return Outcome({"files": dict(report.files), "samples": dict(report.steps), "horizon": horizon})
