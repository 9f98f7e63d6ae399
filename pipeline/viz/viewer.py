"""``actionreel view``: an episode viewer (videos, time series, instruction, lineage) and an index to browse.

One folder: ``index.html`` lists the episodes with filters (dataset, embodiment, kind, success) and
links to ``episodes/<name>.html``; each page plays every camera (``episodes/<name>/<camera>.mp4``,
the stored file when a browser plays it, else an H.264 preview, see ``pipeline.viz.frames``) beside
plotly plots of state, action and reward. A cursor on the plots follows the video's time and a click
on a plot seeks every video to that step: video time maps to steps through the episode's own
frame index (``frame_index[camera][step]``), not through wall-clock guesses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.store.catalog import CatalogQuery, read_catalog_table
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import resolve
from pipeline.viz import html as h
from pipeline.viz.frames import Preview, write_preview
from schemas import EpisodeMeta, StepArrays, safe_name, table_to_metas

PLOTLY_FILE = "plotly.min.js"  # one copy of the bundle beside index.html, shared by every episode page


@dataclass(frozen=True)
class ViewerOptions:
    limit: int = 100  # episode pages written (the index lists every matching episode)
    max_video_height: int = 480  # previews larger than this are scaled down


@dataclass
class ViewerResult:
    index: Path
    pages: dict[str, Path] = field(default_factory=dict)  # episode id -> page
    previews: list[Preview] = field(default_factory=list)
    listed: int = 0


def page_name(episode_id: str) -> str:
    """A file name for an episode id (ids are free text; the hash keeps two similar ids apart)."""
    return f"{safe_name(episode_id)[:80]}-{hashlib.sha256(episode_id.encode()).hexdigest()[:8]}"


def success_label(value: bool | None) -> str:
    return "unknown" if value is None else ("true" if value else "false")


# ---------------------------------------------------------------- one episode


def episode_numbers(meta: EpisodeMeta, steps: StepArrays) -> dict:
    """What the page's script needs: step times, per-camera frame of each step, the series."""
    stamps = np.asarray(steps.timestamp_ns, np.int64)
    seconds = ((stamps - stamps[0]) / 1e9).tolist() if stamps.size else []
    cameras = [{"name": c.name, "fps": float(c.fps), "frames": np.asarray(steps.frame_index[c.name]).tolist()
                if c.name in steps.frame_index else list(range(meta.num_steps)), "num_frames": c.num_frames}
               for c in meta.cameras]
    filled = steps.filled()
    reward = steps.reward
    return {"episode_id": meta.episode_id, "t": seconds, "cameras": cameras,
            "state": _series(filled.state, meta.state_names, "state"),
            "action": _series(filled.action, meta.action_names, "action"),
            "reward": None if reward is None or not np.isfinite(reward).any() else
            [None if not np.isfinite(v) else float(v) for v in reward]}


def _series(values: np.ndarray, names: list[str], feature: str) -> dict:
    array = np.asarray(values, np.float64)
    dims = array.shape[1] if array.ndim == 2 else 0
    labels = names if len(names) == dims else [f"{feature}[{i}]" for i in range(dims)]
    return {"names": labels, "values": [[None if not np.isfinite(v) else float(v) for v in array[:, d]]
                                        for d in range(dims)]}


def _plot(numbers: dict, feature: str, div_id: str) -> str:
    import plotly.graph_objects as go

    figure = go.Figure()
    if feature == "reward":
        figure.add_trace(go.Scatter(x=numbers["t"], y=numbers["reward"], mode="lines+markers", name="reward",
                                    marker_size=4))
    else:
        series = numbers[feature]
        for name, values in zip(series["names"], series["values"], strict=True):
            figure.add_trace(go.Scatter(x=numbers["t"], y=values, mode="lines", name=name))
    figure.update_layout(title=feature, hovermode="x", xaxis_title="seconds from the first step",
                         clickmode="event", legend={"font": {"size": 10}})
    return f'<div class="plot series">{h.figure_div(figure, div_id, 300)}</div>'


