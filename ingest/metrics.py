"""Metrics and health probes for every node process: a thin layer beside the core, not in it.

A process builds a :class:`NodeMetrics`, adds what it can describe, and serves it with
:func:`health_server` on the node's ``http_port`` (``/metrics``, ``/healthz``, ``/readyz``;
broker/http.py). Nothing in the core counts anything: like dramatiq's Prometheus middleware,
:class:`MeteredService` wraps a request service, and the collectors read state that already
exists (store heads, the outbox queue, Redis holder heights, open alerts) when Prometheus
scrapes, so a process without an ``http_port`` pays nothing.

Series (all prefixed ``vledger_``): ``requests_total{command,code}`` (code ``ok`` or the error
code: ``throttled`` counts throttled requests), ``put_seconds`` (a put's time from request to
durable answer: the group commit's latency as a client sees it), ``store_height{ledger}``,
``replica_lag_records{ledger}`` (the home's holder height minus this copy's),
``outbox_backlog`` (commits not yet streamed and published), ``alerts_open``, and the
verifier's ``checked_records_total``, ``swept_records_total``, ``alerts_raised_total``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..broker.http import Check, HttpThread, health_app
from ..broker.replication import ReplicationLedger
from ..config.cluster import ClusterConfig, NodeConfig
from ..node.store import ChainStore
from .loop import Service, Waiting

log = logging.getLogger(__name__)
PUT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeMetrics:
    """One process's registry and the series every role shares."""

    def __init__(self, node: NodeConfig) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vledger_requests", "requests answered, by command and outcome code", ["command", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.put_seconds = Histogram(
            "vledger_put_seconds", "a put from request to durable answer", buckets=PUT_BUCKETS, registry=self.registry
        )

    def collect_with(self, collect: Callable[[], Iterable[Any]]) -> None:
        """Add a collector that yields metric families when scraped."""
        self.registry.register(_Collector(collect))


class _Collector(Collector):
    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Any]:
        try:
            yield from self._collect()
        except Exception as e:  # Redis down: the scrape still answers with what it has
            log.debug("a collector failed: %s", e)


def _code(reply: bytes) -> tuple[str, str]:
    """(ok or the error code) of a reply's bytes."""
    if b"\xa5error" not in reply:  # msgpack's "error": a reply without those bytes has no error key
        return "ok", "ok"
    value = msgpack.unpackb(reply, raw=False)
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        return "error", str(value["error"].get("code", "error"))
    return "ok", "ok"


class MeteredService:
    """A request service that counts every answer by command and code, and times puts."""

    def __init__(self, service: Service, metrics: NodeMetrics) -> None:
        self.service = service
        self.metrics = metrics
        # Each (command, code)'s counter, looked up once: labels() costs a lock and a lookup per
        # call. Bounded: _command keeps at most _KNOWN_COMMANDS commands.
        self._counters: dict[tuple[str, str], Any] = {}

    def handle(self, key: str, data: bytes) -> bytes | Waiting:
        started = time.monotonic()
        answer = self.service.handle(key, data)
        command = _command(data)
        if isinstance(answer, bytes):
            self._count(command, answer)
            return answer
        # Counted when the loop takes its reply, from the bytes it sends: a callback on the
        # future made each put's reply twice (once for the count, once for the client).
        return _MeteredReply(answer, self, command, started)

    def flush(self) -> None:
        self.service.flush()

    def answered(self, command: str, started: float, reply: bytes) -> None:
        """Count a waiting request's reply, and time a put, as the loop sends it."""
        if command == "put":
            self.metrics.put_seconds.observe(time.monotonic() - started)
        self._count(command, reply)

    def _count(self, command: str, reply: bytes) -> None:
        try:
            code = _code(reply)[1]
        except Exception:  # the reply is ours; a surprise here must not cost the answer
            code = "unreadable"
        counter = self._counters.get((command, code))
        if counter is None:
            counter = self._counters[(command, code)] = self.metrics.requests.labels(command, code)
        counter.inc()


