"""Colours, labels and the page's CSS: one place, so a verdict looks the same everywhere."""

from __future__ import annotations

VERDICTS = ("encrypted", "weak", "cleartext", "unknown")
VERDICT_COLOURS = {
    "encrypted": "#2e7d32",  # green
    "weak": "#ef8c00",  # orange
    "cleartext": "#c62828",  # red
    "unknown": "#8a8f98",  # grey
}
VERDICT_LABELS = {
    "encrypted": "encrypted",
    "weak": "weakly encrypted",
    "cleartext": "cleartext",
    "unknown": "unknown",
}

# Server roles, most telling first; hues kept away from the verdict colours.
ROLES = ("key-exchange", "control", "media-relay", "stun", "peer", "dns", "other")
ROLE_COLOURS = {
    "key-exchange": "#6a1b9a",  # purple
    "control": "#1565c0",  # blue
    "media-relay": "#00838f",  # teal
    "stun": "#5d4037",  # brown
    "peer": "#ad1457",  # magenta
    "dns": "#37474f",  # slate
    "other": "#546e7a",
}
ROLE_LABELS = {
    "key-exchange": "key exchange",
    "control": "control / key delivery",
    "media-relay": "media relay",
    "stun": "STUN",
    "peer": "peer (other participant)",
    "dns": "DNS resolver",
    "other": "other",
}
SEVERITY_COLOURS = {"high": "#c62828", "medium": "#ef8c00", "low": "#1565c0", "info": "#8a8f98"}
FLAGGED_COLOUR = "#c62828"
COUNTRY_COLOUR = "#b9d3ee"
FLAGGED_COUNTRY_COLOUR = "#f4a6a6"
FONT_FAMILY = ("system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, "
               "'Liberation Sans', sans-serif")

CSS = """
:root { --ink:#1d2330; --muted:#5b6472; --line:#e3e6eb; --bg:#f6f7f9; --card:#fff;
  --enc:#2e7d32; --weak:#ef8c00; --clear:#c62828; --unk:#8a8f98; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font: 15px/1.5 FONT; }
header.top { background:#18202e; color:#fff; padding:18px 32px 14px; }
header.top h1 { margin:0; font-size:22px; font-weight:600; letter-spacing:.2px; }
header.top .sub { color:#c5ccd8; font-size:13px; margin-top:4px; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid var(--line);
  padding:0 32px; display:flex; flex-wrap:wrap; gap:2px; }
nav a { color:var(--muted); text-decoration:none; padding:10px 10px; font-size:13px;
  font-weight:500; }
nav a:hover { color:var(--ink); background:var(--bg); }
main { max-width:1360px; margin:0 auto; padding:20px 32px 48px; }
section { scroll-margin-top:48px; background:var(--card); border:1px solid var(--line);
  border-radius:8px; padding:18px 22px; margin:0 0 18px; }
section h2 { margin:0 0 4px; font-size:18px; }
section h3 { margin:18px 0 8px; font-size:15px; }
p.lead { color:var(--muted); margin:0 0 12px; font-size:13.5px; }
.verdict-grid { display:grid; grid-template-columns: repeat(auto-fit, minmax(250px, 1fr));
  gap:14px; margin:10px 0 14px; }
.stat { border:1px solid var(--line); border-radius:6px; padding:12px 14px; }
.stat .big { font-size:28px; font-weight:650; line-height:1.1; }
.stat .big.words { font-size:21px; padding:4px 0 3px; }
.stat .what { color:var(--muted); font-size:13px; }
.bar { display:flex; height:10px; border-radius:5px; overflow:hidden; margin-top:8px;
  background:#eef0f3; }
.bar span { display:block; height:100%; }
ul.facts { margin:6px 0 0; padding-left:20px; }
ul.facts li { margin:4px 0; }
.chip { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px;
  font-weight:600; color:#fff; white-space:nowrap; }
.v-encrypted { background:var(--enc); } .v-weak { background:var(--weak); }
.v-cleartext { background:var(--clear); } .v-unknown { background:var(--unk); }
.t-encrypted { color:var(--enc); } .t-weak { color:var(--weak); }
.t-cleartext { color:var(--clear); } .t-unknown { color:var(--unk); }
.sev-high { background:#c62828; } .sev-medium { background:#ef8c00; }
.sev-low { background:#1565c0; } .sev-info { background:#8a8f98; }
.flag { color:#c62828; font-weight:600; }
.muted { color:var(--muted); }
.figure { width:100%; min-height:120px; }
.note { font-size:13px; color:var(--muted); margin:6px 0 0; }
.table-wrap { overflow-x:auto; border:1px solid var(--line); border-radius:6px; }
.table-wrap.scroll { max-height:560px; overflow-y:auto; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:6px 9px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { background:#f0f2f5; position:sticky; top:0; font-weight:600; white-space:nowrap; }
td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
td.mono, span.mono { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace;
  font-size:12px; }
td.mono { word-break:break-all; }
span.mono { white-space:nowrap; }
td.wide { min-width:220px; }
td.nowrap { word-break:normal; white-space:nowrap; }
tr.flagged td { background:#fff4f4; }
.finding { border:1px solid var(--line); border-left:5px solid #8a8f98; border-radius:6px;
  padding:10px 14px; margin:10px 0; }
.finding.high { border-left-color:#c62828; } .finding.medium { border-left-color:#ef8c00; }
.finding.low { border-left-color:#1565c0; }
.finding h3 { margin:0 0 4px; font-size:15px; }
.finding dl { display:grid; grid-template-columns: 150px 1fr; gap:2px 12px; margin:8px 0 0;
  font-size:13px; }
.finding dt { color:var(--muted); }
.finding dd { margin:0; min-width:0; overflow-wrap:anywhere; }
.finding dd span.mono { white-space:normal; }  /* a long frame filter wraps, not widens */
details summary { cursor:pointer; color:var(--muted); font-size:13.5px; margin:8px 0; }
dl.prov { display:grid; grid-template-columns: 190px 1fr; gap:4px 14px; font-size:13px; }
dl.prov dt { color:var(--muted); }
dl.prov dd { margin:0; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:0 0 30px; }
""".replace("FONT", FONT_FAMILY)
