"""`OUTDIR/report.html`: one self-contained page built from an output folder's tables.

    build_report(Path("out"))  # -> out/report.html

It reads only the tables, summary.json and findings.json (never decoder internals), inlines
plotly.js and the world map once, and makes no request to any other host when opened.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly
import plotly.graph_objects as go

from dashboards import fmt
from dashboards.charts import coverage_figure, quality_figure, timeline_figure
from dashboards.geo import MAP_SOURCE
from dashboards.inputs import Outputs, load_outputs
from dashboards.narrative import KEY_EXCHANGE_TEXT, verdict_html
from dashboards.page import (
    Page,
    cell,
    esc,
    figure_div,
    html_cell,
    render,
    render_table,
    write_atomically,
)
from dashboards.style import VERDICTS
from dashboards.worldmap import location_text, map_figure, truthy, vantages

REPORT_NAME = "report.html"
MAX_TABLE_ROWS = 500  # rows per HTML table; the CSV and Parquet files hold them all
NAV = (("verdict", "Verdict"), ("coverage", "Coverage"), ("map", "Server map"),
       ("timeline", "Timeline"), ("quality", "Stream quality"), ("servers", "Servers"),
       ("findings", "Findings"), ("traffic", "Flows & signalling"),
       ("provenance", "Provenance"))


def build_report(outdir: Path, output: Path | None = None) -> Path:
    """Write OUTDIR/report.html (or `output`) from OUTDIR's tables; return its path."""
    outputs = load_outputs(Path(outdir))
    target = Path(output) if output is not None else Path(outdir) / REPORT_NAME
    return write_atomically(target, render_report(outputs))


def render_report(outputs: Outputs) -> str:
    builder = ReportBuilder(outputs)
    return render(Page(title=f"confscope report — {capture_names(outputs.summary)}",
                       subtitle=subtitle(outputs), nav=NAV, body=builder.body(),
                       figures=builder.figures, needs_map=True))


def capture_names(summary: Mapping[str, Any]) -> str:
    names = [str(c.get("name", "")) for c in summary.get("captures", []) if isinstance(c, dict)]
    if len(names) > 3:
        return ", ".join(names[:3]) + f" and {len(names) - 3} more"
    return ", ".join(names) or "no capture"


def subtitle(outputs: Outputs) -> str:
    flows = outputs.table("flows")
    span = ""
    if {"first_seen", "last_seen"} <= set(flows.columns) and len(flows):
        span = f"{fmt.utc(flows['first_seen'].min())} to {fmt.utc(flows['last_seen'].max())}"
    tool = f"{outputs.summary.get('tool', 'confscope')} {outputs.summary.get('version', '')}"
    counts = outputs.summary.get("counts", {})
    parts = [span, f"{counts.get('packets', '?')} packets, {counts.get('flows', '?')} flows, "
                   f"{counts.get('streams', '?')} RTP streams", tool.strip()]
    return " · ".join(p for p in parts if p)


def section(anchor: str, title: str, lead: str, content: str) -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead_html}{content}</section>'


def notes_html(notes: list[str]) -> str:
    return "".join(f'<p class="note">{esc(n)}</p>' for n in notes)


def verdict_chip(verdict: object) -> str:
    text = fmt.text(verdict) if fmt.text(verdict) in VERDICTS else "unknown"
    return f'<span class="chip v-{text}">{esc(text)}</span>'


def truncated(frame: pd.DataFrame, noun: str) -> tuple[pd.DataFrame, str]:
    if len(frame) <= MAX_TABLE_ROWS:
        return frame, ""
    note = (f"Showing the first {MAX_TABLE_ROWS} of {len(frame)} {noun}; "
            f"{noun}.csv and {noun}.parquet hold them all.")
    return frame.head(MAX_TABLE_ROWS), note


