"""Witness: cosigns the newest checkpoint its store proves, consistent with the last it cosigned.

A real store (its records placed by a home store, copied in), real checkpoints signed by a
home key, and the session's real Redis, where the cosignatures are published.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.feed import FeedCheckpoints
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.broker.signing import new_signing_key
from vledger.config.settings import Limits
from vledger.ingest import witness as witness_module
from vledger.ingest.follow import Follower, own_copy_alerts
from vledger.ingest.witness import Cosigner, Witness, check_published, self_check
from vledger.node.checkpoint_log import COSIGNED, SIGNED
from vledger.node.epoch import EPOCH_LINE, Epoch, EpochHistory
from vledger.node.ledger import LedgerRules
from vledger.node.note import Cosignature, parse_note
from vledger.node.record import Content, Entry, Record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.tree import verify_consistency
from vledger.node.witness import (
    CheckpointKeys,
    Contradiction,
    HomeSigner,
    SignedCheckpoint,
    WitnessSigner,
    check_cosigned,
    home_key,
    witness_key,
)
from vledger.tests.sqlite_faults import malformed

LIMITS = Limits()
T0 = 1_790_000_000_000
CLUSTER = "test"
LEDGER = "ledger-a"
HOME_KEY, WITNESS_KEY = new_signing_key(), new_signing_key()
HOME = HomeSigner(CLUSTER, HOME_KEY.seed)
NAME = f"{CLUSTER}/witness/replica-1"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    with ChainStore(tmp_path_factory.mktemp("home"), origin="home", clock=lambda: T0) as store:
        store.create_ledger(
            Entry.prepare(LedgerRules(("note",), 0, {}).genesis_content(LEDGER, "a", "g", T0), 0, LIMITS)
        )
        for i in range(1, 12):
            store.append(Entry.prepare(Content(LEDGER, "note", {"n": i}, "Zoe.1", f"r-{i}", T0 + i), 0, LIMITS))
        return list(store.range(LEDGER))


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory, chain: list[Record]) -> list[Record]:
    """``chain``'s first 6 records, then 6 others: the tree a home that rewrote its tail from
    height 6 signs (with the same key) at every size past 6."""
    with ChainStore(tmp_path_factory.mktemp("forked"), origin="home", clock=lambda: T0) as store:
        store.append_records(chain[:6])
        for i in range(6, 12):
            store.append(Entry.prepare(Content(LEDGER, "note", {"other": i}, "Zoe.1", f"f-{i}", T0 + i), 0, LIMITS))
        return list(store.range(LEDGER))


class Copy:
    """A witness's store holding a prefix of ``chain``, and its Witness."""

    def __init__(
        self,
        directory: Path,
        chain: list[Record],
        held: int,
        client: Any,
        epochs_of: Callable[[str], EpochHistory | None] = lambda ledger: None,
        *,
        carry_over: bool = False,
    ) -> None:
        self.directory = directory
        self.store = ChainStore(directory)
        self.store.append_records(chain[:held])
        self.repl = ReplicationLedger(client)
        self.alerts: list[Alert] = []
        self.witness = Witness(
            "replica-1",
            self.store,
            WitnessSigner(NAME, WITNESS_KEY.seed),
            self.repl,
            self.alerts.append,
            epochs_of=epochs_of,
        )
        if carry_over:  # the open alerts an earlier run raised, as the node hands them (ingest/replica.py)
            self.witness.carry_over(self.repl.own_open_alerts())
        self.witness.start()

    def checkpoint(self, size: int) -> SignedCheckpoint:
        return HOME.sign(LEDGER, size, self.store.root(LEDGER, size))

    def published(self) -> int | None:
        note = self.repl.cosignatures(LEDGER).get("replica-1")
        if note is None:
            return None
        log_key = home_key(CLUSTER, LEDGER, HOME_KEY.public.raw)
        return check_cosigned(note, LEDGER, CLUSTER, log_key, witness_key(NAME, WITNESS_KEY.public.raw)).size


@pytest.fixture
def copies(tmp_path: Path, chain: list[Record], redis_client: Any) -> Iterator[Any]:
    made: list[Copy] = []

    def make(held: int, name: str = "copy") -> Copy:
        copy = Copy(tmp_path / name, chain, held, redis_client)
        made.append(copy)
        return copy

    yield make
    for copy in made:
        copy.store.close()


