"""``actionreel report`` and ``actionreel view``: pictures of a version, as HTML pages and a Rerun recording.

    actionreel report latest --store STORE --out report.html [--diff v1]
    actionreel view latest --store STORE --out viewer/ [--where kind=synthetic] [--id EPISODE] [--limit 50]
    actionreel view latest --store STORE --id EPISODE --rerun episode.rrd

Only typer is imported here; plotly, PyAV, pyarrow and rerun load inside the commands so ``--help``
and argument errors stay fast.
"""

from __future__ import annotations

import os

import typer

from jobs.cliutil import (
    Outcome,
    UserError,
    command,
    echo,
    json_mode,
    parse_storage_options,
    require_store,
    storage_options_option,
    store_option,
)

VERSION = typer.Argument("latest", help="Version id, id prefix or ref")
WHERE = typer.Option(None, "--where", help="Filter KEY=VALUE (repeatable), as in versions select")
IDS = typer.Option(None, "--id", help="Episode id (repeatable)")


def _open_store(store: str, storage_options: str | None):
    """The store, or a one-line error when the options are not JSON or no store is there."""
    from pipeline.store.episodes import EpisodeStore

    options = parse_storage_options(storage_options)
    require_store(store, options)
    opened = EpisodeStore(store, options or None)
    if not opened.fs.exists(opened.objects.abspath("versions")):
        raise UserError(f"no episode store at {store} (it has no versions/ folder): ingest into it first")
    return opened


@command
def report(name: str = VERSION, store: str = store_option(), storage_options: str = storage_options_option(),
           out: str = typer.Option("report.html", "--out", "-o", help="HTML file to write"),
           diff: str = typer.Option(None, "--diff", help="Also show what changed since this version or ref"),
           sheet_episodes: int = typer.Option(4, "--sheet-episodes", min=0,
                                              help="Episodes per dataset on the camera contact sheet"),
           sheet_frames: int = typer.Option(6, "--sheet-frames", min=1, help="Thumbnails per episode and camera"),
           ) -> Outcome:
    """Write one self-contained HTML report of a version (works offline; open it in any browser)."""
    import time

    from pipeline.progress import JobProgress, terminal_progress
    from pipeline.stats import StatsFormatError
    from pipeline.store.versions import VersionError
    from pipeline.video import VideoError
    from pipeline.viz.report import ReportOptions, write_report

    if os.path.isdir(out):
        example = os.path.join(out, "report.html")
        raise UserError(f"--out {out} is a folder: name the HTML file to write, e.g. {example}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UserError(f"--out {out}: folder {parent} does not exist")
    opened = _open_store(store, storage_options)
    started = time.perf_counter()
    options = ReportOptions(sheet_episodes=sheet_episodes, sheet_frames=sheet_frames)
    try:
        with JobProgress("report", 0, enabled=terminal_progress() and not json_mode(), unit="thumbnails",
                         item="sections") as bar:
            size = write_report(opened, out, name, diff, options, bar)
    except (VersionError, StatsFormatError, VideoError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    seconds = time.perf_counter() - started
    echo(f"report: {out} ({size / 1e6:.1f} MB, {seconds:.1f} s)")
    return Outcome({"report": os.path.abspath(out), "bytes": size, "seconds": round(seconds, 2), "version": name,
                    "diff": diff})


@command
def view(name: str = VERSION, store: str = store_option(), storage_options: str = storage_options_option(),
         out: str = typer.Option(None, "--out", "-o", help="Folder to write index.html and the episode pages to "
                                 "(default: viewer, or none with --rerun)"),
         where: list[str] = WHERE, episode: list[str] = IDS,
         limit: int = typer.Option(100, "--limit", min=1, help="Most episode pages (or recorded episodes) written"),
         rerun: str = typer.Option(None, "--rerun", help="Also write a Rerun recording (.rrd) of the episodes"),
         ) -> Outcome:
    """Write an episode viewer (videos, state/action/reward plots, lineage) and an index page to browse it."""
    from jobs.versions import parse_where

    query = parse_where(where)
    if rerun and not rerun.endswith(".rrd"):
        raise UserError(f"--rerun {rerun}: a Rerun recording file ends in .rrd")
    if rerun:
        _rerun_module()
    out = out or (None if rerun else "viewer")
    if out and os.path.isfile(out):
        raise UserError(f"--out {out} is a file: name a folder")
    opened = _open_store(store, storage_options)
    return Outcome(_write_view(opened, name, out, query, tuple(episode or ()), limit, rerun))


def _rerun_module() -> None:
    try:
        import rerun  # noqa: F401
    except ImportError:
        raise UserError("--rerun needs rerun-sdk: pip install 'actionreel[rerun]'") from None


def _write_view(opened, name: str, out: str | None, query, episodes: tuple[str, ...], limit: int,
                rerun: str | None) -> dict:
    from pipeline.store.catalog import CatalogQuery, read_catalog_table
    from pipeline.store.versions import VersionError, resolve
    from pipeline.video import VideoError
    from pipeline.viz.viewer import ViewerOptions, write_rerun, write_viewer
    from schemas import table_to_metas

    outcome: dict = {"version": name}
    try:
        if out:
            result = write_viewer(opened, out, name, query, episodes, ViewerOptions(limit=limit))
            echo(f"viewer: {result.index} ({len(result.pages)} episode pages of {result.listed} episodes)")
            outcome |= {"index": os.path.abspath(result.index), "pages": len(result.pages), "listed": result.listed}
        if rerun:
            _, manifest = resolve(opened, name)
            if episodes:
                query = CatalogQuery(**{**query.__dict__, "episode_ids": episodes})
            metas = sorted(table_to_metas(read_catalog_table(opened, manifest, query=query)),
                           key=lambda m: m.episode_id)[:limit]
            if not metas:
                raise ValueError("no episode matches: nothing to record")
            images = write_rerun(opened, rerun, metas)
            echo(f"rerun: {rerun} ({len(metas)} episodes, {images} images); open it with: rerun {rerun}")
            outcome |= {"rerun": os.path.abspath(rerun), "rerun_episodes": len(metas), "rerun_images": images}
    except (VersionError, VideoError, ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    return outcome


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``view`` to the ``actionreel`` command line."""
    app.command("report")(report)
    app.command("view")(view)