@dataclass(slots=True)
class ReportBuilder:
    """Builds the sections of one report, collecting the figures they draw."""

    outputs: Outputs
    figures: dict[str, go.Figure] = field(default_factory=dict)

    @property
    def many_captures(self) -> bool:
        return len(self.outputs.summary.get("captures", [])) > 1

    def body(self) -> str:
        parts: list[Callable[[], str]] = [
            self.verdict, self.coverage, self.map, self.timeline, self.quality, self.servers,
            self.findings, self.traffic, self.provenance]
        footer = ('<footer>Made by confscope from the output tables; opens offline and '
                  "makes no network requests.</footer>")
        return "".join(part() for part in parts) + footer

    def figure(self, key: str, figure: go.Figure | None, empty: str) -> str:
        if figure is None:
            return f'<p class="note">{esc(empty)}</p>'
        self.figures[key] = figure
        return figure_div(key, int(figure.layout.height or 400))

    # ------------------------------------------------------------------ sections

    def verdict(self) -> str:
        return section("verdict", "What the capture shows",
                       "The verdict in plain words; every claim is backed by the sections "
                       "below and by the tables in this folder.", verdict_html(self.outputs))

    def coverage(self) -> str:
        figure = coverage_figure(self.outputs.table("coverage"), self.many_captures)
        lead = ("Green: encrypted; orange: weakly encrypted (an outdated or broken method); "
                "red: cleartext; grey: unknown. By bytes on the wire and by seconds of RTP "
                "media, for all traffic and for each service.")
        return section("coverage", "Encryption coverage", esc(lead),
                       self.figure("coverage", figure, "No coverage table in this folder."))

    def map(self) -> str:
        result = map_figure(self.outputs.table("servers"), self.outputs.summary)
        self.figures["map"] = result.figure
        lead = ("Where the servers are, by role. Filled markers: the server's own position; "
                "open markers: only the country is known, drawn at the country's centre. "
                "Shaded: countries with servers; red: flagged countries. Hover for the source "
                "of each location.")
        return section("map", "Server map", esc(lead),
                       figure_div("map", 560) + notes_html(result.notes))

    def timeline(self) -> str:
        figure = timeline_figure(self.outputs.table("timeline"), self.outputs.table("flows"))
        lead = ("Bitrate of each flow over time, stacked, coloured by the flow's verdict. "
                "Long captures are drawn in wider bins; small flows are summed per verdict.")
        return section("timeline", "Timeline", esc(lead),
                       self.figure("timeline", figure, "No timeline table in this folder."))

    def quality(self) -> str:
        streams = self.outputs.table("streams")
        figure = quality_figure(streams)
        lead = ("Loss and RFC 3550 interarrival jitter of the largest RTP streams, as "
                "Wireshark's RTP Stream Analysis computes them.")
        content = self.figure("quality", figure, "No RTP streams in this capture.")
        return section("quality", "Stream quality", esc(lead),
                       content + streams_table(streams, self.many_captures))

    def servers(self) -> str:
        servers = self.outputs.table("servers")
        if servers.empty:
            return section("servers", "Servers", "", '<p class="note">No servers.</p>')
        frame, note = truncated(servers.sort_values("bytes", ascending=False), "servers")
        rows = [server_row(r, self.many_captures) for r in frame.to_dict("records")]
        columns = [(key, title) for key, title in server_columns(self.many_captures)
                   if key not in OPTIONAL_SERVER_COLUMNS or any_content(rows, key)]
        lead = ("Every server address with its names and where each name came from, its "
                "location and the source of it, its network, the smallest round trip seen "
                "and whether that round trip fits the claimed location.")
        return section("servers", "Servers", esc(lead),
                       render_table(columns, rows, "class", scroll=False)
                       + notes_html([note] if note else []))

    def findings(self) -> str:
        findings = sorted(self.outputs.findings, key=severity_rank)
        content = "".join(finding_card(f, self.many_captures) for f in findings)
        lead = ("Each finding names its evidence: Wireshark frame numbers (Go to Packet, or "
                "the filter shown) and flow ids (the flows table).")
        return section("findings", "Findings", esc(lead),
                       content or '<p class="note">No findings.</p>')

    def traffic(self) -> str:
        flows, signalling = self.outputs.table("flows"), self.outputs.table("signalling")
        content = details(f"All flows ({len(flows)})", flows_table(flows, self.many_captures))
        if len(signalling):
            content += details(f"SIP signalling ({len(signalling)} messages)",
                               signalling_table(signalling))
        return section("traffic", "Flows and signalling",
                       "The rows behind the figures (text from the capture shown as written).",
                       content)

    def provenance(self) -> str:
        return section("provenance", "Provenance",
                       "What produced this report, from which files, with which settings.",
                       provenance_html(self.outputs.summary))


