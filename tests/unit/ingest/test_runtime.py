"""A node's store that does not open: the store_damaged alert, raised and resolved (PROTOCOL 10.5)."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vledger.broker.replication import Alert, ReplicationLedger, raise_alert
from vledger.ingest.runtime import (
    ACCOUNTS_FAILING,
    DISK_FULL,
    STORE_DAMAGED,
    NodeRuntime,
    open_node_store,
    problem_alerts,
)
from vledger.node.errors import StoreDamagedError, StoreError
from vledger.node.store import ChainStore, fill_phase
from vledger.node.storefile import DB_NAME
from vledger.tests.unit.ingest.note_chain import append as append_notes

NAME = "replica-1"
LEDGER = "ledger-a"
KEY = f"{NAME}||{STORE_DAMAGED}"


def _filled(directory: Path, count: int = 40) -> None:
    with ChainStore(directory, origin="home") as store:
        append_notes(store, LEDGER, count)


def _note_of(root: bytes) -> bytes:
    """A note of LEDGER's checkpoint at size 1 (syntax only: no signature is verified here)."""
    body = f"home/{LEDGER}\n1\n{base64.b64encode(root).decode()}\n"
    return f"{body}\n\u2014 home {base64.b64encode(bytes(40)).decode()}\n".encode()


