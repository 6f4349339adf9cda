"""SRTP and SRTCP protection (RFC 3711 AES-CM + HMAC-SHA1, RFC 7714 AES-GCM, NULL cipher).

Sender side only: `protect_rtp` / `protect_rtcp` take a plain packet and return what goes on the
wire. Keys come from the master key and salt through the RFC 3711 section 4.3 key derivation
(key derivation rate 0), so anyone holding the master key (e.g. from SDP a=crypto) can decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import Enum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LABEL_RTP_ENCRYPTION = 0x00
LABEL_RTP_AUTH = 0x01
LABEL_RTP_SALT = 0x02
LABEL_RTCP_ENCRYPTION = 0x03
LABEL_RTCP_AUTH = 0x04
LABEL_RTCP_SALT = 0x05
SRTCP_E_FLAG = 0x80000000
RTCP_HEADER_LEN = 8
AUTH_KEY_LEN = 20
SRTCP_HMAC_TAG_LEN = 10  # 80 bits even for the _32 profiles (RFC 5764 section 4.1.2)


@dataclass(frozen=True, slots=True)
class ProfileParams:
    key_len: int
    salt_len: int
    tag_len: int
    aead: bool
    encrypts: bool


class Profile(Enum):
    AES_CM_128_HMAC_SHA1_80 = ProfileParams(16, 14, 10, False, True)
    AES_CM_128_HMAC_SHA1_32 = ProfileParams(16, 14, 4, False, True)
    NULL_HMAC_SHA1_80 = ProfileParams(16, 14, 10, False, False)
    AEAD_AES_128_GCM = ProfileParams(16, 12, 16, True, True)
    AEAD_AES_256_GCM = ProfileParams(32, 12, 16, True, True)


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 4.3.1 with kdr = 0: AES-CM keystream at IV = (salt XOR label<<48) || 0x0000.

    A 96-bit (GCM) master salt is used as its 112-bit left-aligned form, as libsrtp does.
    """
    salt = master_salt.ljust(14, b"\x00")
    x = int.from_bytes(salt, "big") ^ (label << 48)
    iv = x.to_bytes(14, "big") + b"\x00\x00"
    return _aes_ctr(master_key, iv, b"\x00" * length)


def rtp_header_length(packet: bytes) -> int:
    """Bytes of the RTP header: 12, the CSRCs and the header extension."""
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        words = struct.unpack_from("!H", packet, length + 2)[0]
        length += 4 + 4 * words
    return length


@dataclass
class SrtpSession:
    """One direction's SRTP/SRTCP crypto context (all SSRCs it sends)."""

    profile: Profile
    master_key: bytes
    master_salt: bytes
    roc: dict[int, tuple[int, int]] = field(default_factory=dict)  # ssrc -> (roc, last seq)
    srtcp_index: int = 0

    def __post_init__(self) -> None:
        p = self.profile.value
        if len(self.master_key) != p.key_len or len(self.master_salt) != p.salt_len:
            raise ValueError("master key or salt length does not fit the profile")
        k, s = self.master_key, self.master_salt
        self.rtp_key = derive(k, s, LABEL_RTP_ENCRYPTION, p.key_len)
        self.rtp_auth = derive(k, s, LABEL_RTP_AUTH, AUTH_KEY_LEN)
        self.rtp_salt = derive(k, s, LABEL_RTP_SALT, p.salt_len)
        self.rtcp_key = derive(k, s, LABEL_RTCP_ENCRYPTION, p.key_len)
        self.rtcp_auth = derive(k, s, LABEL_RTCP_AUTH, AUTH_KEY_LEN)
        self.rtcp_salt = derive(k, s, LABEL_RTCP_SALT, p.salt_len)

    def _next_roc(self, ssrc: int, seq: int) -> int:
        roc, last = self.roc.get(ssrc, (0, seq))
        if seq < last and last - seq > 0x8000:
            roc += 1
        self.roc[ssrc] = (roc, seq)
        return roc

    def protect_rtp(self, packet: bytes) -> bytes:
        seq, _ts, ssrc = struct.unpack_from("!HII", packet, 2)
        roc = self._next_roc(ssrc, seq)
        head_len = rtp_header_length(packet)
        header, payload = packet[:head_len], packet[head_len:]
        if self.profile.value.aead:
            iv = _xor(self.rtp_salt, struct.pack("!HIIH", 0, ssrc, roc, seq))
            return header + AESGCM(self.rtp_key).encrypt(iv, payload, header)
        if self.profile.value.encrypts:
            index = (roc << 16) | seq
            payload = _aes_ctr(self.rtp_key, _cm_iv(self.rtp_salt, ssrc, index), payload)
        signed = header + payload
        tag = hmac.new(self.rtp_auth, signed + struct.pack("!I", roc), hashlib.sha1).digest()
        return signed + tag[: self.profile.value.tag_len]

    def protect_rtcp(self, packet: bytes) -> bytes:
        """SRTCP: encrypt after byte 8, append E|index, then the tag (AEAD: tag before E|index)."""
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        self.srtcp_index = index = (self.srtcp_index + 1) & 0x7FFFFFFF  # first index 1, as libsrtp
        e_index = struct.pack("!I", (SRTCP_E_FLAG if self.profile.value.encrypts else 0) | index)
        header, body = packet[:RTCP_HEADER_LEN], packet[RTCP_HEADER_LEN:]
        if self.profile.value.aead:
            iv = _xor(self.rtcp_salt, struct.pack("!HIHI", 0, ssrc, 0, index))
            return header + AESGCM(self.rtcp_key).encrypt(iv, body, header + e_index) + e_index
        if self.profile.value.encrypts:
            body = _aes_ctr(self.rtcp_key, _cm_iv(self.rtcp_salt, ssrc, index), body)
        signed = header + body + e_index
        tag = hmac.new(self.rtcp_auth, signed, hashlib.sha1).digest()
        return signed + tag[:SRTCP_HMAC_TAG_LEN]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _cm_iv(session_salt: bytes, ssrc: int, index: int) -> bytes:
    """RFC 3711 4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)."""
    value = (int.from_bytes(session_salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    return value.to_bytes(16, "big")
