"""SDP decoder: descriptions written from RFC 8866 / RFC 4568 / RFC 8122 examples, fuzzing.

Real SDP bodies are checked against tshark in tests/test_sip.py, where they arrive in SIP.
"""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.decode.sdp import RtpMap, SdesCrypto, parse_crypto_attribute, parse_sdp
from analyzer.errors import DecodeError

# The key of the RFC 4568 §4 example: 40 base64 characters = 16-byte key + 14-byte salt.
RFC4568_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
KEY_256 = base64.b64encode(bytes(range(46))).decode()  # AES-256 key (32) + salt (14)

SDES_OFFER = f"""v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.10
s=SRTP call
c=IN IP4 192.0.2.10
t=0 0
m=audio 49170 RTP/SAVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:32
a=crypto:2 AES_256_CM_HMAC_SHA1_32 inline:{KEY_256} UNENCRYPTED_SRTCP KDR=10
a=sendonly
m=video 51372/2 RTP/AVP 31
c=IN IP4 198.51.100.7/127
a=rtpmap:31 H261/90000
""".replace("\n", "\r\n")

FINGERPRINT = ":".join(f"{byte:02X}" for byte in range(100, 132))  # 32 bytes, as SHA-256
WEBRTC_ANSWER = f"""v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=fingerprint:SHA-256 {FINGERPRINT}
a=ice-ufrag:session-ufrag
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=setup:active
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:0 PCMU/8000
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=setup:active
a=mid:1
a=sctp-port:5000
"""


def test_sdes_offer_media_and_keys() -> None:
    sdp = parse_sdp(SDES_OFFER.encode())
    assert sdp.version == 0
    assert sdp.origin is not None and sdp.origin.address == "192.0.2.10"
    assert sdp.origin.username == "alice"
    assert sdp.session_name == "SRTP call"
    assert sdp.connection_address == "192.0.2.10"
    audio, video = sdp.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == (
        "audio", 49170, 1, "RTP/SAVP",
    )  # fmt: skip
    assert audio.formats == ("0", "8", "101") and audio.payload_types == (0, 8, 101)
    assert audio.rtpmap == {
        0: RtpMap("PCMU", 8000, None),
        8: RtpMap("PCMA", 8000, None),
        101: RtpMap("telephone-event", 8000, None),
    }
    assert audio.is_srtp_profile
    assert audio.direction == "sendonly"
    assert audio.connection_address == "192.0.2.10"
    assert audio.crypto == (
        SdesCrypto(1, "AES_CM_128_HMAC_SHA1_80", f"inline:{RFC4568_KEY}|2^20|1:32", 30,
                   "2^20", "1:32", ()),
        SdesCrypto(2, "AES_256_CM_HMAC_SHA1_32", f"inline:{KEY_256}", 46, None, None,
                   ("UNENCRYPTED_SRTCP", "KDR=10")),
    )  # fmt: skip
    assert sdp.crypto == audio.crypto
    assert (video.port, video.port_count, video.connection_address) == (51372, 2, "198.51.100.7")
    assert not video.is_srtp_profile and video.crypto == ()
    assert video.direction is None


def test_webrtc_answer_dtls_parameters() -> None:
    sdp = parse_sdp(WEBRTC_ANSWER.encode())  # LF-only line endings
    audio, data = sdp.media
    fingerprint = ("sha-256", FINGERPRINT)
    assert sdp.fingerprint == fingerprint
    assert audio.fingerprint == fingerprint and data.fingerprint == fingerprint  # inherited
    assert audio.setup == "active" and data.setup == "active"
    assert audio.ice_ufrag == "EsAw" and data.ice_ufrag == "session-ufrag"
    assert audio.rtcp_mux and not data.rtcp_mux
    assert audio.rtcp_port == 9
    assert audio.proto == "UDP/TLS/RTP/SAVPF" and audio.is_srtp_profile
    assert audio.rtpmap[111] == RtpMap("opus", 48000, 2)
    assert audio.direction == "sendrecv"
    assert (data.media, data.proto, data.formats) == (
        "application", "UDP/DTLS/SCTP", ("webrtc-datachannel",),
    )  # fmt: skip
    assert not data.is_srtp_profile and data.payload_types == ()
    assert audio.crypto == ()