def test_it_cosigns_only_the_newest_it_was_told_of_and_keeps_it(copies: Any) -> None:
    copy = copies(10)
    for size in (4, 9, 7):
        copy.witness.verified(copy.checkpoint(size))
    copy.witness.turn()
    assert copy.published() == 9 and copy.witness.cosigned == 1  # 4 and 7 skipped: one per turn
    (kept,) = copy.store.checkpoints.all(LEDGER, COSIGNED)
    assert (kept.size, kept.root) == (9, copy.store.root(LEDGER, 9))
    copy.witness.verified(copy.checkpoint(8))  # older than what it vouched for: nothing
    copy.witness.turn()
    assert copy.published() == 9 and copy.witness.cosigned == 1
    assert copy.alerts == []


def test_a_new_key_cosigns_the_last_checkpoint_again_in_place_of_the_replaced_key_s_line(copies: Any) -> None:
    # PROTOCOL 16.6: the rotation states what the replaced key cosigned when the home read Redis;
    # the replaced key's line on a larger checkpoint since counts for nothing, so the witness
    # vouches again with its new key for what it cosigned last.
    copy = copies(10)
    copy.witness.verified(copy.checkpoint(9))
    copy.witness.turn()
    new = new_signing_key()
    copy.witness.sign_with(WitnessSigner(NAME, new.seed))
    copy.witness.turn()
    note = copy.repl.cosignatures(LEDGER)["replica-1"]
    log_key = home_key(CLUSTER, LEDGER, HOME_KEY.public.raw)
    assert check_cosigned(note, LEDGER, CLUSTER, log_key, witness_key(NAME, new.public.raw)).size == 9
    assert [s.name for s in parse_note(note).signatures].count(NAME) == 1  # the replaced key's line is gone
    copy.witness.verified(copy.checkpoint(10))  # and the next checkpoint with the new key
    copy.witness.turn()
    note = copy.repl.cosignatures(LEDGER)["replica-1"]
    assert check_cosigned(note, LEDGER, CLUSTER, log_key, witness_key(NAME, new.public.raw)).size == 10


def _timed_witness(copy: Copy, clock: list[float]) -> Witness:
    """``copy``'s store with a witness on ``clock`` (seconds) that cosigns a quiet ledger again
    after 300 s (less its lead: 3 s at a heartbeat of 1 s, recosign_due_ms)."""
    witness = Witness(
        "replica-1", copy.store, WitnessSigner(NAME, WITNESS_KEY.seed), copy.repl, copy.alerts.append,
        clock=lambda: clock[0], recosign_ms=300_000, heartbeat_ms=1000,
    )  # fmt: skip
    witness.start()
    return witness


def _cosigned_once(copy: Copy, clock: list[float]) -> tuple[Witness, bytes]:
    """A witness on ``clock`` that cosigned ``copy``'s checkpoint of 9 records, and its note in Redis."""
    witness = _timed_witness(copy, clock)
    witness.verified(copy.checkpoint(9))
    witness.turn()
    return witness, copy.repl.cosignatures(LEDGER)["replica-1"]


def _own_times(note: bytes) -> list[int]:
    return [Cosignature.from_note_signature(s).timestamp for s in parse_note(note).signatures if s.name == NAME]


def test_a_quiet_ledger_s_checkpoint_is_cosigned_again_past_the_interval_keeping_the_first_line(copies: Any) -> None:
    # PROTOCOL 10.7: the home sends its checkpoint every heartbeat; a witness cosigns the one it
    # cosigned last again once its newest line there is recosign_interval old, keeping its first
    # (since when it vouches, 11.4's since_ms) and the new one (that it still does).
    copy = copies(10)
    clock = [1_800_000_000.0]
    witness, first = _cosigned_once(copy, clock)
    assert _own_times(first) == [1_800_000_000]
    clock[0] += 296
    witness.verified(copy.checkpoint(9))
    witness.turn()
    assert copy.repl.cosignatures(LEDGER)["replica-1"] == first and witness.cosigned == 1
    for later in (1_800_000_297, 1_800_000_700):
        clock[0] = later
        witness.verified(copy.checkpoint(9))
        witness.turn()
        note = copy.repl.cosignatures(LEDGER)["replica-1"]
        assert _own_times(note) == [1_800_000_000, later]  # the first line, then the newest only
        log_key = home_key(CLUSTER, LEDGER, HOME_KEY.public.raw)
        cosigned = check_cosigned(note, LEDGER, CLUSTER, log_key, witness_key(NAME, WITNESS_KEY.public.raw))
        assert (cosigned.size, cosigned.cosignature.timestamp) == (9, 1_800_000_000)  # a standard reader: the first
    assert witness.cosigned == 3 and copy.alerts == []
    (kept,) = copy.store.checkpoints.all(LEDGER, COSIGNED)
    assert kept.note == note  # one row: the note as published, its first line and its newest
    witness.verified(copy.checkpoint(10))  # the ledger grows: one line, the new checkpoint's
    witness.turn()
    assert _own_times(copy.repl.cosignatures(LEDGER)["replica-1"]) == [1_800_000_700]


