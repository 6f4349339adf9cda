"""ECB detection (analyzer/ecb.py) on really encrypted media and on real captures.

Media payloads are synthesized like codecs emit them (Opus-like talk spurts with runs of one
identical comfort-noise frame; video packets with a static 16-byte-aligned region that moves
with the amount of changing content before it), then really encrypted with the `cryptography`
package: AES-128-ECB (PKCS#7), AES-128-GCM (random 96-bit nonce prepended, tag appended) and
AES-128-CTR (per-packet IV). ECB must be found, with example frames that really share a
ciphertext block; GCM and CTR never. Then the repo's Citizen Lab style samples (extracted here
with dpkt, checked against the manifest's ground truth) and every capture of the shared corpus
(RTP payloads via tshark and dpkt) must give ECB only where ECB is.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt
import numpy as np
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.ecb import EcbDetector, EcbResult

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
BLOCK = 16
SILENCE_LENGTH = 40  # a comfort-noise frame: 48 bytes after PKCS#7, three blocks
MODES = ("ecb", "gcm", "ctr")

# Zoom SFU layout (protocols.md §1.3-1.6): 8-byte SFU header, media encapsulation at 8,
# RTP at the type's offset; the legacy (2019) layout has one 0x05 byte before the type.
SFU_HEADER = 8
LEGACY_PREFIX = 1
ZOOM_AUDIO, ZOOM_VIDEO = 15, 16
ZOOM_VIDEO_FRAME_FLAG_AT = 20
ZOOM_PORTS = range(8801, 8811)
RTCP_PT_RANGE = range(72, 80)  # RTCP 200-207 with the marker bit read as RTP


# ---------------------------------------------------------------------- encryption


def pkcs7(data: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    return padder.update(data) + padder.finalize()


def encrypt(mode: str, key: bytes, data: bytes, rng: random.Random) -> bytes:
    if mode == "ecb":
        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return enc.update(pkcs7(data)) + enc.finalize()
    if mode == "gcm":
        nonce = rng.randbytes(12)
        return nonce + AESGCM(key).encrypt(nonce, data, None)
    enc = Cipher(algorithms.AES(key), modes.CTR(rng.randbytes(16))).encryptor()
    return enc.update(data) + enc.finalize()


# ---------------------------------------------------------------------- synthetic media


Row = tuple[int, int, int, bytes]  # (frame number, stream id, header hash, payload)


@dataclass
class Stream:
    """Plaintext frames of one RTP stream, their ciphertexts, and where they sit in the
    capture; a packet's header hash stands for its seq + ts + SSRC."""

    ssrc: int
    frames: list[bytes]
    payloads: list[bytes] = field(default_factory=list)
    frame_numbers: list[int] = field(default_factory=list)

    def header_hash(self, seq: int) -> int:
        return (self.ssrc << 16) | seq


def audio_frames(rng: random.Random, count: int) -> list[bytes]:
    """Talk spurts of random 40-160 byte frames, and silences repeating one frame."""
    silence = rng.randbytes(SILENCE_LENGTH)
    frames: list[bytes] = []
    talking = False
    while len(frames) < count:
        run = rng.randint(6, 14) if talking else rng.randint(3, 8)
        for _ in range(run):
            frames.append(rng.randbytes(rng.randint(40, 160)) if talking else silence)
        talking = not talking
    return frames[:count]


def video_frames(rng: random.Random, count: int) -> list[bytes]:
    """A unique slice header, changing content (whole blocks), in every other packet a static
    four-block background region, then a changing tail of any length."""
    background = b"".join(rng.randbytes(BLOCK) for _ in range(4))
    frames = []
    for number in range(count):
        header = struct.pack("!IHH", number, 0, 0x5A5A) + rng.randbytes(8)
        moving = rng.randbytes(BLOCK * rng.randint(0, 6))
        static = background if number % 2 == 0 else b""
        frames.append(header + moving + static + rng.randbytes(rng.randint(0, 200)))
    return frames


def encrypt_streams(streams: list[Stream], mode: str, seed: int) -> None:
    rng = random.Random(f"keys-{mode}-{seed}")
    key = rng.randbytes(16)  # one key for the meeting, as in Zoom 2020
    for stream in streams:
        stream.payloads = [encrypt(mode, key, f, rng) for f in stream.frames]


