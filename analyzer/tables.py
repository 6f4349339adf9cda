"""The output tables: built from the pipeline's state, documented, written atomically.

Column documentation lives in `COLUMNS` (name -> unit and meaning); `docs/tables.md` is
generated from it and a test checks that every table has exactly its documented columns.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer import assess, services
from analyzer.decode.tls import version_name
from analyzer.ecb import EcbResult
from analyzer.encryption import Verdict
from analyzer.errors import ConfscopeError
from analyzer.facts import (
    ADDRESS_RANGE,
    LEARNED,
    MAX_DAMAGE_NOTES,
    NAME,
    PORT,
    SIGNATURE,
    Evidence,
)
from analyzer.findings import COVERAGE_COLUMNS
from analyzer.flows import Flow
from analyzer.geolocate import GEO_COLUMNS

if TYPE_CHECKING:
    from analyzer.facts import CaptureFacts, FlowFacts
    from analyzer.flows import FlowTable
    from analyzer.inspector import Inspector
    from analyzer.media import MediaExtractor, StreamState

PROTOCOL_ORDER = ("dns", "tls", "quic", "sip", "stun", "turn", "dtls", "zrtp", "zoom",
                  "srtp", "srtcp", "rtp", "rtcp")

COLUMNS: dict[str, dict[str, str]] = {
    "flows": {
        "capture": "capture file name",
        "flow_id": "flow number within the capture (1-based, in order of first packet)",
        "transport": "udp or tcp",
        "client_ip": "address of the client (the side that opened the flow or uses an "
                     "ephemeral port)",
        "client_port": "client port",
        "server_ip": "address of the server (well-known port or service address range, else "
                     "the responder)",
        "server_port": "server port",
        "p2p": "true when neither side is a server (peer-to-peer media)",
        "orientation": "why the client side was chosen",
        "first_seen": "time of the first packet (UTC)",
        "last_seen": "time of the last packet (UTC)",
        "duration_s": "last_seen - first_seen, seconds",
        "first_frame": "Wireshark frame number of the first packet",
        "packets_c2s": "packets client to server (a fragmented IP datagram counts once, as in "
                       "tshark's conversations)",
        "packets_s2c": "packets server to client",
        "bytes_c2s": "frame bytes on the wire, client to server (every IP fragment included)",
        "bytes_s2c": "frame bytes on the wire, server to client",
        "service": "zoom, teams, google-meet, webex, jitsi, whatsapp, signal, telegram, "
                   "discord, facetime, messenger, sip, webrtc or other",
        "service_evidence": "what decided the service, strongest evidence first",
        "service_basis": "the strongest kind of evidence for the service: signature (protocol "
                         "structure, certificate), name (SNI, DNS), address-range (the "
                         "service's published ranges), learned (from a related flow: "
                         "signalling, same server), port (the port number alone: a guess), "
                         "protocols (webrtc: STUN and DTLS seen, no service evidence) or none",
        "protocols": "protocols seen on the flow, '+'-joined (e.g. stun+dtls+srtp)",
        "media": "media kinds carried (audio, video, screen, ...), '+'-joined",
        "server_name": "best name of the server (SNI, then DNS answer, then certificate)",
        "server_name_source": "where server_name came from (tls-sni, dns, ...)",
        "tls_version": "negotiated TLS/DTLS/QUIC version, if a handshake was seen",
        "rtt_min_ms": "smallest handshake round trip seen on the flow, ms",
        "rtt_evidence": "which exchange gave rtt_min_ms: kind and request/response frames",
        "decode_problems": "malformed handshake messages (frame: what), the first "
                           f"{MAX_DAMAGE_NOTES} and how many more",
        **{
            "encryption": "cleartext, weak, encrypted or unknown",
            "encryption_detail": "protocol and parameters (version, cipher suite, SRTP profile)",
            "encryption_basis": "what the verdict rests on (handshake, signalling, ...)",
            "key_exchange": "dtls-srtp, sdes-cleartext, sdes-tls, service-control-tls, tls, "
                            "quic, zrtp, dtls, noise, service-signalling, none or unknown",
            "key_exchange_detail": "with whom the keys were agreed (address, certificate "
                                   "fingerprint, frames)",
            "readable_by": "who can read the content, as far as the capture shows",
            "protection": "end-to-end, hop-by-hop, service-held-keys, none or unknown",
            "protection_note": "why, and what evidence would show an end-to-end layer",
            "weak_reasons": "why the verdict is weak, '; '-joined",
        },
    },
    "streams": {
        "capture": "capture file name",
        "flow_id": "flow the stream belongs to",
        "src_ip": "sender address", "src_port": "sender port",
        "dst_ip": "receiver address", "dst_port": "receiver port",
        "ssrc": "RTP synchronization source, hex",
        "payload_type": "most frequent RTP payload type",
        "encapsulation": "rtp, turn-channel, ms-turn or zoom",
        "media": "audio, video, screen, ... when the protocol or signalling tells",
        "clock_rate": "RTP clock rate used for jitter, Hz (empty when unknown)",
        "clock_rate_source": "sdp a=rtpmap, static payload type, inferred, or unknown",
        "packets": "RTP packets received",
        "expected": "packets expected from the sequence numbers",
        "lost": "expected - received (negative with duplicates), as Wireshark counts it",
        "loss_pct": "lost / expected * 100",
        "duplicates": "packets whose sequence number was already seen (among the 4096 "
                      "below the highest seen; a repeat from further back is out of order)",
        "out_of_order": "packets that arrived after a later sequence number",
        "jitter_mean_ms": "mean of the RFC 3550 interarrival jitter over the stream, ms",
        "jitter_max_ms": "maximum RFC 3550 interarrival jitter, ms",
        "delta_max_ms": "largest gap between consecutive packets, ms",
        "bitrate_kbps": "RTP bytes (header and payload, as the UDP header declares them, so "
                        "with what a snap length cut off or later IP fragments carry) * 8 / "
                        "duration, kbit/s",
        "duration_s": "last packet - first packet, seconds",
        "first_seen": "time of the first packet (UTC)",
        "last_seen": "time of the last packet (UTC)",
        "first_frame": "Wireshark frame number of the first packet",
        "ecb_verdict": "ECB test: ecb, no-repeats, insufficient-data, or empty when not sampled "
                       "(the test samples the first 32 streams to become valid RTP)",
        "ecb_confidence": "high, medium or low",
        "ecb_repeats": "distinct high-entropy 16-byte blocks seen in two or more packets",
        "ecb_blocks_examined": "ciphertext blocks the ECB test looked at",
        "ecb_repeat_rate": "repeated blocks / blocks examined",
        "ecb_expected_random": "repeats expected by chance from a sound cipher mode (birthday "
                               "bound): about zero",
        "ecb_examples": "Wireshark frame pairs holding the same ciphertext block: a/b; c/d",
        "encryption": "verdict of the stream's media: cleartext, weak, encrypted or unknown",
        "encryption_detail": "protocol and parameters",
        "key_exchange": "how the media keys were agreed (see flows)",
        "protection": "end-to-end, hop-by-hop, service-held-keys, none or unknown",
    },
    "servers": {
        **(SERVER_BASE_COLUMNS := {
        "capture": "capture file name",
        "ip": "server address",
        "names": "names of the server with where each came from: name (source); ...",
        "roles": "control, key-exchange, media-relay, stun, peer, dns or other, '+'-joined",
        "services": "services attributed to flows to this server, '+'-joined",
        "ports": "server ports used, '+'-joined",
        "flows": "number of flows",
        "bytes": "frame bytes exchanged in both directions",
        "media_seconds": "seconds of RTP media carried (sum over streams and directions)",
        "rtt_min_ms": "smallest round trip to this server seen in the capture, ms",
        "rtt_evidence": "the flow and frames that gave it",
        "first_seen": "first packet (UTC)", "last_seen": "last packet (UTC)",
        }),
        **GEO_COLUMNS,
    },
    "coverage": COVERAGE_COLUMNS,
    "timeline": {
        "capture": "capture file name", "flow_id": "flow (see flows)",
        "second": "start of the bin (UTC)",
        "bin_seconds": "the bins' width: 1 s, or for a long capture the narrowest of 2, 10, 60, "
                       "300, 1800, 3600, 21600 and 86400 s that keeps the table under a "
                       "million rows",
        "packets": "packets in the bin (a fragmented IP datagram once)",
        "bytes": "frame bytes in the bin (IP fragments after the first: when their first "
                 "fragment came before them)",
    },
    "findings": {
        "capture": "capture file name", "severity": "high, medium, low or info",
        "kind": "machine-readable kind (sdes-keys-in-cleartext, ecb-mode, ...)",
        "title": "one-line statement", "explanation": "plain-language explanation",
        "flow_ids": "flows that are evidence, space-separated",
        "frames": "Wireshark frame numbers that are evidence, space-separated",
        "hostnames": "server names involved", "refute": "what would show the finding wrong",
    },
    "signalling": {
        "capture": "capture file name",
        "frame": "Wireshark frame number",
        "flow_id": "flow that carried the message",
        "message": "SIP method or response code",
        "call_id": "SIP Call-ID",
        "from_uri": "SIP From URI", "to_uri": "SIP To URI",
        "user_agent": "User-Agent or Server header",
        "sdp_media": "SDP m= lines: media/port/profile",
        "sdes_keys": "true when the SDP carries a=crypto keys",
    },
}


TIME_COLUMNS = ("first_seen", "last_seen")  # in the rows: nanoseconds since the epoch


Column = np.ndarray | list[Any]  # a table's column: numbers in an array, else Python values
TEXT = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' own type for a column of texts


def _columns_frame(columns: dict[str, Column], table: str) -> pd.DataFrame:
    """`_frame` of a table given as columns: arrays as they are, lists of texts straight to
    Arrow, other lists inferred as pandas infers rows. Empties `columns` as it goes (each list
    is freed once converted: a capture of 200,000 flows peaks 70 MB lower)."""
    if not len(next(iter(columns.values()))):
        return _frame([], table)  # (the empty table's types, as from no rows)
    converted = {}
    for name in list(columns):
        converted[name] = _column(columns.pop(name))
    frame = pd.DataFrame(converted, columns=list(COLUMNS[table]))
    del converted
    for column in TIME_COLUMNS:
        if column in frame:
            ns = frame[column].to_numpy(np.int64)
            frame[column] = pd.to_datetime(ns, unit="ns", utc=True)
    return frame


def _column(values: Column) -> np.ndarray | pd.Series:
    """A column as pandas takes it: an array as it is, texts through Arrow."""
    if isinstance(values, np.ndarray):
        return values
    if values and type(values[0]) is str:  # (pandas makes the same, ten times slower)
        texts = _texts_or_none(values)
        if texts is not None:
            return pd.Series(texts, dtype=TEXT)
    return pd.Series(values)


def _texts_or_none(values: list[Any]) -> pa.Array | None:
    """The values as an Arrow text array if they are texts, else None."""
    try:
        texts = pa.array(values, pa.large_string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return None  # (a number, say)
    return texts  # (a None: missing, as pandas makes it; bytes: never in these tables)


def _frame(rows: Sequence[dict[str, object]] | Sequence[tuple[object, ...]],
           table: str) -> pd.DataFrame:
    """The table from its rows (dicts, or tuples in `COLUMNS` order); its `TIME_COLUMNS`
    become UTC times (one conversion each)."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS[table]))
    for column in TIME_COLUMNS if rows else ():
        if column in frame:
            ns = frame[column].to_numpy(np.int64)
            frame[column] = pd.to_datetime(ns, unit="ns", utc=True)
    return frame


