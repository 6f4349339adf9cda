"""`compare.html`: several analyses side by side (before and after an app update, several
meetings, several vantage points): encryption coverage, server countries, key and control
servers, findings and provenance of each.

    build_comparison([Path("before"), Path("after")], Path("cmp"))  # -> cmp/compare.html
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from analyzer.errors import ConfscopeError
from dashboards import fmt, geo
from dashboards.charts import aggregate_coverage, base_layout, coverage_figure, safe, style_axes
from dashboards.inputs import Outputs, load_outputs
from dashboards.narrative import SEVERITY_ORDER, coverage_totals, server_items
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
from dashboards.report import capture_names, captures_table, section
from dashboards.style import FLAGGED_COLOUR, ROLE_LABELS
from dashboards.worldmap import primary_role, truthy

COMPARE_NAME = "compare.html"
NAV = (("overview", "Overview"), ("coverage", "Coverage"), ("countries", "Server countries"),
       ("servers", "Key & relay servers"), ("findings", "Findings"),
       ("provenance", "Provenance"))
NO_COUNTRY = "location unknown"


def build_comparison(outdirs: Sequence[Path], output_dir: Path) -> Path:
    """Write output_dir/compare.html comparing the given output folders; return its path."""
    if len(outdirs) < 2:
        raise ConfscopeError("compare needs at least two output folders")
    analyses = [load_outputs(Path(d)) for d in outdirs]
    labels = unique_labels([a.label for a in analyses])
    builder = ComparisonBuilder(list(zip(labels, analyses, strict=True)))
    page = Page(title="confscope comparison — " + " vs ".join(labels),
                subtitle=f"{len(labels)} analyses: " + "; ".join(
                    f"{label}: {capture_names(a.summary)}" for label, a in builder.items),
                nav=NAV, body=builder.body(), figures=builder.figures)
    return write_atomically(Path(output_dir) / COMPARE_NAME, render(page))


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Folder names, numbered where two are the same."""
    out = []
    for index, label in enumerate(labels, start=1):
        repeated = labels.count(label) > 1
        out.append(f"{label} ({index})" if repeated else label)
    return out


def server_countries(servers: pd.DataFrame) -> pd.DataFrame:
    """country name, flagged, role per server (country 'location unknown' when absent)."""
    if servers.empty:
        return pd.DataFrame(columns=["country", "flagged", "role", "ip"])
    special = servers.get("special_address", pd.Series("", index=servers.index)).fillna("")
    rows = servers[special.astype(str) == ""]
    codes = rows.get("country", pd.Series("", index=rows.index)).fillna("").astype(str)
    names = [geo.country_name(c) if c.strip() else NO_COUNTRY for c in codes]
    flagged = rows.get("flagged", pd.Series(False, index=rows.index)).map(truthy)
    return pd.DataFrame({"country": names, "flagged": flagged.to_numpy(),
                         "role": rows["roles"].map(primary_role).to_numpy(),
                         "ip": rows["ip"].to_numpy()})


def countries_figure(items: Sequence[tuple[str, Outputs]]) -> go.Figure | None:
    """Servers per country (rows) and analysis (columns); flagged countries in red."""
    frames = [server_countries(o.table("servers")).assign(label=label) for label, o in items]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if table.empty:
        return None
    labels = [label for label, _ in items]
    counts = table.pivot_table(index="country", columns="label", values="ip", aggfunc="count",
                               fill_value=0).reindex(columns=labels, fill_value=0)
    counts = counts.loc[counts.sum(axis=1).sort_values(ascending=False).index]
    flagged = set(table.loc[table["flagged"], "country"])
    text = [[_cell_text(table, country, label) for label in labels] for country in counts.index]
    ticks = [f'<span style="color:{FLAGGED_COLOUR}"><b>⚑ {safe(c)}</b></span>'
             if c in flagged else safe(c) for c in counts.index]
    figure = go.Figure(go.Heatmap(
        z=counts.to_numpy(), x=[safe(label) for label in labels], y=ticks, text=text,
        texttemplate="%{text}", colorscale=[[0, "#f6f7f9"], [1, "#5b8fd6"]], showscale=False,
        hovertemplate="%{y}<br>%{x}: %{z} server(s)<extra></extra>", xgap=3, ygap=3))
    figure.update_layout(base_layout(height=120 + 36 * len(counts), margin={
        "l": 10, "r": 10, "t": 40, "b": 10}))
    figure.update_xaxes(side="top")
    figure.update_yaxes(autorange="reversed")
    return style_axes(figure)


def _cell_text(table: pd.DataFrame, country: str, label: str) -> str:
    chosen = table[(table["country"] == country) & (table["label"] == label)]
    if chosen.empty:
        return ""
    roles = sorted({ROLE_LABELS.get(r, r) for r in chosen["role"]})
    return safe(f"{len(chosen)}: {', '.join(roles)}")


