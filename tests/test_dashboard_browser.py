"""The report as a reader's browser runs it: Debian's Chromium, headless, driven by Playwright
(never `playwright install`: the system browser is used). Every request the page makes and
every console message are recorded; screenshots go to tests/artifacts/ to be looked at.

Skipped when Chromium or the playwright package is absent.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analyzer.pipeline import Settings, analyze
from analyzer.tables import write_outputs
from dashboards.compare import build_comparison
from dashboards.report import NAV, build_report

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium on this machine (apt-get install chromium)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
KEY_SERVER = "52.81.151.250"
HOSTILE_SNI = "<script>alert(1)</script>.example"
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--proxy-server=http://127.0.0.1:9"]  # nowhere, as a backstop
VIEWPORT = {"width": 1360, "height": 900}
# Counts, per figure, the points of its traces; -1 when the div holds no plotly graph.
FIGURE_POINTS_JS = """
() => Array.from(document.querySelectorAll('div[data-figure]')).map(div => ({
  id: div.getAttribute('data-figure'),
  drawn: !!div._fullData && div.querySelector('.main-svg') !== null,
  points: (div._fullData || []).map(t => {
    const a = t.x || t.lat || t.locations || t.z || [];
    return a.length || 0;
  }),
}))
"""


def geo_settings(**geo: Any) -> Settings:
    try:
        from analyzer.geolocate import GeoSettings
    except ImportError:
        return Settings(jobs=1)
    return Settings(jobs=1, geo=GeoSettings(search_default_dirs=False, **geo))


def analyze_into(outdir: Path, names: list[str], settings: Settings | None = None) -> Path:
    analysis = analyze([CAPTURES / n for n in names], settings or Settings(jobs=1))
    write_outputs(analysis.tables, analysis.summary, outdir, analysis.findings)
    return outdir


@dataclass
class Visit:
    """What one page load did."""

    page: Any
    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def errors(self) -> list[tuple[str, str]]:
        return [(kind, text) for kind, text in self.console if kind in ("error", "pageerror")]

    def figures(self) -> dict[str, dict[str, Any]]:
        return {f["id"]: f for f in self.page.evaluate(FIGURE_POINTS_JS)}

    def screenshot(self, name: str, sections: tuple[str, ...] = ()) -> Path:
        """The whole page, and the named sections alone (easier to look at)."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.evaluate("document.querySelector('nav').style.position = 'static'")
        self.page.screenshot(path=str(path), full_page=True)
        for anchor in sections:
            self.page.locator(f"section#{anchor}").screenshot(
                path=str(ARTIFACTS / f"{name}-{anchor}.png"))
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        yield launched
        launched.close()


ALL_DRAWN_JS = """
() => Array.from(document.querySelectorAll('div[data-figure]'))
  .every(div => div.querySelector('.main-svg') !== null)
"""


def wait_for_figures(page: Any, timeout_s: float = 20.0) -> None:
    """Poll from outside the page: the page's CSP forbids the eval that
    `wait_for_function` would need."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(ALL_DRAWN_JS):
        assert time.monotonic() < deadline, "figures not drawn in time"
        page.wait_for_timeout(50)


def open_page(browser: Any, path: Path) -> Visit:
    """Load a page in a fresh context, recording requests, console and dialogs."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    seen = Visit(page)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("console", lambda message: seen.console.append((message.type, message.text)))
    page.on("pageerror", lambda error: seen.console.append(("pageerror", str(error))))
    page.on("dialog", lambda dialog: record_dialog(seen, dialog))
    page.add_init_script("window.alert = window.confirm = window.prompt = "
                         "function (m) { window.__ran = (window.__ran || 0) + 1; };")
    started = time.monotonic()
    page.goto(path.resolve().as_uri(), wait_until="load")
    wait_for_figures(page)
    seen.seconds = time.monotonic() - started
    return seen


@pytest.fixture
def visit(browser: Any) -> Iterator[Any]:
    visits: list[Visit] = []

    def open_and_keep(path: Path) -> Visit:
        visits.append(open_page(browser, path))
        return visits[-1]

    yield open_and_keep
    for seen in visits:
        seen.page.context.close()


