"""Known places, great-circle distances and hostname geohints.

Places come from the `airportsdata` package (every airport and landing strip with an ICAO,
IATA or FAA code, with latitude, longitude and ISO 3166-1 country; release named in
`AIRPORTS_SOURCE`). They serve two purposes:

* the set of known places of each country: the smallest distance from a vantage point (or from
  any place of the vantage country) to any place of a claimed country, minus `PLACE_SLACK_KM`,
  is a conservative lower bound on how far a server in that country must be;
* the IATA codes that operators put in hostnames (`sjc` in `zoomsjccv154mmr.sjc.zoom.us`).

A hostname hint is one line of evidence, reported with what it agrees and disagrees with,
never a verdict on its own (codes are reused and misused, e.g. "ash" for Ashburn).
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, NamedTuple

import airportsdata
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

if TYPE_CHECKING:
    from analyzer.geo import Location, Vantage

AIRPORTS_SOURCE = f"airportsdata {airportsdata.__version__}"
_AIRPORTS_DATA = resources.files(airportsdata)  # airports.csv, iata_macs.csv

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius
# Light in fibre covers ~200 km per ms one way, so a round trip of r ms reaches r/2*200 km.
KM_PER_MS_RTT = 100.0
# How much closer than its country's nearest known airfield a server might sit (a border
# region far from any strip); subtracted so that the country lower bound stays conservative.
PLACE_SLACK_KM = 100.0
# A hostname code names a metro area: an airport within this radius of a claimed point agrees.
METRO_RADIUS_KM = 150.0
_BLOCK_ROWS = 256  # rows per block in the all-pairs nearest-distance search

# Labels and label parts that are IATA codes but in hostnames are usually words, jargon or
# country abbreviations (CAN is Guangzhou, AUS Austin, IND Indianapolis: ambiguous, so dropped).
_STOP_WORDS_TEXT = """
    www api app web cdn dns com net org edu gov mil int biz pro srv vpn msg sta prd pop cld dev
    stg tst uat img pic vid aud cam log ntp ftp ssh rdp rtr gtw mmr sip rtp sfu mcu tcp udp tls
    ssl ice sec mon ops adm dmz lan wan vip ads rec box hub lab sys bot sso iam bak bkp tmp ext
    acc agg bbr ccr rcr agr cor edg bdr bgw pni xcr dcr lag ipt msr csr asr nsr cpe dsl dyn res
    usr all any new old one two red blu grn the and for mgr ctl zcc mta mxs smt imp ppp ptr
    rev nat vps cab gpu cpu ram ssd hdd rtc sbc pbx ims cfg str aes gcm key mux alb elb eks gke
    aks ecs kms mgw pod pub pri sub reg loc geo isp noc soc sre cdp cms crm cli gui sdk vcs scm
    xml yml rss sms mms tts stt nlp mic pix hls mpd srt wrt xmp pdu row tor
    eur asi usa can chn deu gbr jpn ind bra rus aus ita esp nld kor sgp