def test_a_witness_started_again_goes_on_from_its_newest_line_of_a_quiet_ledger(copies: Any) -> None:
    """fresh25 kept a re-cosignature in memory and Redis only: a witness started again read its
    first line back from its store, cosigned at once, and until then republished the first line
    alone, so readers saw the head's fresh_ms jump back by up to the interval on each restart."""
    copy = copies(10)
    clock = [1_800_000_000.0]
    witness, _ = _cosigned_once(copy, clock)
    clock[0] += 297
    witness.verified(copy.checkpoint(9))
    witness.turn()
    published = copy.repl.cosignatures(LEDGER)["replica-1"]
    assert _own_times(published) == [1_800_000_000, 1_800_000_297]
    copy.repl.client.delete(copy.repl.cosig_key(LEDGER, "replica-1"))  # what it republishes at start is its store's
    clock[0] += 10  # started again 10 s later: its newest line is 10 s old, not 307
    again = _timed_witness(copy, clock)
    assert copy.repl.cosignatures(LEDGER)["replica-1"] == published
    again.verified(copy.checkpoint(9))
    again.turn()
    assert again.cosigned == 0 and copy.repl.cosignatures(LEDGER)["replica-1"] == published
    clock[0] += 287  # the interval (less its lead) since its newest line: cosigned again, its first line kept
    again.verified(copy.checkpoint(9))
    again.turn()
    assert _own_times(copy.repl.cosignatures(LEDGER)["replica-1"]) == [1_800_000_000, 1_800_000_594]


def test_a_live_quiet_ledger_s_newest_line_is_never_older_than_the_interval(copies: Any) -> None:
    """Review r11 F: asked once a heartbeat, a witness that cosigned again only once its newest
    line was the full interval old (T floored to the second) left readers a line up to ~2 s
    older than the interval: `vledger tally --stale-after 1` flapped STALE on an honest ledger."""
    copy = copies(10)
    clock = [1_800_000_000.7]
    witness, _ = _cosigned_once(copy, clock)
    oldest_seen = 0.0
    for _ in range(700):  # 700 heartbeats of 1 s, each read by a reader the moment before
        clock[0] += 1.0
        note = copy.repl.cosignatures(LEDGER)["replica-1"]
        oldest_seen = max(oldest_seen, clock[0] - max(_own_times(note)))
        witness.verified(copy.checkpoint(9))
        witness.turn()
    assert witness.cosigned >= 3 and copy.alerts == []
    assert oldest_seen <= 300.0


def test_a_witness_never_cosigns_another_root_at_the_size_it_cosigned_however_quiet(copies: Any) -> None:
    copy = copies(10)
    clock = [1_800_000_000.0]
    witness, first = _cosigned_once(copy, clock)
    clock[0] += 3600
    other = HOME.sign(LEDGER, 9, bytes(32))  # the home's key over another tree of 9 records: equivocation
    witness.verified(other)
    witness.turn()
    assert copy.repl.cosignatures(LEDGER)["replica-1"] == first and witness.cosigned == 1
    assert [k.note for k in copy.store.checkpoints.all(LEDGER, COSIGNED)] == [first]
    witness.verified(copy.checkpoint(9))  # the true one is still cosigned again
    witness.turn()
    assert _own_times(copy.repl.cosignatures(LEDGER)["replica-1"]) == [1_800_000_000, 1_800_003_600]


