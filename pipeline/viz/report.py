"""``actionreel report``: one self-contained HTML page that shows what a version holds.

Everything comes from the store: the catalog (counts, lengths, lineage), the version's stats object
(per-dimension statistics and, from its quantile sketch, histograms), the job reports kept beside
the version and its ancestors (quarantine, warnings) and a few decoded frames (contact sheets,
lineage pairs). The page needs no network: plotly's bundle is inlined once and thumbnails are
base64 JPEGs. The numbers shown are also embedded as JSON (``<script id="report-data">``) at full
precision, so they can be checked against the store exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from pipeline.progress import JobProgress
from pipeline.report import job_reports_of
from pipeline.stats import FeatureStats, QuantileSketch, StatsSet
from pipeline.store.catalog import scan_catalog
from pipeline.store.episodes import EpisodeStore
from pipeline.store.refs import list_refs
from pipeline.store.versions import VersionManifest, load_stats, read_manifest, resolve
from pipeline.video import VideoError
from pipeline.viz import html as h
from pipeline.viz.frames import evenly_spaced, thumbnails
from schemas import CameraInfo

_COLUMNS = ["episode_id", "dataset", "source_key", "embodiment", "kind", "split", "num_steps", "duration_ns",
            "control_fps_num", "control_fps_den", "success", "action_source", "tasks", "lineage", "cameras",
            "state_names", "action_names"]
GROUPINGS = ("dataset", "embodiment", "kind", "split")
_NS_PER_S = 1_000_000_000
_ANCESTORS = 50


@dataclass(frozen=True)
class ReportOptions:
    sheet_episodes: int = 4  # episodes per dataset on its contact sheet
    sheet_frames: int = 6  # evenly spaced thumbnails per episode and camera
    lineage_pairs: int = 24  # synthetic episodes shown next to their parent (every one is in the table)
    thumb_height: int = 72
    histogram_bins: int = 30
    diff_ids: int = 200  # episode ids listed per added/removed/changed


@dataclass
class Episode:
    """The catalog columns the report reads, per live episode."""

    row: dict
    seconds: float = 0.0

    @property
    def id(self) -> str:
        return self.row["episode_id"]


@dataclass
class VersionData:
    version_id: str
    manifest: VersionManifest
    refs: list[str]
    episodes: list[Episode]
    stats: StatsSet
    reports: list[tuple[str, dict]] = field(default_factory=list)  # (version id, job report) newest first


def episode_seconds(row: dict) -> float:
    duration = int(row["duration_ns"] or 0)
    if not duration:
        duration = int(row["num_steps"]) * _NS_PER_S * int(row["control_fps_den"]) // int(row["control_fps_num"])
    return duration / _NS_PER_S


def load_version(store: EpisodeStore, name: str) -> VersionData:
    version_id, manifest = resolve(store, name)
    episodes = []
    for batch in scan_catalog(store, manifest, _COLUMNS):
        episodes.extend(Episode(row, episode_seconds(row)) for row in batch.to_pylist())
    episodes.sort(key=lambda e: e.id)
    refs = sorted(n for n, v in list_refs(store.objects).items() if v == version_id)
    return VersionData(version_id, manifest, refs, episodes, load_stats(store, manifest),
                       lineage_reports(store, version_id, manifest))


def lineage_reports(store: EpisodeStore, version_id: str, manifest: VersionManifest) -> list[tuple[str, dict]]:
    """Job reports of the version and of its ancestors (an augment's child keeps its parent's quarantine)."""
    out: list[tuple[str, dict]] = []
    current: str | None = version_id
    for _ in range(_ANCESTORS):
        if current is None:
            break
        out.extend((current, report) for report in job_reports_of(store.objects, current))
        current = manifest.parent if current == version_id else read_manifest(store, current).parent
    return out


# ---------------------------------------------------------------- numbers


def totals_by(episodes: list[Episode], column: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for episode in episodes:
        entry = out.setdefault(str(episode.row[column]), {"episodes": 0, "steps": 0, "seconds": 0.0})
        entry["episodes"] += 1
        entry["steps"] += int(episode.row["num_steps"])
        entry["seconds"] += episode.seconds
    return dict(sorted(out.items()))


def dimension_names(episodes: list[Episode], embodiment: str, feature: str, dims: int) -> list[str]:
    column = "state_names" if feature == "state" else "action_names"
    for episode in episodes:
        if episode.row["embodiment"] == embodiment and len(episode.row[column] or []) == dims:
            return list(episode.row[column])
    return [f"{feature}[{i}]" for i in range(dims)]


def stats_numbers(data: VersionData) -> dict:
    """embodiment -> feature -> names and the summary of the version's stats object, unrounded."""
    out: dict[str, dict] = {}
    for group, features in sorted(data.stats.groups.items()):
        for feature, stats in sorted(features.items()):
            summary = stats.summary()
            out.setdefault(group, {})[feature] = {
                "names": dimension_names(data.episodes, group, feature, stats.dims), **summary}
    return out


