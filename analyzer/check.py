"""`confscope check`: does a routing claim hold for these captures?

"Must stay within" (--allow-country) or "must avoid" (--deny-country). A server breaks the claim
when any geolocation source places it outside the allowed set (or inside a denied country):
a claim check errs on the side of showing the reader the doubt. Exit status: 0 the claim holds,
1 a server breaks it, 2 error. Servers no source can place are listed as unverified.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

import pandas as pd

from analyzer.pipeline import Settings, analyze
from analyzer.printable import printable

EXIT_HOLDS, EXIT_BROKEN = 0, 1


@dataclass(frozen=True, slots=True)
class ServerVerdict:
    capture: str
    ip: str
    roles: str
    names: str
    countries: str  # every source's answer
    offending: tuple[str, ...]  # countries that break the claim
    plausibility: str
    plausibility_text: str
    special_address: str


def claim_text(allow: tuple[str, ...] | None, deny: tuple[str, ...] | None) -> str:
    if allow:
        return f"all servers are in {', '.join(allow)}"
    return f"no server is in {', '.join(deny or ())}"


def judge(servers: pd.DataFrame, allow: tuple[str, ...] | None, deny: tuple[str, ...] | None,
          roles: tuple[str, ...]) -> tuple[list[ServerVerdict], list[ServerVerdict]]:
    """(servers that break the claim, servers that cannot be placed)."""
    broken, unverified = [], []
    for _, row in servers.iterrows():
        if not set(str(row["roles"]).split("+")) & set(roles) or row["special_address"]:
            continue
        countries = _countries(str(row["geo_sources"]))
        offending = tuple(c for c in countries if (allow and c not in allow)
                          or (deny and c in deny))
        verdict = ServerVerdict(str(row["capture"]), str(row["ip"]), str(row["roles"]),
                                str(row["names"]), str(row["geo_sources"]), offending,
                                str(row["plausibility"]), str(row["plausibility_text"]),
                                str(row["special_address"]))
        if offending:
            broken.append(verdict)
        elif not countries:
            unverified.append(verdict)
    return broken, unverified


def _countries(geo_sources: str) -> list[str]:
    """Country codes in 'US (db ...); CN (registry ...)'."""
    codes = [part.strip().split(" ", 1)[0] for part in geo_sources.split(";")]
    return [c for c in codes if len(c) == 2 and c.isupper()]


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status 0 when the claim holds, 1 when a server breaks it: the verdict, even when
    the reader of the text leaves early (`| head`)."""
    from analyzer.cli import _check_inputs, discard_stdout, stdout_reader_gone

    _check_inputs(args.captures, None)
    analysis = analyze(args.captures, settings)
    broken, unverified = judge(analysis.servers, args.allow_country, args.deny_country,
                               args.roles)
    claim = claim_text(args.allow_country, args.deny_country)
    try:
        if args.json:
            print(json.dumps({
                "claim": claim, "holds": not broken, "roles": list(args.roles),
                "breaking_servers": [asdict(v) for v in broken],
                "unverified_servers": [asdict(v) for v in unverified],
                "geoip_databases": analysis.summary["geoip_databases"],
                "vantage": analysis.summary["vantage"],
            }, indent=2))
        else:
            _print_text(claim, broken, unverified, analysis.summary)
        sys.stdout.flush()
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        discard_stdout()
    return EXIT_BROKEN if broken else EXIT_HOLDS


def _print_text(claim: str, broken: list[ServerVerdict], unverified: list[ServerVerdict],
                summary: dict[str, object]) -> None:
    out = sys.stdout
    verdict = "does NOT hold" if broken else "holds"
    print(f"Claim: {claim} -> {verdict}", file=out)
    for v in broken:
        print(printable(f"  BREAKS  {v.ip} [{v.roles}] {v.names or '(no name seen)'}"),
              file=out)
        print(printable(f"          location: {v.countries}"), file=out)
        print(printable(f"          plausibility: {v.plausibility}: {v.plausibility_text}"),
              file=out)
    for v in unverified:
        print(f"  UNPLACED {v.ip} [{v.roles}]: no source knows where it is", file=out)
    databases = summary.get("geoip_databases", [])
    assert isinstance(databases, list)
    names = ", ".join(f"{d['name']} ({d['build_date']})" for d in databases)
    print(f"Sources: {names}", file=out)
