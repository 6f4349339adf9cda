"""The world map of servers by role, from the servers table's location columns.

Countries where servers sit are shaded (flagged countries in red); a server with coordinates
gets a marker there, a server whose country alone is known gets an open marker at the
country's centre, labelled as such. Special addresses (private, documentation) are listed
under the map, not drawn. Every column is optional: without them the map says why it is empty.
The world outline is `geo.world_topology()`, built from an installed package and handed to
plotly.js in the page, so that drawing the map fetches nothing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from dashboards import fmt, geo
from dashboards.charts import base_layout, safe
from dashboards.inputs import records
from dashboards.style import (
    COUNTRY_COLOUR,
    FLAGGED_COLOUR,
    FLAGGED_COUNTRY_COLOUR,
    ROLE_COLOURS,
    ROLE_LABELS,
    ROLES,
)

GEO_LAYOUT = {
    "scope": "world", "resolution": 110, "projection": {"type": "natural earth"},
    "showframe": False, "showcoastlines": True, "coastlinecolor": "#aab3bf",
    "showland": True, "landcolor": "#eef0f3", "showocean": True, "oceancolor": "#f4f8fc",
    "showcountries": True, "countrycolor": "#c6ccd5", "showlakes": False,
    "lataxis": {"range": [-58, 90]}, "bgcolor": "#ffffff",
}


def primary_role(roles: object) -> str:
    return _primary_role(fmt.text(roles))


@functools.lru_cache(maxsize=1 << 10)  # (a few distinct role sets, many servers)
def _primary_role(roles: str) -> str:
    present = set(roles.split("+"))
    return next((role for role in ROLES if role in present), "other")


def truthy(value: object) -> bool:
    if fmt.is_missing(value):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def number(value: object) -> float:
    return fmt.to_float(value)


@dataclass(frozen=True, slots=True)
class Place:
    """Where one server goes on the map (or why it does not)."""

    row: Mapping[str, Any]
    role: str
    country: geo.Country | None
    lat: float
    lon: float
    precise: bool  # coordinates of the server itself, not a country centre
    special: str
    flagged: bool


def place(row: Mapping[str, Any]) -> Place:
    country = geo.country(fmt.text(row.get("country")))
    lat, lon = number(row.get("latitude")), number(row.get("longitude"))
    precise = math.isfinite(lat) and math.isfinite(lon)
    if not precise and country is not None and country.has_position:
        lat, lon = country.lat, country.lon
    return Place(row, primary_role(row.get("roles")), country, lat, lon, precise,
                 fmt.text(row.get("special_address")), truthy(row.get("flagged")))


def location_text(row: Mapping[str, Any]) -> str:
    """'Beijing, China' or 'China (country only)' or 'private address' (plain text)."""
    special = fmt.text(row.get("special_address"))
    if special:
        return f"{special} address" if "address" not in special else special
    country = geo.country(fmt.text(row.get("country")))
    if country is None:
        return ""
    city = ", ".join(p for p in (fmt.text(row.get("city")), fmt.text(row.get("region"))) if p)
    coordinates = math.isfinite(number(row.get("latitude")))
    where = f"{city}, {country.name}" if city else country.name
    return where if coordinates or city else f"{where} (country only)"


def hover_text(item: Place) -> str:
    row = item.row
    lines = [f"<b>{safe(row.get('ip'))}</b>"]
    names = fmt.text(row.get("names"))
    if names:
        lines.append(safe(_short(names, 90)))
    lines.append(f"role: {safe(ROLE_LABELS.get(item.role, item.role))}"
                 f" ({safe(row.get('roles'))})")
    lines.append(safe(location_text(row)) + _source_suffix(row))
    asn = " ".join(p for p in (_asn(row.get("asn")), fmt.text(row.get("organisation"))) if p)
    if asn:
        lines.append(safe(asn))
    rtt = fmt.milliseconds(row.get("rtt_min_ms"))
    plausibility = fmt.text(row.get("plausibility"))
    if rtt or plausibility:
        lines.append(safe(" · ".join(p for p in (f"RTT {rtt}" if rtt else "",
                                                 f"plausibility: {plausibility}"
                                                 if plausibility else "") if p)))
    if item.flagged:
        lines.append(f"<b>flagged</b>: {safe(row.get('flag_reason'))}")
    return "<br>".join(lines)


def _source_suffix(row: Mapping[str, Any]) -> str:
    source = fmt.text(row.get("coordinates_source")) or fmt.text(row.get("country_source"))
    return f" <i>({safe(source)})</i>" if source else ""


def _asn(value: object) -> str:
    text = fmt.text(value)
    if not text:
        return ""
    text = text.removesuffix(".0")
    return text if text.upper().startswith("AS") else f"AS{text}"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class MapResult:
    figure: go.Figure
    notes: list[str] = field(default_factory=list)  # plain text, escaped by the page
    placed: int = 0


# the servers table's columns the map reads (its rows are made of these alone)
MAP_COLUMNS = ("capture", "ip", "names", "roles", "country", "country_source", "special_address",
               "region", "city", "latitude", "longitude", "coordinates_source", "asn",
               "organisation", "rtt_min_ms", "plausibility", "flagged", "flag_reason")


def map_figure(servers: pd.DataFrame, summary: Mapping[str, Any]) -> MapResult:
    read = servers[[c for c in MAP_COLUMNS if c in servers.columns]]
    places = [place(row) for row in records(read)] if len(servers) else []
    flagged_codes = flagged_countries(places, summary.get("flag_countries") or ())
    drawn = [p for p in places if not p.special and math.isfinite(p.lat)]
    figure = go.Figure(go.Scattergeo(lat=[], lon=[], showlegend=False, hoverinfo="skip"))
    _add_countries(figure, drawn, flagged_codes)
    _add_vantage(figure, summary.get("vantage"), drawn)
    _add_markers(figure, [p for p in drawn if p.precise])
    _add_country_markers(figure, [p for p in drawn if not p.precise])
    if any(p.country and p.country.alpha3 in flagged_codes for p in drawn):
        figure.add_trace(go.Scattergeo(lat=[None], lon=[None], mode="markers",
                                       name="flagged country", hoverinfo="skip",
                                       marker={"symbol": "square", "size": 12,
                                               "color": FLAGGED_COUNTRY_COLOUR}))
    figure.update_layout(base_layout(height=560, geo=GEO_LAYOUT, showlegend=True,
                                     margin={"l": 0, "r": 0, "t": 36, "b": 0},
                                     legend={"orientation": "h", "y": 0, "x": 0,
                                             "yanchor": "top", "font": {"size": 12}}))
    return MapResult(figure, map_notes(places, servers), len(drawn))


def flagged_countries(places: Iterable[Place], configured: Iterable[object]) -> set[str]:
    """alpha-3 codes of countries to show as flagged: configured ones and flagged servers'."""
    codes = {c.alpha3 for c in (geo.country(str(x)) for x in configured) if c}
    codes |= {p.country.alpha3 for p in places if p.flagged and p.country}
    return {c for c in codes if c}


