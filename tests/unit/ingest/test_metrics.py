"""MeteredService: a thin layer over the request service that must not change what it serves."""

from __future__ import annotations

from vledger.config.cluster import NodeConfig
from vledger.ingest.metrics import MeteredService, NodeMetrics
from vledger.ingest.service import Pending
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