# ---------------------------------------------------------------------- flows


def build_tables(capture_name: str, flows: FlowTable, inspector: Inspector,
                 media: MediaExtractor, capture: CaptureFacts) -> dict[str, pd.DataFrame]:
    per_flow_streams: dict[int, list[StreamState]] = {}
    for stream in media.streams.values():
        per_flow_streams.setdefault(stream.flow_index, []).append(stream)
    attribution, flow_names = _attribute(flows, inspector, media, capture, per_flow_streams)
    flow_columns, flow_verdicts = _flow_columns(capture_name, flows, inspector, media,
                                                capture, attribution, flow_names,
                                                per_flow_streams)
    stream_rows = [_stream_row(capture_name, flows.flows[s.flow_index], s, media,
                               flow_verdicts[s.flow_index])
                   for s in sorted(media.streams.values(), key=_stream_order)]
    del flow_verdicts  # (a capture may have millions of flows: each step frees what it used)
    flows_df = _columns_frame(flow_columns, "flows")
    del flow_columns
    names = _names_by_server(flows, attribution, flow_names)
    signalling = [{"capture": capture_name, "flow_id": r["flow_index"] + 1,  # type: ignore[operator]
                   **{k: v for k, v in r.items() if k != "flow_index"}}
                  for r in capture.sip_messages]
    return {
        "flows": flows_df,
        "streams": _frame(stream_rows, "streams"),
        "servers": _servers(capture_name, flows_df, names, _media_seconds(stream_rows)),
        "signalling": _frame(signalling, "signalling"),
    }


