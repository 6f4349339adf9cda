"""What a reader must know, in plain language, each with evidence and what would refute it.

Findings and coverage are computed from the output tables alone (flows, streams, signalling),
so `confscope report` can rebuild them from a folder of tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Self

import numpy as np
import pandas as pd

from analyzer.frames import distinct_texts

SEVERITY_ORDER = ("high", "medium", "low", "info")
VERDICTS = ("encrypted", "weak", "cleartext", "unknown")


@dataclass(frozen=True, slots=True)
class Finding:
    capture: str
    severity: str  # high | medium | low | info
    kind: str
    title: str
    explanation: str
    flow_ids: tuple[int, ...]
    frames: tuple[int, ...]  # Wireshark frame numbers
    hostnames: tuple[str, ...] = ()
    values: dict[str, str] = field(default_factory=dict)
    refute: str = ""

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["evidence"] = {k: data.pop(k) for k in ("flow_ids", "frames", "hostnames", "values")}
        return data


def _ids(rows: pd.DataFrame) -> tuple[int, ...]:
    return tuple(int(v) for v in rows["flow_id"])


def _frames(rows: pd.DataFrame) -> tuple[int, ...]:
    return tuple(int(v) for v in rows["first_frame"])


def _names(rows: pd.DataFrame) -> tuple[str, ...]:
    distinct = rows["server_name"].dropna().unique()  # (one pass in Arrow, not per row)
    return tuple(sorted({str(n) for n in distinct if isinstance(n, str) and n}))


def _servers(rows: pd.DataFrame) -> str:
    pairs = zip(rows["server_ip"].tolist(), rows["server_port"].tolist(), strict=True)
    return ", ".join(sorted({f"{ip}:{port}" for ip, port in pairs}))


Rule = Callable[[str, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame],
                Iterator[Finding]]


def sdes_in_cleartext(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                      signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    media = flows[flows["key_exchange"] == "sdes-cleartext"]
    if media.empty:
        return
    sip = signalling[signalling["sdes_keys"].astype(bool)]
    frames = tuple(int(f) for f in sip["frame"])
    yield Finding(
        capture, "high", "sdes-keys-in-cleartext",
        f"SRTP keys sent in cleartext SIP (frames {', '.join(map(str, frames))})",
        "The call's media is encrypted with SRTP, but the keys were sent in unencrypted SIP "
        "messages (SDP a=crypto lines). Anyone who has this capture, or could watch the "
        "network, can decrypt the call.",
        tuple(sorted(set(_ids(media)) | {int(v) for v in sip["flow_id"]})), frames, (),
        {"media_servers": _servers(media)},
        "The SIP messages were protected on the wire in a way the capture does not show (for "
        "example captured inside a VPN endpoint), or the keys in the SDP are not the ones used.")


def ecb_mode(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
             signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    if "ecb_verdict" not in streams:
        return
    hits = streams[streams["ecb_verdict"] == "ecb"]
    if hits.empty:
        return
    examples = "; ".join(str(e) for e in hits["ecb_examples"] if e)
    frames = tuple(sorted({int(f) for e in hits["ecb_examples"] if e
                           for pair in str(e).split(";") for f in pair.split("/") if f.strip()}))
    yield Finding(
        capture, "high", "ecb-mode",
        "Media encrypted with AES in ECB mode: identical plaintext blocks are visible as "
        "identical ciphertext",
        "In ECB mode the same 16 bytes of sound or picture always encrypt to the same 16 "
        "bytes, so patterns (silence, still parts of the picture) show through the encryption. "
        f"Repeated ciphertext blocks were found in {len(hits)} stream(s); a sound cipher mode "
        "would practically never repeat a block. Example frame pairs: " + examples + ".",
        tuple(sorted({int(v) for v in hits["flow_id"]})), frames, (),
        {"repeated_blocks": str(int(hits["ecb_repeats"].sum())),
         "repeat_rate": ", ".join(f"{r:.3f}" for r in hits["ecb_repeat_rate"]),
         "expected_by_chance": f"{float(hits['ecb_expected_random'].max()):.1e}",
         "confidence": ", ".join(sorted(set(hits["ecb_confidence"])))},
        "The repeated blocks are unencrypted header bytes the analysis failed to strip "
        "(check the example frames in Wireshark: the repeats should sit at varying offsets).")


def cleartext_media(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                    signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    rows = flows[(flows["encryption"] == "cleartext") & flows["protocols"].str.contains(
        r"\brtp\b", regex=True)]
    if rows.empty:
        return
    yield Finding(
        capture, "high", "cleartext-media",
        f"Call media sent without encryption ({len(rows)} flow(s))",
        "These RTP streams carry audio or video with no sign of SRTP: no DTLS handshake, no "
        "keys in the signalling, no SRTP profile. The content can be played back from the "
        "capture.", _ids(rows), _frames(rows), _names(rows), {"servers": _servers(rows)},
        "An encryption layer the capture cannot see (e.g. an IPsec or VPN tunnel between the "
        "capture point and the peer).")


def weak_protection(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                    signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    rows = flows[(flows["encryption"] == "weak")
                 & ~flows["key_exchange"].isin(["sdes-cleartext"])
                 & ~flows["weak_reasons"].str.contains("ECB", na=False)]
    for reasons, group in rows.groupby("weak_reasons"):
        null = "NULL" in str(reasons)
        yield Finding(
            capture, "high" if null else "medium", "weak-encryption",
            f"Weak encryption: {reasons}",
            "These connections are encrypted, but with a protocol version or cipher that is "
            "deprecated or does not protect confidentiality "
            f"({', '.join(sorted(set(group['encryption_detail'])))}).",
            _ids(group), _frames(group), _names(group), {"servers": _servers(group)},
            "The handshake frames show a different negotiated version or cipher.")


def cleartext_signalling(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                         signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    rows = flows[(flows["encryption"] == "cleartext") & flows["protocols"].str.contains("sip")]
    if rows.empty:
        return
    yield Finding(
        capture, "medium", "cleartext-signalling",
        "Call signalling (SIP) readable: who called whom, when, and with which media",
        "SIP messages travel without TLS, so caller and callee addresses, user agents and the "
        "media addresses can be read from the capture.", _ids(rows),
        tuple(int(f) for f in signalling["frame"][:20]), _names(rows),
        {"servers": _servers(rows)}, "The SIP traffic is protected by a layer the capture "
        "does not show.")


def service_held_keys(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                      signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    rows = flows[flows["protection"] == "service-held-keys"]
    for service, group in rows.groupby("service"):
        yield Finding(
            capture, "medium", "service-can-decrypt",
            f"{service}: the service can decrypt this meeting's media",
            "The media is encrypted, but the keys come from the service's own servers (or its "
            "signalling), not from a key agreement between participants. Unless an end-to-end "
            "mode is switched on, which a capture cannot show, the service can read it. "
            f"{group['key_exchange_detail'].iloc[0]}", _ids(group), _frames(group),
            _names(group), {"servers": _servers(group)},
            "Client-side evidence that end-to-end encryption was on (e.g. Zoom's E2EE "
            "indicator and security code).")


def hop_by_hop_media(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                     signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    rows = flows[(flows["protection"] == "hop-by-hop")
                 & flows["protocols"].str.contains("srtp|rtp", regex=True)]
    if rows.empty:
        return
    yield Finding(
        capture, "info", "hop-by-hop-media",
        f"Media encrypted only to the server ({_servers(rows)})",
        "Media keys were agreed with a relay or media server, which decrypts the media and "
        "can read it before passing it on.", _ids(rows), _frames(rows), _names(rows),
        {"servers": _servers(rows)},
        "An end-to-end layer inside the SRTP payload (SFrame, insertable streams), visible only "
        "from the clients.")


def unknown_flows(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                  signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    # (the columns read: a busy capture has a hundred thousand such rows of 40 columns)
    rows = flows.loc[flows["encryption"] == "unknown", ["flow_id", "first_frame", "server_name"]]
    if rows.empty:
        return
    yield Finding(
        capture, "low", "not-assessed",
        f"{len(rows):,} flow(s) could not be assessed",
        "No handshake, signalling or known protocol structure was seen on these flows, so "
        "confscope does not say whether they were encrypted.", _ids(rows.head(50)),
        _frames(rows.head(50)), _names(rows), {},
        "A capture of these flows from their start (a connection caught mid-way shows no "
        "handshake), or a decoder for their protocol, would let them be assessed.")


ROLE_WORDS = {"control": "control server", "key-exchange": "key-exchange endpoint",
              "media-relay": "media relay", "stun": "STUN server", "peer": "peer",
              "dns": "DNS server", "other": "server"}


def _role_words(roles: str, services: str) -> str:
    words = [ROLE_WORDS.get(r, r) for r in roles.split("+") if r]
    if "zoom" in services and "control" in roles:
        words[0] = "meeting control/key server"  # Zoom delivers meeting keys on it
    return " and ".join(words) or "server"


def _server_evidence(row: pd.Series) -> dict[str, str]:
    return {"ip": str(row["ip"]), "names": str(row["names"]), "sources": str(row["geo_sources"]),
            "rtt": f"{row['rtt_min_ms']} ms ({row['rtt_evidence']})",
            "plausibility": str(row["plausibility_text"])}


def _flow_ids_for(flows: pd.DataFrame, ip: str) -> tuple[int, ...]:
    return tuple(int(v) for v in flows.loc[flows["server_ip"] == ip, "flow_id"])


def _first_frames_for(flows: pd.DataFrame, ip: str) -> tuple[int, ...]:
    return tuple(int(v) for v in flows.loc[flows["server_ip"] == ip, "first_frame"])


def flagged_servers(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                    signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    if "flagged" not in servers:
        return
    for _, row in servers[servers["flagged"].astype(bool)].iterrows():
        doubtful = "doubtful" in str(row["flag_reason"])
        physics = {"consistent": "RTT consistent", "implausible": "RTT rules it out"}.get(
            str(row["plausibility"]), "no RTT check")
        country = str(row["flag_reason"]).split(" ", 1)[0]
        yield Finding(
            capture, "medium" if doubtful else "high", "flagged-country",
            f"{_role_words(str(row['roles']), str(row['services']))} in {country}"
            f"{' (doubtful)' if doubtful else ''}: {row['ip']} ({row['geo_sources']}, {physics})",
            f"The capture's traffic reached {row['ip']}, which {row['flag_reason']}. "
            "Where a database places an address is a claim by that database, not a "
            "measurement; the RTT check below says whether physics allows it.",
            _flow_ids_for(flows, str(row["ip"])), _first_frames_for(flows, str(row["ip"])),
            tuple(n.rsplit(" (", 1)[0] for n in str(row["names"]).split("; ") if n),
            _server_evidence(row),
            "A measurement from several vantage points (RTT or traceroute) placing the server "
            "elsewhere, or the provider's own region data for the address.")


def implausible_locations(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                          signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    if "plausibility" not in servers:
        return
    for _, row in servers[servers["plausibility"] == "implausible"].iterrows():
        yield Finding(
            capture, "medium", "implausible-location",
            f"Location implausible for {row['ip']}: {row['geo_sources']}",
            f"{row['plausibility_text']}. The database's location for this server cannot be "
            "right: a reply cannot travel faster than light in fibre (about 100 km per ms of "
            "round trip).", _flow_ids_for(flows, str(row["ip"])),
            _first_frames_for(flows, str(row["ip"])), (), _server_evidence(row),
            "The RTT sample is wrong (e.g. a middlebox answered the handshake for the server), "
            "or the vantage point is not where it was said to be.")


def geo_disagreements(capture: str, flows: pd.DataFrame, streams: pd.DataFrame,
                      signalling: pd.DataFrame, servers: pd.DataFrame) -> Iterator[Finding]:
    if "geo_disagreement" not in servers:
        return
    for _, row in servers[servers["geo_disagreement"].astype(bool)].iterrows():
        yield Finding(
            capture, "info", "geolocation-disagreement",
            f"Geolocation sources disagree for {row['ip']}: {row['geo_sources']}",
            "Different databases place this server in different countries. Treat its "
            f"location as uncertain. Physics check: {row['plausibility_text'] or 'none'}",
            _flow_ids_for(flows, str(row["ip"])), _first_frames_for(flows, str(row["ip"])),
            (), _server_evidence(row), "")


RULES: tuple[Rule, ...] = (sdes_in_cleartext, ecb_mode, cleartext_media, weak_protection,
                           cleartext_signalling, service_held_keys, hop_by_hop_media,
                           flagged_servers, implausible_locations, geo_disagreements,
                           unknown_flows)


def findings(tables: dict[str, pd.DataFrame]) -> list[Finding]:
    parts_of = [tables[n] for n in ("flows", "streams", "signalling", "servers")]
    found: list[Finding] = []
    for capture in sorted(distinct_texts(parts_of[0]["capture"])):
        parts = [t[t["capture"] == capture] for t in parts_of]
        for rule in RULES:
            found.extend(rule(capture, *parts))
    return sorted(found, key=lambda f: (SEVERITY_ORDER.index(f.severity), f.capture, f.kind))


def findings_table(found: list[Finding]) -> pd.DataFrame:
    rows = [{
        "capture": f.capture, "severity": f.severity, "kind": f.kind, "title": f.title,
        "explanation": f.explanation, "flow_ids": " ".join(map(str, f.flow_ids)),
        "frames": " ".join(map(str, f.frames)), "hostnames": " ".join(f.hostnames),
        "refute": f.refute,
    } for f in found]
    return pd.DataFrame(rows, columns=["capture", "severity", "kind", "title", "explanation",
                                       "flow_ids", "frames", "hostnames", "refute"])


# ---------------------------------------------------------------------- coverage


def coverage(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Share of flows, packets, bytes and media seconds per verdict, per capture and service."""
    flows, streams = tables["flows"], tables["streams"]
    rows: list[dict[str, object]] = []
    for capture in sorted(distinct_texts(flows["capture"])):
        f = _FlowColumns.of(flows[flows["capture"] == capture])
        s = _StreamColumns.of(streams[streams["capture"] == capture])
        stream_service, known = _service_of_flows(s.flow_id, f.flow_id, f.service)
        for scope in ["all", *sorted(set(f.service.tolist()))]:
            in_f = np.ones(f.service.size, bool) if scope == "all" else f.service == scope
            in_s = known if scope == "all" else known & (stream_service == scope)
            rows.extend(_coverage_rows(capture, scope, f.subset(in_f), s.subset(in_s)))
    return pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))


