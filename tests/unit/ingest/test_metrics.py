"""MeteredService: a thin layer over the request service that must not change what it serves."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, cast

import msgpack
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from vledger.broker.replication import Alert, ReplicationLedger
from vledger.config.cluster import NodeConfig
from vledger.ingest import metrics as metrics_module
from vledger.ingest.loop import Waiting
from vledger.ingest.metrics import PUT_BUCKETS, MeteredService, NodeMetrics
from vledger.ingest.service import Pending, replies_of
from vledger.node.errors import NoSuchLedgerError, ThrottledError
from vledger.node.wire import encode_request, reply_error


class _Service:
    def __init__(self) -> None:
        self.flushed = 0
        self.handled: list[str] = []

    def handle(self, key: str, data: bytes, checked: object = None) -> bytes | Pending:
        self.handled.append(key)
        return b"\x81\xa2ok\xc3"

    def prepare(self, datas: Sequence[bytes]) -> None:
        """Nothing to prepare: each request is handled as it is."""

    def flush(self) -> None:
        self.flushed += 1

    def replies(self, waiting: list[Waiting]) -> list[bytes]:
        return replies_of(cast("list[Pending]", waiting))

    def sent(self, waiting: list[Waiting], replies: list[bytes]) -> None:
        """Nothing to do once replies went out."""


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


def _sample(metrics: NodeMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_waiting_put_is_counted_and_timed_once_from_the_reply_the_client_gets() -> None:
    made: list[int] = []

    class _Waits(_Service):
        def __init__(self) -> None:
            super().__init__()
            self.future: Future[Any] = Future()

        def handle(self, key: str, data: bytes, checked: object = None) -> bytes | Pending:
            def then(result: object) -> object:
                made.append(1)  # each call makes the reply's bytes anew
                return result

            return Pending(7, self.future, then)

    inner = _Waits()
    metrics = _metrics()
    metered = MeteredService(inner, metrics)
    answer = metered.handle("key", encode_request(7, "put", {"entry": b"x"}))
    assert not isinstance(answer, bytes)
    assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "ok"}) is None  # not yet answered
    inner.future.set_result({"height": 3})
    reply = answer.reply()  # what the request loop sends, once
    assert msgpack.unpackb(reply) == {"id": 7, "ok": True, "result": {"height": 3}}
    assert made == [1]  # made once: the count read the bytes the client got
    assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "ok"}) == 1
    assert _sample(metrics, "vledger_put_seconds_count", {}) == 1


def test_error_replies_are_counted_by_their_code() -> None:
    class _Refuses(_Service):
        def handle(self, key: str, data: bytes, checked: object = None) -> bytes | Pending:
            return reply_error(1, ThrottledError("slow down"))

    metrics = _metrics()
    metered = MeteredService(_Refuses(), metrics)
    for _ in range(3):
        metered.handle("key", encode_request(1, "put", {}))
    assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "throttled"}) == 3
    assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "ok"}) is None


def test_requests_are_counted_by_command_and_code_a_failed_wait_by_its_error_code() -> None:
    metrics = _metrics()
    metered = MeteredService(_Service(), metrics)
    metered.handle("key", encode_request(1, "hello", {}))
    metered.handle("key", encode_request(2, "hello", {}))
    failed: Future[Any] = Future()
    metered.service = _Pending(Pending(4, failed, lambda result: result))
    answer = metered.handle("key", encode_request(4, "put", {}))
    assert not isinstance(answer, bytes)
    failed.set_exception(NoSuchLedgerError("no ledger 'x'"))
    assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "no_such_ledger"}) is None
    answer.reply()  # the loop takes the reply: counted now, once
    assert _sample(metrics, "vledger_requests_total", {"command": "hello", "code": "ok"}) == 2
    assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "no_such_ledger"}) == 1


def test_a_round_of_waiting_replies_is_counted_and_timed_as_each_reply_would_be() -> None:
    # The loop answers the requests that waited on one future together (MeteredService.replies):
    # each is counted by its own code and each put timed once, as answer.reply() does one by one.
    round_done: Future[Any] = Future()
    then = {1: lambda r: r, 2: lambda r: r, 3: lambda r: (_ for _ in ()).throw(NoSuchLedgerError("no ledger 'x'"))}
    together, one_by_one = _metrics(), _metrics()
    answers = {}
    for metrics in (together, one_by_one):
        metered = MeteredService(_Service(), metrics)
        answers[id(metrics)] = []
        for request_id, command in ((1, "put"), (2, "get"), (3, "put")):
            metered.service = _Pending(Pending(request_id, round_done, then[request_id]))
            answers[id(metrics)].append(metered.handle("key", encode_request(request_id, command, {})))
    round_done.set_result({"height": 3})
    metered_together = MeteredService(_Service(), together)
    replies = metered_together.replies(answers[id(together)])
    # Counted once the loop sent them (MeteredService.sent), not on their way out.
    assert _sample(together, "vledger_requests_total", {"command": "put", "code": "ok"}) is None
    assert _sample(together, "vledger_put_seconds_count", {}) == 0
    metered_together.sent(answers[id(together)], replies)  # type: ignore[arg-type]
    assert replies == [answer.reply() for answer in answers[id(one_by_one)]]  # type: ignore[union-attr]
    for metrics in (together, one_by_one):
        assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "ok"}) == 1
        assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "no_such_ledger"}) == 1
        assert _sample(metrics, "vledger_requests_total", {"command": "get", "code": "ok"}) == 1
        assert _sample(metrics, "vledger_put_seconds_count", {}) == 2


@pytest.mark.parametrize("refused", [(), (2,), (1, 3)])
def test_a_round_of_puts_alone_is_counted_and_timed_as_each_reply_would_be(refused: tuple[int, ...]) -> None:
    # A round of pipelined puts only (MeteredService.sent's own way when none is refused): the
    # same counts and put times as each reply counted alone, with or without refusals among them.
    round_done: Future[Any] = Future()
    together, one_by_one = _metrics(), _metrics()
    answers: dict[int, list[Any]] = {}

    def then(request_id: int) -> Any:
        if request_id in refused:
            return lambda r: (_ for _ in ()).throw(NoSuchLedgerError("no ledger 'x'"))
        return lambda r: r

    for metrics in (together, one_by_one):
        metered = MeteredService(_Service(), metrics)
        answers[id(metrics)] = []
        for request_id in (1, 2, 3):
            metered.service = _Pending(Pending(request_id, round_done, then(request_id)))
            answers[id(metrics)].append(metered.handle("key", encode_request(request_id, "put", {})))
    round_done.set_result({"height": 3})
    metered_together = MeteredService(_Service(), together)
    metered_together.sent(answers[id(together)], metered_together.replies(answers[id(together)]))
    for answer in answers[id(one_by_one)]:
        answer.reply()
    for metrics in (together, one_by_one):
        ok = _sample(metrics, "vledger_requests_total", {"command": "put", "code": "ok"})
        assert ok == 3 - len(refused)
        no_ledger = _sample(metrics, "vledger_requests_total", {"command": "put", "code": "no_such_ledger"})
        assert no_ledger == (len(refused) or None)
        assert _sample(metrics, "vledger_put_seconds_count", {}) == 3


def test_a_lone_waiting_reply_sent_is_counted_and_timed_as_its_reply_alone_would_be() -> None:
    # A lone writer's put goes out alone (MeteredService.sent's own way for one reply): it is
    # counted by its code and, a put, timed once, as answer.reply() counts it; an error too.
    done: Future[Any] = Future()
    refused: Future[Any] = Future()
    sent, alone = _metrics(), _metrics()
    for metrics in (sent, alone):
        metered = MeteredService(_Service(), metrics)
        for request_id, command, future in ((1, "put", done), (2, "put", refused), (3, "get", done)):
            metered.service = _Pending(Pending(request_id, future, lambda r: r))
            answer = metered.handle("key", encode_request(request_id, command, {}))
            assert not isinstance(answer, bytes)
            if not future.done():
                future.set_result({"height": 3}) if future is done else future.set_exception(NoSuchLedgerError("x"))
            if metrics is sent:
                metered.sent([answer], metered.replies([answer]))
            else:
                answer.reply()
    for metrics in (sent, alone):
        assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "ok"}) == 1
        assert _sample(metrics, "vledger_requests_total", {"command": "put", "code": "no_such_ledger"}) == 1
        assert _sample(metrics, "vledger_requests_total", {"command": "get", "code": "ok"}) == 1
        assert _sample(metrics, "vledger_put_seconds_count", {}) == 2


def test_a_prepared_round_s_puts_are_timed_from_before_its_prepare(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait on the content-check process (prepare) is part of each put of its round: the
    histogram started after it, so a slow or restarting process never showed in put times."""
    clock = [100.0]
    monkeypatch.setattr(metrics_module, "_monotonic", lambda: clock[0])
    done: Future[Any] = Future()
    done.set_result({"height": 1})

    class _Checks(_Pending):
        def prepare(self, datas: Sequence[bytes]) -> None:
            clock[0] += 0.3  # the process answers the round 300 ms after it was read

    metrics = _metrics()
    metered = MeteredService(_Checks(Pending(1, done, lambda result: result)), metrics)
    datas = [encode_request(i, "put", {}) for i in range(8)]
    metered.prepare(datas)
    answers = [metered.handle("key", data) for data in datas]
    metered.sent(answers, metered.replies(answers))  # type: ignore[arg-type]  # as the loop: counted once sent
    lone = metered.handle("key", encode_request(9, "put", {}))  # read alone, not prepared: from its handle
    lone.reply()  # type: ignore[union-attr]
    assert _sample(metrics, "vledger_put_seconds_count", {}) == 9
    assert _sample(metrics, "vledger_put_seconds_bucket", {"le": "0.25"}) == 1
    assert _sample(metrics, "vledger_put_seconds_bucket", {"le": "0.5"}) == 9
    assert _sample(metrics, "vledger_put_seconds_sum", {}) == pytest.approx(8 * 0.3)


