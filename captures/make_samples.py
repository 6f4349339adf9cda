"""Regenerate the sample captures and their manifest.

    python -m captures.make_samples [--out captures/] [--only NAME ...]

Deterministic: every random choice comes from a generator seeded with the sample's name, and
every timestamp is fixed, so a re-run writes byte-identical files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captures import (
    sample_citizenlab,
    sample_misc,
    sample_sip,
    sample_teams,
    sample_webrtc,
    sample_zoom,
)
from captures.netsim import Capture
from captures.pcapio import write_pcap, write_pcapng

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
APPLICATION = "confscope captures.make_samples"

Scenario = Callable[[], tuple[Capture, dict[str, Any]]]

SAMPLES: dict[str, Scenario] = {
    "zoom_meeting.pcap": sample_zoom.zoom_meeting,
    "zoom_p2p.pcap": sample_zoom.zoom_p2p,
    "webrtc_call.pcapng": sample_webrtc.webrtc_call,
    "sip_rtp.pcap": sample_sip.sip_rtp,
    "sip_sdes.pcap": sample_sip.sip_sdes,
    "teams_turn.pcap": sample_teams.teams_turn,
    "citizenlab_ecb.pcap": sample_citizenlab.citizenlab_ecb,
    "citizenlab_gcm.pcap": sample_citizenlab.citizenlab_gcm,
    "citizenlab_ctr.pcap": sample_citizenlab.citizenlab_ctr,
    "geo_cn_rtt.pcap": sample_misc.geo_cn_rtt,
    "hostile_strings.pcap": sample_misc.hostile_strings,
    "tls10_weak.pcap": sample_misc.tls10_weak,
    "dtls10_null_srtp.pcap": sample_misc.dtls10_null_srtp,
    "zrtp_call.pcap": sample_misc.zrtp_call,
    "quic_meet.pcap": sample_misc.quic_meet,
    "opaque_traffic.pcap": sample_misc.opaque_traffic,
}


def write_capture(path: Path, cap: Capture) -> None:
    if path.suffix == ".pcapng":
        write_pcapng(path, cap.interfaces, cap.records(), APPLICATION)
    elif len(cap.interfaces) == 1:
        write_pcap(path, cap.interfaces[0].linktype, cap.records())
    else:
        raise ValueError(f"{path.name}: several interfaces need pcapng")


def build(out_dir: Path, only: list[str] | None = None) -> dict[str, Any]:
    """Write the chosen samples (all by default) and return the manifest of everything written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    files: dict[str, Any] = {}
    if only and manifest_path.exists():
        files = json.loads(manifest_path.read_text())["files"]
    for name, scenario in SAMPLES.items():
        if only and name not in only:
            continue
        cap, entry = scenario()
        write_capture(out_dir / name, cap)
        files[name] = entry
    manifest = {"manifest_version": MANIFEST_VERSION, "generator": "captures/make_samples.py",
                "files": {name: files[name] for name in SAMPLES if name in files}}
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--only", nargs="*", help="sample file names to regenerate")
    args = parser.parse_args(argv)
    manifest = build(args.out, args.only)
    for name, entry in manifest["files"].items():
        print(f"{name}: {entry['packet_count']} packets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