@pytest.mark.parametrize(
    ("proto", "srtp"),
    [
        ("RTP/AVP", False),
        ("RTP/AVPF", False),
        ("RTP/SAVP", True),
        ("RTP/SAVPF", True),
        ("UDP/TLS/RTP/SAVP", True),
        ("UDP/TLS/RTP/SAVPF", True),
        ("TCP/DTLS/RTP/SAVPF", True),
        ("udptl", False),
        ("UDP/DTLS/SCTP", False),
    ],
)
def test_is_srtp_profile(proto: str, srtp: bool) -> None:
    sdp = parse_sdp(f"v=0\r\nm=audio 4000 {proto} 0\r\n".encode())
    assert sdp.media[0].is_srtp_profile is srtp


def test_session_level_direction_and_media_override() -> None:
    sdp = parse_sdp(b"v=0\na=recvonly\nm=audio 1 RTP/AVP 0\nm=audio 2 RTP/AVP 0\na=inactive\n")
    assert [m.direction for m in sdp.media] == ["recvonly", "inactive"]


def test_unknown_and_malformed_attributes_are_ignored() -> None:
    text = (
        "v=0\r\nm=audio 5004 RTP/SAVP 96\r\n"
        "a=rtpmap:96\r\na=rtpmap:abc opus/48000\r\na=rtpmap:97 opus/fast\r\n"
        "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:abc\r\na=crypto:1\r\n"
        "a=fingerprint:sha-256\r\na=x-vendor:anything\r\nnot an sdp line\r\n"
        "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:!!!notbase64!!!\r\n"
    )
    media = parse_sdp(text.encode()).media[0]
    assert media.rtpmap == {}
    assert media.fingerprint is None
    assert [(c.tag, c.key_bytes_len) for c in media.crypto] == [(3, None)]


def test_non_ascii_digits_are_not_numbers() -> None:
    media = parse_sdp("v=0\nm=audio 1 RTP/AVP ² 8\na=rtpmap:² x/1\na=rtpmap:8 PCMA/٨٠٠٠\n".encode())
    assert media.media[0].payload_types == (8,)
    assert media.media[0].rtpmap == {}


def test_crypto_attribute_mki_without_lifetime() -> None:
    crypto = parse_crypto_attribute(f"5 AES_CM_128_HMAC_SHA1_32 inline:{RFC4568_KEY}|7:4")
    assert crypto is not None
    assert (crypto.lifetime, crypto.mki, crypto.key_bytes_len) == (None, "7:4", 30)


def test_crypto_attribute_unpadded_base64() -> None:
    key = base64.b64encode(bytes(46)).decode().rstrip("=")
    crypto = parse_crypto_attribute(f"1 AEAD_AES_256_GCM inline:{key}")
    assert crypto is not None and crypto.key_bytes_len == 46


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n",
        b"v=x\r\n",
        b"v=0\r\nm=audio\r\n",
        b"v=0\r\nm=audio $ udptl t38\r\n",
        b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 1/x RTP/AVP 0\r\n",
        b"\xff\xfe\x00garbage",
    ],
)
def test_malformed_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_sdp(data)


SDP_LINE = st.builds(
    lambda kind, value: f"{kind}={value}",
    st.sampled_from("vosicmat"),
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            [
                "audio 0 RTP/AVP 0", "rtpmap:0 PCMU/8000/1", "crypto:1 X inline:AAAA|2^1|1:1",
                "fingerprint:sha-1 AA", "setup:actpass", "rtcp:99999", "rtcp-mux", "IN IP4 ::",
            ]
        ),
    ),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(SDP_LINE, max_size=12), st.sampled_from(["\r\n", "\n"]))
def test_fuzz_structured(lines: list[str], ending: str) -> None:
    text = ending.join(["v=0", *lines])
    with contextlib.suppress(DecodeError):
        sdp = parse_sdp(text.encode("utf-8", errors="replace"))
        for media in sdp.media:
            assert 0 <= media.port <= 65535
            _ = media.is_srtp_profile, media.payload_types


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_raw_bytes(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_sdp(data)
