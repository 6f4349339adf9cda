"""SIP samples: a plain G.711 call over UDP, and an SDES-SRTP call with SIP over TCP."""

from __future__ import annotations

import base64
import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from captures import common, wire
from captures.facts import KeyFact, frame_list, frames_with_tag, manifest_entry
from captures.media import MediaPacket, PathModel, RtpStream, audio_packets, pcmu_payload
from captures.netsim import Capture, Endpoint, FlowSpec, Link, TcpConn, UdpFlow
from captures.rtpflow import (
    MediaChannel,
    PayloadFn,
    Received,
    RtcpPlan,
    report_times,
    send_rtcp,
    send_rtp,
)
from captures.sample_zoom import epoch_us
from captures.srtp import Profile, SrtpSession

PHONE_IP = "192.168.10.20"
PHONE_MAC = "00:0b:82:9c:44:71"
GATEWAY_MAC = "00:1b:21:3a:7f:02"
PROXY_IP = "198.51.100.10"
MEDIA_GW_IP = "198.51.100.11"
SIP_RTT_US = 27_400
DOMAIN = "voip.example.net"
CALLER, CALLEE = "alice", "+15145550123"
PCMU, TELEPHONE_EVENT = 0, 101
SIP = frozenset({"sip"})
CALL_SECONDS = 3


@dataclass(frozen=True, slots=True)
class Party:
    user: str
    host: str
    tag: str
    user_agent: str
    display: str


@dataclass(frozen=True, slots=True)
class Dialog:
    call_id: str
    caller: Party
    callee: Party
    transport: str  # "UDP" or "TCP"
    local: Endpoint

    def via(self, branch: str) -> tuple[str, str]:
        return "Via", (f"SIP/2.0/{self.transport} {self.local.ip}:{self.local.port};rport;"
                       f"branch={branch}")

    def from_to(self, callee_tag: bool) -> list[tuple[str, str]]:
        to = f"<sip:{self.callee.user}@{DOMAIN}>"
        return [("From", f'"{self.caller.display}" <sip:{self.caller.user}@{DOMAIN}>;'
                         f"tag={self.caller.tag}"),
                ("To", to + (f";tag={self.callee.tag}" if callee_tag else ""))]


def sdp(owner_ip: str, session_id: int, media_ip: str, media_port: int, secure_key: str | None
        ) -> str:
    """Offer/answer body: PCMU and telephone-event by a=rtpmap; RTP/SAVP with a=crypto if keyed."""
    profile = "RTP/SAVP" if secure_key else "RTP/AVP"
    lines = ["v=0", f"o=- {session_id} {session_id} IN IP4 {owner_ip}", "s=Talk",
             f"c=IN IP4 {media_ip}", "t=0 0",
             f"m=audio {media_port} {profile} {PCMU} {TELEPHONE_EVENT}",
             f"a=rtpmap:{PCMU} PCMU/8000", f"a=rtpmap:{TELEPHONE_EVENT} telephone-event/8000",
             f"a=fmtp:{TELEPHONE_EVENT} 0-16", "a=ptime:20", f"a=rtcp:{media_port + 1}"]
    if secure_key:
        lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{secure_key}")
    return wire.sdp_body([*lines, "a=sendrecv"])


def request(dialog: Dialog, method: str, cseq: int, branch: str, body: str = "",
            callee_tag: bool = False) -> bytes:
    uri = f"sip:{dialog.callee.user}@{DOMAIN}"
    headers = [dialog.via(branch), ("Max-Forwards", "70"), *dialog.from_to(callee_tag),
               ("Call-ID", dialog.call_id), ("CSeq", f"{cseq} {method}"),
               ("Contact", f"<sip:{dialog.caller.user}@{dialog.local.ip}:{dialog.local.port};"
                           f"transport={dialog.transport.lower()}>"),
               ("User-Agent", dialog.caller.user_agent)]
    if body:
        headers += [("Allow", "INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, UPDATE"),
                    ("Content-Type", "application/sdp")]
    return wire.sip_message(f"{method} {uri} SIP/2.0", headers, body)


def response(dialog: Dialog, code: int, reason: str, method: str, cseq: int, branch: str,
             body: str = "") -> bytes:
    headers = [dialog.via(branch), *dialog.from_to(callee_tag=code > 100),
               ("Call-ID", dialog.call_id), ("CSeq", f"{cseq} {method}"),
               ("Server", dialog.callee.user_agent)]
    if code >= 180:
        headers.append(("Contact", f"<sip:{dialog.callee.user}@{PROXY_IP}:5060>"))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return wire.sip_message(f"SIP/2.0 {code} {reason}", headers, body)


@dataclass(frozen=True, slots=True)
class CallPlan:
    name: str
    transport: str
    srtp: bool
    start: dt.datetime
    phone: Party
    pbx: Party


