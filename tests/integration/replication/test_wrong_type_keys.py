"""A ledger's own Redis keys made of another type by the admin's Redis user (vledger-admin may
write every ``vledger:*`` key: an ACL pattern cannot leave any out), while the nodes run.

For each key: nothing acknowledged is lost, no process stops checking the rest, the damage is an
alert naming the key, and the key's owner writes it anew (PROTOCOL 10.5, 10.10)."""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from vledger.broker import redis_acl
from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import REDIS_KEY_DAMAGED, ReplicationLedger
from vledger.broker.tallies import Published, TallyBoard
from vledger.tests.integration.cluster import ADMIN, LocalCluster, acl_passwords, entry, genesis, put_args, wait_until


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=1,
        observers=1,
        verifiers=1,
        verifier={"sweep_interval_ms": 200},
        gateways=["replica-1"],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def insider(cluster: LocalCluster) -> Iterator[Any]:
    """A client signed in as ``vledger-admin``: the insider's password."""
    password = redis_acl.read_password(redis_acl.password_path(acl_passwords(cluster.redis_url), "vledger-admin"))
    client = redis.Redis.from_url(cluster.cluster_redis_url, username="vledger-admin", password=password)
    yield client
    client.close()


_ledgers = itertools.count(1)
_NONE = Published("", "", -1, b"", b"")  # no snapshot: a height none has


def _size(cluster: LocalCluster, node: str, ledger: str) -> int:
    return int(cluster.admin(node).call("size", {"ledger": ledger})["size"])


def _put(cluster: LocalCluster, ledger: str, count: int, tag: str) -> None:
    writer = cluster.client("writer1")
    writer.put_many([entry(ledger, "vote", {tag: i}, "writer1") for i in range(count)])


@pytest.fixture
def ledger(cluster: LocalCluster) -> str:
    """A ledger of its own for each test, of 11 records on every copy."""
    return _fresh(cluster, 10)


def _everywhere(cluster: LocalCluster, ledger: str, size: int, timeout: float = 30) -> None:
    names = ["ingest-1", *cluster.replica_names, *cluster.observer_names]
    wait_until(lambda: all(_size(cluster, n, ledger) == size for n in names), timeout, f"{ledger} at {size} everywhere")


def _repl(cluster: LocalCluster) -> ReplicationLedger:
    return ReplicationLedger(connect(cluster.cluster_redis_url))


def _raised(cluster: LocalCluster, raiser: str, key: str) -> list[dict[str, str]]:
    """The alerts ``raiser`` raised naming Redis key ``key`` of another type."""
    wanted = ("redis", key, REDIS_KEY_DAMAGED, raiser)
    return [
        a
        for a in _repl(cluster).alerts(1000)
        if (a.get("node"), a.get("ledger"), a.get("what"), a.get("raised_by")) == wanted
    ]


def _resolved(cluster: LocalCluster, key: str) -> None:
    """No alert open naming Redis key ``key`` damaged: its owner resolves it once written anew."""
    wait_until(lambda: f"redis|{key}|{REDIS_KEY_DAMAGED}" not in _open(cluster), 10, f"no alert open of {key}")


def _make_hash(insider: Any, key: str) -> None:
    """Make string ``key`` a hash, in one step: its owner may SET it between two."""
    pipe = insider.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, "x", "1")
    pipe.execute()


def _open(cluster: LocalCluster) -> dict[str, dict[str, str]]:
    return _repl(cluster).open_alerts()


def _verifier_checks(cluster: LocalCluster, ledger: str) -> None:
    """The verifier checks ``ledger``'s new entries: a ledger of its own, written now, is read to its end."""
    repl = _repl(cluster)
    size = _size(cluster, "ingest-1", ledger)

    def read() -> bool:
        if repl.client.type(repl.stream_key(ledger)) != b"stream":  # the feed goes first, the stream after
            return False
        groups = repl.client.xinfo_groups(repl.stream_key(ledger))
        return bool(groups) and groups[0]["last-delivered-id"] == f"{size - 1}-1".encode() and groups[0]["pending"] == 0

    wait_until(read, 30, f"the verifier read {ledger} to its end")


