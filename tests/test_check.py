"""Servers, geolocation provenance, plausibility, flags and `confscope check` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.geolocate import GeoSettings
from analyzer.pipeline import Settings, analyze
from tests.mmdb_fixtures import SAN_JOSE, write_mmdb

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
CORPUS = ROOT.parent / "shared" / "corpus"
KEY_SERVER = "52.81.151.250"
OFFLINE = {"CONFSCOPE_GEOIP_DIR": ""}  # no system databases: the embedded default alone


def confscope(*args: str | Path, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    import os

    environ = {**os.environ, **(env or {})}
    environ.pop("CONFSCOPE_GEOIP_DIR", None)
    return subprocess.run([sys.executable, "-m", "analyzer.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=environ)


@pytest.fixture
def wrong_city_db(tmp_path: Path) -> Path:
    """A City database that (wrongly) puts the Citizen Lab key server in San Jose."""
    return write_mmdb(tmp_path / "GeoLite2-City.mmdb", "GeoLite2-City",
                      {"52.80.0.0/15": SAN_JOSE})


def test_key_server_is_in_cn_with_the_embedded_default() -> None:
    servers = analyze([CAPTURES / "citizenlab_ecb.pcap"]).servers
    row = servers[servers["ip"] == KEY_SERVER].iloc[0]
    assert row["country"] == "CN"
    assert "registry" in row["country_source"]
    assert "control" in row["roles"]
    relay = servers[servers["roles"] == "media-relay"].iloc[0]
    assert relay["media_seconds"] > 5 and row["media_seconds"] == 0  # media only via the relay


def test_check_allow_us_ca_breaks_and_names_the_key_server() -> None:
    result = confscope("check", CAPTURES / "citizenlab_ecb.pcap", "--allow-country", "US,CA")
    assert result.returncode == 1, result.stderr
    assert KEY_SERVER in result.stdout and "BREAKS" in result.stdout
    assert "registry iptocc" in result.stdout  # the source is named


def test_check_allow_with_cn_holds() -> None:
    result = confscope("check", CAPTURES / "citizenlab_ecb.pcap", "--allow-country", "US,CA,CN")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "holds" in result.stdout


def test_check_json_and_roles() -> None:
    result = confscope("check", CAPTURES / "citizenlab_ecb.pcap", "--deny-country", "CN",
                       "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["holds"] is False
    assert [s["ip"] for s in report["breaking_servers"]] == [KEY_SERVER]
    relays_only = confscope("check", CAPTURES / "citizenlab_ecb.pcap", "--deny-country", "CN",
                            "--roles", "media-relay")
    assert relays_only.returncode == 0, relays_only.stdout


def test_check_headline_counts_the_servers_checked() -> None:
    servers = analyze([CAPTURES / "citizenlab_ecb.pcap"]).servers
    roles = servers["roles"].str.split("+").map(lambda r: bool(set(r) - {"dns"}))
    checked = int((roles & (servers["special_address"] == "")).sum())
    assert checked >= 2
    broken = confscope("check", CAPTURES / "citizenlab_ecb.pcap", "--allow-country", "US,CA")
    assert broken.stdout.splitlines()[0] == ("Claim: all servers are in US, CA -> does NOT hold: "
                                             f"1 of {checked} server(s) checked break it")
    holds = confscope("check", CAPTURES / "citizenlab_ecb.pcap", "--allow-country", "US,CA,CN")
    assert holds.stdout.splitlines()[0] == ("Claim: all servers are in US, CA, CN -> holds: "
                                            f"{checked} server(s) checked, none breaks it")
    report = json.loads(confscope("check", CAPTURES / "citizenlab_ecb.pcap", "--deny-country",
                                  "CN", "--json").stdout)
    assert report["servers_checked"] == checked


def test_check_bad_input_exits_2(tmp_path: Path) -> None:
    assert confscope("check", tmp_path / "none.pcap", "--deny-country", "CN").returncode == 2
    bad = confscope("check", CAPTURES / "zoom_meeting.pcap", "--deny-country", "China")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    corrupt = tmp_path / "broken.mmdb"
    corrupt.write_bytes(b"not a database")
    result = confscope("check", CAPTURES / "zoom_meeting.pcap", "--deny-country", "CN",
                       "--geoip-db", corrupt)
    assert result.returncode == 2 and "broken.mmdb" in result.stderr


def test_a_database_that_disagrees_is_shown_with_its_source(wrong_city_db: Path) -> None:
    settings = Settings(geo=GeoSettings(databases=(str(wrong_city_db),),
                                        search_default_dirs=False))
    analysis = analyze([CAPTURES / "citizenlab_ecb.pcap"], settings)
    row = analysis.servers.set_index("ip").loc[KEY_SERVER]
    assert bool(row["geo_disagreement"])
    assert "US (GeoLite2-City 2024-05-01)" in row["geo_sources"]
    assert "CN (registry iptocc" in row["geo_sources"]
    assert row["city"] == "San Jose" and row["coordinates_source"] == "GeoLite2-City 2024-05-01"
    kinds = {f["kind"] for f in analysis.findings}
    assert "geolocation-disagreement" in kinds
    names = [d["name"] for d in analysis.summary["geoip_databases"]]  # type: ignore[union-attr]
    assert names[0] == "GeoLite2-City 2024-05-01" and names[1].startswith("registry")


def test_check_with_a_disagreeing_database_still_reports_the_registry(wrong_city_db: Path
                                                                      ) -> None:
    result = confscope("check", CAPTURES / "citizenlab_ecb.pcap", "--allow-country", "US,CA",
                       "--geoip-db", wrong_city_db)
    assert result.returncode == 1
    assert "US (GeoLite2-City 2024-05-01)" in result.stdout and "CN (registry" in result.stdout


def test_cn_server_8ms_from_canada_is_implausible() -> None:
    settings = Settings(geo=GeoSettings(vantage_country="CA", flag_countries=("CN",)))
    analysis = analyze([CAPTURES / "geo_cn_rtt.pcap"], settings)
    servers = analysis.servers
    cn = servers[servers["country"] == "CN"].iloc[0]
    assert cn["plausibility"] == "implausible"
    assert cn["rtt_min_ms"] == pytest.approx(8, abs=0.5)
    assert "implausible" in cn["plausibility_text"]
    assert "doubtful" in cn["flag_reason"]
    findings = {f["kind"]: f for f in analysis.findings}
    assert "implausible-location" in findings
    assert findings["flagged-country"]["severity"] == "medium"  # doubtful flag, not high


def test_flagged_key_server_finding_names_role_and_evidence() -> None:
    settings = Settings(geo=GeoSettings(flag_countries=("CN",), vantage_country="CA"))
    analysis = analyze([CAPTURES / "citizenlab_ecb.pcap"], settings)
    flagged = [f for f in analysis.findings if f["kind"] == "flagged-country"]
    assert len(flagged) == 1
    finding = flagged[0]
    assert finding["title"].startswith("meeting control/key server in CN: 52.81.151.250")
    assert "RTT consistent" in finding["title"]
    evidence = finding["evidence"]
    assert evidence["frames"] and evidence["flow_ids"]  # type: ignore[index]
    assert "registry iptocc" in evidence["values"]["sources"]  # type: ignore[index]


def test_provenance_in_every_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = confscope("analyze", CAPTURES / "citizenlab_ecb.pcap", "-o", out, "-q",
                       "--flag-country", "CN")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["geoip_databases"][0]["build_date"]
    servers = (out / "servers.csv").read_text()
    assert "registry iptocc" in servers
    findings = json.loads((out / "findings.json").read_text())["findings"]
    assert any("registry iptocc" in json.dumps(f["evidence"]) for f in findings)


def test_private_and_documentation_addresses_are_never_geolocated() -> None:
    servers = analyze([CAPTURES / "sip_rtp.pcap"]).servers
    assert set(servers["special_address"]) <= {"documentation (RFC 5737)", "private"}
    assert (servers["country"] == "").all()


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_corpus_roles_and_rtts() -> None:
    servers = analyze([CORPUS / "ndpi" / "zoom2.pcap"]).servers.set_index("ip")
    zoom = servers.loc["144.195.73.154"]
    assert "media-relay" in zoom["roles"] and "control" in zoom["roles"]  # 8801 media + TLS
    assert zoom["rtt_min_ms"] > 0
    meet = analyze([CORPUS / "ndpi" / "google_meet.pcapng"]).servers.set_index("ip")
    assert "control" in meet.loc["173.194.73.101"]["roles"]
    teams = analyze([CORPUS / "ndpi" / "stun_msteams_unidir.pcapng"]).servers
    assert set(teams["services"]) == {"teams"}


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_every_corpus_server_with_a_handshake_has_an_rtt() -> None:
    captures = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    flows = analyze(captures).flows
    # both directions seen and a hello exchange decoded (some corpus flows are one-way)
    answered = flows[(flows["packets_s2c"] > 0) & (flows["packets_c2s"] > 0)
                     & flows["tls_version"].ne("") & flows["tls_version"].ne("QUIC")]
    missing = answered[answered["rtt_min_ms"].isna()]
    assert missing.empty, missing[["capture", "server_ip", "protocols"]].to_string()
