"""A peer that publishes forged records: each is refused, reported and never stored.

replica-2 follows only replica-1, a relay. The test stops replica-1 and takes its place:
it binds replica-1's feed (an XPUB, which shows when replica-2 has subscribed) and its read
socket (every request refused at once) with replica-1's own key pair, as a node gone bad
would. It publishes records built from real ones with one thing changed: a wrong link, a
wrong checksum, too little work, a real record replayed under another height, and a
self-consistent record where replica-2 already holds another. Each refusal is an alert in
``vledger:alerts`` that names replica-2, the ledger, the height, the failed check and the
source; replica-2 never holds the forged bytes, and still follows the true chain through
the Redis stream. Malformed feed messages are dropped and replica-2 serves on.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from vledger.broker.curve import AllowList, CurveServer
from vledger.broker.feed import CHECKPOINTS_TOPIC, FEED_DOMAIN, encode_record
from vledger.broker.keys import load_secret
from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.errors import NotFoundError, RemoteError
from vledger.node.record import Entry, Record, decode_record
from vledger.node.wire import reply_error, request_id_of
from vledger.tests.integration.cluster import (
    ADMIN,
    LocalCluster,
    entry,
    failing_nonce,
    genesis,
    now_ms,
    remote_error,
    wait_until,
)

LEDGER = "votes"
DIFFICULTY = 8  # enough for a nonce to fail it, cheap enough to solve
FORGER = "replica-1"
VICTIM = "replica-2"
ALERT_WAIT_S = 10.0


class Impostor:
    """Node ``name``'s feed and read sockets, bound in the test process with its key pair.

    The feed is an XPUB, so :meth:`wait_subscribed` knows when ``subscriber`` is listening
    (PUB/SUB drops what is sent before). The read socket answers every request ``not_found``
    at once, so that the subscriber's catch-up moves on to its next source without waiting.
    """

    def __init__(self, cluster: LocalCluster, name: str, subscriber: str) -> None:
        proc = cluster.procs[name]
        self.name = name
        self.keys = load_secret(cluster.directory / "keys" / f"{name}.key_secret")
        self.allowed = AllowList([cluster.procs[subscriber].public_key])
        self.feed = CurveServer(
            self.keys, f"tcp://127.0.0.1:{proc.pub_port}", self.allowed, socket_type=zmq.XPUB, domain=FEED_DOMAIN
        )
        self.endpoint = proc.endpoint
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._reads = threading.Thread(target=self._refuse_reads, name="impostor-reads", daemon=True)
        self._reads.start()
        assert self._ready.wait(10), f"the impostor's read socket did not bind: {self._error!r}"

    def _refuse_reads(self) -> None:
        try:
            with CurveServer(self.keys, self.endpoint, self.allowed) as server:
                self._ready.set()
                while not self._stop.is_set():
                    if not server.socket.poll(50):
                        continue
                    peer, data = server.socket.recv_multipart()
                    refusal = NotFoundError(f"{self.name} serves nothing")
                    server.socket.send_multipart([peer, reply_error(request_id_of(data), refusal)])
        except BaseException as e:
            self._error = e
            self._ready.set()

    def wait_subscribed(self, timeout: float = 15.0) -> None:
        """Return once the subscriber's subscription reached this feed."""

        def subscribed() -> bool:
            return bool(self.feed.socket.poll(50)) and self.feed.socket.recv()[:1] == b"\x01"

        wait_until(subscribed, timeout, "the subscriber subscribed to the impostor's feed")

    def send(self, frames: list[bytes]) -> None:
        self.feed.socket.send_multipart(frames)

    def publish(self, height: int, data: bytes, sender: str | None = None) -> None:
        self.send(encode_record(LEDGER, height, 2, sender or self.name, data))

    def close(self) -> None:
        self._stop.set()
        self._reads.join(10)
        self.feed.close()


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=2,
        replication={"max_hops": 2, "heartbeat_ms": 200},
        follow={VICTIM: [FORGER]},
        relays=[FORGER],
    ) as running:
        running.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"], difficulty=DIFFICULTY))
        put(running, 20)
        wait_converged(running)
        assert running.stop_node(FORGER) == 0
        yield running


@pytest.fixture(scope="module")
def impostor(cluster: LocalCluster) -> Iterator[Impostor]:
    impostor = Impostor(cluster, FORGER, VICTIM)
    try:
        impostor.wait_subscribed()
        yield impostor
    finally:
        impostor.close()


def put(cluster: LocalCluster, count: int, ledger: str = LEDGER) -> None:
    cluster.client("writer1").put_many(
        [entry(ledger, "vote", {"n": n}, "writer1", difficulty=DIFFICULTY) for n in range(count)]
    )