@pytest.fixture(scope="module")
def report_visit(browser: Any, citizenlab: Path) -> Iterator[Visit]:
    seen = open_page(browser, citizenlab / "report.html")
    yield seen
    seen.page.context.close()


@pytest.fixture(scope="module")
def citizenlab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    settings = geo_settings(vantage_country="CA", flag_countries=("CN",))
    outdir = analyze_into(tmp_path_factory.mktemp("citizenlab"),
                          ["zoom_meeting.pcap", "citizenlab_ecb.pcap"], settings)
    build_report(outdir)
    return outdir


def record_dialog(seen: Visit, dialog: Any) -> None:
    seen.dialogs.append(dialog.message)
    dialog.dismiss()


def hover_across(page: Any, selector: str, steps: int = 12) -> None:
    """Move the mouse across a figure's plot area, left to right, mid-height."""
    area = page.query_selector(f"{selector} .nsewdrag")
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    for step in range(steps):
        x = box["x"] + box["width"] * (step + 0.5) / steps
        page.mouse.move(x, box["y"] + box["height"] * 0.9)
        page.wait_for_timeout(30)


def assert_offline_and_clean(seen: Visit, path: Path) -> None:
    assert seen.requests == [path.resolve().as_uri()], seen.requests
    assert seen.errors() == [], seen.errors()
    assert seen.dialogs == [] and seen.page.evaluate("window.__ran || 0") == 0


def test_report_loads_offline_and_draws_every_figure(citizenlab: Path,
                                                     report_visit: Visit) -> None:
    seen = report_visit
    assert_offline_and_clean(seen, citizenlab / "report.html")
    figures = seen.figures()
    assert set(figures) == {"coverage", "map", "timeline", "quality"}
    for name, figure in figures.items():
        assert figure["drawn"], name
        if name != "map":
            assert sum(figure["points"]) > 0, (name, figure)
    sections = seen.page.evaluate("Array.from(document.querySelectorAll('section'))"
                                  ".map(s => [s.id, s.getBoundingClientRect().height])")
    assert [s for s, _ in sections] == [anchor for anchor, _ in NAV]
    assert all(height > 80 for _, height in sections), sections
    verdict = seen.page.inner_text("#verdict")
    assert KEY_SERVER in verdict and "Key and control servers" in verdict
    assert KEY_SERVER in seen.page.inner_text("#servers")
    seen.screenshot("report", tuple(anchor for anchor, _ in NAV))
    print(f"report opened and drawn in {seen.seconds:.2f} s")


def test_map_draws_countries_and_markers(report_visit: Visit) -> None:
    seen = report_visit
    has_geo = seen.page.evaluate(
        "document.getElementById('fig-map').data.some(t => t.type === 'choropleth')")
    if not has_geo:
        pytest.skip("this analyzer does not geolocate yet")
    countries = seen.page.query_selector_all("#fig-map .choroplethlocation")
    assert len(countries) >= 2  # US and China shaded
    assert len(seen.page.query_selector_all("#fig-map .scattergeo .point")) >= 2
    layers = seen.page.evaluate(BASE_LAYERS_JS)
    for name in ("countries", "land", "coastlines"):  # drawn from the embedded topology
        assert layers[name] and layers[name]["length"] > 5000, (name, layers[name])
    assert layers["ocean"]["width"] >= layers["land"]["width"] * 0.98, layers  # the globe
    label = hover_country(seen.page, "CHN")  # the hover label sits at the topology's `ct`
    assert "China" in label and "flagged country" in label, label
    assert seen.errors() == [] and seen.requests[1:] == []


# Per base layer of the map: the length of its SVG path and the size it covers.
BASE_LAYERS_JS = """
() => Object.fromEntries(['ocean', 'land', 'countries', 'coastlines'].map(name => {
  const path = document.querySelector('#fig-map .layer.' + name + ' path');
  if (!path) { return [name, null]; }
  const box = path.getBBox();
  return [name, {length: (path.getAttribute('d') || '').length, width: box.width,
                 height: box.height}];
}))
"""


