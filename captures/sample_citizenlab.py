"""Citizen Lab (April 2020) style Zoom meeting, three ways: AES-128-ECB, AES-256-GCM, AES-128-CTR.

The meeting, the timing and the media plaintext are identical in the three files; only the
payload encryption differs. Plaintext looks like what codecs emit: identical silence frames in
audio and static, repeated 16-byte-aligned regions in video. Under ECB those repeats survive as
repeated ciphertext blocks; under GCM and CTR they do not.
"""

from __future__ import annotations

import datetime as dt
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import iptocc
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from captures import common, tlswire
from captures.facts import KeyFact, first_frame_of, frame_list, frames_with_tag, manifest_entry
from captures.media import (
    MediaPacket,
    PathModel,
    RtpStream,
    VideoShape,
    audio_packets,
    video_packets,
)
from captures.netsim import Capture, Endpoint, FlowSpec, TcpConn, UdpFlow
from captures.sample_zoom import (
    ZoomPath,
    ZoomStreams,
    epoch_us,
    send_sender_reports,
    send_stream,
    sfu_handshake,
)

CLIENT_IP = "192.168.0.50"  # the participant in Canada (Toronto), behind a home NAT
CLIENT_MAC = "f0:18:98:4c:2a:11"
GATEWAY_MAC = "cc:40:d0:91:3e:5b"
KEY_SERVER_IP = "52.81.151.250"  # Citizen Lab: "a Zoom server apparently located in Beijing"
KEY_SERVER_RTT_US = 221_000
MMR_IP = "162.255.37.11"  # Zoom 162.255.36.0/22, US
MMR_RTT_US = 38_500
MEETING_START = dt.datetime(2020, 4, 2, 16, 5, 12)
BLOCK = 16
MODES = ("ecb", "gcm", "ctr")
SILENCE_FRAME_LEN = 32
BACKGROUND_BLOCKS = 6
STATIC_SHARE = 0.3
VIDEO_SHAPE = VideoShape(fps=25, keyframe_every=50, key_packets=4, delta_packets=(1, 2),
                         packet_size=(160, 720))


def blocks(data: bytes) -> list[bytes]:
    """Whole 16-byte blocks at alignment 0."""
    return [data[i : i + BLOCK] for i in range(0, len(data) - BLOCK + 1, BLOCK)]


