"""Text from a capture, made safe to print on a terminal."""

from __future__ import annotations

import re

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def printable(value: object) -> str:
    """`value` as text with its control characters written as \\xNN: an escape sequence in a
    server name (SNI, DNS answer, certificate) could otherwise retitle, clear or recolour the
    user's terminal."""
    return CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
