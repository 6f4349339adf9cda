"""Benchmark harness: a synthetic conferencing capture generator and a timing runner.

`python -m bench.make_capture` writes the capture, `python -m bench.run` times confscope against
tshark and ndpiReader on it. Nothing here is imported by the `analyzer` package.
"""
