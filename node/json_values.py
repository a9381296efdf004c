"""Protocol values (msgpack maps, lists, bytes) as JSON values, for the CLI's ``--json`` and the gateway."""

from __future__ import annotations

from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` with every binary value as lower-case hex and every map key a string, ready for json.dumps."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value
