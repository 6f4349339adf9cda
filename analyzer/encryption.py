"""Encryption verdicts per flow and per RTP stream, with the evidence they rest on.

A verdict is one of `cleartext`, `weak`, `encrypted`, `unknown`, with the protocol and
parameters (`detail`), what it rests on (`basis`), how the keys were agreed and with whom
(`key_exchange`, `key_exchange_detail`), who can read the content (`readable_by`) and whether the
protection is end-to-end or hop-by-hop. Payload entropy is never a basis: only handshakes,
signalling, protocol structure, and documented service protocols are.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.decode.tls import version_name
from analyzer.decode.tls_registry import (
    cipher_suite_name,
    srtp_profile_name,
    srtp_profile_properties,
    suite_properties,
)
from analyzer.facts import FlowFacts, HandshakeFacts, SdpMedia

CLEARTEXT, WEAK, ENCRYPTED, UNKNOWN = "cleartext", "weak", "encrypted", "unknown"
VERDICT_ORDER = (CLEARTEXT, WEAK, UNKNOWN, ENCRYPTED)  # worst first
OLD_TLS = {0x0300, 0x0301, 0x0302}  # SSL 3.0, TLS 1.0, TLS 1.1
OLD_DTLS = {0xFEFF, 0x0100}  # DTLS 1.0 and OpenSSL's pre-standard number
BROKEN_SUITE_REASONS = {"export", "anon", "null-cipher", "null-mac", "rc4", "des", "3des", "rc2",
                        "md5"}
SDES_NO_CONFIDENTIALITY = "UNENCRYPTED_SRTP"
CONTROL_SERVERS_SHOWN = 4  # candidate key-delivery servers named in a verdict

# Services whose media encryption is documented as mandatory, with what the documents say.
SERVICE_MEDIA_PROTOCOLS = {
    "discord": ("Discord voice: RTP payloads encrypted with a mode chosen over its TLS gateway "
                "(Discord developer documentation, Voice connections)", "the service"),
    "whatsapp": ("WhatsApp calls: SRTP keyed end to end through the Signal protocol "
                 "(WhatsApp security whitepaper)", "the call's endpoints"),
    "teams": ("Teams: SRTP, keys exchanged over the TLS signalling channel (Microsoft, "
              "'Encryption for Teams'; 1:1 E2EE calls use DTLS instead)",
              "Microsoft's signalling and media servers"),
    "zoom": ("Zoom 5.0+: media payload encrypted with AES-256-GCM, headers in clear (Zoom "
             "encryption whitepaper)", "Zoom's servers (they issue the meeting key)"),
}


@dataclass(frozen=True, slots=True)
class Verdict:
    encryption: str
    detail: str
    basis: str
    key_exchange: str = "none"
    key_exchange_detail: str = ""
    readable_by: str = ""
    protection: str = "none"  # end-to-end | hop-by-hop | service-held-keys | none | unknown
    protection_note: str = ""
    weak_reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class FlowView:
    """What the assessment needs to know about one flow."""

    flow_id: int
    transport: str
    service: str
    p2p: bool
    server: str  # "ip:port"
    server_name: str
    facts: FlowFacts
    media_packets: int = 0
    zoom_media: bool = False
    zoom_legacy: bool = False
    zoom_encapsulated: bool = False  # packets verified as Zoom's encapsulation
    srtcp_trailer: bool = False
    rtcp_packets: int = 0
    # (tuples: most of a capture's flows have none of these, and share the empty one)
    sdp: tuple[SdpMedia, ...] = ()
    sdp_cleartext_frames: tuple[int, ...] = ()  # SIP frames carrying SDES
    # for keys delivered by a service: the first CONTROL_SERVERS_SHOWN candidates
    control_servers: tuple[str, ...] = ()
    ecb_frames: tuple[tuple[int, int], ...] = ()  # set when ECB was detected on the flow


def worst(verdicts: list[str]) -> str:
    return min(verdicts, key=VERDICT_ORDER.index) if verdicts else UNKNOWN


# ---------------------------------------------------------------------- TLS family


def tls_verdict(hs: HandshakeFacts, dtls: bool = False, cbc_sha1_is_weak: bool = False
                ) -> tuple[str, str, tuple[str, ...]]:
    """(verdict, detail, weak reasons) for a TLS or DTLS handshake."""
    if not hs.server_hello_frame and not hs.client_hello_frame and hs.encrypted_seen:
        return ENCRYPTED, f"{hs.protocol.upper()} application data (handshake not captured)", ()
    if not hs.server_hello_frame:
        offered = ", ".join(version_name(v) for v in hs.offered_versions[:3])
        seen = "encrypted records seen" if hs.encrypted_seen else "no ServerHello in capture"
        return UNKNOWN, f"{hs.protocol.upper()} ClientHello only (offered {offered}); {seen}", ()
    reasons = list(_version_reasons(hs.version, dtls))
    props = suite_properties(hs.cipher_suite)
    if props is not None:
        reasons += [r for r in props.weak_reasons if r in BROKEN_SUITE_REASONS
                    or (cbc_sha1_is_weak and r == "cbc-sha1")]
    detail = f"{version_name(hs.version)} {cipher_suite_name(hs.cipher_suite)}"
    return (WEAK if reasons else ENCRYPTED), detail, tuple(reasons)


def _version_reasons(version: int, dtls: bool) -> tuple[str, ...]:
    if dtls and version in OLD_DTLS:
        return ("DTLS 1.0",)
    if not dtls and version in OLD_TLS:
        return (f"{version_name(version)} (deprecated, RFC 8996)",)
    return ()


def srtp_profile_reasons(profile: int) -> tuple[str, ...]:
    props = srtp_profile_properties(profile)
    if props is None:
        return ()
    reasons = []
    if props.null_cipher:
        reasons.append(f"{props.name}: NULL cipher, media readable")
    if props.null_auth:
        reasons.append(f"{props.name}: no authentication")
    return tuple(reasons)


# ---------------------------------------------------------------------- per flow


def assess_flow(view: FlowView, cbc_sha1_is_weak: bool = False) -> Verdict:
    facts = view.facts
    if facts.tls is not None:
        return _tls_flow(view, facts.tls, cbc_sha1_is_weak)
    if facts.quic is not None:
        return _quic_flow(view, facts.quic)
    if "quic" in facts.protocols:
        return _quic_undecrypted(view, facts.quic_version)
    if view.media_packets or view.rtcp_packets:
        return _media_flow(view, cbc_sha1_is_weak)
    if view.zoom_encapsulated:
        return Verdict(UNKNOWN, "Zoom encapsulation without media (control, probes, filler)"
                       + (", pre-5.0 layout" if view.zoom_legacy else ""),
                       "Zoom encapsulation", *_service_keys(view))
    if facts.dtls is not None:
        return _dtls_only_flow(view, facts.dtls, cbc_sha1_is_weak)
    return _plain_protocol_flow(view)


def _tls_flow(view: FlowView, hs: HandshakeFacts, cbc: bool) -> Verdict:
    verdict, detail, reasons = tls_verdict(hs, cbc_sha1_is_weak=cbc)
    peer = view.server_name or view.server
    basis = ("TLS handshake" if hs.server_hello_frame else "TLS ClientHello"
             if hs.client_hello_frame else "TLS record layer")
    return Verdict(verdict, detail, basis, "tls", f"TLS with {peer} ({view.server})",
                   f"the endpoints of this TLS connection: the client and {peer}",
                   "hop-by-hop", "TLS protects the connection to this server only", reasons)


def _quic_flow(view: FlowView, hs: HandshakeFacts) -> Verdict:
    peer = view.server_name or view.server
    return Verdict(ENCRYPTED, "QUIC (TLS 1.3 inside QUIC)", "QUIC Initial decrypted", "quic",
                   f"QUIC/TLS 1.3 with {peer} ({view.server})",
                   f"the client and {peer}", "hop-by-hop",
                   "QUIC protects the connection to this server only")


def _quic_undecrypted(view: FlowView, version: int) -> Verdict:
    from analyzer.decode.quic import version_name as quic_version

    name = quic_version(version) if version else "unknown version"
    return Verdict(ENCRYPTED, f"QUIC ({name}); Initial not decrypted", "QUIC long header "
                   "(every QUIC version encrypts its payload)", "quic",
                   f"QUIC handshake with {view.server}", f"the client and {view.server}",
                   "hop-by-hop", "QUIC protects the connection to this server only")


def _dtls_only_flow(view: FlowView, hs: HandshakeFacts, cbc: bool) -> Verdict:
    if not hs.client_hello_frame and not hs.server_hello_frame and hs.encrypted_seen:
        return Verdict(ENCRYPTED, "DTLS application data (handshake not captured)",
                       "DTLS record layer: encrypted application_data records", "dtls",
                       f"DTLS with {view.server} (handshake before the capture)",
                       "the DTLS endpoints", _protection(view), _protection_note(view, "dtls"))
    verdict, detail, reasons = tls_verdict(hs, dtls=True, cbc_sha1_is_weak=cbc)
    return Verdict(verdict, detail, "DTLS handshake", "dtls", _dtls_peer(view, hs),
                   "the DTLS endpoints", _protection(view), _protection_note(view, "dtls"),
                   reasons)


def _dtls_peer(view: FlowView, hs: HandshakeFacts) -> str:
    who = "the other peer" if view.p2p else f"the server {view.server}"
    prints = []
    if hs.certificate_fingerprints:
        prints.append(f"server certificate SHA-256 {hs.certificate_fingerprints[0]}")
    if hs.client_certificate_fingerprints:
        prints.append(f"client certificate SHA-256 {hs.client_certificate_fingerprints[0]}")
    return f"DTLS with {who}" + (f" ({'; '.join(prints)})" if prints else "")


def _protection(view: FlowView) -> str:
    return "end-to-end" if view.p2p else "hop-by-hop"


def _protection_note(view: FlowView, key_exchange: str) -> str:
    if view.p2p:
        return "keys agreed directly between the two endpoints; no relay in the path"
    if key_exchange in ("dtls-srtp", "dtls"):
        return (f"keys agreed with {view.server}, which can decrypt and re-encrypt (SFU/relay); "
                "an extra end-to-end layer (e.g. SFrame/insertable streams) would be invisible "
                "here and can only be shown from the clients")
    return ("the relay or service that holds the keys can read the media; an end-to-end layer "
            "would need client-side evidence (key verification codes, E2EE indicators)")


# ---------------------------------------------------------------------- media


def _media_flow(view: FlowView, cbc: bool) -> Verdict:
    for rule in (_ecb, _zrtp, _dtls_srtp, _sdes, _sdp_profile, _zoom, _srtcp_trailer,
                 _service_protocol):
        verdict = rule(view, cbc)
        if verdict is not None:
            return verdict
    return Verdict(CLEARTEXT, "RTP with no sign of SRTP (no DTLS, SDES, ZRTP, SAVP profile or "
                   "SRTCP trailer)", "absence of any SRTP evidence", "none", "",
                   "anyone who can capture the traffic", "none",
                   "media payloads are sent without encryption")


def _ecb(view: FlowView, cbc: bool) -> Verdict | None:
    if not view.ecb_frames:
        return None
    pairs = ", ".join(f"{a}/{b}" for a, b in view.ecb_frames[:3])
    return Verdict(WEAK, "media encrypted with a block cipher in ECB mode: identical plaintext "
                   f"blocks give identical ciphertext (frame pairs {pairs})",
                   "repeated ciphertext blocks", *_service_keys(view),
                   ("AES in ECB mode",))


def _zrtp(view: FlowView, cbc: bool) -> Verdict | None:
    if not view.facts.zrtp_messages:
        return None
    messages = ", ".join(sorted(view.facts.zrtp_messages))
    return Verdict(ENCRYPTED, "SRTP keyed with ZRTP (RFC 6189)", f"ZRTP messages: {messages}",
                   "zrtp", "ZRTP Diffie-Hellman between the endpoints in the media path",
                   "the two endpoints (verify the short authentication string to rule out a "
                   "man in the middle)", "end-to-end", "ZRTP keys are agreed by the endpoints")


def _dtls_srtp(view: FlowView, cbc: bool) -> Verdict | None:
    hs = view.facts.dtls
    if hs is None or not hs.server_hello_frame:
        return None
    verdict, detail, reasons = tls_verdict(hs, dtls=True, cbc_sha1_is_weak=cbc)
    if hs.srtp_profile < 0:
        return Verdict(UNKNOWN, f"{detail}; no SRTP profile negotiated", "DTLS handshake",
                       "dtls", _dtls_peer(view, hs), "the DTLS endpoints", _protection(view),
                       _protection_note(view, "dtls"), reasons)
    reasons += srtp_profile_reasons(hs.srtp_profile)
    detail += f"; {srtp_profile_name(hs.srtp_profile)}"
    return Verdict(WEAK if reasons else verdict, f"DTLS-SRTP: {detail}",
                   f"DTLS handshake (frames {hs.client_hello_frame}, {hs.server_hello_frame})",
                   "dtls-srtp", _dtls_peer(view, hs), _holders(view), _protection(view),
                   _protection_note(view, "dtls-srtp"), tuple(reasons))


def _holders(view: FlowView) -> str:
    if view.p2p:
        return "the two endpoints"
    return f"the endpoints of each hop, including {view.server}"


def _sdes(view: FlowView, cbc: bool) -> Verdict | None:
    crypto = [s for s in view.sdp if s.sdes_suites]
    if not crypto:
        return None
    suites = ", ".join(sorted({suite for s in crypto for suite in s.sdes_suites}))
    if view.sdp_cleartext_frames:
        frames = ", ".join(str(f) for f in view.sdp_cleartext_frames[:6])
        return Verdict(WEAK, f"SRTP ({suites}) with SDES keys sent in cleartext SIP",
                       f"SDP a=crypto in cleartext SIP (frames {frames})", "sdes-cleartext",
                       f"SDES: master keys in cleartext SDP, frames {frames}",
                       "anyone who has the capture (the keys are in it)", "none",
                       "keys travelled in the clear",
                       ("SDES keys readable in cleartext signalling",))
    return Verdict(ENCRYPTED, f"SRTP ({suites}) with SDES keys in protected signalling",
                   "SDP a=crypto over TLS", "sdes-tls", "SDES inside TLS signalling",
                   "the signalling servers that relayed the SDP", "hop-by-hop",
                   "the signalling servers see the SRTP keys")


def _sdp_profile(view: FlowView, cbc: bool) -> Verdict | None:
    profiles = {s.proto for s in view.sdp}
    if not profiles:
        return None
    secure = [p for p in profiles if "SAVP" in p.upper()]
    if secure:
        fingerprints = [s.fingerprint for s in view.sdp if s.fingerprint]
        kind = "dtls-srtp" if fingerprints else "unknown"
        return Verdict(ENCRYPTED, f"SRTP (SDP profile {', '.join(sorted(secure))})",
                       "SDP media profile", kind, ("a=fingerprint " + fingerprints[0])
                       if fingerprints else "key exchange not visible", _holders(view),
                       _protection(view), _protection_note(view, kind))
    frames = ", ".join(str(s.frame) for s in view.sdp[:4])
    return Verdict(CLEARTEXT, f"plain RTP (SDP profile {', '.join(sorted(profiles))}, no keys)",
                   f"SDP offer/answer (frames {frames})", "none", "",
                   "anyone who can capture the traffic", "none",
                   "the signalling asked for unencrypted RTP")


def _zoom(view: FlowView, cbc: bool) -> Verdict | None:
    if not (view.zoom_media or view.zoom_encapsulated):
        return None
    if view.zoom_legacy:
        return Verdict(UNKNOWN, "Zoom media in the pre-5.0 layout (before AES-GCM)",
                       "Zoom encapsulation layout", *_service_keys(view))
    return Verdict(ENCRYPTED, SERVICE_MEDIA_PROTOCOLS["zoom"][0],
                   "Zoom encapsulation (post-5.0 layout) and Zoom's documentation",
                   *_service_keys(view))


def _service_keys(view: FlowView) -> tuple[str, str, str, str, str]:
    """Key exchange for media whose keys the service's own servers hand out."""
    if view.service == "zoom":
        servers = "; ".join(view.control_servers) or "not seen in this capture"
        return ("service-control-tls",
                f"meeting key delivered by Zoom's servers over TLS; candidates: {servers}",
                "Zoom's servers (they generate the meeting key) and the participants",
                "service-held-keys", "the service holds the meeting key unless Zoom E2EE is "
                "on; E2EE cannot be seen in a capture, only in the clients")
    return ("unknown", "key exchange not visible in the capture", "unknown", "unknown",
            "cannot tell from the capture")


