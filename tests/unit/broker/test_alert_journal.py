"""A node's alert journal (broker/alert_journal.py) and ReplicationLedger.reassert, on the real
session Redis: what Redis loses of a node's open alerts comes back; what was resolved does not
(PROTOCOL 10.5)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from vledger.broker import alert_journal
from vledger.broker.alert_journal import ALERT_JOURNAL, AlertJournal, carry_journal, journal_open_alert
from vledger.broker.redis_server import connect
from vledger.broker.replication import OPEN_ALERTS_CAP, Alert, ReplicationLedger, raise_alert, stream_order

NODE = "verifier-1"
LEDGER = "ledger-a"
LAGGING = Alert("replica-1", LEDGER, 7, "lagging", "behind its home", source="replica-1")
FORK = Alert("ingest-1", LEDGER, 3, "signed_fork", "two roots of one size", source="redis")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[AlertJournal]:
    kept = AlertJournal(tmp_path / NODE / ALERT_JOURNAL, NODE)
    yield kept
    kept.close()


@pytest.fixture
def raiser(redis_client: Any, journal: AlertJournal) -> ReplicationLedger:
    return ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=journal)


@pytest.fixture
def operator(redis_client: Any) -> ReplicationLedger:
    return ReplicationLedger(redis_client, raisers=[NODE])


def shown(repl: ReplicationLedger) -> dict[str, dict[str, str]]:
    """The open alerts as a reader sees them, without the stream id (a re-assert gives a new one)."""
    return {key: {k: v for k, v in alert.items() if k != "id"} for key, alert in repl.open_alerts().items()}


def test_a_flushall_loses_no_open_alert(raiser: ReplicationLedger, redis_client: Any) -> None:
    raiser.alert(LAGGING)
    raiser.alert(FORK)
    before = shown(raiser)
    assert raiser.reassert() == []  # nothing lost: nothing written
    redis_client.flushall()
    assert raiser.open_alerts() == {}
    assert sorted(raiser.reassert()) == sorted([LAGGING.key, FORK.key])
    assert shown(raiser) == before  # every field as raised, at_ms included
    # Each is in the raiser's stream again, under the id its open hash names.
    logged = {alert["id"]: alert for alert in raiser.alerts()}
    assert {alert["id"] for alert in raiser.open_alerts().values()} <= set(logged)
    assert raiser.reassert() == []


def _calls(redis_client: Any, command: str) -> int:
    return int(redis_client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_reassert_reads_only_the_journals_fields_of_an_open_hash_filled_past_the_cap(
    raiser: ReplicationLedger, redis_client: Any
) -> None:
    # Review r24 F5: the node's own Redis user can fill its open hash with 1M fields; each pass
    # of its alert keeper read them all (HGETALL, 7-9 s of CPU). It reads the journal's alone.
    raiser.alert(LAGGING)
    raiser.alert(FORK)
    before = {key: {k: v for k, v in alert.items() if k != "id"} for key, alert in raiser.own_open_alerts().items()}
    pipe = redis_client.pipeline(transaction=False)
    for start in range(0, OPEN_ALERTS_CAP, 5000):
        pipe.hset(raiser.open_alerts_key, mapping={f"x|{i}|lag": "{}" for i in range(start, start + 5000)})
    pipe.hdel(raiser.open_alerts_key, FORK.key)
    pipe.execute()
    read_whole = _calls(redis_client, "hgetall")
    assert raiser.reassert() == [FORK.key]
    assert _calls(redis_client, "hgetall") == read_whole
    mine = {key: alert for key, alert in raiser.own_open_alerts().items() if not key.startswith("x|")}
    assert {key: {k: v for k, v in alert.items() if k != "id"} for key, alert in mine.items()} == before


def test_a_node_reads_its_own_open_hash_filled_past_the_cap_as_every_reader_does(
    raiser: ReplicationLedger, redis_client: Any
) -> None:
    # Review r25 F4: each start (own_open_alerts: its follower, witness, disk and witness-feeder
    # alerts) read the whole hash its own Redis user may fill; past the cap it takes its journal's.
    raiser.alert(LAGGING)
    pipe = redis_client.pipeline(transaction=False)
    for start in range(0, OPEN_ALERTS_CAP + 5000, 5000):
        pipe.hset(raiser.open_alerts_key, mapping={f"x|{i}|lag": "{}" for i in range(start, start + 5000)})
    pipe.execute()
    read_whole = _calls(redis_client, "hgetall")
    assert list(raiser.own_open_alerts()) == [LAGGING.key]
    assert _calls(redis_client, "hgetall") == read_whole


def test_deleted_or_rewritten_alert_keys_come_back(raiser: ReplicationLedger, redis_client: Any) -> None:
    # An insider with the node's Redis password deletes its keys, or rewrites an alert to say less.
    raiser.alert(LAGGING)
    raiser.alert(FORK)
    before = shown(raiser)
    redis_client.delete(raiser.open_alerts_key, raiser.alerts_key)
    assert sorted(raiser.reassert()) == sorted([LAGGING.key, FORK.key])
    assert shown(raiser) == before
    redis_client.hset(raiser.open_alerts_key, FORK.key, json.dumps({"what": "signed_fork", "height": "0"}))
    assert raiser.reassert() == [FORK.key]
    assert shown(raiser) == before


def test_an_open_hash_made_a_stream_is_replaced(
    raiser: ReplicationLedger, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # An insider with the node's Redis password (HDEL and XADD are its own commands there) makes
    # its open hash a stream: every put back and every new alert failed WRONGTYPE, for good,
    # logged at debug (review16 2).
    raiser.alert(FORK)
    before = shown(raiser)
    redis_client.delete(raiser.open_alerts_key)
    redis_client.xadd(raiser.open_alerts_key, {"x": "y"})
    with caplog.at_level(logging.WARNING, logger="vledger.broker.replication"):
        assert raiser.reassert() == [FORK.key]
    assert shown(raiser) == before
    assert [r.levelno for r in caplog.records if "of another type" in r.message] == [logging.WARNING]


@pytest.mark.parametrize("key_of", ["open_alerts_key", "alerts_key"])
def test_a_new_alert_replaces_an_alert_key_of_another_type(
    raiser: ReplicationLedger, redis_client: Any, caplog: pytest.LogCaptureFixture, key_of: str
) -> None:
    key = getattr(raiser, key_of)
    if key_of == "open_alerts_key":
        redis_client.xadd(key, {"x": "y"})
    else:
        redis_client.hset(key, "x", "y")
    with caplog.at_level(logging.WARNING, logger="vledger.broker.replication"):
        raised = raiser.alert(LAGGING)
    assert raiser.open_alerts()[LAGGING.key]["id"] == raised
    assert [r.levelno for r in caplog.records if "of another type" in r.message] == [logging.WARNING]


def test_an_alert_its_raiser_resolved_does_not_come_back(raiser: ReplicationLedger, redis_client: Any) -> None:
    raiser.alert(LAGGING)
    raiser.alert(FORK)
    assert raiser.resolve([LAGGING.key]) == 1
    redis_client.flushall()
    assert raiser.reassert() == [FORK.key]
    assert list(raiser.open_alerts()) == [FORK.key]
    # Resolved while Redis had lost it: counted as open still, and gone for good.
    redis_client.flushall()
    assert raiser.resolve([FORK.key]) == 1
    assert raiser.reassert() == [] and raiser.open_alerts() == {}


def test_resolve_up_to_closes_in_the_journal_what_it_closes_in_redis(
    raiser: ReplicationLedger, redis_client: Any
) -> None:
    low = Alert(NODE, LEDGER, 4, "bad_link", "refused")
    raiser.alert(low)
    assert raiser.resolve_up_to([low.key], 3) == 0  # raised at a greater height: stays open
    redis_client.flushall()
    assert raiser.reassert() == [low.key]
    assert raiser.resolve_up_to([low.key], 4) == 1
    redis_client.flushall()
    assert raiser.reassert() == []


def test_a_restart_keeps_the_open_alerts(
    raiser: ReplicationLedger, journal: AlertJournal, redis_client: Any, tmp_path: Path
) -> None:
    raiser.alert(FORK)
    before = shown(raiser)
    journal.close()
    redis_client.flushall()
    with AlertJournal(tmp_path / NODE / ALERT_JOURNAL, NODE) as again:
        restarted = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=again)
        assert restarted.reassert() == [FORK.key]
        assert shown(restarted) == before


@pytest.mark.parametrize(
    "alert",
    [
        FORK,
        # PROTOCOL 10.5's table: the copy is rewritten at once, the alert is the evidence (review16 1).
        Alert("redis", "admin", 3, "admin_cache_conflict", "the copy was rewritten", source="ingest-1"),
        # The verifier's on a node's copy: nothing but an operator resolves it.
        Alert("replica-1", LEDGER, 3, "record_conflict", "this node's record differs", source="redis"),
        # The outbox's against the stream: it resolves it from memory a restarted outbox lacks.
        Alert("redis", LEDGER, 3, "record_conflict", "the home rewrote the stream", source="ingest-1"),
        # A former home's about the tail it set aside (o22 F3): its own key, as a refusal's.
        Alert(NODE, LEDGER, 3, "record_conflict", "set aside in a file", source="ingest-1", operator_only=True),
    ],
    ids=[
        "signed_fork",
        "admin_cache_conflict",
        "record_conflict_on_a_copy",
        "record_conflict_on_the_stream",
        "record_conflict_set_aside",
    ],
)
def test_an_operators_resolution_is_final_for_the_kinds_only_an_operator_resolves(
    raiser: ReplicationLedger, operator: ReplicationLedger, alert: Alert
) -> None:
    raiser.alert(alert)
    assert operator.resolve_as_operator([alert.key]) == 1
    assert raiser.reassert() == []
    assert raiser.open_alerts() == {}
    assert [event for _, event, key, _ in raiser.journal.history() if key == alert.key] == [  # type: ignore[union-attr]
        "raised",
        "resolved by operator",
    ]


@pytest.mark.parametrize("alert", [LAGGING, Alert(NODE, LEDGER, 3, "record_conflict", "refused", source="ingest-1")])
def test_an_operators_resolution_of_a_cause_still_there_comes_back(
    raiser: ReplicationLedger, operator: ReplicationLedger, alert: Alert
) -> None:
    # This run raised it and resolves it itself once its cause is gone: until then, it is open.
    raised = raiser.alert(alert)
    assert operator.resolve_as_operator([alert.key]) == 1
    assert raiser.reassert() == [alert.key]
    back = raiser.open_alerts()[alert.key]
    assert stream_order(back["id"]) > stream_order(raised)
    assert operator.operator_resolved([(NODE, alert.key)]) == {(NODE, alert.key): raised}
    assert raiser.reassert() == []  # the operator's note is of the older id


def test_an_operators_resolution_of_an_earlier_runs_alert_is_final(
    raiser: ReplicationLedger, operator: ReplicationLedger, journal: AlertJournal, redis_client: Any, tmp_path: Path
) -> None:
    # No later run resolves an earlier run's alert of such a kind itself: the operator does.
    raiser.alert(LAGGING)
    journal.close()
    with AlertJournal(tmp_path / NODE / ALERT_JOURNAL, NODE) as again:
        restarted = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=again)
        assert operator.resolve_as_operator([LAGGING.key]) == 1
        assert restarted.reassert() == []
        redis_client.flushall()
        assert restarted.reassert() == []
        assert again.open_alerts() == {}


def test_an_alert_raised_while_redis_is_away_is_put_there_once_it_is_back(
    redis_client: Any, journal: AlertJournal, caplog: pytest.LogCaptureFixture
) -> None:
    away = ReplicationLedger(connect("redis://127.0.0.1:1", timeout=0.5), node=NODE, raisers=[NODE], journal=journal)
    with caplog.at_level(logging.WARNING, logger="vledger"):
        raise_alert(away, FORK)
    back = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=journal)
    assert back.reassert() == [FORK.key]
    assert back.open_alerts()[FORK.key]["what"] == "signed_fork"
    # The host's log has it too: one line naming the raiser and the alert.
    lines = [r.getMessage() for r in caplog.records if r.name == "vledger.broker.alert_journal"]
    assert any(line.startswith(f"alert raised by {NODE}: {FORK.key} ") for line in lines)


def test_the_journal_is_the_nodes_alone(journal: AlertJournal) -> None:
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600


def test_an_alert_deleted_in_a_loop_is_noted_once_a_minute(
    raiser: ReplicationLedger, redis_client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An insider deleting it at every pass made a history row and a WARNING every 5 s, which
    # evicts the bounded history (review16 8): it is still put back every time.
    raiser.alert(FORK)
    clock = [10**12]
    monkeypatch.setattr("vledger.broker.alert_journal._now_ms", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="vledger.broker.alert_journal"):
        for _ in range(3):
            redis_client.hdel(raiser.open_alerts_key, FORK.key)
            assert raiser.reassert() == [FORK.key]
            clock[0] += 5_000
        clock[0] += 60_000
        redis_client.hdel(raiser.open_alerts_key, FORK.key)
        assert raiser.reassert() == [FORK.key]
    events = [event for _, event, key, _ in raiser.journal.history() if key == FORK.key]  # type: ignore[union-attr]
    assert events == ["raised", "reasserted", "reasserted"]
    assert len([r for r in caplog.records if "reasserted" in r.message]) == 2


def test_the_history_is_bounded(journal: AlertJournal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vledger.broker.alert_journal.HISTORY_ROWS", 150)
    for height in range(200):
        journal.raised(LAGGING.key, {"id": "", "height": str(height)})
    kept = journal.history()
    assert 150 <= len(kept) <= 250 and kept[-1][3]["height"] == "199"
    for height in range(200, 400):
        journal.raised(LAGGING.key, {"id": "", "height": str(height)})
    assert len(journal.history()) <= 250


def test_a_repair_carries_the_journal_into_the_rebuilt_store(journal: AlertJournal, tmp_path: Path) -> None:
    journal.raised(FORK.key, {"id": "", "what": "signed_fork"})
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert carry_journal(journal.path.parent, fresh)
    with AlertJournal(fresh / ALERT_JOURNAL, NODE) as carried:
        assert list(carried.open_alerts()) == [FORK.key]
    assert stat.S_IMODE((fresh / ALERT_JOURNAL).stat().st_mode) == 0o600
    assert not carry_journal(tmp_path / "none", fresh)


def test_a_damaged_journal_is_moved_aside_and_stops_neither_the_node_nor_a_repair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "file is not a database" stopped the node's start, its outbox (a crash loop) and `vledger
    # repair`, the tool meant for a damaged disk (review16 7).
    store = tmp_path / NODE
    store.mkdir()
    damaged = b"not a database, whatever the disk did to it" * 100
    (store / ALERT_JOURNAL).write_bytes(damaged)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with caplog.at_level(logging.WARNING, logger="vledger.broker.alert_journal"):
        assert not carry_journal(store, fresh)
    assert not (fresh / ALERT_JOURNAL).exists()
    assert [r.levelno for r in caplog.records if "does not open" in r.message] == [logging.WARNING]
    caplog.clear()
    with (
        caplog.at_level(logging.ERROR, logger="vledger.broker.alert_journal"),
        AlertJournal(store / ALERT_JOURNAL, NODE) as journal,
    ):
        journal.raised(FORK.key, {"id": "", **FORK.fields()})
        assert list(journal.open_alerts()) == [FORK.key]
    assert [r.levelno for r in caplog.records if "does not open" in r.message] == [logging.ERROR]
    [aside] = store.glob(f"{ALERT_JOURNAL}.damaged-*")
    assert aside.read_bytes() == damaged
    assert stat.S_IMODE((store / ALERT_JOURNAL).stat().st_mode) == 0o600


# The node's other process opening the journal: it prints the inode of the file it opened and
# the open alerts it finds there, and keeps it open until its stdin closes.
OTHER_PROCESS = """
import json, os, sys
from pathlib import Path
from vledger.broker.alert_journal import AlertJournal
path = Path(sys.argv[1])
with AlertJournal(path, "verifier-1") as journal:
    print(json.dumps([os.stat(path).st_ino, sorted(journal.open_alerts())]), flush=True)
    sys.stdin.read()
