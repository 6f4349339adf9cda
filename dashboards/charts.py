"""The figures: coverage, timeline and stream quality (the map is in `dashboards.worldmap`).

Each builder takes tables and returns a plotly Figure, or None when there is nothing to draw.
Text from captures is HTML-escaped before it goes into a figure: plotly.js reads a few tags
in labels and decodes entities, so escaped text shows as written and never becomes markup.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards import fmt
from dashboards.style import FONT_FAMILY, VERDICT_COLOURS, VERDICT_LABELS, VERDICTS

AXIS = {"gridcolor": "#e6e9ee", "zerolinecolor": "#cfd4dc", "linecolor": "#cfd4dc",
        "tickfont": {"size": 11}}
# Timeline: at most this many bins per capture; bin widths tried in order (seconds).
MAX_BINS = 600
BIN_LADDER = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
MAX_FLOWS_PER_CAPTURE = 24  # the rest of a capture's flows are summed per verdict
MAX_TIMELINE_CAPTURES = 6
PANEL_HEIGHT, PANEL_GAP = 280, 90  # pixels
MAX_QUALITY_STREAMS = 30
QUALITY_COLOURS = {"loss": "#455a64", "jitter_mean": "#8fb0dd", "jitter_max": "#1f4e8c"}
FLOW_SHADES = (0.9, 0.62)
TOP_LEGEND = {"orientation": "h", "yref": "container", "y": 1.0, "yanchor": "top", "x": 0,
              "font": {"size": 12}}  # alternating fill opacity, so neighbouring flows stay apart


def safe(value: object) -> str:
    """Capture-derived text for a figure label or hover."""
    return html.escape(fmt.text(value), quote=False)


def base_layout(**overrides: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "template": "none", "font": {"family": FONT_FAMILY, "size": 12, "color": "#1d2330"},
        "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff",
        "margin": {"l": 10, "r": 10, "t": 40, "b": 40},
        "hoverlabel": {"font": {"family": FONT_FAMILY, "size": 12}, "align": "left"},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0,
                   "font": {"size": 12}},
    }
    layout.update(overrides)
    return layout


def style_axes(figure: go.Figure) -> go.Figure:
    figure.update_xaxes(**AXIS, automargin=True)
    figure.update_yaxes(**AXIS, automargin=True)
    return figure


# ---------------------------------------------------------------------- coverage


def aggregate_coverage(coverage: pd.DataFrame, label: str) -> pd.DataFrame:
    """Coverage of several captures summed into one row set labelled `label`."""
    if coverage.empty:
        return coverage
    sums = coverage.groupby(["scope", "verdict"], sort=False)[
        ["flows", "packets", "bytes", "media_seconds"]].sum().reset_index()
    sums.insert(0, "capture", label)
    return sums


def coverage_rows(coverage: pd.DataFrame, prefix_capture: bool) -> pd.DataFrame:
    """One row per (capture, scope, verdict) with shares recomputed and a display label."""
    needed = {"capture", "scope", "verdict", "bytes", "media_seconds"}
    if coverage.empty or not needed <= set(coverage.columns):
        return pd.DataFrame()
    rows = coverage.copy()
    keys = ["capture", "scope"]
    for column in ("bytes", "media_seconds"):
        rows[column] = pd.to_numeric(rows[column], errors="coerce").fillna(0.0)
        total = rows.groupby(keys, sort=False)[column].transform("sum")
        rows[f"total_{column}"] = total
        rows[f"pct_{column}"] = np.where(total > 0, rows[column] / total.where(total > 0) * 100,
                                         0.0)
    rows = _drop_single_service(rows[rows["total_bytes"] > 0])
    rows["label"] = [_scope_label(c, s, prefix_capture) for c, s in zip(
        rows["capture"], rows["scope"], strict=True)]
    return rows


def _drop_single_service(rows: pd.DataFrame) -> pd.DataFrame:
    """A capture whose traffic is one service: its service rows repeat 'all'; keep 'all'."""
    scopes = rows.groupby("capture", sort=False)["scope"].nunique()
    single = set(scopes[scopes <= 2].index)
    return rows[~rows["capture"].isin(single) | (rows["scope"] == "all")]


def _scope_label(capture: object, scope: object, prefix_capture: bool) -> str:
    scope_text = "all traffic" if scope == "all" else f"{fmt.text(scope)} only"
    return f"{safe(capture)} · {safe(scope_text)}" if prefix_capture else safe(scope_text)


def coverage_figure(coverage: pd.DataFrame, prefix_capture: bool = True) -> go.Figure | None:
    """Stacked bars: share of bytes and of media time per verdict, per capture and service."""
    rows = coverage_rows(coverage, prefix_capture)
    if rows.empty:
        return None
    labels = list(dict.fromkeys(rows["label"]))
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                           subplot_titles=("Share of bytes on the wire",
                                           "Share of media time (RTP seconds)"))
    for verdict in VERDICTS:
        part = rows[rows["verdict"] == verdict]
        for col, column in ((1, "bytes"), (2, "media_seconds")):
            figure.add_trace(_coverage_bar(part, verdict, column, show_legend=col == 1),
                             row=1, col=col)
    figure.add_trace(_no_media_bar(rows), row=1, col=2)
    figure.update_layout(base_layout(barmode="stack", height=110 + 34 * len(labels),
                                     margin={"l": 10, "r": 10, "t": 70, "b": 30},
                                     legend=TOP_LEGEND))
    figure.update_xaxes(range=[0, 100], ticksuffix="%", dtick=25)
    figure.update_yaxes(categoryorder="array", categoryarray=labels, autorange="reversed")
    return style_axes(figure)


def _coverage_bar(part: pd.DataFrame, verdict: str, column: str, show_legend: bool) -> go.Bar:
    pct = part[f"pct_{column}"].to_numpy(dtype=float)
    amounts = [fmt.human_bytes(v) if column == "bytes" else fmt.human_seconds(v)
               for v in part[column]]
    return go.Bar(
        y=part["label"], x=pct, orientation="h", name=VERDICT_LABELS[verdict],
        legendgroup=verdict, showlegend=show_legend, marker_color=VERDICT_COLOURS[verdict],
        text=[fmt.percent(p / 100) if p >= 7 else "" for p in pct], textposition="inside",
        insidetextanchor="middle", textfont={"color": "#ffffff", "size": 12},
        customdata=np.column_stack([amounts, part["flows"].astype(str)]) if len(part) else None,
        hovertemplate=(f"<b>{VERDICT_LABELS[verdict]}</b><br>%{{y}}<br>%{{x:.2f}}% "
                       "(%{customdata[0]}, %{customdata[1]} flows)<extra></extra>"),
    )


def _no_media_bar(rows: pd.DataFrame) -> go.Bar:
    empty = rows[rows["total_media_seconds"] <= 0].drop_duplicates("label")
    return go.Bar(y=empty["label"], x=[100] * len(empty), orientation="h", showlegend=False,
                  marker_color="#f0f2f5", text=["no RTP media"] * len(empty),
                  textposition="inside", insidetextanchor="middle",
                  textfont={"color": "#5b6472"}, hoverinfo="skip", name="no media")


# ---------------------------------------------------------------------- timeline


def bin_seconds(span_seconds: float, max_bins: int = MAX_BINS, table_bins: int = 1) -> int:
    """The narrowest bin width from BIN_LADDER that keeps a span within max_bins bins and is a
    multiple of the timeline table's own bins (`table_bins` seconds)."""
    ladder = [w for w in BIN_LADDER if w % table_bins == 0] or [table_bins]
    for width in ladder:
        if span_seconds / width <= max_bins:
            return width
    return ladder[-1]


