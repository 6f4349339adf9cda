"""read -> decode -> flows and streams -> assess -> tables, for one capture or many."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from analyzer import FORMAT_VERSION, __version__, findings
from analyzer.capture.batch import CaptureInfo, PacketBatch
from analyzer.capture.reader import DEFAULT_CHUNK_BYTES, CaptureReader, mappable
from analyzer.capture.source import capture_name, is_stream
from analyzer.facts import CaptureFacts
from analyzer.flows import FlowAssignment, FlowTable
from analyzer.geolocate import GeoSettings, geolocate
from analyzer.inspector import Inspector, udp_kinds_of
from analyzer.media import MediaExtractor
from analyzer.packets import DECODED_LINKTYPES, PacketColumns, decode_batch
from analyzer.provenance import CaptureHashes
from analyzer.readahead import ReadAhead
from analyzer.tables import build_tables
from analyzer.timeline import Timeline

if TYPE_CHECKING:
    from analyzer.mediapool import MediaPool

Progress = Callable[[int], None]
FinalTable = Callable[[str, pd.DataFrame], None]  # (table name, table)


@dataclass(frozen=True, slots=True)
class Settings:
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    jobs: int = 0  # 0: all cores
    hash_captures: bool = True  # SHA-256 of each capture, in a low-priority child process
    geo: GeoSettings = field(default_factory=GeoSettings)

    def as_dict(self) -> dict[str, object]:
        return {"chunk_bytes": self.chunk_bytes, "jobs": self.jobs,
                "hash_captures": self.hash_captures, "geoip_db": list(self.geo.databases),
                "vantage": self.geo.vantage_point, "vantage_country": self.geo.vantage_country,
                "flag_country": list(self.geo.flag_countries)}


@dataclass(slots=True)
class CaptureResult:
    info: CaptureInfo
    sha256: str | None  # None: being hashed by the caller's CaptureHashes (see `analyze`)
    size: int
    tables: dict[str, pd.DataFrame]
    counts: dict[str, object]


@dataclass(slots=True)
class Analysis:
    """The tables of one analysis (one or more captures) and its summary."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict[str, object] = field(default_factory=dict)
    findings: list[dict[str, object]] = field(default_factory=list)

    @property
    def flows(self) -> pd.DataFrame:
        return self.tables["flows"]

    @property
    def streams(self) -> pd.DataFrame:
        return self.tables["streams"]

    @property
    def servers(self) -> pd.DataFrame:
        return self.tables["servers"]

    def collect_hashes(self, hashes: CaptureHashes) -> None:
        """Fill in the SHA-256s `analyze` left to the caller's `hashes` (waits for them)."""
        for capture in cast(list[dict[str, object]], self.summary.get("captures", [])):
            if capture["sha256"] is None:
                capture["sha256"] = hashes.digest(Path(str(capture["file"])))


def analyze_capture(path: str | os.PathLike[str], settings: Settings = Settings(),
                    progress: Progress | None = None,
                    hashes: CaptureHashes | None = None,
                    media_workers: int | None = None) -> CaptureResult:
    """Run the whole pipeline on one capture file and, unless hashing is off, its SHA-256:
    from a hashing process started here, or left pending (None) when the caller gave `hashes`.

    `media_workers`: processes that share the media path by flow. Default: what `settings.jobs`
    leaves beyond this process's two threads (the slow path, and reading a batch ahead), so
    none on two cores, where those threads already keep both busy; 0 when the cores go to
    other captures.
    """
    stream = is_stream(Path(path))  # hashed by its only reader, as it is read
    own = (CaptureHashes([Path(path)]) if settings.hash_captures and hashes is None
           and not stream else None)
    try:
        hashing = own or (hashes if settings.hash_captures else None)
        snapshot = hashing.size(Path(path)) if hashing is not None else None  # (as hashed)
        with collector_paused():  # (until the pipeline's state is freed: `collector_paused`)
            result = _run_pipeline(path, settings, progress, media_workers, snapshot)
        if own is not None:
            result.sha256 = own.digest(Path(path))
        elif settings.hash_captures and not stream:
            result.sha256 = None
        return result
    finally:
        if own is not None:
            own.close()


