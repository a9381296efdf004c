"""Standard output a person can trust: no character that reorders, hides or rewrites what follows.

A ledger may hold names written before the identifier rule (docs/PROTOCOL.md 7.5), and a
node or Redis may send any string. Printed raw, a right-to-left override (U+202E) makes
``V-1\u202eevil`` show as another id, and an escape sequence can rewrite the terminal.
:func:`escaped_stdout` puts a filter on ``sys.stdout`` for the run of one command: every
control, format, separator, private-use or unassigned character but the newline and the
tab is written as ``\\uXXXX`` (node/identifiers.py, :func:`escape`). JSON output keeps its
value (those characters only ever stand inside its strings, where ``\\uXXXX`` means them),
and bytes written to ``sys.stdout.buffer`` (``vledger export``) pass untouched.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import BinaryIO, TextIO, cast

from ..node.identifiers import escape

# The layout of human output: lines and table columns.
_LAYOUT = "\n\t"


class EscapingWriter(io.TextIOBase):
    """A text stream that writes to ``stream`` with every unsafe character escaped."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.written = False  # whether anything was written through it

    def write(self, text: str) -> int:
        self.stream.write(escape(text, keep=_LAYOUT))
        self.written = self.written or bool(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def buffer(self) -> BinaryIO:
        return self.stream.buffer


@contextlib.contextmanager
def escaped_stdout() -> Iterator[EscapingWriter]:
    """``sys.stdout`` escaped (see the module) until the block ends, then as it was."""
    original = sys.stdout
    writer = EscapingWriter(original)
    # io.TextIOBase is what print() and json need; typeshed names sys.stdout a TextIO.
    sys.stdout = cast(TextIO, writer)
    try:
        yield writer
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        sys.stdout = original


def terminal() -> TextIO:
    """The stream under the filter, for the few control sequences written on purpose
    (``--watch`` clearing the screen)."""
    stdout = sys.stdout
    return stdout.stream if isinstance(stdout, EscapingWriter) else stdout