def wait_converged(cluster: LocalCluster, ledger: str = LEDGER) -> int:
    size: int = cluster.admin().call("size", {"ledger": ledger})["size"]
    names = [n for n in cluster.procs if cluster.procs[n].running()]
    wait_until(lambda: set(cluster.sizes(ledger, names).values()) == {size}, 30, f"every node at size {size}")
    return size


def home_record(cluster: LocalCluster, height: int) -> Record:
    data = cluster.admin().call("get", {"ledger": LEDGER, "height": height})["record"]
    return decode_record(data, PROTOCOL_LIMITS)


def next_record(cluster: LocalCluster) -> Record:
    """A valid record for the ledger's next height, as its home node would place it (never published)."""
    head = decode_record(cluster.admin().call("head", {"ledger": LEDGER})["record"], PROTOCOL_LIMITS)
    fresh = entry(LEDGER, "vote", {"forged": os.urandom(4).hex()}, "writer1", difficulty=DIFFICULTY)
    return fresh.place(head.height + 1, head.link, max(now_ms(), head.accepted), head.origin)


def alerts(cluster: LocalCluster) -> list[dict[str, str]]:
    return ReplicationLedger(connect(cluster.cluster_redis_url)).alerts(1000)


def wait_alert(cluster: LocalCluster, height: int, what: str) -> dict[str, str]:
    def found() -> dict[str, str] | None:
        return next(
            (a for a in alerts(cluster) if a["node"] == VICTIM and a["height"] == str(height) and a["what"] == what),
            None,
        )

    alert: dict[str, str] = wait_until(found, ALERT_WAIT_S, f"a {what} alert at height {height} from {VICTIM}")
    assert alert["ledger"] == LEDGER
    assert alert["source"] == FORGER
    return alert


def victim_holds_none_of(cluster: LocalCluster, forged: list[Record]) -> None:
    reader = cluster.admin(VICTIM)
    assert reader.call("have", {"hashes": [r.hash for r in forged]})["have"] == []
    for record in forged:
        try:
            held = reader.call("get", {"ledger": LEDGER, "height": record.height})["record"]
        except RemoteError as e:  # nothing stored at that height yet
            assert e.code == "not_found", e
            continue
        assert held != record.encode()
        assert held == cluster.admin().call("get", {"ledger": LEDGER, "height": record.height})["record"]


def test_forged_records_are_refused_reported_and_never_stored(cluster: LocalCluster, impostor: Impostor) -> None:
    true = next_record(cluster)
    height = true.height
    held = home_record(cluster, 5)
    before = home_record(cluster, 4)
    other = entry(LEDGER, "vote", {"other": 1}, "writer1", difficulty=DIFFICULTY)
    weak = Entry(true.content, true.content_bytes, true.checksum, failing_nonce(true.content_bytes, DIFFICULTY))
    forged = {
        # (i) chained to a prev that is not the head's link (its own link recomputed to match)
        "bad_link": true.entry().place(height, os.urandom(32), true.accepted, true.origin),
        # (ii) other content under the checksum and link of the true one
        "bad_checksum": dataclasses.replace(true, content_bytes=other.content_bytes),
        # a nonce that does not meet the ledger's difficulty, all else consistent
        "insufficient_work": weak.place(height, true.prev, true.accepted, true.origin),
    }
    for what, record in forged.items():
        impostor.publish(height, record.encode())
        wait_alert(cluster, height, what)
    # (iii) a real record replayed: under its own height it is a harmless duplicate, under
    # the next height it is refused (its height is not the envelope's).
    impostor.publish(held.height, held.encode())
    impostor.publish(height, held.encode())
    replayed = wait_alert(cluster, height, "record_conflict")
    assert f"says height {held.height}" in replayed["detail"]  # "the record says height 5, it was sent as 21"
    assert not [a for a in alerts(cluster) if a["height"] == str(held.height)], "a true duplicate was reported"
    # (iv) a self-consistent record (valid checksum, work and link) at a height replica-2 holds
    rewrite = other.place(held.height, before.link, held.accepted + 1, held.origin)
    impostor.publish(held.height, rewrite.encode())
    conflict = wait_alert(cluster, held.height, "record_conflict")
    assert conflict["expected"] == held.hash.hex()
    assert remote_error(cluster.admin(VICTIM).call, "get", {"ledger": LEDGER, "height": height}).code == "not_found"
    victim_holds_none_of(cluster, [*forged.values(), rewrite])
    # The true chain still reaches replica-2, from the Redis stream: its only feed is forged.
    put(cluster, 10)
    size = wait_converged(cluster)
    assert size > height + 1
    assert list(cluster.admin(VICTIM).records(LEDGER)) == list(cluster.admin().records(LEDGER))
    victim_holds_none_of(cluster, [*forged.values(), rewrite])
    assert cluster.admin(VICTIM).hello()["current"] is True