def test_a_cosigner_cosigns_each_verified_checkpoint_on_its_own_thread(copies: Any) -> None:
    """The follow loop only tells of a verified checkpoint; the Cosigner's thread cosigns and
    publishes it, and its stop cosigns what was told last."""
    copy = copies(10)
    cosigning: list[str] = []
    cosign = copy.witness._cosign

    def noted(checkpoint: SignedCheckpoint) -> None:
        cosigning.append(threading.current_thread().name)
        cosign(checkpoint)

    copy.witness._cosign = noted  # type: ignore[method-assign]
    cosigner = Cosigner(copy.witness).start()
    try:
        copy.witness.verified(copy.checkpoint(6))
        deadline = time.monotonic() + 10
        while copy.published() != 6:  # no turn() called here: the thread's
            assert time.monotonic() < deadline, "the cosigner's thread did not cosign size 6 within 10 s"
            time.sleep(0.01)
        assert cosigning == ["cosign-replica-1"]
    finally:
        copy.witness.verified(copy.checkpoint(9))
        cosigner.stop()
    assert copy.published() == 9 and copy.witness.cosigned == 2  # the last one, by the stop's turn
    assert [c.size for c in copy.store.checkpoints.all(LEDGER, COSIGNED)] == [6, 9]


def test_it_cosigns_nothing_its_store_does_not_hold_with_that_root(copies: Any, chain: list[Record]) -> None:
    copy = copies(6)
    other = copies(12, "other")
    copy.witness.verified(other.checkpoint(12))  # beyond what this store holds
    copy.witness.verified(HOME.sign(LEDGER, 5, bytes(32)))  # a root this store does not have at 5
    copy.witness.turn()
    assert copy.published() is None and copy.store.checkpoints.all(LEDGER, COSIGNED) == []


def test_after_a_restart_it_republishes_and_goes_on_from_what_it_cosigned(copies: Any, redis_client: Any) -> None:
    copy = copies(10)
    copy.witness.verified(copy.checkpoint(8))
    copy.witness.turn()
    redis_client.flushdb()  # Redis lost everything
    copy.store.close()
    again = Copy(copy.directory, [], 0, redis_client)  # the same store, a new process
    assert again.published() == 8  # republished at start
    again.witness.verified(again.checkpoint(10))
    again.witness.turn()
    assert again.published() == 10 and again.alerts == []
    again.store.close()


