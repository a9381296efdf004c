"""A home's store on a full disk (a real tmpfs of about a megabyte) raises ``disk_full`` and
resolves it once a put is stored again (op33: its puts were refused disk_full, but only
followers raised the alert). Real Redis; the alert journal on the same full disk."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.alert_journal import AlertJournal
from vledger.broker.replication import ReplicationLedger
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.disk_alerts import DiskFullAlerts
from vledger.node.errors import DiskFullError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.tests.integration.cluster import wait_until
from vledger.tests.integration.replication.test_disk_full import fill, small_disk

NODE = "ingest-1"
LEDGERS = ("notes", "orders")
KEYS = [f"{NODE}|{ledger}|disk_full" for ledger in LEDGERS]


def _entry(ledger: str, n: int) -> Entry:
    content = Content(ledger, "note", {"text": "x" * 2000, "n": n}, "alice", f"r-{n}", 1_700_000_000_000 + n)
    return Entry.prepare(content, 0, PROTOCOL_LIMITS)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "disk"
    directory.mkdir()
    with small_disk(directory) as mounted:
        yield mounted


def test_a_home_on_a_full_disk_raises_disk_full_once_a_ledger_and_resolves_it_when_a_put_is_stored(
    disk: Path, redis_client: Any
) -> None:
    journal = AlertJournal(disk / "alerts.sqlite3", NODE)
    replication = ReplicationLedger(redis_client, node=NODE, raisers=[NODE], journal=journal)
    with ChainStore(disk / "store", origin=NODE) as store:
        store.on_full = DiskFullAlerts(NODE, replication)
        for ledger in LEDGERS:
            genesis = LedgerRules(("note",), 0).genesis_content(ledger, "alice", "genesis", 0)
            store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        filler = fill(disk)
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
            assert alerts[key]["detail"].startswith(f"disk full: {disk / 'store'}"), alerts[key]
            assert alerts[key]["source"] == NODE and alerts[key]["height"] == str(store.size(key.split("|")[1]))
        raised = [e for e in redis_client.xrange(replication.alerts_key) if e[1][b"what"] == b"disk_full"]
        assert len(raised) == len(LEDGERS)  # a retry raises nothing new

        filler.unlink()  # room again: the next put is stored and the alerts close
        receipt = store.append(_entry("notes", 1000))
        assert receipt.height == store.size("notes") - 1
        # Resolved on the committer's thread right after the put is answered.
        wait_until(lambda: not [k for k in replication.open_alerts() if k.endswith("|disk_full")], 10, "resolved")
    assert os.path.exists(disk / "alerts.sqlite3")