class _MeteredReply:
    """A waiting request's answer whose reply is counted once, when the loop takes it."""

    __slots__ = ("_command", "_metered", "_pending", "_started")

    def __init__(self, pending: Waiting, metered: MeteredService, command: str, started: float) -> None:
        self._pending = pending
        self._metered = metered
        self._command = command
        self._started = started

    @property
    def future(self) -> Future[Any]:
        return self._pending.future

    def reply(self) -> bytes:
        reply = self._pending.reply()
        self._metered.answered(self._command, self._started, reply)
        return reply


_KNOWN_COMMANDS = 64  # distinct command labels kept; others are counted as "other"
_seen: set[str] = set()


def _command(data: bytes) -> str:
    """The request's ``cmd``, a bounded label: a client cannot make a series per string it sends."""
    try:
        value = msgpack.unpackb(data, raw=False)
        cmd = value.get("cmd") if isinstance(value, dict) else None
    except Exception:
        return "malformed"
    if not isinstance(cmd, str) or len(cmd) > 32:
        return "malformed"
    if cmd not in _seen and len(_seen) >= _KNOWN_COMMANDS:
        return "other"
    _seen.add(cmd)
    return cmd


def store_collector(
    store: ChainStore, config: ClusterConfig, node: str, replication: ReplicationLedger | None
) -> Callable[[], Iterable[Any]]:
    """Heights of this copy, and how far behind each ledger's home it is (from Redis holder heights)."""

    def collect() -> Iterator[Any]:
        heads = store.heads()
        heights = GaugeMetricFamily("vledger_store_height", "records this copy holds", labels=["ledger"])
        for ledger, (height, _) in sorted(heads.items()):
            heights.add_metric([ledger], height + 1)
        yield heights
        if replication is None:
            return
        lag = GaugeMetricFamily(
            "vledger_replica_lag_records", "the home's holder height minus this copy's", labels=["ledger"]
        )
        for ledger, (height, _) in sorted(heads.items()):
            home = config.home_of(ledger).name
            if home == node:
                continue
            held = replication.held(ledger).get(home)
            if held is not None:
                lag.add_metric([ledger], max(0, held - (height + 1)))
        yield lag

    return collect


def alerts_collector(replication: ReplicationLedger) -> Callable[[], Iterable[Any]]:
    def collect() -> Iterator[Any]:
        yield GaugeMetricFamily("vledger_alerts_open", "alerts not resolved", value=len(replication.open_alerts()))

    return collect


def counter_collector(name: str, text: str, read: Callable[[], int]) -> Callable[[], Iterable[Any]]:
    """A counter whose value the process already keeps (``read`` returns it)."""

    def collect() -> Iterator[Any]:
        yield CounterMetricFamily(name, text, value=read())

    return collect


def gauge_collector(name: str, text: str, read: Callable[[], int]) -> Callable[[], Iterable[Any]]:
    def collect() -> Iterator[Any]:
        yield GaugeMetricFamily(name, text, value=read())

    return collect


def redis_check(replication: ReplicationLedger) -> Check:
    def check() -> str | None:
        replication.client.ping()
        return None

    return check


def current_check(
    store: ChainStore, config: ClusterConfig, node: str, replication: ReplicationLedger, slack: int
) -> Check:
    """Ready when no ledger is more than ``slack`` records behind its home's holder height."""

    def check() -> str | None:
        behind = []
        for ledger, (height, _) in store.heads().items():
            home = config.home_of(ledger).name
            held = replication.held(ledger).get(home)
            if home != node and held is not None and held - (height + 1) > slack:
                behind.append(f"{ledger} {held - height - 1} behind")
        return ", ".join(behind) or None

    return check


@contextlib.contextmanager
def health_server(node: NodeConfig, metrics: NodeMetrics, checks: Mapping[str, Check]) -> Iterator[None]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on the node's ``http_port`` while inside (none: nothing)."""
    if node.http_port is None:
        yield
        return
    with HttpThread(health_app(checks, metrics.registry), node.bind_host, node.http_port, name=f"http-{node.name}"):
        yield