def _run_pipeline(path: str | os.PathLike[str], settings: Settings,
                  progress: Progress | None, media_workers: int | None = None,
                  snapshot: int | None = None) -> CaptureResult:
    """`snapshot`: the file's bytes to analyze (those hashed), else all it holds when read."""
    threads = settings.jobs or os.cpu_count() or 1
    workers = max(threads - 2, 0) if media_workers is None else media_workers
    # with the read-ahead thread, up to two batches are alive besides the one being filled
    reader = CaptureReader(path, settings.chunk_bytes, buffers=3 if threads > 1 else 1,
                           hash_stream=settings.hash_captures, size=snapshot)
    flows, capture = FlowTable(), CaptureFacts()
    inspector = Inspector(flows, capture)
    media = MediaExtractor(flows, capture, inspector.facts)
    inspector.on_mode_inputs = media.mode_inputs_changed
    fragments, undecoded, read = 0, 0, 0
    timeline = Timeline()

    def accounted() -> Iterator[tuple[PacketBatch, PacketColumns, FlowAssignment, np.ndarray]]:
        """Decoding, flow accounting and the timeline: state only this stage writes, so it may
        run a batch ahead of the slow path and the media path (which only read flow endpoints);
        and which UDP payloads the slow path reads, which depends on the batch alone.
        """
        nonlocal fragments, undecoded
        for batch in reader.batches():
            cols = decode_batch(batch)
            fragments += int(np.count_nonzero(cols.fragment))
            if not reader.info.linktypes <= DECODED_LINKTYPES:
                undecoded += int(np.count_nonzero(~np.isin(batch.linktype,
                                                           list(DECODED_LINKTYPES))))
            assign = flows.update(cols, batch)
            timeline.add(cols, assign)
            yield batch, cols, assign, udp_kinds_of(batch, cols, assign)

    # forked before the read-ahead thread starts; only a mapped file can be shared with them
    pool = _media_pool(Path(path), workers, flows, capture) if workers > 0 and mappable(
        Path(path)) else None
    try:
        stream = ReadAhead(accounted) if threads > 1 else accounted()
        for batch, cols, assign, udp_kind in stream:
            inspector.grow()
            media.begin(assign, cols)  # the modes as the batch starts, before the slow path
            inspector.process(batch, cols, assign, udp_kind)
            if pool is not None:
                pool.submit(batch, media.select(batch.buffer, cols, assign))
            else:
                media.process(batch, cols, assign)
            if progress is not None and batch.file_read > read:
                progress(batch.file_read - read)  # file bytes: the bar's total is file sizes
                read = batch.file_read
        inspector.finish()
        flows.settle()
        if pool is not None:
            pool.finish(media)
        else:
            media.finish()
        reader.check_unchanged()  # (the file may have shrunk while its batches were read)
    finally:
        if pool is not None:
            pool.close()
    name = capture_name(Path(path))
    tables = build_tables(name, flows, inspector, media, capture)
    tables["timeline"] = timeline.table(name)
    size = (reader.stream_bytes if reader.from_pipe else reader.mapped_size
            or (Path(path).stat().st_size if snapshot is None else snapshot))  # (as analyzed)
    digest = reader.stream_sha256()
    result = CaptureResult(reader.info, digest, size, tables, {})
    result.counts = _capture_counts(reader.info, tables)
    result.counts["ip_fragments"] = fragments
    result.counts["packets_of_undecoded_link_types"] = undecoded
    # UDP datagrams put back together for the slow path; those never completed
    result.counts["ip_datagrams_reassembled"] = inspector.defrag.reassembled
    result.counts["ip_datagrams_incomplete"] = inspector.defrag.dropped
    # RTP/RTCP look-alikes on flows where nothing confirmed media (`MediaExtractor.finish`)
    result.counts["flows_with_unconfirmed_rtp"] = media.unconfirmed.flows
    result.counts["unconfirmed_rtp_packets"] = media.unconfirmed.packets
    return result


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off for a while. For a capture's pipeline, from the batch loop
    until its state is freed, and for the steps after it: they make objects per flow, which
    live until the step ends or longer, and no reference cycles but a few dozen per run (a
    test checks it), which the collector frees when it is back on. Collecting meanwhile would
    only walk the live objects (half a second each, in the loop and after it, on a capture of
    200,000 flows); so would the first collection after a pause that ends while they live."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _media_pool(path: Path, workers: int, flows: FlowTable, capture: CaptureFacts) -> MediaPool:
    from analyzer.mediapool import MediaPool  # (multiprocessing: only when workers are asked for)

    return MediaPool(path, workers, flows, capture)


def _capture_counts(info: CaptureInfo, tables: dict[str, pd.DataFrame]) -> dict[str, object]:
    flows = tables["flows"]
    return {
        "packets": info.packets,
        "flows": len(flows),
        "streams": len(tables["streams"]),
        "flows_by_service": {str(k): int(v) for k, v in flows["service"].value_counts().items()},
        # of those, the flows attributed by their port number alone (a guess)
        "flows_by_service_port_only": {
            str(k): int(v) for k, v in
            flows.loc[flows["service_basis"] == "port", "service"].value_counts().items()},
        "flows_with_decode_problems": int((flows["decode_problems"] != "").sum()),
    }


