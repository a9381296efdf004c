"""Logging for vledger's entry points: quiet, one line per event, ``key=value`` pairs on stderr.

Modules only call ``logging.getLogger(__name__)``; an entry point calls
:func:`configure_logging` once. A line looks like
``ts=2026-05-01T12:00:00.123Z level=info logger=vledger.node.store msg="group commit of 3 records"``,
so that grep and log shippers can split it without a parser. Nothing here adds context of
its own: what a message carries is what its caller chose to log, and callers never log keys
or passwords.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
_ROOT = "vledger"


def _quote(text: str) -> str:
    """A value in double quotes, with quotes, backslashes and line breaks escaped: one line always."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class KeyValueFormatter(logging.Formatter):
    """Formats a record as ``ts=... level=... logger=... msg="..."`` (plus ``exc="..."``)."""

    def format(self, record: logging.LogRecord) -> str:
        millis = int(record.msecs)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{millis:03d}Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"logger={record.name}"]
        parts.append(f"msg={_quote(record.getMessage())}")
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class _VledgerHandler(logging.StreamHandler[TextIO]):
    """Marks the handler we installed, so that configuring again replaces it instead of adding one."""


def configure_logging(level: str = "warning", stream: TextIO | None = None) -> None:
    """Send vledger's logs at ``level`` and above to ``stream`` (stderr by default)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    logger = logging.getLogger(_ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _VledgerHandler)]:
        logger.removeHandler(handler)
    handler = _VledgerHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