def test_a_running_witness_puts_back_its_cosignature_redis_lost_at_its_next_look(
    copies: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # o21 F5: on a quiet ledger the key came back only at the next recosign (300 s), and every
    # reader of the ledger's head said STALE meanwhile.
    copy = copies(10)
    copy.witness.verified(copy.checkpoint(8))
    copy.witness.turn()
    assert copy.published() == 8
    redis_client.flushdb()  # Redis lost everything; nothing new is verified
    monkeypatch.setattr(witness_module, "OWN_KEYS_CHECK_SECONDS", 0.0)
    copy.witness.turn()
    assert copy.published() == 8 and copy.alerts == []


def test_after_a_promotion_a_restart_republishes_no_cosignature_of_the_replaced_home(
    copies: Any, chain: list[Record], redis_client: Any
) -> None:
    """Its start republished its newest kept cosignature whatever its epoch: after the standby
    was promoted (a handover record at height 9 opens epoch 2), Redis's cosignature key of the
    ledger went back to the replaced home's epoch-1 checkpoint. Now only a cosignature of the
    current epoch, by its home's key, is republished; the old one is still what the next extends."""
    copy = copies(11)
    copy.witness.verified(copy.checkpoint(8))
    copy.witness.turn()
    copy.store.close()
    redis_client.flushdb()
    history = EpochHistory(CLUSTER, chain[0], LedgerRules.from_genesis(chain[0].content, LIMITS))
    history.epochs.append(Epoch(2, "standby", None, 9))  # as feed() adds it from the handover record

    def restarted() -> Copy:
        made = Copy(copy.directory, [], 0, redis_client, epochs_of={LEDGER: history}.get)
        made.store.close()
        return made

    assert restarted().published() is None
    assert restarted().witness._last[LEDGER].size == 8
    # A cosignature of epoch 2's checkpoint, by the new home: republished.
    again = Copy(copy.directory, [], 0, redis_client, epochs_of={LEDGER: history}.get)
    root = again.store.root(LEDGER, 10)
    again.witness.verified(HOME.sign(LEDGER, 10, root, (f"{EPOCH_LINE} 2 standby",)))
    again.witness.turn()
    again.store.close()
    redis_client.flushdb()
    assert restarted().published() == 10


def test_a_store_that_lost_what_it_cosigned_is_reported_and_cosigns_no_more(copies: Any, chain: list[Record]) -> None:
    copy = copies(10)
    cosigned = copy.checkpoint(10)
    copy.witness.verified(cosigned)
    copy.witness.turn()
    copy.store.close()
    with sqlite3.connect(copy.directory / DB_NAME) as db:  # restored from an older backup
        db.execute("DELETE FROM records WHERE height >= 6")
        db.execute("DELETE FROM meta WHERE key = 'tree'")
    restarted = Copy(copy.directory, [], 0, copy.repl.client)
    (alert,) = restarted.alerts
    assert (alert.node, alert.source, alert.what, alert.height) == ("replica-1", "replica-1", "cosigned_not_held", 9)
    assert alert.expected == cosigned.root.hex()
    restarted.repl.alert(alert)  # as the node's raise_alert does
    assert list(self_check(restarted.store, COSIGNED)) == [LEDGER]
    restarted.witness.verified(HOME.sign(LEDGER, 6, restarted.store.root(LEDGER, 6)))
    restarted.witness.turn()
    assert restarted.published() == 10  # what it cosigned before stays; nothing smaller or new
    assert alert.key in restarted.repl.open_alerts()
    restarted.store.append_records(chain[6:12])  # refilled with the true records
    restarted.witness.verified(HOME.sign(LEDGER, 12, restarted.store.root(LEDGER, 12)))
    restarted.witness.turn()
    assert restarted.published() == 12 and len(restarted.alerts) == 1
    # It holds what it cosigned again: its own alert is resolved (outsider 25, H1: it stayed open).
    assert restarted.repl.open_alerts() == {}
    assert self_check(restarted.store, COSIGNED) == {} and self_check(restarted.store, SIGNED) == {}
    restarted.store.close()


def test_a_store_refilled_to_what_it_cosigned_of_a_quiet_ledger_resolves_its_alert(
    copies: Any, chain: list[Record]
) -> None:
    """A witness blocked at its start (its store lost records it had cosigned) looked at its store
    again only for a larger checkpoint: on a quiet ledger the home reports, at each heartbeat,
    its checkpoint of the size the witness cosigned, so a store refilled to it left
    cosigned_not_held open and the ledger uncosigned for good (test_cut_copy: a replica started
    with a hole in its file, which it fetched again)."""
    copy = copies(10)
    cosigned = copy.checkpoint(10)
    copy.witness.verified(cosigned)
    copy.witness.turn()
    copy.store.close()
    with sqlite3.connect(copy.directory / DB_NAME) as db:
        db.execute("DELETE FROM records WHERE height >= 6")
        db.execute("DELETE FROM meta WHERE key = 'tree'")
    restarted = Copy(copy.directory, [], 0, copy.repl.client)
    (alert,) = restarted.alerts
    restarted.repl.alert(alert)  # as the node's raise_alert does
    restarted.witness.verified(cosigned)  # the home's heartbeat, while the store lacks it
    restarted.witness.turn()
    assert alert.key in restarted.repl.open_alerts() and len(restarted.alerts) == 1
    restarted.store.append_records(chain[6:10])  # the follower fetches them again; nothing new is written
    restarted.witness.verified(cosigned)
    restarted.witness.turn()
    assert restarted.repl.open_alerts() == {} and len(restarted.alerts) == 1
    assert self_check(restarted.store, COSIGNED) == {} and restarted.published() == 10
    restarted.store.close()


def _refilled(copy: Copy, records: list[Record]) -> Copy:
    """``copy``'s node stopped, its records from height 6 on replaced by ``records``'s (its
    checkpoint rows kept), then started again: a new witness on the same store."""
    copy.store.close()
    with sqlite3.connect(copy.directory / DB_NAME) as db:
        db.execute("DELETE FROM records WHERE height >= 6")
        db.execute("DELETE FROM meta WHERE key = 'tree'")
    with ChainStore(copy.directory) as store:
        store.append_records(records[6:])
    return Copy(copy.directory, [], 0, copy.repl.client)


def _follower(copy: Copy) -> Follower:
    """A follower on ``copy``'s store that resolves its alerts in Redis, as the node's does, and
    takes over the open ones an earlier run raised about its copy (ingest/replica.py)."""
    follower = Follower(
        "replica-1",
        copy.store,
        [],
        keys=CheckpointKeys(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, HOME_KEY.public.raw)),
        home_of=lambda ledger: "home",
        on_stored=lambda records, hops: None,
        on_alert=copy.alerts.append,
        on_resolve=lambda keys, upto: copy.repl.resolve_up_to(keys, upto) and None,
        on_verified=copy.witness.verified,
    )
    follower.carry_over(own_copy_alerts("replica-1", copy.repl.own_open_alerts()))
    return follower


