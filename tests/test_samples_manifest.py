"""The sample captures regenerate byte for byte, and the manifest's facts match the pcaps.

The checks read the files back with dpkt (and tshark / pylibsrtp where present), independently
of the generator's own bookkeeping.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpkt
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # captures/ is a tool beside the package, not installed with it
    sys.path.insert(0, str(REPO))

from captures import make_samples  # noqa: E402

CAPTURES = REPO / "captures"
MANIFEST = json.loads((CAPTURES / "manifest.json").read_text())
FILES: dict[str, Any] = MANIFEST["files"]
LINKTYPES = {"EN10MB (Ethernet)": 1, "LINUX_SLL": 113}
ZOOM_RTP_OFFSET = {15: 19, 16: 24, 13: 27, 30: 20}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    make_samples.build(out)
    return out


def test_regeneration_is_byte_identical(regenerated: Path) -> None:
    for name in [*FILES, "manifest.json"]:
        assert (regenerated / name).read_bytes() == (CAPTURES / name).read_bytes(), name


def test_every_capture_is_listed_and_small() -> None:
    on_disk = {p.name for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng")}
    assert on_disk == set(FILES)
    sizes = {name: (CAPTURES / name).stat().st_size for name in FILES}
    assert max(sizes.values()) <= 420_000
    assert sum(sizes.values()) < 5_000_000


# --- reading the captures back ----------------------------------------------------------------


def read_pcapng(path: Path) -> Iterator[tuple[int, bytes]]:
    """(link type, frame bytes) per Enhanced Packet Block of a little-endian pcapng file."""
    data, offset, linktypes = path.read_bytes(), 0, []
    while offset < len(data):
        block_type, length = struct.unpack_from("<II", data, offset)
        if block_type == 1:
            linktypes.append(struct.unpack_from("<H", data, offset + 8)[0])
        elif block_type == 6:
            iface, _, _, caplen = struct.unpack_from("<IIII", data, offset + 8)
            yield linktypes[iface], data[offset + 28 : offset + 28 + caplen]
        offset += length


def frames(name: str) -> Iterator[tuple[int, int, bytes]]:
    """(frame number, link type, bytes) for every record."""
    if name.endswith(".pcapng"):
        records = list(read_pcapng(CAPTURES / name))
    else:
        with open(CAPTURES / name, "rb") as handle:
            reader = dpkt.pcap.Reader(handle)
            records = [(reader.datalink(), buf) for _, buf in reader]
    for number, (linktype, buf) in enumerate(records, start=1):
        yield number, linktype, buf


def ip_layer(linktype: int, buf: bytes) -> Any:
    if linktype == 113:
        return dpkt.sll.SLL(buf).data
    return dpkt.ethernet.Ethernet(buf).data


def packets(name: str) -> Iterator[tuple[int, str, str, str, bytes]]:
    """(frame, transport, src ip:port, dst ip:port, payload) for every TCP/UDP frame."""
    for number, linktype, buf in frames(name):
        ip = ip_layer(linktype, buf)
        l4 = ip.data
        transport = "udp" if isinstance(l4, dpkt.udp.UDP) else "tcp"
        src = _addr(ip, ip.src, l4.sport)
        dst = _addr(ip, ip.dst, l4.dport)
        yield number, transport, src, dst, bytes(l4.data)


def _addr(ip: Any, raw: bytes, port: int) -> str:
    text = str(ipaddress.ip_address(raw))
    return f"[{text}]:{port}" if isinstance(ip, dpkt.ip6.IP6) else f"{text}:{port}"


@pytest.mark.parametrize("name", list(FILES))
def test_packet_count_and_link_types(name: str) -> None:
    entry = FILES[name]
    records = list(frames(name))
    assert len(records) == entry["packet_count"]
    expected = [LINKTYPES[t] for t in entry["link_types"]]
    assert sorted({lt for _, lt, _ in records}) == sorted(expected)


@pytest.mark.parametrize("name", list(FILES))
def test_flows_match_the_capture(name: str) -> None:
    seen = list(packets(name))
    for flow in FILES[name]["flows"]:
        c, s = flow["client"], flow["server"]
        c2s = [n for n, tr, a, b, _ in seen if tr == flow["transport"] and (a, b) == (c, s)]
        s2c = [n for n, tr, a, b, _ in seen if tr == flow["transport"] and (a, b) == (s, c)]
        assert (len(c2s), len(s2c)) == (flow["packets_c2s"], flow["packets_s2c"]), flow
        assert min(c2s + s2c) == flow["first_frame"]
    counted = sum(f["packets_c2s"] + f["packets_s2c"] for f in FILES[name]["flows"])
    assert counted == FILES[name]["packet_count"]


# --- RTP streams ------------------------------------------------------------------------------


def rtp_start(payload: bytes, zoom: bool) -> int | None:
    """Offset of an RTP header inside a UDP payload (relay framing and Zoom headers removed)."""
    offset = 0
    if payload[:2] == b"\xff\x10":
        offset = 12
    elif 0x40 <= payload[0] <= 0x4F:
        offset = 4
    if zoom:
        inner = 8 if payload[0] == 0x05 else 0
        rtp_offset = ZOOM_RTP_OFFSET.get(payload[inner]) if len(payload) > inner else None
        if rtp_offset is None:
            return None
        offset = inner + rtp_offset
    body = payload[offset:]
    if len(body) < 12 or body[0] >> 6 != 2 or 192 <= body[1] <= 223:
        return None
    return offset


def rtp_packets(name: str) -> dict[tuple[str, str, int], list[tuple[int, int, int]]]:
    """(src, dst, ssrc) -> [(frame, pt, seq)] found by parsing the capture."""
    zoom_flows = {(f["client"], f["server"]) for f in FILES[name]["flows"]
                  if f["service"] == "zoom" and f["transport"] == "udp"}
    out: dict[tuple[str, str, int], list[tuple[int, int, int]]] = {}
    for number, transport, src, dst, payload in packets(name):
        zoom = (src, dst) in zoom_flows or (dst, src) in zoom_flows
        if transport != "udp" or not payload:
            continue
        start = rtp_start(payload, zoom)
        if start is None:
            continue
        _, pt, seq, _, ssrc = struct.unpack_from("!BBHII", payload, start)
        out.setdefault((src, dst, ssrc), []).append((number, pt & 0x7F, seq))
    return out


def lost(seqs: list[int]) -> int:
    """Expected minus received over sequence numbers extended across wraps."""
    ext = [seqs[0]]
    for seq in seqs[1:]:
        top = max(ext)
        base = top - (top & 0xFFFF)
        ext.append(min((base + d + seq for d in (-0x10000, 0, 0x10000)),
                       key=lambda c: abs(c - top)))
    return max(ext) - min(ext) + 1 - len(ext)


@pytest.mark.parametrize("name", [n for n in FILES if FILES[n]["streams"]])
def test_streams_match_the_capture(name: str) -> None:
    found = rtp_packets(name)
    expected = {(s["src"], s["dst"], int(s["ssrc"], 16)): s for s in FILES[name]["streams"]}
    assert set(found) == set(expected)
    for key, stream in expected.items():
        rows = found[key]
        assert len(rows) == stream["packets"], stream
        assert {pt for _, pt, _ in rows} == {stream["payload_type"]}
        assert lost([seq for _, _, seq in rows]) == stream["lost"], stream


def test_some_streams_have_loss() -> None:
    lossy = [s for e in FILES.values() for s in e["streams"] if s["lost"] > 0]
    assert len(lossy) >= 5


# --- DNS and key facts ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in FILES if FILES[n]["dns"]])
def test_dns_answers(name: str) -> None:
    answers: dict[str, list[str]] = {}
    for _, transport, src, _, payload in packets(name):
        if transport == "udp" and src.endswith(":53"):
            msg = dpkt.dns.DNS(payload)
            for rr in msg.an:
                if rr.type == dpkt.dns.DNS_A:
                    answers.setdefault(msg.qd[0].name, []).append(
                        dpkt.utils.inet_to_str(rr.rdata))
    assert answers == FILES[name]["dns"]


def test_key_fact_frames_exist() -> None:
    for name, entry in FILES.items():
        for fact in entry["key_facts"]:
            assert all(1 <= n <= entry["packet_count"] for n in fact["frames"]), (name, fact)


def payload_of_frame(name: str, number: int) -> bytes:
    return next(p for n, _, _, _, p in packets(name) if n == number)


def test_sdes_keys_are_in_the_listed_frames() -> None:
    fact = next(f for f in FILES["sip_sdes.pcap"]["key_facts"] if f["id"] == "sdes_keys_cleartext")
    stream = b"".join(p for n, tr, _, _, p in packets("sip_sdes.pcap") if tr == "tcp")
    keys = re.findall(rb"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]{40})", stream)
    assert [k.decode() for k in keys] == [fact["data"]["offer_inline"],
                                          fact["data"]["answer_inline"]]
    listed = b"".join(payload_of_frame("sip_sdes.pcap", n) for n in fact["frames"])
    assert b"a=crypto" in listed


def zoom_payloads(name: str) -> list[tuple[int, bytes]]:
    """(frame, bytes after the RTP header) of every Zoom RTP packet in the capture."""
    out = []
    for number, transport, _, _, payload in packets(name):
        start = rtp_start(payload, zoom=True) if transport == "udp" and payload else None
        if start is None or payload[0] != 0x05:
            continue
        rtp = payload[start:]
        header = 12 + 4 * (rtp[0] & 0x0F)
        if rtp[0] & 0x10:
            header += 4 + 4 * struct.unpack_from("!H", rtp, header + 2)[0]
        out.append((number, rtp[header:]))
    return out


def repeated_block_frames(name: str, skip: int) -> list[int]:
    payloads = zoom_payloads(name)
    blocks = {n: [p[i : i + 16] for i in range(skip, len(p) - 15, 16)] for n, p in payloads}
    counts = Counter(b for bl in blocks.values() for b in bl)
    return sorted(n for n, bl in blocks.items() if any(counts[b] > 1 for b in bl))


def test_ecb_ground_truth_matches_ciphertext() -> None:
    fact = next(f for f in FILES["citizenlab_ecb.pcap"]["key_facts"]
                if f["id"] == "ecb_repeated_blocks")
    assert fact["frames"] and repeated_block_frames("citizenlab_ecb.pcap", 0) == fact["frames"]
    assert repeated_block_frames("citizenlab_gcm.pcap", 12) == []
    assert repeated_block_frames("citizenlab_ctr.pcap", 0) == []
    for other in ("citizenlab_gcm.pcap", "citizenlab_ctr.pcap"):
        gt = next(f for f in FILES[other]["key_facts"] if f["id"] == "no_repeated_ciphertext")
        assert gt["data"]["plaintext_repeat_frames"] == fact["frames"]


def test_ecb_payloads_decrypt_with_the_listed_key() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    fact = next(f for f in FILES["citizenlab_ecb.pcap"]["key_facts"]
                if f["id"] == "ecb_repeated_blocks")
    key = bytes.fromhex(fact["data"]["key"])
    for _, payload in zoom_payloads("citizenlab_ecb.pcap")[:50]:
        assert len(payload) % 16 == 0
        plain = Cipher(algorithms.AES(key), modes.ECB()).decryptor().update(payload)
        assert 1 <= plain[-1] <= 16 and plain.endswith(bytes([plain[-1]]) * plain[-1])


def test_rtt_facts_match_handshakes() -> None:
    entry = FILES["geo_cn_rtt.pcap"]
    with open(CAPTURES / "geo_cn_rtt.pcap", "rb") as handle:
        times = {n: ts for n, (ts, _) in enumerate(dpkt.pcap.Reader(handle), start=1)}
    facts = [f for f in entry["key_facts"] if f["id"].startswith("rtt_")]
    assert {f["data"]["registry_country"] for f in facts} == {"CN", "US"}
    for fact in facts:
        syn, synack = fact["frames"]
        assert round((times[synack] - times[syn]) * 1000, 3) == fact["data"]["syn_rtt_ms"]


# --- cross-checks with real tools, when present -----------------------------------------------

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def tshark_fields(name: str, display_filter: str, *fields: str) -> list[str]:
    cmd = ["tshark", "-r", str(CAPTURES / name), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
    return [line for line in run.stdout.splitlines() if line.strip()]


@needs_tshark
def test_tshark_decrypts_the_quic_initial_sni() -> None:
    rows = tshark_fields("quic_meet.pcap", "tls.handshake.type == 1",
                         "tls.handshake.extensions_server_name")
    assert rows == ["meet.google.com"]


@needs_tshark
def test_tshark_sees_the_selected_srtp_profile() -> None:
    fact = next(f for f in FILES["webrtc_call.pcapng"]["key_facts"]
                if f["id"] == "dtls_srtp_profile")
    rows = tshark_fields("webrtc_call.pcapng", "dtls.handshake.type == 2",
                         "dtls.use_srtp.protection_profile")
    assert [int(r, 16) for r in rows] == [int(fact["data"]["selected"], 16)]


@needs_tshark
def test_tshark_rtp_loss_agrees_for_sip() -> None:
    run = subprocess.run(["tshark", "-r", str(CAPTURES / "sip_rtp.pcap"), "-q", "-d",
                          "udp.port==40000,rtp", "-z", "rtp,streams"], capture_output=True,
                         text=True, check=True, timeout=60)
    row = re.compile(r"(0x[0-9A-Fa-f]{8})\s+\S+\s+\d+\s+(-?\d+) \(")
    lost_by_ssrc = {int(m.group(1), 16): int(m.group(2)) for m in row.finditer(run.stdout)}
    expected = {int(s["ssrc"], 16): s["lost"] for s in FILES["sip_rtp.pcap"]["streams"]}
    assert lost_by_ssrc == expected


def test_sdes_srtp_decrypts_with_the_sdp_keys() -> None:
    pylibsrtp = pytest.importorskip("pylibsrtp")
    fact = next(f for f in FILES["sip_sdes.pcap"]["key_facts"] if f["id"] == "sdes_keys_cleartext")
    policy = pylibsrtp.Policy(key=base64.b64decode(fact["data"]["offer_inline"]),
                              ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    session = pylibsrtp.Session(policy=policy)
    phone = "192.168.10.20:40000"
    count = 0
    for _, transport, src, _, payload in packets("sip_sdes.pcap"):
        if transport == "udp" and src == phone:
            plain = session.unprotect(payload)
            assert len(plain) == 12 + 160  # PCMU, 20 ms
            count += 1
    assert count == next(s for s in FILES["sip_sdes.pcap"]["streams"] if s["src"] == phone)[
        "packets"]