def _names_by_server(flows: FlowTable, attribution: list[Attribution],
                     flow_names: list[Names]) -> dict[str, set[tuple[str, str]]]:
    """(name, source) pairs per server address, over its flows."""
    names: dict[str, set[tuple[str, str]]] = {}
    for i, flow in enumerate(flows.flows):
        if flow_names[i]:
            address = flow.address(1 - attribution[i][0].client_side)
            known = names.get(address)
            if known is None:  # (the address's DNS names once: flows share them)
                known = names[address] = {(name, source) for name, source, _ in
                                          flow_names[i].dns}
            known.update((name, source) for name, source, _ in flow_names[i].own)
    return names


def _flow_columns(capture_name: str, flows: FlowTable, inspector: Inspector,
                  media: MediaExtractor, capture: CaptureFacts,
                  attribution: list[Attribution], flow_names: list[Names],
                  per_flow_streams: dict[int, list[StreamState]]
                  ) -> tuple[dict[str, Column], list[Verdict]]:
    """The flows table's columns, and each flow's verdict. The numbers come from the flow
    table's arrays at once; what needs the flow's facts is made flow by flow."""
    client_side = np.fromiter((a[0].client_side for a in attribution), np.int64,
                              len(attribution))
    decided = [_flow_decisions(flow, inspector.facts[i], attribution[i], media,
                               per_flow_streams.get(i, []), flow_names[i])
               for i, flow in enumerate(flows.flows)]
    parts: dict[str, Column] = {
        **_flow_numbers(capture_name, flows, client_side),
        **dict(zip(FLOW_DECISIONS, map(list, zip(*decided, strict=True)) if decided
                   else ([] for _ in FLOW_DECISIONS), strict=True)),
    }
    del decided
    server_names = cast(list[str], parts["server_name"])
    verdicts = assess.verdicts(assess.flow_views(flows, inspector, media, capture, attribution,
                                                 server_names, per_flow_streams))
    parts.update(_verdict_columns(verdicts))
    if parts.keys() != COLUMNS["flows"].keys():
        raise RuntimeError("the flows table's columns differ from COLUMNS")
    return {name: parts[name] for name in COLUMNS["flows"]}, verdicts


def _flow_numbers(capture_name: str, flows: FlowTable, client_side: np.ndarray
                  ) -> dict[str, Column]:
    """The flows table's columns that are the flow table's numbers (and its addresses),
    ordered by `client_side` (0: A is the client, 1: B)."""
    table = flows.flows
    n = len(table)
    server_side = 1 - client_side
    rows = np.arange(n)
    packets, wire = flows.counters()
    ports = np.fromiter((p for f in table for p in (f.a[2], f.b[2])), np.int64,
                        2 * n).reshape(n, 2)
    first = np.fromiter((f.first_ts_ns for f in table), np.int64, n)
    last = np.fromiter((f.last_ts_ns for f in table), np.int64, n)
    sides = client_side.tolist()
    return {
        "capture": [capture_name] * n,
        "flow_id": np.fromiter((f.flow_id for f in table), np.int64, n),
        "transport": [f.transport for f in table],
        "client_ip": [f.address(c) for f, c in zip(table, sides, strict=True)],
        "client_port": ports[rows, client_side],
        "server_ip": [f.address(1 - c) for f, c in zip(table, sides, strict=True)],
        "server_port": ports[rows, server_side],
        "first_seen": first, "last_seen": last,
        # (as Python's `int / 1e9`: the difference rounded to a double, then divided)
        "duration_s": (last - first).astype(np.float64) / 1e9,
        "first_frame": np.fromiter((f.first_frame for f in table), np.int64, n),
        "packets_c2s": packets[rows, client_side], "packets_s2c": packets[rows, server_side],
        "bytes_c2s": wire[rows, client_side], "bytes_s2c": wire[rows, server_side],
    }


def _stream_order(stream: StreamState) -> tuple[int, int, int, bool]:
    return (stream.flow_index, stream.direction, stream.ssrc, stream.fec)


Names = services.ServerNames  # (name, source, frame) of a flow's server: `flow_names`
Attribution = tuple[services.Orientation, str, str, str]  # service, its evidence and basis


def _attribute(flows: FlowTable, inspector: Inspector, media: MediaExtractor,
               capture: CaptureFacts, per_flow_streams: dict[int, list[StreamState]]
               ) -> tuple[list[Attribution], list[Names]]:
    """(orientation, service, evidence text, basis) per flow, inheritance after direct
    evidence; and the names of each flow's server."""
    facts = inspector.facts
    ranges = services.flow_range_services(flows.flows)
    orientation = [services.orient(f, facts[i], capture, ranges[i])
                   for i, f in enumerate(flows.flows)]
    by_address = services.AddressNames(capture)
    names = [services.flow_names(f, 1 - orientation[i].client_side, facts[i], by_address)
             for i, f in enumerate(flows.flows)]
    evidence: list[list[Evidence]] = []
    decided: dict[int, Evidence] = {}
    for i, flow in enumerate(flows.flows):
        found = services.direct_evidence(flow, 1 - orientation[i].client_side, facts[i],
                                         names[i], by_address, ranges[i])
        if i in per_flow_streams:  # (most flows carry no media)
            found.extend(_media_evidence(per_flow_streams[i]))
        evidence.append(found)
        top = services.best([e for e in found if e.strength > services.PORT])
        if top is not None:
            decided[i] = top
    by_server = {
        (f.address(1 - orientation[i].client_side), f.port(1 - orientation[i].client_side)):
        (i, decided[i]) for i, f in enumerate(flows.flows)
        if i in decided and decided[i].strength >= services.NAME and not orientation[i].p2p
    }
    undecided = [i for i in range(len(flows.flows)) if i not in decided]
    if not capture.learned and not by_server:
        undecided = []  # (nothing to inherit from: most captures without signalling)
    for _ in range(3):  # inheritance can chain: SIP -> SDP -> RTP, STUN -> TURN -> peer
        still = []
        for i in undecided:
            flow = flows.flows[i]
            learned = services.inherited(flow, capture, decided, i) or services.same_server(
                flow, 1 - orientation[i].client_side, by_server, i)
            if learned is not None:
                evidence[i].append(learned)
                decided[i] = learned
            else:
                still.append(i)
        if len(still) == len(undecided):
            break  # (nothing learned: another round would learn nothing either)
        undecided = still
    return [_decide(orientation[i], evidence[i], facts[i])
            for i in range(len(flows.flows))], names


