"""confscope: encryption, key-server and relay analysis of conferencing packet captures.

`analyze(paths) -> Analysis` runs the pipeline and returns its tables as pandas DataFrames.
The heavy modules are imported on first use, so `import analyzer` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
FORMAT_VERSION = 1

if TYPE_CHECKING:
    from analyzer.pipeline import Analysis, Settings, analyze

__all__ = ["FORMAT_VERSION", "Analysis", "Settings", "__version__", "analyze"]


def __getattr__(name: str) -> Any:
    if name in ("analyze", "Analysis", "Settings"):
        from analyzer import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'analyzer' has no attribute {name!r}")