def _add_countries(figure: go.Figure, drawn: list[Place], flagged: set[str]) -> None:
    by_country: dict[str, list[Place]] = {}
    for item in drawn:
        if item.country and geo.has_shape(item.country.alpha3):
            by_country.setdefault(item.country.alpha3, []).append(item)
    if not by_country:
        return
    codes = sorted(by_country)
    figure.add_trace(go.Choropleth(
        locations=codes, locationmode="ISO-3", z=[1 if c in flagged else 0 for c in codes],
        zmin=0, zmax=1, showscale=False, name="countries with servers",
        colorscale=[[0, COUNTRY_COLOUR], [0.5, COUNTRY_COLOUR], [0.5, FLAGGED_COUNTRY_COLOUR],
                    [1, FLAGGED_COUNTRY_COLOUR]],
        marker={"line": {"color": "#ffffff", "width": 0.8}},
        text=[_country_hover(by_country[c], c in flagged) for c in codes],
        hovertemplate="%{text}<extra></extra>", showlegend=False))


def _country_hover(items: list[Place], flagged: bool) -> str:
    country = items[0].country
    name = country.name if country else ""
    roles = sorted({ROLE_LABELS.get(i.role, i.role) for i in items})
    text = f"<b>{safe(name)}</b><br>{len(items)} server(s): {safe(', '.join(roles))}"
    return text + ("<br><b>flagged country</b>" if flagged else "")