def quarantine_rows(data: VersionData) -> list[dict]:
    return [{"version": version, "job": report.get("job", ""), "file": q.get("file", ""),
             "episode": q.get("episode_id", ""), "field": q.get("field", ""), "reason": q.get("reason", ""),
             "source_key": q.get("source_key", "")}
            for version, report in data.reports for q in report.get("quarantined", [])]


def warning_rows(data: VersionData) -> list[dict]:
    rows = [{"version": version, "job": report.get("job", ""), "warning": w}
            for version, report in data.reports for w in report.get("warnings", [])]
    rows += [{"version": version, "job": report.get("job", ""),
              "warning": f"missing at the source: {m.get('source_key', '')}: {m.get('reason', '')}"}
             for version, report in data.reports for m in report.get("missing", [])]
    rows += [{"version": version, "job": report.get("job", ""),
              "warning": f"duplicate kept once: {d.get('source_key', '')}: {d.get('reason', '')}"}
             for version, report in data.reports for d in report.get("duplicates", [])]
    return rows


def lineage_rows(data: VersionData) -> list[dict]:
    """Every episode with a parent: the parent, generator, prompt and where its actions come from."""
    rows = []
    for episode in data.episodes:
        lineage = episode.row["lineage"] or {}
        if not lineage.get("parent_episode_id") and episode.row["kind"] != "synthetic":
            continue
        generator = lineage.get("generator") or {}
        rows.append({"episode_id": episode.id, "kind": episode.row["kind"],
                     "parent": lineage.get("parent_episode_id") or "", "root": lineage.get("root_episode_id") or "",
                     "generator": generator.get("model_id") or "", "task": generator.get("task") or "",
                     "prompt": lineage.get("prompt") or "", "action_source": episode.row["action_source"] or ""})
    return rows


def numbers(data: VersionData, diff: dict | None = None) -> dict:
    """Everything the page shows as numbers or rows, unrounded (the page's JSON block)."""
    kinds = Counter(e.row["kind"] for e in data.episodes)
    return {
        "version": data.version_id, "refs": data.refs, "parent": data.manifest.parent,
        "producer": data.manifest.producer,
        "totals": {"episodes": len(data.episodes), "steps": sum(int(e.row["num_steps"]) for e in data.episodes),
                   "seconds": sum(e.seconds for e in data.episodes)},
        "by": {column: totals_by(data.episodes, column) for column in GROUPINGS},
        "stats": stats_numbers(data),
        "quarantine": quarantine_rows(data),
        "warnings": warning_rows(data),
        "lineage": {"real": len(data.episodes) - kinds.get("synthetic", 0), "synthetic": kinds.get("synthetic", 0),
                    "rows": lineage_rows(data)},
        "diff": diff,
    }


def diff_numbers(store: EpisodeStore, other: str, data: VersionData) -> dict:
    """What this version changed relative to ``other`` (``pipeline.store.history.diff_versions``)."""
    from pipeline.store.history import diff_versions

    other_id, other_manifest = resolve(store, other)
    return diff_versions(store, other_id, other_manifest, data.version_id, data.manifest).to_json()


# ---------------------------------------------------------------- pictures


def histogram_of(stats: FeatureStats, dim: int, bins: int) -> tuple[list[float], list[int]] | None:
    """Bin centres and counts of one dimension, from the quantile sketch (each kept value stands for 2**level)."""
    sketch = stats.sketch
    if not isinstance(sketch, QuantileSketch) or not sketch.levels or stats.count == 0:
        return None
    values = np.concatenate([level[:, dim] for level in sketch.levels])
    weights = np.concatenate([np.full(level.shape[0], 1 << lv, np.int64) for lv, level in enumerate(sketch.levels)])
    low, high = float(stats.min[dim]), float(stats.max[dim])
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    if high <= low:
        high = low + 1e-9
    counts, edges = np.histogram(values, bins=bins, range=(low, high), weights=weights)
    return ((edges[:-1] + edges[1:]) / 2).tolist(), counts.astype(np.int64).tolist()


