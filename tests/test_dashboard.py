"""The HTML report and comparison, read as a parser and a reader would (no browser here; see
test_dashboard_browser.py for the page as Chromium runs it)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from countryinfo import CountryInfo
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.errors import ConfscopeError
from analyzer.pipeline import Settings, analyze
from analyzer.tables import write_outputs
from dashboards import fmt, geo
from dashboards.charts import (
    BIN_LADDER,
    MAX_BINS,
    MAX_FLOWS_PER_CAPTURE,
    bin_seconds,
    coverage_rows,
    timeline_series,
)
from dashboards.compare import build_comparison, overview_row
from dashboards.figures import export_figures
from dashboards.inputs import Outputs, load_outputs, records
from dashboards.page import json_for_html, write_atomically
from dashboards.report import NAV, build_report, captures_table, finding_card
from dashboards.worldmap import hover_text, map_figure, place, vantages

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
KEY_SERVER = "52.81.151.250"  # the Citizen Lab sample's meeting key/control server (Beijing)
MEDIA_RELAY = "162.255.37.11"
HOSTILE_SNI = "<script>alert(1)</script>.example"
MAX_REPORT_BYTES = 10 * 1000 * 1000


def geo_settings(**geo: Any) -> Settings:
    """Settings with geolocation options when this analyzer has them."""
    try:
        from analyzer.geolocate import GeoSettings
    except ImportError:
        return Settings(jobs=1)
    return Settings(jobs=1, geo=GeoSettings(search_default_dirs=False, **geo))


def analyze_into(outdir: Path, names: list[str], settings: Settings | None = None) -> Path:
    """Run the pipeline and write the tables the way `confscope analyze` does."""
    analysis = analyze([CAPTURES / n for n in names], settings or Settings(jobs=1))
    write_outputs(analysis.tables, analysis.summary, outdir, analysis.findings)
    return outdir


@pytest.fixture(scope="module")
def citizenlab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outdir = tmp_path_factory.mktemp("citizenlab")
    settings = geo_settings(vantage_country="CA", flag_countries=("CN",))
    return analyze_into(outdir, ["zoom_meeting.pcap", "citizenlab_ecb.pcap"], settings)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return analyze_into(tmp_path_factory.mktemp("hostile"), ["hostile_strings.pcap"])


class PageParser(HTMLParser):
    """Tags, attributes, text and script bodies of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        else:
            self.text.append(data)


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def figure_blocks(page: PageParser) -> dict[str, Any]:
    return {attrs["id"] or "": json.loads(body) for attrs, body in page.scripts
            if attrs.get("type") == "application/json" and (attrs.get("id") or "")
            .startswith("figure-")}


