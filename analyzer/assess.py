"""The assessment stage: from pipeline state to per-flow views and encryption verdicts."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from analyzer.encryption import CONTROL_SERVERS_SHOWN, FlowView, Verdict, assess_flow
from analyzer.facts import CaptureFacts, SdpMedia

if TYPE_CHECKING:
    from analyzer.flows import Flow, FlowTable
    from analyzer.inspector import Inspector
    from analyzer.media import MediaExtractor, StreamState
    from analyzer.services import Orientation

ENCAP_ZOOM = 3


def flow_views(flows: FlowTable, inspector: Inspector, media: MediaExtractor,
               capture: CaptureFacts, attribution: list[tuple[Orientation, str, str, str]],
               server_names: list[str], per_flow_streams: dict[int, list[StreamState]]
               ) -> list[FlowView]:
    views = []
    layouts, srtcp, rtcp = media.zoom_layouts, media.srtcp_packets, media.rtcp_packets
    for i, flow in enumerate(flows.flows):
        orientation, service, _, _ = attribution[i]
        server = 1 - orientation.client_side
        streams = per_flow_streams.get(i, [])
        sdp = _sdp_entries(flow, streams, media, capture)
        layout = layouts.get(i, ()) if layouts else ()
        view = FlowView(
            flow_id=flow.flow_id, transport=flow.transport, service=service,
            p2p=orientation.p2p, server=f"{flow.address(server)}:{flow.port(server)}",
            server_name=server_names[i], facts=inspector.facts[i],
            zoom_legacy="legacy" in layout, zoom_encapsulated=bool(layout),
            # (most captures' flows have no RTCP: no look-ups then)
            srtcp_trailer=bool(srtcp) and bool(srtcp.get((i, 0)) or srtcp.get((i, 1))),
            rtcp_packets=rtcp.get((i, 0), 0) + rtcp.get((i, 1), 0) if rtcp else 0,
            sdp=sdp, sdp_cleartext_frames=_sdes_frames(sdp, capture),
        )
        if streams:  # (most flows of a busy capture have none)
            view.media_packets = sum(sum(s.payload_types.values()) for s in streams)
            view.zoom_media = any(s.encap == ENCAP_ZOOM for s in streams)
            view.ecb_frames = tuple(pair for s in streams
                                    if (r := media.ecb_result(s)) is not None
                                    and r.verdict == "ecb" for pair in r.examples)
        views.append(view)
    _add_control_servers(views, flows)
    return views


def _sdp_entries(flow: Flow, streams: list[StreamState], media: MediaExtractor,
                 capture: CaptureFacts) -> tuple[SdpMedia, ...]:
    if not capture.sdp_media:
        return ()
    found = [entry for s in streams if (entry := media.sdp_for(s)) is not None]
    if not found:  # e.g. an RTCP-only flow: look up its endpoints directly
        for side in (0, 1):
            entry = capture.sdp_before((flow.address(side), flow.port(side)),
                                       flow.first_frame)
            if entry is not None:
                found.append(entry)
    return tuple(found)


def _sdes_frames(entries: tuple[SdpMedia, ...], capture: CaptureFacts) -> tuple[int, ...]:
    """Frames of cleartext SIP messages whose SDP carried SDES keys for these media."""
    calls = {e.call_id for e in entries if e.sdes_suites and not e.over_tls}
    if not calls:
        return ()
    return tuple(sorted({int(str(row["frame"])) for row in capture.sip_messages
                         if row["sdes_keys"] and row["call_id"] in calls}))


def _add_control_servers(views: list[FlowView], flows: FlowTable) -> None:
    """Candidate key-delivery servers: the service's TLS flows opened before the media flow."""
    tls_by_service: dict[str, list[tuple[int, FlowView]]] = {}
    for view in views:
        if view.facts.tls is not None:
            opened = flows.flows[view.flow_id - 1].first_frame
            tls_by_service.setdefault(view.service, []).append((opened, view))
    for view in views:
        if not view.zoom_media:
            continue
        first = flows.flows[view.flow_id - 1].first_frame
        tls = tls_by_service.get(view.service, [])
        # the first few are named (a busy capture has thousands of such flows for each)
        before = list(itertools.islice((v for opened, v in tls if opened < first),
                                       CONTROL_SERVERS_SHOWN)) or [
            v for _, v in tls[:CONTROL_SERVERS_SHOWN]]
        view.control_servers = tuple(
            f"{v.server_name or '?'} {v.server} (flow {v.flow_id})" for v in before)


def verdicts(views: list[FlowView], cbc_sha1_is_weak: bool = False) -> list[Verdict]:
    return [assess_flow(view, cbc_sha1_is_weak) for view in views]
