"""Where a server is, with the source and the doubt of every value.

GeoIP databases are often wrong for data-centre addresses, so no location is ever stated
without its source. Sources, in this order:

1. MaxMind-format databases the user gives (`--geoip-db PATH`, repeatable), then those in
   `CONFSCOPE_GEOIP_DIR` (one or more directories, `os.pathsep`-separated), then those in the
   usual system directories (`DEFAULT_GEOIP_DIRS`): GeoLite2/GeoIP2 City, Country and ASN,
   DB-IP and IPinfo mmdb files, read with geoip2 (IPinfo's flat layout with maxminddb).
2. The embedded offline default: the country the Regional Internet Registry delegated the
   block to (`iptocc`). That is the registry's country, not a measured location.

Every source's country is kept (`Location.countries`), so disagreement is shown, never hidden.
Physics then checks each claim: the minimum RTT seen in the capture bounds how far the server
can be from the capture's vantage point (`plausibility`). Hostname codes are another line of
evidence (`analyzer.geo_hints`). Special-purpose addresses are labelled and never geolocated.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import functools
import ipaddress
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Generic, TypeVar

import geoip2.database
import geoip2.errors
import geoip2.models
import iptocc
import maxminddb

from analyzer.errors import ConfscopeError
from analyzer.geo_hints import (
    AIRPORTS_SOURCE,
    Area,
    HostnameHint,
    haversine_km,
    hostname_hints,
    known_country,
    lower_bound_km,
    rtt_reach_km,
)

__all__ = [
    "DEFAULT_GEOIP_DIRS",
    "GEOIP_DIR_ENV",
    "DatabaseInfo",
    "GeoResolver",
    "HostnameHint",
    "Location",
    "Plausibility",
    "Sourced",
    "Vantage",
    "haversine_km",
    "hostname_hints",
    "places_info",
    "plausibility",
    "provenance",
    "special_purpose",
]

GEOIP_DIR_ENV = "CONFSCOPE_GEOIP_DIR"
DEFAULT_GEOIP_DIRS = (
    Path("/usr/share/GeoIP"),
    Path("/usr/local/share/GeoIP"),
    Path("/var/lib/GeoIP"),
    Path("/usr/local/var/GeoIP"),
    Path("/opt/homebrew/var/GeoIP"),
)
REGISTRY_KIND = "registry"

# Special-purpose blocks (IANA IPv4/IPv6 Special-Purpose Address Registries), first match wins.
SPECIAL_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this network (RFC 791)"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.9/32", "PCP anycast (RFC 7723)"),
    ("192.0.0.10/32", "TURN anycast (RFC 8155)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation (RFC 5737)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (RFC 5737)"),
    ("203.0.113.0/24", "documentation (RFC 5737)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "NAT64 local use (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated, RFC 3879)"),
    ("ff00::/8", "multicast"),
)
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_SPECIAL = tuple((ipaddress.ip_network(net), label) for net, label in SPECIAL_NETWORKS)

# database_type substring -> content kind, first match wins (case-insensitive).
_CONTENT_WORDS = (
    ("enterprise", "city"),
    ("city", "city"),
    ("location", "city"),
    ("country_asn", "country-asn"),
    ("country", "country"),
    ("asn", "asn"),
    ("isp", "asn"),
    ("lite", "lite"),
)
# database_type substring -> geoip2.database.Reader method (geoip2 checks the same substrings).
_GEOIP2_METHODS = (
    ("Enterprise", "enterprise"),
    ("City", "city"),
    ("Country", "country"),
    ("GeoLite2-ASN", "asn"),
    ("GeoIP2-ISP", "isp"),
)

T = TypeVar("T")


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """One source of locations: its name (as cited next to each value), kind, file and date."""

    name: str
    kind: str
    path: str
    database_type: str
    build_date: str
    description: str

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "kind": self.kind,
            "database_type": self.database_type,
            "build_date": self.build_date,
            "path": self.path,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class Sourced(Generic[T]):
    """A value and the name of the database it came from (`DatabaseInfo.name`)."""

    value: T
    source: str


@dataclass(frozen=True, slots=True)
class Location:
    """What every source says about one address. `special` is set (and nothing else) for
    private, reserved and documentation addresses, which are never geolocated."""

    ip: str
    special: str = ""
    countries: tuple[Sourced[str], ...] = ()
    region: Sourced[str] | None = None
    city: Sourced[str] | None = None
    latitude: Sourced[float] | None = None
    longitude: Sourced[float] | None = None
    accuracy_km: Sourced[float] | None = None
    asn: Sourced[int] | None = None
    organisation: Sourced[str] | None = None
    notes: tuple[str, ...] = ()

    @property
    def country(self) -> str:
        """The best country: the first database's answer, else the registry's, else ''."""
        return self.countries[0].value if self.countries else ""

    @property
    def disagreement(self) -> bool:
        return len({claim.value for claim in self.countries}) > 1

    @property
    def summary(self) -> str:
        """E.g. 'US (GeoLite2-City 2024-05-01); CN (registry iptocc 3.3.170)'."""
        if self.special:
            return f"{self.special} address, not geolocated"
        if not self.countries:
            return "no source knows this address"
        groups = _group_sources(self.countries)
        return "; ".join(f"{country} ({', '.join(names)})" for country, names in groups.items())


def _group_sources(claims: Iterable[Sourced[str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for claim in claims:
        groups.setdefault(claim.value, []).append(claim.source)
    return groups


@dataclass(frozen=True, slots=True)
class _Answer:
    """One source's answer for one address; None where it has no value."""

    country: str | None = None
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    accuracy_km: float | None = None
    asn: int | None = None
    organisation: str | None = None
    anycast: bool = False


