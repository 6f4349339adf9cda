"""Self-contained HTML reports built from confscope's output tables (later issue)."""
