"""The verifier against a running cluster: clean runs raise nothing, every kind of tampering is caught.

Each tamper case edits one replica's SQLite store behind its back, as an intruder on that host
would, and waits (at most 5 s, the issue's bound) for the alert naming that node and height.
"""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.record import Entry, Record, decode_record
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until

DETECTION_SECONDS = 5.0  # the bound from a tampered byte to its alert


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    settings = {"sweep_interval_ms": 200, "lag_alert_ms": 10_000}
    # The tamper cases study the verifier's findings: the replicas leave records cut from their
    # files as they are meanwhile (they fetch them again by themselves: replication/test_cut_copy.py).
    unhealed = {"cut_check_ms": 600_000, "hole_check_ms": 600_000}
    with LocalCluster(
        redis_server.url, nodes=1, replicas=2, verifiers=1, verifier=settings, replication=unhealed
    ) as running:
        yield running


_ledgers = itertools.count(1)


@pytest.fixture
def ledger(cluster: LocalCluster) -> str:
    """A ledger of its own for each test, of 150 records on every copy, swept clean once."""
    name = f"votes-{next(_ledgers)}"
    cluster.admin().create_ledger(genesis(name, ADMIN, ["vote"], difficulty=4))
    writer = cluster.client("writer1")
    writer.put_many([entry(name, "vote", {"n": i}, "writer1", difficulty=4) for i in range(150)], window=64)
    size = _size(cluster, "ingest-1", name)
    wait_until(lambda: all(_size(cluster, n, name) == size for n in cluster.replica_names), 20, "replicas complete")
    verifier = cluster.admin("verifier-1")

    def every_copy_swept() -> bool:
        copies = {k: c for k, c in verifier.call("status")["copies"].items() if k.endswith(f"|{name}")}
        return len(copies) == 3 and all(c["sweeps"] >= 1 for c in copies.values())

    wait_until(every_copy_swept, 20, "a first sweep of every copy")
    # And its stream checked: under load the verifier's stream reader may still be behind, and
    # a tamper test that rewrote the home before it read the last entries saw the home's new
    # records against the stream's (a record_conflict of its own, not the case under test).
    wait_until(lambda: _group(cluster, name)["last-delivered-id"] == f"{size - 1}-1".encode(), 30, "all checked")
    wait_until(lambda: _group(cluster, name)["pending"] == 0, 30, "nothing left pending")
    return name


def _size(cluster: LocalCluster, node: str, ledger: str) -> int:
    return int(cluster.admin(node).call("size", {"ledger": ledger})["size"])


def _repl(cluster: LocalCluster) -> ReplicationLedger:
    return ReplicationLedger(connect(cluster.cluster_redis_url))


def _store(cluster: LocalCluster, node: str) -> sqlite3.Connection:
    return sqlite3.connect(cluster.store_dir(node) / "chain.sqlite3", isolation_level=None)


def _record(db: sqlite3.Connection, ledger: str, height: int) -> Record:
    row = db.execute("SELECT data FROM records WHERE ledger = ? AND height = ?", (ledger, height)).fetchone()
    return decode_record(row[0], PROTOCOL_LIMITS)


def _write(db: sqlite3.Connection, ledger: str, height: int, data: bytes) -> None:
    db.execute("UPDATE records SET data = ? WHERE ledger = ? AND height = ?", (data, ledger, height))


def _alert(cluster: LocalCluster, node: str, ledger: str, what: str, height: int) -> dict[str, str]:
    repl = _repl(cluster)
    found: dict[str, str] = {}

    def raised() -> bool:
        for alert in repl.alerts(1000):
            if (alert["node"], alert["ledger"], alert["what"], int(alert["height"])) == (node, ledger, what, height):
                found.update(alert)
                return True
        return False

    wait_until(raised, DETECTION_SECONDS, f"a {what} alert for {node}")
    return found


def _alerts_of(cluster: LocalCluster, ledger: str) -> list[dict[str, str]]:
    return [a for a in _repl(cluster).alerts(1000) if a["ledger"] == ledger]