def decoded(values: Any) -> np.ndarray:
    """A plotly JSON array (plain list or base64 typed array) as numpy."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values)


# ---------------------------------------------------------------------- the report


def test_report_is_one_offline_file_with_every_section(citizenlab: Path) -> None:
    report = build_report(citizenlab)
    assert report == citizenlab / "report.html"
    assert not [p for p in citizenlab.iterdir() if p.name.startswith(".report.html")]
    page = parse(report)
    ids = {attrs.get("id") for tag, attrs in page.tags if tag == "section"}
    assert ids == {anchor for anchor, _ in NAV}
    for tag, attrs in page.tags:  # nothing that could load from anywhere
        assert tag not in ("link", "img", "iframe", "object", "embed", "base", "form"), tag
        assert "src" not in attrs, (tag, attrs)
        assert (attrs.get("href") or "#").startswith("#"), (tag, attrs)
    text = report.read_text(encoding="utf-8")
    assert text.count("* plotly.js v") == 1  # plotly.js inlined once
    assert report.stat().st_size < MAX_REPORT_BYTES


def test_content_security_policy_allows_exactly_the_page_scripts(citizenlab: Path) -> None:
    page = parse(build_report(citizenlab))
    policy = next(a["content"] for t, a in page.tags
                  if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert policy is not None and "default-src 'none'" in policy
    assert "connect-src 'none'" in policy and "'unsafe-inline'" not in policy.split(";")[1]
    allowed = set(re.findall(r"'sha256-([A-Za-z0-9+/=]+)'", policy))
    running = [body for attrs, body in page.scripts if "type" not in attrs]
    assert len(running) == 2  # plotly.js and the bootstrap
    hashes = {base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in running}
    assert hashes == allowed


def test_verdict_names_the_key_server_and_relay(citizenlab: Path) -> None:
    text = " ".join(parse(build_report(citizenlab)).text)
    verdict = text[text.index("What the capture shows"):text.index("Encryption coverage")]
    key_part = verdict[verdict.index("Key and control servers"):verdict.index("Media relays")]
    assert KEY_SERVER in key_part
    assert MEDIA_RELAY in verdict[verdict.index("Media relays"):]
    servers = load_outputs(citizenlab).table("servers")
    if "country" in servers.columns:  # geolocation ran: the registry places it in China
        assert "China" in key_part and "flagged" in key_part


def test_figures_carry_the_tables_data(citizenlab: Path) -> None:
    figures = figure_blocks(parse(build_report(citizenlab)))
    assert set(figures) >= {"figure-coverage", "figure-map", "figure-timeline",
                            "figure-quality"}
    timeline = load_outputs(citizenlab).table("timeline")
    drawn_bytes = sum(float((decoded(t["y"]) * 1000 / 8).sum()) for t in
                      figures["figure-timeline"]["data"])  # 1-second bins: kbit/s -> bytes
    assert drawn_bytes == pytest.approx(timeline["bytes"].sum(), rel=1e-3)
    quality = figures["figure-quality"]["data"]
    streams = load_outputs(citizenlab).table("streams")
    assert len(decoded(quality[0]["x"])) == len(streams)
    assert np.nanmax(decoded(quality[0]["x"])) == pytest.approx(streams["loss_pct"].max())


def test_map_shows_located_servers(citizenlab: Path) -> None:
    outputs = load_outputs(citizenlab)
    if "country" not in outputs.table("servers").columns:
        pytest.skip("this analyzer does not geolocate yet")
    data = figure_blocks(parse(build_report(citizenlab)))["figure-map"]["data"]
    shaded = next(t for t in data if t["type"] == "choropleth")
    locations = dict(zip(shaded["locations"], decoded(shaded["z"]), strict=True))
    assert locations["CHN"] == 1 and locations["USA"] == 0  # China flagged, US not
    markers = [t for t in data if t["type"] == "scattergeo" and "country only" in
               str(t.get("name"))]
    assert markers and any("CN" in str(t.get("text")) for t in markers)


def test_hostile_strings_are_text_never_markup(hostile: Path) -> None:
    report = build_report(hostile)
    raw = report.read_text(encoding="utf-8")
    page = parse(report)
    assert HOSTILE_SNI in "".join(page.text)  # shown as written
    assert [t for t, _ in page.tags].count("script") == len(page.scripts)
    assert not [t for t, _ in page.tags if t in ("img", "iframe", "svg", "object", "embed")]
    assert all((a.get("href") or "").startswith("#") for t, a in page.tags if t == "a")
    assert not any(any(k.startswith("on") for k in attrs) for _, attrs in page.tags)
    for attrs, body in page.scripts:  # no block can be closed early by capture text
        if attrs.get("type") == "application/json":
            assert "<" not in body and ">" not in body
    figure_text = json.dumps(figure_blocks(page))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.example" in figure_text  # plotly: escaped
    assert "onerror=alert(1)" in raw and "<img" not in raw.replace("&lt;img", "")


def test_csv_fallback_gives_the_same_report_text(hostile: Path, tmp_path: Path) -> None:
    copy = tmp_path / "csv-only"
    shutil.copytree(hostile, copy)
    for parquet in copy.glob("*.parquet"):
        parquet.unlink()
    text = "".join(parse(build_report(copy)).text)
    assert HOSTILE_SNI in text
    assert "=cmd|' /C calc'!A0" in text and "'=cmd" not in text  # CSV's formula quote removed
    assert "".join(parse(build_report(hostile)).text) == text


def test_not_an_output_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfscopeError, match=r"no summary\.json"):
        build_report(tmp_path)


def test_json_for_html_cannot_close_a_script_block() -> None:
    value = {"name": "</script><script>alert(1)</script> & \u2028", "n": [1, 2]}
    text = json_for_html(value)
    assert not set(text) & {"<", ">", "&", "\u2028"}
    assert json.loads(text) == value


def test_write_atomically_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    write_atomically(target, "old")
    write_atomically(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["r.html"]


# ---------------------------------------------------------------------- a one-hour meeting


def hour_of_meeting(outdir: Path, flows: int = 40, seconds: int = 3600) -> Path:
    """Tables of a synthetic one-hour meeting: `flows` flows, one timeline row per flow per
    second, as analyzer/timeline.py writes them."""
    rng = np.random.default_rng(7)
    start = pd.Timestamp("2024-05-14 15:00:00", tz="UTC")
    verdicts = ["encrypted", "encrypted", "encrypted", "cleartext", "weak", "unknown"]
    flow_rows = [{"capture": "hour.pcap", "flow_id": f, "transport": "udp",
                  "server_ip": f"198.51.100.{f}", "server_port": 8801, "service": "zoom",
                  "media": "audio", "protocols": "zoom", "server_name": f"mmr{f}.example",
                  "encryption": verdicts[f % len(verdicts)], "encryption_detail": "test",
                  "bytes_c2s": 0, "bytes_s2c": 0, "first_seen": start, "last_seen": start}
                 for f in range(1, flows + 1)]
    second = np.tile(np.arange(seconds), flows)
    flow_ids = np.repeat(np.arange(1, flows + 1), seconds)
    timeline = pd.DataFrame({"capture": "hour.pcap", "flow_id": flow_ids,
                             "second": start + pd.to_timedelta(second, unit="s"),
                             "packets": 50, "bytes": rng.integers(1000, 20000, len(second))})
    timeline = timeline[(flow_ids <= 10) | (second % 7 != 0)]  # some flows pause now and then
    tables = {"flows": pd.DataFrame(flow_rows), "timeline": timeline}
    summary = {"tool": "confscope", "version": "test", "format_version": 1,
               "captures": [{"name": "hour.pcap", "file": "hour.pcap"}]}
    write_outputs(tables, summary, outdir, [])
    return outdir


def test_one_hour_report_stays_small_and_keeps_every_byte(tmp_path: Path) -> None:
    outdir = hour_of_meeting(tmp_path)
    report = build_report(outdir)
    size = report.stat().st_size
    assert size < MAX_REPORT_BYTES, size
    traces = figure_blocks(parse(report))["figure-timeline"]["data"]
    assert len(traces) <= MAX_FLOWS_PER_CAPTURE + 4  # top flows + one 'rest' per verdict
    assert max(len(decoded(t["x"])) for t in traces) <= MAX_BINS + 1
    width = bin_seconds(3600)
    drawn = sum(float(decoded(t["y"]).sum()) * width * 1000 / 8 for t in traces)
    timeline = load_outputs(outdir).table("timeline")
    assert drawn == pytest.approx(timeline["bytes"].sum(), rel=1e-4)
    print(f"one-hour report: {size / 1e6:.2f} MB, {len(timeline)} timeline rows")


def test_bin_seconds_keeps_bins_under_the_limit() -> None:
    assert bin_seconds(4) == 1
    assert bin_seconds(3600) == 10  # 5-second bins would be 720 > 600
    for span in (1, 599, 601, 3600, 86_400, 10**7):
        width = bin_seconds(span)
        assert span / width <= MAX_BINS or width == BIN_LADDER[-1]


def test_timeline_series_sums_per_bin() -> None:
    start = pd.Timestamp("2024-01-01", tz="UTC")
    timeline = pd.DataFrame({"capture": "c", "flow_id": [1, 1, 1, 2],
                             "second": [start + pd.Timedelta(seconds=s) for s in (0, 1, 5, 1)],
                             "packets": 1, "bytes": [125, 250, 500, 1000]})
    flows = pd.DataFrame({"capture": ["c", "c"], "flow_id": [1, 2],
                          "encryption": ["encrypted", "cleartext"]})
    series = timeline_series(timeline, flows)
    one = series[series["key"] == "flow-1"].set_index("bin")["kbps"]
    assert one[0] == 1.0 and one[1] == 2.0 and one[2] == 0.0 and one[5] == 4.0
    assert one[6] == 0.0  # the step closes after the last bin
    assert set(series.loc[series["key"] == "flow-2", "verdict"]) == {"cleartext"}


def test_timeline_without_a_flows_table_labels_flows_by_number() -> None:
    """An output folder whose flows table is missing (read as an empty frame) still draws its
    timeline: each flow is named by its number, its verdict unknown."""
    start = pd.Timestamp("2024-01-01", tz="UTC")
    timeline = pd.DataFrame({"capture": "c", "flow_id": [1, 2], "packets": 1,
                             "second": [start, start], "bytes": [100, 200]})
    series = timeline_series(timeline, pd.DataFrame())
    assert set(series["label"]) == {"flow 1", "flow 2"}
    assert set(series["verdict"]) == {"unknown"}


def test_wide_table_bins_are_drawn_in_multiples_of_them() -> None:
    """A long capture's timeline in 60-second bins (analyzer/timeline.py widens them): a short
    span would be drawn in 1-second bins, but each drawn bin must hold whole table bins, and
    the bitrate is the bin's bytes over its width."""
    start = pd.Timestamp("2024-01-01", tz="UTC")
    timeline = pd.DataFrame({"capture": "c", "flow_id": 1, "bin_seconds": 60, "packets": 1,
                             "second": [start + pd.Timedelta(minutes=m) for m in (0, 1, 3)],
                             "bytes": [7500, 15000, 30000]})
    flows = pd.DataFrame({"capture": ["c"], "flow_id": [1], "encryption": ["encrypted"]})
    series = timeline_series(timeline, flows)
    assert set(series["bin_seconds"]) == {60}
    kbps = series.set_index("bin")["kbps"]
    assert (kbps[0], kbps[1], kbps[2], kbps[3]) == (1.0, 2.0, 0.0, 4.0)
    assert (bin_seconds(2500), bin_seconds(2500, table_bins=2)) == (5, 10)  # (5: not whole)


