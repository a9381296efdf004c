# ruff: noqa: F811
"""A former home named standby (PROTOCOL 10.9, failback): where its records leave the new
home's chain, and its tail set aside even when a source lies or the first try fails (review r30).

Reuses test_epochs.py's real stores and notes (a ledger whose genesis pins the home's and the
standby's keys, handed over to the standby at height 5)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from vledger.ingest.standby import first_difference
from vledger.node.record import Record
from vledger.node.store import ChainStore
from vledger.tests.unit.ingest.test_epochs import (  # noqa: F401 (chains: the fixture)
    EPOCH_2,
    HOME,
    HOME_KEY,
    HOME_SIGNER,
    LEDGER,
    STANDBY_SIGNER,
    Pages,
    Witness,
    _checkpoint,
    _place,
    chains,
)


class _Named(Pages):
    def __init__(self, name: str, records: list[Record]) -> None:
        super().__init__(records, [])
        self.name = name


def test_a_stream_entry_above_the_home_s_chain_does_not_keep_a_former_home_s_tail(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """The old home placed more records while cut off (heights 5..11) than the new home's chain
    holds (9: the handover at 5, 3 records after it). The home answers first and holds nothing at
    11; a Redis writer puts the old home's own record 11 in the stream (or leaves it there):
    first_difference takes the stream's word, the search by halves never asks a lower height,
    nothing is set aside, and the standby's copy contradicts every checkpoint of the new home
    (store_contradicts_checkpoint: it stops following, and its failback is refused)."""
    handed, cut_off = chains
    tail = list(cut_off)
    while len(tail) < 12:
        tail.append(_place(tail[-1], "note", {"cut off": len(tail)}, HOME))
    home = _Named("ingest-2", handed)
    stream = _Named("redis", tail)  # what a Redis writer can XADD above the stream's last id
    with ChainStore(tmp_path / "old-home", origin=HOME) as store:
        store.append_records(tail)
        assert first_difference(store, [home], LEDGER) == 5  # the honest answer
        assert first_difference(store, [home, stream], LEDGER) == 5


def test_a_set_aside_that_failed_is_tried_again_at_the_next_look(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """StandbyFollow._compare marks the ledger compared before the set-aside runs: when writing
    the file fails (ENOSPC, EACCES, a name taken), the error restarts the follow loop (Restarts),
    whose _compare then skips the ledger, and the former home follows the new home's chain on
    top of its own tail for as long as the process runs (its copy contradicts every checkpoint of
    the new home, a failback is refused). PROTOCOL 10.9 says it "compares again at its next look"."""
    from types import SimpleNamespace

    from vledger.ingest.epochs import EpochBook
    from vledger.ingest.standby import StandbyFollow

    handed, cut_off = chains
    with ChainStore(tmp_path / "old-home", origin=HOME) as store:
        store.append_records(cut_off)
        book = EpochBook("test", store)
        failures = [OSError(28, "No space left on device")]
        set_aside_calls: list[int] = []

        def set_aside(ledger: str, kept: int, home: str) -> None:
            set_aside_calls.append(kept)
            if failures:
                raise failures.pop()
            store.set_aside(ledger, kept)

        fake = SimpleNamespace(
            name=HOME,
            follower=SimpleNamespace(store=store, set_aside=set_aside),
            homes=SimpleNamespace(book=book, home_of=lambda ledger: SimpleNamespace(name="ingest-2")),
            _compared=set(),
            _compare_with=[_Named("ingest-2", handed)],
        )
        with contextlib.suppress(OSError):  # the follow loop's Restarts runs _follow again, which compares first
            StandbyFollow._compare(fake, {LEDGER})  # type: ignore[arg-type]
        StandbyFollow._compare(fake, {LEDGER})  # type: ignore[arg-type]
        assert set_aside_calls == [5, 5], "the tail was never set aside after the first failure"
        assert store.size(LEDGER) == 5


def test_an_operator_s_resolution_of_the_set_aside_alert_stays_until_a_new_set_aside(
    tmp_path: Path, chains: tuple[list[Record], list[Record]], redis_client: Any
) -> None:
    """Outsider o22 F3: `vledger alerts resolve` closed the former home's record_conflict about
    the tail it set aside (PROTOCOL 10.5: an operator resolves it, once the file was looked at),
    and its alert keeper opened it again within a second, for good: a record_conflict of its own
    key is otherwise a follower's refusal, which comes back while its cause remains. The set-aside
    alert is the operator's to close: it stays closed, after a restart too, until a new set-aside."""
    from vledger.broker.alert_journal import ALERT_JOURNAL, AlertJournal
    from vledger.broker.replication import ReplicationLedger, raise_alert
    from vledger.ingest.follow import Follower
    from vledger.tests.unit.ingest.test_follow import KEYS

    _, cut_off = chains
    path = tmp_path / "journal" / ALERT_JOURNAL
    operator = ReplicationLedger(redis_client, raisers=[HOME])
    key = f"{HOME}|{LEDGER}|record_conflict"
    with ChainStore(tmp_path / "old-home", origin=HOME) as store:
        store.append_records(cut_off)
        with AlertJournal(path, HOME) as journal:
            raiser = ReplicationLedger(redis_client, node=HOME, raisers=[HOME], journal=journal)
            follower = Follower(
                HOME,
                store,
                [],
                keys=KEYS,
                home_of=lambda ledger: "ingest-2",
                on_stored=lambda records, hops: None,
                on_alert=lambda alert: raise_alert(raiser, alert),
            )
            follower.set_aside(LEDGER, 5, "ingest-2")
            assert set(raiser.open_alerts()) == {key}
            assert operator.resolve_as_operator([key]) == 1
            assert raiser.reassert() == []  # what the node's alert keeper runs every second
            assert raiser.open_alerts() == {} and journal.open_alerts() == {}
            # New evidence: another tail set aside (the store took more of its own meanwhile).
            store.append_records(cut_off[5:])
            follower.set_aside(LEDGER, 6, "ingest-2")
            raised_again = raiser.open_alerts()[key]["id"]
            assert raiser.reassert() == [] and set(raiser.open_alerts()) == {key}
            assert operator.resolve_as_operator([key]) == 1
        # Resolved while the node was down, or just before it stopped: not put back at its start.
        with AlertJournal(path, HOME) as journal:
            restarted = ReplicationLedger(redis_client, node=HOME, raisers=[HOME], journal=journal)
            assert restarted.reassert() == [] and restarted.open_alerts() == {}
            assert operator.operator_resolved([(HOME, key)]) == {(HOME, key): raised_again}
