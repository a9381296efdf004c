"""The outbox process's parts on their own: the store view it reads and the ShippingOutbox,
which is told heights and reads the records only as it sends them, a page at a time."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import new_signing_key
from vledger.config.cluster import ReplicationSettings
from vledger.ingest.outbox_process import ShippingOutbox, StoreView
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, SignedCheckpoint
from vledger.tests.unit.ingest.note_chain import T0
from vledger.tests.unit.ingest.note_chain import append as append_notes

HOME = "home"
LEDGER = "ledger-a"
SIGNER = HomeSigner("test", new_signing_key().seed)


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
        self, ledger: str, origin: str, first: int, records: Any, checkpoint: bytes = b""
    ) -> tuple[int, int | None]:
        self.appends.append((first, len(records), bool(checkpoint)))
        return super().append_checked(ledger, origin, first, records, checkpoint)


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
        outbox = ShippingOutbox(HOME, view, feed, replication, settings, owns=lambda ledger: True)
        try:
            # Not started: its passes run here. Told in two messages, merged into one span.
            outbox.told([(LEDGER, 0, 11)], [])
            outbox.told([(LEDGER, 12, 29)], [checkpoint])
            assert outbox.backlog() == 30  # heights, not records, wait
            outbox._drain()
        finally:
            view.close()
        assert outbox.backlog() == 0
        assert replication.appends == [(0, 8, False), (8, 8, False), (16, 8, False), (24, 6, True)]
        assert feed.sent == [*(("r", h) for h in range(30)), ("c", 30)]
        assert [(r.height, r.data) for r in replication.read(LEDGER, 0, 100)] == list(store.range_raw(LEDGER))
        outbox.told([], [checkpoint])  # a heartbeat's, sent already: not sent again
        outbox._drain()
        assert feed.sent[-1] == ("c", 30) and len(feed.sent) == 31