def test_coverage_shares_add_up() -> None:
    coverage = pd.DataFrame({"capture": "c", "scope": ["all"] * 4 + ["zoom"] * 4 + ["sip"] * 4,
                             "verdict": ["encrypted", "weak", "cleartext", "unknown"] * 3,
                             "flows": 1, "packets": 1,
                             "bytes": [60, 0, 40, 0, 60, 0, 0, 0, 0, 0, 40, 0],
                             "media_seconds": [3.0, 1.0, 0, 0, 3.0, 0, 0, 0, 0, 1.0, 0, 0]})
    rows = coverage_rows(coverage, prefix_capture=False)
    sums = rows.groupby("label")[["pct_bytes", "pct_media_seconds"]].sum()
    assert sums.loc["all traffic", "pct_bytes"] == pytest.approx(100)
    assert sums.loc["sip only", "pct_media_seconds"] == pytest.approx(100)
    assert rows.set_index(["label", "verdict"]).loc[("all traffic", "cleartext"),
                                                     "pct_bytes"] == pytest.approx(40)


# ---------------------------------------------------------------------- map and countries


def located_servers() -> pd.DataFrame:
    base = {"capture": "c", "names": "", "services": "zoom", "ports": "443", "flows": 1,
            "bytes": 100, "rtt_min_ms": np.nan, "geo_disagreement": False, "city": "",
            "accuracy_km": np.nan, "asn": "", "organisation": "", "plausibility": "unknown",
            "plausibility_text": "", "hostname_hints": "", "flag_reason": "",
            "coordinates_source": "", "country_source": "test", "geo_sources": ""}
    rows = [
        {"ip": "203.0.113.1", "roles": "control", "country": "CN", "special_address": "",
         "latitude": 39.9, "longitude": 116.4, "flagged": True, "flag_reason": "CN listed"},
        {"ip": "203.0.113.2", "roles": "media-relay", "country": "US", "special_address": "",
         "latitude": np.nan, "longitude": np.nan, "flagged": False},
        {"ip": "203.0.113.3", "roles": "media-relay", "country": "SG", "special_address": "",
         "latitude": np.nan, "longitude": np.nan, "flagged": False},
        {"ip": "10.0.0.1", "roles": "dns", "country": "", "special_address": "private",
         "latitude": np.nan, "longitude": np.nan, "flagged": False},
    ]
    return pd.DataFrame([{**base, **row} for row in rows])


