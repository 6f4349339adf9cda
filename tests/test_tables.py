"""The output tables keep their documented shape."""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
import zoneinfo
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analyzer import tables as tables_module
from analyzer.findings import COVERAGE_COLUMNS, VERDICTS, coverage
from analyzer.pipeline import Settings, analyze
from analyzer.tables import (
    COLUMNS,
    ROLE_ORDER,
    OutputWriter,
    _csv_ready,
    _servers,
    columns_markdown,
    flow_roles,
    neutralize_formulas,
    utc_text,
    write_csv,
)

ROOT = Path(__file__).resolve().parents[1]


def test_docs_match_the_column_table() -> None:
    assert (ROOT / "docs" / "tables.md").read_text() == columns_markdown()


def test_every_table_has_exactly_its_documented_columns() -> None:
    captures = sorted((ROOT / "captures").glob("*.pcap*"))
    tables = analyze(captures[:3]).tables if captures else {}
    for name, frame in tables.items():
        assert list(frame.columns) == list(COLUMNS[name]), name


# --- fast paths of the table writer and the servers table, against pandas' own ----------


def _pandas_csv(times: pd.Series) -> list[str]:
    """The times as pandas writes them into a CSV (beside a second column)."""
    lines = times.to_frame("t").assign(x=0).to_csv(index=False).splitlines()[1:]
    return [line.rsplit(",", 1)[0] for line in lines]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", ["UTC", dt.UTC, zoneinfo.ZoneInfo("UTC")])
def test_utc_text_is_what_pandas_writes(unit: str, tz: object) -> None:
    rng = np.random.default_rng(7)
    for step in (10**9, 10**6, 10**3, 1):  # whole seconds, then ms, us and ns
        ns = rng.integers(-2 * 10**18, 4 * 10**18, 200) // step * step
        for values in (ns, ns[:1], ns[:0]):
            times = pd.Series(pd.to_datetime(values, unit="ns")).dt.as_unit(unit)
            times = times.dt.tz_localize(tz)
            times[::7] = pd.NaT
            text = utc_text(times)
            assert text is not None
            expected = _pandas_csv(times)
            assert text.to_pylist() == expected


def test_utc_text_leaves_far_years_to_pandas() -> None:
    far = np.array(["0900-01-01", "2024-05-14"], dtype="datetime64[s]")
    times = pd.Series(far).dt.tz_localize("UTC")
    assert utc_text(times) is None


def test_csv_ready_writes_what_neutralized_pandas_writes() -> None:
    frame = pd.DataFrame({
        "name": ["=cmd", "zoom.us", None, "\tx"],
        "mixed": [True, "-1", np.nan, 3],
        "first_seen": pd.to_datetime([0, 1_500, None, 10**9], unit="ns", utc=True),
        "second": pd.to_datetime([0, 1, 2, 3], unit="s", utc=True).as_unit("us"),
        "count": [1, 2, 3, 4],
    })
    assert _csv_ready(frame).to_csv(index=False) == neutralize_formulas(frame).to_csv(index=False)
    assert neutralize_formulas(frame)["name"].tolist()[0] == "'=cmd"


def _reference_roles(flows: pd.DataFrame) -> pd.DataFrame:
    """The roles as regular expressions over the protocols column (the former vectorized form)."""
    protocols = flows["protocols"].astype(str)

    def has(pattern: str) -> pd.Series:
        return protocols.str.contains(pattern, regex=True)

    p2p = flows["p2p"].astype(bool)
    media = has(r"(?:^|\+)(?:s?rtp|s?rtcp|zoom)(?:\+|$)")
    roles = pd.DataFrame(index=flows.index)
    roles["dns"] = has(r"(?:^|\+)dns(?:\+|$)")
    roles["control"] = has(r"(?:^|\+)(?:tls|quic|sip|whatsapp)(?:\+|$)") & (
        flows["service"] != "other")
    roles["peer"] = p2p
    roles["key-exchange"] = ~p2p & (flows["key_exchange"] == "dtls-srtp")
    roles["media-relay"] = ~p2p & (media | has(r"(?:^|\+)turn(?:\+|$)"))
    roles["stun"] = has(r"(?:^|\+)stun(?:\+|$)") & ~roles.any(axis=1)
    roles["other"] = ~roles.any(axis=1)
    return roles[list(ROLE_ORDER)]