def _bars(title: str, labels: list[str], values: list[float], div_id: str, axis: str = "episodes") -> str:
    import plotly.graph_objects as go

    figure = go.Figure(go.Bar(x=labels, y=values, marker_color="#3b6fd8", text=values, textposition="auto"))
    figure.update_layout(title=title, yaxis_title=axis)
    return f'<div class="plot">{h.figure_div(figure, div_id, 280)}</div>'


def totals_section(nums: dict) -> str:
    totals = nums["totals"]
    parts = [f'<p><span class="tag">{totals["episodes"]:,} episodes</span> <span class="tag">{totals["steps"]:,} '
             f'steps</span> <span class="tag">{totals["seconds"] / 3600:.3f} hours</span></p><div class="grid">']
    for column in GROUPINGS:
        groups = nums["by"][column]
        parts.append(_bars(f"episodes per {column}", list(groups), [g["episodes"] for g in groups.values()],
                           f"totals-{column}").removesuffix("</div>"))
        parts.append(h.table([column, "episodes", "steps", "hours"],
                             [[k, g["episodes"], g["steps"], g["seconds"] / 3600] for k, g in groups.items()],
                             [False, True, True, True], table_id=f"table-{column}") + "</div>")
    parts.append("</div>")
    return _section("totals", "Totals", "".join(parts))


def lengths_section(data: VersionData) -> str:
    import plotly.graph_objects as go

    out = ['<div class="grid">']
    for what, values, axis in (("episode length", [int(e.row["num_steps"]) for e in data.episodes], "steps"),
                               ("episode duration", [e.seconds for e in data.episodes], "seconds")):
        figure = go.Figure()
        for dataset in sorted({e.row["dataset"] for e in data.episodes}):
            picked = [v for v, e in zip(values, data.episodes, strict=True) if e.row["dataset"] == dataset]
            figure.add_trace(go.Histogram(x=picked, name=dataset, nbinsx=30, opacity=0.8))
        figure.update_layout(title=f"{what} ({axis})", barmode="stack", xaxis_title=axis, yaxis_title="episodes")
        out.append(f'<div class="plot">{h.figure_div(figure, "hist-" + what.split()[-1], 300)}</div>')
    out.append("</div>")
    return _section("lengths", "Episode lengths and durations", "".join(out))


