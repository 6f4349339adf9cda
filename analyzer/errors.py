"""Errors confscope raises at its boundaries.

`ConfscopeError` and its subclasses are shown to the user as one line with a non-zero exit;
`DecodeError` is the only exception a protocol decoder may raise on malformed bytes.
"""


class ConfscopeError(Exception):
    """A problem the user can act on (bad input, unreadable file); shown as one line."""


class CaptureFormatError(ConfscopeError):
    """The file is not a capture confscope can read (bad magic, unknown format)."""


class DecodeError(ValueError):
    """A protocol decoder was given bytes that are not a valid message of its protocol."""