@dataclass(slots=True)
class ComparisonBuilder:
    items: list[tuple[str, Outputs]]
    figures: dict[str, go.Figure] = field(default_factory=dict)

    def body(self) -> str:
        return "".join((self.overview(), self.coverage(), self.countries(), self.servers(),
                        self.findings(), self.provenance()))

    def overview(self) -> str:
        columns = [("label", "Analysis"), ("captures", "Captures"), ("packets", "Packets"),
                   ("bytes", "Encrypted bytes"), ("media", "Encrypted media time"),
                   ("servers", "Servers"), ("flagged", "Flagged servers"),
                   ("findings", "Findings")]
        rows = [overview_row(label, outputs) for label, outputs in self.items]
        return section("overview", "Overview", "One row per analysis.",
                       render_table(columns, rows, scroll=False))

    def coverage(self) -> str:
        frames = [aggregate_coverage(o.table("coverage"), label) for label, o in self.items]
        frames = [f for f in frames if not f.empty]
        figure = coverage_figure(pd.concat(frames, ignore_index=True)) if frames else None
        lead = ("Green: encrypted; orange: weak; red: cleartext; grey: unknown. Each "
                "analysis's captures are added up, for all traffic and per service.")
        if figure is None:
            return section("coverage", "Encryption coverage", esc(lead),
                           '<p class="note">No coverage tables.</p>')
        self.figures["coverage"] = figure
        return section("coverage", "Encryption coverage", esc(lead),
                       figure_div("coverage", int(figure.layout.height or 400)))

    def countries(self) -> str:
        figure = countries_figure(self.items)
        lead = ("How many servers each analysis saw in each country, and in which roles. "
                "Flagged countries are marked ⚑ in red.")
        if figure is None:
            return section("countries", "Server countries", esc(lead),
                           '<p class="note">No servers.</p>')
        self.figures["countries"] = figure
        note = ""
        if not any("country" in o.table("servers").columns for _, o in self.items):
            note = ('<p class="note">No servers table has location columns (the analyses ran '
                    "without geolocation).</p>")
        return section("countries", "Server countries", esc(lead),
                       figure_div("countries", int(figure.layout.height or 300)) + note)

    def servers(self) -> str:
        rows = []
        for label, outputs in self.items:
            servers = outputs.table("servers")
            parts = [server_items(servers, ("key-exchange", "control"), "Key and control"),
                     server_items(servers, ("media-relay",), "Media relays")]
            rows.append({"label": cell(label),
                         "servers": html_cell("<br>".join(p for p in parts if p))})
        return section("servers", "Key, control and relay servers", "",
                       render_table([("label", "Analysis"), ("servers", "Servers")], rows,
                                    scroll=False))

    def findings(self) -> str:
        rows = [{"label": cell(label), "findings": html_cell(findings_list(o))}
                for label, o in self.items]
        return section("findings", "Findings", "",
                       render_table([("label", "Analysis"), ("findings", "Findings")], rows,
                                    scroll=False))

    def provenance(self) -> str:
        parts = []
        for label, outputs in self.items:
            summary = outputs.summary
            tool = f"{summary.get('tool', 'confscope')} {summary.get('version', '')}"
            parts.append(f"<h3>{esc(label)}</h3><p class=\"note\">{esc(outputs.outdir)} · "
                         f"{esc(tool)} · table format {esc(summary.get('format_version'))}"
                         "</p>" + captures_table(summary.get("captures", [])))
        return section("provenance", "Provenance", "", "".join(parts))


def overview_row(label: str, outputs: Outputs) -> dict[str, str]:
    totals = coverage_totals(outputs.table("coverage"))
    servers = outputs.table("servers")
    flagged = int(servers["flagged"].map(truthy).sum()) if "flagged" in servers.columns else None
    return {
        "label": cell(label), "captures": cell(capture_names(outputs.summary)),
        "packets": cell(fmt.count(outputs.summary.get("counts", {}).get("packets", "")), "num"),
        "bytes": cell(share(totals, "bytes"), "num"),
        "media": cell(share(totals, "media_seconds"), "num"),
        "servers": cell(fmt.count(len(servers)), "num"),
        "flagged": html_cell(f'<span class="flag">{flagged:,}</span>' if flagged else
                             ("0" if flagged == 0 else '<span class="muted">not checked</span>'),
                             "num"),
        "findings": cell(severity_counts(outputs.findings)),
    }


def share(totals: pd.DataFrame, column: str) -> str:
    total = float(totals[column].sum())
    return fmt.percent(totals.loc["encrypted", column] / total) if total > 0 else "—"


def severity_counts(findings: list[dict[str, object]]) -> str:
    counts = [(s, sum(1 for f in findings if f.get("severity") == s)) for s in SEVERITY_ORDER]
    return ", ".join(f"{n} {s}" for s, n in counts if n) or "none"


def findings_list(outputs: Outputs) -> str:
    if not outputs.findings:
        return '<span class="muted">none</span>'
    return "<br>".join(
        f'<span class="chip sev-{esc(f.get("severity"))}">{esc(f.get("severity"))}</span> '
        f'{esc(f.get("title"))} <span class="muted">({esc(f.get("capture"))})</span>'
        for f in outputs.findings)