def test_a_copy_refilled_from_a_home_that_signed_another_tree_leaves_the_witness_s_alert_open(
    copies: Any, forked: list[Record]
) -> None:
    """Review 11 C: the witness's alert and the follower's self-blame shared the key
    <node>|<ledger>|store_contradicts_checkpoint, and the follower closes its own once a home
    checkpoint vouches for its copy: a copy refilled from a home that signed another tree at the
    size this witness cosigned is vouched for by that home, so the follower deleted the one
    alert saying the home signed two trees, while the witness stayed blocked with none open."""
    copy = copies(10)
    cosigned = copy.checkpoint(10)
    copy.witness.verified(cosigned)
    copy.witness.turn()
    restarted = _refilled(copy, forked)
    (alert,) = restarted.alerts
    assert (alert.what, alert.height, alert.expected) == ("cosigned_not_held", 9, cosigned.root.hex())
    restarted.repl.alert(alert)  # as the node's raise_alert does, before its follower starts

    follower = _follower(restarted)
    vouching = HOME.sign(LEDGER, 12, restarted.store.root(LEDGER, 12))  # the home's key on its other tree
    follower.receive([FeedCheckpoints("home", {LEDGER: vouching.note})])
    assert follower.checkpoint_of(LEDGER) == vouching  # the home vouches for the copy it sent
    restarted.witness.turn()
    assert alert.key in restarted.repl.open_alerts()  # still said: it cosigned another tree at 10
    assert restarted.published() == 10 and restarted.witness.cosigned == 0  # and cosigns no more of it
    restarted.store.close()


def test_an_earlier_run_s_alert_is_resolved_once_the_store_holds_what_it_names_and_never_otherwise(
    copies: Any, chain: list[Record], forked: list[Record]
) -> None:
    """The witness's alert is no longer the follower's to carry over. The run after a repair
    (whose new store keeps only the cosigned rows its copy proves: the witness is not blocked)
    resolves an earlier run's once the store holds the checkpoint the alert names, also when it
    is refilled after the start; a copy of the home's other tree never does."""
    copy = copies(10)
    copy.witness.verified(copy.checkpoint(5))
    copy.witness.turn()
    copy.witness.verified(copy.checkpoint(10))
    copy.witness.turn()
    earlier = _refilled(copy, forked)
    (alert,) = earlier.alerts
    earlier.repl.alert(alert)
    assert own_copy_alerts("replica-1", earlier.repl.own_open_alerts()) == {}  # not the follower's
    earlier.store.close()
    for records, resolved in ((forked, False), (chain, True)):
        with sqlite3.connect(copy.directory / DB_NAME) as db:  # repaired up to 6 records: the row of 10 dropped
            db.execute("DELETE FROM records WHERE height >= 6")
            db.execute("DELETE FROM meta WHERE key = 'tree'")
            db.execute("DELETE FROM checkpoints WHERE size > 6")
        run = Copy(copy.directory, [], 0, copy.repl.client, carry_over=True)
        assert run.alerts == [] and alert.key in run.repl.open_alerts()  # it holds its last (5); 6 records
        run.store.append_records(records[6:11])  # the follower refills it
        run.witness.turn()
        assert (alert.key not in run.repl.open_alerts()) is resolved and run.alerts == []
        run.store.close()