def interleave(streams: list[Stream]) -> list[Row]:
    """The streams' packets in one capture, ordered by sequence number (so streams
    interleave), frames numbered from 1."""
    order = sorted((seq, i) for i, s in enumerate(streams) for seq in range(len(s.payloads)))
    rows = []
    for stream in streams:
        stream.frame_numbers = []
    for number, (seq, i) in enumerate(order, start=1):
        stream = streams[i]
        stream.frame_numbers.append(number)
        rows.append((number, stream.ssrc, stream.header_hash(seq), stream.payloads[seq]))
    return rows


def feed(rows: list[Row], detector: EcbDetector | None = None,
         with_headers: bool = True, batches: int = 3) -> EcbDetector:
    """Add the rows in a few batches, each with its own buffer, as the pipeline would."""
    detector = detector or EcbDetector()
    for part in np.array_split(np.arange(len(rows)), batches):
        chosen = [rows[i] for i in part]
        if not chosen:
            continue
        payloads = [r[3] for r in chosen]
        lengths = np.array([len(p) for p in payloads], dtype=np.int64)
        buffer = np.frombuffer(b"".join(payloads) + b"\0", dtype=np.uint8)
        hashes = np.array([r[2] for r in chosen], dtype=np.uint64) if with_headers else None
        detector.add(np.array([r[1] for r in chosen]), np.array([r[0] for r in chosen]),
                     buffer, np.cumsum(lengths) - lengths, lengths, hashes)
    return detector


def blocks_at(payload: bytes, alignment: int) -> list[bytes]:
    return [payload[i : i + BLOCK] for i in range(alignment, len(payload) - BLOCK + 1, BLOCK)]


def assert_examples_share_blocks(result: EcbResult, payload_of: dict[int, bytes]) -> None:
    """Every example pair really holds one ciphertext block twice, at the reported grid."""
    assert result.examples
    for a, b in result.examples:
        first, second = (blocks_at(payload_of[f], result.best_alignment) for f in (a, b))
        if a == b:
            assert len(set(first)) < len(first), (a, b)
        else:
            assert set(first) & set(second), (a, b)


def meeting(seed: int, mode: str) -> tuple[list[Stream], list[Row]]:
    rng = random.Random(seed)
    streams = [Stream(0x01000401, audio_frames(rng, 60)), Stream(0x01000402, video_frames(rng, 40))]
    encrypt_streams(streams, mode, seed)
    return streams, interleave(streams)


# ---------------------------------------------------------------------- synthetic: ECB found


def test_ecb_is_found_with_high_confidence_and_true_examples() -> None:
    streams, rows = meeting(7, "ecb")
    detector = feed(rows)
    payload_of = {r[0]: r[3] for r in rows}
    for stream in streams:
        result = detector.result(stream.ssrc)
        assert (result.verdict, result.confidence) == ("ecb", "high"), result
        assert result.best_alignment == 0
        assert result.length_multiple_of_16_share == 1.0
        assert result.expected_repeats_random < 1e-20
        assert set(f for pair in result.examples for f in pair) <= set(stream.frame_numbers)
        assert_examples_share_blocks(result, payload_of)
    both = detector.meeting_result([s.ssrc for s in streams])
    assert both.verdict == "ecb" and both.packets_examined == len(rows)


def test_video_static_region_gives_roaming_repeats() -> None:
    rng = random.Random(11)
    stream = Stream(5, video_frames(rng, 40))
    encrypt_streams([stream], "ecb", 11)
    result = feed(interleave([stream])).result(5)
    assert result.verdict == "ecb"
    # the four background blocks plus the full PKCS#7 padding block of 16-byte-multiple frames
    assert 4 <= result.repeated_blocks <= 5
    assert result.fixed_offset_blocks_discounted == 0


def test_ecb_behind_an_unknown_header_is_found_on_its_own_grid() -> None:
    streams, rows = meeting(3, "ecb")
    rng = random.Random(3)
    prefixed = [(f, s, h, rng.randbytes(5) + p) for f, s, h, p in rows]
    result = feed(prefixed).result(streams[1].ssrc)
    assert result.verdict == "ecb" and result.best_alignment == 5
    assert_examples_share_blocks(result, {r[0]: r[3] for r in prefixed})