def test_a_clean_run_raises_no_alert_and_verify_cluster_passes(cluster: LocalCluster, ledger: str) -> None:
    writer = cluster.client("writer1")
    writer.put_many([entry(ledger, "vote", {"m": i}, "writer1", difficulty=4) for i in range(200)], window=32)
    size = _size(cluster, "ingest-1", ledger)
    wait_until(lambda: all(_size(cluster, n, ledger) == size for n in cluster.replica_names), 20, "replicas complete")
    wait_until(lambda: _group(cluster, ledger)["last-delivered-id"] == f"{size - 1}-1".encode(), 30, "all checked")
    # Delivered is not yet acknowledged: under load the last entries were still pending 10 s on.
    wait_until(lambda: _group(cluster, ledger)["pending"] == 0, 30, "nothing left pending")
    assert _alerts_of(cluster, ledger) == []
    assert cluster.admin("verifier-1").call("status")["open_alerts"] == []
    done = cluster.cli("verify", "--cluster", str(cluster.config_path), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _group(cluster: LocalCluster, ledger: str) -> dict[str, object]:
    repl = _repl(cluster)
    groups = repl.client.xinfo_groups(repl.stream_key(ledger))
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in groups[0].items()}


def test_a_verifier_killed_and_restarted_misses_nothing(cluster: LocalCluster, ledger: str) -> None:
    cluster.kill_node("verifier-1")
    writer = cluster.client("writer1")
    writer.put_many([entry(ledger, "vote", {"k": i}, "writer1", difficulty=4) for i in range(100)], window=32)
    size = _size(cluster, "ingest-1", ledger)
    cluster.start_node("verifier-1")
    wait_until(lambda: _group(cluster, ledger)["last-delivered-id"] == f"{size - 1}-1".encode(), 20, "all checked")
    wait_until(lambda: _group(cluster, ledger)["pending"] == 0, 10, "nothing left pending")
    assert _alerts_of(cluster, ledger) == []


def test_a_rewritten_vote_with_fresh_checksum_and_work_is_betrayed_by_its_link(
    cluster: LocalCluster, ledger: str
) -> None:
    with closing(_store(cluster, "replica-2")) as db:
        original = _record(db, ledger, 100)
        content = dataclasses.replace(original.content, payload={"n": 99999})
        forged_entry = Entry.prepare(content, 4, PROTOCOL_LIMITS)
        forged = dataclasses.replace(
            original, content=forged_entry.content, content_bytes=forged_entry.content_bytes,
            checksum=forged_entry.checksum, nonce=forged_entry.nonce,
        )  # fmt: skip
        started = time.monotonic()
        _write(db, ledger, 100, forged.encode())
    _alert(cluster, "replica-2", ledger, "bad_link", 100)
    assert time.monotonic() - started < DETECTION_SECONDS
    done = cluster.cli("verify", "--cluster", str(cluster.config_path), check=False)
    assert done.returncode == 1 and f"replica-2|{ledger}|bad_link" in done.stdout
    # Put right (the record restored), the next clean sweep resolves it.
    with closing(_store(cluster, "replica-2")) as db:
        _write(db, ledger, 100, original.encode())
    wait_until(lambda: f"replica-2|{ledger}|bad_link" not in _repl(cluster).open_alerts(), 10, "the alert resolved")


def test_a_deleted_record_is_a_height_gap(cluster: LocalCluster, ledger: str) -> None:
    with closing(_store(cluster, "replica-1")) as db:
        db.execute("DELETE FROM records WHERE ledger = ? AND height = ?", (ledger, 50))
    _alert(cluster, "replica-1", ledger, "height_gap", 50)


def test_a_truncated_chain_is_reported(cluster: LocalCluster, ledger: str) -> None:
    with closing(_store(cluster, "replica-1")) as db:
        db.execute("DELETE FROM records WHERE ledger = ? AND height >= ?", (ledger, 120))
    _alert(cluster, "replica-1", ledger, "truncated", 120)


def test_held_heights_forged_in_redis_accuse_no_node(cluster: LocalCluster, ledger: str) -> None:
    """A node's Redis user may claim, in its vledger:{L}:held:<node>, what it does not hold (and
    the admin's writes any): a height the node denies, and one of a name no configuration
    knows, raise nothing over two more sweeps of every copy."""
    repl = _repl(cluster)
    repl.client.mset({repl.held_key(ledger, "replica-1"): "99999", repl.held_key(ledger, "evil"): "99999"})
    verifier = cluster.admin("verifier-1")

    def sweeps() -> dict[str, int]:
        copies = verifier.call("status")["copies"]
        return {k: int(c["sweeps"]) for k, c in copies.items() if k.endswith(f"|{ledger}")}

    before = sweeps()
    wait_until(lambda: all(n >= before[k] + 2 for k, n in sweeps().items()), 20, "two more sweeps of every copy")
    assert _alerts_of(cluster, ledger) == []