def test_a_home_s_store_is_checked_against_the_checkpoints_published_elsewhere(copies: Any) -> None:
    home = copies(10)  # a home's store whose table of signed checkpoints was lost
    keys = CheckpointKeys(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, HOME_KEY.public.raw))
    held = home.checkpoint(8).note
    cosigned = WitnessSigner(NAME, WITNESS_KEY.seed).cosign(home.checkpoint(10), 1)
    assert check_published(home.store, keys, {LEDGER: [held, cosigned]}) == {}
    other_root = HOME.sign(LEDGER, 9, bytes(32)).note  # the home's key, a tree this store does not have
    longer = HOME.sign(LEDGER, 12, bytes(32)).note  # more than this store holds
    stranger = HomeSigner(CLUSTER, WITNESS_KEY.seed).sign(LEDGER, 9, bytes(32)).note  # not the home's: proves nothing
    assert check_published(home.store, keys, {LEDGER: [stranger, b"not a note"]}) == {}
    for note, height in ((other_root, 8), (longer, 11)):
        (found,) = check_published(home.store, keys, {LEDGER: [held, note]}).values()
        assert (found.code, found.ledger, found.height) == ("store_contradicts_checkpoint", LEDGER, height)


def test_evidence_in_redis_carries_the_other_note_and_the_consistency_proof_anyone_can_check(
    copies: Any, redis_client: Any
) -> None:
    copy = copies(10)
    held = copy.checkpoint(9)  # the home's note of this copy's tree
    lie = HOME.sign(LEDGER, 6, bytes(32))  # the home's key on another root at 6
    proof = copy.store.consistency_proof(LEDGER, 6, 9)
    copy.witness.evidence(lie, "ingest-2", Contradiction(held, proof))
    kept = copy.repl.evidence()[f"replica-1|{LEDGER}|6"]
    assert (kept["checkpoint"], kept["from"], kept["proved_by"]) == (lie.note.decode(), "ingest-2", held.note.decode())
    keys = CheckpointKeys(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, HOME_KEY.public.raw))
    signed_held = keys.check(LEDGER, kept["proved_by"].encode())
    signed_lie = keys.check(LEDGER, kept["checkpoint"].encode())
    lines = [base64.b64decode(line) for line in kept["consistency"].split("\n")]
    held_root = bytes.fromhex(kept["held_root"])
    verify_consistency(6, signed_held.size, held_root, signed_held.root, lines)  # the copy's root at 6 ...
    assert held_root != signed_lie.root  # ... is not the one the home also signed at 6
    copy.witness.evidence(lie, "ingest-2")  # no proof (a retired key's note): the fields are empty
    assert (copy.repl.evidence()[f"replica-1|{LEDGER}|6"]["proved_by"], kept["cosigned"]) == ("", "")


def test_a_cosigning_turn_that_meets_a_damaged_store_tells_the_store(tmp_path: Path) -> None:
    # The turn's thread outlives the failure as before; a malformed file is no bug of its, and
    # the store's on_damaged hook (the runtime: alert, stop) hears of it.
    with ChainStore(tmp_path / "s") as store:
        heard: list[Exception] = []
        store.on_damaged = heard.append

        class Failing:
            name = "replica-1"
            wake: Any = None

            def __init__(self) -> None:
                self.store = store

            def turn(self) -> None:
                raise malformed()

        Cosigner(Failing())._turn()  # type: ignore[arg-type]
        assert len(heard) == 1 and "the store's file is damaged" in str(heard[0])


def test_a_line_dated_ahead_by_a_clock_set_back_is_cosigned_again_at_once(copies: Any) -> None:
    """Outsider o15: a witness run a day ahead, its clock then set right, kept a quiet ledger's
    line dated a day ahead as its newest (not "old" by its clock) until the clock caught up: the
    witness_clock alert stayed open, and the line kept no head fresh (11.4). A line within the
    clock skew ahead (a clock stepped back a little) is no cause to cosign again."""
    copy = copies(10)
    clock = [1_800_000_000.0 + 86_400]
    witness, _ = _cosigned_once(copy, clock)
    clock[0] -= 86_400  # set right
    witness.verified(copy.checkpoint(9))
    witness.turn()
    # The line dated ahead is dropped, not kept first: readers take a witness's largest T (review r22 F2).
    assert _own_times(copy.repl.cosignatures(LEDGER)["replica-1"]) == [1_800_000_000]
    clock[0] -= 30  # stepped back within the skew: nothing due
    witness.verified(copy.checkpoint(9))
    witness.turn()
    assert witness.cosigned == 2