def test_one_silence_frame_per_participant_shows_only_across_streams() -> None:
    """One key per meeting: the same comfort-noise frame from four participants repeats across
    streams only; no single stream has enough to tell."""
    rng = random.Random(5)
    silence = rng.randbytes(SILENCE_LENGTH)
    sizes = [n for n in range(40, 161) if n % BLOCK]  # no full PKCS#7 padding block to repeat
    streams = [Stream(0x100 + i, [rng.randbytes(rng.choice(sizes)) for _ in range(30)]
                      + [silence]) for i in range(4)]
    encrypt_streams(streams, "ecb", 5)
    detector = feed(interleave(streams))
    assert all(detector.result(s.ssrc).repeated_blocks == 0 for s in streams)
    together = detector.meeting_result(s.ssrc for s in streams)
    assert together.verdict == "ecb" and together.repeated_blocks == 3
    assert all(a != b for a, b in together.examples)


def test_identical_frames_count_only_under_different_headers() -> None:
    rng = random.Random(8)
    stream = Stream(9, audio_frames(rng, 80))
    encrypt_streams([stream], "ecb", 8)
    rows = interleave([stream])
    assert feed(rows).result(9).verdict == "ecb"
    same_header = [(f, s, 1, p) for f, s, _, p in rows]  # every identical frame a "copy"
    copies = feed(same_header).result(9)
    assert copies.duplicate_packets_discounted > 0 and copies.verdict != "ecb"
    assert feed(rows, with_headers=False).result(9).duplicate_packets_discounted > 0


# ---------------------------------------------------------------------- synthetic: never else


def test_gcm_and_ctr_never_repeat_over_many_seeds() -> None:
    """Margins: ECB repeats in every seed; GCM and CTR, same plaintext, never one."""
    ecb_min, other_max = 10**9, 0
    for seed in range(150):
        for mode in MODES:
            streams, rows = meeting(seed, mode)
            detector = feed(rows, batches=1)
            results = [detector.meeting_result(s.ssrc for s in streams)]
            if mode == "ecb":
                assert results[0].verdict == "ecb", (seed, results[0])
                ecb_min = min(ecb_min, results[0].repeated_blocks)
                continue
            results += [detector.result(s.ssrc) for s in streams]
            assert all(r.verdict != "ecb" for r in results), (seed, mode)
            other_max = max(other_max, *(r.repeated_blocks for r in results))
    assert other_max == 0 and ecb_min >= 3


def test_gcm_retransmissions_are_discounted() -> None:
    streams, rows = meeting(21, "gcm")
    twice = [(2 * f - k, s, h, p) for f, s, h, p in rows for k in (1, 0)]  # sent twice
    result = feed(twice).meeting_result(s.ssrc for s in streams)
    assert result.duplicate_packets_discounted == len(rows)
    assert result.repeated_blocks == 0 and result.verdict == "no-repeats"


@pytest.mark.parametrize("header", [
    bytes(range(0x41, 0x41 + 12)),  # constant 12-byte header: no whole block of its own
    random.Random(1).randbytes(12) + bytes.fromhex("bede0002" "10aabbcc" "2201ff00" "3344"),
    random.Random(2).randbytes(44),  # 2.75 constant high-entropy blocks at a fixed offset
])
def test_constant_unstripped_header_is_not_ecb(header: bytes) -> None:
    streams, rows = meeting(13, "gcm")
    result = feed([(f, s, h, header + p) for f, s, h, p in rows]).result(streams[0].ssrc)
    assert result.verdict != "ecb"
    if len(header) >= 2 * BLOCK:
        assert result.fixed_offset_blocks_discounted >= 1 and result.repeated_blocks == 0


def test_nested_fec_rtp_header_is_not_ecb() -> None:
    """protocols.md §1.8/§2.5: a 31-byte FEC packet whose payload runs into the second RTP
    header (V=2, X=1, same SSRC, varying seq/ts, 0xBEDE extension) when not cut there."""
    streams, rows = meeting(17, "gcm")
    rng = random.Random(17)
    extension = bytes.fromhex("bede0003" "10010203" "2204a1b2" "c3d4e5f6")
    nested = []
    for f, s, h, p in rows:
        second = struct.pack("!BBHII", 0x90, 98, h & 0xFFFF, 90 * f, 0x01000801) + extension
        nested.append((f, s, h, rng.randbytes(19) + second + p))
    result = feed(nested).meeting_result(s.ssrc for s in streams)
    assert result.verdict != "ecb" and result.repeated_blocks == 0


