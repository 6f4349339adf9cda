"""The verdict in plain language: what was encrypted and how, where the key/control servers and
media relays were, and what is flagged. Returns HTML built from escaped parts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from dashboards import fmt
from dashboards.inputs import Outputs
from dashboards.page import esc
from dashboards.style import VERDICT_COLOURS, VERDICT_LABELS, VERDICTS
from dashboards.worldmap import location_text, truthy

KEY_EXCHANGE_TEXT = {
    "dtls-srtp": "agreed in a DTLS handshake between the two ends of the media path (DTLS-SRTP)",
    "sdes-cleartext": "written in clear in the call signalling (SDES): whoever captured the "
                      "signalling can decrypt the media",
    "sdes-tls": "sent inside TLS-protected signalling (SDES): every signalling server can "
                "read them",
    "service-control-tls": "delivered by the service's own servers over TLS",
    "tls": "agreed in a TLS handshake with the server",
    "quic": "agreed in a QUIC handshake with the server",
    "zrtp": "agreed directly between the participants (ZRTP)",
    "dtls": "agreed in a DTLS handshake",
    "noise": "agreed with a Noise handshake",
    "service-signalling": "handed out by the service's signalling",
    "none": "not used: there is no encryption",
    "unknown": "not visible in the capture",
}
PROTECTION_TEXT = {
    "end-to-end": "only the participants can read the media",
    "hop-by-hop": "every server that relays the media can read it",
    "service-held-keys": "the service holds the keys, so it can read the media",
    "none": "anyone on the network path can read the media",
    "unknown": "the capture does not show who can read the media",
}
SEVERITY_ORDER = ("high", "medium", "low", "info")
MAX_SERVERS_LISTED = 6
FRAME_EVIDENCE = r"\s*\((?:frame|frames|frame pairs?) [^)]*\)"  # "(frame pairs 35/50, ...)"


def coverage_totals(coverage: pd.DataFrame) -> pd.DataFrame:
    """Bytes, flows and media seconds per verdict over every capture (scope 'all')."""
    if coverage.empty or "scope" not in coverage.columns:
        return pd.DataFrame(0.0, index=list(VERDICTS), columns=["bytes", "media_seconds",
                                                                 "flows"])
    rows = coverage[coverage["scope"] == "all"]
    sums = rows.groupby("verdict")[["bytes", "media_seconds", "flows"]].sum()
    return sums.reindex(list(VERDICTS)).fillna(0.0).astype(float)


def share_bar(amounts: pd.Series) -> str:
    total = float(amounts.sum())
    if total <= 0:
        return '<div class="bar"></div>'
    spans = "".join(
        f'<span style="width:{amounts[v] / total * 100:.3f}%;background:{VERDICT_COLOURS[v]}"'
        f' title="{esc(VERDICT_LABELS[v])}: {fmt.percent(amounts[v] / total)}"></span>'
        for v in VERDICTS if amounts[v] > 0)
    return f'<div class="bar">{spans}</div>'


def stat_card(big: str, what: str, extra: str = "", klass: str = "") -> str:
    return (f'<div class="stat"><div class="big {klass}">{big}</div>'
            f'<div class="what">{what}</div>{extra}</div>')


def coverage_cards(totals: pd.DataFrame) -> list[str]:
    cards = []
    for column, noun, human in (("bytes", "of the bytes on the wire", fmt.human_bytes),
                                ("media_seconds", "of the media time (RTP streams)",
                                 fmt.human_seconds)):
        amounts = totals[column]
        total = float(amounts.sum())
        if total <= 0:
            continue  # no media: the readers card says so
        share = amounts["encrypted"] / total
        klass = "t-encrypted" if share >= 0.999 else ("t-weak" if share >= 0.5 else "t-cleartext")
        cards.append(stat_card(esc(fmt.percent(share)),
                               f"encrypted, {esc(noun)} ({esc(human(total))})",
                               share_bar(amounts), klass))
    return cards


def readers_card(streams: pd.DataFrame) -> str:
    weights = _media_weights(streams, "protection")
    if weights.empty:
        return stat_card("no media", "no RTP streams in the capture", klass="words muted")
    top = str(weights.index[0])
    return stat_card(esc(top.replace("-", " ")), esc(PROTECTION_TEXT.get(top, top)) +
                     _others(weights), klass="words")


def _media_weights(streams: pd.DataFrame, column: str) -> pd.Series:
    if streams.empty or column not in streams.columns:
        return pd.Series(dtype=float)
    seconds = pd.to_numeric(streams.get("duration_s"), errors="coerce").fillna(0.0)
    values = streams[column].fillna("unknown").astype(str).replace("", "unknown")
    return seconds.groupby(values).sum().sort_values(ascending=False)


def _others(weights: pd.Series) -> str:
    total = float(weights.sum())
    if len(weights) < 2 or total <= 0:
        return ""
    rest = ", ".join(f"{esc(k)} {fmt.percent(v / total)}" for k, v in weights.iloc[1:].items())
    return f'<div class="note">media time also: {rest}</div>'


def findings_card(findings: list[dict[str, Any]]) -> str:
    counts = {s: sum(1 for f in findings if f.get("severity") == s) for s in SEVERITY_ORDER}
    if not findings:
        return stat_card("0", "findings")
    worst = next(s for s in SEVERITY_ORDER if counts[s])
    parts = ", ".join(f"{counts[s]} {s}" for s in SEVERITY_ORDER if counts[s])
    klass = {"high": "t-cleartext", "medium": "t-weak"}.get(worst, "")
    return stat_card(str(len(findings)), f"finding(s): {esc(parts)}", klass=klass)


# ---------------------------------------------------------------------- the sentences


def encryption_sentence(totals: pd.DataFrame, flows: pd.DataFrame) -> str:
    total_bytes, media = float(totals["bytes"].sum()), float(totals["media_seconds"].sum())
    if total_bytes <= 0:
        return "No traffic was classified."
    enc = totals.loc["encrypted"]
    text = (f"<b>{esc(fmt.percent(enc['bytes'] / total_bytes))}</b> of the "
            f"{esc(fmt.human_bytes(total_bytes))} exchanged")
    if media > 0:
        text += (f" and <b>{esc(fmt.percent(enc['media_seconds'] / media))}</b> of the "
                 f"{esc(fmt.human_seconds(media))} of media")
    text += " were encrypted."
    for verdict in ("weak", "cleartext", "unknown"):
        text += _verdict_clause(verdict, totals, flows, total_bytes)
    return text


def _verdict_clause(verdict: str, totals: pd.DataFrame, flows: pd.DataFrame,
                    total_bytes: float) -> str:
    amount = totals.loc[verdict, "bytes"]
    if amount <= 0:
        return ""
    what = _what_flows(flows, verdict)
    share = fmt.percent(amount / total_bytes)
    return (f' <span class="chip v-{verdict}">{esc(VERDICT_LABELS[verdict])}</span> '
            f"{esc(share)} ({esc(fmt.human_bytes(amount))}){esc(what)}.")


def _what_flows(flows: pd.DataFrame, verdict: str) -> str:
    if flows.empty or "encryption" not in flows.columns:
        return ""
    chosen = flows["encryption"] == verdict  # (a mask: copying the chosen rows' 40 columns
    details = (flows.loc[chosen, "encryption_detail"]  # took a third of a big report's time)
               if "encryption_detail" in flows.columns else pd.Series(dtype=object))
    details = details.fillna("").astype(str)
    kinds = sorted({d.split(":")[0].strip() for d in details.unique() if d.strip()})[:4]
    count = fmt.plural(int(chosen.sum()), "flow")
    return f": {'; '.join(kinds)} ({count})" if kinds else f" ({count})"


def methods_items(flows: pd.DataFrame) -> list[str]:
    """How the traffic was protected: the main (service, verdict, detail) groups by bytes."""
    needed = {"encryption", "encryption_detail", "service", "bytes_c2s", "bytes_s2c"}
    if flows.empty or not needed <= set(flows.columns):
        return []
    details = flows["encryption_detail"].fillna("").astype(str)
    distinct = pd.Series(details.unique())  # (a busy capture's details repeat: edit each once)
    edited = dict(zip(distinct, distinct.str.replace(FRAME_EVIDENCE, "", regex=True),
                      strict=True))
    frame = flows.assign(total=flows["bytes_c2s"] + flows["bytes_s2c"],
                         encryption_detail=details.map(edited))
    groups = frame.groupby(["service", "encryption", "encryption_detail"], dropna=False).agg(
        total=("total", "sum"), count=("flow_id", "size")).sort_values("total", ascending=False)
    items = []
    for (service, verdict, detail), row in groups.head(5).iterrows():
        verdict_text = verdict if verdict in VERDICTS else "unknown"
        items.append(f'<span class="chip v-{verdict_text}">{esc(verdict_text)}</span> '
                     f"<b>{esc(service)}</b>: {esc(fmt.text(detail) or 'no detail')} "
                     f'<span class="muted">({fmt.plural(int(row["count"]), "flow")}, '
                     f"{esc(fmt.human_bytes(row['total']))})</span>")
    return items


def keys_sentence(streams: pd.DataFrame) -> str:
    weights = _media_weights(streams, "key_exchange")
    if weights.empty:
        return ""
    main = str(weights.index[0])
    protection = _media_weights(streams, "protection")
    who = PROTECTION_TEXT.get(str(protection.index[0]), "") if len(protection) else ""
    text = f"Media keys were {esc(KEY_EXCHANGE_TEXT.get(main, main))}"
    return text + (f": <b>{esc(who)}</b>." if who else ".")


def server_items(servers: pd.DataFrame, roles: tuple[str, ...], label: str) -> str:
    if servers.empty or "roles" not in servers.columns:
        return ""
    texts = servers["roles"].fillna("")
    wanted = {r: bool(set(str(r).split("+")) & set(roles)) for r in texts.unique()}
    mask = texts.map(wanted).astype(bool)
    chosen = servers[mask].sort_values("bytes", ascending=False)
    if chosen.empty:
        return ""
    listed = [_server_phrase(row) for row in chosen.head(MAX_SERVERS_LISTED).to_dict("records")]
    more = len(chosen) - len(listed)
    tail = f"; and {more} more (see the servers table)" if more > 0 else ""
    return f"<b>{esc(label)}:</b> " + "; ".join(listed) + tail + "."


def _server_phrase(row: Mapping[str, Any]) -> str:
    name = _first_name(fmt.text(row.get("names")))
    where = location_text(row)
    text = f'<span class="mono">{esc(row.get("ip"))}</span>'
    text += f" ({esc(name)})" if name else ""
    text += f", {esc(where)}" if where else ""
    if truthy(row.get("flagged")):
        text += f' <span class="flag">flagged: {esc(row.get("flag_reason"))}</span>'
    return text


def _first_name(names: str) -> str:
    """'a.example (tls-sni); b (dns)' -> the first name without its source."""
    first = names.split(";")[0].strip()
    return first.rsplit(" (", 1)[0] if first else ""


def flagged_sentence(servers: pd.DataFrame, summary: Mapping[str, Any]) -> str:
    configured = [str(c) for c in summary.get("flag_countries") or []]
    flagged = servers[servers["flagged"].map(truthy)] if "flagged" in servers.columns else None
    if flagged is None:
        return ("<b>Flagged countries:</b> not checked (no location columns in the servers "
                "table).") if not configured else ""
    if flagged.empty:
        watch = f" (watched: {esc(', '.join(configured))})" if configured else ""
        return f"<b>Flagged servers:</b> none{watch}."
    parts = [f'<span class="mono">{esc(r.get("ip"))}</span>: {esc(r.get("flag_reason"))}'
             for r in flagged.to_dict("records")]
    return f'<b class="flag">Flagged servers ({len(parts)}):</b> ' + "; ".join(parts) + "."


def findings_sentence(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "<b>Findings:</b> none."
    ranked = sorted(findings, key=lambda f: SEVERITY_ORDER.index(f.get("severity", "info"))
                    if f.get("severity") in SEVERITY_ORDER else 9)
    titles: dict[tuple[str, str], int] = {}
    for item in ranked:
        key = (str(item.get("severity", "")), str(item.get("title", "")))
        titles[key] = titles.get(key, 0) + 1
    parts = [f'<span class="chip sev-{esc(s)}">{esc(s)}</span> {esc(t)}'
             + (f" (×{n})" if n > 1 else "") for (s, t), n in list(titles.items())[:5]]
    return ("<b>Findings:</b> " + "; ".join(parts)
            + ' — details in <a href="#findings">Findings</a>.')


def verdict_html(outputs: Outputs) -> str:
    flows, streams = outputs.table("flows"), outputs.table("streams")
    servers = outputs.table("servers")
    totals = coverage_totals(outputs.table("coverage"))
    cards = [*coverage_cards(totals), readers_card(streams), findings_card(outputs.findings)]
    facts = [encryption_sentence(totals, flows), keys_sentence(streams),
             server_items(servers, ("key-exchange", "control"), "Key and control servers"),
             server_items(servers, ("media-relay",), "Media relays"),
             server_items(servers, ("peer",), "Peers (media sent directly)"),
             flagged_sentence(servers, outputs.summary), findings_sentence(outputs.findings)]
    methods = methods_items(flows)
    method_html = ("<p class=\"note\">How, by volume:</p><ul class=\"facts\">"
                   + "".join(f"<li>{m}</li>" for m in methods) + "</ul>") if methods else ""
    return (f'<div class="verdict-grid">{"".join(cards)}</div><ul class="facts">'
            + "".join(f"<li>{f}</li>" for f in facts if f) + "</ul>" + method_html)
