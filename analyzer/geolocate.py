"""Geolocate the servers table: every value with its source, physics checks, hints and flags.

Runs on the combined tables (after all captures are read), so the vantage point is decided per
capture: given with --vantage / --vantage-country, else inferred from that capture's public
client addresses (and said so), else unknown.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyzer.frames import distinct_texts
from analyzer.geo import (
    GeoResolver,
    Location,
    Plausibility,
    Vantage,
    plausibility,
    provenance,
    special_purpose,
)
from analyzer.geo_hints import HostnameHint, hostname_hints

GEO_COLUMNS = {
    "country": "best country: the first user database's answer, else the registry's",
    "country_source": "the source of `country` (database name and build date)",
    "geo_sources": "every source's country: 'US (GeoLite2-City 2024-05-01); CN (registry ...)'",
    "geo_disagreement": "true when sources give different countries",
    "special_address": "private, documentation, ... (such addresses are never geolocated)",
    "region": "region or state, with its source in coordinates_source",
    "city": "city",
    "latitude": "latitude from a city database (degrees)",
    "longitude": "longitude from a city database (degrees)",
    "accuracy_km": "the database's accuracy radius, km",
    "coordinates_source": "source of city/region/coordinates",
    "asn": "autonomous system number", "organisation": "AS organisation",
    "asn_source": "source of asn/organisation",
    "plausibility": "consistent, implausible or unknown: does the RTT allow the claimed place",
    "plausibility_text": "the reasoning, per claimed place",
    "hostname_hints": "location codes found in the server's names, with agreement",
    "flagged": "true when a source places the server in a --flag-country",
    "flag_reason": "which country, which source, and how sure",
}


@dataclass(frozen=True, slots=True)
class GeoSettings:
    databases: tuple[str, ...] = ()
    vantage_point: str = ""
    vantage_country: str = ""
    flag_countries: tuple[str, ...] = ()
    search_default_dirs: bool = True


def vantage_for(settings: GeoSettings, resolver: GeoResolver, clients: Sequence[str]) -> Vantage:
    if settings.vantage_point:
        return Vantage.parse_point(settings.vantage_point)
    if settings.vantage_country:
        return Vantage.for_country(settings.vantage_country)
    return Vantage.infer(_public_client_locations(resolver, clients))


def _public_client_locations(resolver: GeoResolver, clients: Sequence[str]) -> Iterator[Location]:
    """The locations of the public client addresses, in address order, up to the second
    country (then no country is inferred): a capture may have a million private clients."""
    countries: set[str] = set()
    for ip in sorted(set(clients)):
        if special_purpose(ip):
            continue
        location = resolver.locate(ip)
        yield location
        if location.country:
            countries.add(location.country)
            if len(countries) > 1:
                return


def geolocate(tables: dict[str, pd.DataFrame], settings: GeoSettings
              ) -> tuple[pd.DataFrame, list[dict[str, str]], dict[str, dict[str, object]]]:
    """(servers with geo columns, database provenance, vantage per capture)."""
    databases = [Path(p) for p in settings.databases]
    with GeoResolver(databases, settings.search_default_dirs) as resolver:
        vantages: dict[str, Vantage] = {}
        rows = _GeoRows()
        for capture, servers in tables["servers"].groupby("capture", sort=False):
            clients = tables["flows"].loc[tables["flows"]["capture"] == capture, "client_ip"]
            vantage = vantages[str(capture)] = vantage_for(
                settings, resolver, distinct_texts(clients))
            rows.add(resolver, vantage, servers, settings.flag_countries)
        servers = pd.concat([tables["servers"], rows.frame(tables["servers"].index)], axis=1)
        return servers, provenance(resolver), {c: _vantage_dict(v) for c, v in vantages.items()}


def _vantage_dict(v: Vantage) -> dict[str, object]:
    return {"latitude": v.latitude, "longitude": v.longitude, "country": v.country,
            "source": v.source or "unknown: no --vantage given and no public client address"}


class _GeoRows:
    """The geo columns of servers, capture after capture. They depend on a server's address
    only through its location, and all but the hostname hints not on its names: servers with
    the same answers and RTT share one row (a capture with a hundred thousand servers has far
    fewer), taken once per server when the frame is made."""

    def __init__(self) -> None:
        self.distinct: list[dict[str, object]] = []
        self.which: list[int] = []  # per server: its row in `distinct`
        self.hints: list[str] = []  # per server

    def add(self, resolver: GeoResolver, vantage: Vantage, servers: pd.DataFrame,
            flags: tuple[str, ...]) -> None:
        # (by the Location's id: `anonymous` gives equal answers one object, and hashing a
        # Location costs more than the rest; the vantage is the capture's)
        shared: dict[tuple[int, float | None], int] = {}
        for ip, rtt, names in zip(servers["ip"].tolist(), servers["rtt_min_ms"].tolist(),
                                  servers["names"].tolist(), strict=True):
            rtt_ms = None if math.isnan(rtt) else float(rtt)  # (NaN is no key: it equals nothing)
            location = resolver.anonymous(str(ip))
            at = shared.get((id(location), rtt_ms))
            if at is None:
                at = shared[(id(location), rtt_ms)] = len(self.distinct)
                self.distinct.append(_geo_row(vantage, location, rtt_ms, flags))
            self.which.append(at)
            no_names = isinstance(names, str) and not names  # (most servers: no hints to find)
            self.hints.append("" if no_names else _hints_text(vantage, location, rtt_ms,
                                                                str(names)))

    def frame(self, index: pd.Index) -> pd.DataFrame:
        """The columns, in `index` order (the servers', as added); dtypes as the rows' values
        give them (the distinct rows hold every value there is)."""
        geo = pd.DataFrame(self.distinct, columns=list(GEO_COLUMNS)).take(self.which)
        geo.index = index
        geo["hostname_hints"] = pd.Series(self.hints, index=index, dtype=object).astype(
            geo["hostname_hints"].dtype)
        return geo


def _geo_row(vantage: Vantage, location: Location, rtt_ms: float | None,
             flags: tuple[str, ...]) -> dict[str, object]:
    """The geo columns of a server at `location` with no hostname hints."""
    checks = plausibility(location, rtt_ms, vantage)
    return {**_location_columns(location), **_plausibility_columns(checks),
            "hostname_hints": "", **_flag_columns(location, checks, flags)}


def _hints_text(vantage: Vantage, location: Location, rtt_ms: float | None, names: str) -> str:
    hints = [h for name in _names(names) for h in hostname_hints(name, location, vantage, rtt_ms)]
    return "; ".join(_hint_text(h) for h in _unique_hints(hints))


def _names(names: str) -> list[str]:
    """Host names from the servers table's 'name (source); ...' text."""
    found = []
    for item in names.split("; "):
        name = item.rsplit(" (", 1)[0].strip()
        if name and not name.startswith("*") and name not in found:
            found.append(name)
    return found


def _location_columns(loc: Location) -> dict[str, object]:
    best = loc.countries[0] if loc.countries else None
    coords = loc.latitude or loc.city or loc.region
    asn = loc.asn or loc.organisation
    return {
        "country": best.value if best else "", "country_source": best.source if best else "",
        "geo_sources": loc.summary, "geo_disagreement": loc.disagreement,
        "special_address": loc.special,
        "region": loc.region.value if loc.region else "",
        "city": loc.city.value if loc.city else "",
        "latitude": loc.latitude.value if loc.latitude else math.nan,
        "longitude": loc.longitude.value if loc.longitude else math.nan,
        "accuracy_km": loc.accuracy_km.value if loc.accuracy_km else math.nan,
        "coordinates_source": coords.source if coords else "",
        "asn": loc.asn.value if loc.asn else pd.NA,
        "organisation": loc.organisation.value if loc.organisation else "",
        "asn_source": asn.source if asn else "",
    }


def _plausibility_columns(checks: tuple[Plausibility, ...]) -> dict[str, object]:
    verdicts = {c.verdict for c in checks}
    if "implausible" in verdicts:
        overall = "implausible"
    elif verdicts == {"consistent"}:
        overall = "consistent"
    else:
        overall = "unknown"
    return {"plausibility": overall, "plausibility_text": " | ".join(c.text for c in checks)}


def _unique_hints(hints: list[HostnameHint]) -> list[HostnameHint]:
    seen: dict[tuple[str, str], HostnameHint] = {}
    for hint in hints:
        seen.setdefault((hint.code, hint.country), hint)
    return list(seen.values())


def _hint_text(h: HostnameHint) -> str:
    verdict = []
    if h.agrees_with:
        verdict.append(f"agrees with {h.agrees_with}")
    if h.disagrees_with:
        verdict.append(f"disagrees with {h.disagrees_with}")
    tail = f" ({'; '.join(verdict)})" if verdict else ""
    return f"{h.code.upper()} = {h.place}, {h.country} in {h.name}{tail}"


def _flag_columns(loc: Location, checks: tuple[Plausibility, ...],
                  flags: tuple[str, ...]) -> dict[str, object]:
    hits = [c for c in loc.countries if c.value in flags]
    if not hits:
        return {"flagged": False, "flag_reason": ""}
    country = hits[0].value
    sources = ", ".join(c.source for c in hits)
    physics = {c.verdict for c in checks if c.claimed_country == country}
    agree = len(hits) >= 2 and not loc.disagreement
    if "implausible" in physics:
        confidence = "doubtful: the RTT rules this location out"
    elif "consistent" in physics and agree:
        confidence = "high: sources agree and the RTT allows it"
    elif "consistent" in physics:
        confidence = "medium: one source, RTT consistent"
    else:
        confidence = "low: no RTT check possible" if not agree else "medium: sources agree"
    other = " (other sources disagree)" if loc.disagreement else ""
    return {"flagged": True,
            "flag_reason": f"{country} per {sources}{other}; confidence {confidence}"}