@pytest.mark.parametrize("filler", [b"\x01", b"\x00", b"INVITE sip:bob@example.com SIP/2.0\r\n"])
def test_filler_and_text_are_not_ecb(filler: bytes) -> None:
    rng = random.Random(4)
    rows = []
    for i in range(60):  # 2019 Zoom probes: 1029-byte packets of 0x01 after a header
        body = (filler * (1029 // len(filler) + 1))[: rng.randint(900, 1029)]
        rows.append((i + 1, 1, i, body))
    result = feed(rows).result(1)
    assert result.verdict != "ecb" and result.repeated_blocks == 0
    assert result.low_entropy_blocks_discounted >= 1


def test_repetitive_cleartext_is_off_grid() -> None:
    """A periodic tone in cleartext (period 88 bytes, as the corpus fax call): its repeats sit at
    any offset, not on a 16-byte grid."""
    rng = random.Random(6)
    period = rng.randbytes(88)
    tone = period * 200
    rows = [(i + 1, 1, i, tone[s : s + 160]) for i, s in enumerate(range(0, 160 * 100, 160))]
    result = feed(rows).result(1)
    assert result.verdict != "ecb" and result.off_grid_repeat_share > 0.5


def test_budgets_are_kept_and_counted() -> None:
    streams, rows = meeting(2, "ecb")
    detector = feed(rows, EcbDetector(max_packets_per_stream=25, max_bytes_per_packet=64))
    result = detector.result(streams[0].ssrc)
    assert result.packets_examined + result.duplicate_packets_discounted <= 25
    assert result.packets_over_budget == len(streams[0].payloads) - 25
    assert result.blocks_examined <= 25 * (64 // BLOCK)
    assert detector.result(12345).verdict == "insufficient-data"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-20, 700), st.integers(-20, 700),
                          st.integers(0, 2**64 - 1)), max_size=40),
       st.binary(max_size=640), st.integers(0, 30), st.integers(0, 80), st.booleans())
def test_random_inputs_never_raise(packets: list[tuple[int, int, int, int]], data: bytes,
                                   max_packets: int, max_bytes: int, hashes: bool) -> None:
    detector = EcbDetector(max_packets, max_bytes)
    arrays = [np.array([p[i] for p in packets], dtype=np.int64 if i < 3 else np.uint64)
              for i in range(4)]
    buffer = np.frombuffer(data, dtype=np.uint8)
    frames = np.arange(len(packets)) + 1
    for _ in range(2):
        detector.add(arrays[0], frames, buffer, arrays[1], arrays[2],
                     arrays[3] if hashes else None)
    for result in [detector.result(0), detector.result(1), detector.meeting_result(range(4))]:
        assert result.verdict in ("ecb", "no-repeats", "insufficient-data")
        assert 0 <= result.best_alignment < BLOCK and len(result.examples) <= 5
        assert all(1 <= f <= len(packets) for pair in result.examples for f in pair)


# ---------------------------------------------------------------------- the repo's samples


def pcap_udp(path: Path) -> Iterator[tuple[int, int, int, bytes]]:
    """(frame, source port, destination port, UDP payload) of every UDP packet."""
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = (dpkt.pcapng.Reader(handle) if magic == b"\n\r\r\n"
                  else dpkt.pcap.Reader(handle))
        link = reader.datalink()
        for number, (_, frame) in enumerate(reader, start=1):
            try:
                ip = (dpkt.sll.SLL(frame) if link == dpkt.pcap.DLT_LINUX_SLL
                      else dpkt.ethernet.Ethernet(frame)).data
            except dpkt.dpkt.UnpackError:
                continue
            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
                yield number, ip.data.sport, ip.data.dport, bytes(ip.data.data)


def zoom_rtp_offset(payload: bytes, prefix: int) -> int | None:
    """Where RTP starts behind a Zoom media encapsulation that begins at `prefix`."""
    if len(payload) < prefix + 32 or payload[0] != 0x05:
        return None
    kind = payload[prefix]
    if kind == ZOOM_AUDIO:
        return prefix + 19
    if kind == ZOOM_VIDEO:
        return prefix + (24 if payload[prefix + ZOOM_VIDEO_FRAME_FLAG_AT] == 2 else 20)
    return None


def rtp_payload(packet: bytes, at: int) -> tuple[bytes, bytes] | None:
    """(header, payload) of the RTP packet at `at`: 12 bytes, CSRCs, extension stripped."""
    if len(packet) < at + 12 or packet[at] >> 6 != 2 or packet[at + 1] & 0x7F in RTCP_PT_RANGE:
        return None
    end = at + 12 + 4 * (packet[at] & 0x0F)
    if packet[at] & 0x10:
        if len(packet) < end + 4:
            return None
        end += 4 + 4 * struct.unpack_from("!H", packet, end + 2)[0]
    return (packet[at:end], packet[end:]) if len(packet) >= end else None


