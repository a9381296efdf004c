"""The outbox process's parts on their own: the store view it reads and the ShippingOutbox,
which is told heights over the pipe and reads the records only as it sends them, a page at a time."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
from collections.abc import Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import pytest

from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import new_signing_key
from vledger.config.cluster import ReplicationSettings
from vledger.ingest.outbox_process import BEAT, SHIP, STOP, ShippingOutbox, StoreView
from vledger.node.errors import StoreDamagedError
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, SignedCheckpoint, witness_key
from vledger.tests.unit.ingest.note_chain import T0
from vledger.tests.unit.ingest.note_chain import append as append_notes

HOME = "home"
LEDGER = "ledger-a"
SIGNER = HomeSigner("test", new_signing_key().seed)
OLD_WITNESS, NEW_WITNESS = (witness_key("test/witness/replica-1", new_signing_key().public.raw) for _ in range(2))


def append(store: ChainStore, count: int) -> None:
    append_notes(store, LEDGER, count)


class FeedLog:
    """Stands for the feed: what was sent, in order ("r", height) or ("c", size)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def record(self, ledger: str, height: int, data: bytes, hops: int = 1) -> None:
        self.sent.append(("r", height))

    def checkpoints(self, checkpoints: Iterable[SignedCheckpoint]) -> None:
        self.sent.extend(("c", c.size) for c in checkpoints)


class Appends(ReplicationLedger):
    """The real ReplicationLedger, noting each append: (first, count, with a checkpoint)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.appends: list[tuple[int, int, bool]] = []

    def append_checked(
        self,
        ledger: str,
        origin: str,
        first: int,
        records: Any,
        checkpoint: bytes = b"",
        *,
        held: int | None = None,
        latest: bool = True,
    ) -> tuple[int, int | None]:
        self.appends.append((first, len(records), bool(checkpoint)))
        return super().append_checked(ledger, origin, first, records, checkpoint, held=held, latest=latest)


def tell(pipe: Connection, message: list[Any]) -> None:
    """What the node's OutboxProcess sends: a msgpack list over the pipe."""
    pipe.send_bytes(msgpack.packb(message))


def rows(checkpoints: Iterable[SignedCheckpoint]) -> list[list[Any]]:
    return [[c.ledger, c.size, c.root, c.note] for c in checkpoints]


def test_the_store_view_reads_what_the_open_store_committed(tmp_path: Path) -> None:
    with ChainStore(tmp_path / "store", origin=HOME, clock=lambda: T0) as store:
        append(store, 5)
        view = StoreView(store.directory, page_size=2)
        try:
            assert view.heads() == {LEDGER: (4, store.get(LEDGER, 4).hash)}  # type: ignore[union-attr]
            assert list(view.range_raw(LEDGER, 1, 4)) == list(store.range_raw(LEDGER, 1, 4))
            append(store, 3)  # the writer goes on beside the reader (WAL)
            assert view.size(LEDGER) == 8
            assert view.get(LEDGER, 7) == store.get(LEDGER, 7)
        finally:
            view.close()


def test_a_record_tampered_into_text_is_never_shipped_and_is_store_damaged(tmp_path: Path, redis_client: Any) -> None:
    """A record's data set to TEXT under a running home: the outbox process's page read took
    the str as the record's bytes and pushed it to the stream and the feed; now nothing of its
    page is shipped, and the view reports store_damaged once (the process's alert, then
    EXIT_STORE_DAMAGED), naming the cell."""
    settings = ReplicationSettings(heartbeat_ms=60_000, catch_up_batch=8)
    with ChainStore(tmp_path / "store", origin=HOME, clock=lambda: T0) as store:
        append(store, 6)
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute("UPDATE records SET data = CAST(data AS TEXT) WHERE ledger = ? AND height = 4", (LEDGER,))
        view = StoreView(store.directory, page_size=100)
        found: list[StoreDamagedError] = []
        view.on_damaged = found.append
        feed = FeedLog()
        replication = Appends(redis_client)
        theirs, ours = multiprocessing.Pipe(duplex=False)
        outbox = ShippingOutbox(theirs, HOME, view, feed, replication, settings)
        try:
            tell(ours, [SHIP, [[LEDGER, 0, 5, True]], []])
            outbox._await(5.0)
            with pytest.raises(StoreDamagedError, match=r"holds a text value, not blob \(ledger 'ledger-a' at 4\)"):
                outbox._drain()
            assert outbox.store.damaged(found[0]) is found[0]  # the outbox's handler: reported, it stops
        finally:
            view.close()
        assert replication.appends == [] and feed.sent == []
        assert replication.read(LEDGER, 0, 100) == []
        assert len(found) == 1 and view.found_damaged is found[0]