def _srtcp_trailer(view: FlowView, cbc: bool) -> Verdict | None:
    if not view.srtcp_trailer:
        return None
    documented = _service_protocol(view, False)
    if documented is not None:
        return Verdict(ENCRYPTED, f"SRTP (SRTCP trailer seen); {documented.detail}",
                       "SRTCP trailer and the service's documentation",
                       *_verdict_tail(documented))
    return Verdict(ENCRYPTED, "SRTP (RTCP carries the SRTCP trailer: E flag and index)",
                   "SRTCP trailer", "unknown", "key exchange not visible in the capture",
                   "whoever received the keys through the (invisible) signalling", "unknown",
                   "cannot tell hop-by-hop from end-to-end without the key exchange")


def _verdict_tail(v: Verdict) -> tuple[str, str, str, str, str]:
    return v.key_exchange, v.key_exchange_detail, v.readable_by, v.protection, v.protection_note


def _service_protocol(view: FlowView, cbc: bool) -> Verdict | None:
    known = SERVICE_MEDIA_PROTOCOLS.get(view.service)
    if known is None or view.service == "zoom":
        return None
    text, holders = known
    protection = "end-to-end" if view.service == "whatsapp" else "service-held-keys"
    return Verdict(ENCRYPTED, text, f"documented {view.service} media protocol (no handshake "
                   "visible in the capture)", "service-signalling",
                   "keys exchanged over the service's encrypted signalling (not visible here)",
                   holders, protection, "per the service's documentation; the capture itself "
                   "cannot show who holds the keys")