def episode_page(meta: EpisodeMeta, numbers: dict, videos: dict[str, tuple[str, Preview]],
                 links: dict[str, str]) -> str:
    """The HTML of one episode; ``videos``: camera -> (relative src, preview); ``links``: id -> page href."""
    facts = [("dataset", meta.dataset), ("embodiment", meta.embodiment), ("kind", meta.kind), ("split", meta.split),
             ("success", success_label(meta.success)), ("steps", meta.num_steps),
             ("control rate", f"{float(meta.control_fps):g} Hz"), ("action source", meta.action_source),
             ("source", f"{meta.source_uri} [{meta.source_key}]")]
    tasks = "".join(f"<p class='task'><b>{h.esc(t)}</b></p>" for t in meta.tasks) or "<p class='muted'>(no task)</p>"
    body = [f'<p><a href="../index.html">&larr; all episodes</a></p><section id="instruction"><h2>Instruction</h2>'
            f"{tasks}</section>", '<section><h2>Cameras</h2><div class="grid">']
    for name, (src, preview) in videos.items():
        note = "stored file" if preview.how == "stored" else f"H.264 preview of the stored {preview.codec} track"
        body.append(f'<figure><video class="cam" id="cam-{h.esc(name)}" data-camera="{h.esc(name)}" '
                    f'src="{h.esc(src)}" controls muted playsinline preload="auto" width="400"></video>'
                    f"<figcaption>{h.esc(name)} <span class='muted'>({h.esc(note)})</span></figcaption></figure>")
    body.append('</div><p>step <b id="step">0</b> · t = <b id="time">0.000</b> s '
                '<span class="muted">(click a plot to seek the videos)</span></p></section><section><h2>Series</h2>'
                '<div class="grid">')
    body.append(_plot(numbers, "state", "plot-state") if numbers["state"]["names"] else "")
    body.append(_plot(numbers, "action", "plot-action") if numbers["action"]["names"] else "")
    body.append(_plot(numbers, "reward", "plot-reward") if numbers["reward"] is not None else "")
    body.append(f"</div></section><section><h2>Episode</h2>{h.table(['field', 'value'], facts)}</section>")
    if meta.lineage is not None and (meta.lineage.parent_episode_id or meta.kind == "synthetic"):
        body.append(_lineage(meta, links))
    body.append(h.data_block("episode-data", numbers))
    return h.page(f"episode {meta.episode_id}", f"{meta.dataset} · {meta.embodiment} · {meta.kind}",
                  "".join(body), _EPISODE_SCRIPT, plotly=f"../{PLOTLY_FILE}")


def _lineage(meta: EpisodeMeta, links: dict[str, str]) -> str:
    lineage = meta.lineage
    parent = lineage.parent_episode_id
    parent_cell = (f'<a href="{h.esc(links[parent])}">{h.esc(parent)}</a>' if parent in links else h.esc(parent))
    generator = lineage.generator
    rows = [("generator", generator.model_id if generator else ""), ("task", generator.task if generator else ""),
            ("prompt", lineage.prompt), ("action source", lineage.action_source),
            ("state source", lineage.state_source), ("root", lineage.root_episode_id),
            ("conditioning", ", ".join(c.kind for c in lineage.conditioning))]
    cells = "".join(f"<tr><td>{h.esc(k)}</td><td>{h.esc(v)}</td></tr>" for k, v in rows)
    return (f'<section id="lineage"><h2>Lineage</h2><table><tr><td>parent</td><td>{parent_cell}</td></tr>{cells}'
            "</table></section>")