def sdes_key(rng: random.Random) -> tuple[bytes, bytes, str]:
    """Master key (16) and salt (14) and their base64 inline form (40 characters)."""
    key, salt = rng.randbytes(16), rng.randbytes(14)
    return key, salt, base64.b64encode(key + salt).decode()


@dataclass
class Signalling:
    """Sends SIP messages over UDP or TCP with the right framing and tags."""

    udp: UdpFlow | None
    tcp: TcpConn | None

    def send(self, t: int, c2s: bool, messages: Sequence[bytes], tag: str,
             cuts: tuple[int, ...] = ()) -> int:
        tags = frozenset({tag})
        if self.tcp:
            return self.tcp.send(t, c2s, b"".join(messages), SIP, cuts, tags)
        assert self.udp is not None
        for i, msg in enumerate(messages):
            self.udp.send(t + i * 30, c2s, msg, SIP, tags=tags)
        return t


def sip_call(plan: CallPlan) -> tuple[Capture, dict[str, Any]]:
    cap = common.new_capture(plan.name)
    rng = cap.rng
    link = common.lan_link({PHONE_IP: PHONE_MAC}, GATEWAY_MAC)
    local = Endpoint(PHONE_IP, 5060 if plan.transport == "UDP" else 53422)
    spec = FlowSpec(plan.transport.lower(), local, Endpoint(PROXY_IP, 5060), "sip", DOMAIN)
    if plan.transport == "TCP":
        conn = TcpConn(cap, link, spec, SIP_RTT_US)
        signalling = Signalling(None, conn)
        t = conn.handshake(epoch_us(plan.start))
    else:
        signalling = Signalling(UdpFlow(cap, link, spec), None)
        t = epoch_us(plan.start)
    dialog = Dialog(f"{rng.randbytes(8).hex()}@{PHONE_IP}", plan.phone, plan.pbx, plan.transport,
                    local)
    keys = (sdes_key(rng), sdes_key(rng)) if plan.srtp else None
    media_start, t_bye = call_flow(signalling, dialog, t, keys, rng)
    received = media(cap, link, rng, media_start, t_bye, keys)
    t_end = finish(signalling, dialog, t_bye, rng)
    if signalling.tcp:
        signalling.tcp.close(t_end + 200_000)
    return cap, manifest_entry(cap, describe(plan), {}, sip_facts(cap, plan, keys, received))


def call_flow(sig: Signalling, dialog: Dialog, t: int, keys: Any, rng: random.Random
              ) -> tuple[int, int]:
    """INVITE, 100, 180, 200 (with answer), ACK; returns (media start, BYE time)."""
    offer = sdp(PHONE_IP, rng.randrange(10**9), PHONE_IP, 40000, keys[0][2] if keys else None)
    answer = sdp(PROXY_IP, rng.randrange(10**9), MEDIA_GW_IP, 31000, keys[1][2] if keys else None)
    branch = "z9hG4bK" + rng.randbytes(6).hex()
    invite = request(dialog, "INVITE", 1, branch, offer)
    split = (invite.index(b"m=audio"),) if sig.tcp else ()
    t = sig.send(t + 200, True, [invite], "sip-invite", split)
    trying = response(dialog, 100, "Trying", "INVITE", 1, branch)
    ringing = response(dialog, 180, "Ringing", "INVITE", 1, branch)
    sig.send(t + SIP_RTT_US, False, [trying, ringing], "sip-provisional")
    t_ok = t + SIP_RTT_US + 1_450_000
    sig.send(t_ok, False, [response(dialog, 200, "OK", "INVITE", 1, branch, answer)], "sip-200-sdp")
    ack = request(dialog, "ACK", 1, "z9hG4bK" + rng.randbytes(6).hex(), callee_tag=True)
    sig.send(t_ok + 1_100, True, [ack], "sip-ack")
    return t_ok + 2_000, t_ok + 2_000 + CALL_SECONDS * 1_000_000


def finish(sig: Signalling, dialog: Dialog, t: int, rng: random.Random) -> int:
    branch = "z9hG4bK" + rng.randbytes(6).hex()
    sig.send(t + 30_000, True, [request(dialog, "BYE", 2, branch, callee_tag=True)], "sip-bye")
    t_ok = t + 30_000 + SIP_RTT_US
    sig.send(t_ok, False, [response(dialog, 200, "OK", "BYE", 2, branch)], "sip-bye-ok")
    return t_ok