def test_two_swapped_records_are_caught(cluster: LocalCluster, ledger: str) -> None:
    with closing(_store(cluster, "replica-2")) as db:
        a, b = _record(db, ledger, 20).encode(), _record(db, ledger, 21).encode()
        db.execute("BEGIN")
        _write(db, ledger, 20, b)
        _write(db, ledger, 21, a)
        db.execute("COMMIT")
    _alert(cluster, "replica-2", ledger, "height_gap", 20)


def test_another_record_written_at_a_held_height_is_caught(cluster: LocalCluster, ledger: str) -> None:
    with closing(_store(cluster, "replica-1")) as db:
        other = _record(db, ledger, 30)
        moved = dataclasses.replace(_record(db, ledger, 31), height=30, prev=other.prev)  # a real record, misplaced
        _write(db, ledger, 30, moved.encode())
    _alert(cluster, "replica-1", ledger, "bad_link", 30)


def test_a_copy_that_differs_from_the_home_is_a_fork(cluster: LocalCluster, ledger: str) -> None:
    with closing(_store(cluster, "replica-2")) as db:
        top = _size(cluster, "replica-2", ledger) - 1
        head = _record(db, ledger, top)
        _write(db, ledger, top, dataclasses.replace(head, link=bytes(32)).encode())
    _alert(cluster, "replica-2", ledger, "fork", top)


def _rewritten(original: Record, payload: dict[str, int], prev: bytes | None = None) -> Record:
    """Another record placed at ``original``'s height: fresh checksum, work and link, as a forger
    with the chain in hand makes it (it verifies on its own; only the record above betrays it)."""
    content = dataclasses.replace(original.content, payload=payload)
    forged = Entry.prepare(content, 4, PROTOCOL_LIMITS)
    return forged.place(original.height, original.prev if prev is None else prev, original.accepted, original.origin)


def test_a_record_rewritten_whole_is_named_at_its_own_height(cluster: LocalCluster, ledger: str) -> None:
    with closing(_store(cluster, "replica-1")) as db:
        _write(db, ledger, 70, _rewritten(_record(db, ledger, 70), {"n": -1}).encode())
    _alert(cluster, "replica-1", ledger, "bad_link", 70)


def test_a_tail_rewritten_as_a_chain_is_named_where_it_starts(cluster: LocalCluster, ledger: str) -> None:
    with closing(_store(cluster, "replica-2")) as db:
        top = _size(cluster, "replica-2", ledger) - 1
        prev = None
        db.execute("BEGIN")
        for height in range(top - 5, top + 1):
            forged = _rewritten(_record(db, ledger, height), {"n": -height}, prev)
            _write(db, ledger, height, forged.encode())
            prev = forged.link
        db.execute("COMMIT")
    _alert(cluster, "replica-2", ledger, "fork", top - 5)


def test_a_forked_head_stays_named_at_its_height_after_one_more_write(cluster: LocalCluster, ledger: str) -> None:
    with closing(_store(cluster, "replica-1")) as db:
        top = _size(cluster, "replica-1", ledger) - 1
        _write(db, ledger, top, _rewritten(_record(db, ledger, top), {"n": -1}).encode())
    _alert(cluster, "replica-1", ledger, "fork", top)
    cluster.client("writer1").put_many([entry(ledger, "vote", {"late": 1}, "writer1", difficulty=4)])
    # replica-1 finds its tree no longer the home's checkpoint's, with nothing that proves the home
    # wrong: it names itself (never the home: no equivocation) and takes no more of the ledger.
    wait_until(
        lambda: any(
            (a["node"], a["source"], a["what"]) == ("replica-1", "replica-1", "store_contradicts_checkpoint")
            for a in _alerts_of(cluster, ledger)
        ),
        DETECTION_SECONDS,
        "replica-1 naming itself",
    )
    chain_alerts = [a for a in _alerts_of(cluster, ledger) if a["what"] in ("fork", "bad_link")]
    assert {(a["node"], int(a["height"])) for a in chain_alerts} == {("replica-1", top)}  # at its height still
    assert not any(a["what"] == "equivocation" for a in _alerts_of(cluster, ledger))


