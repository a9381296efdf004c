"""``vledger status`` against a cluster of real processes: an ingest node, a replica, an observer
and a verifier, with the cluster's own Redis database.

Run as an operator runs it (``python -m vledger.tools.cli status``, the admin's key), in the
order a cluster lives: all well (exit 0), an open alert (exit 3, listed), the replica killed
(exit 3, shown down). Every wait is a poll with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from vledger.broker import redis_acl
from vledger.broker.keys import load_secret
from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import Alert, ReplicationLedger, entry_id
from vledger.config.cluster import load_cluster
from vledger.config.supervisor import EXIT_STORE_DAMAGED
from vledger.node.storefile import DB_NAME
from vledger.tests.integration.cluster import ADMIN, LocalCluster, apply_acl, entry, genesis, put_args, wait_until
from vledger.tests.sqlite_faults import overwrite_pages
from vledger.tools.status_command import EXIT_OK, EXIT_PROBLEM, HELLO_TIMEOUT, StatusReader

LEDGER = "votes"
RECORDS = 20
DEADLINE = 30.0


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url, nodes=1, replicas=1, verifiers=1, observers=1, verifier={"sweep_interval_ms": 200}
    ) as running:
        running.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        running.client("writer1").put_many([entry(LEDGER, "vote", {"n": i}, "writer1") for i in range(RECORDS)])
        # Every test starts from copies that hold the whole ledger, whichever tests run before it
        # (the damage tests read the replica's level-4 tree row: 16 records or more).
        followers = ["replica-1", "observer-1"]
        wait_until(
            lambda: all(size > RECORDS for size in running.sizes(LEDGER, followers).values()),
            DEADLINE,
            "the replica and the observer hold the ledger",
        )
        yield running


def admin_key(cluster: LocalCluster) -> Path:
    return cluster.directory / "keys" / f"{ADMIN}.key_secret"


def status(cluster: LocalCluster, *options: str) -> tuple[int, str]:
    done = cluster.cli(
        "status", "--config", str(cluster.config_path), "--key", str(admin_key(cluster)), *options, check=False
    )
    assert done.returncode in (EXIT_OK, EXIT_PROBLEM), f"exit {done.returncode}: {done.stdout}{done.stderr}"
    return done.returncode, done.stdout


def report(cluster: LocalCluster) -> tuple[int, dict[str, Any]]:
    code, out = status(cluster, "--json")
    return code, json.loads(out)


def until_ok(cluster: LocalCluster, what: str, also: Any = lambda found: True) -> dict[str, Any]:
    """Poll ``vledger status`` until it exits 0 (and ``also(report)``); its report, or the last
    one's problems at the deadline."""
    last: list[dict[str, Any]] = []

    def ok() -> bool:
        code, found = report(cluster)
        last[:] = [found]
        return code == EXIT_OK and bool(also(found))

    try:
        wait_until(ok, DEADLINE, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; the last problems: {last[0]['problems'] if last else None}") from None
    return last[0]


def node(found: dict[str, Any], name: str) -> dict[str, Any]:
    (match,) = [n for n in found["nodes"] if n["node"] == name]
    return match  # type: ignore[no-any-return]


def _open(found: dict[str, Any], key: str) -> dict[str, Any]:
    """The one open alert under ``key`` in a `vledger status --json` report (a list of entries)."""
    (alert,) = [entry for entry in found["open_alerts"] if entry["key"] == key]
    return alert


def test_all_up_and_current_exits_0(cluster: LocalCluster) -> None:
    # The replica and observer report their heights, the verifier sweeps every copy: then all is well.
    # Its status exits 0 as soon as nothing is wrong; the verifier checks the new records soon after.
    found = until_ok(cluster, "status exits 0", lambda f: f["verifiers"] and f["verifiers"][0]["checked"] > RECORDS)
    assert found["ok"] is True and found["problems"] == []
    assert [(n["node"], n["role"], n["up"]) for n in found["nodes"]] == [
        ("ingest-1", "ingest", True),
        ("replica-1", "replica", True),
        ("observer-1", "observer", True),
        ("verifier-1", "verifier", True),
    ]
    assert node(found, "replica-1")["current"] is True and node(found, "observer-1")["current"] is True
    assert node(found, "ingest-1")["current"] is None
    assert found["supervisord"] is None  # no --run-dir
    # The admin ledger is there too: the cluster's accounts were made by admin commands (PROTOCOL 16).
    ledgers = {entry["ledger"]: entry for entry in found["ledgers"]}
    assert set(ledgers) == {LEDGER, "admin"}
    ledger = ledgers[LEDGER]
    assert (ledger["ledger"], ledger["home"], ledger["head"], ledger["lagging"]) == (LEDGER, "ingest-1", RECORDS, [])
    assert ledger["counts"] == [{"holders": 3, "records": RECORDS + 1}]
    (verifier,) = found["verifiers"]
    assert verifier["up"] is True and verifier["checked"] >= RECORDS + 1
    assert {c["copy"] for c in verifier["copies"]} == {
        f"{n}|{ledger}" for n in ("ingest-1", "replica-1", "observer-1") for ledger in (LEDGER, "admin")
    }
    assert found["open_alerts"] == []

    code, out = status(cluster)
    assert code == EXIT_OK
    assert out.startswith("cluster test: 4 of 4 nodes up\n")
    assert out.rstrip().endswith("no open alert.")


def test_an_open_alert_exits_3_and_is_listed(cluster: LocalCluster) -> None:
    repl = ReplicationLedger(connect(cluster.cluster_redis_url))
    # A kind only an operator resolves (PROTOCOL 10.5): the verifier's clean sweeps would close a bad_link.
    alert = Alert("replica-1", LEDGER, 7, "record_conflict", "a test's alert")
    try:
        repl.alert(alert)
        code, found = report(cluster)
        assert code == EXIT_PROBLEM, found
        assert _open(found, alert.key)["detail"] == "a test's alert"
        assert f"1 open alert: {alert.key}" in found["problems"]
        code, out = status(cluster)
        assert code == EXIT_PROBLEM
        assert f"Open alerts: 1\n  {alert.key}  height 7: a test's alert" in out
    finally:
        repl.resolve([alert.key])
        repl.client.close()
    until_ok(cluster, "status exits 0 once the alert is resolved")


def test_a_killed_replica_is_down_exits_3_and_costs_one_timeout(cluster: LocalCluster) -> None:
    cluster.kill_node("replica-1")
    code, found = report(cluster)
    assert code == EXIT_PROBLEM, found
    replica = node(found, "replica-1")
    assert (replica["up"], replica["current"]) == (False, None)
    assert "no answer within" in replica["error"]
    assert any(p.startswith("replica-1 does not answer hello") for p in found["problems"])
    assert all(n["up"] for n in found["nodes"] if n["node"] != "replica-1")
    # In the ledger table too: its held height is what Redis last heard, not current.
    ledger = next(entry for entry in found["ledgers"] if entry["ledger"] == LEDGER)
    assert {n["node"]: n["down"] for n in ledger["nodes"]}["replica-1"] is True

    code, out = status(cluster)
    assert code == EXIT_PROBLEM
    (row,) = [line for line in out.splitlines() if line.startswith("replica-1 ")]
    assert row.split()[:3] == ["replica-1", "replica", "down"]
    held = [line for line in out.splitlines() if line.split()[:2] == ["replica-1", "replica"] and line != row]
    assert len(held) == 2 and all(line.split()[-1] == "down" for line in held), held  # votes and admin

    # One round in this process, without Python's start-up: the node down costs the hello timeout, once.
    config = load_cluster(cluster.config_path)
    client = connect(cluster.cluster_redis_url, timeout=2.0)
    try:
        with ThreadPoolExecutor(max_workers=len(config.nodes)) as executor:
            reader = StatusReader(
                config, load_secret(admin_key(cluster)), cluster.cluster_redis_url, ReplicationLedger(client), executor
            )
            started = time.monotonic()
            round_status = reader.read()
            took = time.monotonic() - started
    finally:
        client.close()
    assert [n.node for n in round_status.nodes if not n.up] == ["replica-1"]
    assert HELLO_TIMEOUT * 0.9 <= took < HELLO_TIMEOUT + 1.0, f"{took:.2f} s"


def test_a_replica_whose_store_was_damaged_while_stopped_says_so_and_is_not_restarted(cluster: LocalCluster) -> None:
    """A tree row changed under a stopped replica: it exits with EXIT_STORE_DAMAGED (what
    supervisord takes as final) and the reason, after raising store_damaged, which `vledger
    status` shows beside "does not answer hello"; restored, it starts and resolves the alert."""
    if cluster.node("replica-1").running():
        cluster.stop_node("replica-1")
    db = cluster.store_dir("replica-1") / DB_NAME
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        select = "SELECT hash FROM tree WHERE ledger = ? AND level = 4 AND idx = 0"
        good = bytes(conn.execute(select, (LEDGER,)).fetchone()[0])
        update = "UPDATE tree SET hash = ? WHERE ledger = ? AND level = 4 AND idx = 0"
        conn.execute(update, (bytes(32), LEDGER))
    done = cluster.cli("replica", "--config", str(cluster.config_path), "--node", "replica-1", check=False)
    assert done.returncode == EXIT_STORE_DAMAGED, done.stdout + done.stderr
    assert "store_damaged: [tree_mismatch]" in done.stderr and "level 4, index 0" in done.stderr, done.stderr
    code, found = report(cluster)
    assert code == EXIT_PROBLEM
    alert = _open(found, "replica-1||store_damaged")
    assert alert["detail"].startswith("[tree_mismatch] ") and str(db) in alert["detail"]
    assert any(
        p.startswith("replica-1 does not answer hello: its store is damaged (store_damaged): [tree_mismatch]")
        for p in found["problems"]
    ), found["problems"]
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(update, (good, LEDGER))
    cluster.start_node("replica-1")
    until_ok(cluster, "status exits 0 once the replica opened its restored store")


@pytest.mark.parametrize("name", ["replica-1", "observer-1"])
def test_a_follower_whose_store_is_damaged_while_it_runs_raises_the_alert_and_exits_65(
    cluster: LocalCluster, name: str
) -> None:
    """Pages of a running replica's (an observer's) chain.sqlite3 overwritten in place: the next
    read that meets them is answered store_damaged (not left unanswered, not an internal error),
    and the node raises store_damaged (naming the file) and exits with EXIT_STORE_DAMAGED, as at
    a start. (Without the main loop's handler a replica exited 1 here, which supervisord restarts.)
    The node's own reads (it follows its home) may meet the damage before the test's range does:
    it then stops without reading the range, as it must, and only the exit and alert are seen."""
    until_ok(cluster, f"all well before {name}'s store is damaged")
    db = cluster.store_dir(name) / DB_NAME
    overwrite_pages(db)
    wire = cluster.wire(ADMIN, name)
    process = cluster.node(name).process
    assert process is not None
    errors: list[dict[str, Any]] = []

    def refused_or_stopped() -> bool:  # its read connection drops cached pages within READ_CACHE_SECONDS
        wire.request("range", {"ledger": LEDGER, "start": 0})
        reply = wire.recv(2.0)
        if reply is None:  # unanswered: only a node that stopped may leave a request so
            return process.poll() is not None
        if not reply["ok"]:
            errors.append(reply["error"])
        return not reply["ok"]

    wait_until(refused_or_stopped, DEADLINE, "a range on the damaged store refused", interval=0.2)
    assert all(error["code"] == "store_damaged" for error in errors), errors
    assert process.wait(timeout=DEADLINE) == EXIT_STORE_DAMAGED, cluster.log_tail(name)
    assert "its store is damaged while it runs" in cluster.log_text(name)
    code, found = report(cluster)
    assert code == EXIT_PROBLEM
    alert = _open(found, f"{name}||store_damaged")
    assert alert["detail"].startswith("[store_error] ") and str(db) in alert["detail"], alert
    assert "malformed" in alert["detail"] or "not a database" in alert["detail"], alert
    assert any(
        p.startswith(f"{name} does not answer hello: its store is damaged (store_damaged)") for p in found["problems"]
    ), found["problems"]
    # Rebuilt (here: emptied, it catches up from its home), it starts and resolves the alert.
    for path in cluster.store_dir(name).iterdir():
        if path.name.startswith(DB_NAME):
            path.unlink()
    cluster.start_node(name)
    until_ok(cluster, f"status exits 0 once {name} opened a new store")


def test_a_record_stored_as_text_under_a_running_replica_is_store_damaged_at_once_and_at_start(
    cluster: LocalCluster,
) -> None:
    """Outsider pass 20, F2: one record's bytes cast to TEXT under a running replica. Its reads
    raised a bare OperationalError: the process exited 1 (restarted by supervisord for ever, no
    alert), and at each start again from the open. Now the read is store_damaged, the node exits
    65, and a start on the same store does too, naming the table and column."""
    name = "replica-1"
    until_ok(cluster, f"all well before {name}'s record is changed")
    db = cluster.store_dir(name) / DB_NAME
    where = f"WHERE ledger = '{LEDGER}' AND height = 1"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(f"UPDATE records SET data = CAST(data AS TEXT) {where}")
    wire = cluster.wire(ADMIN, name)
    process = cluster.node(name).process
    assert process is not None
    errors: list[dict[str, Any]] = []

    def refused_or_stopped() -> bool:
        wire.request("range", {"ledger": LEDGER, "start": 0})
        reply = wire.recv(2.0)
        if reply is None:
            return process.poll() is not None
        if not reply["ok"]:
            errors.append(reply["error"])
        return not reply["ok"]

    wait_until(refused_or_stopped, DEADLINE, "a range over the changed record refused", interval=0.2)
    assert all(error["code"] == "store_damaged" for error in errors), errors
    assert process.wait(timeout=DEADLINE) == EXIT_STORE_DAMAGED, cluster.log_tail(name)
    done = cluster.cli("replica", "--config", str(cluster.config_path), "--node", name, check=False)
    assert done.returncode == EXIT_STORE_DAMAGED, done.stdout + done.stderr
    assert "records table's data column holds a text value" in done.stderr, done.stderr
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(f"UPDATE records SET data = CAST(data AS BLOB) {where}")
    cluster.start_node(name)
    until_ok(cluster, f"status exits 0 once {name} opened its restored store")


def test_a_record_changed_to_text_under_a_running_home_is_never_published_and_is_store_damaged(
    cluster: LocalCluster,
) -> None:
    """A record's data set to (valid UTF-8) TEXT under a running home, its stream entries from
    there gone: the outbox process's heartbeat fills the stream again from the store's
    range_raw, which took the str as the record's bytes and published it. Now the read is
    store_damaged: nothing from that page is published, the process raises the alert and
    exits 65, and the node stops with it; its record put back, it starts and resolves it."""
    until_ok(cluster, "all well before the home's record is changed")
    height = 5
    db = cluster.store_dir("ingest-1") / DB_NAME
    where = f"WHERE ledger = '{LEDGER}' AND height = {height}"
    repl = ReplicationLedger(connect(cluster.cluster_redis_url))
    key = repl.stream_key(LEDGER)
    # The verifier reads the home's range every 200 ms: its read would meet the change first.
    cluster.stop_node("verifier-1")
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            original = conn.execute(f"SELECT data FROM records {where}").fetchone()[0]
            conn.execute(f"UPDATE records SET data = 'not a record' {where}")
        tail = [entry for entry, _ in repl.client.xrange(key, min=entry_id(height))]
        assert tail and repl.client.xdel(key, *tail) == len(tail)
        process = cluster.node("ingest-1").process
        assert process is not None
        assert process.wait(timeout=DEADLINE) == EXIT_STORE_DAMAGED, cluster.log_tail("ingest-1")
        assert [r.height for r in repl.read(LEDGER, 0, 1000)] == list(range(height))  # nothing from the page on
        code, found = report(cluster)
        assert code == EXIT_PROBLEM
        alert = _open(found, "ingest-1||store_damaged")
        # The node's alert follows its outbox process's (the same key), which its log keeps.
        assert "the outbox process" in alert["detail"] and str(db) in alert["detail"], alert
        said = f"data column holds a text value, not blob (ledger '{LEDGER}' at {height})"
        assert said in cluster.log_text("ingest-1"), cluster.log_tail("ingest-1")
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(f"UPDATE records SET data = ? {where}", (original,))
        cluster.start_node("ingest-1")
    finally:  # the module's later tests expect it running
        if not cluster.node("verifier-1").running():
            cluster.start_node("verifier-1")
    until_ok(cluster, "status exits 0 once the home opened its record put back")


def test_a_home_whose_store_is_damaged_while_it_runs_refuses_the_put_and_exits_65(cluster: LocalCluster) -> None:
    """The same under the ingest node: the put whose group commit meets the damage is answered
    store_damaged (so never acknowledged), the node raises the alert and exits 65; its store
    put back, it starts and resolves the alert."""
    until_ok(cluster, "all well before the home's store is damaged")
    directory = cluster.store_dir("ingest-1")
    backup = directory.parent / "ingest-1.backup"
    # The verifier reads the home every 200 ms: its read, not the put, would meet the damage
    # first now and then, and the node would stop before it read the put (CI saw it once).
    cluster.stop_node("verifier-1")
    try:
        cluster.stop_node("ingest-1")
        shutil.copytree(directory, backup)
        cluster.start_node("ingest-1")
        overwrite_pages(directory / DB_NAME)
        wire = cluster.wire("writer1", "ingest-1")
        reply = wire.call("put", put_args(entry(LEDGER, "vote", {"n": RECORDS}, "writer1")), timeout=DEADLINE)
        assert not reply["ok"] and reply["error"]["code"] == "store_damaged", reply
        process = cluster.node("ingest-1").process
        assert process is not None
        assert process.wait(timeout=DEADLINE) == EXIT_STORE_DAMAGED, cluster.log_tail("ingest-1")
        code, found = report(cluster)
        # The stopped verifier alone makes it exit EXIT_PROBLEM: the home must be among the problems.
        assert code == EXIT_PROBLEM and any(p.startswith("ingest-1 ") for p in found["problems"]), found["problems"]
        alert = _open(found, "ingest-1||store_damaged")
        assert alert["detail"].startswith("[store_error] ") and str(directory / DB_NAME) in alert["detail"], alert
        shutil.rmtree(directory)
        backup.rename(directory)
        cluster.start_node("ingest-1")
    finally:  # the module's later tests expect it running
        if not cluster.node("verifier-1").running():
            cluster.start_node("verifier-1")
    until_ok(cluster, "status exits 0 once the home opened its store put back")


def test_a_node_locked_out_of_redis_answers_hello_but_is_shown_not_ready(
    cluster: LocalCluster, redis_server: RedisServer
) -> None:
    """Outsider o13: after a Redis password rotation, a replica still on the old password was
    "up current" (exit 0) while it could publish nothing; only its /readyz said ok:false."""
    user = redis_acl.user_name("replica", "replica-1")
    admin = connect(redis_server.url)
    try:
        admin.execute_command("ACL", "SETUSER", user, "resetpass", ">a-rotated-password")
        admin.execute_command("CLIENT", "KILL", "USER", user)  # its connections sign in again, and fail

        def locked_out() -> dict[str, Any] | None:
            code, found = report(cluster)
            replica = node(found, "replica-1")
            return found if code == EXIT_PROBLEM and replica["up"] and "redis" in replica["unready"] else None

        found = wait_until(locked_out, DEADLINE, "status showing replica-1 not ready")
        (problem,) = [p for p in found["problems"] if p.startswith("replica-1 answers but is not ready: ")]
        assert "redis: " in problem and "password" in problem, problem
        code, out = status(cluster)
        assert code == EXIT_PROBLEM
        (row,) = [line for line in out.splitlines() if line.startswith("replica-1 ")]
        assert "not ready" in row, out
    finally:
        apply_acl(redis_server.url)  # its password back
        admin.close()
    until_ok(cluster, "replica-1 ready again")
