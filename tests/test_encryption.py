"""Encryption verdicts, key exchange, ECB detection, coverage and findings (issue: encryption).

The samples are built with real cryptography (captures/make_samples.py); what each verdict
must be follows from the rules in analyzer/encryption.py's docstring and the issue text.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from analyzer.pipeline import Analysis, analyze

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
CORPUS = ROOT.parent / "shared" / "corpus"
MANIFEST = json.loads((CAPTURES / "manifest.json").read_text())


@cache
def run(name: str) -> Analysis:
    return analyze([CAPTURES / name])


def media_flow(name: str) -> pd.Series:
    flows = run(name).flows
    media = flows[flows["protocols"].str.contains("rtp")]
    return media.sort_values("packets_c2s", ascending=False).iloc[0]


def kinds(name: str) -> dict[str, dict]:
    return {f["kind"]: f for f in run(name).findings}


def test_plain_sip_call_is_cleartext() -> None:
    flow = media_flow("sip_rtp.pcap")
    assert (flow.encryption, flow.key_exchange) == ("cleartext", "none")
    assert "RTP/AVP" in flow.encryption_detail
    assert kinds("sip_rtp.pcap")["cleartext-media"]["severity"] == "high"


def test_sdes_keys_in_cleartext_sip_are_weak_and_cited_by_frame() -> None:
    flow = media_flow("sip_sdes.pcap")
    assert (flow.encryption, flow.key_exchange) == ("weak", "sdes-cleartext")
    finding = kinds("sip_sdes.pcap")["sdes-keys-in-cleartext"]
    truth = next(f for f in MANIFEST["files"]["sip_sdes.pcap"]["key_facts"]
                 if f["id"] == "sdes_keys_cleartext")
    frames = finding["evidence"]["frames"]
    assert frames and set(frames) <= set(truth["frames"])
    if shutil.which("tshark"):  # Wireshark's frame N really carries the a=crypto line
        for frame in frames:
            out = subprocess.run(
                ["tshark", "-r", str(CAPTURES / "sip_sdes.pcap"), "-Y", f"frame.number=={frame}",
                 "-T", "fields", "-e", "sdp.media_attr"], capture_output=True, text=True,
                check=True).stdout
            assert "crypto:" in out


def test_webrtc_dtls_srtp_is_encrypted_hop_by_hop_with_fingerprints() -> None:
    flow = media_flow("webrtc_call.pcapng")
    assert (flow.encryption, flow.key_exchange, flow.protection) == (
        "encrypted", "dtls-srtp", "hop-by-hop")
    assert "SRTP_AEAD_AES_256_GCM" in flow.encryption_detail
    assert "server certificate SHA-256" in flow.key_exchange_detail
    assert "client certificate SHA-256" in flow.key_exchange_detail


def test_dtls10_with_null_srtp_is_weak() -> None:
    flow = media_flow("dtls10_null_srtp.pcap")
    assert flow.encryption == "weak"
    assert "DTLS 1.0" in flow.weak_reasons and "NULL cipher" in flow.weak_reasons
    assert kinds("dtls10_null_srtp.pcap")["weak-encryption"]["severity"] == "high"


def test_tls10_rc4_is_weak() -> None:
    flow = run("tls10_weak.pcap").flows.iloc[0]
    assert flow.encryption == "weak" and "RC4" in flow.encryption_detail
    assert "rc4" in flow.weak_reasons and "TLS 1.0" in flow.weak_reasons


def test_zrtp_is_end_to_end_and_quic_is_encrypted() -> None:
    flow = media_flow("zrtp_call.pcap")
    assert (flow.encryption, flow.key_exchange, flow.protection) == (
        "encrypted", "zrtp", "end-to-end")
    quic = run("quic_meet.pcap").flows.iloc[0]
    assert (quic.encryption, quic.key_exchange) == ("encrypted", "quic")


def test_dns_and_stun_are_cleartext() -> None:
    flows = run("zoom_p2p.pcap").flows
    stun = flows[flows["protocols"] == "stun"].iloc[0]
    assert stun.encryption == "cleartext" and "addresses" in stun.encryption_detail
    dns = run("zoom_meeting.pcap").flows
    assert set(dns[dns["protocols"] == "dns"]["encryption"]) == {"cleartext"}


def test_zoom_keys_come_from_named_control_servers() -> None:
    flow = media_flow("zoom_meeting.pcap")
    assert (flow.key_exchange, flow.protection) == ("service-control-tls", "service-held-keys")
    assert "zoomsjccv154mmr.sjc.zoom.us 144.195.52.154:443" in flow.key_exchange_detail
    assert kinds("zoom_meeting.pcap")["service-can-decrypt"]["severity"] == "medium"


def test_ecb_meeting_is_found_with_frames_from_the_ground_truth() -> None:
    analysis = run("citizenlab_ecb.pcap")
    streams = analysis.streams
    assert set(streams["ecb_verdict"]) == {"ecb"}
    assert set(streams["encryption"]) == {"weak"}
    assert (streams["ecb_repeat_rate"] > 0).all()
    assert (streams["ecb_expected_random"] < 1e-20).all()  # a sound cipher would not repeat
    finding = kinds("citizenlab_ecb.pcap")["ecb-mode"]
    assert finding["severity"] == "high"
    assert float(finding["evidence"]["values"]["expected_by_chance"]) < 1e-20
    truth = next(f for f in MANIFEST["files"]["citizenlab_ecb.pcap"]["key_facts"]
                 if f["id"] == "ecb_repeated_blocks")
    assert finding["evidence"]["frames"]
    assert set(finding["evidence"]["frames"]) <= set(truth["frames"])
    key_server = analysis.flows[analysis.flows["server_ip"] == "52.81.151.250"].iloc[0]
    assert key_server.encryption == "encrypted"  # the TLS control channel itself is fine
    assert "52.81.151.250" in media_flow("citizenlab_ecb.pcap").key_exchange_detail


@pytest.mark.parametrize("name", ["citizenlab_gcm.pcap", "citizenlab_ctr.pcap"])
def test_same_meeting_under_gcm_or_ctr_has_no_ecb_finding(name: str) -> None:
    assert "ecb-mode" not in kinds(name)
    assert not (run(name).streams["ecb_verdict"] == "ecb").any()
    assert set(run(name).streams["encryption"]) == {"encrypted"}


def test_coverage_shares_add_up_per_scope() -> None:
    coverage = run("sip_sdes.pcap").tables["coverage"]
    for _, scope in coverage.groupby(["capture", "scope"]):
        for column in ("share_flows", "share_packets", "share_bytes"):
            assert scope[column].sum() == pytest.approx(1.0)
    weak = coverage[(coverage["scope"] == "all") & (coverage["verdict"] == "weak")].iloc[0]
    assert weak["media_seconds"] > 0 and weak["share_media_seconds"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_finding_frames_are_wireshark_frames(name: str) -> None:
    packets = MANIFEST["files"][name]["packet_count"]
    flows = run(name).flows
    for finding in run(name).findings:
        evidence = finding["evidence"]
        assert all(1 <= f <= packets for f in evidence["frames"]), finding["title"]
        assert set(evidence["flow_ids"]) <= set(flows["flow_id"]), finding["title"]
        assert finding["explanation"] and finding["severity"] in ("high", "medium", "low", "info")


# ---------------------------------------------------------------------- real captures

# Where confscope's verdict and nDPI's Encrypted/ClearText flag differ, and why.
REASONS = {
    ("unknown", "ClearText"): "a protocol confscope does not decode (out of scope) or a "
                              "stream joined mid-way: confscope says unknown rather than guess",
    ("unknown", "Encrypted"): "only a ClientHello (nothing encrypted yet), or a protocol "
                              "confscope does not decode (Mumble, gQUIC TCP fallbacks)",
    ("encrypted", "ClearText"): "nDPI's flag follows the first protocol it saw (STUN/RTCP); "
                                "the flow then carries SRTCP or documented SRTP",
    ("cleartext", "Encrypted"): "Discord's voice IP discovery and latency probes carry "
                                "addresses and counters, no media: nothing to encrypt",
}


def _endpoint(text: str) -> tuple[str, int] | None:
    host, port = text.strip().rsplit(":", 1)
    try:
        return str(ipaddress.ip_address(host.strip("[]"))), int(port)
    except ValueError:
        return None  # labels.tsv has one malformed IPv6 address


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_corpus_verdicts_agree_with_reference_flags_or_say_why() -> None:
    rows = list(csv.DictReader((CORPUS / "labels.tsv").open(), delimiter="\t"))
    cache_: dict[str, pd.DataFrame] = {}
    disagreements: dict[tuple[str, str], int] = {}
    agreements = 0
    for row in rows:
        a, b = _endpoint(row["src"]), _endpoint(row["dst"])
        if a is None or b is None:
            continue
        if row["capture"] not in cache_:
            cache_[row["capture"]] = analyze([CORPUS / row["capture"]]).flows
        flows = cache_[row["capture"]]
        match = flows[((flows.client_ip == a[0]) & (flows.client_port == a[1])
                       & (flows.server_ip == b[0]) & (flows.server_port == b[1]))
                      | ((flows.client_ip == b[0]) & (flows.client_port == b[1])
                         & (flows.server_ip == a[0]) & (flows.server_port == a[1]))]
        if match.empty:
            continue  # ICMP and other non-TCP/UDP rows
        ours = match.iloc[0]["encryption"]
        same = (ours in ("encrypted", "weak")) == (row["enc"] == "Encrypted") and ours != "unknown"
        if same:
            agreements += 1
        else:
            disagreements[(ours, row["enc"])] = disagreements.get((ours, row["enc"]), 0) + 1
    assert agreements > 150
    assert set(disagreements) <= set(REASONS), disagreements


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")
def test_no_ecb_finding_on_any_corpus_capture() -> None:
    captures = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    analysis = analyze(captures)
    assert not (analysis.streams["ecb_verdict"] == "ecb").any()
    assert not [f for f in analysis.findings if f["kind"] == "ecb-mode"]


def test_opaque_traffic_is_unknown_not_guessed() -> None:
    flows = run("opaque_traffic.pcap").flows
    assert set(flows["encryption"]) == {"unknown"}
    assert kinds("opaque_traffic.pcap")["not-assessed"]["severity"] == "low"


def test_every_finding_says_what_would_refute_it() -> None:
    found = [(name, f) for name in MANIFEST["files"] for f in run(name).findings]
    assert {f["kind"] for _, f in found} >= {"not-assessed", "ecb-mode", "cleartext-media"}
    for name, finding in found:
        assert str(finding["refute"]).strip(), (name, finding["kind"])


def test_every_verdict_has_a_sample() -> None:
    verdicts = {v for name in MANIFEST["files"] for v in run(name).flows["encryption"]}
    assert verdicts == {"cleartext", "weak", "encrypted", "unknown"}


@pytest.mark.parametrize("opened_before", [0, 2, 4, 9])
def test_zoom_control_servers_are_the_first_tls_flows_opened_before_the_media(
        opened_before: int) -> None:
    """The first CONTROL_SERVERS_SHOWN of the service's TLS flows opened before the media
    flow, in flow order; without any, the first of them all."""
    from analyzer.assess import _add_control_servers
    from analyzer.encryption import CONTROL_SERVERS_SHOWN, FlowView
    from analyzer.facts import FlowFacts, HandshakeFacts
    from analyzer.flows import Flow, FlowTable

    table, views = FlowTable(), []
    frames = [10 * i for i in range(opened_before)] + [1000 + i for i in range(12)]
    frames.insert(len(frames) // 2, 500)  # the media flow, among the others in flow order
    for index, frame in enumerate(frames):
        table.flows.append(Flow(index + 1, "udp" if frame == 500 else "tcp", (0, 1, 1), (0, 2, 2),
                                frame, frame, frame, 0))
        facts = FlowFacts()
        if frame != 500:
            facts.tls = HandshakeFacts("tls")
        views.append(FlowView(index + 1, "tcp", "zoom", False, f"192.0.2.{index}:443",
                              f"tls{index}.zoom.us", facts))
    media = views[frames.index(500)]
    media.zoom_media = True
    _add_control_servers(views, table)
    tls = [v for v in views if v is not media]
    before = [v for v in tls if table.flows[v.flow_id - 1].first_frame < 500]
    named = (before or tls)[:CONTROL_SERVERS_SHOWN]
    assert media.control_servers == tuple(
        f"{v.server_name} {v.server} (flow {v.flow_id})" for v in named)