def test_a_truncated_replica_reports_what_its_store_holds(cluster: LocalCluster, ledger: str) -> None:
    """Cut short behind its back, a replica says so: its size and head are its file's, and it is not current."""
    replica = cluster.admin("replica-2")
    size = _size(cluster, "replica-2", ledger)
    with closing(_store(cluster, "replica-2")) as db:
        db.execute("DELETE FROM records WHERE ledger = ? AND height >= ?", (ledger, 120))
    assert _size(cluster, "replica-2", ledger) == 120
    assert replica.call("head", {"ledger": ledger})["height"] == 119
    hello = replica.call("hello")
    assert hello["current"] is False and hello["behind"][ledger] == size - 120
    listed = {item["ledger"]: item for item in replica.call("ledger.list")["ledgers"]}
    assert listed[ledger]["size"] == 120
    _alert(cluster, "replica-2", ledger, "truncated", 120)


def test_a_record_injected_into_the_stream_is_replaced_by_the_homes_and_resolved(
    cluster: LocalCluster, ledger: str
) -> None:
    """An intruder on Redis adds a well-made record ahead of the home: the home finds that the
    stream disagrees with its store, rewrites it from the store, and says so; once the verifier
    has checked the true entries, the alert resolves."""
    repl = _repl(cluster)
    head = cluster.admin("ingest-1").call("head", {"ledger": ledger})
    top = decode_record(head["record"], PROTOCOL_LIMITS)
    content = dataclasses.replace(top.content, payload={"n": -7}, request_id="injected")
    injected = Entry.prepare(content, 4, PROTOCOL_LIMITS).place(top.height + 1, top.link, top.accepted, top.origin)
    repl.client.xadd(
        repl.stream_key(ledger), {"record": injected.encode(), "origin": "ingest-1"}, id=f"{top.height + 1}-1"
    )
    cluster.client("writer1").put_many([entry(ledger, "vote", {"after": i}, "writer1", difficulty=4) for i in range(3)])
    alert = _alert(cluster, "redis", ledger, "record_conflict", top.height + 1)
    assert alert["found"] == injected.hash.hex()
    true = cluster.admin("ingest-1").call("get", {"ledger": ledger, "height": top.height + 1})["record"]
    assert alert["expected"] == decode_record(true, PROTOCOL_LIMITS).hash.hex()

    def repaired() -> bool:
        streamed = [r.data for r in repl.read(ledger, top.height + 1, 3, stop=top.height + 4)]
        home = cluster.admin("ingest-1").call("range", {"ledger": ledger, "start": top.height + 1, "limit": 3})
        return streamed == home["records"] and len(streamed) == 3

    wait_until(repaired, DETECTION_SECONDS, "the stream rewritten from the home's store")
    wait_until(lambda: f"redis|{ledger}|record_conflict" not in repl.open_alerts(), 10, "the alert resolved")
    assert not [a for a in _alerts_of(cluster, ledger) if a["node"] == "ingest-1"]  # the home is not blamed


def test_a_home_whose_tail_was_rewritten_is_named_not_the_copies_that_hold_what_it_signed(
    cluster: LocalCluster, ledger: str
) -> None:
    """Finding 5: the home's last records rewritten as a chain (valid record by record, so its
    sweep finds nothing), after it signed a checkpoint the replicas hold. The verifier names the
    home, held against that checkpoint, and raises no fork against the honest copies."""
    top = _size(cluster, "ingest-1", ledger) - 1
    with closing(_store(cluster, "ingest-1")) as db:
        prev = None
        db.execute("BEGIN")
        for height in range(top - 5, top + 1):
            forged = _rewritten(_record(db, ledger, height), {"n": -height}, prev)
            _write(db, ledger, height, forged.encode())
            prev = forged.link
        db.execute("COMMIT")
    alert = _alert(cluster, "ingest-1", ledger, "store_contradicts_checkpoint", top)
    assert alert["source"] == "ingest-1"
    verifier = cluster.admin("verifier-1")

    def sweeps() -> dict[str, int]:
        copies = verifier.call("status")["copies"]
        return {k: int(c["sweeps"]) for k, c in copies.items() if k.endswith(f"|{ledger}")}

    before = sweeps()
    wait_until(lambda: all(n >= before[k] + 2 for k, n in sweeps().items()), 20, "two more sweeps of every copy")
    assert [a["what"] for a in _alerts_of(cluster, ledger)] == ["store_contradicts_checkpoint"]