# --- special-purpose addresses ------------------------------------------------------------


def _parse_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address to look up: IPv4-mapped (::ffff:a.b.c.d) and NAT64 well-known-prefix
    (64:ff9b::a.b.c.d, RFC 6052) addresses stand for the IPv4 server they embed."""
    return _parsed(ip)[0]


def _parsed(ip: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
    """`_parse_address(ip)`, and its text."""
    try:  # (dotted IPv4 through inet_pton, which accepts exactly ipaddress's forms, all of
        # them the text ipaddress writes: 5x faster)
        return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, ip))), ip
    except (OSError, ValueError):
        pass
    address = _slow_parse(ip)
    return address, str(address)


def _slow_parse(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ConfscopeError(f"not an IP address: {ip!r}") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64_WELL_KNOWN:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def special_purpose(ip: str) -> str:
    """The label of a special-purpose address ('private', 'loopback', ...), '' if public."""
    return _special_label(_parse_address(ip))


def _special_label(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    starts, labels = _special_ranges()[address.version]
    label = labels[bisect.bisect_right(starts, int(address)) - 1]
    if label or address.version == 4:  # (the table covers every IPv4 network Python calls
        return label  # not global: a test checks it; not so for IPv6, e.g. 2001::/23)
    return "" if address.is_global else "reserved"


@functools.cache
def _special_ranges() -> dict[int, tuple[list[int], list[str]]]:
    """Per IP version, the address line cut where a special network begins or ends: the start
    of each piece and the label of the first network in `_SPECIAL` covering it ('' if none)."""
    ranges: dict[int, tuple[list[int], list[str]]] = {}
    for version in (4, 6):
        networks = [(int(n.network_address), int(n.broadcast_address), label)
                    for n, label in _SPECIAL if n.version == version]
        edges = {0} | {low for low, _, _ in networks} | {high + 1 for _, high, _ in networks}
        starts = sorted(edges)
        labels = [next((label for low, high, label in networks if low <= start <= high), "")
                  for start in starts]
        ranges[version] = (starts, labels)
    return ranges


# --- sources ------------------------------------------------------------------------------


def _build_date(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).date().isoformat()


def _content_kind(database_type: str) -> str:
    lowered = database_type.lower()
    return next((kind for word, kind in _CONTENT_WORDS if word in lowered), "")


def _vendor(database_type: str) -> str:
    lowered = database_type.lower().replace("-", "")
    return "ipinfo" if "ipinfo" in lowered else "dbip" if "dbip" in lowered else "maxmind"


def _description(meta: maxminddb.reader.Metadata) -> str:
    text: Any = meta.description
    if isinstance(text, Mapping):
        return str(text.get("en") or next(iter(text.values()), ""))
    return str(text or "")


class _MmdbSource:
    """A MaxMind-format database file, read through geoip2 (IPinfo's flat layout raw)."""

    def __init__(self, path: Path, taken_names: set[str]) -> None:
        raw = _open_raw(path)
        meta = raw.metadata()
        db_type = str(meta.database_type)
        vendor, content = _vendor(db_type), _content_kind(db_type)
        self._method = next((m for word, m in _GEOIP2_METHODS if word in db_type), "")
        if not content or (vendor != "ipinfo" and not self._method):
            raw.close()
            raise ConfscopeError(
                f"unsupported GeoIP database type {db_type!r} in {path} "
                "(expected a City, Country or ASN database)"
            )
        self._raw: maxminddb.Reader | None = raw if vendor == "ipinfo" else None
        self._geoip2 = None if self._raw else geoip2.database.Reader(str(path))
        if self._geoip2:
            raw.close()
        built = _build_date(meta.build_epoch)
        self.info = DatabaseInfo(
            name=_unique_name(f"{db_type} {built}", path, taken_names),
            kind=f"{vendor}-{content}",
            path=str(path),
            database_type=db_type,
            build_date=built,
            description=_description(meta),
        )

    def lookup(self, ip: str) -> _Answer:
        try:
            if self._raw is not None:
                return _answer_from_ipinfo(self._raw.get(ip))
            return _answer_from_model(getattr(self._geoip2, self._method)(ip))
        except geoip2.errors.AddressNotFoundError:
            return _Answer()
        except ValueError:  # an IPv6 address asked of an IPv4-only database
            return _Answer()
        except maxminddb.InvalidDatabaseError as exc:
            raise ConfscopeError(f"corrupt GeoIP database {self.info.path}: {exc}") from exc

    def close(self) -> None:
        for reader in (self._raw, self._geoip2):
            if reader is not None:
                reader.close()


def _open_raw(path: Path) -> maxminddb.Reader:
    if not path.is_file():
        raise ConfscopeError(f"GeoIP database not found: {path}")
    try:
        return maxminddb.open_database(str(path))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfscopeError(f"cannot read GeoIP database {path}: {exc}") from exc


def _unique_name(name: str, path: Path, taken: set[str]) -> str:
    if name in taken:
        name = f"{name} [{path.name}]"
    taken.add(name)
    return name


def _answer_from_model(model: Any) -> _Answer:
    if isinstance(model, geoip2.models.ASN):  # also ISP
        return _Answer(
            asn=model.autonomous_system_number, organisation=model.autonomous_system_organization
        )
    traits = model.traits
    answer = _Answer(
        country=model.country.iso_code,
        asn=traits.autonomous_system_number,
        organisation=traits.autonomous_system_organization,
        anycast=bool(traits.is_anycast),
    )
    return _with_city(answer, model) if isinstance(model, geoip2.models.City) else answer


def _with_city(answer: _Answer, model: geoip2.models.City) -> _Answer:
    region = model.subdivisions[0] if model.subdivisions else None
    return _Answer(
        country=answer.country,
        region=(region.name or region.iso_code) if region is not None else None,
        city=model.city.name,
        latitude=model.location.latitude,
        longitude=model.location.longitude,
        accuracy_km=model.location.accuracy_radius,
        asn=answer.asn,
        organisation=answer.organisation,
        anycast=answer.anycast,
    )


def _answer_from_ipinfo(record: Any) -> _Answer:
    """IPinfo's flat layout: country/country_code, asn 'AS15169', as_name, city, region, lat."""
    if not isinstance(record, Mapping):
        return _Answer()
    return _Answer(
        country=_ipinfo_country(record),
        region=_text(record.get("region")),
        city=_text(record.get("city")),
        latitude=_number(record.get("latitude", record.get("lat"))),
        longitude=_number(record.get("longitude", record.get("lng"))),
        asn=_asn_number(record.get("asn")),
        organisation=_text(record.get("as_name") or record.get("name")),
    )


def _ipinfo_country(record: Mapping[str, Any]) -> str | None:
    for key in ("country_code", "country"):
        value = _text(record.get(key))
        if value and len(value) == 2:
            return value.upper()
    return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _asn_number(value: Any) -> int | None:
    text = str(value or "").upper().removeprefix("AS")
    return int(text) if text.isdigit() else None


class _RegistrySource:
    """The registry country from iptocc's embedded RIR delegation data."""

    def __init__(self) -> None:
        self.info = registry_info()
        self._answers: dict[str | None, _Answer] = {}  # one per country: few, asked for often

    def lookup(self, ip: str) -> _Answer:
        country = iptocc.country_code(ip) or None
        answer = self._answers.get(country)
        if answer is None:
            answer = self._answers[country] = _Answer(country=country)
        return answer

    def close(self) -> None:
        return None


@functools.cache
def registry_info() -> DatabaseInfo:
    """The iptocc source; its build date is the wheel's SBOM timestamp (data built nightly)."""
    version = importlib_metadata.version("iptocc")
    return DatabaseInfo(
        name=f"registry iptocc {version}",
        kind=REGISTRY_KIND,
        path="",
        database_type="RIR delegated statistics (iptocc)",
        build_date=_iptocc_build_date(),
        description=(
            f"Country the Regional Internet Registry delegated the block to (iptocc {version}, "
            "data from the five RIRs, date = the wheel's SBOM timestamp). "
            "The registry's country, not a measured location."
        ),
    )


def _iptocc_build_date() -> str:
    files = importlib_metadata.distribution("iptocc").files or []
    for file in files:
        if "sboms" in file.parts and file.name.endswith(".json"):
            try:
                return str(json.loads(file.read_text())["metadata"]["timestamp"])[:10]
            except (OSError, ValueError, KeyError, TypeError):
                return ""
    return ""


@functools.cache
def places_info() -> DatabaseInfo:
    """The known-places data behind plausibility checks and hostname hints."""
    version = AIRPORTS_SOURCE.split()[-1]
    date = f"{version[:4]}-{version[4:6]}-{version[6:8]}" if len(version) == 8 else ""
    return DatabaseInfo(
        name=AIRPORTS_SOURCE,
        kind="places",
        path="",
        database_type="airports (ICAO/IATA/FAA codes, lat/lon, country)",
        build_date=date,
        description="Known places per country for RTT lower bounds; IATA codes for hostname hints.",
    )


# --- discovery ----------------------------------------------------------------------------


def _mmdb_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.mmdb")) if path.is_dir() else [path]


def _env_dirs(environ: Mapping[str, str]) -> list[Path]:
    value = environ.get(GEOIP_DIR_ENV, "")
    dirs = [Path(part) for part in value.split(os.pathsep) if part]
    for directory in dirs:
        if not directory.is_dir():
            raise ConfscopeError(f"{GEOIP_DIR_ENV} names {directory}, which is not a directory")
    return dirs


def _unique(paths: Iterable[Path], seen: set[Path]) -> list[Path]:
    fresh = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            fresh.append(path)
    return fresh


# --- resolver -----------------------------------------------------------------------------


class GeoResolver:
    """Looks addresses up in every source. Problems with databases the user named (paths, or
    `CONFSCOPE_GEOIP_DIR`) raise `ConfscopeError`; unreadable files found in the system
    directories are skipped and listed in `skipped`."""

    def __init__(
        self,
        database_paths: Sequence[Path] = (),
        search_default_dirs: bool = True,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        seen: set[Path] = set()
        names: set[str] = set()
        named = [Path(p) for p in database_paths] + _env_dirs(environ)
        strict = _unique([f for p in named for f in _named_files(p)], seen)
        sources: list[_MmdbSource | _RegistrySource] = [_MmdbSource(p, names) for p in strict]
        system = DEFAULT_GEOIP_DIRS if search_default_dirs else ()
        lenient = _unique([f for d in system if d.is_dir() for f in _mmdb_files(d)], seen)
        skipped: list[str] = []
        for path in lenient:
            try:
                sources.append(_MmdbSource(path, names))
            except ConfscopeError as exc:
                skipped.append(str(exc))
        sources.append(_RegistrySource())
        self._sources = tuple(sources)
        self.skipped: tuple[str, ...] = tuple(skipped)
        self.databases: tuple[DatabaseInfo, ...] = tuple(s.info for s in self._sources)
        self._cache: dict[str, Location] = {}
        self._anonymous: dict[tuple[str, tuple[_Answer, ...]], Location] = {}

    def locate(self, ip: str) -> Location:
        """Every source's answer for `ip` (cached); special-purpose addresses only labelled."""
        location = self._cache.get(ip)
        if location is None:
            location = self._cache[ip] = self._locate(ip)
        return location

    def _locate(self, ip: str) -> Location:
        return dataclasses.replace(self.anonymous(ip), ip=ip)

    def anonymous(self, ip: str) -> Location:
        """`locate(ip)` without the address (`ip` is ''): addresses with the same answers
        share one Location, so that what is derived from it can be cached."""
        address, text = _parsed(ip)
        special = _special_label(address)
        answers: tuple[_Answer, ...] = ()
        if not special:
            answers = tuple(s.lookup(text) for s in self._sources)
        key = (special, answers)
        location = self._anonymous.get(key)
        if location is None:
            location = self._anonymous[key] = (
                Location(ip="", special=special) if special else
                _merge("", [(s.info.name, a) for s, a in zip(self._sources, answers,
                                                             strict=True)]))
        return location

    def close(self) -> None:
        for source in self._sources:
            source.close()

    def __enter__(self) -> GeoResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _named_files(path: Path) -> list[Path]:
    files = _mmdb_files(path)
    if not files:
        raise ConfscopeError(f"no .mmdb files in {path}")
    return files


def _first(answers: list[tuple[str, _Answer]], attr: str) -> Sourced[Any] | None:
    for source, answer in answers:
        value = getattr(answer, attr)
        if value is not None:
            return Sourced(value, source)
    return None


def _merge(ip: str, answers: list[tuple[str, _Answer]]) -> Location:
    placed = [(s, a) for s, a in answers if a.latitude is not None and a.longitude is not None]
    coords = placed[:1]
    notes = tuple(
        f"{source} marks this network as anycast: no single location applies"
        for source, answer in answers
        if answer.anycast
    )
    return Location(
        ip=ip,
        countries=tuple(Sourced(a.country, s) for s, a in answers if a.country),
        region=_first(answers, "region"),
        city=_first(answers, "city"),
        latitude=_first(coords, "latitude"),
        longitude=_first(coords, "longitude"),
        accuracy_km=_first(coords, "accuracy_km"),
        asn=_first(answers, "asn"),
        organisation=_first(answers, "organisation"),
        notes=notes,
    )


def provenance(resolver: GeoResolver) -> list[dict[str, str]]:
    """For summary.json: every database used (registry last), then the places data."""
    return [info.as_dict() for info in (*resolver.databases, places_info())]


# --- vantage point and physics ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vantage:
    """Where the capture was taken: a point, or a country; `source` says how it is known."""

    latitude: float | None = None
    longitude: float | None = None
    country: str = ""
    source: str = ""

    @property
    def known(self) -> bool:
        return (self.latitude is not None and self.longitude is not None) or bool(self.country)

    def area(self) -> Area:
        return Area(country=self.country, latitude=self.latitude, longitude=self.longitude)

    def describe(self) -> str:
        return f"{self.area().describe()} ({self.source})"

    @classmethod
    def parse_point(cls, text: str) -> Vantage:
        """'43.65,-79.38' (degrees) as given with --vantage."""
        try:
            lat, lon = (float(part) for part in text.split(","))
        except ValueError:
            raise ConfscopeError(f"--vantage wants LAT,LON in degrees, got {text!r}") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ConfscopeError(f"--vantage {text!r} is outside -90..90, -180..180")
        return cls(latitude=lat, longitude=lon, source="given --vantage")

    @classmethod
    def for_country(cls, code: str) -> Vantage:
        """An ISO 3166-1 alpha-2 country code as given with --vantage-country."""
        country = code.strip().upper()
        if len(country) != 2 or not known_country(country):
            raise ConfscopeError(f"--vantage-country {code!r} is not a known ISO country code")
        return cls(country=country, source="given --vantage-country")

    @classmethod
    def infer(cls, client_locations: Iterable[Location]) -> Vantage:
        """The country of the public client addresses when all agree; otherwise unknown."""
        public = [loc for loc in client_locations if not loc.special and loc.country]
        if len({loc.country for loc in public}) != 1:
            return cls()
        evidence = "; ".join(f"{loc.ip}: {loc.summary}" for loc in public[:3])
        more = f"; and {len(public) - 3} more" if len(public) > 3 else ""
        source = f"inferred from client addresses ({evidence}{more})"
        return cls(country=public[0].country, source=source)


@dataclass(frozen=True, slots=True)
class Plausibility:
    """Whether physics allows one claimed location given the minimum RTT to the server."""

    min_rtt_ms: float | None
    max_distance_km: float | None
    claimed_country: str
    claimed_source: str
    claim: str
    min_distance_km: float | None
    verdict: str
    text: str


@dataclass(frozen=True, slots=True)
class _Claim:
    area: Area
    country: str
    sources: str
    says: str  # "says CN" / "places it at 37.34, -121.89 (±20 km)"
    what: str  # "CN" / "that point"


def _claims(location: Location) -> list[_Claim]:
    claims = [
        _Claim(Area(country=cc), cc, ", ".join(names), f"says {cc}", cc)
        for cc, names in _group_sources(location.countries).items()
    ]
    if location.latitude is not None and location.longitude is not None:
        claims.append(_coordinate_claim(location, location.latitude, location.longitude))
    return claims


def _coordinate_claim(location: Location, lat: Sourced[float], lon: Sourced[float]) -> _Claim:
    accuracy = location.accuracy_km
    radius = float(accuracy.value) if accuracy is not None else 0.0
    area = Area(latitude=lat.value, longitude=lon.value, radius_km=radius)
    country = next((c.value for c in location.countries if c.source == lat.source), "")
    return _Claim(area, country, lat.source, f"places it at {area.describe()}", "that point")


def plausibility(
    location: Location, min_rtt_ms: float | None, vantage: Vantage
) -> tuple[Plausibility, ...]:
    """One verdict per distinct claimed country and per claimed coordinate."""
    if location.special:
        return ()
    return tuple(_judge(claim, min_rtt_ms, vantage) for claim in _claims(location))


def _judge(claim: _Claim, min_rtt_ms: float | None, vantage: Vantage) -> Plausibility:
    head = f"{claim.sources} {claim.says}"
    rtt = min_rtt_ms if min_rtt_ms is not None and 0 < min_rtt_ms < math.inf else None
    distance = lower_bound_km(vantage.area(), claim.area) if vantage.known else None
    if rtt is None or distance is None:
        gap = _missing_evidence(claim, rtt, vantage)
        return _verdict(claim, rtt, None, "unknown", f"{head}; {gap}, so physics cannot check it")
    reach = rtt_reach_km(rtt)
    seen = f"{head}; a minimum RTT of {_ms(rtt)} ms from {vantage.describe()}"
    if distance > reach:
        text = (
            f"{seen} puts this server within ~{reach:,.0f} km of the vantage point, "
            f"but {claim.what} is at least ~{distance:,.0f} km away: location implausible"
        )
        return _verdict(claim, rtt, distance, "implausible", text)
    text = (
        f"{seen} allows up to ~{reach:,.0f} km and {claim.what} is at least "
        f"~{distance:,.0f} km away: consistent (physics allows it, it does not confirm it)"
    )
    return _verdict(claim, rtt, distance, "consistent", text)


def _missing_evidence(claim: _Claim, rtt: float | None, vantage: Vantage) -> str:
    if rtt is None:
        return "no usable RTT measured to this server"
    if not vantage.known:
        return "vantage point unknown (give --vantage LAT,LON or --vantage-country CC)"
    return f"no known place for {claim.what} in {AIRPORTS_SOURCE}"


def _verdict(
    claim: _Claim, min_rtt_ms: float | None, distance: float | None, verdict: str, text: str
) -> Plausibility:
    return Plausibility(
        min_rtt_ms=min_rtt_ms,
        max_distance_km=rtt_reach_km(min_rtt_ms) if min_rtt_ms is not None else None,
        claimed_country=claim.country,
        claimed_source=claim.sources,
        claim=f"coordinates {claim.area.describe()}" if claim.area.is_point else claim.country,
        min_distance_km=distance,
        verdict=verdict,
        text=text,
    )


def _ms(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")