def _fresh(cluster: LocalCluster, records: int = 5) -> str:
    """A new ledger of ``records`` votes after its genesis, on every copy."""
    name = f"keys-{next(_ledgers)}"
    cluster.admin().create_ledger(genesis(name, ADMIN, ["vote"]))
    _put(cluster, name, records, "n")
    _everywhere(cluster, name, records + 1)
    return name


def test_a_stream_made_a_string_is_replaced_by_the_home_and_nothing_stops(
    cluster: LocalCluster, insider: Any, ledger: str
) -> None:
    """Every append of every ledger of the home failed (taken for Redis away), and the verifier's
    read of all streams too, retried for ever: the home replaces the stream from its store."""
    repl = _repl(cluster)
    key = repl.stream_key(ledger)
    insider.set(key, "junk")
    _put(cluster, ledger, 5, "after")  # acknowledged
    _everywhere(cluster, ledger, 16)
    _verifier_checks(cluster, _fresh(cluster))  # the other ledgers are streamed and checked
    wait_until(lambda: repl.client.type(key) == b"stream" and repl.client.xlen(key) == 16, 30, "the stream refilled")
    assert [r.data for r in repl.read(ledger, 0, 100)] == cluster.admin().call(
        "range", {"ledger": ledger, "start": 0, "limit": 100}
    )["records"]
    wait_until(lambda: _raised(cluster, "ingest-1", key), 10, "the home's alert naming the stream")
    _verifier_checks(cluster, ledger)  # read again from its start
    _resolved(cluster, key)
    assert cluster.admin("verifier-1").call("status")["open_alerts"] == []


@pytest.mark.parametrize("node", ["ingest-1", "replica-1"])
def test_a_held_key_made_a_hash_is_replaced_by_its_node(
    cluster: LocalCluster, insider: Any, ledger: str, node: str
) -> None:
    """Its node's every report (of every ledger) failed on the script's GET, taken for Redis away:
    the home streamed nothing more, a replica's heights stood still (a put's w waited on them)."""
    repl = _repl(cluster)
    key = repl.held_key(ledger, node)
    _make_hash(insider, key)
    _put(cluster, ledger, 3, "after")
    # A put that waits for the replica's cosignature (w counts the witnesses but the home).
    put = cluster.client("writer1").call("put", {**put_args(entry(ledger, "vote", {"w": 1}, "writer1")), "w": 1})
    assert put["height"] == 14
    _everywhere(cluster, ledger, 15)
    _verifier_checks(cluster, _fresh(cluster))
    wait_until(lambda: repl.held(ledger).get(node) == 14, 30, f"{node}'s held height written anew")
    wait_until(lambda: _raised(cluster, node, key), 10, f"{node}'s alert naming its held key")
    _resolved(cluster, key)


def test_a_checkpoint_key_made_a_hash_is_set_again_by_the_home(
    cluster: LocalCluster, insider: Any, ledger: str
) -> None:
    """One ledger's checkpoint key of another type failed every reader of every ledger's latest
    checkpoint (replicas' catch-up, the verifier, a home's start) until its home's next SET."""
    repl = _repl(cluster)
    key = repl.checkpoint_key(ledger)
    _make_hash(insider, key)
    # Read as none, the others read (its home may have set it again already: a heartbeat is 1 s).
    assert "admin" in repl.checkpoints()
    _put(cluster, ledger, 3, "after")
    _everywhere(cluster, ledger, 14)
    _verifier_checks(cluster, _fresh(cluster))
    wait_until(lambda: repl.client.type(key) == b"string", 10, "the checkpoint set again")
    _resolved(cluster, key)


def test_a_cosignature_key_made_a_hash_is_published_again_by_its_witness(
    cluster: LocalCluster, insider: Any, ledger: str
) -> None:
    """Read as none by everyone (MGET), a quiet ledger's cosignature was written again only at the
    witness's next re-cosigning (five minutes): its witness reads its keys back."""
    repl = _repl(cluster)
    key = repl.cosig_key(ledger, "replica-1")
    # Of the whole ledger: one of a smaller checkpoint is followed by the next.
    wait_until(lambda: repl.cosignatures(ledger).get("replica-1", b"").split(b"\n")[1:2] == [b"11"], 20, "cosigned")
    note = repl.client.get(key)
    _make_hash(insider, key)
    wait_until(lambda: repl.client.type(key) == b"string", 20, "the cosignature published again")
    assert repl.client.get(key) == note
    wait_until(lambda: _raised(cluster, "replica-1", key), 10, "replica-1's alert naming its key")
    _resolved(cluster, key)