def _sql(directory: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(directory / DB_NAME) as conn:
        conn.execute(statement, args)
    conn.close()


def _flip_tree_row(directory: Path, level: int, index: int) -> bytes:
    """Change one byte of a stored tree row; returns the row's true hash."""
    with sqlite3.connect(directory / DB_NAME) as conn:
        good = bytes(
            conn.execute(
                "SELECT hash FROM tree WHERE ledger = ? AND level = ? AND idx = ?", (LEDGER, level, index)
            ).fetchone()[0]
        )
    conn.close()
    _sql(
        directory,
        "UPDATE tree SET hash = ? WHERE ledger = ? AND level = ? AND idx = ?",
        good[:-1] + bytes([good[-1] ^ 1]),
        LEDGER,
        level,
        index,
    )
    return good


def test_a_tree_row_changed_under_a_stopped_node_raises_store_damaged_until_it_opens(
    redis_client: Any, tmp_path: Path
) -> None:
    replication = ReplicationLedger(redis_client)
    directory = tmp_path / NAME
    _filled(directory)
    good = _flip_tree_row(directory, 4, 1)
    with pytest.raises(StoreDamagedError, match=r"^\[tree_mismatch\] .*level 4, index 1 does not match"):
        open_node_store(NAME, directory, replication)
    alert = replication.open_alerts()[KEY]
    assert alert["what"] == STORE_DAMAGED and alert["node"] == NAME and alert["source"] == NAME
    assert alert["detail"].startswith("[tree_mismatch] ") and str(directory) in alert["detail"]
    assert "level 4, index 1" in alert["detail"]
    assert [a["what"] for a in replication.alerts()] == [STORE_DAMAGED]
    # A second failed start is the same open alert (one per node), not a second one.
    with pytest.raises(StoreDamagedError):
        open_node_store(NAME, directory, replication)
    assert list(replication.open_alerts()) == [KEY]
    # Restored: the node opens it and resolves its alert; the stream keeps the history.
    _sql(directory, "UPDATE tree SET hash = ? WHERE ledger = ? AND level = 4 AND idx = 1", good, LEDGER)
    open_node_store(NAME, directory, replication).close()
    assert replication.open_alerts() == {}
    assert len(replication.alerts()) == 2


def test_a_changed_head_record_names_its_height(redis_client: Any, tmp_path: Path) -> None:
    replication = ReplicationLedger(redis_client)
    directory = tmp_path / NAME
    _filled(directory, 20)
    with sqlite3.connect(directory / DB_NAME) as conn:
        data = bytes(conn.execute("SELECT data FROM records WHERE ledger = ? AND height = 19", (LEDGER,)).fetchone()[0])
    conn.close()
    _sql(directory, "UPDATE records SET data = ? WHERE ledger = ? AND height = 19", data[:-1] + b"\x00", LEDGER)
    with pytest.raises(StoreDamagedError):
        open_node_store(NAME, directory, replication)
    alert = replication.open_alerts()[KEY]
    assert alert["height"] == "19" and alert["detail"].startswith("[")


def test_redis_down_still_stops_the_node_with_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import redis

    down = ReplicationLedger(redis.Redis(port=1, socket_connect_timeout=0.2))  # nothing listens on port 1
    directory = tmp_path / NAME
    _filled(directory)
    _flip_tree_row(directory, 5, 0)
    with pytest.raises(StoreDamagedError, match="tree_mismatch"):
        open_node_store(NAME, directory, down)
    assert "alert not recorded in Redis" in caplog.text and "level 5, index 0" in caplog.text


def test_a_sound_store_resolves_only_its_own_node_s_alert(redis_client: Any, tmp_path: Path) -> None:
    replication = ReplicationLedger(redis_client)
    other = f"replica-2||{STORE_DAMAGED}"
    redis_client.hset(replication.open_alerts_key, other, json.dumps({"what": STORE_DAMAGED}))
    redis_client.hset(replication.open_alerts_key, KEY, json.dumps({"what": STORE_DAMAGED}))
    _filled(tmp_path / NAME)
    open_node_store(NAME, tmp_path / NAME, replication).close()
    assert list(replication.open_alerts()) == [other]


def test_a_file_sqlite_finds_malformed_is_a_damaged_store_too(redis_client: Any, tmp_path: Path) -> None:
    replication = ReplicationLedger(redis_client)
    directory = tmp_path / NAME
    _filled(directory)
    path = directory / DB_NAME
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    path.write_bytes(data[: 2 * page] + b"\xff" * page + data[3 * page :])  # its third page overwritten
    with pytest.raises(StoreDamagedError, match=r"^\[store_error\] .*malformed"):
        open_node_store(NAME, directory, replication)
    assert replication.open_alerts()[KEY]["detail"].startswith("[store_error] ")
    path.write_bytes(b"\x00" * 100 + data[100:])  # its header gone: SQLite does not open it at all
    with pytest.raises(StoreDamagedError, match=r"^\[store_error\] .*not a database"):
        open_node_store(NAME, directory, replication)


@pytest.mark.parametrize(
    ("statement", "where"),
    [
        # The same bytes as TEXT (outsider pass 20, F2): not UTF-8, a read raised OperationalError.
        (
            f"UPDATE records SET data = CAST(data AS TEXT) WHERE ledger = '{LEDGER}' AND height = 2",
            "records table's data",
        ),
        (f"UPDATE records SET data = 'hello' WHERE ledger = '{LEDGER}' AND height = 3", "records table's data"),
        (f"UPDATE records SET data = 5 WHERE ledger = '{LEDGER}' AND height = 3", "records table's data"),
        (f"UPDATE tree SET hash = CAST(hash AS TEXT) WHERE ledger = '{LEDGER}' AND level = 4", "tree table's hash"),
        (f"UPDATE tree_edge SET frontier = 'abc' WHERE ledger = '{LEDGER}'", "tree_edge table's frontier"),
        (f"UPDATE checkpoints SET note = CAST(note AS TEXT) WHERE ledger = '{LEDGER}'", "checkpoints table's note"),
        (f"UPDATE checkpoints SET size = 'x' WHERE ledger = '{LEDGER}'", "checkpoints table's size"),
    ],
)
def test_a_cell_of_another_type_is_a_damaged_store_not_a_crash(
    redis_client: Any, tmp_path: Path, statement: str, where: str
) -> None:
    replication = ReplicationLedger(redis_client)
    directory = tmp_path / NAME
    _filled(directory)
    with ChainStore(directory) as store:
        store.checkpoints.keep(LEDGER, "signed", 1, store.root(LEDGER, 1), _note_of(store.root(LEDGER, 1)))
    _sql(directory, statement)
    with pytest.raises(StoreDamagedError, match=rf"^\[store_error\] .*the {where} column holds a \w+ value"):
        open_node_store(NAME, directory, replication)
    assert replication.open_alerts()[KEY]["what"] == STORE_DAMAGED


def test_a_text_cell_read_while_the_node_runs_is_damage(tmp_path: Path) -> None:
    # Changed under a running node: its next read of that record raised a bare OperationalError,
    # which the node took for a bug of the moment (a crash, restarted for ever), not damage.
    directory = tmp_path / NAME
    _filled(directory)
    with ChainStore(directory) as store:
        _sql(directory, f"UPDATE records SET data = CAST(data AS TEXT) WHERE ledger = '{LEDGER}' AND height = 2")
        with pytest.raises(sqlite3.OperationalError) as raised:
            list(store.range_raw(LEDGER, 0, 5))
        found = store.damaged(raised.value)
        assert found is not None and "Could not decode to UTF-8" in found.message


def test_a_store_that_cannot_be_opened_now_is_not_a_damaged_one(redis_client: Any, tmp_path: Path) -> None:
    # SQLite cannot open the file (here: a directory where the file goes; as locked, busy, out
    # of space or file handles): what the moment holds, not the file. The node fails as any
    # other error (supervisord starts it again), and raises no store_damaged alert.
    replication = ReplicationLedger(redis_client)
    directory = tmp_path / NAME
    (directory / DB_NAME).mkdir(parents=True)
    with pytest.raises(StoreError) as raised:
        open_node_store(NAME, directory, replication)
    assert not isinstance(raised.value, StoreDamagedError)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert replication.open_alerts() == {}


class _Runtime:
    """What NodeRuntime.store uses of a runtime: its node's name, store directory and closing."""

    store = NodeRuntime.store
    _store_damaged = NodeRuntime._store_damaged
    _with_room = NodeRuntime._with_room

    def __init__(self, directory: Path) -> None:
        self.name = NAME
        self.config = SimpleNamespace(store_dir=lambda name: directory)
        self.closed: list[Callable[[], object]] = []

    def closing(self, close: Callable[[], object]) -> None:
        self.closed.append(close)


@pytest.mark.parametrize("fill_at", [16, 2, None])
def test_a_node_store_takes_its_fill_phase_below_the_fill_size_it_is_given(
    redis_client: Any, tmp_path: Path, fill_at: int | None
) -> None:
    # The phase was always taken below the default fill size (1024): a smaller one given in the
    # options was refused with ValueError whenever the node's name gave a phase past it.
    assert fill_phase(NAME) >= 16  # the name's phase under the default: past the fill sizes given here
    runtime = _Runtime(tmp_path / NAME)
    store = runtime.store(ReplicationLedger(redis_client), hash_fill_at=fill_at)
    try:
        assert store.hash_fill_at == fill_at
        assert store._fill_due == (0 if fill_at is None else fill_at - fill_phase(NAME, fill_at))
    finally:
        store.close()


def test_a_node_raises_accounts_failing_with_the_reason_and_resolves_it(redis_client: Any) -> None:
    # review r14 F4: what AccountCache.on_failing is wired to in a node (NodeRuntime.account_cache).
    replication = ReplicationLedger(redis_client, node=NAME)
    report = problem_alerts(NAME, replication, "", ACCOUNTS_FAILING)
    report("the accounts are not current: 3 loads in a row failed since 2026-12-07T05:00:00Z (RuntimeError: x)")
    alert = replication.own_open_alerts()[f"{NAME}||{ACCOUNTS_FAILING}"]
    assert (alert["node"], alert["ledger"], alert["height"], alert["source"]) == (NAME, "", "0", "")
    assert alert["detail"].endswith("(RuntimeError: x)")
    report(None)
    assert replication.own_open_alerts() == {}


def test_a_node_restarted_after_room_was_made_resolves_the_disk_full_an_earlier_run_raised(
    redis_client: Any, tmp_path: Path
) -> None:
    """Review r21 F4: the earlier run waited in _with_room with its alert raised; restarted once
    room was made, this run opened at once and never resolved it."""
    replication = ReplicationLedger(redis_client, node=NAME)
    # What the earlier run raised while it waited (NodeRuntime._with_room).
    raise_alert(replication, Alert(NAME, "", 0, DISK_FULL, f"disk full: {tmp_path}: disk I/O error", source=NAME))
    assert f"{NAME}||{DISK_FULL}" in replication.own_open_alerts()
    runtime = _Runtime(tmp_path / NAME)
    store = runtime.store(replication)  # room now: opens at once
    try:
        assert f"{NAME}||{DISK_FULL}" not in replication.own_open_alerts()
    finally:
        store.close()


def test_a_new_node_redis_refuses_is_not_said_to_hold_an_open_alert(
    redis_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Outsider o21 F6: a brand-new node whose Redis user was refused logged "an open
    # store_damaged alert of it stays open", of an alert it never had.
    import redis

    replication = ReplicationLedger(redis_client)

    def refused(*args: Any, **kwargs: Any) -> int:
        raise redis.exceptions.AuthenticationError("invalid username-password pair or user is disabled.")

    replication.resolve_node = refused  # type: ignore[method-assign]
    open_node_store(NAME, tmp_path / NAME, replication).close()
    assert "stays open" not in caplog.text
    assert f"a {STORE_DAMAGED} alert an earlier start may have left open is not resolved" in caplog.text