def test_flow_roles_match_the_pattern_form() -> None:
    rng = random.Random(3)
    names = ["dns", "tls", "quic", "sip", "stun", "turn", "dtls", "zrtp", "zoom", "srtp",
             "srtcp", "rtp", "rtcp", "tcp", "whatsapp", "rtpx", "xdns"]
    flows = pd.DataFrame([{
        "protocols": "+".join(rng.sample(names, rng.randint(0, 4))),
        "service": rng.choice(["zoom", "other", "teams"]), "p2p": rng.random() < 0.3,
        "key_exchange": rng.choice(["dtls-srtp", "none", "tls"]),
    } for _ in range(3000)])
    expected = _reference_roles(flows)
    for i, row in enumerate(flows.itertuples()):
        roles = flow_roles(row.protocols, row.service, row.p2p, row.key_exchange)
        assert roles == {r for r in ROLE_ORDER if expected.iloc[i][r]}, row


def test_servers_table_fields() -> None:
    times = pd.to_datetime([1, 2, 3, 4], unit="s", utc=True)
    flows = pd.DataFrame({
        "flow_id": [1, 2, 3, 4], "server_ip": ["10.0.0.2", "10.0.0.1", "10.0.0.2", "10.0.0.2"],
        "server_port": [443, 3478, 8801, 443], "service": ["zoom", "other", "zoom", "teams"],
        "protocols": ["tls", "stun", "zoom", "tls"], "p2p": [False] * 4,
        "key_exchange": ["tls", "none", "none", "tls"], "bytes_c2s": [1, 2, 3, 4],
        "bytes_s2c": [10, 20, 30, 40], "rtt_min_ms": [5.0, math.nan, 2.0, 2.0],
        "rtt_evidence": ["tls frames 1->2", "", "zoom frames 5->6", "tls frames 7->8"],
        "first_seen": times, "last_seen": times,
    })
    out = _servers("c.pcap", flows, {"10.0.0.2": {("zoom.us", "dns")}}, {3: 1.5})
    assert out["ip"].tolist() == ["10.0.0.1", "10.0.0.2"]
    assert out["services"].tolist() == ["other", "teams+zoom"]
    assert out["ports"].tolist() == ["3478", "443+8801"]
    assert out["roles"].tolist() == ["stun", "control+media-relay"]
    assert out["rtt_evidence"].tolist() == ["", "flow 3: zoom frames 5->6"]  # tie: lower flow
    assert out["names"].tolist() == ["", "zoom.us (dns)"]
    assert out["flows"].tolist() == [1, 3] and out["bytes"].tolist() == [22, 88]
    assert out["media_seconds"].tolist() == [0.0, 1.5]


SERVER_TEXTS = ("services", "ports", "rtt_evidence", "roles", "names")


def _reference_server_texts(flows: pd.DataFrame, names: dict[str, set[tuple[str, str]]]
                            ) -> dict[str, tuple[str, ...]]:
    """Each server's SERVER_TEXTS, server by server, as confscope made them before it grouped
    them by Arrow."""
    services: dict[str, set[str]] = {}
    ports: dict[str, set[int]] = {}
    roles: dict[str, set[str]] = {}
    fastest: dict[str, tuple[float, int, str]] = {}
    for row in flows.itertuples():
        ip, rtt = row.server_ip, float(row.rtt_min_ms)
        services.setdefault(ip, set()).add(row.service)
        ports.setdefault(ip, set()).add(row.server_port)
        roles.setdefault(ip, set()).update(
            flow_roles(row.protocols, row.service, bool(row.p2p), row.key_exchange))
        if not math.isnan(rtt) and (ip not in fastest or (rtt, row.flow_id) < fastest[ip][:2]):
            fastest[ip] = (rtt, row.flow_id, row.rtt_evidence)
    return {ip: ("+".join(sorted(services[ip])), "+".join(map(str, sorted(ports[ip]))),
                 f"flow {fastest[ip][1]}: {fastest[ip][2]}" if ip in fastest else "",
                 "+".join(r for r in ROLE_ORDER if r in roles[ip]),
                 "; ".join(f"{n} ({src})" for n, src in sorted(names.get(ip, ()))))
            for ip in services}