def voice(rng: random.Random, speaker: int) -> PayloadFn:
    """PCMU where the two sides take turns talking, 1.2 s each."""
    def payload(pkt: MediaPacket) -> bytes:
        return pcmu_payload(rng, pkt, (pkt.seq // 60) % 2 == speaker)
    return payload


def media(cap: Capture, link: Link, rng: random.Random, start: int, end: int, keys: Any
          ) -> dict[bool, Received]:
    """PCMU both ways (loss and reordering towards the phone) and RTCP on port + 1."""
    rtp_spec = FlowSpec("udp", Endpoint(PHONE_IP, 40000), Endpoint(MEDIA_GW_IP, 31000), "sip")
    rtcp_spec = FlowSpec("udp", Endpoint(PHONE_IP, 40001), Endpoint(MEDIA_GW_IP, 31001), "sip")
    one_way = SIP_RTT_US // 2
    sessions: dict[bool, SrtpSession | None] = {True: None, False: None}
    if keys:
        sessions = {c2s: SrtpSession(Profile.AES_CM_128_HMAC_SHA1_80, key[0], key[1])
                    for c2s, key in ((True, keys[0]), (False, keys[1]))}
    nets = {True: PathModel(0, 200),
            False: PathModel(one_way, 4000, frozenset({31, 32, 88}), frozenset({57, 120}))}
    streams, sent, received = {}, {}, {}
    for c2s in (True, False):
        stream = RtpStream(rng.getrandbits(32), PCMU, 8000, "audio", rng.randrange(0x8000),
                           rng.getrandbits(32))
        packets = audio_packets(rng, stream, start + (0 if c2s else 25_000), end, (160, 161))
        chan = MediaChannel(UdpFlow(cap, link, rtp_spec), c2s, sessions[c2s])
        received[c2s] = send_rtp(chan, stream, packets, nets[c2s], voice(rng, 0 if c2s else 1))
        streams[c2s], sent[c2s] = stream, packets
    for c2s in (True, False):
        chan = MediaChannel(UdpFlow(cap, link, rtcp_spec), c2s, sessions[c2s],
                            delay_us=0 if c2s else one_way)
        cname = f"{CALLER}@{PHONE_IP}" if c2s else f"mgw@{MEDIA_GW_IP}"
        plan = RtcpPlan(streams[c2s], sent[c2s], cname, streams[not c2s], received[not c2s])
        send_rtcp(chan, report_times(rng, start, end, 1_000_000), plan, frozenset({"rtcp"}),
                  bye_at=end + (5_000 if c2s else 9_000))
    return received


def describe(plan: CallPlan) -> str:
    if plan.srtp:
        return ("SIP over TCP 5060 (one segment holds 100 Trying + 180 Ringing, the INVITE is "
                "split over two segments) with SDP RTP/SAVP and a=crypto AES_CM_128_HMAC_SHA1_80 "
                "inline keys in clear; PCMU media really SRTP-encrypted with those keys, SRTCP "
                "on port + 1.")
    return ("SIP over UDP 5060: INVITE (SDP RTP/AVP, PCMU 0 and telephone-event 101), 100, 180, "
            "200, ACK, BYE, 200; plain PCMU RTP both ways (20 ms, 160 bytes) with loss and "
            "reordering towards the phone; RTCP SR on port + 1.")


def sip_facts(cap: Capture, plan: CallPlan, keys: Any, received: dict[bool, Received]
              ) -> list[KeyFact]:
    sdp_frames = frames_with_tag(cap, "sip-invite") + frames_with_tag(cap, "sip-200-sdp")
    facts = [KeyFact("sip_sdp_frames", "SDP offer and answer at frames " + frame_list(sdp_frames),
                     sdp_frames),
             KeyFact("sip_provisional_frames", "100 Trying and 180 Ringing at frames "
                     + frame_list(frames_with_tag(cap, "sip-provisional")),
                     frames_with_tag(cap, "sip-provisional"))]
    if keys:
        facts.append(KeyFact(
            "sdes_keys_cleartext", "SDES keys in cleartext SIP at frames "
            + frame_list(sdp_frames) + "; anyone with the capture can decrypt the SRTP",
            sdp_frames, {"offer_inline": keys[0][2], "answer_inline": keys[1][2],
                         "suite": "AES_CM_128_HMAC_SHA1_80",
                         "offer_key_protects": f"{PHONE_IP}:40000 -> {MEDIA_GW_IP}:31000",
                         "answer_key_protects": f"{MEDIA_GW_IP}:31000 -> {PHONE_IP}:40000"}))
    return facts


PHONE = Party(CALLER, PHONE_IP, "8f2d1c", "Linphone/5.2.0 (belle-sip/5.2.0)", "Alice")
PBX = Party(CALLEE, PROXY_IP, "as5e0c7a1d", "Asterisk PBX 20.5.0", "")


def sip_rtp() -> tuple[Capture, dict[str, Any]]:
    return sip_call(CallPlan("sip_rtp", "UDP", False, dt.datetime(2024, 4, 9, 10, 15, 2), PHONE,
                             PBX))


def sip_sdes() -> tuple[Capture, dict[str, Any]]:
    return sip_call(CallPlan("sip_sdes", "TCP", True, dt.datetime(2024, 4, 9, 11, 40, 27), PHONE,
                             PBX))
