"""Geolocation with provenance: real mmdb files (written with mmdb-writer in MaxMind's
documented City/Country/ASN layouts, read back through geoip2), the iptocc registry, the
speed-of-light plausibility check and hostname hints. No mock of the database layer."""

from __future__ import annotations

import ipaddress
import math
import re
from importlib import metadata
from pathlib import Path

import airportsdata
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netaddr import IPSet

from analyzer import geo, geo_hints
from analyzer.errors import ConfscopeError
from analyzer.geo import (
    GeoResolver,
    Location,
    Sourced,
    Vantage,
    haversine_km,
    hostname_hints,
    plausibility,
    provenance,
    special_purpose,
)
from analyzer.geo_hints import EARTH_RADIUS_KM, PLACE_SLACK_KM, Area, lower_bound_km
from tests.mmdb_fixtures import SAN_JOSE, DatedWriter, write_mmdb

BUILD_DATE = "2024-05-01"
IPTOCC_VERSION = metadata.version("iptocc")
REGISTRY = f"registry iptocc {IPTOCC_VERSION}"
CITIZEN_LAB_IP = "52.81.151.250"  # registry: CN (AWS China, Beijing)
TORONTO = "43.65,-79.38"




@pytest.fixture
def city_db(tmp_path: Path) -> Path:
    # Deliberately wrong for the Citizen Lab address: the registry says CN.
    return write_mmdb(
        tmp_path / "GeoLite2-City.mmdb",
        "GeoLite2-City",
        {"52.80.0.0/15": SAN_JOSE, "10.0.0.0/8": SAN_JOSE, "192.0.2.0/24": SAN_JOSE},
    )


@pytest.fixture
def asn_db(tmp_path: Path) -> Path:
    return write_mmdb(
        tmp_path / "GeoLite2-ASN.mmdb",
        "GeoLite2-ASN",
        {
            "52.80.0.0/15": {
                "autonomous_system_number": 55960,
                "autonomous_system_organization": "Beijing Guanghuan Xinwang Digital",
            }
        },
    )


# --- sources and provenance ---------------------------------------------------------------


def test_city_and_asn_values_carry_their_sources(city_db: Path, asn_db: Path) -> None:
    with GeoResolver([city_db, asn_db], search_default_dirs=False, environ={}) as resolver:
        kinds = [(d.kind, d.database_type, d.build_date) for d in resolver.databases]
        assert kinds == [
            ("maxmind-city", "GeoLite2-City", BUILD_DATE),
            ("maxmind-asn", "GeoLite2-ASN", BUILD_DATE),
            ("registry", "RIR delegated statistics (iptocc)", resolver.databases[-1].build_date),
        ]
        city_name, asn_name = (d.name for d in resolver.databases[:2])
        loc = resolver.locate(CITIZEN_LAB_IP)
    assert loc.city == Sourced("San Jose", city_name)
    assert loc.region == Sourced("California", city_name)
    assert (loc.latitude, loc.longitude) == (
        Sourced(37.3388, city_name),
        Sourced(-121.8914, city_name),
    )
    assert loc.accuracy_km == Sourced(20, city_name)
    assert loc.asn == Sourced(55960, asn_name)
    assert loc.organisation == Sourced("Beijing Guanghuan Xinwang Digital", asn_name)


def test_disagreement_with_registry_shows_both(city_db: Path) -> None:
    resolver = GeoResolver([city_db], search_default_dirs=False, environ={})
    loc = resolver.locate(CITIZEN_LAB_IP)
    city_name = f"GeoLite2-City {BUILD_DATE}"
    assert loc.countries == (Sourced("US", city_name), Sourced("CN", REGISTRY))
    assert loc.country == "US"  # the database first, the registry's answer kept beside it
    assert loc.disagreement
    assert loc.summary == f"US ({city_name}); CN ({REGISTRY})"
    assert resolver.locate(CITIZEN_LAB_IP) is loc  # cached