def stats_section(data: VersionData, nums: dict, options: ReportOptions) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not nums["stats"]:
        return _section("stats", "State and action statistics", '<p class="muted">no stats in this version</p>')
    out = []
    for group, features in nums["stats"].items():
        for feature, summary in features.items():
            out.append(f"<h3>{h.esc(group)} · {h.esc(feature)} <span class='muted'>({summary['count']:,} rows)</span>"
                       "</h3>")
            rows = [[i, name, *(summary[k][i] for k in ("mean", "std", "q01", "q99", "min", "max"))]
                    for i, name in enumerate(summary["names"])]
            out.append(h.table(["dim", "name", "mean", "std", "q01", "q99", "min", "max"], rows,
                               [True, False, True, True, True, True, True, True],
                               table_id=f"stats-{group}-{feature}"))
            stats = data.stats.groups[group][feature]
            columns = min(4, stats.dims)
            figure = make_subplots(rows=-(-stats.dims // columns), cols=columns, subplot_titles=summary["names"],
                                   vertical_spacing=min(0.08, 0.5 / max(1, stats.dims // columns)))
            for dim in range(stats.dims):
                histogram = histogram_of(stats, dim, options.histogram_bins)
                if histogram is None:
                    continue
                figure.add_trace(go.Bar(x=histogram[0], y=histogram[1], marker_color="#3b6fd8", showlegend=False),
                                 row=dim // columns + 1, col=dim % columns + 1)
            figure.update_layout(title=f"{group} {feature}: distribution per dimension", bargap=0)
            figure.update_annotations(font_size=11)
            out.append(h.figure_div(figure, f"dist-{group}-{feature}", 150 * (-(-stats.dims // columns)) + 60))
    return _section("stats", "State and action statistics", "".join(out))


def contact_sheets(store: EpisodeStore, data: VersionData, options: ReportOptions) -> str:
    out = []
    for dataset in sorted({e.row["dataset"] for e in data.episodes}):
        picked = [e for e in data.episodes if e.row["dataset"] == dataset][: options.sheet_episodes]
        out.append(f'<h3>{h.esc(dataset)}</h3><table class="sheet">')
        for episode in picked:
            for camera in cameras_of(episode.row):
                frames = evenly_spaced(options.sheet_frames, camera.num_frames)
                try:
                    uris = thumbnails(store, camera, frames, options.thumb_height)
                except (VideoError, OSError, ValueError) as exc:  # one unreadable video must not hide the rest
                    images = f'<span class="muted">no thumbnails: {h.esc(exc)}</span>'
                else:
                    images = "".join(f'<img alt="{h.esc(episode.id)} {h.esc(camera.name)} frame {f}" src="{uri}">'
                                     for f, uri in zip(frames, uris, strict=True))
                out.append(f"<tr><td><code>{h.esc(episode.id[:12])}</code><br>{h.esc(camera.name)}<br>"
                           f'<span class="muted">{h.esc(camera.codec)} {camera.width}x{camera.height}</span></td>'
                           f"<td>{images}</td></tr>")
        out.append("</table>")
    return _section("cameras", "Camera contact sheets", "".join(out) or '<p class="muted">no episodes</p>')


def cameras_of(row: dict) -> list[CameraInfo]:
    """The cameras of a catalog row (only the camera column is needed to find and decode its frames)."""
    out = []
    for cam in row["cameras"] or []:
        cam = dict(cam)
        cam["fps"] = Fraction(cam.pop("fps_num"), cam.pop("fps_den"))
        cam["channel_order"] = cam.get("channel_order") or "rgb"
        out.append(CameraInfo(**cam))
    return out


def reports_section(nums: dict) -> str:
    quarantine = nums["quarantine"]
    warnings = nums["warnings"]
    body = [f"<h3>quarantined episodes ({len(quarantine)})</h3>"]
    body.append(h.table(["version", "job", "file", "episode", "field", "reason"],
                        [[q["version"][:12], q["job"], q["file"], q["episode"], q["field"], q["reason"]]
                         for q in quarantine], table_id="quarantine") if quarantine
                else '<p class="muted">none: every episode the jobs read was stored</p>')
    body.append(f"<h3>warnings ({len(warnings)})</h3>")
    body.append(h.table(["version", "job", "warning"], [[w["version"][:12], w["job"], w["warning"]] for w in warnings],
                        table_id="warnings") if warnings else '<p class="muted">none</p>')
    return _section("quarantine", "Quarantine and warnings (job reports)", "".join(body))


def lineage_section(store: EpisodeStore, data: VersionData, nums: dict, options: ReportOptions) -> str:
    import plotly.graph_objects as go

    lineage = nums["lineage"]
    figure = go.Figure(go.Bar(x=["real", "synthetic"], y=[lineage["real"], lineage["synthetic"]],
                              marker_color=["#3b9d5d", "#c9682b"], text=[lineage["real"], lineage["synthetic"]]))
    figure.update_layout(title="real vs synthetic episodes", yaxis_title="episodes")
    body = [f'<div class="grid"><div class="plot">{h.figure_div(figure, "lineage-counts", 260)}</div></div>']
    rows = lineage["rows"]
    if rows:
        body.append(h.table(["episode", "kind", "parent", "generator", "task", "prompt", "action source"],
                            [[r["episode_id"], r["kind"], r["parent"], r["generator"], r["task"], r["prompt"],
                              r["action_source"]] for r in rows], table_id="lineage"))
        body.append(_pairs(store, data, rows[: options.lineage_pairs], options))
    return _section("lineage", "Lineage", "".join(body))


def _pairs(store: EpisodeStore, data: VersionData, rows: list[dict], options: ReportOptions) -> str:
    """Each synthetic episode's first camera beside the same camera of its parent, at the same steps."""
    by_id = {e.id: e for e in data.episodes}
    out = ["<h3>synthetic episodes beside their parents</h3><table class='pair'>"]
    for row in rows:
        child, parent = by_id[row["episode_id"]], by_id.get(row["parent"])
        if parent is None or not child.row["cameras"]:
            continue
        camera = cameras_of(child.row)[0]
        twin = next((c for c in cameras_of(parent.row) if c.name == camera.name), None)
        if twin is None:
            continue
        frames = evenly_spaced(3, min(camera.num_frames, twin.num_frames))
        try:
            child_uris = thumbnails(store, camera, frames, options.thumb_height)
            parent_uris = thumbnails(store, twin, frames, options.thumb_height)
        except (VideoError, OSError, ValueError) as exc:
            out.append(f'<tr><td colspan="3" class="muted">{h.esc(child.id)}: no thumbnails: {h.esc(exc)}</td></tr>')
            continue
        strip = "".join(f'<img alt="child frame {f}" src="{u}">' for f, u in zip(frames, child_uris, strict=True))
        parent_strip = "".join(f'<img alt="parent frame {f}" src="{u}">'
                               for f, u in zip(frames, parent_uris, strict=True))
        out.append(f"<tr><td>parent <code>{h.esc(parent.id[:12])}</code><br>{parent_strip}</td>"
                   f"<td>synthetic <code>{h.esc(child.id[:12])}</code><br>{strip}</td>"
                   f"<td>{h.esc(row['generator'])}<br><i>{h.esc(row['prompt'])}</i><br>"
                   f"actions: {h.esc(row['action_source'])}</td></tr>")
    out.append("</table>")
    return "".join(out)


def diff_section(diff: dict, options: ReportOptions) -> str:
    import plotly.graph_objects as go

    labels = [f"{g['embodiment']}/{g['kind']}" for g in diff["groups"]]
    figure = go.Figure([go.Bar(name=what, x=labels, y=[g[what]["episodes"] for g in diff["groups"]])
                        for what in ("added", "removed", "changed")])
    figure.update_layout(title="episodes changed per embodiment/kind", barmode="group")
    body = [f"<p>from <code>{h.esc(diff['a'][:12])}</code> to <code>{h.esc(diff['b'][:12])}</code>: "
            f"<span class='tag ok'>+{len(diff['added'])} added</span> "
            f"<span class='tag bad'>-{len(diff['removed'])} removed</span> "
            f"<span class='tag'>~{len(diff['changed'])} changed</span> "
            f"<span class='tag'>={diff['unchanged']} unchanged</span>; bytes +{diff['bytes_added']:,} "
            f"-{diff['bytes_removed']:,}</p>", f'<div class="plot">{h.figure_div(figure, "diff-groups", 280)}</div>']
    rows = [[g["embodiment"], g["kind"], *(g[w][k] for w in ("added", "removed", "changed")
                                           for k in ("episodes", "steps"))] for g in diff["groups"]]
    body.append(h.table(["embodiment", "kind", "added", "added steps", "removed", "removed steps", "changed",
                         "changed steps"], rows, [False, False, *[True] * 6], table_id="diff"))
    for what in ("added", "removed", "changed"):
        ids = diff[what]
        if ids:
            more = f" … and {len(ids) - options.diff_ids} more" if len(ids) > options.diff_ids else ""
            body.append(f"<h3>{what} ({len(ids)})</h3><p><code>"
                        + " ".join(h.esc(i) for i in ids[: options.diff_ids]) + f"</code>{h.esc(more)}</p>")
    return _section("diff", "What this version changed", "".join(body))


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{h.esc(title)}</h2>{body}</section>'


# ---------------------------------------------------------------- the page


def render_report(store: EpisodeStore, name: str = "latest", diff_against: str | None = None,
                  options: ReportOptions | None = None, progress: JobProgress | None = None) -> str:
    """The whole HTML page of version ``name`` (ref, id or id prefix); ``progress`` advances per
    section, counting the thumbnails decoded (the slow part on large versions)."""
    options = options or ReportOptions()
    bar = progress or JobProgress("report", 0, enabled=False)
    data = load_version(store, name)
    diff = diff_numbers(store, diff_against, data) if diff_against else None
    nums = numbers(data, diff)
    stages = [lambda: totals_section(nums), lambda: contact_sheets(store, data, options), lambda: lengths_section(data),
              lambda: stats_section(data, nums, options), lambda: reports_section(nums),
              lambda: lineage_section(store, data, nums, options)]
    if diff is not None:
        stages.insert(1, lambda: diff_section(diff, options))
    bar.start(len(stages))
    sections = []
    for stage in stages:
        sections.append(stage())
        bar.advance(1, sections[-1].count("<img "))
    subtitle = (f"version {data.version_id}" + (f" · refs {', '.join(data.refs)}" if data.refs else "")
                + f" · made by {data.manifest.producer.get('job', '?')} · {store.root}")
    return h.page("ActionReel dataset report", subtitle, "".join(sections) + h.data_block("report-data", nums))


def write_report(store: EpisodeStore, out: str, name: str = "latest", diff_against: str | None = None,
                 options: ReportOptions | None = None, progress: JobProgress | None = None) -> int:
    """Write the page to ``out``; returns its size in bytes."""
    text = render_report(store, name, diff_against, options, progress).encode("utf-8")
    with open(out, "wb") as handle:
        handle.write(text)
    return len(text)
