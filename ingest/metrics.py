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

import bisect
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics import _use_created
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from ..broker.http import Check, Details, HttpThread, health_app
from ..broker.replication import ReplicationLedger
from ..config.cluster import ClusterConfig, HttpSettings, NodeConfig
from ..node.store import ChainStore
from .loop import Service, Waiting

log = logging.getLogger(__name__)
PUT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Each bucket's le label as prometheus_client's Histogram writes it ("0.001", "1.0", "+Inf").
_PUT_LE: tuple[str, ...] = tuple(floatToGoString(b) for b in (*PUT_BUCKETS, float("inf")))  # type: ignore[no-untyped-call]


class NodeMetrics:
    """One process's registry and the series every role shares."""

    def __init__(self, node: NodeConfig) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.requests = RequestCounts()
        self.registry.register(self.requests)

    def collect_with(self, collect: Callable[[], Iterable[Any]]) -> None:
        """Add a collector that yields metric families when scraped."""
        self.registry.register(_Collector(collect))


class RequestCounts(Collector):
    """``vledger_requests_total{command,code}`` and ``vledger_put_seconds``, the series a
    prometheus_client Counter and Histogram would give (``_created`` samples included), kept
    in plain ints and floats.

    Why not those classes: each inc() or observe() takes a lock and walks Python code (the
    histogram its buckets one by one), about a tenth of the request thread's time under
    pipelined puts. Here a count is one dict update and a put's time one bisect. Only one
    thread may call :meth:`count` and :meth:`observe_put` (the request loop's, through
    :class:`MeteredService`); a scrape reads from another, copying under the GIL, so it sees
    each count as of some moment (a histogram's sum may lag its buckets by the put being
    added, as prometheus_client's own may)."""

    def __init__(self) -> None:
        self._created = time.time()
        self._counts: dict[tuple[str, str], int] = {}
        self._counts_created: dict[tuple[str, str], float] = {}
        self._put_buckets = [0] * (len(PUT_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self._put_sum = 0.0

    def count(self, command: str, code: str) -> None:
        """One more answer to ``command`` with outcome ``code``."""
        key = (command, code)
        counts = self._counts
        if key in counts:
            counts[key] += 1
        else:
            # The series' creation time first: a scrape that sees the count sees its time.
            self._counts_created[key] = time.time()
            counts[key] = 1

    def count_many(self, counts: Mapping[tuple[str, str], int]) -> None:
        """As many more answers to each (command, code) as ``counts`` says: a round's, at once."""
        for key, more in counts.items():
            if key in self._counts:
                self._counts[key] += more
            else:
                self._counts_created[key] = time.time()  # first, as in count()
                self._counts[key] = more

    def observe_put(self, seconds: float) -> None:
        """One put answered ``seconds`` after its request was read."""
        # A bucket counts the puts at or under its bound (Prometheus's le): bisect_left finds it.
        self._put_buckets[bisect.bisect_left(PUT_BUCKETS, seconds)] += 1
        self._put_sum += seconds

    def observe_puts(self, seconds: Iterable[float]) -> None:
        """:meth:`observe_put` for each of ``seconds``, in order (the sum adds them in that order)."""
        buckets, put_sum, where = self._put_buckets, self._put_sum, bisect.bisect_left
        for each in seconds:
            buckets[where(PUT_BUCKETS, each)] += 1
            put_sum += each
        self._put_sum = put_sum

    def collect(self) -> Iterable[Any]:
        requests = CounterMetricFamily(
            "vledger_requests", "requests answered, by command and outcome code", labels=["command", "code"]
        )
        created = dict(self._counts_created)
        for key, value in list(self._counts.items()):
            requests.add_metric(key, value, created=created[key] if _use_created else None)
        yield requests
        put_sum = self._put_sum
        cumulative, total = [], 0
        for le, count in zip(_PUT_LE, list(self._put_buckets), strict=True):
            total += count
            cumulative.append((le, total))
        put_seconds = HistogramMetricFamily("vledger_put_seconds", "a put from request to durable answer")
        put_seconds.add_metric([], cumulative, put_sum)
        if _use_created:
            put_seconds.samples.append(Sample("vledger_put_seconds_created", {}, self._created))
        yield put_seconds

    def describe(self) -> Iterable[Any]:
        # Registered names, without a scrape (a registry asks to detect duplicates).
        yield CounterMetricFamily("vledger_requests", "", labels=["command", "code"])
        yield HistogramMetricFamily("vledger_put_seconds", "")


class _Collector(Collector):
    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Any]:
        try:
            yield from self._collect()
        except Exception as e:  # Redis down: the scrape still answers with what it has
            log.debug("a collector failed: %s", e)


_ERROR_KEY = b"\xa5error"  # msgpack's "error"
_monotonic = time.monotonic  # a module global: one lookup, not two, twice a put


def _code(reply: bytes) -> tuple[str, str]:
    """(ok or the error code) of a reply's bytes."""
    if _ERROR_KEY not in reply:  # msgpack's "error": a reply without those bytes has no error key
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
        self._requests = metrics.requests
        # A prepared round's requests are timed from before its prepare (the wait on the
        # content-check process is the put's time too): when it began, and how many of its
        # requests handle() has still to take. The loop hands each of them to handle() once,
        # right after prepare(), on this one thread.
        self._round_at = 0.0
        self._round_left = 0

    def prepare(self, datas: Sequence[bytes]) -> Sequence[Any] | None:
        self._round_at, self._round_left = _monotonic(), len(datas)
        try:
            return self.service.prepare(datas)
        except BaseException:
            self._round_left = 0  # the loop hands none of them on: later requests time themselves
            raise

    def handle(self, key: str, data: bytes, checked: Any = None) -> bytes | Waiting:
        if self._round_left:
            self._round_left -= 1
            started = self._round_at
        else:
            started = _monotonic()
        answer = self.service.handle(key, data, checked)
        # The command the service parsed, when it says (IngestService.last_command): decoding
        # the request again here cost a put as much as a tenth of its parse. A label already
        # seen (never None) is taken as it is, what _bounded returns for it, without the call.
        parsed = getattr(self.service, "last_command", None)
        command = parsed if parsed in _seen else (_command(data) if parsed is None else _bounded(parsed))
        if isinstance(answer, bytes):
            self._count(command, answer)
            return answer
        # Counted when the loop takes its reply, from the bytes it sends: a callback on the
        # future made each put's reply twice (once for the count, once for the client).
        return _MeteredReply(answer, self, command, started)

    def flush(self) -> None:
        self.service.flush()

    def replies(self, waiting: list[Waiting]) -> list[bytes]:
        """The service's replies to ``waiting`` (what :meth:`handle` returned), counted by
        :meth:`sent` once they went out: off a lone put's way to its client."""
        # No cast() (a Python call each time): what handle returned for a waiting request is a _MeteredReply.
        if len(waiting) == 1:  # a lone put's: no comprehension (a call) for one
            return self.service.replies([waiting[0]._pending])  # type: ignore[attr-defined]
        return self.service.replies([each._pending for each in waiting])  # type: ignore[attr-defined]

    def sent(self, waiting: list[Waiting], replies: list[bytes]) -> None:
        """Count ``replies`` (to ``waiting``) and time the puts, once for the round: one clock
        reading and one update of the counts, not one of each a reply (they cost a pipelined put
        as much as making its reply)."""
        metered: list[_MeteredReply] = waiting  # type: ignore[assignment]  # what handle returned (no cast(): a call)
        now = _monotonic()
        if len(metered) == 1:  # a lone writer's put: its count and time straight in, no round's tallies
            each, reply = metered[0], replies[0]
            self.service.sent([each._pending], replies)
            if each._command == "put":
                self._requests.observe_put(now - each._started)
            if _ERROR_KEY not in reply:  # _code's own first test
                self._requests.count(each._command, "ok")
            else:
                self._count(each._command, reply)
            return
        self.service.sent([each._pending for each in metered], replies)
        # A round of pipelined puts is all "put" and all "ok": told by one comprehension, a
        # count and one look for an error key in the round's bytes (a false find only takes the
        # way below), where a loop of lookups and dict updates a reply cost more (p39). Anything
        # else is counted reply by reply: by command, the errors by (command, code), as _count.
        commands = [each._command for each in metered]
        if commands.count("put") == len(commands):
            self._requests.observe_puts([now - each._started for each in metered])
            if _ERROR_KEY not in b"".join(replies):
                self._requests.count_many({("put", "ok"): len(commands)})
                return
        else:
            self._requests.observe_puts([now - each._started for each in metered if each._command == "put"])
        counts: dict[tuple[str, str], int] = {}
        for command, reply in zip(commands, replies, strict=True):
            if _ERROR_KEY not in reply:  # _code's own first test: no error key, "ok"
                key = (command, "ok")
            else:
                try:
                    key = (command, _code(reply)[1])
                except Exception:  # the reply is ours; a surprise here must not cost the answer
                    key = (command, "unreadable")
            counts[key] = counts.get(key, 0) + 1
        self._requests.count_many(counts)

    def answered(self, command: str, started: float, reply: bytes) -> None:
        """Count a waiting request's reply, and time a put, as the loop sends it."""
        if command == "put":
            self._requests.observe_put(_monotonic() - started)
        self._count(command, reply)

    def _count(self, command: str, reply: bytes) -> None:
        try:
            code = _code(reply)[1]
        except Exception:  # the reply is ours; a surprise here must not cost the answer
            code = "unreadable"
        self._requests.count(command, code)


class _MeteredReply:
    """A waiting request's answer whose reply is counted once, when the loop takes it."""

    __slots__ = ("_command", "_metered", "_pending", "_started", "future")

    def __init__(self, pending: Waiting, metered: MeteredService, command: str, started: float) -> None:
        self._pending = pending
        self._metered = metered
        self._command = command
        self._started = started
        # The pending answer's future, copied (it never changes): the loop reads it once a
        # request, and a property cost that read a call.
        self.future: Future[Any] = pending.future

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
    if not isinstance(cmd, str):
        return "malformed"
    return _bounded(cmd)


def _bounded(cmd: str) -> str:
    """``cmd`` as a label: "malformed" if longer than 32 characters, "other" once
    _KNOWN_COMMANDS distinct commands were seen."""
    if cmd in _seen:
        return cmd
    if len(cmd) > 32:
        return "malformed"
    if len(_seen) >= _KNOWN_COMMANDS:
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
        yield GaugeMetricFamily("vledger_alerts_open", "alerts not resolved", value=len(replication.open_entries()))

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
def health_server(
    node: NodeConfig,
    metrics: NodeMetrics,
    checks: Mapping[str, Check],
    settings: HttpSettings | None = None,
    details: Details | None = None,
) -> Iterator[None]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` (with ``details``' fields) on the node's
    ``http_port`` while inside (none: nothing), with ``[http]``'s ``settings`` (its defaults when None)."""
    if node.http_port is None:
        yield
        return
    app = health_app(checks, metrics.registry, details)
    name = f"http-{node.name}"
    with HttpThread(app, node.bind_host, node.http_port, name=name, settings=settings, registry=metrics.registry):
        yield
