"""Times as people read them: the protocol's milliseconds since 1970 (UTC) in ISO 8601. Pure."""

from __future__ import annotations

from datetime import UTC, datetime


def time_text(ms: int) -> str:
    """Milliseconds since 1970 UTC as ISO 8601 (UTC), or the number itself when out of range."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def ms_text(ms: int) -> str:
    """``ms`` as a rule's message gives a time: the number the chain holds, and beside it the
    ISO 8601 time a reader can check it against (``1796636018552 (2026-12-07T09:33:38.552Z)``)."""
    return f"{ms} ({time_text(ms)})"