_EPISODE_SCRIPT = r"""
(function () {
  const D = JSON.parse(document.getElementById('episode-data').textContent);
  const videos = Array.from(document.querySelectorAll('video.cam'));
  const plots = Array.from(document.querySelectorAll('.series .js-plotly-plot'));
  const camera = name => D.cameras.find(c => c.name === name);
  let shown = -1;
  function stepAt(seconds) {
    const cam = D.cameras[0];
    if (!cam) { let s = 0; while (s + 1 < D.t.length && D.t[s + 1] <= seconds) s++; return s; }
    const frame = Math.floor(seconds * cam.fps + 1e-6);
    let step = 0;
    for (let i = 0; i < cam.frames.length; i++) { if (cam.frames[i] >= 0 && cam.frames[i] <= frame) step = i; }
    return step;
  }
  function cursor(step) {
    if (step === shown || !D.t.length) return;
    shown = step;
    const x = D.t[step];
    const line = {type: 'line', xref: 'x', yref: 'paper', x0: x, x1: x, y0: 0, y1: 1,
                  line: {color: '#d62728', width: 2}};
    for (const p of plots) Plotly.relayout(p, {shapes: [line]});
    document.getElementById('step').textContent = step;
    document.getElementById('time').textContent = x.toFixed(3);
    document.body.dataset.cursorStep = step;
  }
  function seek(step) {
    for (const v of videos) {
      const cam = camera(v.dataset.camera);
      const frame = cam && cam.frames[step] >= 0 ? cam.frames[step] : null;
      v.currentTime = frame === null ? D.t[step] : (frame + 0.5) / cam.fps;
    }
    cursor(step);
  }
  function follow() {
    if (videos.length) cursor(stepAt(videos[0].currentTime));
    if (videos.length && !videos[0].paused) requestAnimationFrame(follow);
  }
  if (videos.length) {
    const lead = videos[0];
    lead.addEventListener('timeupdate', follow);
    lead.addEventListener('seeked', follow);
    lead.addEventListener('play', () => {
      for (const v of videos.slice(1)) { v.currentTime = lead.currentTime; v.play().catch(() => {}); }
      requestAnimationFrame(follow);
    });
    lead.addEventListener('pause', () => { for (const v of videos.slice(1)) v.pause(); });
  }
  for (const p of plots) p.on('plotly_click', ev => { if (ev.points.length) seek(ev.points[0].pointIndex); });
  window.actionreel = {stepAt: stepAt, seek: seek, cursor: cursor, data: D};
  cursor(0);
})();
"""


# ---------------------------------------------------------------- the index


def index_page(metas: list[EpisodeMeta], links: dict[str, str], version_id: str) -> str:
    choices = {"dataset": sorted({m.dataset for m in metas}), "embodiment": sorted({m.embodiment for m in metas}),
               "kind": sorted({m.kind for m in metas}), "success": ["true", "false", "unknown"]}
    filters = "".join(
        f'<label>{h.esc(k)} <select class="filter" data-key="{h.esc(k)}"><option value="">all</option>'
        + "".join(f'<option value="{h.esc(v)}">{h.esc(v)}</option>' for v in values) + "</select></label> "
        for k, values in choices.items())
    rows = []
    for m in metas:
        link = (f'<a href="{h.esc(links[m.episode_id])}">{h.esc(m.episode_id)}</a>' if m.episode_id in links
                else f'{h.esc(m.episode_id)} <span class="muted">(no page: raise --limit)</span>')
        rows.append(f'<tr class="episode" data-dataset="{h.esc(m.dataset)}" data-embodiment="{h.esc(m.embodiment)}" '
                    f'data-kind="{h.esc(m.kind)}" data-success="{success_label(m.success)}"><td>{link}</td>'
                    f"<td>{h.esc(m.dataset)}</td><td>{h.esc(m.embodiment)}</td><td>{h.esc(m.kind)}</td>"
                    f"<td>{h.esc(m.split)}</td><td>{success_label(m.success)}</td>"
                    f'<td class="num">{m.num_steps}</td><td>{h.esc(" | ".join(m.tasks))}</td></tr>')
    body = (f'<section><p>{filters}<span id="shown">{len(metas)}</span> of {len(metas)} episodes</p>'
            '<table id="episodes"><thead><tr><th>episode</th><th>dataset</th><th>embodiment</th><th>kind</th>'
            f'<th>split</th><th>success</th><th>steps</th><th>task</th></tr></thead><tbody>{"".join(rows)}'
            "</tbody></table></section>")
    return h.page("ActionReel episodes", f"version {version_id}", body, _INDEX_SCRIPT, plotly=None)


_INDEX_SCRIPT = r"""
(function () {
  const selects = Array.from(document.querySelectorAll('select.filter'));
  function apply() {
    let shown = 0;
    for (const row of document.querySelectorAll('tr.episode')) {
      const ok = selects.every(s => !s.value || row.dataset[s.dataset.key] === s.value);
      row.style.display = ok ? '' : 'none';
      if (ok) shown++;
    }
    document.getElementById('shown').textContent = shown;
  }
  for (const s of selects) s.addEventListener('change', apply);
  apply();
})();
"""


# ---------------------------------------------------------------- the folder


