"""What a client writes, apart from the session that sends it: the CLI builds it while parsing
(tools/client_payloads.py) without importing a session and its ZeroMQ (tools/cli.py, COMMANDS)."""

from __future__ import annotations

from typing import Any, NamedTuple


class Write(NamedTuple):
    """A record to write: its kind, its payload, and the domain of the ledgers it belongs on."""

    kind: str
    payload: dict[str, Any]
    domain: str | None = None  # a genesis rules "type"; None: any ledger that allows the kind