def _media_evidence(streams: list[StreamState]) -> list[Evidence]:
    zoom_packets = sum(sum(s.payload_types.values()) for s in streams if s.encap == 3)
    if not zoom_packets:
        return []
    return [Evidence(services.SIGNATURE, "zoom",
                     f"Zoom media encapsulation with RTP inside ({zoom_packets} packets)")]


BASIS = {SIGNATURE: "signature", NAME: "name", ADDRESS_RANGE: "address-range",
         LEARNED: "learned", PORT: "port"}  # evidence strength -> `service_basis`


def _decide(orientation: services.Orientation, evidence: list[Evidence],
            facts: FlowFacts) -> Attribution:
    top = services.best(evidence)
    if top is None:
        service = services.fallback_service(facts)
        return orientation, service, "", "none" if service == "other" else "protocols"
    return orientation, top.service, services.describe(evidence, top.service), BASIS[top.strength]


FLOW_DECISIONS = ("p2p", "orientation", "service", "service_evidence", "service_basis",
                  "protocols", "media", "server_name", "server_name_source", "tls_version",
                  "rtt_min_ms", "rtt_evidence", "decode_problems")  # `_flow_decisions`


def _flow_decisions(flow: Flow, facts: FlowFacts, attribution: Attribution,
                    media: MediaExtractor, streams: list[StreamState], names: Names
                    ) -> tuple[object, ...]:
    """The `FLOW_DECISIONS` columns of one flow, in that order."""
    orientation, service, evidence_text, basis = attribution
    name, name_source = _server_name(names)
    return (
        orientation.p2p, f"client {orientation.reason}",
        service, evidence_text, basis,
        _protocols(flow, facts, media, streams),
        "+".join(sorted({k for st in streams for k in media.media_kind(st).split("+")
                         if k})) if streams else "",
        name, name_source,
        _tls_version(facts),
        min(r.rtt_ms for r in facts.rtt) if facts.rtt else math.nan,
        _rtt_evidence(facts),
        _decode_problems(facts),
    )


def _decode_problems(facts: FlowFacts) -> str:
    more = f"; and {facts.damage_more} more" if facts.damage_more else ""
    return "; ".join(facts.damage) + more


def _rtt_evidence(facts: FlowFacts) -> str:
    if not facts.rtt:
        return ""
    best = min(facts.rtt, key=lambda r: r.rtt_ms)
    return f"{best.kind} frames {best.request_frame}->{best.response_frame}"


NAME_RANK = {"tls-sni": 0, "quic-sni": 0, "dtls-sni": 0, "dns": 1}  # the server name's source


def _server_name(names: Names) -> tuple[str, str]:
    """The best of the server's names (the first of the best-ranked source) and its source."""
    if not names:
        return "", ""
    # (the DNS names all rank alike: only the first can be the first of the best)
    name, source, _ = min(itertools.chain(names.own, names.dns[:1]),
                          key=lambda n: NAME_RANK.get(n[1], 2))
    return name, source


def _tls_version(facts: FlowFacts) -> str:
    for hs in (facts.tls, facts.dtls, facts.quic):
        if hs is not None and hs.version:
            return version_name(hs.version)
    return "QUIC" if facts.quic is not None else ""


def _protocols(flow: Flow, facts: FlowFacts, media: MediaExtractor,
               streams: list[StreamState]) -> str:
    found = set(facts.protocols)
    index = flow.flow_id - 1
    counts = media.rtcp_packets  # (empty in most captures: no look-ups then)
    rtcp = bool(counts) and bool(counts.get((index, 0)) or counts.get((index, 1)))
    if streams or rtcp:
        trailers = media.srtcp_packets
        srtcp_trailer = bool(trailers.get((index, 0)) or trailers.get((index, 1)))
        secure = srtcp_trailer or _srtp_evidence(facts, media, streams)  # one SRTP context
        if streams:
            found.add("srtp" if secure else "rtp")
        if rtcp:
            found.add("srtcp" if secure else "rtcp")
    if flow.transport == "tcp" and not found:
        found.add("tcp")
    return _protocol_text(frozenset(found))


@functools.lru_cache(maxsize=1 << 12)  # (few distinct sets, many flows)
def _protocol_text(found: frozenset[str]) -> str:
    """The protocols '+'-joined: those of PROTOCOL_ORDER in its order, then the rest sorted."""
    return "+".join([p for p in PROTOCOL_ORDER if p in found]
                    + sorted(found.difference(PROTOCOL_ORDER)))


def _srtp_evidence(facts: FlowFacts, media: MediaExtractor, streams: list[StreamState]) -> bool:
    """RTP on this flow is SRTP: DTLS-SRTP, ZRTP, or SDP said SAVP / a=crypto / a=fingerprint."""
    if (facts.dtls is not None and facts.dtls.srtp_profile >= 0) or facts.zrtp_messages:
        return True
    for stream in streams:
        sdp = media.sdp_for(stream)
        if sdp is not None and ("SAVP" in sdp.proto.upper() or sdp.sdes_suites
                                or sdp.fingerprint):
            return True
    return False


# ---------------------------------------------------------------------- streams


def _ecb_columns(result: EcbResult | None) -> dict[str, object]:
    if result is None:
        return {"ecb_verdict": "", "ecb_confidence": "", "ecb_repeats": 0,
                "ecb_blocks_examined": 0, "ecb_repeat_rate": math.nan,
                "ecb_expected_random": math.nan, "ecb_examples": ""}
    return {"ecb_verdict": result.verdict, "ecb_confidence": result.confidence,
            "ecb_repeats": result.repeated_blocks, "ecb_blocks_examined": result.blocks_examined,
            "ecb_repeat_rate": result.repeat_rate,
            "ecb_expected_random": result.expected_repeats_random,
            "ecb_examples": "; ".join(f"{a}/{b}" for a, b in result.examples)}


