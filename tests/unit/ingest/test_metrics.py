"""MeteredService: a thin layer over the request service that must not change what it serves."""

from __future__ import annotations

from concurrent.futures import Future

from vledger.config.cluster import NodeConfig
from vledger.ingest.metrics import MeteredService, NodeMetrics
from vledger.ingest.service import Pending
from vledger.node.wire import encode_request, reply_ok


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


def test_a_pending_reply_is_made_once_for_the_metrics_and_the_loop() -> None:
    # The metrics count a waiting request by its reply's code when it finishes, and the loop
    # then sends that reply: one put's result must not be turned into a reply twice.
    made: list[object] = []

    def then(result: object) -> object:
        made.append(result)
        return {"height": result}

    future: Future[int] = Future()
    pending = Pending(7, future, then)
    metered = MeteredService(_Pending(pending), _metrics())
    assert metered.handle("key", encode_request(7, "put", {})) is pending
    future.set_result(3)  # the metrics' callback makes the reply
    assert pending.reply() == reply_ok(7, {"height": 3})
    assert made == [3]


class _Pending:
    def __init__(self, pending: Pending) -> None:
        self.pending = pending

    def handle(self, key: str, data: bytes) -> bytes | Pending:
        return self.pending

    def flush(self) -> None:
        pass
