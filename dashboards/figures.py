"""`--export-figures`: the report's key figures as PNG and SVG files for articles.

kaleido (1.x) renders them in the machine's own Chromium (found on PATH or named by
$BROWSER_PATH; kaleido never downloads one from here), with plotly.js from the installed plotly
package, no MathJax and the world map handed in as a local script: the browser has nothing to
fetch, and a proxy address that goes nowhere makes sure it fetches nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go

from analyzer.errors import ConfscopeError
from dashboards.charts import coverage_figure, quality_figure, safe, timeline_figure
from dashboards.geo import WORLD_TOPOJSON_NAME, world_topology_text
from dashboards.inputs import Outputs, load_outputs
from dashboards.report import capture_names
from dashboards.worldmap import map_figure

FIGURES_DIR = "figures"
FORMATS = ("png", "svg", "pdf", "jpg", "webp")
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                 "chrome")
FIGURE_WIDTH = 1200
PNG_SCALE = 2
NOWHERE_PROXY = "http://127.0.0.1:9"  # discard port: any request the browser tried would fail
TITLE_SPACE = 60  # pixels added above each figure for its title


def export_figures(outdir: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write OUTDIR/figures/<name>.<format> for each key figure; return the files written.

    Raises ConfscopeError with a one-line reason when kaleido or Chromium is missing or
    rendering fails."""
    chosen = _check_formats(formats)
    outputs = load_outputs(Path(outdir))
    figures = article_figures(outputs)
    if not figures:
        raise ConfscopeError(f"{outdir}: no figure to export (empty tables)")
    kaleido = _import_kaleido()
    browser = find_browser()
    target = Path(outdir) / FIGURES_DIR
    target.mkdir(parents=True, exist_ok=True)
    specs = [{"fig": figure, "path": target / f"{name}.{fmt}", "opts": _options(figure, fmt)}
             for name, figure in figures.items() for fmt in chosen]
    _render(kaleido, specs, browser)
    return [Path(spec["path"]) for spec in specs]


def _check_formats(formats: Sequence[str]) -> list[str]:
    chosen = [f.lower().lstrip(".") for f in formats]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ConfscopeError(f"figure formats must be among {', '.join(FORMATS)} "
                             f"(got {', '.join(formats) or 'none'})")
    return list(dict.fromkeys(chosen))


def find_browser() -> str:
    """The Chromium or Chrome kaleido will drive: $BROWSER_PATH, else the first on PATH."""
    named = os.environ.get("BROWSER_PATH", "")
    if named:
        if Path(named).is_file() and os.access(named, os.X_OK):
            return named
        raise ConfscopeError(f"BROWSER_PATH={named} is not an executable browser")
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ConfscopeError("--export-figures needs Chromium or Chrome (Debian: apt-get install "
                         "chromium), or BROWSER_PATH naming one")


def _import_kaleido() -> Any:
    try:
        import kaleido
    except ImportError as exc:
        raise ConfscopeError("--export-figures needs the kaleido package (pip install "
                             "'kaleido>=1')") from exc
    if not hasattr(kaleido, "write_fig_from_object_sync"):
        raise ConfscopeError(f"--export-figures needs kaleido 1.x (found "
                             f"{getattr(kaleido, '__version__', 'an older one')})")
    return kaleido


def article_figures(outputs: Outputs) -> dict[str, go.Figure]:
    """The report's key figures with a title each, sized for an article."""
    captures = safe(capture_names(outputs.summary))
    built = {
        "coverage": (coverage_figure(outputs.table("coverage"),
                                     len(outputs.summary.get("captures", [])) > 1),
                     "Encryption coverage"),
        "servers-map": (map_figure(outputs.table("servers"), outputs.summary).figure,
                        "Servers by role and location"),
        "timeline": (timeline_figure(outputs.table("timeline"), outputs.table("flows")),
                     "Bitrate per flow, coloured by encryption verdict"),
        "stream-quality": (quality_figure(outputs.table("streams")),
                           "RTP stream loss and jitter"),
    }
    return {name: _titled(figure, f"{title} — {captures}")
            for name, (figure, title) in built.items() if figure is not None}


def _titled(figure: go.Figure, title: str) -> go.Figure:
    out = go.Figure(figure)
    margin = out.layout.margin
    out.update_layout(title={"text": title, "x": 0.01, "xanchor": "left", "y": 0.99,
                             "yanchor": "top", "font": {"size": 17}},
                      margin={"t": (margin.t or 40) + TITLE_SPACE},
                      height=(out.layout.height or 450) + TITLE_SPACE)
    return out


def _options(figure: go.Figure, fmt: str) -> dict[str, object]:
    return {"format": fmt, "width": FIGURE_WIDTH, "height": int(figure.layout.height or 500),
            "scale": PNG_SCALE if fmt in ("png", "jpg", "webp") else 1}


def _render(kaleido: Any, specs: list[dict[str, Any]], browser: str) -> None:
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with tempfile.TemporaryDirectory(prefix="confscope-figures-") as scratch:
        assets = Path(scratch) / "geo-assets.js"
        name = json.dumps(WORLD_TOPOJSON_NAME)
        assets.write_text(f"window.PlotlyGeoAssets = {{topojson: {{{name}: "
                          f"{world_topology_text()}}}}};\n", encoding="utf-8")
        page = kaleido.PageGenerator(plotly=str(plotly_js), mathjax=False,
                                     others=[str(assets)])
        options = {"page_generator": page, "path": browser, "proxy_server": NOWHERE_PROXY}
        try:
            errors = kaleido.write_fig_from_object_sync(specs, kopts=options)
        except Exception as exc:  # kaleido and choreographer raise many kinds
            raise ConfscopeError(f"figure export failed: {_first_line(exc)}") from exc
    failures = [e for e in (errors or ()) if e]
    if failures:
        raise ConfscopeError(f"figure export failed: {_first_line(failures[0])}")
    missing = [str(s["path"]) for s in specs if not Path(s["path"]).is_file()]
    if missing:
        raise ConfscopeError(f"figure export wrote nothing to {missing[0]}")


def _first_line(error: object) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