def _verdict_columns(verdicts: list[Verdict]) -> dict[str, Column]:
    """The flows table's verdict columns."""
    return {
        "encryption": [v.encryption for v in verdicts],
        "encryption_detail": [v.detail for v in verdicts],
        "encryption_basis": [v.basis for v in verdicts],
        "key_exchange": [v.key_exchange for v in verdicts],
        "key_exchange_detail": [v.key_exchange_detail for v in verdicts],
        "readable_by": [v.readable_by for v in verdicts],
        "protection": [v.protection for v in verdicts],
        "protection_note": [v.protection_note for v in verdicts],
        "weak_reasons": ["; ".join(v.weak_reasons) for v in verdicts],
    }


def _stream_row(capture_name: str, flow: Flow, stream: StreamState,
                media: MediaExtractor, verdict: Verdict) -> dict[str, object]:
    stats = media.statistics(stream)
    d = stream.direction
    pt = max(stream.payload_types, key=lambda p: stream.payload_types[p])
    return {
        "capture": capture_name, "flow_id": flow.flow_id,
        "src_ip": flow.address(d), "src_port": flow.port(d),
        "dst_ip": flow.address(1 - d), "dst_port": flow.port(1 - d),
        "ssrc": f"0x{stream.ssrc:08x}", "payload_type": pt,
        "encapsulation": ("rtp", "turn-channel", "ms-turn", "zoom")[stream.encap]
        + ("-fec" if stream.fec else ""),
        "media": media.media_kind(stream),
        "clock_rate": stream.clock_rate if stream.clock_rate else pd.NA,
        "clock_rate_source": stream.clock_rate_source,
        "packets": stats.packets, "expected": stats.expected, "lost": stats.lost,
        "loss_pct": stats.loss_pct, "duplicates": stats.duplicates,
        "out_of_order": stats.out_of_order, "jitter_mean_ms": stats.jitter_mean_ms,
        "jitter_max_ms": stats.jitter_max_ms, "delta_max_ms": stats.delta_max_ms,
        "bitrate_kbps": stats.bitrate_kbps, "duration_s": stats.duration_s,
        "first_seen": int(stats.first_seen * 1e9), "last_seen": int(stats.last_seen * 1e9),
        "first_frame": stats.first_frame,
        **_ecb_columns(media.ecb_result(stream)),
        "encryption": verdict.encryption, "encryption_detail": verdict.detail,
        "key_exchange": verdict.key_exchange, "protection": verdict.protection,
    }


# ---------------------------------------------------------------------- servers


ROLE_ORDER = ("control", "key-exchange", "media-relay", "stun", "peer", "dns", "other")


MEDIA_PROTOCOLS = frozenset({"rtp", "srtp", "rtcp", "srtcp", "zoom"})
CONTROL_PROTOCOLS = frozenset({"tls", "quic", "sip", "whatsapp"})


@functools.lru_cache(maxsize=1 << 12)  # (few distinct combinations, many flows)
def flow_roles(protocols: str, service: str, p2p: bool, key_exchange: str) -> frozenset[str]:
    """The roles (`ROLE_ORDER`) the server side of a flow plays."""
    found = set(protocols.split("+"))
    roles = set()
    if "dns" in found:
        roles.add("dns")
    if found & CONTROL_PROTOCOLS and service != "other":
        roles.add("control")
    if p2p:
        roles.add("peer")
    else:
        if key_exchange == "dtls-srtp":
            roles.add("key-exchange")
        if found & MEDIA_PROTOCOLS or "turn" in found:
            roles.add("media-relay")
    if "stun" in found and not roles:
        roles.add("stun")
    return frozenset(roles or {"other"})


def _media_seconds(stream_rows: list[dict[str, object]]) -> dict[int, float]:
    """Seconds of RTP media per flow id (sum over the flow's streams and directions)."""
    seconds: dict[int, float] = {}
    for row in stream_rows:
        flow_id = int(row["flow_id"])  # type: ignore[call-overload]
        seconds[flow_id] = seconds.get(flow_id, 0.0) + float(row["duration_s"] or 0.0)  # type: ignore[arg-type]
    return seconds


def _servers(capture_name: str, flows: pd.DataFrame, names: dict[str, set[tuple[str, str]]],
             media_seconds: dict[int, float]) -> pd.DataFrame:
    if flows.empty:
        return pd.DataFrame(columns=list(SERVER_BASE_COLUMNS))
    data = flows.assign(volume=flows["bytes_c2s"] + flows["bytes_s2c"],
                        rtt=flows["rtt_min_ms"].astype(float),
                        media=flows["flow_id"].map(media_seconds).fillna(0.0))
    out = data.groupby("server_ip", sort=True).agg(
        flows=("flow_id", "size"), bytes=("volume", "sum"), media_seconds=("media", "sum"),
        rtt_min_ms=("rtt", "min"), first_seen=("first_seen", "min"),
        last_seen=("last_seen", "max"))
    server = out.index.get_indexer(data["server_ip"])  # each flow's row in `out`
    count = len(out)
    for column, texts in (
            ("services", _joined(server, data["service"].to_numpy(dtype=object), count)),
            ("ports", _joined(server, data["server_port"].to_numpy(dtype=np.int64), count)),
            ("rtt_evidence", _fastest_evidence(server, data, count)),
            ("roles", _roles(server, data, count)), ("names", _name_texts(out.index, names))):
        out[column] = _as_text_column(texts)
    out = out.reset_index().rename(columns={"server_ip": "ip"})
    out["capture"] = capture_name
    return out[list(SERVER_BASE_COLUMNS)]


_INFERRED_TEXT = pd.Series(["text"]).dtype  # what pandas makes of a list of str


def _as_text_column(texts: pa.Array | np.ndarray) -> pd.api.extensions.ExtensionArray | list[str]:
    """Text as pandas would have inferred it from a list of str: Arrow-backed `str` (taken
    without a copy), or object when pandas' string inference is switched off."""
    if isinstance(_INFERRED_TEXT, pd.StringDtype) and _INFERRED_TEXT.storage == "pyarrow":
        arrow = texts if isinstance(texts, pa.Array) else pa.array(texts, pa.large_string())
        return pd.array(arrow, dtype=_INFERRED_TEXT)
    return texts.to_pylist() if isinstance(texts, pa.Array) else texts.tolist()