def hover_country(page: Any, code: str) -> str:
    """Hover over a shaded country, away from its centre marker; return the label's text."""
    shapes = page.query_selector_all("#fig-map .choroplethlocation")
    codes = [shape.evaluate("e => e.__data__ && e.__data__.loc") for shape in shapes]
    shape = shapes[codes.index(code)]
    shape.scroll_into_view_if_needed()
    box = shape.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
    page.wait_for_timeout(200)
    return str(page.evaluate("Array.from(document.querySelectorAll('#fig-map .hovertext'))"
                             ".map(e => e.textContent).join(' | ')"))


def test_hostile_capture_runs_nothing(tmp_path: Path, visit: Any) -> None:
    outdir = analyze_into(tmp_path, ["hostile_strings.pcap"])
    report = build_report(outdir)
    seen = visit(report)
    assert_offline_and_clean(seen, report)
    page = seen.page
    assert page.evaluate("document.querySelectorAll('img, iframe, object, embed').length") == 0
    assert page.evaluate("document.querySelectorAll('script').length") == len(
        seen.figures()) + 4  # plot config, world map, plotly.js, bootstrap, one per figure
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    body = page.inner_text("body")
    assert HOSTILE_SNI in body and "onerror=alert(1)" in body  # shown as text
    hover_across(page, "#fig-timeline")  # hover labels hold the hostile names too
    labels = page.evaluate("Array.from(document.querySelectorAll('#fig-timeline .hovertext'))"
                           ".map(e => e.textContent)")
    assert any("alert(1)" in label for label in labels) or labels == [], labels
    assert page.evaluate("window.__ran || 0") == 0 and seen.dialogs == []
    assert seen.errors() == []
    seen.screenshot("hostile", ("verdict", "servers", "traffic"))


def test_compare_loads_offline(citizenlab: Path, tmp_path: Path, visit: Any) -> None:
    other = analyze_into(tmp_path / "gcm", ["citizenlab_gcm.pcap", "geo_cn_rtt.pcap"],
                         geo_settings(vantage_country="CA", flag_countries=("CN",)))
    target = build_comparison([citizenlab, other], tmp_path / "cmp")
    seen = visit(target)
    assert_offline_and_clean(seen, target)
    figures = seen.figures()
    assert set(figures) == {"coverage", "countries"}
    assert all(f["drawn"] and sum(f["points"]) > 0 for f in figures.values()), figures
    seen.screenshot("compare")


def test_one_hour_report_opens_fast(tmp_path: Path, visit: Any) -> None:
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2024-05-14 15:00:00", tz="UTC")
    flows, seconds = 30, 3600
    timeline = pd.DataFrame({
        "capture": "hour.pcap", "flow_id": np.repeat(np.arange(1, flows + 1), seconds),
        "second": start + pd.to_timedelta(np.tile(np.arange(seconds), flows), unit="s"),
        "packets": 50, "bytes": rng.integers(1000, 20000, flows * seconds)})
    flow_table = pd.DataFrame({"capture": "hour.pcap", "flow_id": np.arange(1, flows + 1),
                               "encryption": ["encrypted"] * (flows - 2) + ["cleartext"] * 2,
                               "service": "zoom", "bytes_c2s": 1, "bytes_s2c": 1})
    write_outputs({"flows": flow_table, "timeline": timeline},
                  {"captures": [{"name": "hour.pcap"}], "version": "test"}, tmp_path, [])
    report = build_report(tmp_path)
    seen = visit(report)
    assert_offline_and_clean(seen, report)
    assert seen.seconds < 15, seen.seconds
    assert sum(seen.figures()["timeline"]["points"]) > 0
    print(f"one-hour report: {report.stat().st_size / 1e6:.2f} MB, drawn in "
          f"{seen.seconds:.2f} s")


def test_export_figures_with_the_system_chromium(citizenlab: Path) -> None:
    pytest.importorskip("kaleido")
    from dashboards.figures import export_figures

    written = export_figures(citizenlab)
    names = {p.name for p in written}
    assert {"coverage.png", "coverage.svg", "servers-map.png", "timeline.svg"} <= names
    for path in written:
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in head
    ARTIFACTS.mkdir(exist_ok=True)
    for path in written:
        shutil.copy(path, ARTIFACTS / f"figure-{path.name}")