def _add_markers(figure: go.Figure, items: list[Place]) -> None:
    for role in ROLES:
        chosen = [p for p in items if p.role == role]
        if chosen:
            figure.add_trace(_server_trace(chosen, role))


def _server_trace(items: list[Place], role: str) -> go.Scattergeo:
    return go.Scattergeo(
        lat=[p.lat for p in items], lon=[p.lon for p in items], name=ROLE_LABELS[role],
        mode="markers", hovertext=[hover_text(p) for p in items],
        hovertemplate="%{hovertext}<extra></extra>",
        marker={"size": [15 if p.flagged else 11 for p in items], "color": ROLE_COLOURS[role],
                "opacity": 0.95,
                "line": {"width": [3 if p.flagged else 1.2 for p in items],
                         "color": [FLAGGED_COLOUR if p.flagged else "#ffffff" for p in items]}})


def _add_country_markers(figure: go.Figure, items: list[Place]) -> None:
    """One open marker per country for the servers located to a country only."""
    groups: dict[str, list[Place]] = {}
    for item in items:
        groups.setdefault(item.country.alpha2 if item.country else "", []).append(item)
    for role in ROLES:
        chosen = [g for g in groups.values() if min(ROLES.index(p.role) for p in g)
                  == ROLES.index(role)]
        if chosen:
            figure.add_trace(_country_trace(chosen, role))


MAX_HOVER_SERVERS = 8


def _country_trace(groups: list[list[Place]], role: str) -> go.Scattergeo:
    colour = ROLE_COLOURS[role]
    flagged = [any(p.flagged for p in g) for g in groups]
    return go.Scattergeo(
        lat=[g[0].lat for g in groups], lon=[g[0].lon for g in groups],
        name=f"{ROLE_LABELS[role]} (country only)", mode="markers+text",
        text=[_country_label(g, f) for g, f in zip(groups, flagged, strict=True)],
        textposition="middle right",
        textfont={"size": 11, "color": [FLAGGED_COLOUR if f else colour for f in flagged]},
        hovertext=[_country_group_hover(g) for g in groups],
        hovertemplate="%{hovertext}<extra></extra>",
        marker={"symbol": "circle-open", "color": colour, "opacity": 0.95,
                "size": [12 + 2 * min(len(g) - 1, 4) for g in groups],
                "line": {"width": 3, "color": colour}})


def _country_label(group: list[Place], flagged: bool) -> str:
    code = group[0].country.alpha2 if group[0].country else ""
    count = f" ×{len(group)}" if len(group) > 1 else ""
    return ("⚑ " if flagged else "") + safe(code) + count


def _country_group_hover(group: list[Place]) -> str:
    shown = "<br>―――<br>".join(hover_text(p) for p in group[:MAX_HOVER_SERVERS])
    more = len(group) - MAX_HOVER_SERVERS
    tail = f"<br>… and {more} more" if more > 0 else ""
    return shown + tail + "<br><i>position: country only, drawn at the country's centre</i>"


def vantages(summary_vantage: object) -> dict[str, Mapping[str, Any]]:
    """Vantage points by capture: summary.json holds one per capture ({capture: {...}}) or,
    in older outputs, a single one."""
    if not isinstance(summary_vantage, Mapping):
        return {}
    if "latitude" in summary_vantage or "country" in summary_vantage:
        return {"": summary_vantage}
    return {str(k): v for k, v in summary_vantage.items() if isinstance(v, Mapping)}


@dataclass(frozen=True, slots=True)
class VantagePoint:
    capture: str  # '' when one point stands for every capture
    lat: float
    lon: float
    precise: bool  # False: the country's centre
    text: str  # hover text, escaped