def stream_key(sport: int, dport: int, ssrc: int) -> int:
    """A stream id that fits the detector's int64 ids: ports and SSRC in 63 bits."""
    return ((sport << 47) ^ (dport << 31) ^ ssrc) & (2**63 - 1)


def header_hash(header: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(header, digest_size=8).digest(), "big")


def zoom_rows(path: Path, layouts: tuple[int, ...] = (SFU_HEADER,)
              ) -> list[Row]:
    rows = []
    for number, sport, dport, payload in pcap_udp(path):
        if sport not in ZOOM_PORTS and dport not in ZOOM_PORTS:
            continue
        for prefix in layouts:
            at = zoom_rtp_offset(payload, prefix)
            rtp = rtp_payload(payload, at) if at is not None else None
            if rtp is not None:
                ssrc = struct.unpack_from("!I", rtp[0], 8)[0]
                rows.append((number, stream_key(sport, dport, ssrc), header_hash(rtp[0]),
                             rtp[1]))
                break
    return rows


def manifest_fact(name: str, fact_id: str) -> dict[str, Any]:
    facts = json.loads((CAPTURES / "manifest.json").read_text())["files"][name]["key_facts"]
    fact: dict[str, Any] = next(f for f in facts if f["id"] == fact_id)
    return fact


def test_citizenlab_ecb_sample() -> None:
    rows = zoom_rows(CAPTURES / "citizenlab_ecb.pcap")
    fact = manifest_fact("citizenlab_ecb.pcap", "ecb_repeated_blocks")
    truth = set(fact["frames"])
    detector = feed(rows)
    streams = sorted({r[1] for r in rows})
    assert len(streams) == 4
    payload_of = {r[0]: r[3] for r in rows}
    for result in [detector.result(s) for s in streams] + [detector.meeting_result(streams)]:
        assert (result.verdict, result.confidence) == ("ecb", "high"), result
        assert result.best_alignment == 0  # the manifest: "alignment": "payload start"
        assert {f for pair in result.examples for f in pair} <= truth
        assert_examples_share_blocks(result, payload_of)
    together = detector.meeting_result(streams)
    distinct = fact["data"]["distinct_repeated_blocks"]
    assert 0.75 * distinct <= together.repeated_blocks <= distinct


@pytest.mark.parametrize("name", ["citizenlab_gcm.pcap", "citizenlab_ctr.pcap"])
def test_citizenlab_gcm_and_ctr_samples(name: str) -> None:
    rows = zoom_rows(CAPTURES / name)
    assert len(rows) == len(zoom_rows(CAPTURES / "citizenlab_ecb.pcap"))
    detector = feed(rows)
    streams = sorted({r[1] for r in rows})
    for result in [detector.result(s) for s in streams] + [detector.meeting_result(streams)]:
        assert result.verdict == "no-repeats" and result.repeated_blocks == 0, result
    assert manifest_fact(name, "no_repeated_ciphertext")["frames"] == []


# ---------------------------------------------------------------------- the shared corpus


def corpus_captures() -> list[Path]:
    if not CORPUS.is_dir():
        pytest.skip("shared corpus absent")
    return sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def tshark_rtp_rows(path: Path) -> list[Row]:
    fields = ["frame.number", "udp.srcport", "udp.dstport", "rtp.ssrc", "rtp.seq",
              "rtp.timestamp", "rtp.payload"]
    command = ["tshark", "-r", str(path), "--enable-heuristic", "rtp_udp", "-Y", "rtp",
               "-T", "fields", "-E", "occurrence=f"]
    for name in fields:
        command += ["-e", name]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    rows = []
    for line in run.stdout.splitlines():
        number, sport, dport, ssrc, seq, ts, data = (line.split("\t") + [""] * 7)[:7]
        if not ssrc:
            continue
        stream = stream_key(int(sport), int(dport), int(ssrc, 16))
        rows.append((int(number), stream, header_hash(f"{seq}/{ts}".encode()),
                     bytes.fromhex(data.replace(":", ""))))
    return rows