"""
HINT_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
# Airfields that see no scheduled passenger service; their codes are not accepted as hints.
_NON_COMMERCIAL = re.compile(
    r"\b(army|air base|air force|afb|aaf|naval|navy|heliport|helipad|seaplane|military|"
    r"airstrip|air station|ranch|landing strip)\b",
    re.IGNORECASE,
)
# Zoom server names put the site code right after the vendor prefix: zoom<code>...<n>mmr|zc.
LABEL_CACHE = 4096  # host labels whose candidate codes are kept
_ZOOM_HOST = re.compile(r"^zoom([a-z]{3})[a-z]{0,3}\d+(?:mmr|zc)$")


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlam = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def rtt_reach_km(min_rtt_ms: float) -> float:
    """Farthest a server can be for a round trip of `min_rtt_ms` (speed of light in fibre)."""
    return min_rtt_ms * KM_PER_MS_RTT


# --- known places -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    """An airport (kind 'iata') or an IATA metropolitan city code (kind 'iata-city')."""

    code: str
    kind: str
    name: str
    city: str
    country: str
    latitude: float
    longitude: float


class Airfield(NamedTuple):
    """The columns of one airportsdata airport used here (coordinates as written in its CSV)."""

    icao: str
    iata: str
    name: str
    city: str
    country: str
    lat: str
    lon: str

    @property
    def latitude(self) -> float:
        return float(self.lat)

    @property
    def longitude(self) -> float:
        return float(self.lon)


class IataCity(NamedTuple):
    """An IATA multi-airport city (LON, NYC, ...) and its airports, as airportsdata has it."""

    name: str
    country: str
    airports: tuple[Airfield, ...]


@functools.cache
def _airport_table() -> pa.Table:
    """airportsdata's airports.csv, the columns used here, as text. Read by Arrow, column by
    column: `airportsdata.load` builds a dict per airport (28,000, converting every number),
    and `load_iata_macs` loads them all again."""
    columns = list(Airfield._fields)
    options = pcsv.ConvertOptions(include_columns=columns,
                                  column_types=dict.fromkeys(columns, pa.string()),
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    with _AIRPORTS_DATA.joinpath("airports.csv").open("rb") as handle:
        return pcsv.read_csv(handle, convert_options=options)


@functools.cache
def _column(name: str) -> tuple[str, ...]:
    return tuple(_airport_table().column(name).to_pylist())


def _airfield(row: int) -> Airfield:
    return Airfield(**_airport_table().slice(row, 1).to_pylist()[0])


def _rows_keyed(key: str) -> dict[str, int]:
    """Row per code as `airportsdata.load(key.upper())` keys them (the last row wins)."""
    rows = dict(zip(_column(key), range(_airport_table().num_rows), strict=True))
    rows.pop("", None)
    return rows


@functools.cache
def _airport_rows() -> tuple[int, ...]:
    """The rows of the airports of `airportsdata.load("ICAO")`, in its order."""
    return tuple(_rows_keyed("icao").values())


@functools.cache
def _airport_rows_by_iata() -> dict[str, list[int]]:
    """The rows of `_airport_rows` with an IATA code, per code."""
    iata = _column("iata")
    found: dict[str, list[int]] = {}
    for row in _airport_rows():
        if iata[row]:
            found.setdefault(iata[row], []).append(row)
    return found


@functools.cache
def _iata_cities() -> dict[str, IataCity]:
    """`airportsdata.load_iata_macs()`: each city's name and country from its first row."""
    by_iata = _rows_keyed("iata")
    cities: dict[str, tuple[str, str, dict[str, int]]] = {}
    with _AIRPORTS_DATA.joinpath("iata_macs.csv").open(encoding="utf8") as handle:
        for row in csv.DictReader(handle):
            _, _, members = cities.setdefault(row["City Code"],
                                              (row["City Name"], row["Country"], {}))
            members[row["Airport Code"]] = by_iata[row["Airport Code"]]
    return {code: IataCity(name, country, tuple(map(_airfield, members.values())))
            for code, (name, country, members) in cities.items()}


def _unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    return np.column_stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))


@functools.cache
def _country_vectors(country: str) -> np.ndarray:
    countries, lat, lon = _column("country"), _column("lat"), _column("lon")
    rows = [(float(lat[r]), float(lon[r])) for r in _airport_rows() if countries[r] == country]
    coords = np.array(rows, dtype=float).reshape(-1, 2)
    return _unit_vectors(coords[:, 0], coords[:, 1])


def known_country(country: str) -> bool:
    """True when the place data holds at least one place in `country` (ISO alpha-2)."""
    return len(_country_vectors(country.upper())) > 0


