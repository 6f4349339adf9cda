"""Service attribution against the reference classifier's labels on real captures.

For every flow that nDPI (../shared/corpus/labels.tsv) attributes to a conferencing service,
confscope must name the same service, or this file must say why the label is wrong.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from analyzer.pipeline import analyze

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent")

# nDPI application name -> confscope service
NDPI_APPS = {
    "Zoom": "zoom", "Skype_TeamsCall": "teams", "Skype_Teams": "teams", "Teams": "teams",
    "GoogleCall": "google-meet", "GoogleMeet": "google-meet", "WhatsAppCall": "whatsapp",
    "WhatsApp": "whatsapp", "SignalVoip": "signal", "Discord": "discord",
    "FacebookVoip": "messenger", "Messenger": "messenger", "TelegramVoip": "telegram",
    "Webex": "webex", "Jitsi": "jitsi", "FaceTime": "facetime", "SIP": "sip",
}

# Flows where confscope and the label disagree on purpose: (capture, endpoint, port) -> why.
DISAGREEMENTS: dict[tuple[str, str, int], str] = {}


def labelled_service(label: str) -> str | None:
    """The confscope service of an nDPI label such as '91.189/TLS.Zoom' or 'GTP:189/Zoom'."""
    names = re.split(r"[./:]", label.split("/", 1)[-1])
    for name in reversed(names):
        if name in NDPI_APPS:
            return NDPI_APPS[name]
    return None


def endpoint(text: str) -> tuple[str, int]:
    host, port = text.strip().rsplit(":", 1)
    return str(ipaddress.ip_address(host.strip("[]"))), int(port)


def conferencing_labels() -> list[dict[str, str]]:
    with (CORPUS / "labels.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [row for row in rows if labelled_service(row["ndpi_proto"])]


@cache
def flows_of(capture: str) -> pd.DataFrame:
    return analyze([CORPUS / capture]).flows


def find_flow(flows: pd.DataFrame, a: tuple[str, int], b: tuple[str, int]) -> pd.Series | None:
    for _, row in flows.iterrows():
        ends = {(row.client_ip, row.client_port), (row.server_ip, row.server_port)}
        if ends == {a, b}:
            return row
    return None


def test_there_are_labelled_conferencing_flows() -> None:
    assert len(conferencing_labels()) > 50


@pytest.mark.parametrize("label", conferencing_labels(),
                         ids=lambda r: f"{r['capture']}:{r['config']}:{r['flow_no']}")
def test_service_agrees_with_reference_label(label: dict[str, str]) -> None:
    a, b = endpoint(label["src"]), endpoint(label["dst"])
    flow = find_flow(flows_of(label["capture"]), a, b)
    assert flow is not None, f"no flow {a} <-> {b}"
    expected = labelled_service(label["ndpi_proto"])
    reason = DISAGREEMENTS.get((label["capture"], *b))
    if reason:
        pytest.skip(reason)
    assert flow.service == expected, (flow.service, flow.service_evidence)
    assert flow.service_evidence, "a service needs its evidence"


def test_every_corpus_capture_is_analyzed_without_error() -> None:
    captures = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    assert captures
    result = analyze(captures, )
    summary = result.summary["captures"]
    assert len(summary) == len(captures)  # type: ignore[arg-type]
    assert all(c["damage"] is None for c in summary)  # type: ignore[index, union-attr]