def _joined(server: np.ndarray, values: np.ndarray, count: int) -> pa.Array:
    """Per server (0..count-1, each with a flow): the distinct values of its flows, in
    ascending order, joined by '+'; grouped and joined by Arrow, not per server."""
    pairs = pd.DataFrame({"server": server, "value": values}).drop_duplicates()
    pairs = pairs.sort_values(["server", "value"], kind="stable")
    texts = pa.array(pairs["value"].tolist()) if values.dtype == object else pa.array(
        pairs["value"].to_numpy())
    bounds = np.searchsorted(pairs["server"].to_numpy(), np.arange(count + 1))
    lists = pa.LargeListArray.from_arrays(pa.array(bounds, pa.int64()),
                                          pc.cast(texts, pa.large_string()))
    return pc.binary_join(lists, pa.scalar("+", pa.large_string()))


def _fastest_evidence(server: np.ndarray, data: pd.DataFrame, count: int) -> np.ndarray:
    """Per server: 'flow N: evidence' of its fastest round trip (ties: the lower flow id)."""
    texts = np.full(count, "", dtype=object)
    timed = np.flatnonzero(~np.isnan(data["rtt"].to_numpy()))
    if timed.size:
        rtt, flow_id = data["rtt"].to_numpy()[timed], data["flow_id"].to_numpy()[timed]
        order = timed[np.lexsort((flow_id, rtt, server[timed]))]
        first = order[np.flatnonzero(np.diff(server[order], prepend=-1))]
        evidence = data["rtt_evidence"].to_numpy(dtype=object)
        ids = data["flow_id"].to_numpy()
        texts[server[first]] = [f"flow {ids[i]}: {evidence[i]}" for i in first.tolist()]
    return texts


def _roles(server: np.ndarray, data: pd.DataFrame, count: int) -> np.ndarray:
    """Per server: the roles its flows give it (`flow_roles`), in ROLE_ORDER, joined by '+'.
    Each distinct flow kind is looked up once; a server's roles are a bit mask."""
    kinds = data[["protocols", "service", "p2p", "key_exchange"]]
    codes, distinct = pd.factorize(pd.MultiIndex.from_frame(kinds))
    masks = np.array([_role_mask(flow_roles(str(p), str(s), bool(p2p), str(k)))
                      for p, s, p2p, k in distinct], np.int64)
    per_server = np.zeros(count, np.int64)
    np.bitwise_or.at(per_server, server, masks[codes])
    return np.array([_ROLE_TEXT[m] for m in range(1 << len(ROLE_ORDER))],
                    dtype=object)[per_server]


def _role_mask(roles: frozenset[str]) -> int:
    return sum(1 << i for i, role in enumerate(ROLE_ORDER) if role in roles)


_ROLE_TEXT = ["+".join(r for i, r in enumerate(ROLE_ORDER) if mask >> i & 1)
              for mask in range(1 << len(ROLE_ORDER))]


def _name_texts(servers: pd.Index, names: dict[str, set[tuple[str, str]]]) -> np.ndarray:
    """Per server: its names as 'name (source); ...', sorted ('' for most servers)."""
    texts = np.full(len(servers), "", dtype=object)
    named = [ip for ip in names if names[ip]]
    for at, ip in zip(servers.get_indexer(named).tolist(), named, strict=True):
        if at >= 0:
            texts[at] = "; ".join(f"{n} ({src})" for n, src in sorted(names[ip]))
    return texts


# ---------------------------------------------------------------------- writing

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_BYTES = np.frombuffer("".join(FORMULA_PREFIXES).encode(), np.uint8)


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a quote (OWASP)."""
    out = frame.copy(deep=False)  # (copy-on-write: replaced columns never touch `frame`)
    for column in out.columns:
        if _formula_like(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v)
    return out


def _formula_like(values: pd.Series) -> bool:
    """Does a text cell of the column start like a formula? (Arrow text: its first bytes)"""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return _starts_like_formula(pa.chunked_array(pa.array(values.array)))
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        return any(isinstance(v, str) and v.startswith(FORMULA_PREFIXES) for v in values)
    return False


def _starts_like_formula(texts: pa.ChunkedArray) -> bool:
    """Does a cell start with one of FORMULA_PREFIXES (each a single ASCII byte)?"""
    for chunk in texts.chunks:
        offsets, data = _offsets_and_data(chunk)
        starts = offsets[:-1][offsets[1:] > offsets[:-1]]  # of the non-empty cells (nulls too)
        if starts.size and np.isin(data[starts], _FORMULA_BYTES).any():
            return True
    return False


def _offsets_and_data(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (int64, one past each cell) and its bytes."""
    large = texts.cast(pa.large_string())
    offsets = np.frombuffer(large.buffers()[1], np.int64)[large.offset:][: len(large) + 1]
    data = large.buffers()[2]
    return offsets, np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)



def _csv_ready(table: pd.DataFrame) -> pd.DataFrame:
    """The table as `to_csv` should get it: formulas neutralized, UTC times as their text."""
    out = neutralize_formulas(table)
    for column in out.columns:
        dtype = out[column].dtype
        if isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC":
            text = utc_text(out[column])
            if text is not None:
                out[column] = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([text])),
                                        index=out.index)
    return out


def utc_text(times: pd.Series) -> pa.Array | None:
    """UTC times written as `to_csv` writes them, '2024-05-14 13:00:00.000279+00:00' with as
    many decimals as the most precise time needs (0, 3, 6 or 9), NaT as ''. Each distinct
    time is formatted once, vectorized (pandas formats time by time), into an Arrow array.
    None for years outside 1000-9999, left to pandas."""
    codes, distinct = pd.factorize(times.dt.tz_localize(None).to_numpy())
    stamps = np.asarray(distinct)
    if stamps.size == 0:
        return pa.array([""] * codes.size, pa.large_string())
    years = stamps.astype("datetime64[Y]").astype(np.int64) + 1970
    if years.min() < 1000 or years.max() > 9999:
        return None
    texts = pa.concat_arrays([_time_texts(stamps, _coarsest_unit(stamps)), _TEXT_ARRAY[""]])
    return pc.take(texts, pa.array(np.where(codes < 0, stamps.size, codes)))  # (NaT: '')


