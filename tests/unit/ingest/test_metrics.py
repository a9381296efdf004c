"""MeteredService: a thin layer over the request service that must not change what it serves."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from vledger.config.cluster import NodeConfig
from vledger.ingest.metrics import MeteredService, NodeMetrics
from vledger.ingest.service import Pending
from vledger.node.errors import NoSuchLedgerError
from vledger.node.wire import encode_request


class _Service:
    def __init__(self) -> None:
        self.flushed = 0
        self.handled: list[str] = []

    def handle(self, key: str, data: bytes) -> bytes | Pending:
        self.handled.append(key)
        return b"\x81\xa2ok\xc3"

    def flush(self) -> None:
        self.flushed += 1


def _metrics() -> NodeMetrics:
    return NodeMetrics(NodeConfig(name="ingest-1", role="ingest", host="127.0.0.1", port=7101, pub_port=7201))


def test_a_metered_service_passes_flush_through() -> None:
    # The request loop commits queued puts on flush(): a metering layer that swallowed it
    # would leave every put waiting for a commit that never comes.
    inner = _Service()
    metered = MeteredService(inner, _metrics())
    metered.flush()
    metered.flush()
    assert inner.flushed == 2


def test_a_metered_service_answers_what_the_service_answers() -> None:
    inner = _Service()
    metered = MeteredService(inner, _metrics())
    assert metered.handle("key", encode_request(1, "hello", {})) == b"\x81\xa2ok\xc3"
    assert inner.handled == ["key"]


def test_requests_are_counted_by_command_and_code_and_a_pending_reply_is_built_once() -> None:
    """The reply the metrics read is the one the loop sends: built once, by the first reader."""
    metrics = _metrics()
    metered = MeteredService(_Service(), metrics)
    metered.handle("key", encode_request(1, "hello", {}))
    metered.handle("key", encode_request(2, "hello", {}))
    calls: list[object] = []
    future: Future[Any] = Future()

    def then(result: object) -> object:
        calls.append(result)
        return {"height": result}

    pending = Pending(3, future, then)
    metered.service = _Pending(pending)
    assert metered.handle("key", encode_request(3, "put", {})) is pending
    future.set_result(7)  # runs the metrics' callback, which reads the reply
    assert calls == [7]
    assert pending.reply() is pending.reply() and calls == [7]
    assert metrics.registry.get_sample_value("vledger_requests_total", {"command": "hello", "code": "ok"}) == 2
    assert metrics.registry.get_sample_value("vledger_requests_total", {"command": "put", "code": "ok"}) == 1
    failed: Future[Any] = Future()
    metered.service = _Pending(Pending(4, failed, then))
    metered.handle("key", encode_request(4, "put", {}))
    failed.set_exception(NoSuchLedgerError("no ledger 'x'"))
    assert (
        metrics.registry.get_sample_value("vledger_requests_total", {"command": "put", "code": "no_such_ledger"}) == 1
    )


class _Pending(_Service):
    def __init__(self, pending: Pending) -> None:
        super().__init__()
        self.pending = pending

    def handle(self, key: str, data: bytes) -> bytes | Pending:
        return self.pending
