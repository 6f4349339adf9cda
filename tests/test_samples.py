"""confscope reproduces the facts of every generated sample capture (captures/manifest.json).

The manifest is written by captures/make_samples.py from what it generated, so it is true by
construction; confscope must find the same flows, services, protocols, media and streams.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from analyzer.pipeline import Analysis, analyze

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((ROOT / "captures" / "manifest.json").read_text())
SAMPLES = sorted(MANIFEST["files"])
IGNORED_PROTOCOLS = {"tcp"}  # confscope names TCP only when nothing runs on top of it


@cache
def analysis(name: str) -> Analysis:
    return analyze([ROOT / "captures" / name])


def split(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host.strip("[]"), int(port)


def find_flow(flows: pd.DataFrame, fact: dict) -> pd.Series:
    client, server = split(fact["client"]), split(fact["server"])
    for _, row in flows.iterrows():
        ends = ((row.client_ip, row.client_port), (row.server_ip, row.server_port))
        if set(ends) == {client, server} and row.transport == fact["transport"]:
            return row
    raise AssertionError(f"no flow {fact['client']} <-> {fact['server']}")


def test_manifest_lists_every_capture_in_the_folder() -> None:
    on_disk = {p.name for p in (ROOT / "captures").iterdir() if p.suffix in (".pcap", ".pcapng")}
    assert on_disk == set(SAMPLES)


@pytest.mark.parametrize("name", SAMPLES)
def test_packet_count(name: str) -> None:
    assert analysis(name).summary["counts"]["packets"] == MANIFEST["files"][name]["packet_count"]


@pytest.mark.parametrize("name", SAMPLES)
def test_flows(name: str) -> None:
    flows = analysis(name).flows
    facts = MANIFEST["files"][name]["flows"]
    assert len(flows) == len(facts)
    for fact in facts:
        row = find_flow(flows, fact)
        where = f"{name} {fact['client']} -> {fact['server']}"
        assert (row.client_ip, row.client_port) == split(fact["client"]), where
        assert row.service == fact["service"], (where, row.service_evidence)
        assert set(filter(None, row.protocols.split("+"))) - IGNORED_PROTOCOLS == \
            set(fact["protocols"]) - IGNORED_PROTOCOLS, where
        assert set(filter(None, row.media.split("+"))) == set(fact["media"]), where
        assert (row.packets_c2s, row.packets_s2c) == (fact["packets_c2s"], fact["packets_s2c"])
        assert row.first_frame == fact["first_frame"], where
        assert bool(row.p2p) == bool(fact.get("p2p", False)), where
        if fact.get("server_name"):
            assert row.server_name == fact["server_name"], where


@pytest.mark.parametrize("name", SAMPLES)
def test_streams(name: str) -> None:
    streams = analysis(name).streams
    facts = MANIFEST["files"][name]["streams"]
    found = {(f"{r.src_ip}:{r.src_port}", f"{r.dst_ip}:{r.dst_port}", r.ssrc): r
             for _, r in streams.iterrows()}
    assert len(found) == len(facts), sorted(found)
    for fact in facts:
        row = found[(fact["src"], fact["dst"], fact["ssrc"])]
        assert row.payload_type == fact["payload_type"]
        assert row.media == fact["media"]
        assert (row.packets, row.lost) == (fact["packets"], fact["lost"])
        assert row.clock_rate == fact["clock_rate"]


@pytest.mark.parametrize("name", SAMPLES)
def test_dns_names_reach_the_servers_table(name: str) -> None:
    servers = analysis(name).servers
    for hostname, addresses in MANIFEST["files"][name].get("dns", {}).items():
        for address in addresses:
            row = servers[servers["ip"] == address]
            if len(row):
                assert hostname in row.iloc[0]["names"], (hostname, address)