"""


def flock_waiter(pid: int) -> bool:
    """Whether process ``pid`` waits for an flock (a blocked request in /proc/locks)."""
    return any("-> FLOCK" in line and f" {pid} " in line for line in Path("/proc/locks").read_text().splitlines())


def test_a_damaged_journal_the_nodes_other_process_replaced_first_is_not_moved_again(tmp_path: Path) -> None:
    # The node and its outbox process open one journal at one start: the second to find it
    # damaged moved the fresh one the first began (losing what was raised there meanwhile), or,
    # between the first's renames, renamed its fresh WAL aside (review17 6). Each opens it, and
    # moves a damaged one aside, holding an flock: the other process waits.
    path = tmp_path / NODE / ALERT_JOURNAL
    path.parent.mkdir()
    path.write_bytes(b"damaged" * 200)
    with alert_journal._opening(path):  # this process is the first: it opens the journal now
        other = subprocess.Popen(
            [sys.executable, "-c", OTHER_PROCESS, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while not flock_waiter(other.pid):
            assert other.poll() is None and time.monotonic() < deadline, "the other process never waited"
            time.sleep(0.01)
        assert path.read_bytes() == b"damaged" * 200  # it has not opened it, nor moved it aside
        try:
            alert_journal._connect(path)
        except alert_journal._Damaged as e:
            assert alert_journal._move_aside(path, e.inode) is not None
        first = alert_journal._connect(path)
        first.execute("INSERT INTO open_alerts VALUES (?, '{}', 0)", (FORK.key,))  # raised before it opens
    try:
        assert other.stdout is not None
        inode, found = json.loads(other.stdout.readline())
        assert inode == path.stat().st_ino and found == [FORK.key]  # the same fresh file
        other.communicate("", timeout=30)
    finally:
        first.close()
        other.kill()
    assert len(list(path.parent.glob(f"{ALERT_JOURNAL}.damaged-*"))) == 1


def test_a_sound_journal_another_connection_holds_busy_is_not_moved_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a file that is no journal (SQLITE_NOTADB, SQLITE_CORRUPT) is moved aside: a busy one
    # is sound, and the process that holds it would go on writing the file moved away.
    with AlertJournal(tmp_path / ALERT_JOURNAL, NODE) as journal:
        journal.raised(FORK.key, {"id": "", **FORK.fields()})
    holder = sqlite3.connect(journal.path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    connect = sqlite3.connect
    monkeypatch.setattr(alert_journal.sqlite3, "connect", lambda *a, **k: connect(*a, **{**k, "timeout": 0.1}))
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            AlertJournal(journal.path, NODE)
    finally:
        holder.close()
    assert not list(tmp_path.glob(f"{ALERT_JOURNAL}.damaged-*"))
    with AlertJournal(journal.path, NODE) as reopened:
        assert list(reopened.open_alerts()) == [FORK.key]


def test_a_journal_gone_when_moved_aside_was_moved_by_the_other_process(tmp_path: Path) -> None:
    # Its file renamed already, and the other process's fresh WAL there: it is not moved again.
    path = tmp_path / ALERT_JOURNAL
    wal = tmp_path / f"{ALERT_JOURNAL}-wal"
    wal.write_bytes(b"the other process's fresh WAL")
    assert alert_journal._move_aside(path, 1) is None
    assert wal.read_bytes() == b"the other process's fresh WAL"
    assert not list(tmp_path.glob(f"{ALERT_JOURNAL}.damaged-*"))


def test_a_later_run_takes_its_earlier_runs_alerts_from_the_journal_when_redis_lost_them(
    raiser: ReplicationLedger, journal: AlertJournal, redis_client: Any, tmp_path: Path
) -> None:
    # A follower adopts its alerts about its own copy at its start (Follower.carry_over) from
    # own_open_alerts: Redis wiped, or away, must not make them the operator's.
    own = Alert(NODE, LEDGER, 9, "tree_mismatch", "its own copy", source=NODE)
    raiser.alert(own)
    journal.close()
    redis_client.flushall()
    with AlertJournal(tmp_path / NODE / ALERT_JOURNAL, NODE) as again:
        restarted = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=again)
        assert restarted.own_open_alerts()[own.key]["height"] == "9"
        away = ReplicationLedger(connect("redis://127.0.0.1:1", timeout=0.5), node=NODE, journal=again)
        assert list(away.own_open_alerts()) == [own.key]
    with pytest.raises(redis.exceptions.ConnectionError):
        ReplicationLedger(connect("redis://127.0.0.1:1", timeout=0.5), node=NODE).own_open_alerts()


def test_an_alert_resolved_while_a_reassert_runs_is_not_put_back(
    raiser: ReplicationLedger, journal: AlertJournal, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node's other process (an ingest node's outbox) resolves it between the keeper's read
    # of the journal and its put back: put back, it stayed open in Redis with no raiser to close it.
    raiser.alert(LAGGING)
    redis_client.flushall()
    with AlertJournal(journal.path, NODE) as theirs:
        other = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=theirs)
        read = journal.open_alerts

        def resolved_meanwhile() -> dict[str, tuple[dict[str, Any], int]]:
            found = read()
            assert other.resolve([LAGGING.key]) == 1
            return found

        monkeypatch.setattr(journal, "open_alerts", resolved_meanwhile)
        assert raiser.reassert() == []
    assert raiser.open_alerts() == {} and read() == {}


def test_an_open_alert_is_read_without_creating_or_changing_the_journal(tmp_path: Path) -> None:
    # What `vledger repair` reads of a stopped node's journal (its store_damaged).
    path = tmp_path / NODE / ALERT_JOURNAL
    assert journal_open_alert(path, FORK.key) is None and not path.exists()
    fields = {"id": "", **FORK.fields()}
    with AlertJournal(path, NODE) as kept:
        kept.raised(FORK.key, fields)
        before = kept.history()
    assert journal_open_alert(path, FORK.key) == fields
    assert journal_open_alert(path, LAGGING.key) is False  # none open: not "no journal" (review18 1)
    with AlertJournal(path, NODE) as kept:
        assert kept.history() == before
        kept.resolved([FORK.key])
    assert journal_open_alert(path, FORK.key) is False
    path.write_bytes(b"not a journal" * 100)
    assert journal_open_alert(path, FORK.key) is None


def _after(at_ms: str) -> None:
    """Return once the clock is past ``at_ms``: a raise now gets another time."""
    deadline = time.monotonic() + 5
    while time.time_ns() // 1_000_000 <= int(at_ms):
        assert time.monotonic() < deadline


def test_an_alert_raised_again_while_open_keeps_its_first_at_ms(raiser: ReplicationLedger, redis_client: Any) -> None:
    # The verifier found a bad_checksum again after Redis lost it, and raised it anew before its
    # journal put it back: a new at_ms, the first sight of the cause lost (outsider o11; 10.5).
    checksum = Alert("replica-3", LEDGER, 3, "bad_checksum", "its checksum is another", source="replica-3")
    raiser.alert(checksum)
    first = raiser.open_alerts()[checksum.key]["at_ms"]
    _after(first)
    redis_client.flushall()
    raiser.alert(checksum)
    again = raiser.open_alerts()[checksum.key]
    assert again["at_ms"] == first
    assert [a["at_ms"] for a in raiser.alerts() if a["what"] == "bad_checksum"] == [first]  # its new entry too
    # Still open (its cause stays): raised at another height, it keeps it too.
    raiser.alert(dataclasses.replace(checksum, height=2))
    assert raiser.open_alerts()[checksum.key]["at_ms"] == first
    # Resolved, its cause was gone: the next one is a new finding, with its own time.
    raiser.resolve([checksum.key])
    _after(first)
    raiser.alert(checksum)
    assert raiser.open_alerts()[checksum.key]["at_ms"] != first


def test_an_alert_raised_again_after_an_operator_resolved_it_gets_a_new_at_ms(
    raiser: ReplicationLedger, operator: ReplicationLedger
) -> None:
    # The journal learns of an operator's resolution only at the next reassert: a raise before it
    # kept the resolved alert's at_ms, as if the cause had stayed (review18 6).
    raiser.alert(LAGGING)
    first = raiser.open_alerts()[LAGGING.key]["at_ms"]
    assert operator.resolve_as_operator([LAGGING.key]) == 1
    _after(first)
    raiser.alert(dataclasses.replace(LAGGING, height=9))
    assert raiser.open_alerts()[LAGGING.key]["at_ms"] != first
    assert raiser.journal is not None
    assert [event for _, event, key, _ in raiser.journal.history() if key == LAGGING.key] == [
        "raised",
        "resolved by operator",
        "raised",
    ]