def test_map_places_servers_by_what_is_known() -> None:
    result = map_figure(located_servers(), {"flag_countries": ["CN"]})
    traces = result.figure.data
    shaded = next(t for t in traces if t.type == "choropleth")
    assert dict(zip(shaded.locations, shaded.z, strict=True)) == {"CHN": 1, "USA": 0}
    precise = [t for t in traces if t.type == "scattergeo" and t.name == "control / key delivery"]
    assert list(precise[0].lat) == [39.9] and list(precise[0].lon) == [116.4]
    country_only = next(t for t in traces if t.name == "media relay (country only)")
    us = geo.country("US")
    assert us is not None and (us.lat, us.lon) in set(zip(country_only.lat, country_only.lon,
                                                           strict=True))
    assert result.placed == 3
    assert any("10.0.0.1 (private)" in n for n in result.notes)
    assert any("Singapore" in n for n in result.notes)  # no shape at 1:110m: marker only


def test_map_reads_every_column_its_text_uses(citizenlab: Path) -> None:
    """The map reads only `MAP_COLUMNS`: its hover texts are those of the whole rows."""
    for servers in (located_servers(), load_outputs(citizenlab).table("servers")):
        texts = " ".join(str(text) for trace in map_figure(servers, {}).figure.data
                         if trace.type == "scattergeo" for text in trace.hovertext or ())
        places = [place(row) for row in records(servers)]
        drawn = [p for p in places if not p.special and math.isfinite(p.lat)]
        assert drawn
        for item in drawn:
            assert hover_text(item) in texts