def write_viewer(store: EpisodeStore, out: str | Path, name: str = "latest", query: CatalogQuery | None = None,
                 episode_ids: tuple[str, ...] = (), options: ViewerOptions | None = None) -> ViewerResult:
    """Write ``index.html`` and up to ``options.limit`` episode pages of version ``name`` into ``out``."""
    options = options or ViewerOptions()
    version_id, manifest = resolve(store, name)
    if episode_ids:
        query = CatalogQuery(**{**(query or CatalogQuery()).__dict__, "episode_ids": tuple(episode_ids)})
    metas = sorted(table_to_metas(read_catalog_table(store, manifest, query=query)), key=lambda m: m.episode_id)
    missing = sorted(set(episode_ids) - {m.episode_id for m in metas})
    if missing:
        raise ValueError(f"episode {missing[0]} is not in version {version_id[:12]} (or not matched by --where)")
    root = Path(out)
    (root / "episodes").mkdir(parents=True, exist_ok=True)
    (root / PLOTLY_FILE).write_text(h.plotly_bundle(), encoding="utf-8")
    shown = metas[: options.limit]
    links = {m.episode_id: f"episodes/{page_name(m.episode_id)}.html" for m in shown}
    result = ViewerResult(root / "index.html", listed=len(metas))
    for meta in shown:
        videos = {}
        for camera in meta.cameras:
            preview = write_preview(store, camera, root / "episodes" / page_name(meta.episode_id)
                                    / f"{safe_name(camera.name)}.mp4", options.max_video_height)
            result.previews.append(preview)
            videos[camera.name] = (f"{page_name(meta.episode_id)}/{safe_name(camera.name)}.mp4", preview)
        numbers = episode_numbers(meta, store.read_steps(meta))
        page = root / links[meta.episode_id]
        sibling_links = {k: v.removeprefix("episodes/") for k, v in links.items()}
        page.write_text(episode_page(meta, numbers, videos, sibling_links), encoding="utf-8")
        result.pages[meta.episode_id] = page
    result.index.write_text(index_page(metas, links, version_id), encoding="utf-8")
    return result


# ---------------------------------------------------------------- Rerun


def write_rerun(store: EpisodeStore, path: str | Path, metas: list[EpisodeMeta], image_height: int = 240) -> int:
    """A Rerun recording (.rrd) of ``metas``, as LeRobot's visualizer makes one: each camera's frames as JPEG
    images and every state/action dimension as a scalar series, on a ``step`` and a ``time`` timeline.
    Returns the number of images logged."""
    import cv2
    import rerun as rr

    from pipeline.video import PyAVDecoder
    from pipeline.viz.frames import thumbnail_size

    recording = rr.RecordingStream("actionreel_view")
    recording.save(str(path))
    images = 0
    for meta in metas:
        steps = store.read_steps(meta)
        filled = steps.filled()
        base = f"episodes/{safe_name(meta.episode_id)}"
        stamps = np.asarray(steps.timestamp_ns, np.int64)
        index = [rr.TimeColumn("step", sequence=np.arange(meta.num_steps)),
                 rr.TimeColumn("time", duration=(stamps - stamps[0]) / 1e9)]
        for feature, values, names in (("state", filled.state, meta.state_names),
                                       ("action", filled.action, meta.action_names)):
            for d in range(values.shape[1]):
                label = names[d] if len(names) == values.shape[1] else str(d)
                recording.send_columns(f"{base}/{feature}/{safe_name(label)}", indexes=index,
                                       columns=rr.Scalars.columns(scalars=np.asarray(values[:, d], np.float64)))
        for camera in meta.cameras:
            frames = np.asarray(steps.frame_index.get(camera.name, np.arange(meta.num_steps)))
            height, width = thumbnail_size(camera, min(image_height, camera.height))
            wanted = sorted({camera.frame_start + int(f) for f in frames if f >= 0})
            decoded = dict(PyAVDecoder(threads=1).scaled_frames(store.video_input(camera), wanted, height, width))
            for step, frame in enumerate(frames):
                if frame < 0:
                    continue
                image = np.ascontiguousarray(decoded[camera.frame_start + int(frame)][..., ::-1])
                _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
                recording.set_time("step", sequence=step)
                recording.set_time("time", duration=float((stamps[step] - stamps[0]) / 1e9))
                recording.log(f"{base}/cameras/{safe_name(camera.name)}",
                              rr.EncodedImage(contents=jpeg.tobytes(), media_type="image/jpeg"))
                images += 1
    recording.flush()
    recording.disconnect()
    return images
