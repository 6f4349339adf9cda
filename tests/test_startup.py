"""Start-up cost counts (issue: performance): a run imports only what its capture needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def modules_loaded_by_a_run(capture: Path) -> set[str]:
    script = ("import sys\n"
              "from analyzer.pipeline import Settings, analyze\n"
              f"analyze([{str(capture)!r}], Settings(jobs=1, hash_captures=False))\n"
              "print(' '.join(sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(out.stdout.split())


@pytest.mark.parametrize(("capture", "needs_cryptography"), [
    ("sip_rtp.pcap", False),  # SIP and RTP only
    ("webrtc_call.pcapng", True),  # DTLS certificates
    ("quic_meet.pcap", True),  # QUIC Initials to decrypt
])
def test_cryptography_is_imported_only_for_certificates_and_quic(capture: str,
                                                                  needs_cryptography: bool) -> None:
    loaded = modules_loaded_by_a_run(CAPTURES / capture)
    assert ("cryptography.hazmat.bindings._rust" in loaded) == needs_cryptography
    assert ("cryptography.x509" in loaded) == (capture == "webrtc_call.pcapng")


def test_the_command_gives_arrow_the_c_librarys_allocator() -> None:
    """Arrow's own allocator keeps what it frees: 100 MB more at the peak on a capture of
    many flows. The command asks for the C library's, unless the user chose one."""
    script = ("import analyzer.cli, pyarrow\n"
              "print(pyarrow.default_memory_pool().backend_name)\n")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    chosen = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=120, env=env).stdout.split()
    assert chosen == ["system"]
    env["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"
    chosen = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=120, env=env).stdout.split()
    assert chosen == ["jemalloc"]
