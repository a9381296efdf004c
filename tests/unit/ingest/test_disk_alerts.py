"""A home's store on a full disk (a real tmpfs of about a megabyte) raises ``disk_full`` and
resolves it once a put is stored again (op33: its puts were refused disk_full, but only
followers raised the alert). Real Redis; the alert journal on the same full disk."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.alert_journal import AlertJournal
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.disk_alerts import DiskFullAlerts
from vledger.node.errors import DiskFullError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.tests.integration.cluster import wait_until
from vledger.tests.integration.replication.test_disk_full import fill

NODE = "ingest-1"
LEDGERS = ("notes", "orders")
KEYS = [f"{NODE}|{ledger}|disk_full" for ledger in LEDGERS]


def _entry(ledger: str, n: int) -> Entry:
    content = Content(ledger, "note", {"text": "x" * 2000, "n": n}, "alice", f"r-{n}", 1_700_000_000_000 + n)
    return Entry.prepare(content, 0, PROTOCOL_LIMITS)


def test_a_home_on_a_full_disk_raises_disk_full_once_a_ledger_and_resolves_it_when_a_put_is_stored(
    tmpfs_disk: Path, redis_client: Any
) -> None:
    journal = AlertJournal(tmpfs_disk / "alerts.sqlite3", NODE)
    replication = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=journal)
    with ChainStore(tmpfs_disk / "store", origin=NODE) as store:
        store.on_full = DiskFullAlerts(NODE, replication)
        for ledger in LEDGERS:
            genesis = LedgerRules(("note",), 0).genesis_content(ledger, "alice", "genesis", 0)
            store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        filler = fill(tmpfs_disk)
        refused = []
        for n in range(1, 400):  # until the WAL can grow no more
            futures = [store.submit_entry(_entry(ledger, n)) for ledger in LEDGERS]
            with contextlib.suppress(DiskFullError):
                for future in futures:
                    with contextlib.suppress(DiskFullError):
                        future.result()
                        continue
                    refused.append(n)
            if len(refused) >= 6:  # several failed commits: raised once each all the same
                break
        assert refused, "the disk never filled"
        alerts = replication.open_alerts()
        assert sorted(k for k in alerts if k.endswith("|disk_full")) == KEYS, alerts
        for key in KEYS:
            assert alerts[key]["detail"].startswith(f"disk full: {tmpfs_disk / 'store'}"), alerts[key]
            assert alerts[key]["source"] == NODE and alerts[key]["height"] == str(store.size(key.split("|")[1]))
        raised = [e for e in redis_client.xrange(replication.alerts_key) if e[1][b"what"] == b"disk_full"]
        assert len(raised) == len(LEDGERS)  # a retry raises nothing new

        filler.unlink()  # room again: the next put is stored and the alerts close
        receipt = store.append(_entry("notes", 1000))
        assert receipt.height == store.size("notes") - 1
        # Resolved on the committer's thread right after the put is answered.
        wait_until(lambda: not [k for k in replication.open_alerts() if k.endswith("|disk_full")], 10, "resolved")
    assert os.path.exists(tmpfs_disk / "alerts.sqlite3")


def test_the_disk_full_alerts_an_earlier_run_left_open_close_at_this_run_s_first_stored_put(
    tmp_path: Path, redis_client: Any
) -> None:
    """Review r20 F6: the open keys were kept in memory only, so after the usual cure (room made,
    the node restarted) nothing ever closed them, where PROTOCOL 10.5 says a store that writes
    again does. Another node's alert and this node's start-up one (no ledger) are not taken."""
    replication = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=None)
    for ledger in LEDGERS:  # the earlier run's
        replication.alert(Alert(NODE, ledger, 3, DiskFullError.code, "disk full: earlier run", source=NODE))
    replication.alert(Alert(NODE, "", 0, DiskFullError.code, "disk full at start", source=NODE))
    with ChainStore(tmp_path / "store", origin=NODE) as store:
        store.on_full = alerts = DiskFullAlerts(NODE, replication)
        assert alerts.adopt()
        store.full_before()
        genesis = LedgerRules(("note",), 0).genesis_content("notes", "alice", "genesis", 0)
        store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        wait_until(
            lambda: sorted(k for k in replication.open_alerts() if k.endswith("|disk_full")) == [f"{NODE}||disk_full"],
            10,
            "the ledgers' alerts resolved, the start-up one left to its owner",
        )


def test_a_journal_on_a_full_disk_is_said_unwritable_once_and_written_again_only_once_a_row_is(
    tmpfs_disk: Path, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Outsider o15 #5a: the read before each raise (is it an alert an operator resolved?) said
    "alert journal ... is written again", and the raise's write "... cannot be written", in turns
    while the disk stayed full (5 times in 30 s)."""
    journal = AlertJournal(tmpfs_disk / "alerts.sqlite3", NODE)
    replication = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=journal)
    replication.alert(Alert(NODE, "notes", 1, "disk_full", "before the disk filled", source=NODE))
    filler = fill(tmpfs_disk)
    with caplog.at_level(logging.WARNING, logger="vledger.broker.replication"):
        for n in range(5):
            replication.alert(Alert(NODE, f"ledger-{n}", n, "disk_full", "the disk is full", source=NODE))
        replication.alert(Alert(NODE, "notes", 2, "disk_full", "raised again", source=NODE))  # a row there: read
        assert all(f"{NODE}|ledger-{n}|disk_full" in replication.open_alerts() for n in range(5))  # Redis has them
        lines = [r.getMessage() for r in caplog.records]
        assert sum("cannot be written" in line for line in lines) == 1, lines
        assert not [line for line in lines if "written again" in line]

        filler.unlink()  # room again: the next raise writes its row, and says so once
        replication.alert(Alert(NODE, "orders", 7, "disk_full", "after", source=NODE))
        replication.alert(Alert(NODE, "orders", 8, "disk_full", "after", source=NODE))
        lines = [r.getMessage() for r in caplog.records]
        assert [line for line in lines if "journal" in line and "written" in line] == [
            f"alert journal of {NODE} cannot be written (database or disk is full): its alerts go to Redis only",
            f"alert journal of {NODE} is written again",
        ]
    assert f"{NODE}|orders|disk_full" in journal.open_alerts()