def test_malformed_feed_messages_are_dropped_and_the_replica_serves_on(
    cluster: LocalCluster, impostor: Impostor
) -> None:
    head = home_record(cluster, cluster.admin().call("size", {"ledger": LEDGER})["size"] - 1)
    body = msgpack.unpackb(encode_record(LEDGER, head.height, 2, FORGER, head.encode())[1])

    def pack(**changes: Any) -> bytes:
        return msgpack.packb({**body, **changes})  # type: ignore[no-any-return]

    malformed = [
        [LEDGER.encode(), b"\xc1 not msgpack"],
        [LEDGER.encode()],  # one frame
        [LEDGER.encode(), pack(), b"a third frame"],
        [b"other", pack()],  # the topic is not the record's ledger
        [LEDGER.encode(), pack(v=2)],
        [LEDGER.encode(), pack(hops=0)],
        [LEDGER.encode(), pack(height=-1)],
        [LEDGER.encode(), pack(record="not bytes")],
        [LEDGER.encode(), msgpack.packb([1, 2, 3])],
        [CHECKPOINTS_TOPIC, msgpack.packb({"v": 1, "from": FORGER, "checkpoints": {LEDGER: [10**9, b"short"]}})],
    ]
    log_before = cluster.log_text(VICTIM).count("feed message dropped")
    before = len(alerts(cluster))
    for frames in malformed:
        impostor.send(frames)
    wait_until(
        lambda: cluster.log_text(VICTIM).count("feed message dropped") - log_before >= len(malformed),
        ALERT_WAIT_S,
        f"{VICTIM} logged {len(malformed)} dropped feed messages",
    )
    assert len(alerts(cluster)) == before, "a malformed message was taken for a record"
    victim = cluster.admin(VICTIM)
    assert victim.hello()["node"] == VICTIM
    # A checkpoints message that failed its checks set no target: replica-2 is not behind.
    assert victim.hello()["behind"] == {}
    # Its feed loop runs on: a forged record published now is still found, and true records still arrive.
    forged = dataclasses.replace(next_record(cluster), link=os.urandom(32))
    impostor.publish(forged.height, forged.encode())
    wait_alert(cluster, forged.height, "bad_link")
    put(cluster, 5)
    wait_converged(cluster)
    victim_holds_none_of(cluster, [forged])


# Two gaps these tests found, closed by checkpoints (PROTOCOL 10.7): a record that verifies proves
# nothing about who placed it, and a height on a feed message proves nothing either.


def test_a_record_a_peer_placed_itself_is_never_stored(cluster: LocalCluster, impostor: Impostor) -> None:
    ledger = "minted"
    cluster.admin().create_ledger(genesis(ledger, ADMIN, ["vote"]))
    put(cluster, 3, ledger)
    wait_converged(cluster, ledger)
    head = decode_record(cluster.admin().call("head", {"ledger": ledger})["record"], PROTOCOL_LIMITS)
    fresh = entry(ledger, "vote", {"minted": True}, "writer1", difficulty=DIFFICULTY)
    minted = fresh.place(head.height + 1, head.link, head.accepted + 1, head.origin)  # checksum, work, link: valid
    impostor.send(encode_record(ledger, minted.height, 2, FORGER, minted.encode()))
    put(cluster, 2, ledger)  # the true records at that height and the next
    size: int = cluster.admin().call("size", {"ledger": ledger})["size"]

    def settled() -> bool:
        reported = any(a["ledger"] == ledger for a in alerts(cluster))
        return reported or cluster.sizes(ledger, [VICTIM])[VICTIM] == size

    wait_until(settled, 30, f"{VICTIM} at size {size} of {ledger}, or an alert")
    # The minted record waited for a checkpoint; the home's is of another tree: reported, dropped.
    wait_until(lambda: cluster.sizes(ledger, [VICTIM])[VICTIM] == size, 30, f"{VICTIM} at size {size}")
    assert cluster.admin(VICTIM).call("have", {"hashes": [minted.hash]})["have"] == []
    assert list(cluster.admin(VICTIM).records(ledger)) == list(cluster.admin().records(ledger))
    minted_alerts = [a for a in alerts(cluster) if a["ledger"] == ledger]
    assert [(a["what"], a["source"], a["found"]) for a in minted_alerts] == [
        ("record_conflict", FORGER, minted.hash.hex())
    ]


def test_a_refused_record_does_not_leave_the_replica_behind(cluster: LocalCluster, impostor: Impostor) -> None:
    impostor.send(encode_record(LEDGER, 10**12, 2, FORGER, b"\x80"))  # an empty map: no record
    # The feed is taken in order: once a forged record sent after it is reported, it was read.
    sentinel = dataclasses.replace(next_record(cluster), link=os.urandom(32))
    impostor.publish(sentinel.height, sentinel.encode())
    wait_alert(cluster, sentinel.height, "bad_link")
    assert LEDGER not in cluster.admin(VICTIM).hello()["behind"]
