"""Which key generation a node's sockets serve where through a rotation's window, and which it connects with."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from vledger.broker.curve import AllowList
from vledger.broker.feed import FeedRecord, FeedSource, Publisher, Subscriber
from vledger.broker.file_budget import process_budget
from vledger.broker.keys import KeyPair, generate, new_keypair
from vledger.broker.redis_server import free_port
from vledger.config.cluster import NodeConfig
from vledger.config.settings import BrokerSettings
from vledger.ingest.members import now_ms
from vledger.ingest.node_key_rotation import ClientKeys, RotatingKeys, serving_generations, start_keys
from vledger.ingest.outbox_process import FeedProxy, FeedPusher
from vledger.node.node_key_rotation import KeyHistory, key_histories

K0, K1, K2 = ("A" * 40, "B" * 40, "C" * 40)


def test_the_endpoint_keeps_the_old_key_for_the_window_and_the_rotation_endpoint_has_the_new() -> None:
    rotation = {"node": "ingest-1", "curve": K1, "sign": "1" * 64, "accepted": 1000, "until": 5000}
    history = key_histories({"ingest-1": (K0, "0" * 64)}, [rotation])["ingest-1"]
    assert serving_generations(None, 3000) == (0, None)
    assert serving_generations(history, 999) == (0, None)
    assert serving_generations(history, 1000) == (0, 1)
    assert serving_generations(history, 4999) == (0, 1)
    assert serving_generations(history, 5000) == (1, None)  # the old key's listener is gone


def test_a_node_restarted_after_two_rotations_serves_the_newest_on_its_endpoint() -> None:
    rotations = [
        {"node": "ingest-1", "curve": K1, "sign": "1" * 64, "accepted": 1000, "until": 5000},
        {"node": "ingest-1", "curve": K2, "sign": "2" * 64, "accepted": 6000, "until": 9000},
    ]
    history = key_histories({"ingest-1": (K0, "0" * 64)}, rotations)["ingest-1"]
    assert serving_generations(history, 7000) == (1, 2)
    assert serving_generations(history, 9000) == (2, None)


# --- the feed and the node's client key, on real CURVE sockets ----------------------------------

DEADLINE = 10.0


def test_the_start_check_asks_with_the_newest_key_generation_on_disk_then_the_one_before(tmp_path: Path) -> None:
    # Outsider o18 F1: it asked with generation 0, which the others refuse once a window ended.
    first = generate(tmp_path, "ingest-1")
    assert start_keys(tmp_path, "ingest-1", None, first) == [first]
    one = generate(tmp_path, "ingest-1@1")
    assert [k.public for k in start_keys(tmp_path, "ingest-1", None, first)] == [one.public, first.public]
    two = generate(tmp_path, "ingest-1@2")
    assert [k.public for k in start_keys(tmp_path, "ingest-1", None, first)] == [two.public, one.public]
    (tmp_path / "ingest-1@2.key_secret").write_text("junk")  # unreadable: the one before alone
    assert [k.public for k in start_keys(tmp_path, "ingest-1", None, first)] == [one.public]
    # The node's client keys: the disk's guess until it read its key history, then the one in force.
    own = ClientKeys("ingest-1", tmp_path, None, first)
    assert [k.public for k in own.candidates()] == [one.public]
    own.update(_history("ingest-1", first, one, now_ms() - 1))
    assert own.candidates() == [own.current] and own.current.public == one.public


def _feed_node(tmp_path: Path) -> tuple[NodeConfig, Path]:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    node = NodeConfig(
        "ingest-1", "ingest", "127.0.0.1", free_port(), pub_port=free_port(), feed_rotation_port=free_port()
    )
    return node, keys_dir


def _history(node: str, old: KeyPair, new: KeyPair, until: int) -> dict[str, KeyHistory]:
    rotation = {"node": node, "curve": new.public, "sign": "1" * 64, "accepted": now_ms(), "until": until}
    return key_histories({node: (old.public, "0" * 64)}, [rotation])


def _subscriber(ctx: zmq.Context[Any], keys: KeyPair, server: str, *endpoints: str) -> Subscriber:
    source = FeedSource("ingest-1", endpoints[0], server, tuple(endpoints[1:]))
    return Subscriber(ctx, keys, [source], receive_hwm=10_000, max_message_bytes=1 << 20, max_record_bytes=1 << 16)


def _heard(publisher: Publisher | FeedPusher, sub: Subscriber, seconds: float) -> set[int]:
    """The heights ``sub`` received while ``publisher`` (a PUB socket, or the outbox process's
    PUSH socket into an ingest node's feed proxy) sent one a tick for ``seconds``."""
    heard: set[int] = set()
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        publisher.record("votes", n, b"r")
        heard.update(m.height for m in sub.receive(20, 1000) if isinstance(m, FeedRecord))
    return heard


def _until_heard(publisher: Publisher, sub: Subscriber) -> None:
    deadline = time.monotonic() + DEADLINE
    while not _heard(publisher, sub, 0.2):
        assert time.monotonic() < deadline, "nothing arrived"


def test_a_feed_serves_the_new_key_on_its_rotation_port_then_on_its_port_and_the_old_key_gets_nothing(
    tmp_path: Path,
) -> None:
    node, keys_dir = _feed_node(tmp_path)
    old, new = generate(keys_dir, "ingest-1"), generate(keys_dir, "ingest-1@1")
    member = new_keypair()
    allow = AllowList()
    allow.replace({member.public})
    assert node.bind_feed_endpoint is not None and node.bind_feed_rotation_endpoint is not None
    publisher = Publisher("ingest-1", old, node.bind_feed_endpoint, allow, BrokerSettings(), send_hwm=10_000)
    rotation = RotatingKeys(node, keys_dir, None, 0, (node.bind_feed_endpoint, node.bind_feed_rotation_endpoint))
    rotation.attach(publisher.socket, publisher.call_soon)
    ctx: zmq.Context[Any] = zmq.Context()
    feed, side = node.bind_feed_endpoint, node.bind_feed_rotation_endpoint
    holds_old = _subscriber(ctx, member, old.public, feed)
    holds_new = _subscriber(ctx, member, new.public, feed, side)
    try:
        _until_heard(publisher, holds_old)
        until = now_ms() + 1500
        rotation.update(_history("ingest-1", old, new, until))
        # During the window: the old key on the port, the new one on the rotation port.
        _until_heard(publisher, holds_new)
        assert rotation.rotation_serving == 1 and rotation.serving == 0
        assert _heard(publisher, holds_old, 0.3), "the old key is served until the window's end"
        while now_ms() <= until:
            time.sleep(0.05)
        rotation.update(_history("ingest-1", old, new, until))  # what MemberGates' timer does
        _heard(publisher, holds_old, 0.3)  # the re-bind runs before a send
        assert rotation.serving == 1
        # After it: nothing for the old key, on the connection it had or a new one.
        fresh_old = _subscriber(ctx, member, old.public, feed)
        main_only = _subscriber(ctx, member, new.public, feed)
        _until_heard(publisher, main_only)  # the new key alone on the port
        assert not _heard(publisher, holds_old, 0.5) and not _heard(publisher, fresh_old, 0.5)
        assert _heard(publisher, holds_new, 0.3)
        for sub in (fresh_old, main_only):
            sub.close()
    finally:
        holds_old.close()
        holds_new.close()
        publisher.close()
        ctx.destroy(linger=0)


def _wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_an_ingest_node_s_feed_proxy_re_binds_its_rotation_while_nothing_is_sent(tmp_path: Path) -> None:
    """An ingest node publishes through its outbox's feed proxy: that thread owns the PUB
    socket and runs the rotation's re-binds at once, even when no message flows. The feed's
    guard counts what stays open: the re-bind closed the old key's connections with no event."""
    held_before = process_budget().held
    node, keys_dir = _feed_node(tmp_path)
    old, new = generate(keys_dir, "ingest-1"), generate(keys_dir, "ingest-1@1")
    member = new_keypair()
    allow = AllowList()
    allow.replace({member.public})
    assert node.bind_feed_endpoint is not None and node.bind_feed_rotation_endpoint is not None
    publisher = Publisher("ingest-1", old, node.bind_feed_endpoint, allow, BrokerSettings(), send_hwm=10_000)
    proxy = FeedProxy(publisher, 10_000).start()
    rotation = RotatingKeys(node, keys_dir, None, 0, (node.bind_feed_endpoint, node.bind_feed_rotation_endpoint))
    rotation.attach(publisher.socket, proxy.call_soon)
    ctx: zmq.Context[Any] = zmq.Context()
    pusher = FeedPusher(ctx, "ingest-1", proxy.endpoint, 10_000)
    feed, side = node.bind_feed_endpoint, node.bind_feed_rotation_endpoint
    holds_new = _subscriber(ctx, member, new.public, side)
    holds_old = _subscriber(ctx, member, old.public, feed)
    try:
        deadline = time.monotonic() + DEADLINE
        while not _heard(pusher, holds_old, 0.2):
            assert time.monotonic() < deadline, "nothing arrived on the port"
        until = now_ms() + 1000
        rotation.update(_history("ingest-1", old, new, until))
        _wait(lambda: rotation.rotation_serving == 1, "the rotation port bound, nothing sent")
        deadline = time.monotonic() + DEADLINE
        while not _heard(pusher, holds_new, 0.2):
            assert time.monotonic() < deadline, "nothing arrived on the rotation port"
        while now_ms() <= until:
            time.sleep(0.05)
        rotation.update(_history("ingest-1", old, new, until))  # what MemberGates' timer does
        _wait(lambda: rotation.serving == 1, "the port re-bound with the new key, nothing sent")
        main_only = _subscriber(ctx, member, new.public, feed)
        deadline = time.monotonic() + DEADLINE
        while not _heard(pusher, main_only, 0.2):
            assert time.monotonic() < deadline, "the new key is not served on the port"
        holds_old.close()  # refused since the re-bind: it would keep connecting again
        guard = publisher.server.guard
        assert guard is not None
        _wait(lambda: guard.open == 2, "the guard counting the two connections open (main_only, holds_new)")
        main_only.close()
    finally:
        holds_old.close()
        holds_new.close()
        pusher.close(0)
        proxy.stop()
        proxy.call_soon(lambda: None)  # a rotation's timer at shutdown: dropped, no error
        publisher.close()
        ctx.destroy(linger=0)
    assert process_budget().held == held_before, "places of the process's budget kept by connections gone"


def test_a_retargeted_subscriber_connects_with_its_new_key_and_the_feed_s() -> None:
    server_old, server_new = new_keypair(), new_keypair()
    me_old, me_new = new_keypair(), new_keypair()
    allow = AllowList()
    allow.replace({me_new.public})  # only our new key is admitted
    first = Publisher("ingest-1", server_new, "tcp://127.0.0.1:*", allow, BrokerSettings(), send_hwm=10_000)
    ctx: zmq.Context[Any] = zmq.Context()
    sub = _subscriber(ctx, me_old, server_old.public, first.server.connect_endpoint)
    try:
        assert not _heard(first, sub, 0.5)
        source = FeedSource("ingest-1", first.server.connect_endpoint, server_new.public)
        sub.retarget(me_new, [source])
        _until_heard(first, sub)
        before = sub.sockets
        sub.retarget(me_new, [source])  # the same target: the socket stays
        sub.receive(1, 1)
        assert sub.sockets is before
    finally:
        sub.close()
        first.close()
        ctx.destroy(linger=0)


def test_the_client_key_is_the_newest_generation_from_the_record_on(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    old, new = generate(keys_dir, "replica-1"), generate(keys_dir, "replica-1@1")
    own = ClientKeys("replica-1", keys_dir, None, old)
    heard: list[KeyPair] = []
    assert own.follow(heard.append) == old
    own.update(_history("replica-1", old, new, now_ms() + 60_000))
    assert own.current == new and heard == [new]
    own.update(_history("replica-1", old, new, now_ms() + 60_000))  # nothing new: nobody told again
    assert heard == [new]
    # A key file that is not the admin ledger's key is not used: the node keeps its key.
    other = ClientKeys("replica-1", keys_dir, None, old)
    other.update(_history("replica-1", old, new_keypair(), now_ms() + 60_000))
    assert other.current == old


def test_a_rotated_key_taken_after_errors_says_so_at_the_default_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """o21 F11: `vledger key rotate` logged ERRORs until the key files arrived; the key taken then
    was said at INFO only, below the default level, so the log's last word stayed the errors."""
    keys_dir, elsewhere = tmp_path / "keys", tmp_path / "operator"
    keys_dir.mkdir()
    elsewhere.mkdir()
    old, new = generate(keys_dir, "replica-1"), generate(elsewhere, "replica-1@1")
    own = ClientKeys("replica-1", keys_dir, None, old)
    history = _history("replica-1", old, new, now_ms() + 60_000)
    with caplog.at_level(logging.INFO, logger="vledger"):
        own.update(history)
        assert own.current == old and [r.levelno for r in caplog.records] == [logging.ERROR]
        for path in elsewhere.iterdir():
            shutil.copy2(path, keys_dir / path.name)
        own.update(history)
    assert own.current == new
    taken = caplog.records[-1]
    assert taken.levelno == logging.WARNING and "after the errors above" in taken.getMessage()