def _nearest_km(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest great-circle distance between two sets of unit vectors."""
    if len(a) > len(b):
        a, b = b, a
    best_cos = max(
        float((a[i : i + _BLOCK_ROWS] @ b.T).max()) for i in range(0, len(a), _BLOCK_ROWS)
    )
    return EARTH_RADIUS_KM * math.acos(max(-1.0, min(1.0, best_cos)))


@dataclass(frozen=True, slots=True)
class Area:
    """Where something is or is claimed to be: a point with a radius, or a whole country."""

    country: str = ""
    latitude: float | None = None
    longitude: float | None = None
    radius_km: float = 0.0

    @property
    def is_point(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    def vectors(self) -> np.ndarray:
        if self.latitude is not None and self.longitude is not None:
            return _unit_vectors(np.array([self.latitude]), np.array([self.longitude]))
        return _country_vectors(self.country.upper())

    def slack_km(self) -> float:
        return self.radius_km if self.is_point else PLACE_SLACK_KM

    def describe(self) -> str:
        if self.latitude is None or self.longitude is None:
            return self.country
        radius = f" (±{self.radius_km:,.0f} km)" if self.radius_km else ""
        return f"{self.latitude:.2f}, {self.longitude:.2f}{radius}"


@functools.lru_cache(maxsize=1024)
def lower_bound_km(a: Area, b: Area) -> float | None:
    """Conservative smallest distance between two areas; None when one has no known place."""
    va, vb = a.vectors(), b.vectors()
    if len(va) == 0 or len(vb) == 0:
        return None
    return max(0.0, _nearest_km(va, vb) - a.slack_km() - b.slack_km())


@functools.cache
def iata_place(code: str) -> Place | None:
    """The place an IATA code accepted as a hostname hint names: an airport with likely
    passenger service (the last in `_airport_rows` order), else an IATA multi-airport city code
    (LON, NYC, TYO ...) placed at its airports' centroid."""
    code = code.upper()
    airports = [a for a in map(_airfield, _airport_rows_by_iata().get(code, ()))
                if not _NON_COMMERCIAL.search(a.name)]
    if airports:
        a = airports[-1]
        return Place(a.iata, "iata", a.name, a.city, a.country, a.latitude, a.longitude)
    city = _iata_cities().get(code)
    return None if city is None else _city_place(code, city)


def _city_place(code: str, city: IataCity) -> Place:
    members = city.airports
    lat = sum(m.latitude for m in members) / len(members)
    lon = sum(m.longitude for m in members) / len(members)
    return Place(code, "iata-city", city.name, city.name, city.country, lat, lon)


# --- hostname hints -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostnameHint:
    """An IATA code found in a hostname, with the evidence it agrees or disagrees with.

    `matched` says how it was found, comma-separated when found several ways: 'label' (a whole
    label such as `sjc.`), 'label part' (letters between digits or dashes, as in `lhr25s34`)
    or 'zoom host prefix' (`zoom<code>…mmr`). `agrees_with` / `disagrees_with` list the
    sources (and the RTT check) separated by '; '.
    """

    name: str
    code: str
    kind: str
    place: str
    country: str
    latitude: float
    longitude: float
    matched: str
    agrees_with: str
    disagrees_with: str


def hostname_hints(
    name: str,
    location: Location | None = None,
    vantage: Vantage | None = None,
    min_rtt_ms: float | None = None,
) -> tuple[HostnameHint, ...]:
    """IATA location codes in `name`, each compared with `location` and the RTT bound."""
    found: dict[Place, list[str]] = {}
    for code, how in _candidate_codes(name):
        place = iata_place(code)
        if place is not None and how not in found.setdefault(place, []):
            found[place].append(how)
    return tuple(
        _hint(name, place, ", ".join(ways), location, vantage, min_rtt_ms)
        for place, ways in found.items()
    )


def _host_labels(name: str) -> list[str]:
    """The labels left of the registrable domain (`a.b.zoom.us` -> a, b; `x.y.com.cn` -> x)."""
    labels = [label for label in name.lower().rstrip(".").split(".") if label]
    suffix = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3 else 2
    return labels[:-suffix] if len(labels) > suffix else []


def _candidate_codes(name: str) -> list[tuple[str, str]]:
    return [found for label in _host_labels(name) for found in _label_codes(label)]


@functools.lru_cache(maxsize=LABEL_CACHE)
def _label_codes(label: str) -> tuple[tuple[str, str], ...]:
    """A label's candidate codes and how each was found (labels repeat: www, api, cdn...)."""
    candidates: list[tuple[str, str]] = []
    zoom = _ZOOM_HOST.match(label)
    if zoom:
        candidates.append((zoom.group(1), "zoom host prefix"))
    parts = [p for p in re.split(r"[^a-z]+", label) if p]
    how = "label" if parts == [label] else "label part"
    candidates.extend((p, how) for p in parts if len(p) == 3)
    return tuple((code, how) for code, how in candidates if code not in HINT_STOP_WORDS)


def _hint(
    name: str,
    place: Place,
    how: str,
    location: Location | None,
    vantage: Vantage | None,
    min_rtt_ms: float | None,
) -> HostnameHint:
    agree, disagree = _compare_sources(place, location)
    rtt_verdict = _rtt_check(place, vantage, min_rtt_ms)
    if rtt_verdict:
        (agree if rtt_verdict[0] else disagree).append(rtt_verdict[1])
    label = f"{place.name}, {place.city}" if place.city != place.name else place.name
    return HostnameHint(
        name, place.code, place.kind, label, place.country, place.latitude, place.longitude,
        how, "; ".join(agree), "; ".join(disagree),
    )  # fmt: skip


def _compare_sources(place: Place, location: Location | None) -> tuple[list[str], list[str]]:
    agree: list[str] = []
    disagree: list[str] = []
    if location is None:
        return agree, disagree
    for claim in location.countries:
        (agree if claim.value == place.country else disagree).append(claim.source)
    coords = _coordinate_claim(location)
    if coords is not None:
        near = lower_bound_km(coords[0], Area(latitude=place.latitude, longitude=place.longitude))
        ok = near is not None and near <= METRO_RADIUS_KM
        (agree if ok else disagree).append(f"{coords[1]} coordinates")
    return agree, disagree


def _coordinate_claim(location: Location) -> tuple[Area, str] | None:
    lat, lon, acc = location.latitude, location.longitude, location.accuracy_km
    if lat is None or lon is None:
        return None
    radius = float(acc.value) if acc is not None else 0.0
    return Area(latitude=lat.value, longitude=lon.value, radius_km=radius), lat.source


def _rtt_check(
    place: Place, vantage: Vantage | None, min_rtt_ms: float | None
) -> tuple[bool, str] | None:
    if vantage is None or not vantage.known or min_rtt_ms is None or not min_rtt_ms > 0:
        return None
    metro = Area(latitude=place.latitude, longitude=place.longitude, radius_km=METRO_RADIUS_KM)
    distance = lower_bound_km(vantage.area(), metro)
    if distance is None:
        return None
    allowed = distance <= rtt_reach_km(min_rtt_ms)
    verdict = "allows it" if allowed else "rules it out"
    return allowed, f"RTT {min_rtt_ms:g} ms from {vantage.describe()} {verdict}"