def test_registry_alone_is_the_offline_default() -> None:
    resolver = GeoResolver(search_default_dirs=False, environ={})
    assert [d.kind for d in resolver.databases] == ["registry"]
    registry = resolver.databases[0]
    assert "not a measured location" in registry.description
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", registry.build_date)
    loc = resolver.locate(CITIZEN_LAB_IP)
    assert loc.countries == (Sourced("CN", REGISTRY),)
    assert not loc.disagreement
    assert loc.city is None and loc.latitude is None


def test_country_db_and_ipv4_only_db(tmp_path: Path) -> None:
    writer = DatedWriter(ip_version=4, database_type="GeoLite2-Country", languages=["en"],
                         description={"en": "v4 only"})  # fmt: skip
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "US"}})
    writer.to_db_file(str(tmp_path / "c.mmdb"))
    resolver = GeoResolver([tmp_path / "c.mmdb"], search_default_dirs=False, environ={})
    assert resolver.databases[0].kind == "maxmind-country"
    name = resolver.databases[0].name
    assert resolver.locate("8.8.8.8").countries == (Sourced("US", name), Sourced("US", REGISTRY))
    assert not resolver.locate("8.8.8.8").disagreement
    # an IPv6 address asked of an IPv4-only database: that source is silent, no error
    v6 = resolver.locate("2001:4860:4860::8888")
    assert [c.source for c in v6.countries] == [REGISTRY]


def test_ipinfo_flat_layout(tmp_path: Path) -> None:
    # IPinfo's free "country_asn" layout: country, country_name, asn "AS…", as_name
    record = {"country": "DE", "country_name": "Germany", "asn": "AS3320",
              "as_name": "Deutsche Telekom AG", "as_domain": "telekom.com"}  # fmt: skip
    path = write_mmdb(tmp_path / "country_asn.mmdb", "ipinfo country_asn.mmdb",
                      {"80.128.0.0/11": record})  # fmt: skip
    resolver = GeoResolver([path], search_default_dirs=False, environ={})
    info = resolver.databases[0]
    assert info.kind == "ipinfo-country-asn"
    loc = resolver.locate("80.130.1.1")
    assert loc.countries[0] == Sourced("DE", info.name)
    assert loc.asn == Sourced(3320, info.name)
    assert loc.organisation == Sourced("Deutsche Telekom AG", info.name)


def test_anycast_flag_becomes_a_note(tmp_path: Path) -> None:
    record = {**SAN_JOSE, "traits": {"is_anycast": True}}
    path = write_mmdb(tmp_path / "a.mmdb", "GeoIP2-City", {"1.1.1.0/24": record})
    loc = GeoResolver([path], search_default_dirs=False, environ={}).locate("1.1.1.1")
    assert len(loc.notes) == 1 and "anycast" in loc.notes[0]


def test_provenance_lists_every_database(city_db: Path, asn_db: Path) -> None:
    resolver = GeoResolver([city_db, asn_db], search_default_dirs=False, environ={})
    rows = provenance(resolver)
    assert [r["kind"] for r in rows] == ["maxmind-city", "maxmind-asn", "registry", "places"]
    assert rows[0]["path"] == str(city_db) and rows[0]["build_date"] == BUILD_DATE
    assert rows[0]["database_type"] == "GeoLite2-City"
    assert rows[0]["description"] == "test GeoLite2-City"
    assert rows[3]["name"] == f"airportsdata {airportsdata.__version__}"
    assert all({"name", "kind", "database_type", "build_date", "path"} <= set(r) for r in rows)


def test_same_type_and_date_twice_gets_distinct_names(tmp_path: Path) -> None:
    a = write_mmdb(tmp_path / "a.mmdb", "GeoLite2-City", {"52.80.0.0/15": SAN_JOSE})
    b = write_mmdb(tmp_path / "b.mmdb", "GeoLite2-City", {"52.80.0.0/15": SAN_JOSE})
    names = [d.name for d in GeoResolver([a, b], False, {}).databases]
    assert len(set(names)) == 3