def dpkt_rtp_rows(path: Path) -> list[Row]:
    """Plain RTP and RTP in TURN ChannelData (RFC 8656 §12), by header checks only."""
    rows = []
    for number, sport, dport, payload in pcap_udp(path):
        starts = [0] + ([4] if payload and 0x40 <= payload[0] <= 0x7F else [])
        for at in starts:
            rtp = rtp_payload(payload, at)
            if rtp is not None:
                ssrc = struct.unpack_from("!I", rtp[0], 8)[0]
                rows.append((number, stream_key(sport, dport, ssrc), header_hash(rtp[0]),
                             rtp[1]))
                break
    return rows


def corpus_results(rows: list[Row]) -> list[EcbResult]:
    if not rows:
        return []
    detector = feed(rows)
    streams = sorted({r[1] for r in rows})
    return [detector.result(s) for s in streams] + [detector.meeting_result(streams)]


def corpus_rows() -> dict[str, list[Row]]:
    return {c.name: dpkt_rtp_rows(c) + zoom_rows(c, (SFU_HEADER, LEGACY_PREFIX))
            for c in corpus_captures()}


def test_no_ecb_anywhere_in_the_corpus() -> None:
    results = {name: corpus_results(rows) for name, rows in corpus_rows().items()}
    flagged = {n: r for n, rs in results.items() for r in rs if r.verdict == "ecb"}
    assert not flagged
    examined = sum(r.blocks_examined for rs in results.values() for r in rs)
    assert examined > 20_000  # the corpus really fed media through the detector
    # The fax call's G.711 tones repeat in cleartext; rule 5 (off-grid repeats) is what keeps
    # them from reading as ECB.
    fax = [r for r in results["FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"] if r.repeated_blocks]
    assert fax and all(r.off_grid_repeat_share > 0.5 for r in fax)
    assert any(r.verdict == "no-repeats" for r in results["zoom2.pcap"])  # GCM era, §2.5


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_corpus_rtp_payloads_agree_with_tshark() -> None:
    """Every frame tshark's RTP heuristic decodes, the extractor above found with the same
    payload (tshark leaves RTP padding out of rtp.payload)."""
    rows = corpus_rows()
    with_rtp = [c for c in corpus_captures() if any(r[3] for r in rows[c.name])]
    with ThreadPoolExecutor(2) as pool:
        decoded = dict(zip(with_rtp, pool.map(tshark_rtp_rows, with_rtp), strict=True))
    checked = 0
    for capture, tshark_rows in decoded.items():
        ours = {r[0]: r[3] for r in rows[capture.name]}
        for number, _, _, payload in tshark_rows:
            assert number in ours and ours[number].startswith(payload), (capture.name, number)
            checked += 1
    assert checked > 1000


# ---------------------------------------------------------------------- repeat grouping


def _groups_by_value(ids: np.ndarray, words: np.ndarray) -> list[list[int]]:
    """Ids of the blocks whose 16-byte value occurs twice or more, grouped by value (ordered by
    value, ascending ids within a group): the slow, obvious form."""
    by_value: dict[tuple[int, int], list[int]] = {}
    for i in ids.tolist():
        by_value.setdefault((int(words[i, 0]), int(words[i, 1])), []).append(i)
    return [sorted(found) for _, found in sorted(by_value.items()) if len(found) >= 2]


@pytest.mark.parametrize("fingerprint", ["mixed", "constant", "low-bits-only", "high-bits-only"])
def test_repeat_groups_are_exact_whatever_the_fingerprints(fingerprint: str) -> None:
    from analyzer.ecb import _group_starts, _mix, _repeat_groups

    rng = np.random.default_rng(5)
    for size in (0, 1, 2, 50, 3000):
        words = rng.integers(0, 4, (size, 2)).astype(np.uint64)  # many repeats
        words[::3] = rng.integers(0, 2**63, (len(words[::3]), 2)).astype(np.uint64)
        ids = np.flatnonzero(rng.random(size) < 0.8)
        prints = {"mixed": _mix(words[ids]), "constant": np.zeros(ids.size, np.uint64),
                  "low-bits-only": _mix(words[ids]) & np.uint64(0xFF),
                "high-bits-only": _mix(words[ids]) & ~np.uint64(2**60 - 1)}[fingerprint]
        member, label = _repeat_groups(prints, ids, words)
        starts = _group_starts(label)
        found = [group.tolist() for group in np.split(member, starts[1:])] if member.size else []
        assert found == _groups_by_value(ids, words)
        assert label.tolist() == sorted(label.tolist())
