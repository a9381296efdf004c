"""The allow-list, the User-Id helper and the monitor helper, without a network."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from vledger.broker.curve import AllowList, SenderKeys, sender_key, wait_for_event
from vledger.broker.keys import new_keypair
from vledger.node.errors import BadPublicKeyError, CurveError


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_the_callback_answers_from_the_current_set() -> None:
    a, b = new_keypair().public, new_keypair().public
    allow = AllowList([a])
    assert allow.callback("*", a.encode()) is True
    assert allow.callback("*", b.encode()) is False
    allow.replace([b])
    assert allow.callback("*", a.encode()) is False
    assert allow.callback("*", b.encode()) is True
    assert allow.keys() == {b}
    assert b in allow and a not in allow


def test_an_unknown_key_is_looked_up_again_only_after_a_catch_up_that_brought_the_list_up_to_date() -> None:
    known, added, stranger = (new_keypair().public for _ in range(3))
    allow = AllowList([known])
    calls: list[str] = []

    def catch_up() -> bool:  # what the accounts cache does: it reloads, and on_change replaces the set
        calls.append("looked")
        allow.replace([known, added])
        return True

    allow.on_unknown(catch_up)
    assert allow.callback("global", known.encode()) and calls == []  # a known key costs no look
    assert allow.callback("global", added.encode()) and calls == ["looked"]
    assert not allow.callback("global", stranger.encode()) and calls == ["looked", "looked"]


def test_the_allow_list_takes_only_public_keys() -> None:
    with pytest.raises(BadPublicKeyError):
        AllowList(["not a key"])
    allow = AllowList()
    with pytest.raises(BadPublicKeyError):
        allow.replace([new_keypair().public, "nope"])
    assert allow.keys() == frozenset()  # a bad replacement changes nothing


def test_replacing_while_the_callback_runs_is_safe() -> None:
    sets = [[new_keypair().public for _ in range(5)] for _ in range(2)]
    allow = AllowList(sets[0])
    stop = threading.Event()
    seen: list[bool] = []

    def ask() -> None:
        while not stop.is_set():
            seen.append(allow.callback("*", sets[0][0].encode()))

    thread = threading.Thread(target=ask)
    thread.start()
    for i in range(200):
        allow.replace(sets[i % 2])
    stop.set()
    thread.join()
    assert seen and set(seen) <= {True, False}


def test_sender_key_refuses_a_frame_that_no_authenticator_saw() -> None:
    with pytest.raises(CurveError, match="User-Id"):
        sender_key(zmq.Frame(b"hello"))
    senders = SenderKeys()
    for _ in range(2):
        with pytest.raises(CurveError, match="User-Id"):
            senders.key_of(zmq.Frame(b"hello"))


def test_wait_for_event_gives_up_at_the_deadline(ctx: zmq.Context[Any]) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.monitor("inproc://unit-monitor", zmq.EVENT_ALL)
    monitor = ctx.socket(zmq.PAIR)
    monitor.connect("inproc://unit-monitor")
    try:
        sock.bind("inproc://unit-bound")  # an event, but not the one asked for
        assert wait_for_event(monitor, zmq.EVENT_HANDSHAKE_FAILED_AUTH, 0.2) is None
    finally:
        sock.disable_monitor()
        sock.close(linger=0)
        monitor.close(linger=0)
