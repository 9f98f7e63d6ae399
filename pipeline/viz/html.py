"""The page shell shared by the report and the viewer: plotly's own bundle inlined once, no network needed.

Every string that comes from data (task text, prompts, quarantine reasons, file names) goes through
``esc``; the numbers a page shows are also embedded as JSON (``data_block``) so tests and scripts read
them back exactly instead of scraping rounded table cells.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header .sub{color:#aab3c5;font-size:13px;margin-top:4px;font-family:monospace}
main{padding:8px 24px 40px;max-width:1500px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:12px 18px;margin:16px 0}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e8eaef;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:12px}.plot{min-width:0}
.sheet img,.pair img{height:72px;margin:1px;border-radius:2px}
.muted{color:#6b7385}.tag{display:inline-block;padding:1px 6px;border-radius:8px;background:#e6ecf7;font-size:12px}
.bad{background:#fde8e8}.ok{background:#e6f5ea}a{color:#2459c9}
"""


INLINE = "inline"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value: float | int) -> str:
    """A number for a table cell (the exact value is in the page's JSON block)."""
    if isinstance(value, int):
        return f"{value:,}"
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return str(value)
    return f"{value:.6g}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None,
          table_id: str = "") -> str:
    """An HTML table; cells are escaped, numbers formatted with ``num``."""
    numeric = list(numeric or [False] * len(headers))
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value, is_number in zip(row, numeric, strict=True):
            if is_number:
                cells.append(f'<td class="num">{esc(num(value))}</td>')
            else:
                cells.append(f"<td>{esc(value)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    attr = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def data_block(element_id: str, data: Any) -> str:
    """JSON inside the page (every ``<``, ``>`` and ``&`` escaped, as plotly does, so no value can end the
    script element or open a comment in it)."""
    text = (json.dumps(data, sort_keys=True, allow_nan=True).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def figure_div(figure, div_id: str, height: int = 320) -> str:
    """A plotly figure as a div plus the call that draws it (the bundle itself is in the page head)."""
    import plotly.io as pio

    figure.update_layout(height=height, margin={"l": 50, "r": 20, "t": 40, "b": 40}, template="plotly_white")
    return pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def plotly_bundle() -> str:
    """plotly.js as the installed plotly ships it (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def page(title: str, subtitle: str, body: str, script: str = "", plotly: str | None = INLINE) -> str:
    """A whole HTML document; ``plotly``: INLINE (the bundle inside the page), a relative path to a copy of
    the bundle next to the page (a folder of pages shares one), or None (the page has no plot)."""
    if plotly == INLINE:
        head_script = f"<script>{plotly_bundle()}</script>"
    else:
        head_script = f'<script src="{esc(plotly)}"></script>' if plotly else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{STYLE}</style>{head_script}</head><body>"
            f'<header><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div></header>'
            f"<main>{body}</main>{f'<script>{script}</script>' if script else ''}"
            f"{_RESIZE if plotly else ''}</body></html>")


# A plot drawn while the page is still being parsed may have measured its box before its neighbours existed.
_RESIZE = ("<script>window.addEventListener('load', function () {document.querySelectorAll('.js-plotly-plot')"
           ".forEach(function (p) {Plotly.Plots.resize(p);});});</script>")