def test_map_notes_name_a_few_addresses_and_count_the_rest() -> None:
    base = located_servers().iloc[[1]]
    unknown = pd.concat([base] * 100, ignore_index=True).assign(
        country="", ip=[f"198.51.100.{i}" for i in range(100)])
    private = pd.concat([located_servers().iloc[[3]]] * 3, ignore_index=True)
    notes = map_figure(pd.concat([unknown, private], ignore_index=True), {}).notes
    listed = next(n for n in notes if "location unknown" in n)
    assert listed.endswith(", 198.51.100.39 and 60 more (the servers table lists them all).")
    assert "198.51.100.40" not in listed
    special = next(n for n in notes if "special addresses" in n)
    assert special.count("10.0.0.1 (private)") == 3 and "more" not in special


@pytest.mark.parametrize(("count", "text"), [
    (1, "1 flow"), (2, "2 flows"), (49_925, "49,925 flows"),
    (np.int64(1_000_000), "1,000,000 flows"), (None, " flows"), ("3", "3 flows"),
])
def test_counts_read_with_thousands_separators(count: object, text: str) -> None:
    assert fmt.plural(count, "flow") == text


def test_finding_cards_show_a_hundred_names_and_count_the_rest() -> None:
    names = [f"<b>host{i}.example" for i in range(250)]
    card = finding_card({"severity": "low", "kind": "not-assessed", "title": "t",
                         "evidence": {"hostnames": names, "flow_ids": [1, 2]}}, many=False)
    assert "&lt;b&gt;host99.example" in card and "host100.example" not in card
    assert "and 150 more (findings.json lists them all)" in card and "<b>host" not in card
    assert "1, 2" in card and "more" not in card.split("Flows")[1].split("</dd>")[0]


def test_map_says_which_servers_a_region_code_leaves_unplaced() -> None:
    """The registries give some blocks the code EU: a region, not a place to draw."""
    region = located_servers().iloc[[1]].assign(country="EU", ip="198.51.100.7")
    unknown = located_servers().iloc[[1]].assign(country="", ip="198.51.100.8")
    notes = map_figure(pd.concat([located_servers(), region, unknown], ignore_index=True),
                       {}).notes
    assert ("Not on the map, placed only in European Union (EU), for which the map has no "
            "position: 198.51.100.7.") in notes
    assert "Not on the map, location unknown: 198.51.100.8." in notes
    assert not any("European Union" in n for n in notes if n.startswith("No outline"))


def test_map_without_location_columns_says_why() -> None:
    servers = located_servers()[["capture", "ip", "roles", "names", "bytes"]]
    result = map_figure(servers, {})
    assert result.placed == 0 and "no location columns" in result.notes[0]


def test_countries_from_installed_data() -> None:
    china, singapore = geo.country("CN"), geo.country("SGP")
    assert china is not None and china.alpha3 == "CHN" and 20 < china.lat < 45
    assert singapore is not None and singapore.alpha2 == "SG" and singapore.has_position
    assert abs(singapore.lat - 1.35) < 1 and abs(singapore.lon - 103.8) < 1  # no outline
    kosovo = geo.country("XK")
    assert kosovo is not None and kosovo.name == "Kosovo"
    assert geo.country("") is None and geo.country("not a country") is None


# ---------------------------------------------------------------------- the world topology
# Read back with a TopoJSON decoder written here from the specification (quantized arcs,
# delta-encoded; ~i is arc i reversed; a ring's arcs join end to start), and compared with
# countryinfo's own GeoJSON.

Point = tuple[float, float]
BEIJING, KANSAS, MANITOBA, PARIS = (116.4, 39.9), (-98.0, 38.5), (-98.0, 55.0), (2.35, 48.86)
BUDAPEST, BELGRADE = (19.04, 47.5), (20.46, 44.8)
ATLANTIC, CASPIAN = (-30.0, 30.0), (50.5, 42.0)