def test_an_observers_tally_keys_of_another_type_are_replaced_by_it(
    cluster: LocalCluster, insider: Any, ledger: str
) -> None:
    """Its latest id made a hash read as no snapshot (its look took it back at each look, without a
    word); its stream made a string failed its every snapshot of the ledger, for good."""
    board = TallyBoard(_repl(cluster).client)
    latest, stream = board.latest_key(ledger, "observer-1"), board.stream_key(ledger, "observer-1")
    wait_until(lambda: (board.latest(ledger, ["observer-1"]).get("observer-1") or _NONE).height == 10, 20, "a tally")
    entry = board.latest_ids([ledger], ["observer-1"])[ledger]["observer-1"]
    _make_hash(insider, latest)
    wait_until(lambda: _repl(cluster).client.type(latest) == b"string", 20, "the latest id set again")
    assert board.latest_ids([ledger], ["observer-1"])[ledger]["observer-1"] == entry  # not published anew
    wait_until(lambda: _raised(cluster, "observer-1", latest), 10, "observer-1's alert naming its latest id")
    insider.set(stream, "junk")
    _put(cluster, ledger, 1, "after")
    wait_until(lambda: (board.latest(ledger, ["observer-1"]).get("observer-1") or _NONE).height == 11, 20, "tallied")
    wait_until(lambda: _raised(cluster, "observer-1", stream), 10, "observer-1's alert naming its stream")
    _resolved(cluster, latest)
    _resolved(cluster, stream)


def test_the_operators_commands_read_past_keys_of_another_type_and_the_home_puts_them_back(
    cluster: LocalCluster, insider: Any, ledger: str
) -> None:
    """With the home down (which would replace them within a heartbeat), ``{ledgers}`` a string
    and a checkpoint key a hash failed ``repl status``, ``tally``, ``repair`` and the gateway's
    dashboard whole, and a held key a hash ``repl status`` and the dashboard."""
    repl = _repl(cluster)
    wait_until(lambda: repl.checkpoints([ledger]).get(ledger), 10, "a checkpoint of the ledger")
    cluster.stop_node("ingest-1")
    try:
        insider.set(repl.ledgers_key, "junk")
        _make_hash(insider, repl.checkpoint_key(ledger))
        _make_hash(insider, repl.held_key(ledger, "ingest-1"))
        with urllib.request.urlopen(cluster.gateway_url("replica-1") + "api/cluster", timeout=20) as answer:
            shown = json.loads(answer.read())  # the dashboard's state: it answered 500
        assert "ingest-1" not in shown["ledgers"][ledger]["held"] and shown["ledgers"][ledger]["held"]
        config = str(cluster.config_path)
        for command in (("repl", "status", "--config", config), ("tally", ledger, "--config", config),
                        ("verify", "--cluster", config)):  # fmt: skip
            done = cluster.cli(*command, check=False)
            assert "error:" not in done.stderr, (command, done.stderr)  # a warning names the key
            if command[0] != "verify":
                assert ledger in done.stdout, (command, done.stdout)
        verifier = cluster.admin("verifier-1")
        damaged = f"redis|{repl.ledgers_key}|{REDIS_KEY_DAMAGED}"
        wait_until(lambda: damaged in verifier.call("status")["open_alerts"], 20, "the verifier's alert")
    finally:
        cluster.start_node("ingest-1")
    wait_until(lambda: repl.client.type(repl.checkpoint_key(ledger)) == b"string", 20, "the checkpoint set again")
    wait_until(lambda: ledger in repl.ledgers(), 20, "the ledger named again by its home")
    wait_until(lambda: damaged not in verifier.call("status")["open_alerts"], 20, "the alert resolved")
    _put(cluster, ledger, 1, "after")
    _everywhere(cluster, ledger, 12)
    _verifier_checks(cluster, ledger)