def analyze(paths: Iterable[str | os.PathLike[str]], settings: Settings = Settings(),
            progress: Progress | None = None, hashes: CaptureHashes | None = None,
            final: FinalTable | None = None) -> Analysis:
    """Analyze captures (in parallel processes when there are several) into one `Analysis`.

    `hashes`: SHA-256s already started by the caller (the CLI starts them before its imports).
    The summary's `sha256` of those captures stays None until the caller's
    `Analysis.collect_hashes`, so that the caller can write the tables while hashing finishes.
    Worker processes hash their own captures.
    `final`: called with each table that is final before geolocation and the findings, so
    that the caller can write it meanwhile (`tables.OutputWriter.add`).
    """
    files = [Path(p) for p in paths]
    jobs = settings.jobs or os.cpu_count() or 1
    if len(files) > 1 and jobs > 1:
        from concurrent.futures import ProcessPoolExecutor  # (multiprocessing: only when used)

        one = functools.partial(analyze_capture, settings=settings, media_workers=0)
        # a pipe is read here: a worker process's standard input is /dev/null
        pooled = [f for f in files if not is_stream(f)]
        with ProcessPoolExecutor(max_workers=max(min(jobs, len(pooled)), 1)) as pool:
            futures = {f: pool.submit(one, f) for f in pooled}
            here = {f: one(f) for f in files if f not in futures}
            results = [here[f] if f in here else futures[f].result() for f in files]
        return combine(results, settings, final)
    own = (CaptureHashes([f for f in files if not is_stream(f)])
           if settings.hash_captures and hashes is None else None)
    try:
        results = [analyze_capture(p, settings, progress, hashes or own) for p in files]
        analysis = combine(results, settings, final)
        if own is not None:
            analysis.collect_hashes(own)
        return analysis
    finally:
        if own is not None:
            own.close()


def combine(results: list[CaptureResult], settings: Settings,
            final: FinalTable | None = None) -> Analysis:
    with collector_paused():
        return _combine(results, settings, final)


def _combine(results: list[CaptureResult], settings: Settings,
             final: FinalTable | None) -> Analysis:
    names = results[0].tables.keys() if results else ()
    tables = {  # (one capture's tables as they are: a copy would double the peak)
        name: pd.concat([r.tables[name] for r in results], ignore_index=True)
        if len(results) > 1 else results[0].tables[name] for name in names
    }
    if final is not None:
        for name, table in tables.items():
            if name != "servers":  # (geolocation adds its columns)
                final(name, table)
    tables["servers"], databases, vantages = geolocate(tables, settings.geo)
    found = findings.findings(tables)
    tables["coverage"] = findings.coverage(tables)
    tables["findings"] = findings.findings_table(found)
    summary = {
        "tool": "confscope", "version": __version__, "format_version": FORMAT_VERSION,
        "settings": settings.as_dict(),
        "captures": [_capture_summary(r) for r in results],
        "counts": {
            "captures": len(results),
            "packets": sum(r.info.packets for r in results),
            **{name: len(table) for name, table in tables.items()},
        },
        "geoip_databases": databases,
        "vantage": vantages,
        "flag_countries": list(settings.geo.flag_countries),
        "coverage": _coverage_summary(tables["coverage"]),
        "findings_by_severity": {s: sum(f.severity == s for f in found)
                                 for s in findings.SEVERITY_ORDER},
    }
    return Analysis(tables, summary, [f.as_dict() for f in found])


def _coverage_summary(coverage: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """{capture: {scope: {verdict: share of bytes}}} plus media-second shares."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in coverage.itertuples():
        scope = out.setdefault(str(row.capture), {}).setdefault(str(row.scope), {})
        scope[f"{row.verdict}_share_bytes"] = round(float(row.share_bytes), 4)
        scope[f"{row.verdict}_share_media_seconds"] = round(float(row.share_media_seconds), 4)
    return out


def _capture_summary(result: CaptureResult) -> dict[str, object]:
    info = result.info
    damage = info.damage
    return {
        "file": info.path, "name": capture_name(Path(info.path)), "sha256": result.sha256,
        "size_bytes": result.size, "format": info.file_format, "compression": info.compressed,
        "link_types": sorted(info.linktypes), "timestamp_resolution": info.timestamp_resolution,
        "packets": info.packets, "packets_cut_by_snaplen": info.truncated_packets,
        "damage": None if damage is None else {
            "reason": damage.reason, "file_offset": damage.file_offset,
            "first_unreadable_frame": damage.frame,
        },
        **result.counts,
    }