FLOW_LABEL_COLUMNS = ("flow_id", "service", "transport", "server_ip", "server_port",
                      "server_name", "media", "protocols", "encryption")


def flow_labels(flows: pd.DataFrame) -> pd.DataFrame:
    """capture, flow_id, verdict and a readable label for each flow."""
    if flows.empty:
        return pd.DataFrame(columns=["capture", "flow_id", "verdict", "label"])
    frame = flows.reindex(columns=["capture", *FLOW_LABEL_COLUMNS])
    verdicts = frame["encryption"].where(frame["encryption"].isin(VERDICTS), "unknown")
    labels = [_flow_label(row) for row in frame.to_dict("records")]
    return pd.DataFrame({"capture": frame["capture"], "flow_id": frame["flow_id"],
                         "verdict": verdicts, "label": labels})


def _flow_label(row: dict[str, Any]) -> str:
    what = fmt.text(row.get("media")) or fmt.text(row.get("protocols"))
    name = fmt.text(row.get("server_name"))
    server = f"{fmt.text(row.get('server_ip'))}:{fmt.text(row.get('server_port'))}"
    parts = [f"flow {fmt.text(row.get('flow_id'))}", fmt.text(row.get("service")),
             fmt.text(row.get("transport")), what, "→", server, name]
    return safe(" ".join(p for p in parts if p))