@pytest.fixture(scope="module")
def topology() -> dict[str, Any]:
    return json.loads(geo.world_topology_text())  # what the page embeds


def decode_arcs(topology: dict[str, Any]) -> list[list[Point]]:
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((round(x * sx + tx, 6), round(y * sy + ty, 6)))
        arcs.append(points)
    return arcs


def join_ring(arcs: list[list[Point]], refs: list[int]) -> list[Point]:
    points: list[Point] = []
    for ref in refs:
        arc = arcs[ref] if ref >= 0 else arcs[~ref][::-1]
        assert not points or points[-1] == arc[0], "arcs of a ring must join end to start"
        points += arc if not points else arc[1:]
    assert len(points) >= 4 and points[0] == points[-1], "a ring must close"
    return points


def polygons_of(geometry: dict[str, Any]) -> list[list[list[int]]]:
    arcs = geometry["arcs"]
    return [arcs] if geometry["type"] == "Polygon" else arcs


def signed_area(ring: list[Point]) -> float:
    return sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in itertools.pairwise(ring)) / 2


def inside(point: Point, ring: list[Point]) -> bool:
    crossings = 0
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        if (y1 > point[1]) != (y2 > point[1]):
            crossings += point[0] < x1 + (point[1] - y1) * (x2 - x1) / (y2 - y1)
    return crossings % 2 == 1


def in_polygons(point: Point, polygons: list[list[list[Point]]]) -> bool:
    return any(inside(point, p[0]) and not any(inside(point, h) for h in p[1:])
               for p in polygons)


def decoded_countries(topology: dict[str, Any]) -> dict[str, list[list[list[Point]]]]:
    arcs = decode_arcs(topology)
    return {g["id"]: [[join_ring(arcs, ring) for ring in polygon] for polygon in polygons_of(g)]
            for g in topology["objects"]["countries"]["geometries"]}


def plotly_layers() -> set[str]:
    """The layers plotly.js's geo draws from the topology, read from the bundled plotly.js."""
    import plotly

    bundle = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()
    found = re.findall(r"(?:fillLayers|lineLayers)=\{([^}]*)\}", bundle)
    if len(found) != 2:
        pytest.skip("this plotly.js bundle names its geo layers differently")
    return {name.split(":")[0] for body in found for name in body.split(",")} - {"frame"}


def test_world_topology_has_every_layer_plotly_reads(topology: dict[str, Any]) -> None:
    layers = plotly_layers()
    assert {"ocean", "land", "countries", "coastlines", "lakes", "rivers"} <= layers
    assert topology["type"] == "Topology"
    for name in layers:  # plotly.js throws on a missing one it is asked to show
        assert topology["objects"][name]["type"] == "GeometryCollection", name
    for name in ("countries", "land", "coastlines", "ocean"):
        assert topology["objects"][name]["geometries"], name
    assert len(geo.world_topology_text()) < 120_000  # the copied world_110m.json: 136,642


def test_world_topology_outlines_follow_countryinfo(topology: dict[str, Any]) -> None:
    countries = decoded_countries(topology)
    for code in ("CHN", "USA", "CAN", "FRA", "BRA", "AUS", "RUS"):
        record = next(r for r in CountryInfo.all().values()
                      if (r.get("ISO") or {}).get("alpha3") == code and r.get("geoJSON"))
        source = source_rings(record["geoJSON"])
        drawn = [ring for polygon in countries[code] for ring in polygon]
        assert drawn and all(set(ring) <= set().union(*source) for ring in drawn), code
        big = [ring for ring in source if abs(signed_area(ring)) > 0.05]
        assert {frozenset(r) for r in big} <= {frozenset(r) for r in drawn}, code
    assert countries["CHN"] and in_polygons(BEIJING, countries["CHN"])
    assert in_polygons(KANSAS, countries["USA"]) and in_polygons(MANITOBA, countries["CAN"])
    assert not in_polygons(PARIS, countries["CHN"]) and in_polygons(PARIS, countries["FRA"])