class _Pending(_Service):
    def __init__(self, pending: Pending) -> None:
        super().__init__()
        self.pending = pending

    def handle(self, key: str, data: bytes, checked: object = None) -> bytes | Pending:
        return self.pending


def _scrape(registry: CollectorRegistry) -> str:
    """The text exposition with the _created timestamps (times of creation) masked."""
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", generate_latest(registry).decode())


def test_the_request_series_are_exposed_as_prometheus_clients_counter_and_histogram_expose_them() -> None:
    # The oracle: prometheus_client's own classes, fed the same answers and put times, in the
    # same order (so that the float sums are the same), bucket bounds exactly included.
    oracle = CollectorRegistry()
    counter = Counter(
        "vledger_requests", "requests answered, by command and outcome code", ["command", "code"], registry=oracle
    )
    histogram = Histogram(
        "vledger_put_seconds", "a put from request to durable answer", buckets=PUT_BUCKETS, registry=oracle
    )
    metrics = _metrics()
    rng = random.Random(7)
    times = [*PUT_BUCKETS, 0.0, 7.5, *(rng.uniform(0, 6) for _ in range(300)), *(b * (1 + 1e-12) for b in PUT_BUCKETS)]
    for seconds in times:
        histogram.observe(seconds)
        metrics.requests.observe_put(seconds)
    for _ in range(200):
        command, code = rng.choice(["put", "hello", "get"]), rng.choice(["ok", "throttled", "not_home"])
        counter.labels(command, code).inc()
        metrics.requests.count(command, code)
    assert _scrape(metrics.registry) == _scrape(oracle)