# ---------------------------------------------------------------------- other protocols


def _discord_probe(view: FlowView) -> bool:
    return any("latency probe" in e.text for e in view.facts.evidence)


# the verdicts that depend on nothing but the protocol (one value each: a busy capture has a
# hundred thousand such flows)
DNS_VERDICT = Verdict(CLEARTEXT, "DNS: queried names and answers readable", "DNS messages",
                      readable_by="anyone who can capture the traffic")
STUN_VERDICT = Verdict(CLEARTEXT, "STUN/TURN: addresses (mapped, relayed, peer) readable",
                       "STUN messages", readable_by="anyone who can capture the traffic")
NOTHING_SEEN_VERDICT = Verdict(UNKNOWN, "no handshake or known protocol seen",
                               "not enough evidence", "unknown", readable_by="unknown",
                               protection="unknown")


def _plain_protocol_flow(view: FlowView) -> Verdict:
    protocols = view.facts.protocols
    if "sip" in protocols:
        sdes = " and SDES keys" if view.sdp_cleartext_frames else ""
        return Verdict(CLEARTEXT, f"SIP signalling without TLS: headers, SDP{sdes} readable",
                       "SIP messages in clear", readable_by="anyone who can capture the traffic")
    if "dns" in protocols:
        return DNS_VERDICT
    if protocols & {"stun", "turn"}:
        return STUN_VERDICT
    if protocols & {"http", "h323"}:
        what = "HTTP" if "http" in protocols else "H.323 call signalling (Q.931/H.225)"
        return Verdict(CLEARTEXT, f"{what} without TLS", "protocol header in clear",
                       readable_by="anyone who can capture the traffic")
    if "discord-ip-discovery" in protocols or _discord_probe(view):
        return Verdict(CLEARTEXT, "Discord voice IP discovery / latency probes: addresses and "
                       "counters in clear, no media", "Discord packet structure",
                       readable_by="anyone who can capture the traffic")
    if "whatsapp" in protocols:
        return Verdict(ENCRYPTED, "WhatsApp chat protocol (Noise Pipes handshake, then "
                       "encrypted frames)", "WhatsApp 'WA' protocol header", "noise",
                       f"Noise handshake with {view.server}", "the client and WhatsApp's server",
                       "hop-by-hop", "transport encryption to WhatsApp's server")
    return NOTHING_SEEN_VERDICT
