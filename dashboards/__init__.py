"""Self-contained HTML dashboards built from confscope's output tables (never from decoder
internals): `report.build_report(OUTDIR)` writes OUTDIR/report.html,
`compare.build_comparison([OUTDIR, ...], DIR)` writes DIR/compare.html and
`figures.export_figures(OUTDIR)` writes the key figures as PNG and SVG."""