def vantage_points(summary_vantage: object) -> list[VantagePoint]:
    points = []
    for capture, v in vantages(summary_vantage).items():
        lat, lon = number(v.get("latitude")), number(v.get("longitude"))
        precise = math.isfinite(lat) and math.isfinite(lon)
        country = geo.country(fmt.text(v.get("country")))
        if not precise and country is not None and country.has_position:
            lat, lon = country.lat, country.lon
        if math.isfinite(lat) and math.isfinite(lon):
            where = country.name if country else fmt.text(v.get("country"))
            text = (f"capture point {safe(capture)}<br>{safe(where)}"
                    f"{'' if precise else ' (country only)'}<br><i>{safe(v.get('source'))}</i>")
            points.append(VantagePoint(capture, lat, lon, precise, text))
    return points


def _add_vantage(figure: go.Figure, vantage: object, drawn: list[Place]) -> None:
    points = vantage_points(vantage)
    if not points:
        return
    figure.add_trace(_paths(points, drawn))
    figure.add_trace(go.Scattergeo(
        lat=[p.lat for p in points], lon=[p.lon for p in points], mode="markers",
        name="capture point", hovertext=[p.text for p in points],
        hovertemplate="%{hovertext}<extra></extra>",
        marker={"symbol": ["star" if p.precise else "star-open" for p in points], "size": 16,
                "color": "#1d2330", "line": {"width": 1.5, "color": "#1d2330"}}))


def _paths(points: list[VantagePoint], drawn: list[Place]) -> go.Scattergeo:
    """Thin lines from each capture point to the servers its capture talked to."""
    path_lat: list[float | None] = []
    path_lon: list[float | None] = []
    for point in points:
        for item in drawn:
            if not point.capture or fmt.text(item.row.get("capture")) == point.capture:
                path_lat += [point.lat, item.lat, None]
                path_lon += [point.lon, item.lon, None]
    return go.Scattergeo(lat=path_lat, lon=path_lon, mode="lines", opacity=0.6,
                         line={"width": 1, "color": "#9aa4b2"}, hoverinfo="skip",
                         showlegend=False)


MAX_LISTED = 40  # addresses a note names; the servers table has them all


def _listed(addresses: list[str]) -> str:
    shown, more = fmt.capped(addresses, MAX_LISTED)
    tail = f" and {more:,} more (the servers table lists them all)" if more else ""
    return ", ".join(shown) + tail + "."


def map_notes(places: list[Place], servers: pd.DataFrame) -> list[str]:
    if len(servers) and not ({"country", "latitude"} & set(servers.columns)):
        return ["The servers table has no location columns (this analysis ran without "
                "geolocation), so no server can be placed on the map."]
    notes = []
    special = [f"{fmt.text(p.row.get('ip'))} ({p.special})" for p in places if p.special]
    if special:
        notes.append("Not on the map, special addresses: " + _listed(special))
    unplaced = [p for p in places if not p.special and not math.isfinite(p.lat)]
    unknown = [fmt.text(p.row.get("ip")) for p in unplaced if p.country is None]
    if unknown:
        notes.append("Not on the map, location unknown: " + _listed(unknown))
    regions: dict[str, list[str]] = {}  # e.g. the registries' "EU", a region, not a place
    for p in unplaced:
        if p.country is not None:
            regions.setdefault(f"{p.country.name} ({p.country.alpha2})", []).append(
                fmt.text(p.row.get("ip")))
    for region, addresses in sorted(regions.items()):
        notes.append(f"Not on the map, placed only in {region}, for which the map has no "
                     "position: " + _listed(addresses))
    unshaped = sorted({p.country.name for p in places if p.country and not p.special
                       and math.isfinite(p.lat) and not geo.has_shape(p.country.alpha3)})
    if unshaped:  # small islands, and the few countries countryinfo gives no outline
        text = ", ".join(unshaped)  # (a name may end in a full stop: "Virgin Islands, U.S.")
        notes.append(f"No outline on this map, marker only: {text}"
                     + ("" if text.endswith(".") else "."))
    return notes
