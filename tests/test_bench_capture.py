"""The benchmark capture generator (bench/make_capture.py) writes captures that parse.

Each capture is checked from the bytes up, with parsers written here from the specs (pcap,
pcapng, RFC 791/768/793 checksums, RTP, STUN, Zoom §1.3-1.6, TURN ChannelData) and with dpkt;
where tshark is installed, also against tshark's dissection.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dpkt
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKETS = 20_000
CALLS = 30
STUN_COOKIE = b"\x21\x12\xa4\x42"
ZOOM_PORT, TURN_PORT, SIP_PORT = 8801, 3478, 5060
RTP_CLOCK_STEP = {0: 160, 111: 960}  # PCMU 8 kHz and Opus 48 kHz, 20 ms packets


def make_capture(out: Path, *args: str) -> dict:
    """Run the generator's command line; return its JSON summary."""
    subprocess.run([sys.executable, "-m", "bench.make_capture", str(out), *args], cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    return json.loads(out.with_name(out.name + ".json").read_text())


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "mix.pcap"
    summary = make_capture(out, "--packets", str(PACKETS), "--calls", str(CALLS), "--seed", "7")
    return out, summary


@dataclass
class Frame:
    ts: float
    l3: dpkt.ip.IP | dpkt.ip6.IP6
    l4: dpkt.udp.UDP | dpkt.tcp.TCP
    vlan: bool

    @property
    def payload(self) -> bytes:
        return bytes(self.l4.data)

    @property
    def ports(self) -> tuple[int, int]:
        return self.l4.sport, self.l4.dport

    @property
    def key(self) -> tuple[bytes, bytes, int, int]:
        return self.l3.src, self.l3.dst, self.l4.sport, self.l4.dport


def frames(path: Path) -> Iterator[Frame]:
    with open(path, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            l3 = eth.data
            assert isinstance(l3, dpkt.ip.IP | dpkt.ip6.IP6), f"not IP at {ts}"
            assert isinstance(l3.data, dpkt.udp.UDP | dpkt.tcp.TCP)
            yield Frame(ts, l3, l3.data, bool(getattr(eth, "vlan_tags", [])))


@pytest.fixture(scope="module")
def parsed(capture: tuple[Path, dict]) -> list[Frame]:
    return list(frames(capture[0]))


# --- independent classification -------------------------------------------------------------


def rtcp_walk_is_exact(p: bytes) -> bool:
    """True when the RTCP length fields tile the datagram exactly (plain, not SRTCP)."""
    at = 0
    while at + 4 <= len(p) and p[at] >> 6 == 2 and 200 <= p[at + 1] <= 207:
        at += 4 * (struct.unpack_from(">H", p, at + 2)[0] + 1)
    return at == len(p)


def classify_udp(f: Frame) -> str:
    p, ports = f.payload, f.ports
    if SIP_PORT in ports:
        return "sip"
    if ZOOM_PORT in ports and p[0] == 0x05:
        return {0x0F: "zoom-audio", 0x10: "zoom-video", 0x22: "zoom-rtcp"}[p[8]]
    if TURN_PORT in ports:
        is_channel = 0x40 <= p[0] <= 0x4F and struct.unpack(">H", p[2:4])[0] == len(p) - 4
        return "turn-channeldata" if is_channel else "turn-stun"
    if p[0] < 4 and p[4:8] == STUN_COOKIE:
        return "stun"
    if 20 <= p[0] <= 63 and p[1:3] == b"\xfe\xfd":
        return "dtls"
    if 200 <= p[1] <= 207:
        return "rtcp" if rtcp_walk_is_exact(p) else "srtcp"
    return {0: "rtp-audio", 98: "rtp-video", 111: "srtp-audio", 96: "srtp-video"}[p[1] & 0x7F]


def classify(f: Frame) -> str:
    if isinstance(f.l4, dpkt.udp.UDP):
        return classify_udp(f)
    return "tls" if f.payload else "tcp"


def rtp_offset(f: Frame, kind: str) -> int | None:
    """Where the RTP header starts in the UDP payload (protocols.md §1.6 for Zoom)."""
    offsets = {"zoom-audio": 8 + 19, "zoom-video": 8 + 24, "turn-channeldata": 4}
    if kind in offsets:
        return offsets[kind]
    return 0 if kind.endswith(("-audio", "-video")) else None


# --- the tests -------------------------------------------------------------------------------


def test_packet_count_time_order_and_encapsulations(capture: tuple[Path, dict],
                                                    parsed: list[Frame]) -> None:
    assert len(parsed) == PACKETS == capture[1]["packets"]
    times = [f.ts for f in parsed]
    assert times == sorted(times)
    assert any(f.vlan for f in parsed) and any(not f.vlan for f in parsed)
    v6 = sum(isinstance(f.l3, dpkt.ip6.IP6) for f in parsed)
    assert 0 < v6 < PACKETS // 4
    assert capture[0].stat().st_size == capture[1]["bytes"]


def test_protocol_mix_matches_the_bytes(capture: tuple[Path, dict], parsed: list[Frame]) -> None:
    counted = Counter(classify(f) for f in parsed)
    assert dict(counted) == capture[1]["mix"]
    media = sum(n for k, n in counted.items() if k.endswith(("audio", "video", "channeldata")))
    assert media > 0.9 * PACKETS
    control = ("stun", "dtls", "rtcp", "srtcp", "zoom-rtcp", "turn-stun", "tls", "tcp", "sip")
    for kind in control:
        assert counted[kind] > 0, kind


def test_rtp_sequence_numbers_progress(parsed: list[Frame]) -> None:
    """Per stream, seq advances by one except for ~0.5 % loss and rare reordering."""
    streams: dict[tuple, list[tuple[int, int, int]]] = defaultdict(list)
    for f in parsed:
        kind = classify(f)
        at = rtp_offset(f, kind)
        if at is None:
            continue
        rtp = dpkt.rtp.RTP(f.payload[at:])
        assert rtp.version == 2
        streams[(*f.key, rtp.ssrc)].append((rtp.seq, rtp.ts, rtp.pt))
    deltas: Counter[int] = Counter()
    for packets in streams.values():
        for (s0, t0, pt), (s1, t1, _) in itertools.pairwise(packets):
            delta = (s1 - s0) % 65536
            deltas[delta if delta < 32768 else -1] += 1
            if delta == 1 and pt in RTP_CLOCK_STEP:
                assert (t1 - t0) % (1 << 32) == RTP_CLOCK_STEP[pt]
    total = sum(deltas.values())
    assert 0 not in deltas  # no duplicates
    assert deltas[1] / total > 0.98
    lost = sum((d - 1) * n for d, n in deltas.items() if d > 1)
    assert 0.001 < lost / total < 0.015
    assert 0 < deltas[-1] / total < 0.005  # reordered
    assert len(streams) > 2 * CALLS


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_ip_udp_tcp_checksums_verify(capture: tuple[Path, dict]) -> None:
    with open(capture[0], "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            at = 14 + (4 if buf[12:14] == b"\x81\x00" else 0)
            version = buf[at] >> 4
            if version == 4:
                assert checksum(buf[at : at + 20]) == 0xFFFF
                proto, addrs, l4 = buf[at + 9], buf[at + 12 : at + 20], buf[at + 20 :]
            else:
                proto, addrs, l4 = buf[at + 6], buf[at + 8 : at + 40], buf[at + 40 :]
            pseudo = addrs + struct.pack(">HH", proto, len(l4))
            assert checksum(pseudo + l4) == 0xFFFF


def test_stun_messages(parsed: list[Frame]) -> None:
    """FINGERPRINT is the CRC-32 of the message (RFC 8489 §14.7); a success response's
    XOR-MAPPED-ADDRESS is the address the request came from."""
    seen = 0
    for f in parsed:
        if classify(f) not in ("stun", "turn-stun"):
            continue
        p = f.payload
        attrs = dict(stun_attributes(p))
        crc = struct.unpack(">I", attrs[0x8028])[0]
        assert crc == zlib.crc32(p[:-8]) ^ 0x5354554E
        if p[:2] == b"\x01\x01" and 0x0020 in attrs:
            port, ip = unxor_address(attrs[0x0020], p[8:20])
            assert (ip, port) == (f.l3.dst, f.l4.dport)
            seen += 1
    assert seen > 0


def stun_attributes(p: bytes) -> Iterator[tuple[int, bytes]]:
    at = 20
    assert struct.unpack(">H", p[2:4])[0] == len(p) - 20
    while at < len(p):
        kind, length = struct.unpack_from(">HH", p, at)
        yield kind, p[at + 4 : at + 4 + length]
        at += 4 + length + (-length % 4)


def unxor_address(value: bytes, txid: bytes) -> tuple[int, bytes]:
    mask = STUN_COOKIE + txid
    port = struct.unpack(">H", value[2:4])[0] ^ 0x2112
    return port, bytes(a ^ b for a, b in zip(value[4:], mask, strict=False))


def test_zoom_encapsulation(parsed: list[Frame]) -> None:
    """SFU direction byte 0x00 towards 8801, 0x04 from it; SFU seq counts packets per flow."""
    last_seq: dict[tuple, int] = {}
    steps: Counter[int] = Counter()
    for f in parsed:
        kind = classify(f)
        if kind not in ("zoom-audio", "zoom-video"):
            continue
        p = f.payload
        assert p[7] == (0x00 if f.l4.dport == ZOOM_PORT else 0x04)
        seq = struct.unpack(">H", p[1:3])[0]
        if f.key in last_seq:
            steps[(seq - last_seq[f.key]) % 65536] += 1
        last_seq[f.key] = seq
        if kind == "zoom-video":
            assert p[8 + 20] == 0x02 and p[8 + 23] >= 1
    assert steps[1] / sum(steps.values()) > 0.98


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    digests = []
    for name in ("a.pcap", "b.pcap"):
        make_capture(tmp_path / name, "--packets", "3000", "--calls", "10", "--seed", "3")
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_gzip_and_size_limit(tmp_path: Path) -> None:
    out = tmp_path / "c.pcap.gz"
    summary = make_capture(out, "--size", "2M", "--calls", "20", "--gzip")
    with gzip.open(out, "rb") as f:
        raw = f.read()
    assert len(raw) == summary["bytes"]
    assert 2 * 2**20 - 2000 < len(raw) <= 2 * 2**20
    with gzip.open(out, "rb") as f:
        assert sum(1 for _ in dpkt.pcap.Reader(f)) == summary["packets"]


def pcapng_blocks(data: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at < len(data):
        kind, length = struct.unpack_from("<II", data, at)
        assert length % 4 == 0 and struct.unpack_from("<I", data, at + length - 4)[0] == length
        yield kind, data[at + 8 : at + length - 4]
        at += length


def test_pcapng_two_interfaces(tmp_path: Path) -> None:
    out = tmp_path / "d.pcapng"
    summary = make_capture(out, "--packets", "5000", "--calls", "20", "--format", "pcapng")
    blocks = list(pcapng_blocks(out.read_bytes()))
    assert blocks[0][0] == 0x0A0D0D0A and [k for k, _ in blocks[1:3]] == [1, 1]
    resolution = [10**-6, 10**-9]
    assert b"\x09\x00\x01\x00\x09" in blocks[2][1]  # if_tsresol = 9 on the second interface
    times: list[float] = []
    interfaces: Counter[int] = Counter()
    for kind, body in blocks[3:]:
        assert kind == 6
        iface, hi, lo, caplen, wirelen = struct.unpack_from("<IIIII", body)
        assert caplen == wirelen and len(body) == 20 + caplen + (-caplen % 4)
        dpkt.ethernet.Ethernet(body[20 : 20 + caplen])
        times.append(((hi << 32) | lo) * resolution[iface])
        interfaces[iface] += 1
    assert len(times) == summary["packets"] == 5000
    assert times == sorted(times) and 1.7e9 < times[0] < 1.8e9
    assert interfaces[0] > 0 and interfaces[1] > 0


# --- tshark's view -------------------------------------------------------------------------

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def tshark(path: Path, *args: str) -> list[str]:
    result = subprocess.run(["tshark", "-r", str(path), *args], capture_output=True, text=True,
                            check=True, timeout=120)
    return [line for line in result.stdout.splitlines() if line]


@needs_tshark
def test_tshark_finds_nothing_malformed(capture: tuple[Path, dict]) -> None:
    bad = tshark(capture[0], "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                 "-Y", "_ws.malformed || udp.checksum.status == 0 || tcp.checksum.status == 0"
                 " || ip.checksum.status == 0", "-T", "fields", "-e", "frame.number")
    assert bad == []


@needs_tshark
def test_tshark_reads_the_handshakes(capture: tuple[Path, dict]) -> None:
    """DTLS ServerHello picks the SRTP profile, ClientHellos carry the SNI, INVITEs the SDP."""
    rows = tshark(capture[0], "-Y", 'dtls.handshake.type == 2 || tls.handshake.type == 1'
                  ' || (sip.Method == "INVITE" && sdp)', "-T", "fields",
                  "-e", "dtls.use_srtp.protection_profile",
                  "-e", "tls.handshake.extensions_server_name", "-e", "sdp.media.port")
    profiles, names, ports = (
        {row.split("\t")[i] for row in rows} - {""} for i in range(3)
    )
    assert profiles == {"0x0001"}
    assert names and names <= {"zoom.us", "www3.zoom.us", "zoomfrn99mmr.zoom.us",
                               "zoomsjccv154mmr.sjc.zoom.us", "meet.google.com",
                               "teams.microsoft.com", "web.webex.com", "meet.jit.si"}
    assert ports


@needs_tshark
def test_tshark_rtp_heuristic_agrees_on_plain_rtp(capture: tuple[Path, dict],
                                                  parsed: list[Frame]) -> None:
    rows = tshark(capture[0], "--enable-heuristic", "rtp_udp", "-Y", "rtp.p_type == 0",
                  "-T", "fields", "-e", "frame.number", "-e", "rtp.seq")
    ours = {i + 1: dpkt.rtp.RTP(f.payload).seq for i, f in enumerate(parsed)
            if classify(f) == "rtp-audio"}
    theirs = {int(n): int(s) for n, s in (row.split("\t") for row in rows)}
    assert theirs == ours


def test_runner_writes_its_section(capture: tuple[Path, dict], tmp_path: Path) -> None:
    """bench.run times a tool and rewrites only its own section of the report."""
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nkept by hand\n")
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "bench.run", str(capture[0]), "--runs", "2",
                               "--tools", "cat", "--out", str(out)], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=60)
    text = out.read_text()
    install = next(line for line in text.splitlines() if line.startswith("* confscope install"))
    assert ("regular" in install) == ("note: timing confscope installed" not in done.stderr)
    assert text.count("<!-- timing:begin -->") == 1 and "kept by hand" in text
    row = next(line for line in text.splitlines() if line.startswith("| cat |"))
    cells = [cell.strip() for cell in row.split("|")[2:-1]]
    wall, cpu, rss, runs = float(cells[0]), float(cells[2]), cells[3], cells[-1]
    assert 0 <= wall < 10 and cpu >= 0 and int(rss.replace(",", "")) > 0 and runs == "2"
    assert f"{PACKETS:,} packets" in text and "cat " + str(capture[0]) in text


def test_runner_times_confscope_with_and_without_the_hash(capture: tuple[Path, dict],
                                                          tmp_path: Path) -> None:
    """The default command (hashing the capture) is the headline; the same analysis without
    the hash has its own row and ratio."""
    out = tmp_path / "benchmarks.md"
    subprocess.run([sys.executable, "-m", "bench.run", str(capture[0]), "--runs", "1",
                    "--tools", "confscope,confscope --no-hash,cat", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    text = out.read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith("| confscope")]
    assert rows == ["confscope", "confscope --no-hash"]
    assert "--no-report --jobs" in text and "--no-hash\n" in text


def test_runner_memory_check_covers_big_and_long_captures(tmp_path: Path) -> None:
    """The memory check makes its captures, runs confscope once on each, reports both shapes
    (large packets; hours of small ones) and deletes what it made."""
    out = tmp_path / "benchmarks.md"
    subprocess.run([sys.executable, "-m", "bench.run", "--memory-check", "--big-capture",
                    str(tmp_path / "big.pcap"), "--big-size", "4M", "--long-hours", "0.02,0.1",
                    "--jobs", "1", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    text = out.read_text()
    assert text.count("<!-- memory:begin -->") == 1
    assert "### Long captures of small packets" in text
    rows = {line.split("`")[1]: [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| `")}
    assert list(rows) == ["big.pcap", "long-0.02h.pcap", "long-0.1h.pcap"]
    assert rows["long-0.02h.pcap"][0] == "21,600" and rows["long-0.1h.pcap"][0] == "108,000"
    assert all(int(cells[-1].replace(",", "")) > 0 for cells in rows.values())  # tree RSS
    assert "on the longest capture" in text and "Growth from the reference capture" in text
    assert not list(tmp_path.glob("*.pcap"))


def test_runner_times_the_formats(capture: tuple[Path, dict], tmp_path: Path) -> None:
    """--formats times confscope on the capture and on the same packets as pcapng and as gzip,
    reports the ratios, and keeps none of the captures it made."""
    source = tmp_path / "mix.pcap"
    shutil.copy(capture[0], source)
    shutil.copy(capture[0].with_name("mix.pcap.json"), tmp_path / "mix.pcap.json")
    out = tmp_path / "benchmarks.md"
    subprocess.run([sys.executable, "-m", "bench.run", str(source), "--formats", "--runs", "1",
                    "--jobs", "2", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    text = out.read_text()
    assert text.count("<!-- formats:begin -->") == 1 and "not available" not in text
    rows = [line.split("|") for line in text.splitlines()
            if line.startswith(("| pcap ", "| pcapng ", "| gzip "))]
    assert [row[1].strip() for row in rows] == ["pcap", "pcapng", "gzip"]
    sizes = {row[1].strip(): float(row[2].replace(",", "")) for row in rows}
    assert sizes["gzip"] < sizes["pcap"] <= sizes["pcapng"]
    assert all(0 < float(row[3]) < 60 for row in rows)
    assert "pcapng / pcap wall time" in text and "gzip / pcap wall time" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.md", "mix.pcap",
                                                         "mix.pcap.json"]


@pytest.mark.parametrize("editable", [True, False])
def test_runner_says_how_confscope_is_installed(editable: bool, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's install line reads the timed install's own dist-info (PEP 610's
    direct_url.json) and the site-packages' .pth files, not a build's egg-info in the checkout."""
    from bench import run

    if not os.access(Path(sys.executable).with_name("confscope"), os.X_OK):
        pytest.skip("no confscope script beside this interpreter")
    info = tmp_path / "confscope-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: confscope\nVersion: 0.1.0\n")
    url = {"url": "file:///src/confscope", "dir_info": {"editable": True} if editable else {}}
    (info / "direct_url.json").write_text(json.dumps(url))
    (tmp_path / "zz_start.pth").write_text("import os\n")
    monkeypatch.setattr(run, "site_packages", lambda: tmp_path)
    said = run.confscope_install()
    assert said.startswith("editable (`pip install -e .`)" if editable
                           else "regular (`pip install .`)")
    assert said.endswith(".pth files run at start: zz_start.pth")
    info.rename(tmp_path / "other")
    assert run.confscope_install().startswith("unknown")
