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
from typing import NamedTuple

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


class Judgement(NamedTuple):
    broken: list[ServerVerdict]  # servers that break the claim
    unverified: list[ServerVerdict]  # servers no source can place
    checked: int  # servers of the roles checked (special addresses are never geolocated)


def judge(servers: pd.DataFrame, allow: tuple[str, ...] | None, deny: tuple[str, ...] | None,
          roles: tuple[str, ...]) -> Judgement:
    broken, unverified, checked = [], [], 0
    for _, row in servers.iterrows():
        if not set(str(row["roles"]).split("+")) & set(roles) or row["special_address"]:
            continue
        checked += 1
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
    return Judgement(broken, unverified, checked)


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
    judgement = judge(analysis.servers, args.allow_country, args.deny_country, args.roles)
    broken, unverified = judgement.broken, judgement.unverified
    claim = claim_text(args.allow_country, args.deny_country)
    try:
        if args.json:
            print(json.dumps({
                "claim": claim, "holds": not broken, "roles": list(args.roles),
                "servers_checked": judgement.checked,
                "breaking_servers": [asdict(v) for v in broken],
                "unverified_servers": [asdict(v) for v in unverified],
                "geoip_databases": analysis.summary["geoip_databases"],
                "vantage": analysis.summary["vantage"],
            }, indent=2))
        else:
            _print_text(claim, judgement, analysis.summary)
        sys.stdout.flush()
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        discard_stdout()
    return EXIT_BROKEN if broken else EXIT_HOLDS


def headline(claim: str, judgement: Judgement) -> str:
    """'Claim: ... -> does NOT hold: 2 of 14 servers checked break it; 1 could not be placed'."""
    broken, checked = len(judgement.broken), judgement.checked
    counts = (f"{broken:,} of {checked:,} server(s) checked break it" if broken
              else f"{checked:,} server(s) checked, none breaks it")
    if judgement.unverified:
        counts += f"; {len(judgement.unverified):,} could not be placed"
    return f"Claim: {claim} -> {'does NOT hold' if broken else 'holds'}: {counts}"


def _print_text(claim: str, judgement: Judgement, summary: dict[str, object]) -> None:
    out = sys.stdout
    broken, unverified = judgement.broken, judgement.unverified
    print(headline(claim, judgement), file=out)
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
