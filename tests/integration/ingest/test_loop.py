"""The ingest node's socket loop on a real CURVE ROUTER, with a stand-in service.

The service's answers are scripted here: bytes at once, or a Pending reply whose Future the
test completes when it likes, from another thread as the store's committer does.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from itertools import pairwise
from typing import Any, cast

import msgpack
import pytest
import zmq

from vledger.broker.curve import AllowList, CurveServer, curve_client, stop_authenticator
from vledger.broker.keys import KeyPair, new_keypair
from vledger.ingest.loop import RequestLoop, Waiting
from vledger.ingest.runtime import stopped_by_signals
from vledger.ingest.service import Pending, replies_of

ENDPOINT = "tcp://127.0.0.1:*"
TIMEOUT_MS = 5000
QUIET_MS = 200  # how long "no reply" is watched for


class ScriptedService:
    """Answers ``b"slow:<id>"`` with a Pending reply (its Future kept in ``waiting``),
    ``b"shared:<group>:<n>"`` with a Pending reply on its group's one Future (in ``shared``), as
    a round of puts waits on one group commit, and anything else at once with
    ``b"<key>:<request>"``; records what it was asked, and when it was flushed. With
    ``done_on_flush``, flush completes every waiting Future, as the ingest node's group commit
    does on the loop's own thread."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, bytes]] = []
        self.waiting: dict[bytes, Future[Any]] = {}
        self.shared: dict[bytes, Future[Any]] = {}
        self.flushed: list[int] = []  # how many requests had been asked at each flush
        self.prepares = False
        self.rounds: list[tuple[int, int]] = []  # each prepared round's size, and what was in flight
        self.loop_in_flight: Callable[[], int] = lambda: 0
        self.checked: list[object] = []  # what handle was given with each request

        self.done_on_flush = False
        # Run in a flush that completed futures, once they are done, as the store's on_commit
        # runs after a lone put's future is done; what it returns is kept.
        self.after_done: Callable[[], object] | None = None
        self.after_done_returned: list[object] = []
        self.sent_replies: list[bytes] = []  # what the loop said went out (sent), in order

    def prepare(self, datas: Sequence[bytes]) -> list[str] | None:
        """With ``prepares``, each request's bytes, decoded, as if checked ahead (the ingest
        service's content-check process), and the round recorded with the loop's in flight."""
        if not self.prepares:
            return None
        self.rounds.append((len(datas), self.loop_in_flight()))
        return [data.decode() for data in datas]

    def flush(self) -> None:
        self.flushed.append(len(self.asked))
        if self.done_on_flush:
            completed = False
            for name, future in self.waiting.items():
                if not future.done():
                    future.set_result(name.decode())
                    completed = True
            if completed and self.after_done is not None:
                self.after_done_returned.append(self.after_done())

    def replies(self, waiting: list[Waiting]) -> list[bytes]:
        return replies_of(cast("list[Pending]", waiting))

    def sent(self, waiting: list[Waiting], replies: list[bytes]) -> None:
        self.sent_replies.extend(replies)

    def handle(self, key: str, data: bytes, checked: object = None) -> bytes | Pending:
        self.asked.append((key, data))
        self.checked.append(checked)
        if data.startswith(b"slow:"):
            future: Future[Any] = Future()
            self.waiting[data] = future
            return Pending(data.decode(), future, lambda result: {"done": result})
        if data.startswith(b"shared:"):
            group = data.split(b":")[1]
            shared = self.shared.setdefault(group, Future())
            return Pending(data.decode(), shared, lambda result: {"done": result})
        return key.encode() + b":" + data