def timeline_series(timeline: pd.DataFrame, flows: pd.DataFrame) -> pd.DataFrame:
    """Bitrate per flow (the largest flows) and per verdict (the rest), in bins that keep each
    capture under MAX_BINS points per series; zero runs are cut to their two ends."""
    needed = {"capture", "flow_id", "second", "bytes"}
    if timeline.empty or not needed <= set(timeline.columns):
        return pd.DataFrame()
    merged = timeline.merge(_flow_verdicts(flows), on=["capture", "flow_id"], how="left")
    merged["verdict"] = merged["verdict"].fillna("unknown")
    parts = [_capture_series(capture, _labelled(group, flows)) for capture, group in
             merged.groupby("capture", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _flow_verdicts(flows: pd.DataFrame) -> pd.DataFrame:
    """capture, flow_id and verdict of each flow."""
    if flows.empty:
        return pd.DataFrame(columns=["capture", "flow_id", "verdict"])
    frame = flows.reindex(columns=["capture", "flow_id", "encryption"])
    return pd.DataFrame({"capture": frame["capture"], "flow_id": frame["flow_id"],
                         "verdict": frame["encryption"].where(
                             frame["encryption"].isin(VERDICTS), "unknown")})


def _labelled(rows: pd.DataFrame, flows: pd.DataFrame) -> pd.DataFrame:
    """One capture's timeline rows with their flows' labels, and whether each flow is drawn
    on its own (`drawn`): labels are made for those alone (a busy capture has hundreds of
    thousands of flows, a panel shows a few)."""
    drawn = rows["flow_id"].isin(_top_flows(rows))
    wanted = flows.head(0)  # (no flows table, or one without these columns: no labels)
    if {"capture", "flow_id"} <= set(flows.columns):
        wanted = flows[(flows["capture"] == rows["capture"].iloc[0])
                       & flows["flow_id"].isin(rows.loc[drawn, "flow_id"].unique())]
    names = flow_labels(wanted).drop_duplicates("flow_id").set_index("flow_id")["label"]
    label = rows["flow_id"].map(names).astype(object).where(drawn, "")
    return rows.assign(label=label.fillna("flow " + rows["flow_id"].astype(str)), drawn=drawn)


def _capture_series(capture: object, rows: pd.DataFrame) -> pd.DataFrame:
    seconds = pd.to_datetime(rows["second"], utc=True)
    table_bins = (int(rows["bin_seconds"].max()) if "bin_seconds" in rows.columns
                  else 1)  # (tables written before the bins could widen: one second)
    start = seconds.min()
    span = (seconds.max() - start).total_seconds() + table_bins
    width = bin_seconds(span, table_bins=table_bins)
    index = ((seconds - start).dt.total_seconds() // width).astype(np.int64)
    rows = rows.assign(bin=index.to_numpy(), key=_series_keys(rows))
    sums = rows.groupby(["key", "bin"], sort=True).agg(
        bytes=("bytes", "sum"), verdict=("verdict", "first"),
        label=("label", "first")).reset_index()
    series = _fill_gaps(sums, int(index.max()) + 1)
    start_ms = start.value / 1e6
    series["time_ms"] = start_ms + series["bin"] * width * 1000.0
    series["kbps"] = series["bytes"] * 8 / 1000 / width
    series["capture"], series["bin_seconds"] = capture, width
    return series


def _top_flows(rows: pd.DataFrame) -> set[object]:
    """The capture's flows drawn on their own: the MAX_FLOWS_PER_CAPTURE with most bytes."""
    totals = rows.groupby("flow_id")["bytes"].sum().sort_values(ascending=False)
    return set(totals.index[:MAX_FLOWS_PER_CAPTURE])


def _series_keys(rows: pd.DataFrame) -> pd.Series:
    """A series per flow drawn on its own (`_labelled`'s `drawn`), one per verdict for the rest."""
    keys = "flow-" + rows["flow_id"].astype(str)
    return keys.where(rows["drawn"], "rest-" + rows["verdict"].astype(str))


def _fill_gaps(sums: pd.DataFrame, bins: int) -> pd.DataFrame:
    """Every series on the full bin range, then only the points a stacked step area needs:
    non-zero bins and the zero bin that ends each run."""
    out = []
    for key, group in sums.groupby("key", sort=False):
        full = np.zeros(bins + 1)  # the extra bin closes the last step
        full[group["bin"].to_numpy()] = group["bytes"].to_numpy()
        keep = (full > 0) | (np.roll(full, 1) > 0)
        keep[0] = keep[-1] = True
        picked = np.flatnonzero(keep)
        verdict, label = group["verdict"].iloc[0], group["label"].iloc[0]
        if str(key).startswith("rest-"):
            label = f"other flows ({VERDICT_LABELS.get(verdict, verdict)})"
        out.append(pd.DataFrame({"key": key, "bin": picked, "bytes": full[picked],
                                 "verdict": verdict, "label": label,
                                 "weight": group["bytes"].sum()}))
    return pd.concat(out, ignore_index=True)


def timeline_figure(timeline: pd.DataFrame, flows: pd.DataFrame) -> go.Figure | None:
    """Stacked bitrate per flow over time, one panel per capture, coloured by verdict."""
    series = timeline_series(timeline, flows)
    if series.empty:
        return None
    captures = _largest_captures(series)
    height = 90 + PANEL_HEIGHT * len(captures)
    figure = make_subplots(rows=len(captures), cols=1, vertical_spacing=PANEL_GAP / height,
                           subplot_titles=[_panel_title(series, c) for c in captures])
    shown: set[str] = set()
    for row, capture in enumerate(captures, start=1):
        for trace in _capture_traces(series[series["capture"] == capture], shown):
            figure.add_trace(trace, row=row, col=1)
    figure.update_layout(base_layout(height=height, hovermode="closest",
                                     margin={"l": 10, "r": 10, "t": 70, "b": 40}))
    figure.update_xaxes(type="date", title_text="time (UTC)", title_font={"size": 11})
    figure.update_yaxes(title_text="kbit/s", rangemode="tozero", title_font={"size": 11})
    return style_axes(figure)


def _largest_captures(series: pd.DataFrame) -> list[object]:
    sizes = series.groupby("capture", sort=False)["bytes"].sum().sort_values(ascending=False)
    return list(sizes.index[:MAX_TIMELINE_CAPTURES])


def _panel_title(series: pd.DataFrame, capture: object) -> str:
    width = int(series.loc[series["capture"] == capture, "bin_seconds"].iloc[0])
    return f"{safe(capture)} — bitrate per flow, {width}-second bins"


def _capture_traces(series: pd.DataFrame, shown: set[str]) -> list[go.Scatter]:
    order = series.groupby("key", sort=False)["weight"].first().sort_values(ascending=False)
    traces = []
    for rank, key in enumerate(order.index):
        points = series[series["key"] == key]
        verdict = str(points["verdict"].iloc[0])
        traces.append(_flow_trace(points, verdict, rank, verdict not in shown))
        shown.add(verdict)
    return traces


def _flow_trace(points: pd.DataFrame, verdict: str, rank: int, first: bool) -> go.Scatter:
    colour = VERDICT_COLOURS.get(verdict, VERDICT_COLOURS["unknown"])
    label = str(points["label"].iloc[0])
    return go.Scatter(
        x=points["time_ms"].to_numpy(), y=points["kbps"].to_numpy().round(2),
        mode="lines", stackgroup="flows",
        line={"width": 0.6, "color": "#ffffff", "shape": "hv"},
        fillcolor=_rgba(colour, FLOW_SHADES[0 if first else rank % 2]),
        name=VERDICT_LABELS.get(verdict, verdict), legendgroup=verdict, showlegend=first,
        legendrank=1000 + VERDICTS.index(verdict) if verdict in VERDICTS else 1999,
        xhoverformat="%H:%M:%S",
        hovertemplate=f"{label}<br>%{{x}}: %{{y:.1f}} kbit/s<extra>{verdict}</extra>")


def _rgba(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


# ---------------------------------------------------------------------- stream quality


def stream_label(row: dict[str, Any]) -> str:
    media = fmt.text(row.get("media")) or "media"
    return safe(f"{media} {fmt.text(row.get('ssrc'))} {fmt.text(row.get('src_ip'))}:"
                f"{fmt.text(row.get('src_port'))} → {fmt.text(row.get('dst_ip'))}:"
                f"{fmt.text(row.get('dst_port'))}")


def quality_figure(streams: pd.DataFrame) -> go.Figure | None:
    """Loss and jitter of the largest streams, side by side."""
    if streams.empty or "packets" not in streams.columns:
        return None
    top = streams.sort_values("packets", ascending=False).head(MAX_QUALITY_STREAMS)
    rows = top.to_dict("records")
    labels = _unique([stream_label(r) for r in rows])
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                           subplot_titles=("Packet loss, % of expected",
                                           "Interarrival jitter (RFC 3550), ms"))
    figure.add_trace(_quality_bar(labels, top, "loss_pct", "loss", "lost %{x:.2f}%"), 1, 1)
    figure.add_trace(_quality_bar(labels, top, "jitter_mean_ms", "jitter_mean",
                                  "mean jitter %{x:.2f} ms"), 1, 2)
    figure.add_trace(_jitter_max_marks(labels, top), 1, 2)
    figure.update_layout(base_layout(barmode="overlay", height=120 + 30 * len(labels),
                                     margin={"l": 10, "r": 10, "t": 70, "b": 30},
                                     legend=TOP_LEGEND))
    figure.update_yaxes(categoryorder="array", categoryarray=labels, autorange="reversed",
                        tickfont={"size": 10})
    figure.update_xaxes(rangemode="tozero")
    return style_axes(figure)


QUALITY_NAMES = {"loss": "loss %", "jitter_mean": "jitter, mean", "jitter_max": "jitter, max"}


def _quality_bar(labels: Sequence[str], top: pd.DataFrame, column: str, kind: str,
                 hover: str) -> go.Bar:
    values = pd.to_numeric(top.get(column), errors="coerce").to_numpy(dtype=float)
    return go.Bar(y=list(labels), x=values, orientation="h", name=QUALITY_NAMES[kind],
                  marker_color=QUALITY_COLOURS[kind],
                  hovertemplate=f"%{{y}}<br>{hover}<extra></extra>")


def _jitter_max_marks(labels: Sequence[str], top: pd.DataFrame) -> go.Scatter:
    values = pd.to_numeric(top.get("jitter_max_ms"), errors="coerce").to_numpy(dtype=float)
    return go.Scatter(y=list(labels), x=values, mode="markers", name=QUALITY_NAMES["jitter_max"],
                      marker={"symbol": "line-ns", "size": 16,
                              "line": {"width": 3, "color": QUALITY_COLOURS["jitter_max"]}},
                      hovertemplate="%{y}<br>max jitter %{x:.2f} ms<extra></extra>")


def _unique(labels: list[str]) -> list[str]:
    """Labels made distinct (the same SSRC can appear in two captures)."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out