def source_rings(geojson: dict[str, Any]) -> list[list[Point]]:
    """countryinfo's rings at the topology's precision (0.01 degree), repeats removed."""
    rings = []
    for feature in geojson["features"]:
        geometry = feature["geometry"]
        polygons = ([geometry["coordinates"]] if geometry["type"] == "Polygon"
                    else geometry["coordinates"])
        for ring in (r for polygon in polygons for r in polygon):
            points = [(round(x, 2), round(y, 2)) for x, y in ring]
            rings.append([p for i, p in enumerate(points) if i == 0 or p != points[i - 1]])
    return rings


def test_world_topology_winds_rings_as_d3_geo_reads_them(topology: dict[str, Any]) -> None:
    """d3-geo draws a ring's inside on its right: exterior rings clockwise, holes not (a
    wrongly wound country would cover the rest of the globe)."""
    for code, polygons in decoded_countries(topology).items():
        for polygon in polygons:
            assert signed_area(polygon[0]) < 0, code
            assert all(signed_area(hole) > 0 for hole in polygon[1:]), code
    assert "LSO" in decoded_countries(topology)  # Lesotho, inside South Africa's hole


def test_world_topology_shares_borders_and_keeps_coasts_apart(
        topology: dict[str, Any]) -> None:
    geometries = {g["id"]: g for g in topology["objects"]["countries"]["geometries"]}

    def arc_ids(code: str) -> set[int]:
        refs = [r for polygon in polygons_of(geometries[code]) for ring in polygon for r in ring]
        return {r if r >= 0 else ~r for r in refs}

    border = arc_ids("USA") & arc_ids("CAN")
    assert border, "the US-Canada border is one arc used by both"
    coast = {refs[0] for refs in topology["objects"]["coastlines"]["geometries"][0]["arcs"]}
    assert not border & coast
    assert arc_ids("USA") & coast and arc_ids("CHN") & coast
    users: dict[int, int] = {}
    for code in geometries:
        for arc in arc_ids(code):
            users[arc] = users.get(arc, 0) + 1
    assert all(users.get(arc, 0) <= 1 for arc in coast)  # a coast is nobody's border


def test_world_topology_land_fills_the_gaps_of_missing_outlines(
        topology: dict[str, Any]) -> None:
    """countryinfo has no outline for Hungary or Serbia: their place is land, not sea."""
    arcs = decode_arcs(topology)
    land = [[join_ring(arcs, ring) for ring in polygon]
            for polygon in topology["objects"]["land"]["geometries"][0]["arcs"]]
    countries = decoded_countries(topology)
    for point in (BUDAPEST, BELGRADE):
        assert in_polygons(point, land)
        assert not any(in_polygons(point, p) for p in countries.values())
    assert in_polygons(PARIS, land) and in_polygons(BEIJING, land)
    assert not in_polygons(ATLANTIC, land) and not in_polygons(CASPIAN, land)
    assert not geo.has_shape("HUN") and not geo.has_shape("SGP") and geo.has_shape("CHN")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-40, 40), st.integers(-40, 40)), min_size=3, max_size=60),
       st.integers(-40, 40), st.integers(-40, 40), st.sampled_from([1.0, 0.25, 0.5]))
def test_bay_search_equals_comparing_every_distance(
        grid: list[tuple[int, int]], cx: int, cy: int, step: float) -> None:
    """numpy only preselects: the farthest point and the mouths are those found by comparing
    every `distance`, ties included (points on a coarse grid give many equal distances)."""
    points = tuple((x * step, y * step) for x, y in grid)
    centre = (cx * step, cy * step)
    farthest = max(range(len(points)), key=lambda k: geo.distance(points[k], centre))
    assert geo._farthest(points, centre) == farthest
    near = [k for k, p in enumerate(points) if geo.distance(p, centre) <= geo.BAY_SEARCH_RADIUS]
    mouths = sorted((geo.distance(points[i], points[j]), i, j) for i in near for j in near
                    if j > i + 1 and geo.distance(points[i], points[j]) <= geo.MAX_BAY_MOUTH)
    assert geo._mouths(points, centre) == mouths


def test_countries_carry_countryinfo_centres(topology: dict[str, Any]) -> None:
    centres = {g["id"]: g["properties"]["ct"]
               for g in topology["objects"]["countries"]["geometries"]}
    lat, lon = CountryInfo("China").latlng()
    assert centres["CHN"] == [lon, lat]  # plotly.js puts a country's hover label there
    assert all(len(c) == 2 and all(math.isfinite(v) for v in c) for c in centres.values())
    china = geo.country("CN")
    assert china is not None and (china.lat, china.lon) == (lat, lon)