def _reply(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return value


class Harness:
    def __init__(self, server: CurveServer, service: ScriptedService, loop: RequestLoop, ctx: zmq.Context[Any]) -> None:
        self.server = server
        self.service = service
        self.loop = loop
        self.ctx = ctx
        self.clients: list[zmq.Socket[Any]] = []

    def client(self, pair: KeyPair) -> zmq.Socket[Any]:
        sock = curve_client(self.ctx, zmq.DEALER, self.server.keys.public, pair)
        sock.connect(self.server.connect_endpoint)
        self.clients.append(sock)
        return sock


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    stop_authenticator(context)
    context.destroy(linger=0)


@pytest.fixture
def listed() -> KeyPair:
    return new_keypair()


@pytest.fixture
def harness(ctx: zmq.Context[Any], listed: KeyPair) -> Iterator[Callable[..., Harness]]:
    """A loop serving in a thread of its own; stopped (and checked to return) after the test."""
    made: list[tuple[Harness, threading.Thread]] = []

    def make(**options: Any) -> Harness:
        server = CurveServer(new_keypair(), ENDPOINT, AllowList([listed.public]), ctx=ctx)
        service = ScriptedService()
        loop = RequestLoop(server.socket, service, **options)
        thread = threading.Thread(target=loop.serve, daemon=True)
        thread.start()
        running = Harness(server, service, loop, ctx)
        made.append((running, thread))
        return running

    yield make
    for running, thread in made:
        running.loop.stop()
        for future in running.service.waiting.values():
            if not future.done():
                future.set_result(None)
        thread.join(TIMEOUT_MS / 1000)
        assert not thread.is_alive(), "serve did not return after stop"
        running.loop.close()
        for sock in running.clients:
            sock.close(linger=0)
        running.server.close()


def receive(sock: zmq.Socket[Any], timeout_ms: int = TIMEOUT_MS) -> bytes | None:
    if not sock.poll(timeout_ms, zmq.POLLIN):
        return None
    data: bytes = sock.recv()
    return data


def test_a_cheap_request_is_answered_with_the_senders_key(harness: Callable[..., Harness], listed: KeyPair) -> None:
    running = harness()
    client = running.client(listed)
    for n in range(3):
        client.send(b"ping-%d" % n)
        assert receive(client) == listed.public.encode() + b":ping-%d" % n


def test_a_waiting_request_is_answered_when_its_future_is_done_and_others_go_past_it(
    harness: Callable[..., Harness], listed: KeyPair
) -> None:
    running = harness()
    client = running.client(listed)
    client.send(b"slow:1")
    client.send(b"quick")
    assert receive(client) == listed.public.encode() + b":quick"
    assert receive(client, QUIET_MS) is None
    threading.Thread(target=running.service.waiting[b"slow:1"].set_result, args=(7,)).start()
    assert _reply(receive(client) or b"") == {"id": "slow:1", "ok": True, "result": {"done": 7}}


def test_each_later_completion_wakes_the_loop_again(harness: Callable[..., Harness], listed: KeyPair) -> None:
    running = harness()
    client = running.client(listed)
    for n in range(3):
        client.send(b"slow:%d" % n)
    assert receive(client, QUIET_MS) is None
    for n in range(3):  # one at a time: each finds the loop asleep again
        threading.Thread(target=running.service.waiting[b"slow:%d" % n].set_result, args=(n,)).start()
        assert _reply(receive(client) or b"")["result"] == {"done": n}


def test_futures_done_in_flush_are_answered_without_a_wake_up(harness: Callable[..., Harness], listed: KeyPair) -> None:
    running = harness()
    running.service.done_on_flush = True
    client = running.client(listed)
    replies = []
    for n in range(3):  # one at a time: each is read, flushed and answered in one round
        client.send(b"slow:%d" % n)
        replies.append(receive(client) or b"")
        assert _reply(replies[-1])["result"] == {"done": f"slow:{n}"}
        assert running.service.flushed[-1] == n + 1
    assert not running.loop._woken  # the loop's own completions wrote no byte to its pipe
    assert select.select([running.loop._wake_read], [], [], 0)[0] == []
    client.send(b"quick")  # read once the last flush returned: the service was told by then
    assert receive(client) == listed.public.encode() + b":quick"
    assert running.service.sent_replies == replies  # each told once it went out (the metrics count then)


def test_a_future_done_in_flush_is_answered_before_flush_returns(
    harness: Callable[..., Harness], listed: KeyPair
) -> None:
    """A lone put's answer goes out from its future's callback, before the rest of the group
    commit's work (the store's on_commit): here flush holds until the client has the answer."""
    running = harness()
    answered = threading.Event()
    running.service.done_on_flush = True
    running.service.after_done = lambda: answered.wait(QUIET_MS * 5 / 1000)
    client = running.client(listed)
    client.send(b"slow:1")
    assert _reply(receive(client) or b"")["result"] == {"done": "slow:1"}
    answered.set()
    client.send(b"quick")  # read only once that flush returned
    assert receive(client) == listed.public.encode() + b":quick"
    assert running.service.after_done_returned == [True]  # it had the answer while flush held


def test_a_failed_future_becomes_an_error_reply(harness: Callable[..., Harness], listed: KeyPair) -> None:
    running = harness()
    client = running.client(listed)
    client.send(b"slow:boom")
    assert receive(client, QUIET_MS) is None
    running.service.waiting[b"slow:boom"].set_exception(RuntimeError("a bug"))
    reply = _reply(receive(client) or b"")
    assert (reply["id"], reply["ok"], reply["error"]["code"]) == ("slow:boom", False, "error")
    assert "internal error" in reply["error"]["message"]


def test_many_futures_done_at_once_are_all_answered(harness: Callable[..., Harness], listed: KeyPair) -> None:
    running = harness()
    client = running.client(listed)
    names = [b"slow:%d" % n for n in range(300)]
    for name in names:
        client.send(name)
    for _ in range(100):  # every request read (and so waiting) before any is done
        if len(running.service.waiting) == len(names):
            break
        receive(client, 20)
    assert len(running.service.waiting) == len(names)

    def complete() -> None:  # as a group commit does: one thread, one after the other
        for name in names:
            running.service.waiting[name].set_result(None)

    threading.Thread(target=complete).start()
    answered = {_reply(receive(client) or b"")["id"] for _ in names}
    assert answered == {name.decode() for name in names}


def test_requests_waiting_on_one_future_are_answered_in_the_order_they_were_read(
    harness: Callable[..., Harness], listed: KeyPair
) -> None:
    running = harness()
    client = running.client(listed)
    for n in range(50):  # two rounds, interleaved, each waiting on its own Future
        client.send(b"shared:a:%d" % n)
        client.send(b"shared:b:%d" % n)
    for _ in range(100):
        if len(running.service.asked) == 100:
            break
        receive(client, 20)
    assert len(running.service.asked) == 100
    first = running.service.shared[b"a"]
    assert len(first._done_callbacks) == 1  # one callback for the 50 requests, not one each
    threading.Thread(target=first.set_result, args=("a",)).start()
    assert [_reply(receive(client) or b"")["id"] for _ in range(50)] == [f"shared:a:{n}" for n in range(50)]
    assert receive(client, QUIET_MS) is None  # round b is not done: none of it is answered
    running.service.shared[b"b"].set_result("b")
    assert [_reply(receive(client) or b"")["id"] for _ in range(50)] == [f"shared:b:{n}" for n in range(50)]
    client.send(b"shared:a:late")  # a Future already done answers a request that comes later at once
    assert _reply(receive(client) or b"") == {"id": "shared:a:late", "ok": True, "result": {"done": "a"}}
    assert running.loop._in_flight == 0 and running.loop._waiters == {}


def test_a_burst_goes_to_the_service_in_rounds_of_at_most_read_batch(
    harness: Callable[..., Harness], listed: KeyPair
) -> None:
    """Each round read is flushed (handed to the store's committer) before the next is read, so
    the committer works on one round while the loop reads the next (READ_BATCH says why)."""
    running = harness(read_batch=4)
    client = running.client(listed)
    for n in range(30):
        client.send(b"slow:%d" % n)
    for _ in range(100):
        if len(running.service.asked) == 30 and running.service.flushed[-1:] == [30]:
            break
        receive(client, 20)
    rounds = [after - before for before, after in pairwise([0, *running.service.flushed])]
    assert sum(rounds) == 30 and max(rounds) <= 4


def test_a_request_of_several_frames_is_refused_and_the_loop_goes_on(
    harness: Callable[..., Harness], listed: KeyPair
) -> None:
    running = harness()
    client = running.client(listed)
    client.send_multipart([b"one", b"two", b"three"])
    reply = _reply(receive(client) or b"")
    assert (reply["id"], reply["ok"], reply["error"]["code"]) == (None, False, "bad_request")
    assert "not 3" in reply["error"]["message"]
    client.send(b"after")
    assert receive(client) == listed.public.encode() + b":after"
    assert [data for _, data in running.service.asked] == [b"after"]


def test_past_max_in_flight_nothing_more_is_read_until_one_is_done(
    harness: Callable[..., Harness], listed: KeyPair
) -> None:
    running = harness(max_in_flight=2)
    client = running.client(listed)
    for name in (b"slow:a", b"slow:b", b"quick"):
        client.send(name)
    assert receive(client, QUIET_MS) is None
    assert sorted(running.service.waiting) == [b"slow:a", b"slow:b"]
    assert len(running.service.asked) == 2  # "quick" waits in ZeroMQ's queue
    running.service.waiting[b"slow:a"].set_result(None)
    replies = {receive(client), receive(client)}
    assert listed.public.encode() + b":quick" in replies


def test_a_prepared_round_counts_in_flight_and_each_request_gets_its_own_prepared_value(
    harness: Callable[..., Harness], listed: KeyPair
) -> None:
    running = harness(max_in_flight=4)
    running.service.prepares = True
    running.service.loop_in_flight = lambda: running.loop._in_flight
    client = running.client(listed)
    names = [f"slow:{i}".encode() for i in range(3)] + [f"quick:{i}".encode() for i in range(12)]
    for name in names:
        client.send(name)
    # Three wait; past them, at most one more is read a round (the round itself is in flight
    # while it is prepared): never a round of more than max_in_flight with what waits.
    for _ in range(12):
        assert receive(client) is not None
    for future in running.service.waiting.values():
        future.set_result(None)
    for _ in range(3):
        assert receive(client) is not None
    assert [data for _, data in running.service.asked] == names
    assert all(size + in_flight <= 4 for size, in_flight in running.service.rounds), running.service.rounds
    prepared = dict(zip([data for _, data in running.service.asked], running.service.checked, strict=True))
    assert all(value is None or value == data.decode() for data, value in prepared.items())


def test_stop_answers_what_is_in_flight_and_reads_nothing_more(
    harness: Callable[..., Harness], listed: KeyPair
) -> None:
    running = harness()
    client = running.client(listed)
    client.send(b"slow:last")
    client.send(b"first")
    assert receive(client) is not None  # both read
    running.loop.stop()
    client.send(b"too late")
    assert receive(client, QUIET_MS) is None
    running.service.waiting[b"slow:last"].set_result(1)
    assert _reply(receive(client) or b"")["id"] == "slow:last"
    assert receive(client, QUIET_MS) is None
    assert b"too late" not in [data for _, data in running.service.asked]


def test_sigterm_stops_a_loop_blocked_in_poll_after_answering_what_is_in_flight(
    ctx: zmq.Context[Any], listed: KeyPair
) -> None:
    """The node's own arrangement: serve in the main thread, the signal sent from another one."""
    service = ScriptedService()
    replies: list[bytes | None] = []
    handler = signal.getsignal(signal.SIGTERM)
    with CurveServer(new_keypair(), ENDPOINT, AllowList([listed.public]), ctx=ctx) as server:
        client = curve_client(ctx, zmq.DEALER, server.keys.public, listed)
        client.connect(server.connect_endpoint)

        def drive() -> None:
            client.send(b"slow:x")
            client.send(b"quick")
            replies.append(receive(client))  # the quick one: the slow one is read too
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Timer(QUIET_MS / 1000, service.waiting[b"slow:x"].set_result, args=(None,)).start()
            replies.append(receive(client))

        driver = threading.Thread(target=drive)
        try:
            with RequestLoop(server.socket, service) as loop, stopped_by_signals(loop):
                driver.start()
                loop.serve()
            driver.join(TIMEOUT_MS / 1000)
        finally:
            client.close(linger=0)
    assert replies[0] == listed.public.encode() + b":quick"
    assert replies[1] is not None and _reply(replies[1])["id"] == "slow:x"
    assert signal.getsignal(signal.SIGTERM) == handler


def test_a_call_asked_after_the_loop_closed_writes_to_no_descriptor() -> None:
    # A key rotation applied while a node stops asked call_soon of a closed loop: os.write on
    # its closed wake pipe (EBADF), or on whatever file had been given that number since.
    ctx = zmq.Context()
    socket = ctx.socket(zmq.ROUTER)
    try:
        loop = RequestLoop(socket, ScriptedService())  # type: ignore[arg-type]
        loop.close()
        taken_over = os.open(os.devnull, os.O_WRONLY)  # likely the wake pipe's old number
        try:
            loop.call_soon(lambda: None)
            loop.stop()
        finally:
            os.close(taken_over)
    finally:
        socket.close(0)
        ctx.term()