# --- discovery and errors -----------------------------------------------------------------


def test_env_dir_discovery(tmp_path: Path, city_db: Path) -> None:
    environ = {"CONFSCOPE_GEOIP_DIR": str(tmp_path)}
    resolver = GeoResolver(search_default_dirs=False, environ=environ)
    assert [Path(d.path) for d in resolver.databases[:-1]] == [city_db]
    # the same file named twice is used once
    both = GeoResolver([city_db], False, {"CONFSCOPE_GEOIP_DIR": str(tmp_path)})
    assert len(both.databases) == 2


def test_env_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfscopeError, match="CONFSCOPE_GEOIP_DIR"):
        GeoResolver(environ={"CONFSCOPE_GEOIP_DIR": str(tmp_path / "nope")})


@pytest.mark.parametrize("content", [b"", b"not a maxmind database" * 50])
def test_corrupt_mmdb_is_a_confscope_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(content)
    with pytest.raises(ConfscopeError, match=r"bad\.mmdb") as err:
        GeoResolver([bad], search_default_dirs=False, environ={})
    assert "\n" not in str(err.value)


def test_truncated_mmdb_is_a_confscope_error(tmp_path: Path, city_db: Path) -> None:
    cut = tmp_path / "cut.mmdb"
    cut.write_bytes(city_db.read_bytes()[:200])
    with pytest.raises(ConfscopeError, match=r"cut\.mmdb"):
        GeoResolver([cut], search_default_dirs=False, environ={})


def test_missing_and_unsupported_databases(tmp_path: Path) -> None:
    with pytest.raises(ConfscopeError, match="not found"):
        GeoResolver([tmp_path / "missing.mmdb"], search_default_dirs=False, environ={})
    odd = write_mmdb(tmp_path / "ct.mmdb", "GeoIP2-Connection-Type",
                     {"8.8.8.0/24": {"connection_type": "Corporate"}})  # fmt: skip
    with pytest.raises(ConfscopeError, match="unsupported GeoIP database type"):
        GeoResolver([odd], search_default_dirs=False, environ={})