def test_vantage_per_capture_or_single() -> None:
    single = {"latitude": 45.4, "longitude": -75.7, "country": "CA", "source": "given"}
    assert vantages(single) == {"": single}
    per_capture = {"a.pcap": single, "b.pcap": {**single, "country": "DE"}}
    assert set(vantages(per_capture)) == {"a.pcap", "b.pcap"}
    assert vantages(None) == {}


# ---------------------------------------------------------------------- compare and export


def test_compare_puts_analyses_side_by_side(citizenlab: Path, tmp_path: Path) -> None:
    other = analyze_into(tmp_path / "after", ["citizenlab_gcm.pcap", "geo_cn_rtt.pcap"],
                         geo_settings(vantage_country="CA", flag_countries=("CN",)))
    target = build_comparison([citizenlab, other], tmp_path / "cmp")
    assert target == tmp_path / "cmp" / "compare.html"
    page = parse(target)
    text = "".join(page.text)
    assert citizenlab.name in text and "after" in text and KEY_SERVER in text
    figures = figure_blocks(page)
    assert {"figure-coverage", "figure-countries"} <= set(figures)
    heat = figures["figure-countries"]["data"][0]
    counts = decoded(heat["z"]).reshape(len(heat["y"]), len(heat["x"]))
    for column, outdir in enumerate((citizenlab, other)):
        servers = load_outputs(outdir).table("servers")
        special = servers.get("special_address", pd.Series("", index=servers.index))
        assert counts[:, column].sum() == (special.fillna("") == "").sum()
    if "country" in load_outputs(other).table("servers").columns:
        assert any("China" in y for y in heat["y"])


def test_compare_overview_counts_read_with_separators(tmp_path: Path) -> None:
    servers = pd.DataFrame({"ip": [f"192.0.2.{i}" for i in range(3)], "flagged": [True] * 3})
    outputs = Outputs(tmp_path, {"servers": servers}, {"counts": {"packets": 1_234_567}}, [])
    row = overview_row("busy", outputs)
    assert ">1,234,567<" in row["packets"] and ">3<" in row["servers"]
    assert '<span class="flag">3</span>' in row["flagged"]


def test_captures_table_says_when_no_hash_was_made() -> None:
    hashed = {"file": "a.pcap", "sha256": "ab" * 32, "packets": 1_234_567, "size_bytes": 10}
    table = captures_table([hashed, {**hashed, "file": "b.pcap", "sha256": None}])
    assert "ab" * 32 in table and ">1,234,567<" in table
    assert table.count("not computed (the analysis ran with --no-hash)") == 1


def test_compare_needs_two_folders(citizenlab: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfscopeError, match="at least two"):
        build_comparison([citizenlab], tmp_path)


def test_export_figures_says_why_without_a_browser(citizenlab: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kaleido")
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    with pytest.raises(ConfscopeError, match="BROWSER_PATH"):
        export_figures(citizenlab)


def test_export_figures_says_why_without_kaleido(citizenlab: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido now fails
    with pytest.raises(ConfscopeError, match="kaleido"):
        export_figures(citizenlab)


def test_export_figures_rejects_unknown_formats(citizenlab: Path) -> None:
    with pytest.raises(ConfscopeError, match="formats"):
        export_figures(citizenlab, ("gif",))


def test_records_are_what_to_dict_gives() -> None:
    """The map reads the servers table's rows column by column: the same values, of the same
    types, as `DataFrame.to_dict("records")`, for every kind of column the tables have."""
    from dashboards.inputs import records

    frame = pd.DataFrame({
        "text": pd.Series(["a", None, "ü,\"x\""], dtype="str"),
        "count": [1, 2, 3], "real": [0.5, float("nan"), -0.0], "flag": [True, False, True],
        "maybe": pd.array([1, None, 3], dtype="Int64"),
        "flag_or_na": pd.array([True, None, False], dtype="boolean"),
        "real_or_na": pd.array([1.5, None, 2.0], dtype="Float64"),
        "when": pd.to_datetime([0, None, 10**9], unit="ns", utc=True),
        "mixed": ["x", 7, None],
    })

    def same(a: object, b: object) -> bool:
        if isinstance(a, float) and a != a:
            return isinstance(b, float) and b != b
        return type(a) is type(b) and (a is b or a == b)

    expected = frame.to_dict("records")
    got = records(frame)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert list(mine) == list(theirs)
        assert all(same(mine[k], theirs[k]) for k in theirs), (mine, theirs)
