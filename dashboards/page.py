"""One self-contained HTML page: escaped text, figures as inert JSON, plotly.js inlined once.

Hostile text from captures reaches the page only two ways: through `esc` (HTML-escaped), or
inside `<script type="application/json">` blocks whose `<`, `>` and `&` are JSON-escaped, so a
`</script>` in a server name cannot close the block. A Content-Security-Policy allows only the
page's own two scripts (by SHA-256), no network access and no inline event handlers: even a
tag that slipped through would neither run nor fetch anything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from dashboards.geo import WORLD_TOPOJSON_NAME, world_topology_text
from dashboards.style import CSS

JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                "\u2028": "\\u2028", "\u2029": "\\u2029"}
PLOT_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
# Reads the figure blocks and draws them; the map outline is handed to plotly.js here so that
# it never fetches one from its CDN.
BOOTSTRAP_JS = """
(function () {
  function block(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }
  var config = block('plot-config');
  var world = block('world-topojson');
  window.PlotlyGeoAssets = window.PlotlyGeoAssets || {topojson: {}};
  if (world) { window.PlotlyGeoAssets.topojson['WORLD'] = world; }
  document.querySelectorAll('div[data-figure]').forEach(function (div) {
    var figure = block('figure-' + div.getAttribute('data-figure'));
    if (figure) { Plotly.newPlot(div, figure.data, figure.layout || {}, config); }
  });
})();
""".replace("WORLD", WORLD_TOPOJSON_NAME)


def esc(value: object) -> str:
    """Text for HTML: escaped, with None/NaN shown as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)


def json_for_html(value: object) -> str:
    """JSON safe inside a <script type="application/json"> block."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    for char, escaped in JSON_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def data_block(block_id: str, payload: object) -> str:
    return (f'<script type="application/json" id="{esc(block_id)}">'
            f"{json_for_html(payload)}</script>")


def figure_div(figure_id: str, height: int | None = None) -> str:
    style = f' style="height:{int(height)}px"' if height else ""
    key = esc(figure_id)
    return f'<div class="figure" id="fig-{key}" data-figure="{key}"{style}></div>'


@functools.cache
def plotly_js() -> str:
    script = get_plotlyjs()
    if "</script" in script.lower():
        raise RuntimeError("plotly.js contains '</script' and cannot be inlined")
    return script


def script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy(scripts: Sequence[str]) -> str:
    hashes = " ".join(script_hash(s) for s in scripts)
    return ("default-src 'none'; " f"script-src {hashes}; style-src 'unsafe-inline'; "
            "img-src data:; font-src 'none'; connect-src 'none'; base-uri 'none'; "
            "form-action 'none'")


@dataclass(frozen=True, slots=True)
class Page:
    """What a page holds: title, navigation, section HTML and the figures it draws."""

    title: str
    subtitle: str
    nav: Sequence[tuple[str, str]]  # (anchor id, label)
    body: str  # already escaped HTML
    figures: Mapping[str, go.Figure]
    needs_map: bool = False


def render(page: Page) -> str:
    scripts = (plotly_js(), BOOTSTRAP_JS)
    blocks = [data_block("plot-config", PLOT_CONFIG)]
    if page.needs_map:
        blocks.append(data_block("world-topojson", world_topology_text()))
    blocks += [data_block(f"figure-{key}", pio.to_json(fig, validate=False))
               for key, fig in page.figures.items()]
    nav = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in page.nav)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        f'content="{esc(content_security_policy(scripts))}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{esc(page.title)}</title>", f"<style>{CSS}</style>", "</head><body>",
        f'<header class="top"><h1>{esc(page.title)}</h1>'
        f'<div class="sub">{esc(page.subtitle)}</div></header>',
        f"<nav>{nav}</nav>", f"<main>{page.body}</main>", *blocks,
        f"<script>{scripts[0]}</script>", f"<script>{scripts[1]}</script>",
        "</body></html>", ""])


def write_atomically(path: Path, text: str) -> Path:
    """Write text to path so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno:  # (a failed write)
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise
    return path


def render_table(columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]],
                 row_class: str = "", scroll: bool = True) -> str:
    """An HTML table; `columns` are (key, header). Cells are HTML already (see `cell`)."""
    head = "".join(f"<th>{esc(title)}</th>" for _, title in columns)
    body = "".join(
        f'<tr class="{esc(row.get(row_class, "")) if row_class else ""}">'
        + "".join(str(row.get(key, "<td></td>")) for key, _ in columns) + "</tr>"
        for row in rows)
    wrap = "table-wrap scroll" if scroll else "table-wrap"
    return (f'<div class="{wrap}"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def cell(value: object, kind: str = "") -> str:
    """A table cell with escaped content; kind: '', 'num' or 'mono'."""
    klass = f' class="{kind}"' if kind else ""
    return f"<td{klass}>{esc(value)}</td>"


def html_cell(inner_html: str, kind: str = "") -> str:
    """A table cell whose content is HTML built from escaped parts."""
    klass = f' class="{kind}"' if kind else ""
    return f"<td{klass}>{inner_html}</td>"