def test_the_command_label_is_the_one_the_service_parsed_when_it_says() -> None:
    class _Parsed(_Service):
        last_command: str | None = "get"

    metrics = _metrics()
    metered = MeteredService(_Parsed(), metrics)
    metered.handle("key", b"\xc1")  # not msgpack: only the service's word names the command
    assert _sample(metrics, "vledger_requests_total", {"command": "get", "code": "ok"}) == 1
    metered.service = _Parsed()
    metered.service.last_command = None  # it did not parse the request: the label is read from the bytes
    metered.handle("key", encode_request(1, "hello", {}))
    metered.handle("key", b"\xc1")
    assert _sample(metrics, "vledger_requests_total", {"command": "hello", "code": "ok"}) == 1
    assert _sample(metrics, "vledger_requests_total", {"command": "malformed", "code": "ok"}) == 1


def test_open_alerts_are_counted_one_per_raiser_of_a_key(redis_client: Any) -> None:
    # Outsider o16 2: two raisers of one key counted (and were shown) as one, the later's.
    alert = Alert("replica-1", "votes", 3, "bad_link", "refused")
    for node in ("replica-1", "verifier-1"):
        ReplicationLedger(redis_client, node=node).alert(alert)
    reader = ReplicationLedger(redis_client, raisers=["replica-1", "verifier-1"])
    (family,) = metrics_module.alerts_collector(reader)()
    assert [sample.value for sample in family.samples] == [2]