def test_servers_table_texts_match_their_server_by_server_form(tmp_path: Path) -> None:
    rng = random.Random(5)
    protocol_sets = ["tls", "stun", "zoom", "dns", "srtp+stun", "dtls+srtp", "tcp", "udp", ""]
    for _ in range(40):
        n = rng.randrange(1, 400)
        ips = [f"10.0.{rng.randrange(3)}.{rng.randrange(1, 40)}"
               for _ in range(rng.randrange(1, 60))]
        times = pd.to_datetime([rng.randrange(10**18, 2 * 10**18) for _ in range(n)], utc=True)
        flows = pd.DataFrame({
            "flow_id": rng.sample(range(1, 10 * n), n),
            "server_ip": [rng.choice(ips) for _ in range(n)],
            "server_port": [rng.choice([443, 3478, 8801, 53, 19302, 50000]) for _ in range(n)],
            "service": [rng.choice(["zoom", "teams", "other", "webrtc", "méet"]) for _ in range(n)],
            "protocols": [rng.choice(protocol_sets) for _ in range(n)],
            "p2p": [rng.random() < 0.2 for _ in range(n)],
            "key_exchange": [rng.choice(["tls", "none", "dtls-srtp", "sdes"]) for _ in range(n)],
            "bytes_c2s": [rng.randrange(10**9) for _ in range(n)],
            "bytes_s2c": [rng.randrange(10**9) for _ in range(n)],
            "rtt_min_ms": [rng.choice([math.nan, math.nan, 1.5, 2.0, rng.random() * 50])
                           for _ in range(n)],
            "rtt_evidence": [rng.choice(["tls frames 1->2", "stun frames 3->4", "a,b \"c\""])
                             for _ in range(n)],
            "first_seen": times, "last_seen": times,
        })
        names = {ip: {(f"h{k}.example", rng.choice(["dns", "tls-sni"]))
                      for k in range(rng.randrange(0, 3))} for ip in rng.sample(ips, len(ips) // 2)}
        names["192.0.2.1"] = {("absent.example", "dns")}  # a name for a server with no flow
        media = {fid: rng.random() for fid in rng.sample(list(flows["flow_id"]), n // 3)}
        got = _servers("c.pcap", flows, names, media)
        expected = _reference_server_texts(flows, names)
        assert got["ip"].tolist() == sorted(expected)
        texts = got[list(SERVER_TEXTS)]
        assert dict(zip(got["ip"], texts.itertuples(index=False, name=None),
                        strict=True)) == expected
        assert all(dtype == "str" for dtype in texts.dtypes)
        write_csv(texts, tmp_path / "got.csv")  # (the same bytes as the texts written by pandas)
        pd.DataFrame([expected[ip] for ip in sorted(expected)], columns=list(SERVER_TEXTS)).to_csv(
            tmp_path / "expected.csv", index=False)
        assert (tmp_path / "got.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()


# --- coverage, against its straightforward pandas form -------------------------------------


def _reference_coverage(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    flows, streams = tables["flows"], tables["streams"]
    rows: list[dict[str, object]] = []
    for capture in sorted(set(flows["capture"])):
        f = flows[flows["capture"] == capture]
        s = streams[streams["capture"] == capture]
        for scope in ["all", *sorted(set(f["service"]))]:
            part_f = f if scope == "all" else f[f["service"] == scope]
            part_s = s[s["flow_id"].isin(part_f["flow_id"])]
            packets = part_f["packets_c2s"] + part_f["packets_s2c"]
            volume = part_f["bytes_c2s"] + part_f["bytes_s2c"]
            totals = (len(part_f), packets.sum(), volume.sum(), part_s["duration_s"].sum())
            for verdict in VERDICTS:
                mask = part_f["encryption"] == verdict
                smask = part_s["encryption"] == verdict
                values = (int(mask.sum()), int(packets[mask].sum()), int(volume[mask].sum()),
                          float(part_s["duration_s"][smask].sum()))
                shares = [v / t if t else 0.0 for v, t in zip(values, totals, strict=True)]
                relayed = smask & part_s["protection"].isin(["hop-by-hop", "service-held-keys"])
                rows.append({
                    "capture": capture, "scope": scope, "verdict": verdict, "flows": values[0],
                    "packets": values[1], "bytes": values[2],
                    "media_seconds": round(values[3], 3), "share_flows": shares[0],
                    "share_packets": shares[1], "share_bytes": shares[2],
                    "share_media_seconds": shares[3],
                    "media_seconds_hop_by_hop": round(
                        float(part_s["duration_s"][relayed].sum()), 3)})
    return pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))


def test_coverage_matches_its_pandas_form() -> None:
    rng = np.random.default_rng(11)
    verdicts = [*VERDICTS, None]
    protections = ["hop-by-hop", "service-held-keys", "end-to-end", None]
    for _ in range(60):
        flow_parts, stream_parts = [], []
        for c in range(int(rng.integers(1, 4))):
            n, m = int(rng.integers(0, 30)), int(rng.integers(0, 40))
            flow_parts.append(pd.DataFrame({
                "capture": f"c{c}", "flow_id": np.arange(1, n + 1),
                "service": rng.choice(["zoom", "teams", "other"], n),
                "encryption": [verdicts[i] for i in rng.integers(0, 5, n)],
                **{k: rng.integers(0, 10**9, n) for k in
                   ("packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c")}}))
            duration = rng.random(m) * 100
            duration[rng.random(m) < 0.1] = np.nan
            stream_parts.append(pd.DataFrame({
                "capture": f"c{c}", "flow_id": rng.integers(1, n + 2, m),
                "encryption": [verdicts[i] for i in rng.integers(0, 5, m)],
                "protection": [protections[i] for i in rng.integers(0, 4, m)],
                "duration_s": duration}) if m else pd.DataFrame(columns=[
                    "capture", "flow_id", "encryption", "protection", "duration_s"]))
        tables = {"flows": pd.concat(flow_parts, ignore_index=True),
                  "streams": pd.concat(stream_parts, ignore_index=True)}
        got, expected = coverage(tables), _reference_coverage(tables)
        assert got.to_csv() == expected.to_csv()
        assert got.dtypes.equals(expected.dtypes)


def _edge_frame(rows: int, rng: random.Random) -> pd.DataFrame:
    """Every kind of column the tables have, with missing values, awkward floats and text
    that needs quoting (but no carriage return: see the next test)."""
    texts = ["plain", "a,b", 'say "hi"', "two\nlines", "", " spaced ", "ünï", "=1+2", "\t"]
    floats = [0.0, -0.0, 0.1, 1e16, 1e-5, 123.456, math.inf, -math.inf, math.nan, 2.5e-300]
    stamps = pd.to_datetime([1_715_691_600_000_279_000 + i * 1_000 for i in range(rows)],
                            utc=True)
    return pd.DataFrame({
        "text": pd.Series([rng.choice([*texts, None]) for _ in range(rows)], dtype="str"),
        "mixed": [rng.choice(["x", 7, None, 1.5, True, "y,z"]) for _ in range(rows)],
        "real": [rng.choice(floats) for _ in range(rows)],
        "count": [rng.randrange(-5, 10**12) for _ in range(rows)],
        "maybe": pd.array([rng.choice([1, 2**40, None]) for _ in range(rows)], dtype="Int64"),
        "flag": [rng.random() < 0.5 for _ in range(rows)],
        "flag_or_na": pd.array([rng.choice([True, False, None]) for _ in range(rows)],
                               dtype="boolean"),
        "when": stamps.where([rng.random() < 0.9 for _ in range(rows)]),
    })


def test_csv_writer_writes_what_pandas_writes(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables_module, "CSV_CHUNK_ROWS", 97)  # several chunks
    frame = _edge_frame(1_000, random.Random(4))
    write_csv(frame, tmp_path / "ours.csv")
    frame.to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    for column in frame.columns:  # one column alone: an empty cell is written ""
        write_csv(frame[[column]], tmp_path / "one.csv")
        frame[[column]].to_csv(tmp_path / "pandas-one.csv", index=False)
        assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "pandas-one.csv").read_bytes()


def test_arrow_text_checks_agree_with_their_definitions() -> None:
    """The byte-level checks on Arrow text (formula starts, bytes that need quotes) against
    the Python definitions, on random text with nulls, empty and non-ASCII cells, in several
    Arrow chunks and slices."""
    rng = random.Random(9)
    alphabet = ["a", "ü", "=", "+", "-", "@", "\t", "\r", ",", '"', "\n", " ", "中"]
    for _ in range(300):
        cells = [None if rng.random() < 0.1 else
                 "".join(rng.choice(alphabet) if rng.random() < 0.08 else "x"
                         for _ in range(rng.randrange(0, 6)))
                 for _ in range(rng.randrange(0, 40))]
        series = pd.Series(cells, dtype="str")
        expected = any(isinstance(v, str) and v.startswith(tables_module.FORMULA_PREFIXES)
                       for v in cells)
        assert tables_module._formula_like(series) == expected
        text = pa.array([c or "" for c in cells], pa.large_string())
        start = rng.randrange(0, len(cells) + 1)
        part = text.slice(start, rng.randrange(0, len(cells) - start + 1))
        assert tables_module._has_quoted_bytes(part) == any(
            tables_module.CSV_QUOTED.search(c) for c in part.to_pylist())
        chunked = pa.chunked_array([text.slice(0, start), text.slice(start)])
        assert tables_module._starts_like_formula(chunked) == expected


def test_csv_carriage_return_from_a_capture_does_not_split_its_row(tmp_path: Path) -> None:
    hostile = ["evil\rhost,1,2", "a\r\nb", "\r", 'x"\ry']
    frame = pd.DataFrame({"server_name": hostile, "flow_id": range(len(hostile))})
    write_csv(frame, tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert back["server_name"].tolist() == hostile
    assert back["flow_id"].tolist() == list(range(len(hostile)))
    with (tmp_path / "t.csv").open(newline="", encoding="utf-8") as f:
        assert [row[0] for row in csv.reader(f)][1:] == hostile


SAMPLES = Path(__file__).resolve().parents[1] / "captures"


def test_tables_handed_over_early_are_final(tmp_path: Path) -> None:
    """`analyze` hands the tables that are final before geolocation to its caller (the CLI
    writes them meanwhile): each, when handed over, equals the analysis' table at the end."""
    handed: dict[str, pd.DataFrame] = {}

    def final(name: str, table: pd.DataFrame) -> None:
        handed[name] = table.copy(deep=True)

    captures = [SAMPLES / "sip_rtp.pcap", SAMPLES / "geo_cn_rtt.pcap"]
    analysis = analyze(captures, Settings(jobs=1, hash_captures=False), final=final)
    assert list(handed) == [name for name in analysis.tables if name in handed]
    assert set(handed) == set(analysis.tables) - {"servers", "coverage", "findings"}
    for name, table in handed.items():
        pd.testing.assert_frame_equal(table, analysis.tables[name])


def test_output_writer_leaves_nothing_when_the_analysis_fails(tmp_path: Path) -> None:
    """Tables written before a failure are removed with their staging folder, and so is an
    output folder made for them; an output folder that was there stays as it was."""
    analysis = analyze([SAMPLES / "sip_rtp.pcap"], Settings(jobs=1, hash_captures=False))
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for outdir in (tmp_path / "new" / "out", kept):
        with pytest.raises(RuntimeError, match="geolocation failed"), OutputWriter(outdir) as w:
            w.add("flows", analysis.flows)
            assert [p.name for p in outdir.iterdir() if p.name.startswith(".confscope-")]
            raise RuntimeError("geolocation failed")
    assert not (tmp_path / "new" / "out").exists()
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_output_writer_commits_every_table_at_once(tmp_path: Path) -> None:
    analysis = analyze([SAMPLES / "sip_rtp.pcap"], Settings(jobs=1, hash_captures=False))
    with OutputWriter(tmp_path / "out") as writer:
        for name, table in analysis.tables.items():
            writer.add(name, table)
        assert not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
        written = writer.commit(analysis.summary, analysis.findings)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(p.name for p in written)
    assert names == sorted([f"{n}.{kind}" for n in analysis.tables for kind in ("csv", "parquet")]
                           + ["summary.json", "findings.json"])
    flows = pd.read_parquet(tmp_path / "out" / "flows.parquet")
    assert len(flows) == len(analysis.flows) and list(flows.columns) == list(analysis.flows)