def test_a_ledger_of_large_records_is_swept_whole_and_a_byte_changed_high_up_is_found(cluster: LocalCluster) -> None:
    """Outsider pass 18, F0b: a node cuts a ``range`` page at ``max_message_bytes`` (about 17
    records of 60 KB). The verifier read the cut page as the copy's end: a false ``truncated``
    on every copy, and no sweep ever passed height 17, so a record changed above it was never
    found. Every copy is now swept whole, nothing is raised, and a changed byte high up is."""
    name = f"big-{next(_ledgers)}"
    cluster.admin().create_ledger(genesis(name, ADMIN, ["note"]))
    writer = cluster.client("writer1")
    blob = "a" * 60_000
    writer.put_many([entry(name, "note", {"blob": blob, "i": i}, "writer1") for i in range(60)], window=8)
    size = _size(cluster, "ingest-1", name)
    assert size == 61
    wait_until(lambda: all(_size(cluster, n, name) == size for n in cluster.replica_names), 30, "replicas complete")
    verifier = cluster.admin("verifier-1")

    seen: dict[str, object] = {}

    def swept_whole() -> bool:
        copies = {k: c for k, c in verifier.call("status")["copies"].items() if k.endswith(f"|{name}")}
        seen.update(copies)
        return len(copies) == 3 and all(c["sweeps"] >= 2 and c["records"] == size for c in copies.values())

    try:
        # The ledger is swept after every other ledger of the module's verifier: under load, slowly.
        wait_until(swept_whole, 60, "two whole sweeps of every copy")
    except AssertionError as e:
        raise AssertionError(f"{e}: {seen}, alerts {_alerts_of(cluster, name)}") from None
    assert _alerts_of(cluster, name) == []
    with closing(_store(cluster, "replica-1")) as db:
        data = _record(db, name, 55).encode()
        at = data.index(b"aaaa") + 1000
        _write(db, name, 55, data[:at] + b"b" + data[at + 1 :])
    _alert(cluster, "replica-1", name, "bad_checksum", 55)
    assert {a["node"] for a in _alerts_of(cluster, name)} == {"replica-1"}


def test_a_finding_raised_again_after_redis_lost_its_alert_keeps_its_first_at_ms(
    cluster: LocalCluster, ledger: str
) -> None:
    """outsider o11: after a Redis wipe the verifier found a bad_checksum again and raised it
    with a new at_ms (before its journal put the first back): the time the cause was first seen,
    which an operator needs, was gone (PROTOCOL 10.5)."""
    with closing(_store(cluster, "replica-1")) as db:
        original, other = _record(db, ledger, 60), _record(db, ledger, 61)
        _write(db, ledger, 60, dataclasses.replace(original, content_bytes=other.content_bytes).encode())
    first = _alert(cluster, "replica-1", ledger, "bad_checksum", 60)
    repl = _repl(cluster)
    key = f"replica-1|{ledger}|bad_checksum"
    assert wait_until(lambda: repl.open_alerts().get(key), 10, "the alert open")["raised_by"] == "verifier-1"
    wait_until(lambda: time.time_ns() // 1_000_000 > int(first["at_ms"]), 5, "the clock past its at_ms")
    repl.client.hdel(repl.open_alerts_key_of("verifier-1"), key)  # as a wipe loses it

    def back() -> dict[str, str] | None:
        alert = repl.open_alerts().get(key)
        return alert if alert is not None and alert["id"] != first["id"] else None

    again = wait_until(back, 15, "the alert back")
    assert again["at_ms"] == first["at_ms"], (again, first)
    with closing(_store(cluster, "replica-1")) as db:
        _write(db, ledger, 60, original.encode())
    wait_until(lambda: key not in repl.open_alerts(), 10, "the alert resolved")


def test_a_ledger_deleted_from_the_ledgers_hash_is_alerted_and_resolved_after_a_verifier_restart(
    cluster: LocalCluster, ledger: str
) -> None:
    """Any ingest node's Redis user may HDEL a ledger from ``{ledgers}``: the verifier keeps
    checking it and raises ``unlisted_ledger``. Listed again while the verifier is down, the
    alert resolves once it is back (it used to stay open: only the run that raised it resolved it)."""
    repl = _repl(cluster)
    home = repl.client.hget(repl.ledgers_key, ledger)
    assert home is not None
    repl.client.hdel(repl.ledgers_key, ledger)
    key = f"redis|{ledger}|unlisted_ledger"
    verifier = cluster.admin("verifier-1")
    try:
        wait_until(lambda: key in verifier.call("status")["open_alerts"], 30, "the unlisted_ledger alert")
    finally:
        cluster.kill_node("verifier-1")
        repl.client.hset(repl.ledgers_key, ledger, home)
        cluster.start_node("verifier-1")
    verifier = cluster.admin("verifier-1")
    wait_until(lambda: key not in verifier.call("status")["open_alerts"], 10, "the alert resolved")
    assert not repl.client.hexists(repl.open_alerts_key_of("verifier-1"), key)
