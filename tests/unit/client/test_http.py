"""GatewayConnection against a small real HTTP server that answers what a gateway should not.

Refusals become RemoteError with the gateway's code; anything that is not the gateway's JSON
(an HTML error page, a body over the limit, garbage base64, a proof that is not hex) becomes
NodeUnavailableError; a write command is refused before anything is sent; names are quoted
into paths; the event stream is parsed event by event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from vledger.broker.http import HttpThread
from vledger.client.http import GatewayConnection
from vledger.node.errors import NodeUnavailableError, RemoteError, UsageError

SEEN: list[str] = []


async def _seen(request: web.BaseRequest, response: web.StreamResponse) -> None:
    # Every request's path as sent, also one the HTTP layer refuses before any route (15).
    SEEN.append(request.raw_path)


async def answer(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path == "/api/ledgers/refused/records/1":
        return web.json_response({"error": {"code": "not_found", "message": "no record"}}, status=404)
    if path == "/api/ledgers/html/records/1":
        return web.Response(text="<html>502 Bad Gateway</html>", status=502, content_type="text/html")
    if path == "/api/ledgers/huge/records/1":
        return web.Response(body=b"[" + b" " * 4096 + b"]", content_type="application/json")
    if path == "/api/ledgers/garbage/records/1":
        return web.json_response({"record": "not base64!"})
    if path == "/api/ledgers/garbage/proof/inclusion":
        return web.json_response({"proof": ["zz"]})
    if path == "/api/ledgers/deep/records/1":  # json's RecursionError, not a ValueError, unless mapped
        return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    if path == "/api/ledgers/deep-refusal/records/1":
        return web.Response(body=b"[" * 30_000 + b"]" * 30_000, status=404, content_type="application/json")
    if path == "/api/ledgers/list/records/1":
        return web.json_response([1, 2])
    if path == "/api/events":
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        await response.write(b'event: head\ndata: {"ledger": "a"}\n\n')
        await response.write(b"event: checkpoint\ndata: not json\n\n")
        await response.write(b"event: checkpoint\ndata: " + b"[" * 30_000 + b"]" * 30_000 + b"\n\n")
        await response.write(b'event: checkpoint\ndata: {"ledger": "a",\ndata: "size": 3}\n\n')
        return response
    return web.json_response({"error": {"code": "not_found", "message": "no such path"}}, status=404)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    app.on_response_prepare.append(_seen)
    with HttpThread(app, "127.0.0.1", 0) as server:
        yield f"http://127.0.0.1:{server.port}"


def test_a_refusal_is_the_gateways_code(url: str) -> None:
    with pytest.raises(RemoteError) as refused:
        GatewayConnection(url).call("get", {"ledger": "refused", "height": 1})
    assert refused.value.code == "not_found" and refused.value.details == {"status": 404}


@pytest.mark.parametrize(
    ("cmd", "args", "says"),
    [
        ("get", {"ledger": "html", "height": 1}, "HTTP 502 without a JSON error"),
        ("get", {"ledger": "huge", "height": 1}, "over 1000 bytes"),
        ("get", {"ledger": "garbage", "height": 1}, "not base64"),
        ("proof.inclusion", {"ledger": "garbage", "index": 0, "size": 1}, "not hex"),
        ("get", {"ledger": "list", "height": 1}, "not a JSON object"),
    ],
)
def test_what_is_not_the_gateways_json_is_unavailable(url: str, cmd: str, args: dict[str, Any], says: str) -> None:
    with pytest.raises(NodeUnavailableError, match=says):
        GatewayConnection(url, max_bytes=1000).call(cmd, args)


@pytest.mark.parametrize(
    ("ledger", "says"), [("deep", "not JSON: nested deeper"), ("deep-refusal", "HTTP 404 without a JSON error")]
)
def test_json_nested_deeper_than_json_reads_is_unavailable_not_a_crash(url: str, ledger: str, says: str) -> None:
    with pytest.raises(NodeUnavailableError, match=says):
        GatewayConnection(url).call("get", {"ledger": ledger, "height": 1})


def test_writes_and_bad_arguments_are_refused_before_sending(url: str) -> None:
    before = len(SEEN)
    connection = GatewayConnection(url)
    with pytest.raises(RemoteError) as refused:
        connection.call("put", {"content": b"x", "nonce": 0})
    assert refused.value.code == "unknown_command"
    with pytest.raises(UsageError):
        connection.call("get", {"ledger": "a", "height": -1})
    with pytest.raises(UsageError):
        connection.call("get", {"ledger": "", "height": 1})
    assert len(SEEN) == before
    for bad in ("file:///etc/passwd", "ftp://host/", "not a url"):
        with pytest.raises(UsageError):
            GatewayConnection(bad)


def test_names_are_quoted_into_one_path_segment(url: str) -> None:
    with pytest.raises(RemoteError) as refused:  # a gateway refuses any percent-escape in a path (15)
        GatewayConnection(url).call("size", {"ledger": "../../etc/passwd?x=1"})
    assert refused.value.code == "bad_request"
    assert SEEN[-1] == "/api/ledgers/..%2F..%2Fetc%2Fpasswd%3Fx%3D1"


def test_a_gateway_that_does_not_answer_is_unavailable() -> None:
    with pytest.raises(NodeUnavailableError):
        GatewayConnection("http://127.0.0.1:9", timeout=2).call("size", {"ledger": "a"})


def test_the_event_stream_is_read_event_by_event(url: str) -> None:
    stream = GatewayConnection(url).open_events(5.0)
    assert next(stream) == ("head", {"ledger": "a"})
    # The events without JSON (one nested deeper than json reads) are skipped; an event's data lines are joined.
    assert next(stream) == ("checkpoint", json.loads('{"ledger": "a", "size": 3}'))
    with pytest.raises(NodeUnavailableError, match="ended"):
        next(stream)
