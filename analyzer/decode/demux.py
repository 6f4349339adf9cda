"""RFC 7983 first-byte demultiplexing (as updated by RFC 9443 for QUIC): the one table.

A UDP payload multiplexed on one 5-tuple (WebRTC's ICE/DTLS/SRTP, TURN channels, QUIC) is told
apart by its first byte:

    0-3     STUN            (RFC 7983 §7)
    4-15    reserved: drop
    16-19   ZRTP
    20-63   DTLS            (20-23 record types; 0x20-0x3F DTLS 1.3 unified header, RFC 9147)
    64-79   TURN ChannelData when TURN is in use, else QUIC short header (RFC 9443)
    80-127  QUIC short header (RFC 9443)
    128-191 RTP / RTCP      (RFC 5761 tells them apart by the second byte)
    192-255 QUIC long header (RFC 9443); Microsoft's multiplexed TURN 0xFF10 also lands here
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Demux(IntEnum):
    STUN = 1
    DROP = 2
    ZRTP = 3
    DTLS = 4
    TURN_CHANNEL = 5  # or QUIC short header when no TURN is in use
    QUIC_SHORT = 6
    RTP = 7  # RTP or RTCP
    QUIC_LONG = 8  # or MS-TURN 0xFF10


_RANGES = (
    (0, 3, Demux.STUN),
    (4, 15, Demux.DROP),
    (16, 19, Demux.ZRTP),
    (20, 63, Demux.DTLS),
    (64, 79, Demux.TURN_CHANNEL),
    (80, 127, Demux.QUIC_SHORT),
    (128, 191, Demux.RTP),
    (192, 255, Demux.QUIC_LONG),
)


def _build_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint8)
    for low, high, kind in _RANGES:
        table[low : high + 1] = kind
    return table


FIRST_BYTE = _build_table()
FIRST_BYTE.setflags(write=False)


def classify(first_byte: int) -> Demux:
    """The RFC 7983 class of one payload's first byte."""
    return Demux(int(FIRST_BYTE[first_byte & 0xFF]))


def classify_many(first_bytes: np.ndarray) -> np.ndarray:
    """Vectorized `classify`: an array of `Demux` codes (uint8)."""
    return FIRST_BYTE.take(first_bytes.astype(np.intp) & 0xFF)


def is_rtcp(second_byte: np.ndarray) -> np.ndarray:
    """RFC 5761 §4: with RTP and RTCP on one port, 192-223 in the second byte means RTCP."""
    return (second_byte >= 192) & (second_byte <= 223)