def details(summary: str, content: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{content}</details>"


def severity_rank(finding: Mapping[str, Any]) -> int:
    order = ("high", "medium", "low", "info")
    severity = finding.get("severity")
    return order.index(severity) if severity in order else len(order)


# ---------------------------------------------------------------------- servers table


OPTIONAL_SERVER_COLUMNS = ("coordinates", "network", "plausibility")  # hidden when empty
EMPTY_CELL = re.compile(r"<td[^>]*></td>")


def server_columns(many: bool) -> list[tuple[str, str]]:
    columns = [("server", "Server and names"), ("roles", "Role"), ("location", "Location"),
               ("coordinates", "Coordinates"), ("network", "Network"), ("rtt", "Smallest RTT"),
               ("plausibility", "Plausibility")]
    return [("capture", "Capture"), *columns] if many else columns


def any_content(rows: list[dict[str, str]], key: str) -> bool:
    return any(not EMPTY_CELL.fullmatch(row.get(key, "")) for row in rows)


def server_row(row: Mapping[str, Any], many: bool) -> dict[str, str]:
    flagged = truthy(row.get("flagged"))
    out = {
        "class": "flagged" if flagged else "",
        "capture": cell(row.get("capture")),
        "server": html_cell(f'<span class="mono">{esc(row.get("ip"))}</span> '
                            f'<span class="muted">{esc(traffic_text(row))}</span><br>'
                            + names_html(fmt.text(row.get("names")))),
        "roles": html_cell(esc(fmt.text(row.get("roles")).replace("+", ", "))
                           + f'<br><span class="muted">{esc(row.get("services"))} · port '
                           f'{esc(fmt.text(row.get("ports")).replace("+", ", "))}</span>'),
        "location": html_cell(location_html(row), "wide"),
        "coordinates": html_cell(coordinates_html(row)),
        "network": html_cell(network_html(row)),
        "rtt": html_cell(esc(fmt.milliseconds(row.get("rtt_min_ms")))
                         + f'<br><span class="muted">{esc(row.get("rtt_evidence"))}</span>'),
        "plausibility": html_cell(plausibility_html(row), "wide"),
    }
    return out


def traffic_text(row: Mapping[str, Any]) -> str:
    amount = fmt.to_float(row.get("bytes"))
    size = fmt.human_bytes(amount) if amount == amount else "?"
    return f"{size}, {fmt.plural(row.get('flows'), 'flow')}"


def names_html(names: str) -> str:
    """'a (dns); a (tls-sni); b (dns)' -> each name once, with its sources."""
    grouped = group_names(names)
    if not grouped:
        return '<span class="muted">no name seen</span>'
    return "<br>".join(f'{esc(name)} <span class="muted">({esc(", ".join(sources))})</span>'
                       if sources else esc(name) for name, sources in grouped.items())


def group_names(names: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for part in (p.strip() for p in names.split(";")):
        if not part:
            continue
        name, _, source = part.rpartition(" (")
        if not name or not source.endswith(")"):
            name, source = part, ""
        grouped.setdefault(name, []).extend([source[:-1]] if source else [])
    return grouped




def location_html(row: Mapping[str, Any]) -> str:
    where = location_text(row)
    text = esc(where) if where else '<span class="muted">not located</span>'
    source = fmt.text(row.get("country_source"))
    if source:
        text += f'<br><span class="muted">source: {esc(source)}</span>'
    answers = fmt.text(row.get("geo_sources"))
    if truthy(row.get("geo_disagreement")):
        text += f'<br><span class="flag">sources disagree</span>: {esc(answers)}'
    elif ";" in answers:  # several sources, all agreeing
        text += f'<br><span class="muted">{esc(answers)}</span>'
    if truthy(row.get("flagged")):
        text += f'<br><span class="flag">flagged: {esc(row.get("flag_reason"))}</span>'
    return text


def coordinates_html(row: Mapping[str, Any]) -> str:
    lat, lon = row.get("latitude"), row.get("longitude")
    if fmt.is_missing(lat) or fmt.is_missing(lon) or lat is None or lon is None:
        return ""
    text = f"{float(lat):.3f}, {float(lon):.3f}"
    if not fmt.is_missing(row.get("accuracy_km")) and row.get("accuracy_km") is not None:
        text += f" ± {float(row['accuracy_km']):.0f} km"
    source = fmt.text(row.get("coordinates_source"))
    return esc(text) + (f'<br><span class="muted">{esc(source)}</span>' if source else "")


def network_html(row: Mapping[str, Any]) -> str:
    asn = fmt.text(row.get("asn")).removesuffix(".0")
    parts = [f"AS{asn}" if asn and not asn.upper().startswith("AS") else asn,
             fmt.text(row.get("organisation"))]
    lines = [esc(" ".join(p for p in parts if p))]
    hints = fmt.text(row.get("hostname_hints"))
    lines.append(f'<span class="muted">name hints: {esc(hints)}</span>' if hints else "")
    return "<br>".join(line for line in lines if line)


def plausibility_html(row: Mapping[str, Any]) -> str:
    value = fmt.text(row.get("plausibility"))
    klass = {"implausible": "flag", "consistent": "t-encrypted"}.get(value, "muted")
    text = f'<span class="{klass}">{esc(value)}</span>' if value else ""
    detail = fmt.text(row.get("plausibility_text"))
    return text + (f'<br><span class="muted">{esc(detail)}</span>' if detail else "")


# ---------------------------------------------------------------------- findings


def finding_card(finding: Mapping[str, Any], many: bool) -> str:
    severity = str(finding.get("severity", "info"))
    evidence = finding.get("evidence") or {}
    frames = [str(f) for f in evidence.get("frames", [])]
    rows = [("Severity", f'<span class="chip sev-{esc(severity)}">{esc(severity)}</span> '
                         f'<span class="muted">{esc(finding.get("kind"))}</span>')]
    if many:
        rows.append(("Capture", esc(finding.get("capture"))))
    if frames:
        rows.append(("Wireshark frames", f'{esc(", ".join(frames))} <span class="muted">'
                     f'(filter: <span class="mono">frame.number in {{'
                     f'{esc(" ".join(frames))}}}</span>)</span>'))
    rows += [(label, _evidence_list([str(v) for v in evidence[key]]))
             for key, label in (("flow_ids", "Flows"), ("hostnames", "Names"))
             if evidence.get(key)]
    rows += [(str(k).replace("_", " "), esc(v))
             for k, v in (evidence.get("values") or {}).items()]
    if finding.get("refute"):
        rows.append(("What would refute it", esc(finding.get("refute"))))
    body = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (f'<div class="finding {esc(severity)}"><h3>{esc(finding.get("title"))}</h3>'
            f"<div>{esc(finding.get('explanation'))}</div><dl>{body}</dl></div>")


MAX_EVIDENCE_LISTED = 100  # flows or names a finding's card shows; findings.json has them all


def _evidence_list(values: list[str]) -> str:
    shown, more = fmt.capped(values, MAX_EVIDENCE_LISTED)
    return esc(", ".join(shown)) + (
        f' <span class="muted">and {more:,} more (findings.json lists them all)</span>'
        if more else "")


# ---------------------------------------------------------------------- flows and streams


def flows_table(flows: pd.DataFrame, many: bool) -> str:
    if flows.empty:
        return '<p class="note">No flows.</p>'
    frame, note = truncated(flows, "flows")
    columns = [("flow", "Flow"), ("path", "Client → server"), ("service", "Service"),
               ("name", "Server name"), ("protocols", "Protocols / media"),
               ("verdict", "Verdict"), ("detail", "How"), ("keys", "Keys / protection"),
               ("bytes", "Bytes"), ("frame", "First frame")]
    if many:
        columns.insert(0, ("capture", "Capture"))
    rows = [flow_row(r) for r in frame.to_dict("records")]
    return render_table(columns, rows) + notes_html([note] if note else [])


def flow_row(row: Mapping[str, Any]) -> dict[str, str]:
    total = float(row.get("bytes_c2s") or 0) + float(row.get("bytes_s2c") or 0)
    path = (f"{esc(row.get('transport'))} {esc(row.get('client_ip'))}:"
            f"{esc(row.get('client_port'))}<br>→ {esc(row.get('server_ip'))}:"
            f"{esc(row.get('server_port'))}")
    name = fmt.text(row.get("server_name"))
    source = fmt.text(row.get("server_name_source"))
    keys = fmt.text(row.get("key_exchange"))
    return {
        "capture": cell(row.get("capture")), "flow": cell(row.get("flow_id"), "num"),
        "path": html_cell(path, "mono nowrap"), "service": html_cell(service_html(row)),
        "name": html_cell(esc(name) + (f'<br><span class="muted">{esc(source)}</span>'
                                       if source else "")),
        "protocols": cell(" ".join(p for p in (fmt.text(row.get("protocols")),
                                               fmt.text(row.get("media"))) if p)),
        "verdict": html_cell(verdict_chip(row.get("encryption"))),
        "detail": cell(row.get("encryption_detail")),
        "keys": html_cell(f'<span title="{esc(KEY_EXCHANGE_TEXT.get(keys, ""))}">'
                          f'{esc(keys)}</span><br><span class="muted">'
                          f'{esc(row.get("protection"))}</span>' if keys else ""),
        "bytes": cell(fmt.human_bytes(total), "num"), "frame": cell(row.get("first_frame"), "num"),
    }


def service_html(row: Mapping[str, Any]) -> str:
    """The flow's service, marked as a guess when only its port number names it."""
    service = esc(row.get("service"))
    if row.get("service_basis") != "port":
        return service
    return (f'{service}<br><span class="muted" title="{esc(row.get("service_evidence"))}">'
            "port guess</span>")


def streams_table(streams: pd.DataFrame, many: bool) -> str:
    if streams.empty:
        return ""
    frame, note = truncated(streams.sort_values("packets", ascending=False), "streams")
    columns = [("stream", "Stream"), ("media", "Media"), ("packets", "Packets"),
               ("lost", "Lost"), ("jitter", "Jitter mean / max"), ("gap", "Largest gap"),
               ("bitrate", "Bitrate"), ("clock", "Clock rate"), ("verdict", "Verdict")]
    if many:
        columns.insert(0, ("capture", "Capture"))
    rows = [stream_row(r) for r in frame.to_dict("records")]
    return details(f"All RTP streams ({len(streams)})",
                   render_table(columns, rows) + notes_html([note] if note else []))


def stream_row(row: Mapping[str, Any]) -> dict[str, str]:
    stream = (f"{fmt.text(row.get('src_ip'))}:{fmt.text(row.get('src_port'))} → "
              f"{fmt.text(row.get('dst_ip'))}:{fmt.text(row.get('dst_port'))} "
              f"ssrc {fmt.text(row.get('ssrc'))} (flow {fmt.text(row.get('flow_id'))})")
    loss = fmt.text(row.get("lost"))
    loss_pct = row.get("loss_pct")
    if not fmt.is_missing(loss_pct) and loss_pct is not None:
        loss += f" ({float(loss_pct):.2f}%)"
    jitter = f"{fmt.milliseconds(row.get('jitter_mean_ms'), 2)} / " \
             f"{fmt.milliseconds(row.get('jitter_max_ms'), 2)}"
    bitrate = row.get("bitrate_kbps")
    clock = " ".join(p for p in (fmt.text(row.get("clock_rate")).removesuffix(".0"),
                                 f"({fmt.text(row.get('clock_rate_source'))})"
                                 if fmt.text(row.get("clock_rate_source")) else "") if p)
    return {
        "capture": cell(row.get("capture")), "stream": cell(stream, "mono"),
        "media": cell(" ".join(p for p in (fmt.text(row.get("media")),
                                           fmt.text(row.get("encapsulation"))) if p)),
        "packets": cell(row.get("packets"), "num"), "lost": cell(loss, "num"),
        "jitter": cell(jitter, "num"), "gap": cell(fmt.milliseconds(row.get("delta_max_ms")),
                                                   "num"),
        "bitrate": cell("" if fmt.is_missing(bitrate) or bitrate is None
                        else f"{float(bitrate):.1f} kbit/s", "num"),
        "clock": cell(clock), "verdict": html_cell(verdict_chip(row.get("encryption"))),
    }


def signalling_table(signalling: pd.DataFrame) -> str:
    frame, note = truncated(signalling, "signalling")
    keys = ("capture", "frame", "flow_id", "message", "call_id", "from_uri", "to_uri",
            "user_agent", "sdp_media", "sdes_keys")
    columns = [(k, k.replace("_", " ")) for k in keys]
    rows = [{k: cell(r.get(k), "mono" if k in ("call_id", "from_uri", "to_uri") else "")
             for k in keys} for r in frame.to_dict("records")]
    return render_table(columns, rows) + notes_html([note] if note else [])


# ---------------------------------------------------------------------- provenance


def provenance_html(summary: Mapping[str, Any]) -> str:
    items = [("Tool", f"{summary.get('tool', 'confscope')} {summary.get('version', '')}"),
             ("Table format version", summary.get("format_version", "")),
             ("Settings", json.dumps(summary.get("settings", {}), sort_keys=True)),
             ("Flag countries", ", ".join(map(str, summary.get("flag_countries") or []))
              or "none configured"),
             ("Capture point (vantage)", vantage_text(summary.get("vantage"))),
             ("Map", f"{MAP_SOURCE}; plotly {plotly.__version__}")]
    listing = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return (f'<dl class="prov">{listing}</dl><h3>Captures</h3>'
            + captures_table(summary.get("captures", []))
            + "<h3>GeoIP databases</h3>" + geoip_table(summary.get("geoip_databases")))


def vantage_text(vantage: object) -> str:
    points = vantages(vantage)
    if not points:
        return "not given"
    return "; ".join((f"{capture}: " if capture else "") + ", ".join(
        f"{k} {v[k]}" for k in ("country", "latitude", "longitude", "source")
        if v.get(k) not in (None, "")) for capture, v in points.items())


def captures_table(captures: object) -> str:
    rows = [c for c in captures if isinstance(c, Mapping)] if isinstance(captures, list) else []
    if not rows:
        return '<p class="note">No capture listed in summary.json.</p>'
    columns = [("name", "Capture"), ("sha256", "SHA-256"), ("size", "Size"),
               ("format", "Format"), ("packets", "Packets"), ("damage", "Damage and gaps")]
    table_rows = [{
        "name": cell(c.get("file") or c.get("name")),
        "sha256": cell(c.get("sha256"), "mono") if c.get("sha256") else html_cell(
            '<span class="muted">not computed (the analysis ran with --no-hash)</span>'),
        "size": cell(fmt.human_bytes(float(c.get("size_bytes") or 0)), "num"),
        "format": cell(" ".join(str(c.get(k) or "") for k in ("format", "compression",
                                                               "timestamp_resolution")).strip()),
        "packets": cell(fmt.count(c.get("packets")), "num"),
        "damage": cell(gaps_text(c)),
    } for c in rows]
    return render_table(columns, table_rows)


def gaps_text(capture: Mapping[str, object]) -> str:
    """What of a capture was not read, or not read whole, in plain words."""
    damage = capture.get("damage")
    parts = [damage_text(damage)] if isinstance(damage, Mapping) else []
    counts = ((capture.get("packets_of_undecoded_link_types"),
               "packets of a link type confscope does not decode (link types "
               f"{capture.get('link_types')})"),
              (capture.get("packets_cut_by_snaplen"), "packets cut by the snap length"),
              (capture.get("flows_with_decode_problems"),
               "flows with malformed messages (flows table, decode_problems)"),
              (capture.get("ip_datagrams_incomplete"),
               "IP datagrams not put back together (a fragment missing or cut)"),
              (capture.get("unconfirmed_rtp_packets"),
               "packets that start like RTP or RTCP but were not counted as media (none "
               "followed on in sequence, no signalling announced them: random bytes do this "
               "by chance)"))
    parts += [f"{number:,} {what}" for number, what in counts
              if isinstance(number, int) and number > 0]
    return "; ".join(parts) or "none"


def damage_text(damage: Mapping[str, object]) -> str:
    """summary.json's damage of a capture in words: why, where, and how far it was read."""
    frame, offset = damage.get("first_unreadable_frame"), damage.get("file_offset")
    read = (f"read up to frame {frame - 1:,}" if isinstance(frame, int) and frame > 1
            else "no frame could be read")
    at = f" at byte {offset:,}" if isinstance(offset, int) else ""
    return f"damaged{at}: {damage.get('reason', 'unknown reason')} ({read})"


def geoip_table(databases: object) -> str:
    rows = [d for d in databases if isinstance(d, Mapping)] if isinstance(databases,
                                                                            list) else []
    if not rows:
        return '<p class="note">None listed in summary.json (no geolocation databases used).</p>'
    keys = ("name", "kind", "database_type", "build_date", "path", "description")
    columns = [(k, k.replace("_", " ")) for k in keys]
    return render_table(columns, [{k: cell(d.get(k), "mono" if k == "path" else "")
                                   for k in keys} for d in rows])