def _time_texts(stamps: np.ndarray, unit: TimeUnit) -> pa.Array:
    """'YYYY-MM-DD HH:MM:SS[.fraction]+00:00' of each time (years 1000-9999; the fraction in
    `unit`), written digit by digit into one block of bytes: all have the same width."""
    days = stamps.astype("datetime64[D]")
    months = stamps.astype("datetime64[M]")
    ticks = (stamps.astype(f"datetime64[{unit}]") - days).astype(np.int64)  # since midnight
    seconds, fraction = np.divmod(ticks, _TICKS_PER_SECOND[unit])
    fields: list[tuple[np.ndarray, int] | str] = [
        (months.astype(np.int64) // 12 + 1970, 4), "-", (months.astype(np.int64) % 12 + 1, 2),
        "-", ((days - months).astype(np.int64) + 1, 2), " ", (seconds // 3600, 2), ":",
        (seconds // 60 % 60, 2), ":", (seconds % 60, 2)]
    if unit != "s":
        fields += [".", (fraction, len(str(_TICKS_PER_SECOND[unit])) - 1)]
    columns: list[np.ndarray] = []
    for item in [*fields, "+00:00"]:
        if isinstance(item, str):
            columns.extend(np.full(stamps.size, ord(c), np.uint8) for c in item)
        else:
            value, width = item
            columns.extend((value // 10 ** (width - 1 - k) % 10 + 48).astype(np.uint8)
                           for k in range(width))
    width = len(columns)
    offsets = np.arange(stamps.size + 1, dtype=np.int64) * width
    return pa.LargeStringArray.from_buffers(stamps.size, pa.py_buffer(offsets),
                                            pa.py_buffer(np.column_stack(columns).tobytes()))


_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


TimeUnit = Literal["s", "ms", "us", "ns"]
_UNITS: tuple[TimeUnit, ...] = ("s", "ms", "us", "ns")


def _coarsest_unit(stamps: np.ndarray) -> TimeUnit:
    """The coarsest of s, ms, us, ns in which every time is whole."""
    for unit in _UNITS:
        if (stamps.astype(f"datetime64[{unit}]") == stamps).all():
            return unit
    return _UNITS[-1]


def write_outputs(tables: dict[str, pd.DataFrame], summary: dict[str, object],
                  outdir: Path, findings: list[dict[str, object]] | None = None,
                  before_summary: Callable[[], None] | None = None) -> list[Path]:
    """Write every table as CSV and Parquet, summary.json and findings.json; each file
    appears atomically (`OutputWriter`)."""
    with OutputWriter(outdir) as writer:
        for name, table in tables.items():
            writer.add(name, table)
        return writer.commit(summary, findings, before_summary)


class OutputWriter:
    """An analysis' files, written into a staging folder in `outdir` as its tables become
    final, and moved into `outdir` together by `commit`. Tables are written on threads, CSV on
    one and Parquet on another: Arrow and the kernel do most of that without the GIL, so a
    table is written while the analysis goes on (geolocation, findings). Leaving without a
    commit (an error) removes what was written, and `outdir` if it was made here and is empty.
    """

    def __init__(self, outdir: Path) -> None:
        self._outdir = outdir
        self._made_outdir = False
        self._staging: Path | None = None  # (made with the first table: a failed analysis
        # leaves nothing behind)
        self._threads = {kind: ThreadPoolExecutor(1, thread_name_prefix=f"confscope-{kind}")
                         for kind in ("csv", "parquet")}
        self._pending: list[tuple[str, Future[None]]] = []  # (file name, its writing)
        self.names: list[str] = []  # the tables added, in order

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, name: str, table: pd.DataFrame) -> None:
        """Start writing `table` as `name`.csv and `name`.parquet."""
        staging = self._staging_folder()
        self.names.append(name)
        table = table.copy(deep=False)  # (the threads' own frame of the same columns: the
        # caller's may go on being read, and pandas may reorganize a frame that is read)
        self._pending.append((f"{name}.parquet", self._threads["parquet"].submit(
            _write_parquet, table, staging / f"{name}.parquet")))
        self._pending.append((f"{name}.csv", self._threads["csv"].submit(
            _write_csv_file, table, staging / f"{name}.csv")))

    def commit(self, summary: dict[str, object], findings: list[dict[str, object]] | None = None,
               before_summary: Callable[[], None] | None = None) -> list[Path]:
        """Wait for the tables, write summary.json and findings.json, and move every file into
        `outdir`. `before_summary` runs once the tables are written, before the summary is (the
        CLI collects the capture hashes there: they finish while the tables are written); if
        it raises, nothing appears. A file that cannot be written (a full disk) is a
        ConfscopeError naming it."""
        staging = self._staging_folder()
        for name, done in self._pending:
            with self._naming(name):
                done.result()
        if before_summary is not None:
            before_summary()
        with self._naming("summary.json"):
            (staging / "summary.json").write_text(
                json.dumps(summary, indent=2, default=str) + "\n")
        if findings is not None:
            document = {"format_version": summary.get("format_version"), "findings": findings}
            with self._naming("findings.json"):
                (staging / "findings.json").write_text(json.dumps(document, indent=2) + "\n")
        written = []
        for item in sorted(staging.iterdir()):
            os.replace(item, self._outdir / item.name)
            written.append(self._outdir / item.name)
        self._made_outdir = False  # (it is the outputs' now)
        return written

    def close(self) -> None:
        """Stop the threads (after the table being written) and remove the staging folder."""
        for threads in self._threads.values():
            threads.shutdown(wait=True, cancel_futures=True)
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._made_outdir:
            with contextlib.suppress(OSError):  # (not empty: it holds the outputs)
                self._outdir.rmdir()

    @contextlib.contextmanager
    def _naming(self, name: str) -> Iterator[None]:
        """An OSError while writing output `name` as one line that names it (pyarrow's and a
        failed write's name no file)."""
        try:
            yield
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfscopeError(f"{self._outdir}: cannot write {name} ({why})") from None

    def _staging_folder(self) -> Path:
        if self._staging is None:
            self._made_outdir = not self._outdir.exists()
            self._outdir.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=".confscope-", dir=self._outdir))
        return self._staging


def _write_csv_file(table: pd.DataFrame, path: Path) -> None:
    write_csv(_csv_ready(table), path)


CSV_QUOTED_BYTES = b',"\r\n'  # cells with one of these are quoted
# (as \xhh escapes, which Python's re and Arrow's RE2 both read)
CSV_QUOTED = re.compile("[" + "".join(f"\\x{b:02x}" for b in CSV_QUOTED_BYTES) + "]")
CSV_CHUNK_ROWS = 1 << 16


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """`table.to_csv(path, index=False)` as pandas writes it (RFC 4180, minimal quoting, floats
    as repr, missing values empty), but also quoting cells with a carriage return: Python's csv
    module leaves them bare when lines end in LF, so a CR from a capture (an SNI, a DNS name)
    split the row in two for every reader. A chunk of rows at a time (bounded memory), each
    column becomes an Arrow array of its cells' text and Arrow joins them into lines: no
    Python string per cell (a busy capture's tables: 5-6 times faster than the csv module)."""
    header = ",".join(_csv_quote(str(name)) for name in table.columns)
    with path.open("wb") as out:
        out.write(header.encode() + b"\n")
        for start in range(0, len(table), CSV_CHUNK_ROWS):
            part = table.iloc[start : start + CSV_CHUNK_ROWS]
            cells = [_csv_cells(part[column]) for column in part.columns]
            if len(cells) == 1:  # (a lone empty cell is written "": the row is not blank)
                cells = [pc.if_else(pc.equal(cells[0], ""), _TEXT['""'], cells[0])]
            out.write(_lines(cells))
            out.write(b"\n")


def _lines(cells: list[pa.Array]) -> pa.Buffer:
    """The CSV lines of parallel columns of cell texts, newline-separated."""
    rows = cells[0] if len(cells) == 1 else pc.binary_join_element_wise(
        *cells, pa.scalar(",", pa.large_string()))
    whole = pa.LargeListArray.from_arrays(pa.array([0, len(rows)], pa.int64()), rows)
    return pc.binary_join(whole, pa.scalar("\n", pa.large_string()))[0].as_buffer()


def _csv_quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if CSV_QUOTED.search(text) else text


def _csv_cells(column: pd.Series) -> pa.Array:
    """The column's cells as CSV text (an Arrow string array), quoted where needed."""
    dtype = column.dtype
    missing = column.isna().to_numpy()
    if dtype == np.int64 or isinstance(dtype, pd.Int64Dtype):
        text = pc.cast(pa.array(column.to_numpy(dtype=np.int64, na_value=0)), pa.large_string())
    elif dtype == np.float64:
        text = _float_cells(column.to_numpy())
    elif dtype == np.bool_:
        text = pc.if_else(pa.array(column.to_numpy()), _TEXT["True"], _TEXT["False"])
    elif dtype.kind == "M" or dtype.kind == "m":  # times left as they are: as pandas writes
        csv_text = column.to_frame().to_csv(index=False, header=False)
        text = pa.array([row[0] if row else "" for row in csv.reader(io.StringIO(csv_text))],
                        pa.large_string())
        return _quoted(text)
    elif isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return _quoted(pc.fill_null(pa.array(column.array).cast(pa.large_string()), ""))
    else:
        return _quoted(_text_cells(column.to_numpy(dtype=object), missing))
    return pc.if_else(pa.array(missing), _TEXT[""], text) if missing.any() else text


_TEXT = {text: pa.scalar(text, pa.large_string()) for text in ("", '""', "True", "False")}
_TEXT_ARRAY = {"": pa.array([""], pa.large_string())}


def _float_cells(values: np.ndarray) -> pa.Array:
    """Floats as Python's repr (numpy's text), each distinct value formatted once (told apart
    by their bits: -0.0 is not 0.0)."""
    codes, distinct = pd.factorize(values.view(np.int64))  # (float64: `_csv_cells` checks)
    texts = np.asarray(distinct).view(np.float64).astype(str)
    return pc.take(pa.array(texts.tolist(), pa.large_string()), pa.array(codes))


def _text_cells(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    """An object column's cells: text as it is (Arrow takes it at once when it is all text),
    other values as the csv module writes them, missing ones empty."""
    values = values.copy()
    values[missing] = ""
    try:
        return pa.array(values, pa.large_string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # (not all text)
        return pa.array([v if type(v) is str else _cell_text(v) for v in values.tolist()],
                        pa.large_string())


def _quoted(texts: pa.Array) -> pa.Array:
    """The cells that need it quoted, with their quotes doubled."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not _has_quoted_bytes(texts):  # (most columns: one scan of their bytes, no regex)
        return texts
    need = pc.match_substring_regex(texts, CSV_QUOTED.pattern)
    quote = pa.scalar('"', pa.large_string())
    quoted = pc.binary_join_element_wise(quote, pc.replace_substring(texts, '"', '""'), quote,
                                         _TEXT[""])
    return pc.if_else(need, quoted, texts)


def _has_quoted_bytes(texts: pa.Array) -> bool:
    """Does any cell hold a byte that gets its cell quoted?"""
    offsets, data = _offsets_and_data(texts)
    text = data[offsets[0]:offsets[-1]].tobytes() if offsets.size else b""
    return any(bytes([byte]) in text for byte in CSV_QUOTED_BYTES)


def _cell_text(value: object) -> str:
    """A cell's text as the csv module writes a Python value (numpy scalars as the Python
    value they hold)."""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value)


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    _parquet_ready(table).to_parquet(path, index=False)


def _parquet_ready(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy(deep=False)  # (copy-on-write: replaced columns never touch `table`)
    for column in out.columns:
        if out[column].dtype == object:
            sample = out[column].dropna()
            if len(sample) and all(isinstance(v, bool | np.bool_) for v in sample):
                out[column] = out[column].astype("boolean")
            elif len(sample) and all(isinstance(v, int | np.integer) for v in sample):
                out[column] = out[column].astype("Int64")
    return out


def columns_markdown() -> str:
    """docs/tables.md: every output table and column (`python -m analyzer.tables`)."""
    lines = ["# Output tables", "",
             "Generated by `python -m analyzer.tables > docs/tables.md` from `COLUMNS` in "
             "`analyzer/tables.py`; a test keeps the two equal. Each table is written as "
             "`<table>.csv` and `<table>.parquet`. Times are UTC; `_ms`, `_s`, `_kbps` name "
             "units. Frame numbers are Wireshark's (1-based, in file order).", ""]
    for table, columns in COLUMNS.items():
        lines += [f"## {table}", "", "| column | meaning |", "|---|---|"]
        lines += [f"| `{name}` | {meaning} |" for name, meaning in columns.items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(columns_markdown(), end="")