@pytest.mark.parametrize("value", ["'not a record'", "7"])
def test_the_store_view_s_record_reads_take_a_record_of_another_type_for_damage(tmp_path: Path, value: str) -> None:
    """Its get (the outbox's repair) and heads read a record with StoreReader.get, which made a
    str a TypeError (the outbox retried it every heartbeat, for ever, with no alert) and a number
    that many zero bytes; both are now the view's store_damaged, reported once."""
    with ChainStore(tmp_path / "store", origin=HOME, clock=lambda: T0) as store:
        append(store, 3)
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute(f"UPDATE records SET data = {value} WHERE ledger = ? AND height = 2", (LEDGER,))
        view = StoreView(store.directory, page_size=100)
        found: list[StoreDamagedError] = []
        view.on_damaged = found.append
        try:
            with pytest.raises(StoreDamagedError, match=r"not blob \(ledger 'ledger-a' at 2\)"):
                view.get(LEDGER, 2)
            with pytest.raises(StoreDamagedError):
                view.heads()
            assert view.get(LEDGER, 1) == store.get(LEDGER, 1)
        finally:
            view.close()
        assert len(found) == 1


def test_told_heights_are_read_and_sent_a_page_at_a_time_with_the_checkpoint_after_its_records(
    tmp_path: Path, redis_client: Any
) -> None:
    settings = ReplicationSettings(heartbeat_ms=60_000, catch_up_batch=8)
    with ChainStore(tmp_path / "store", origin=HOME, clock=lambda: T0) as store:
        append(store, 30)
        checkpoint = SIGNER.sign(LEDGER, 30, store.root(LEDGER, 30), ())
        view = StoreView(store.directory, page_size=100)
        feed = FeedLog()
        replication = Appends(redis_client)
        theirs, ours = multiprocessing.Pipe(duplex=False)
        outbox = ShippingOutbox(theirs, HOME, view, feed, replication, settings, witness_keys=[OLD_WITNESS.encode()])
        assert list(outbox.witnesses()) == [OLD_WITNESS]  # as the node started it
        try:
            # Its passes run here. Told in two messages, merged into one span.
            tell(ours, [SHIP, [[LEDGER, 0, 11, True]], []])
            tell(ours, [SHIP, [[LEDGER, 12, 29, True]], rows([checkpoint])])
            outbox._await(5.0)
            assert outbox.backlog() == 30  # heights, not records, wait
            outbox._drain()
        finally:
            view.close()
        assert outbox.backlog() == 0
        assert replication.appends == [(0, 8, False), (8, 8, False), (16, 8, False), (24, 6, True)]
        assert feed.sent == [*(("r", h) for h in range(30)), ("c", 30)]
        assert [(r.height, r.data) for r in replication.read(LEDGER, 0, 100)] == list(store.range_raw(LEDGER))
        # A heartbeat's checkpoint, sent already: not sent again. Its witness keys, those in force
        # now (one rotated), are what a proof of another home's epoch must be cosigned by (10.9).
        tell(ours, [BEAT, {LEDGER: True}, rows([checkpoint]), [NEW_WITNESS.encode(), "no key"]])
        outbox._await(5.0)
        outbox._drain()
        assert feed.sent[-1] == ("c", 30) and len(feed.sent) == 31
        assert list(outbox.witnesses()) == [NEW_WITNESS]  # one that does not parse is logged, not kept


def test_it_ships_what_it_was_told_before_the_stop_then_ends_on_its_own_thread(
    tmp_path: Path, redis_client: Any
) -> None:
    """serve() reads the pipe on the calling thread: what came before STOP goes out, in order."""
    settings = ReplicationSettings(heartbeat_ms=60_000, catch_up_batch=8)
    with ChainStore(tmp_path / "store", origin=HOME, clock=lambda: T0) as store:
        append(store, 20)
        checkpoint = SIGNER.sign(LEDGER, 20, store.root(LEDGER, 20), ())
        view = StoreView(store.directory, page_size=100)
        feed = FeedLog()
        theirs, ours = multiprocessing.Pipe(duplex=False)
        outbox = ShippingOutbox(theirs, HOME, view, feed, ReplicationLedger(redis_client), settings)
        tell(ours, [SHIP, [[LEDGER, 0, 19, False]], rows([checkpoint])])
        tell(ours, [STOP])
        try:
            outbox.serve()
        finally:
            view.close()
    # Its first pass is also its first heartbeat, which sends the latest checkpoint again.
    assert feed.sent[:21] == [*(("r", h) for h in range(20)), ("c", 20)]
    assert set(feed.sent[21:]) <= {("c", 20)}
    assert ReplicationLedger(redis_client).last_heights([LEDGER]) == {LEDGER: -1}  # not its stream: untouched


def test_a_closed_pipe_ends_it_after_what_was_told(tmp_path: Path, redis_client: Any) -> None:
    """A node killed with heights in the pipe: the child ships them, then ends."""
    settings = ReplicationSettings(heartbeat_ms=60_000, catch_up_batch=8)
    with ChainStore(tmp_path / "store", origin=HOME, clock=lambda: T0) as store:
        append(store, 5)
        view = StoreView(store.directory, page_size=100)
        feed = FeedLog()
        theirs, ours = multiprocessing.Pipe(duplex=False)
        outbox = ShippingOutbox(theirs, HOME, view, feed, ReplicationLedger(redis_client), settings)
        tell(ours, [SHIP, [[LEDGER, 0, 4, True]], []])
        ours.close()
        try:
            outbox.serve()
        finally:
            view.close()
    assert feed.sent == [("r", h) for h in range(5)]
