"""confscope: encryption, key-server and relay analysis of conferencing packet captures."""

__version__ = "0.1.0"
FORMAT_VERSION = 1