def _service_of_flows(stream_flow: np.ndarray, flow_id: np.ndarray, service: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The service of each stream's flow, and whether its flow is among `flow_id` at all:
    found once by a sorted search, not by a set test per service."""
    found = np.full(stream_flow.size, None, dtype=object)
    hit = np.zeros(stream_flow.size, bool)
    if stream_flow.size and flow_id.size:
        order = np.argsort(flow_id, kind="stable")
        place = np.minimum(np.searchsorted(flow_id[order], stream_flow), flow_id.size - 1)
        hit = flow_id[order][place] == stream_flow
        found[hit] = service[order][place[hit]]
    return found, hit


class _Columns:
    """Parallel arrays (the fields of a slotted dataclass), cut down by a row mask."""

    __slots__ = ()

    def subset(self, mask: np.ndarray) -> Self:
        names: tuple[str, ...] = self.__slots__  # the subclass's fields
        return type(self)(*(getattr(self, name)[mask] for name in names))


@dataclass(frozen=True, slots=True)
class _FlowColumns(_Columns):
    """What coverage reads of the flows, as arrays (pandas costs more per small step)."""

    flow_id: np.ndarray
    service: np.ndarray
    encryption: np.ndarray
    packets: np.ndarray
    volume: np.ndarray

    @staticmethod
    def of(flows: pd.DataFrame) -> _FlowColumns:
        return _FlowColumns(
            flows["flow_id"].to_numpy(), flows["service"].to_numpy(dtype=object),
            flows["encryption"].to_numpy(dtype=object),
            (flows["packets_c2s"] + flows["packets_s2c"]).to_numpy(),
            (flows["bytes_c2s"] + flows["bytes_s2c"]).to_numpy())


@dataclass(frozen=True, slots=True)
class _StreamColumns(_Columns):
    flow_id: np.ndarray
    encryption: np.ndarray
    protection: np.ndarray
    duration: np.ndarray

    @staticmethod
    def of(streams: pd.DataFrame) -> _StreamColumns:
        return _StreamColumns(
            streams["flow_id"].to_numpy(), streams["encryption"].to_numpy(dtype=object),
            streams["protection"].to_numpy(dtype=object), streams["duration_s"].to_numpy())


def _total(values: np.ndarray) -> object:
    """The sum as pandas' `Series.sum` gives it (missing values skipped)."""
    if values.dtype.kind == "f":
        return np.where(np.isnan(values), 0.0, values).sum()
    return pd.Series(values, dtype=values.dtype).sum()


COVERAGE_COLUMNS = {
    "capture": "capture file name",
    "scope": "'all' or a service",
    "verdict": "encrypted, weak, cleartext or unknown",
    "flows": "flows with this verdict", "packets": "packets", "bytes": "frame bytes",
    "media_seconds": "seconds of RTP media (sum over streams and directions)",
    "share_flows": "share of the scope's flows, 0-1", "share_packets": "share of packets",
    "share_bytes": "share of bytes", "share_media_seconds": "share of media seconds",
    "media_seconds_hop_by_hop": "media seconds protected only hop by hop or with keys the "
                                "service holds",
}


def _coverage_rows(capture: str, scope: str, flows: _FlowColumns,
                   streams: _StreamColumns) -> Iterator[dict[str, object]]:
    packets, volume, duration = flows.packets, flows.volume, streams.duration
    totals = (flows.flow_id.size, packets.sum(), volume.sum(), _total(duration))
    relaying = (streams.protection == "hop-by-hop") | (streams.protection == "service-held-keys")
    for verdict in VERDICTS:
        mask = flows.encryption == verdict
        smask = streams.encryption == verdict
        values = (int(mask.sum()), int(packets[mask].sum()), int(volume[mask].sum()),
                  float(_total(duration[smask])))  # type: ignore[arg-type]
        shares = [v / t if t else 0.0 for v, t in zip(values, totals, strict=True)]
        relayed = smask & relaying
        yield {"capture": capture, "scope": scope, "verdict": verdict,
               "flows": values[0], "packets": values[1], "bytes": values[2],
               "media_seconds": round(values[3], 3), "share_flows": shares[0],
               "share_packets": shares[1], "share_bytes": shares[2],
               "share_media_seconds": shares[3],
               "media_seconds_hop_by_hop": round(float(_total(duration[relayed])), 3)}  # type: ignore[arg-type]
