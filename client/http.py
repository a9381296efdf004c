"""The gateway's HTTP routes (docs/PROTOCOL.md section 15) as a connection of the client protocol.

:class:`GatewayConnection` answers the read commands a :class:`~vledger.client.session.Reader`
sends (``get``, ``head``, ``size``, ``range``, ``checkpoint``, ``proof.inclusion``,
``proof.consistency``, ``ledger.list``) from the gateway's JSON routes, in the shapes a node
answers them over CURVE (section 6): so one reader verifies both transports. Nothing the
gateway says is trusted here either: only a record's exact bytes, a checkpoint's note and
the proofs' hashes are passed on, and the reader checks them.

A refusal (a 4xx or 5xx JSON error) is raised as RemoteError with the gateway's code, as a
node's refusal is; a gateway that does not answer in time, or answers with something that
is not its JSON, is NodeUnavailableError. A write command is refused before anything is sent:
the gateway is read-only. Ledger names and electronic ids are quoted into paths, never
spliced raw; an answer over ``max_bytes`` is refused unread.

:meth:`GatewayConnection.events` reads the Server-Sent Events stream (``/api/events``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from ..broker.client import NodeAddress
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import NodeUnavailableError, RemoteError, UsageError
from ..node.json_values import parse_json
from ..node.record import decode_record

log = logging.getLogger(__name__)
PAGE = 100  # records asked per range page: a page stays far under max_bytes
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # 100 records at the protocol's 81,920 bytes, in base64 and JSON
MAX_EVENT_LINE = 16 * 1024 * 1024  # a head event carries up to 50 records
READ_COMMANDS = frozenset(
    ("get", "head", "size", "range", "checkpoint", "proof.inclusion", "proof.consistency", "ledger.list")
)

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _quote(value: object, what: str) -> str:
    """``value`` as one path segment: a string, every character outside [A-Za-z0-9_.~-] escaped."""
    if not isinstance(value, str) or not value:
        raise UsageError(f"{what} must be a non-empty string")
    return urllib.parse.quote(value, safe="")


def _number(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UsageError(f"{what} must be an integer of at least 0")
    return value


def _unbase64(text: object) -> bytes:
    if not isinstance(text, str):
        raise NodeUnavailableError("the gateway's record has no base64 bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NodeUnavailableError(f"the gateway's record bytes are not base64: {e}") from None


def _hashes(value: object) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise NodeUnavailableError("the gateway's proof is not a list of hex hashes")
    try:
        return [bytes.fromhex(h) for h in value]
    except ValueError as e:
        raise NodeUnavailableError(f"the gateway's proof is not hex: {e}") from None


class GatewayConnection:
    """The read commands of the client protocol over one gateway's HTTP (``base_url``).

    Raises UsageError for a URL that is not ``http://`` or ``https://``.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"{base_url!r} is not a gateway URL (http://host:port/ or https://...)")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._commands: dict[str, Handler] = {
            "get": self._get,
            "head": self._head,
            "size": self._size,
            "range": self._range,
            "checkpoint": self._checkpoint,
            "proof.inclusion": self._inclusion,
            "proof.consistency": self._consistency,
            "ledger.list": lambda _: {"ledgers": self.get_json("/api/ledgers").get("ledgers")},
        }

    def __repr__(self) -> str:
        return f"GatewayConnection({self.base_url!r})"

    def close(self) -> None:
        """Nothing stays open between requests (each is one HTTP exchange)."""

    # --- HTTP ------------------------------------------------------------------------------------

    def _open(self, path: str, query: dict[str, int] | None = None, timeout: float | None = None) -> Any:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        # The scheme is http or https, checked in __init__: no file: or custom scheme reaches these.
        request = urllib.request.Request(url, headers={"Accept": "application/json, text/event-stream"})  # noqa: S310
        try:
            return urllib.request.urlopen(request, timeout=self.timeout if timeout is None else timeout)  # noqa: S310
        except urllib.error.HTTPError as e:
            raise self._refusal(e) from None
        except (urllib.error.URLError, OSError) as e:
            raise NodeUnavailableError(f"{self.base_url}: {getattr(e, 'reason', e)}") from None

    def _refusal(self, error: urllib.error.HTTPError) -> RemoteError | NodeUnavailableError:
        """The gateway's JSON error as the RemoteError a node would raise; anything else unavailable."""
        try:
            body = parse_json(error.read(64 * 1024))
            code, message = body["error"]["code"], body["error"]["message"]
        except (ValueError, KeyError, TypeError, OSError):
            return NodeUnavailableError(f"{self.base_url}: HTTP {error.code} without a JSON error")
        finally:
            error.close()
        if not isinstance(code, str) or not isinstance(message, str):
            return NodeUnavailableError(f"{self.base_url}: HTTP {error.code} with a malformed error")
        return RemoteError(code, message, {"status": error.code})

    def get_json(self, path: str, query: dict[str, int] | None = None) -> dict[str, Any]:
        """GET ``path`` and its JSON object. Raises RemoteError for the gateway's refusal,
        NodeUnavailableError for no answer, an answer over ``max_bytes`` or one that is not JSON."""
        with self._open(path, query) as response:
            try:
                data = response.read(self.max_bytes + 1)
            except (TimeoutError, OSError) as e:
                raise NodeUnavailableError(f"{self.base_url}{path}: {e}") from None
        if len(data) > self.max_bytes:
            raise NodeUnavailableError(f"{self.base_url}{path}: an answer over {self.max_bytes} bytes")
        try:
            value = parse_json(data)
        except ValueError as e:
            raise NodeUnavailableError(f"{self.base_url}{path}: not JSON: {e}") from None
        if not isinstance(value, dict):
            raise NodeUnavailableError(f"{self.base_url}{path}: the answer is not a JSON object")
        return value

    # --- the client protocol's read commands --------------------------------------------------------

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: NodeAddress | None = None) -> Any:
        """The result of read command ``cmd`` as a node would give it over CURVE (``node`` is
        ignored: one gateway serves every ledger of its store). Raises RemoteError
        ``unknown_command`` for a command the gateway does not serve (every write)."""
        handler = self._commands.get(cmd)
        if handler is None:
            raise RemoteError("unknown_command", f"{cmd} is not served over HTTP: the gateway is read-only", {})
        return handler(dict(args or {}))

    def _ledger_path(self, args: dict[str, Any]) -> str:
        return "/api/ledgers/" + _quote(args.get("ledger"), "ledger")

    def _get(self, args: dict[str, Any]) -> dict[str, Any]:
        digest = args.get("hash")
        if isinstance(digest, bytes):
            answer = self.get_json(f"/api/records/{digest.hex()}")
        else:
            answer = self.get_json(f"{self._ledger_path(args)}/records/{_number(args.get('height'), 'height')}")
        return {"record": _unbase64(answer.get("record"))}

    def _size(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"size": self.get_json(self._ledger_path(args)).get("size")}

    def _head(self, args: dict[str, Any]) -> dict[str, Any]:
        size = self._size(args)["size"]
        if not isinstance(size, int) or size < 1:
            raise NodeUnavailableError(f"{self.base_url}: the ledger's size is not a positive integer")
        data = self._get({"ledger": args.get("ledger"), "height": size - 1})["record"]
        # The hash is the record's own link: the reader checks the record, not this copy of it.
        return {"height": size - 1, "hash": decode_record(data, PROTOCOL_LIMITS).link, "record": data}

    def _range(self, args: dict[str, Any]) -> dict[str, Any]:
        start = _number(args.get("start", 0), "start")
        page = self.get_json(f"{self._ledger_path(args)}/records", {"start": start, "limit": PAGE})
        records = page.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise NodeUnavailableError(f"{self.base_url}: a range page without a list of records")
        return {"records": [_unbase64(r.get("record")) for r in records], "next": page.get("next")}

    def _checkpoint(self, args: dict[str, Any]) -> dict[str, Any]:
        witnesses = _number(args.get("witnesses", 0), "witnesses")
        answer = self.get_json(f"{self._ledger_path(args)}/checkpoint", {"witnesses": witnesses})
        note = answer.get("note")
        if not isinstance(note, str):
            raise NodeUnavailableError(f"{self.base_url}: a checkpoint answer without its note")
        # The ledger's key rotations below its size (13.8), as heights: the reader fetches each
        # record and its inclusion proof and follows the chain from the genesis key, as a node's
        # answer is followed (without them every read of a rotated ledger failed: outsider o20 F2).
        rotations = answer.get("rotations", [])
        heights = [r.get("index") for r in rotations if isinstance(r, dict)] if isinstance(rotations, list) else None
        if heights is None or len(heights) != len(rotations) or not all(type(h) is int and h >= 0 for h in heights):
            raise NodeUnavailableError(f"{self.base_url}: a checkpoint answer whose rotations are not indexed records")
        # The witnesses' rotated keys as the gateway proves them (16.6): checked by the reader.
        node_keys = answer.get("node_keys")
        carried = {"node_keys": node_keys} if node_keys is not None else {}
        return {"checkpoint": note.encode("utf-8"), "rotations": heights, **carried}

    def _inclusion(self, args: dict[str, Any]) -> dict[str, Any]:
        query = {"index": _number(args.get("index"), "index"), "size": _number(args.get("size"), "size")}
        answer = self.get_json(f"{self._ledger_path(args)}/proof/inclusion", query)
        return {"index": answer.get("index"), "size": answer.get("size"), "proof": _hashes(answer.get("proof"))}

    def _consistency(self, args: dict[str, Any]) -> dict[str, Any]:
        query = {"old": _number(args.get("old"), "old"), "new": _number(args.get("new"), "new")}
        answer = self.get_json(f"{self._ledger_path(args)}/proof/consistency", query)
        return {"old": answer.get("old"), "new": answer.get("new"), "proof": _hashes(answer.get("proof"))}

    # --- gateway-only routes ----------------------------------------------------------------------

    def tally(self, ledger: str) -> dict[str, Any]:
        """``/api/ledgers/L/tally`` as served: each observer's signed body and signature (hex)."""
        return self.get_json(f"/api/ledgers/{_quote(ledger, 'ledger')}/tally")

    def voter(self, ledger: str, eid: str) -> list[bytes]:
        """The bytes of the records ``/api/ledgers/L/voters/E`` lists for electronic id ``eid``
        (nothing else of the answer is passed on: the caller checks and proves each)."""
        answer = self.get_json(f"/api/ledgers/{_quote(ledger, 'ledger')}/voters/{_quote(eid, 'electronic id')}")
        records = answer.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise NodeUnavailableError(f"{self.base_url}: a voter's answer without a list of records")
        return [_unbase64(r.get("record")) for r in records]

    def open_events(self, idle_timeout: float) -> Iterator[tuple[str, Any]]:
        """The event stream (``/api/events``), opened now: its ``(event, data)`` pairs, data
        parsed as JSON, as they come. Raises NodeUnavailableError when the stream cannot be
        opened, and while iterating when it breaks or stays silent for ``idle_timeout`` seconds
        (the caller reopens it: the gateway keeps no history)."""
        return self._events(self._open("/api/events", timeout=idle_timeout))

    def _events(self, response: Any) -> Iterator[tuple[str, Any]]:
        with response:
            kind, data = "message", ""
            while True:
                try:
                    raw = response.readline(MAX_EVENT_LINE + 1)
                except (TimeoutError, OSError) as e:
                    raise NodeUnavailableError(f"{self.base_url}/api/events: {e}") from None
                if not raw:
                    raise NodeUnavailableError(f"{self.base_url}/api/events: the stream ended")
                if len(raw) > MAX_EVENT_LINE:
                    raise NodeUnavailableError(f"{self.base_url}/api/events: a line over {MAX_EVENT_LINE} bytes")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line:  # an event ends at a blank line (the SSE spec)
                    if data:
                        try:
                            yield kind, parse_json(data)
                        except ValueError:
                            log.warning("%s/api/events: an event of kind %r without JSON data", self.base_url, kind)
                    kind, data = "message", ""