def pkcs7(data: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    return padder.update(data) + padder.finalize()


def ecb_input_blocks(data: bytes) -> list[bytes]:
    """The blocks ECB encrypts: the PKCS#7-padded plaintext (a full padding block when the
    frame is a multiple of 16 bytes, itself a repeat)."""
    return blocks(pkcs7(data))


@dataclass
class Plaintexts:
    """Codec-like plaintext for every planned packet, keyed by (ssrc, seq)."""

    rng: random.Random
    silence: bytes
    frames: dict[tuple[int, int], bytes]
    backgrounds: dict[int, list[bytes]]

    @staticmethod
    def new(seed: str) -> Plaintexts:
        rng = common.seeded_rng(seed)
        return Plaintexts(rng, rng.randbytes(SILENCE_FRAME_LEN), {}, {})

    def background(self, ssrc: int) -> list[bytes]:
        """Each camera has its own static scene (a few distinct 16-byte blocks)."""
        if ssrc not in self.backgrounds:
            self.backgrounds[ssrc] = [self.rng.randbytes(BLOCK) for _ in range(BACKGROUND_BLOCKS)]
        return self.backgrounds[ssrc]

    def audio(self, stream: RtpStream, pkt: MediaPacket, talking: bool) -> bytes:
        """Talk spurts are random; silence is one identical comfort-noise frame for everyone."""
        data = self.rng.randbytes(pkt.size) if talking else self.silence
        self.frames[(stream.ssrc, pkt.seq)] = data
        return data

    def video(self, stream: RtpStream, pkt: MediaPacket) -> bytes:
        """A unique 16-byte slice header, then blocks: in two frames out of five some regions are
        the static background, otherwise all content changes."""
        header = struct.pack("!IHH", pkt.frame_no, pkt.index_in_frame, stream.ssrc & 0xFFFF)
        body = [header + self.rng.randbytes(8)]
        static_share = STATIC_SHARE if pkt.frame_no % 5 in (1, 3) else 0.0
        scene = self.background(stream.ssrc)
        for _ in range(pkt.size // BLOCK - 1):
            static = self.rng.random() < static_share
            body.append(self.rng.choice(scene) if static else self.rng.randbytes(BLOCK))
        data = b"".join(body) + self.rng.randbytes(pkt.size % BLOCK)
        self.frames[(stream.ssrc, pkt.seq)] = data
        return data


def encryptor(mode: str, key: bytes, rng: random.Random) -> Callable[[RtpStream, MediaPacket,
                                                                      bytes], bytes]:
    """ECB (PKCS#7 padded), GCM (12-byte random nonce prepended, 16-byte tag) or CTR (IV from
    SSRC and sequence, no expansion)."""
    def ecb(stream: RtpStream, pkt: MediaPacket, data: bytes) -> bytes:
        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return enc.update(pkcs7(data)) + enc.finalize()

    def gcm(stream: RtpStream, pkt: MediaPacket, data: bytes) -> bytes:
        nonce = rng.randbytes(12)
        return nonce + AESGCM(key).encrypt(nonce, data, None)

    def ctr(stream: RtpStream, pkt: MediaPacket, data: bytes) -> bytes:
        iv = struct.pack("!IIQ", stream.ssrc, pkt.seq, 0)
        enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        return enc.update(data) + enc.finalize()
    return {"ecb": ecb, "gcm": gcm, "ctr": ctr}[mode]


def key_server_tls(cap: Capture, link: Any, t: int) -> tuple[FlowSpec, int]:
    """Meeting control over TLS 1.2 to 52.81.151.250:443, no SNI (the client dials an address)."""
    spec = FlowSpec("tcp", Endpoint(CLIENT_IP, 54873), Endpoint(KEY_SERVER_IP, 443), "zoom")
    key = common.ec_key("zoom-2020-zc")
    chain = common.web_chain("*.zoom.us", "Zoom Video Communications, Inc.", key, 0x2020)
    plan = common.TlsPlan(None, [], common.TlsServer(chain, key,
                                                     tlswire.ECDHE_ECDSA_AES_128_GCM_SHA256),
                          ((380, 1240), (210, 96), (640, 330)))
    return spec, common.tls12_session(TcpConn(cap, link, spec, KEY_SERVER_RTT_US), t, plan)


@dataclass(frozen=True, slots=True)
class StreamPlan:
    media: str
    c2s: bool
    stream: RtpStream
    packets: list[MediaPacket]
    net: PathModel

    def captured(self) -> list[MediaPacket]:
        return [p for i, p in enumerate(self.packets) if i not in self.net.lose]


def plan_streams(rng: random.Random, start: int, end: int) -> list[StreamPlan]:
    me, them = ZoomStreams(0x08), ZoomStreams(0x04)
    one_way = MMR_RTT_US // 2
    plans = []
    for media, c2s, who in (("audio", True, me), ("audio", False, them), ("video", True, me),
                            ("video", False, them)):
        stream = who.stream(media, rng)
        packets = (audio_packets(rng, stream, start, end, (60, 150)) if media == "audio"
                   else video_packets(rng, stream, start, end, VIDEO_SHAPE))
        net = PathModel(0, 300) if c2s else PathModel(one_way, 3500, frozenset({17}),
                                                      frozenset({29}))
        plans.append(StreamPlan(media, c2s, stream, packets, net))
    return plans


def make_plaintexts(plans: list[StreamPlan], text: Plaintexts, end: int) -> None:
    half = (end + min(p.packets[0].send_us for p in plans)) // 2
    for plan in plans:
        for pkt in plan.packets:
            if plan.media == "audio":
                talking = (pkt.send_us < half) == plan.c2s  # Canada talks first, then the US
                text.audio(plan.stream, pkt, talking)
            else:
                text.video(plan.stream, pkt)


def repeated_blocks(plans: list[StreamPlan], text: Plaintexts) -> tuple[set[bytes], set[bytes]]:
    """Padded-plaintext blocks seen twice or more in the captured packets, and those seen in two
    or more streams."""
    counts: Counter[bytes] = Counter()
    streams_of: dict[bytes, set[int]] = {}
    for plan in plans:
        for pkt in plan.captured():
            for block in ecb_input_blocks(text.frames[(plan.stream.ssrc, pkt.seq)]):
                counts[block] += 1
                streams_of.setdefault(block, set()).add(plan.stream.ssrc)
    repeated = {b for b, n in counts.items() if n > 1}
    return repeated, {b for b in repeated if len(streams_of[b]) > 1}


def citizenlab(mode: str) -> tuple[Capture, dict[str, Any]]:
    cap = common.new_capture("citizenlab")  # same seed for all modes: same packets and timing
    rng = cap.rng
    link = common.lan_link({CLIENT_IP: CLIENT_MAC}, GATEWAY_MAC)
    tls_spec, t = key_server_tls(cap, link, epoch_us(MEETING_START))
    paths = {}
    for media, port in (("audio", 61204), ("video", 61205)):
        spec = FlowSpec("udp", Endpoint(CLIENT_IP, port), Endpoint(MMR_IP, 8801), "zoom")
        paths[media] = ZoomPath(UdpFlow(cap, link, spec), sfu=True)
        t = sfu_handshake(paths[media], t + 12_000, MMR_RTT_US)
    start, end = t + 30_000, t + 30_000 + 2_000_000
    plans = plan_streams(rng, start, end)
    text = Plaintexts.new("citizenlab-plaintext")
    make_plaintexts(plans, text, end)
    repeated, cross = repeated_blocks(plans, text)
    meeting_key = common.seeded_rng("citizenlab-key").randbytes(32 if mode == "gcm" else 16)
    encrypt = encryptor(mode, meeting_key, common.seeded_rng(f"citizenlab-nonce-{mode}"))
    ciphertexts: list[bytes] = []
    for plan in plans:
        send_plan(paths[plan.media], plan, text, encrypt, repeated, cross, ciphertexts)
    check_ciphertext_repeats(mode, ciphertexts, repeated)
    facts = citizenlab_facts(cap, mode, tls_spec, meeting_key, len(repeated))
    return cap, manifest_entry(cap, describe(mode), {}, facts)


def send_plan(path: ZoomPath, plan: StreamPlan, text: Plaintexts,
              encrypt: Callable[[RtpStream, MediaPacket, bytes], bytes], repeated: set[bytes],
              cross: set[bytes], ciphertexts: list[bytes]) -> None:
    def payload(pkt: MediaPacket, stream: RtpStream, header: bytes) -> bytes:
        out = encrypt(stream, pkt, text.frames[(stream.ssrc, pkt.seq)])
        ciphertexts.append(out)
        return out

    def tags(pkt: MediaPacket) -> frozenset[str]:
        own = set(ecb_input_blocks(text.frames[(plan.stream.ssrc, pkt.seq)]))
        return frozenset({name for name, hit in (("plaintext-repeat", own & repeated),
                                                 ("cross-stream-repeat", own & cross)) if hit})
    send_stream(path, plan.c2s, plan.stream, plan.packets, plan.net, payload, tags)
    delay = 0 if plan.c2s else MMR_RTT_US // 2
    send_sender_reports(path, plan.c2s, plan.stream, plan.packets,
                        range(plan.packets[0].send_us + 600_000, plan.packets[-1].send_us,
                              1_000_000), delay)


def check_ciphertext_repeats(mode: str, ciphertexts: list[bytes], repeated: set[bytes]) -> None:
    """The ground truth comes from the plaintext; make sure the ciphertext agrees with it."""
    counts = Counter(b for c in ciphertexts for b in blocks(c[12:] if mode == "gcm" else c))
    repeats = sum(1 for n in counts.values() if n > 1)
    if mode == "ecb" and repeats != len(repeated):
        raise AssertionError("ECB ciphertext repeats differ from the padded plaintext repeats")
    if mode != "ecb" and repeats:
        raise AssertionError(f"{mode} ciphertext has repeated blocks")


def describe(mode: str) -> str:
    how = {"ecb": "AES-128 in ECB mode (PKCS#7 padded): repeated plaintext blocks give repeated "
                  "ciphertext blocks",
           "gcm": "AES-256-GCM with a random 12-byte nonce prepended and a 16-byte tag: no "
                  "ciphertext repeats",
           "ctr": "AES-128-CTR with the IV taken from SSRC and sequence number (nothing added): "
                  "no ciphertext repeats"}[mode]
    return ("Citizen Lab 2020 style Zoom meeting seen from the participant in Canada (the other "
            "is in the US): TLS 1.2 meeting control to 52.81.151.250:443 (no SNI), Zoom SFU "
            f"media via a US MMR on UDP 8801. Payloads after all headers are encrypted with {how}. "
            "Same plaintext and timing in citizenlab_ecb/gcm/ctr.pcap.")


def citizenlab_facts(cap: Capture, mode: str, tls_spec: FlowSpec, key: bytes,
                     repeated_count: int) -> list[KeyFact]:
    country = iptocc.country_code(KEY_SERVER_IP)
    pt_frames = frames_with_tag(cap, "plaintext-repeat")
    cross = frames_with_tag(cap, "cross-stream-repeat")
    facts = [KeyFact("control_server_registry", f"control server {KEY_SERVER_IP} registry "
                     f"{country}; TLS handshake RTT {KEY_SERVER_RTT_US / 1000:g} ms",
                     [first_frame_of(cap, tls_spec)],
                     {"ip": KEY_SERVER_IP, "registry_country": country,
                      "syn_rtt_ms": KEY_SERVER_RTT_US / 1000})]
    if mode == "ecb":
        facts.append(KeyFact("ecb_repeated_blocks", "ECB: repeated ciphertext blocks in frames "
                             + frame_list(pt_frames), pt_frames,
                             {"distinct_repeated_blocks": repeated_count,
                              "cross_stream_frames": cross, "alignment": "payload start",
                              "key": key.hex(), "mode": "AES-128-ECB"}))
    else:
        facts.append(KeyFact("no_repeated_ciphertext", f"{mode.upper()}: no repeated ciphertext "
                             "blocks, although the plaintext repeats in frames "
                             + frame_list(pt_frames), [],
                             {"plaintext_repeat_frames": pt_frames, "key": key.hex(),
                              "mode": "AES-256-GCM" if mode == "gcm" else "AES-128-CTR"}))
    return facts


def citizenlab_ecb() -> tuple[Capture, dict[str, Any]]:
    return citizenlab("ecb")


def citizenlab_gcm() -> tuple[Capture, dict[str, Any]]:
    return citizenlab("gcm")


def citizenlab_ctr() -> tuple[Capture, dict[str, Any]]:
    return citizenlab("ctr")
