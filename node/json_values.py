"""Protocol values (msgpack maps, lists, bytes) as JSON values, for the CLI's ``--json`` and the gateway."""

from __future__ import annotations

import json
from typing import Any


def parse_json(text: str | bytes, **options: Any) -> Any:
    """``json.loads(text, **options)``, with the two ways json fails outside JSONDecodeError refused
    as a JSONDecodeError like any other text that is not JSON: a value nested deeper than the
    parser can go (json's RecursionError is no ValueError) and an integer of more digits than
    Python converts (a bare ValueError). Otherwise the ``except JSONDecodeError`` of a reader of a
    gateway's answer or a file lets them through as a crash instead of the documented error code.
    """
    try:
        return json.loads(text, **options)
    except RecursionError:
        raise json.JSONDecodeError("nested deeper than a JSON value may be read", "", 0) from None
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError) or type(e) is not ValueError:  # a hook's own error stays its own
            raise
        raise json.JSONDecodeError(f"a number too long to read ({str(e)[:60]}...)", "", 0) from None


def jsonable(value: Any) -> Any:
    """``value`` with every binary value as lower-case hex and every map key a string, ready for json.dumps."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


def error_json(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure as every ``--json`` output states it (README, PROTOCOL 6.2's refusal): ``{"error":
    {"code", "message", ...}}``, a node's refusal's own fields (``details``) beside the two, as JSON values."""
    fields = {key: jsonable(value) for key, value in (details or {}).items() if key not in ("code", "message")}
    return {"error": {"code": code, "message": message, **fields}}