def test_system_dirs_skip_bad_files(
    tmp_path: Path, city_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    system.mkdir()
    (system / "broken.mmdb").write_bytes(b"junk")
    (system / "GeoLite2-City.mmdb").write_bytes(city_db.read_bytes())
    monkeypatch.setattr(geo, "DEFAULT_GEOIP_DIRS", (system,))
    resolver = GeoResolver(environ={})
    assert [d.kind for d in resolver.databases] == ["maxmind-city", "registry"]
    assert len(resolver.skipped) == 1 and "broken.mmdb" in resolver.skipped[0]


# --- special-purpose addresses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "label"),
    [
        ("10.1.2.3", "private"),
        ("192.168.1.226", "private"),
        ("192.0.2.7", "documentation (RFC 5737)"),
        ("203.0.113.9", "documentation (RFC 5737)"),
        ("2001:db8::1", "documentation (RFC 3849)"),
        ("100.64.0.1", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("239.255.255.250", "multicast"),
        ("fd00::5", "private"),
        ("240.0.0.1", "reserved"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
    ],
)
def test_special_addresses_are_never_geolocated(city_db: Path, ip: str, label: str) -> None:
    # the City database has (wrong) data for 10/8 and 192.0.2/24: it must not be used
    resolver = GeoResolver([city_db], search_default_dirs=False, environ={})
    loc = resolver.locate(ip)
    assert loc.special == label
    assert loc.countries == () and loc.city is None and loc.latitude is None
    assert plausibility(loc, 8.0, Vantage.for_country("CA")) == ()


def test_public_and_mapped_addresses_are_not_special() -> None:
    assert special_purpose("8.8.8.8") == ""
    assert special_purpose("::ffff:8.8.8.8") == ""
    with pytest.raises(ConfscopeError, match="not an IP address"):
        special_purpose("zoom.us")


# Blocks that Python 3.11's ipaddress calls global but that name no single server (multicast,
# anycast) or that the IANA registries mark as not globally reachable: labelled on purpose.
LABELLED_THOUGH_PYTHON_SAYS_GLOBAL = [
    ipaddress.ip_network(n)
    for n in ("224.0.0.0/4", "ff00::/8", "192.0.0.0/24", "3fff::/20", "64:ff9b:1::/48",
              "fec0::/10")
]  # fmt: skip
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@settings(max_examples=500, deadline=None)
@given(st.ip_addresses())
def test_labels_match_python_reachability(address: Address) -> None:
    label = special_purpose(str(address))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    elif address in ipaddress.ip_network("64:ff9b::/96"):  # RFC 6052: IPv4 in the low 32 bits
        address = ipaddress.IPv4Address(address.packed[-4:])
    exempt = any(address in net for net in LABELLED_THOUGH_PYTHON_SAYS_GLOBAL
                 if net.version == address.version)  # fmt: skip
    assert (label == "") == (address.is_global and not exempt), (address, label)


def test_every_ipv4_block_python_calls_not_global_is_labelled() -> None:
    """special_purpose trusts its table for IPv4 (it skips `is_global`, which is slow): each
    block Python's ipaddress calls not global must be labelled, first to last address."""
    constants = getattr(ipaddress, "_IPv4Constants", None)
    private = getattr(constants, "_private_networks", None)
    if private is None:
        pytest.skip("this Python's ipaddress keeps its private networks elsewhere")
    exceptions = getattr(constants, "_private_networks_exceptions", [])
    blocks = [*private, ipaddress.ip_network("100.64.0.0/10")]
    assert len(blocks) > 10
    for block in blocks:
        for address in (block.network_address, block.broadcast_address):
            if not address.is_global and not any(address in e for e in exceptions):
                assert special_purpose(str(address)), address


def test_ipv4_text_forms_that_python_rejects_are_rejected() -> None:
    for text in ("1.2.3.04", "01.2.3.4", "1.2.3", "256.1.1.1", " 1.2.3.4", "1.2.3.4\x00"):
        with pytest.raises(ConfscopeError, match="not an IP address"):
            special_purpose(text)


def test_nat64_and_mapped_addresses_are_looked_up_as_ipv4(city_db: Path) -> None:
    resolver = GeoResolver([city_db], False, {})
    plain = resolver.locate(CITIZEN_LAB_IP)
    for ip in ("::ffff:52.81.151.250", "64:ff9b::3451:97fa"):
        loc = resolver.locate(ip)
        assert loc.ip == ip and loc.countries == plain.countries


# --- physics ------------------------------------------------------------------------------


def test_haversine_against_exact_values() -> None:
    quarter = math.pi / 2 * EARTH_RADIUS_KM
    assert haversine_km(0, 0, 0, 90) == pytest.approx(quarter)
    assert haversine_km(90, 0, -90, 0) == pytest.approx(2 * quarter)
    assert haversine_km(10, 20, 10, 20) == 0
    # Heathrow - JFK: 5,540 km great circle (3,442 mi per published flight distance)
    assert haversine_km(51.4700, -0.4543, 40.6413, -73.7781) == pytest.approx(5540, rel=0.01)


def test_plausibility_citizen_lab_example() -> None:
    loc = GeoResolver(search_default_dirs=False, environ={}).locate(CITIZEN_LAB_IP)
    canada = Vantage.for_country("CA")
    (fast,) = plausibility(loc, 8.0, canada)
    assert (fast.claimed_country, fast.claimed_source) == ("CN", REGISTRY)
    assert fast.verdict == "implausible"
    assert fast.max_distance_km == pytest.approx(800)
    # Canada and China are far apart; the bound is conservative (the pole route from Alert)
    assert fast.min_distance_km is not None and 4000 < fast.min_distance_km < 8000
    assert "8 ms" in fast.text and "~800 km" in fast.text and "implausible" in fast.text
    (slow,) = plausibility(loc, 250.0, canada)
    assert slow.verdict == "consistent" and slow.max_distance_km == pytest.approx(25000)
    (none,) = plausibility(loc, None, canada)
    assert none.verdict == "unknown" and none.min_distance_km is None
    (zero,) = plausibility(loc, 0.0, canada)
    assert zero.verdict == "unknown" and zero.max_distance_km is None
    (nowhere,) = plausibility(loc, 8.0, Vantage())
    assert nowhere.verdict == "unknown" and "--vantage" in nowhere.text


def test_plausibility_per_claim_with_coordinates(city_db: Path) -> None:
    loc = GeoResolver([city_db], False, {}).locate(CITIZEN_LAB_IP)
    toronto = Vantage.parse_point(TORONTO)
    by_claim = {p.claim: p for p in plausibility(loc, 8.0, toronto)}
    assert set(by_claim) == {"US", "CN", "coordinates 37.34, -121.89 (±20 km)"}
    assert by_claim["CN"].verdict == "implausible"
    # the US border is ~100 km from Toronto, so the country claim survives; San Jose does not
    assert by_claim["US"].verdict == "consistent"
    point = by_claim["coordinates 37.34, -121.89 (±20 km)"]
    expected = haversine_km(43.65, -79.38, 37.3388, -121.8914) - 20
    assert point.min_distance_km == pytest.approx(expected)
    assert point.claimed_country == "US" and point.verdict == "implausible"
    slower = {p.claim: p.verdict for p in plausibility(loc, 60.0, toronto)}
    # 60 ms reaches 6,000 km: San Jose fits, China (> 9,000 km from Toronto) still does not
    assert slower == {"US": "consistent", "CN": "implausible", point.claim: "consistent"}


@pytest.mark.parametrize(("a", "b"), [("CA", "CN"), ("NZ", "AU")])
def test_country_bound_matches_brute_force_haversine(a: str, b: str) -> None:
    rows = airportsdata.load("ICAO").values()
    pa = [(r["lat"], r["lon"]) for r in rows if r["country"] == a]
    pb = [(r["lat"], r["lon"]) for r in rows if r["country"] == b]
    brute = min(haversine_km(*x, *y) for x in pa for y in pb)
    bound = lower_bound_km(Area(country=a), Area(country=b))
    assert bound == pytest.approx(brute - 2 * PLACE_SLACK_KM, abs=0.5)
    toronto = Area(latitude=43.65, longitude=-79.38)
    brute_point = min(haversine_km(43.65, -79.38, *y) for y in pb)
    assert lower_bound_km(toronto, Area(country=b)) == pytest.approx(
        brute_point - PLACE_SLACK_KM, abs=0.5
    )


def test_neighbouring_country_is_never_ruled_out_by_a_short_rtt() -> None:
    loc = Location(ip="8.8.8.8", countries=(Sourced("US", REGISTRY),))
    (check,) = plausibility(loc, 1.0, Vantage.for_country("CA"))
    assert check.min_distance_km == 0 and check.verdict == "consistent"


def test_unknown_country_code_gives_unknown() -> None:
    loc = Location(ip="8.8.8.8", countries=(Sourced("EU", "old db"),))
    (check,) = plausibility(loc, 5.0, Vantage.for_country("CA"))
    assert check.verdict == "unknown" and "no known place" in check.text


def test_vantage_parsing() -> None:
    point = Vantage.parse_point(" 43.65, -79.38 ")
    assert (point.latitude, point.longitude, point.source) == (43.65, -79.38, "given --vantage")
    assert Vantage.for_country("ca") == Vantage(country="CA", source="given --vantage-country")
    for bad in ("43.65", "a,b", "91,0", "0,181"):
        with pytest.raises(ConfscopeError):
            Vantage.parse_point(bad)
    for bad_cc in ("ZZ", "CAN", ""):
        with pytest.raises(ConfscopeError):
            Vantage.for_country(bad_cc)


def test_vantage_inferred_from_client_addresses() -> None:
    resolver = GeoResolver(search_default_dirs=False, environ={})
    rogers = "24.114.0.1"  # registry: CA
    clients = [resolver.locate(ip) for ip in ("192.168.1.226", rogers)]
    vantage = Vantage.infer(clients)
    assert vantage.country == "CA" and vantage.latitude is None
    assert vantage.source.startswith("inferred from client addresses (")
    assert rogers in vantage.source and REGISTRY in vantage.source
    assert not Vantage.infer([resolver.locate("10.0.0.2")]).known
    mixed = [resolver.locate(rogers), resolver.locate(CITIZEN_LAB_IP)]
    assert Vantage.infer(mixed) == Vantage()


def test_vantage_from_the_flows_client_addresses() -> None:
    """Private clients are skipped without being located, and the search stops at the second
    country: a capture may have a million clients."""
    from analyzer.geolocate import GeoSettings, vantage_for

    resolver = GeoResolver(search_default_dirs=False, environ={})
    private = [f"10.0.{i // 256}.{i % 256}" for i in range(2000)]
    us = vantage_for(GeoSettings(), resolver, [*private, "8.8.8.8", "8.8.4.4", "8.8.8.8"])
    assert us.country == "US" and "8.8.4.4" in us.source and "8.8.8.8" in us.source
    located = len(resolver._cache)
    assert located == 2  # the two public addresses, once each
    fresh = GeoResolver(search_default_dirs=False, environ={})
    mixed = vantage_for(GeoSettings(), fresh, ["24.114.0.1", "202.12.27.33", "193.0.14.129"])
    assert mixed == Vantage()  # (in address order) NL, JP: no country; CA never looked up
    assert set(fresh._cache) == {"193.0.14.129", "202.12.27.33"}


# --- hostname hints -----------------------------------------------------------------------


def test_zoom_sjc_hint_agrees_and_disagrees(city_db: Path) -> None:
    name = "zoomsjccv154mmr.sjc.zoom.us"
    assert airportsdata.load("IATA")["SJC"]["country"] == "US"
    (bare,) = hostname_hints(name)
    assert (bare.code, bare.kind, bare.country) == ("SJC", "iata", "US")
    assert bare.matched == "zoom host prefix, label"
    assert "San Jose" in bare.place
    loc = GeoResolver([city_db], False, {}).locate(CITIZEN_LAB_IP)
    toronto = Vantage.parse_point(TORONTO)
    (hint,) = hostname_hints(name, loc, toronto, 8.0)
    city = f"GeoLite2-City {BUILD_DATE}"
    assert hint.agrees_with == f"{city}; {city} coordinates"
    assert hint.disagrees_with.startswith(REGISTRY) and "rules it out" in hint.disagrees_with
    (far,) = hostname_hints(name, loc, toronto, 60.0)
    assert "allows it" in far.agrees_with


def test_zoom_frn_is_not_frankfurt_in_the_data() -> None:
    # Zoom's "frn" (Frankfurt?) is not Frankfurt's code: FRA is. In airportsdata FRN is an
    # Army airfield in Alaska, which is not a commercial airport, so no hint is given.
    iata = airportsdata.load("IATA")
    assert iata["FRA"]["city"] == "Frankfurt am Main"
    assert iata["FRN"]["country"] == "US" and "Army" in iata["FRN"]["name"]
    assert hostname_hints("zoomfrn99mmr.zoom.us") == ()
    assert hostname_hints("zoomfr85zc.zoom.us") == ()  # two letters: no code
    assert hostname_hints("zoomam104zc.zoom.us") == ()


@pytest.mark.parametrize(
    "name", ["www.example.com", "api.cdn.net", "zoom.us", "sjc.example", "mail.dns.web.example.org"]
)
def test_no_hint_for_common_words_or_the_registrable_domain(name: str) -> None:
    assert hostname_hints(name) == ()


def test_hint_from_label_part_and_city_code() -> None:
    (lhr,) = hostname_hints("lhr25s34-in-f14.1e100.net")
    assert (lhr.code, lhr.country, lhr.matched) == ("LHR", "GB", "label part")
    (lon,) = hostname_hints("edge1.lon.example.co.uk")
    assert (lon.code, lon.kind, lon.country) == ("LON", "iata-city", "GB")


# --- fast lookups, against the straightforward forms ---------------------------------------


def _special_by_scan(ip: str) -> str:
    """special_purpose as a scan of every special network in order."""
    address = geo._parse_address(ip)
    for network, label in geo._SPECIAL:
        if address.version == network.version and address in network:
            return label
    return "" if address.is_global else "reserved"


def test_special_purpose_matches_a_scan_of_every_network() -> None:
    addresses = ["::ffff:10.1.2.3", "64:ff9b::a00:1", "64:ff9b::808:808", "8.8.8.8", "::"]
    for network, _ in geo._SPECIAL:
        low, high = int(network.network_address), int(network.broadcast_address)
        top = 2**32 - 1 if network.version == 4 else 2**128 - 1
        for value in (low - 1, low, low + 1, (low + high) // 2, high - 1, high, high + 1):
            if 0 <= value <= top:
                addresses.append(str(ipaddress.ip_address(value) if network.version == 4
                                     else ipaddress.IPv6Address(value)))
    for address in addresses:
        assert special_purpose(address) == _special_by_scan(address), address


def _fields(airport: airportsdata.Airport) -> tuple[object, ...]:
    return (airport["icao"], airport["iata"], airport["name"], airport["city"],
            airport["country"], airport["lat"], airport["lon"])


def _airports() -> list[geo_hints.Airfield]:
    """The airports geo_hints reads, in `_airport_rows` order."""
    columns = [geo_hints._column(name) for name in geo_hints.Airfield._fields]
    return [geo_hints.Airfield(*(column[row] for column in columns))
            for row in geo_hints._airport_rows()]


def test_airport_table_is_airportsdata_load() -> None:
    expected = [_fields(a) for a in airportsdata.load("ICAO").values()]
    assert [(*a[:5], a.latitude, a.longitude) for a in _airports()] == expected


def test_iata_places_are_airportsdata_commercial_airports_then_cities() -> None:
    places: dict[str, tuple[object, ...]] = {}
    for a in airportsdata.load("ICAO").values():
        if a["iata"] and not geo_hints._NON_COMMERCIAL.search(a["name"]):
            places[a["iata"]] = ("iata", a["name"], a["city"], a["country"], a["lat"], a["lon"])
    for code, city in airportsdata.load_iata_macs().items():
        members = list(city["airports"].values())
        lat = sum(m["lat"] for m in members) / len(members)
        lon = sum(m["lon"] for m in members) / len(members)
        places.setdefault(code, ("iata-city", city["name"], city["name"], city["country"],
                                 lat, lon))
    codes = set(places) | {a["iata"] for a in airportsdata.load("IATA").values()} | {"", "ZZZ"}
    for code in codes:
        place = geo_hints.iata_place(code.lower())
        found = None if place is None else (place.kind, place.name, place.city, place.country,
                                             place.latitude, place.longitude)
        assert found == places.get(code), code


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789.x :\n\u0663", max_size=16),
                 st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))))
def test_parsed_text_is_what_ipaddress_writes(ip: str) -> None:
    """An address geolocation looks up by its text as given, when inet_pton takes it: that is
    the text ipaddress writes, whatever the string."""
    try:
        address, text = geo._parsed(ip)
    except ConfscopeError:
        return
    assert text == str(address)
