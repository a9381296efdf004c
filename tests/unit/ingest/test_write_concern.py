"""CosignatureWatch: a put's write concern, resolved only by witness cosignatures that verify.

The home's checkpoints are real (signed with its key and kept in a real store's checkpoint
table); the witnesses' cosignatures are real C2SP cosignature/v1 lines, published in the
session's real Redis as a replica would. Everything else Redis may hold (holder heights,
channel messages, notes under a witness's name that are not its cosignature) must not count.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer, connect, free_port
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.broker.signing import new_signing_key
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.epochs import EpochBook, handed_over
from vledger.ingest.write_concern import CosignatureWatch
from vledger.node.checkpoint_log import SIGNED, CheckpointLog
from vledger.node.epoch import EPOCH_KIND
from vledger.node.errors import ReplicationTimeoutError
from vledger.node.ledger import LedgerRules
from vledger.node.node_key_rotation import key_histories
from vledger.node.note import VerifierKey
from vledger.node.record import Entry
from vledger.node.store import ChainStore, Receipt
from vledger.node.witness import HomeSigner, SignedCheckpoint, WitnessSigner, home_key, witness_key, witness_name

CLUSTER = "test"
HOME = "ingest-1"
LEDGER = "ledger-a"
DEADLINE = 10.0
SETTLE = 0.8  # seconds given to something that must not resolve a waiter (more than RECHECK_SECONDS)
HOME_KEY = new_signing_key()
SIGNER = HomeSigner(CLUSTER, HOME_KEY.seed)
WITNESS_KEYS = {name: new_signing_key() for name in ("replica-1", "replica-2", "replica-3", "observer-1")}
STRANGER_KEY = new_signing_key()


def receipt(height: int, ledger: str = LEDGER) -> Receipt:
    return Receipt(ledger, height, bytes([height % 256]) * 32, b"\x01" * 32)


def root(size: int) -> bytes:
    return size.to_bytes(32, "big")  # any 32 bytes: the watch compares with what the home signed


@pytest.fixture
def repl(redis_client: Any) -> ReplicationLedger:
    return ReplicationLedger(redis_client)


@pytest.fixture
def kept(tmp_path: Path) -> Iterator[CheckpointLog]:
    with ChainStore(tmp_path / "home") as store:  # only its checkpoints table is used
        yield store.checkpoints


def signed(kept: CheckpointLog, size: int, ledger: str = LEDGER) -> SignedCheckpoint:
    """The home's checkpoint at ``size``, kept as the outbox keeps what it signs."""
    checkpoint = SIGNER.sign(ledger, size, root(size))
    kept.keep(ledger, SIGNED, size, checkpoint.root, checkpoint.note)
    return checkpoint


def cosign(repl: ReplicationLedger, witness: str, checkpoint: SignedCheckpoint, key_name: str | None = None) -> bytes:
    """``witness``'s cosignature (or one made with ``key_name``'s key under its name), published as a witness does."""
    key = WITNESS_KEYS.get(key_name or witness, STRANGER_KEY)
    note = WitnessSigner(witness, key.seed).cosign(checkpoint, int(time.time()))
    repl.publish_cosignature(checkpoint.ledger, witness, checkpoint.size, note)
    return note


@pytest.fixture
def alerts() -> list[Alert]:
    return []


@pytest.fixture
def watch(repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]) -> Iterator[CosignatureWatch]:
    started = make_watch(repl, kept, alerts).start()
    yield started
    started.stop()


def witness_verifiers() -> dict[str, VerifierKey]:
    return {name: witness_key(name, key.public.raw) for name, key in WITNESS_KEYS.items()}


def make_watch(repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert], **options: Any) -> CosignatureWatch:
    return CosignatureWatch(
        HOME,
        repl,
        kept,
        cluster=CLUSTER,
        witnesses=options.pop("witnesses", None) or witness_verifiers(),
        log_key_of=lambda ledger, note: home_key(CLUSTER, ledger, HOME_KEY.public.raw),
        on_alert=alerts.append,
        ignored=["observer-1"],
        **options,
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def still_waiting(future: Future[Any]) -> bool:
    time.sleep(SETTLE)
    return not future.done()


def test_a_waiter_resolves_once_enough_witnesses_cosigned_past_its_height(
    watch: CosignatureWatch, repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]
) -> None:
    future = watch.wait(receipt(5), replicas=2, timeout_ms=10_000)
    cosign(repl, "replica-1", signed(kept, 6))  # size 6: heights 0..5
    cosign(repl, "replica-2", signed(kept, 5))  # heights 0..4: not yet
    cosign(repl, "observer-1", signed(kept, 9))  # an observer never counts
    assert still_waiting(future)
    cosign(repl, "replica-2", signed(kept, 8))
    got, holders = future.result(timeout=DEADLINE)
    assert got == receipt(5)
    assert holders == ["replica-1", "replica-2"]
    assert alerts == []


def test_cosignatures_made_before_the_wait_count_at_once(
    watch: CosignatureWatch, repl: ReplicationLedger, kept: CheckpointLog
) -> None:
    cosign(repl, "replica-1", signed(kept, 10))
    cosign(repl, "replica-3", signed(kept, 10))
    assert watch.wait(receipt(9), replicas=2, timeout_ms=10_000).result(timeout=DEADLINE)[1] == [
        "replica-1",
        "replica-3",
    ]


def test_a_waiter_asks_the_outbox_for_its_pass_at_once(
    repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]
) -> None:
    """The witnesses cosign only what the home's outbox ships, once an outbox_interval_ms: a put
    with w >= 1 has its pass now (OutboxProcess.hurry), not at the end of the interval."""
    hurried: list[tuple[str, int]] = []
    watch = make_watch(repl, kept, alerts, hurry=lambda ledger, height: hurried.append((ledger, height))).start()
    try:
        future = watch.wait(receipt(5), replicas=1, timeout_ms=10_000)
        assert hurried == [(LEDGER, 5)]
        cosign(repl, "replica-1", signed(kept, 6))
        assert future.result(timeout=DEADLINE)[1] == ["replica-1"]
    finally:
        watch.stop()


def test_holder_reports_and_channel_messages_prove_nothing(
    watch: CosignatureWatch, repl: ReplicationLedger, redis_client: Any, alerts: list[Alert]
) -> None:
    future = watch.wait(receipt(5), replicas=1, timeout_ms=10_000)
    repl.advance("replica-1", LEDGER, 99_999_999)  # the attack of issue 11
    redis_client.publish(repl.held_channel, f"ghost-a {LEDGER} 99999999")
    redis_client.set(repl.held_key(LEDGER, "ghost-b"), "99999999")
    redis_client.publish(repl.cosigned_channel, f"replica-1 {LEDGER} 99999999")
    redis_client.set(repl.cosig_key(LEDGER, "ghost-c"), b"anything")  # not a witness of this cluster
    assert still_waiting(future)
    assert alerts == []  # nothing there named a known witness's key


@pytest.mark.parametrize(
    "forgery",
    ["wrong-key", "not-a-note", "unsigned-checkpoint", "other-root"],
)
def test_a_note_under_a_witness_s_name_that_is_not_its_cosignature_never_counts_and_names_it(
    watch: CosignatureWatch,
    repl: ReplicationLedger,
    kept: CheckpointLog,
    redis_client: Any,
    alerts: list[Alert],
    forgery: str,
) -> None:
    future = watch.wait(receipt(5), replicas=1, timeout_ms=10_000)
    if forgery == "wrong-key":
        note = cosign(repl, "replica-2", signed(kept, 20), key_name="stranger")
    elif forgery == "not-a-note":
        note = b"replica-2 holds ledger-a up to 99999999"
        repl.publish_cosignature(LEDGER, "replica-2", 99_999_999, note)
    elif forgery == "unsigned-checkpoint":  # the witness's own key, on a checkpoint the home never signed
        other = HomeSigner(CLUSTER, STRANGER_KEY.seed).sign(LEDGER, 20, root(20))
        note = cosign(repl, "replica-2", other)
    else:  # the home's key and the witness's, but a root the home never kept at that size
        checkpoint = SIGNER.sign(LEDGER, 20, root(21))
        note = cosign(repl, "replica-2", checkpoint)
    assert still_waiting(future)
    (alert,) = [a for a in alerts if a.source == "replica-2"]
    assert (alert.node, alert.ledger, alert.what) == (HOME, LEDGER, "bad_cosignature")
    assert "replica-2" in alert.detail
    redis_client.publish(repl.cosigned_channel, f"replica-2 {LEDGER} 20")  # read again: not reported twice
    time.sleep(SETTLE)
    assert len(alerts) == 1
    assert repl.cosignatures(LEDGER)["replica-2"] == note


def test_a_replayed_older_cosignature_does_not_cover_a_newer_record(
    watch: CosignatureWatch, repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]
) -> None:
    old = cosign(repl, "replica-1", signed(kept, 3))
    signed(kept, 8)
    future = watch.wait(receipt(5), replicas=1, timeout_ms=10_000)
    repl.publish_cosignature(LEDGER, "replica-1", 99_999_999, old)  # replayed, with a lying channel message
    assert still_waiting(future)
    assert alerts == []  # it is a true cosignature, of a smaller tree


def test_a_waiter_times_out_with_where_its_record_stands(
    watch: CosignatureWatch, repl: ReplicationLedger, kept: CheckpointLog
) -> None:
    cosign(repl, "replica-1", signed(kept, 6))
    started = time.monotonic()
    future = watch.wait(receipt(5), replicas=3, timeout_ms=300)
    with pytest.raises(ReplicationTimeoutError) as caught:
        future.result(timeout=DEADLINE)
    assert time.monotonic() - started >= 0.3
    error = caught.value
    assert error.code == "replication_timeout"
    assert error.details == {"ledger": LEDGER, "height": 5, "hash": receipt(5).hash, "replicas": ["replica-1"]}
    assert error.to_wire() == {"code": "replication_timeout", "message": error.message, **error.details}
    assert "durable on ingest-1" in error.message and "1 of the 3 witnesses" in error.message


def test_a_timeout_says_when_more_witnesses_were_asked_for_than_can_ever_count(watch: CosignatureWatch) -> None:
    # Three replicas count here (observer-1 cosigns but is not counted): "1 of the 4 asked for"
    # alone reads as slow witnesses, not as a w this cluster can never meet.
    future = watch.wait(receipt(5), replicas=4, timeout_ms=300)
    with pytest.raises(ReplicationTimeoutError) as caught:
        future.result(timeout=DEADLINE)
    assert "w=4 can never be met here: only 3 witnesses count for w" in caught.value.message
    within = watch.wait(receipt(5), replicas=3, timeout_ms=300)
    with pytest.raises(ReplicationTimeoutError) as plain:
        within.result(timeout=DEADLINE)
    assert "never" not in plain.value.message


def test_two_witnesses_of_one_public_key_count_once(
    repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]
) -> None:
    # The name is not signed (PROTOCOL 13.4): replica-1's key under replica-2's name is replica-1
    # again, so with replica-2 trusted under that key, replica-1 alone must not make w=2.
    shared = {**witness_verifiers(), "replica-2": witness_key("replica-2", WITNESS_KEYS["replica-1"].public.raw)}
    started = make_watch(repl, kept, alerts, witnesses=shared).start()
    try:
        future = started.wait(receipt(5), replicas=2, timeout_ms=10_000)
        checkpoint = signed(kept, 6)
        cosign(repl, "replica-1", checkpoint)
        cosign(repl, "replica-2", checkpoint, key_name="replica-1")
        assert still_waiting(future)
        cosign(repl, "replica-3", checkpoint)
        assert future.result(timeout=DEADLINE)[1] == ["replica-1", "replica-3"]
        never = started.wait(receipt(5), replicas=3, timeout_ms=300)
        with pytest.raises(ReplicationTimeoutError) as caught:
            never.result(timeout=DEADLINE)
        assert "only 2 witnesses count for w" in caught.value.message
    finally:
        started.stop()


def test_stop_fails_the_waiters_left(repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]) -> None:
    watch = make_watch(repl, kept, alerts).start()
    future = watch.wait(receipt(1), replicas=1, timeout_ms=60_000)
    watch.stop()
    with pytest.raises(ReplicationTimeoutError) as caught:
        future.result(timeout=DEADLINE)
    assert caught.value.details["replicas"] == []


def test_an_unreachable_redis_lets_waiters_time_out(kept: CheckpointLog, alerts: list[Alert]) -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    watch = make_watch(ReplicationLedger(client), kept, alerts).start()
    try:
        future = watch.wait(receipt(1), replicas=1, timeout_ms=200)
        with pytest.raises(ReplicationTimeoutError):
            future.result(timeout=DEADLINE)
    finally:
        watch.stop()
        client.close()


def test_a_waiter_times_out_even_when_redis_answers_with_an_error(
    kept: CheckpointLog, alerts: list[Alert], redis_server: RedisServer, redis_client: Any
) -> None:
    # An error reply (here NOPERM: a Redis user whose ACL refuses the read of the cosignatures)
    # raises a ResponseError: the watch must survive it, and a put with w > 0 be answered
    # replication_timeout, not wait for ever.
    redis_client.acl_setuser("no-mget", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                             commands=["+@all", "-mget"])  # fmt: skip
    redis_client.set(ReplicationLedger(redis_client).cosig_key(LEDGER, "replica-1"), b"a note")
    client = connect(redis_server.url.replace("redis://", "redis://no-mget:pw@", 1))
    watch = make_watch(ReplicationLedger(client, raisers=["replica-1"]), kept, alerts).start()
    try:
        future = watch.wait(receipt(1), replicas=1, timeout_ms=200)
        with pytest.raises(ReplicationTimeoutError):
            future.result(timeout=3.0)
    finally:
        watch.stop()
        client.close()
        redis_client.acl_deluser("no-mget")


UNTIL = 1_790_000_000_000  # when replica-1's replaced key's window ends (ms), in the rotation tests


def _rotated_replica_1(
    repl: ReplicationLedger,
    kept: CheckpointLog,
    alerts: list[Alert],
    new: Any,
    cosigned: dict[str, int] | None = None,
) -> tuple[CosignatureWatch, Callable[[Any, int, int], None]]:
    """A started watch of replica-1 whose Ed25519 key rotated to ``new`` (PROTOCOL 16.6; the
    rotation states ``cosigned`` when given), knowing it by its old key file, and a function that
    publishes replica-1's cosignature by a key of a checkpoint of a size, stamped at a time (s)."""
    old = WITNESS_KEYS["replica-1"]
    rotation: dict[str, Any] = {
        "node": "replica-1",
        "curve": "A" * 40,
        "sign": new.public.public_hex,
        "accepted": 1,
        "until": UNTIL,
    }
    if cosigned is not None:
        rotation["cosigned"] = cosigned
    histories = key_histories({"replica-1": ("A" * 40, old.public.public_hex)}, [rotation])
    name = witness_name(CLUSTER, "replica-1")
    watch = CosignatureWatch(
        HOME,
        repl,
        kept,
        cluster=CLUSTER,
        witnesses={"replica-1": witness_key(name, old.public.raw)},
        log_key_of=lambda ledger, note: home_key(CLUSTER, ledger, HOME_KEY.public.raw),
        on_alert=alerts.append,
        histories=lambda: histories,
    ).start()

    def cosign_at(key: Any, size: int, seconds: int) -> None:
        note = WitnessSigner(name, key.seed).cosign(signed(kept, size), seconds)
        repl.publish_cosignature(LEDGER, "replica-1", size, note)

    return watch, cosign_at


def test_a_rotated_witness_counts_by_its_new_key_and_by_its_old_one_only_when_stamped_before_until(
    repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]
) -> None:
    # replica-1's Ed25519 key rotated (PROTOCOL 16.6); its old key's window ends at UNTIL ms.
    until, old, new = UNTIL, WITNESS_KEYS["replica-1"], new_signing_key()
    watch, cosign_at = _rotated_replica_1(repl, kept, alerts, new)
    try:
        future = watch.wait(receipt(5), replicas=1, timeout_ms=10_000)
        cosign_at(old, 6, until // 1000)  # the old key, stamped at the window's end: refused
        assert still_waiting(future)
        (alert,) = alerts
        assert (alert.source, alert.what) == ("replica-1", "bad_cosignature") and "out of force" in alert.detail
        cosign_at(old, 6, until // 1000 - 1)  # stamped in the window: it counts
        assert future.result(timeout=DEADLINE)[1] == ["replica-1"]
        later = watch.wait(receipt(8), replicas=1, timeout_ms=10_000)
        cosign_at(new, 9, until // 1000 + 3600)  # the new key, at any time
        assert later.result(timeout=DEADLINE)[1] == ["replica-1"]
        assert len(alerts) == 1
    finally:
        watch.stop()


def test_a_witness_rotated_to_another_s_key_counts_once_with_it(
    repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]
) -> None:
    # replica-2's Ed25519 key rotated to replica-1's (the admin rules refuse that now, 16.1; a
    # ledger written before may hold it): whoever holds that key cosigns as both, one host.
    one, two, three = (WITNESS_KEYS[f"replica-{n}"] for n in (1, 2, 3))
    rotation = {"node": "replica-2", "curve": "B" * 40, "sign": one.public.public_hex, "accepted": 1, "until": 2}
    original = {f"replica-{n}": ("ABC"[n - 1] * 40, k.public.public_hex) for n, k in ((1, one), (2, two), (3, three))}
    histories = key_histories(original, [rotation])
    names = {w: witness_name(CLUSTER, w) for w in original}
    watch = CosignatureWatch(
        HOME,
        repl,
        kept,
        cluster=CLUSTER,
        witnesses={w: witness_key(names[w], WITNESS_KEYS[w].public.raw) for w in original},
        log_key_of=lambda ledger, note: home_key(CLUSTER, ledger, HOME_KEY.public.raw),
        on_alert=alerts.append,
        histories=lambda: histories,
    ).start()
    try:
        checkpoint = signed(kept, 6)

        def cosign_as(witness: str, key: Any) -> None:
            note = WitnessSigner(names[witness], key.seed).cosign(checkpoint, int(time.time()))
            repl.publish_cosignature(LEDGER, witness, checkpoint.size, note)

        future = watch.wait(receipt(5), replicas=2, timeout_ms=10_000)
        cosign_as("replica-1", one)
        cosign_as("replica-2", one)  # verifies: replica-2's newest key is replica-1's
        assert still_waiting(future)
        cosign_as("replica-3", three)
        assert future.result(timeout=DEADLINE)[1] == ["replica-1", "replica-3"]
        assert alerts == []
    finally:
        watch.stop()


def test_a_replaced_key_counts_only_up_to_the_size_its_rotation_states_and_past_it_raises_no_alert(
    repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert]
) -> None:
    # PROTOCOL 16.6: the rotation states the old key had cosigned LEDGER up to size 6. A line by
    # it stamped inside the window on size 9 (a thief's, or the witness's before it read the
    # record) is not counted and is no alert; the new key's on the same size counts.
    until, old, new = UNTIL, WITNESS_KEYS["replica-1"], new_signing_key()
    watch, cosign_at = _rotated_replica_1(repl, kept, alerts, new, cosigned={LEDGER: 6})
    try:
        future = watch.wait(receipt(8), replicas=1, timeout_ms=10_000)
        cosign_at(old, 9, until // 1000 - 1)  # larger than 6: whatever T, it does not count
        assert still_waiting(future)
        cosign_at(old, 6, until // 1000 - 1)  # up to 6 it does (not enough for record 8)
        assert still_waiting(future)
        cosign_at(new, 9, until // 1000 - 1)
        assert future.result(timeout=DEADLINE)[1] == ["replica-1"]
        assert alerts == []
    finally:
        watch.stop()


def test_a_replaced_home_reads_no_cosignature_of_the_ledger_it_handed_over(
    repl: ReplicationLedger, kept: CheckpointLog, redis_client: Any, alerts: list[Alert]
) -> None:
    # A home cut off, replaced by its standby (PROTOCOL 10.9), then back while still running:
    # its witnesses now cosign the new home's checkpoints, which its own key never signed. It
    # raised a bad_cosignature alert naming an honest witness for each of them (thousands, one
    # always open, so `vledger verify --cluster` exited 1 after a clean handover).
    homed = {LEDGER: True}
    watch = CosignatureWatch(
        HOME,
        repl,
        kept,
        cluster=CLUSTER,
        witnesses={name: witness_key(name, key.public.raw) for name, key in WITNESS_KEYS.items()},
        log_key_of=lambda ledger, note: home_key(CLUSTER, ledger, HOME_KEY.public.raw),
        on_alert=alerts.append,
        owns=lambda ledger: homed[ledger],
    ).start()
    try:
        cosign(repl, "replica-1", signed(kept, 6))
        assert watch.wait(receipt(5), replicas=1, timeout_ms=10_000).result(timeout=DEADLINE)[1] == ["replica-1"]
        in_flight = watch.wait(receipt(6), replicas=1, timeout_ms=1_500)  # placed just before it was cut off
        homed[LEDGER] = False  # the standby won the epoch
        new_home = HomeSigner(CLUSTER, STRANGER_KEY.seed)
        for witness in ("replica-1", "replica-2"):
            cosign(repl, witness, new_home.sign(LEDGER, 20, root(20)))
        redis_client.publish(repl.cosigned_channel, f"replica-2 {LEDGER} 20")
        with pytest.raises(ReplicationTimeoutError):
            in_flight.result(timeout=DEADLINE)  # the new home's checkpoints never cover it
        assert alerts == []
    finally:
        watch.stop()


STANDBY = "ingest-2"
STANDBY_SIGNER = HomeSigner(CLUSTER, new_signing_key().seed)  # the standby's checkpoint key, pinned


@pytest.fixture
def book(tmp_path: Path) -> Iterator[EpochBook]:
    """The home's store of LEDGER, whose genesis pins its key and the standby's (PROTOCOL 10.9)."""
    pinned = {"checkpoint_key": SIGNER.key(LEDGER).verifier().encode()}
    pinned["standby_key"] = STANDBY_SIGNER.key(LEDGER).verifier().encode()
    rules = LedgerRules((EPOCH_KIND, "note"), 0, pinned)
    with ChainStore(tmp_path / "home-ledger", origin=HOME) as store:
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "create", 1), 0, PROTOCOL_LIMITS))
        yield EpochBook(CLUSTER, store)


def proof_of_handover(book: EpochBook) -> Callable[[str, bytes], bool]:
    """handed_over as the node wires it: its store's epochs, the witness keys in force, a cluster
    file that allows no failback (epochs from 3)."""
    return functools.partial(
        handed_over, book, HOME, witnesses=lambda: witness_verifiers().values(), failback_allowed=lambda *_: False
    )


def test_a_home_woken_from_a_hang_reports_no_cosignature_of_the_epoch_that_replaced_it(
    repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert], book: EpochBook
) -> None:
    # Hung while its standby was promoted, the home's threads all wake at once: the watch may
    # read the ledger's cosignatures before the node's own view of the epochs (``owns``) says
    # it was replaced. Each note is the proof: a checkpoint of epoch 2 signed with the standby
    # key its genesis pins and cosigned by a witness, which no witness forged; so no honest
    # witness is accused.
    watch = make_watch(repl, kept, alerts, handed_over=proof_of_handover(book)).start()
    try:
        in_flight = watch.wait(receipt(6), replicas=1, timeout_ms=1_500)
        assert repl.promote(LEDGER, 2, STANDBY) is None
        for witness in ("replica-1", "replica-2", "replica-3"):
            cosign(repl, witness, STANDBY_SIGNER.sign(LEDGER, 20, root(20), (f"vledger-epoch 2 {STANDBY}",)))
        with pytest.raises(ReplicationTimeoutError):
            in_flight.result(timeout=DEADLINE)
        assert alerts == []
    finally:
        watch.stop()


def test_redis_naming_another_home_silences_no_report_of_a_forged_cosignature(
    repl: ReplicationLedger, kept: CheckpointLog, alerts: list[Alert], book: EpochBook
) -> None:
    # Every ingest node's Redis user may write vledger:{ledgers}:epochs: a compromised node
    # names itself the ledger's home, then a note under a witness's name that no pinned key
    # signed is still a forgery, reported against the name it carries.
    watch = make_watch(repl, kept, alerts, handed_over=proof_of_handover(book)).start()
    try:
        in_flight = watch.wait(receipt(6), replicas=1, timeout_ms=10_000)
        assert repl.promote(LEDGER, 2, STANDBY) is None
        forger = HomeSigner(CLUSTER, STRANGER_KEY.seed)
        cosign(repl, "replica-1", forger.sign(LEDGER, 20, root(20), (f"vledger-epoch 2 {STANDBY}",)))
        wait_for(lambda: len(alerts) == 1, "the forged note reported")
        assert (alerts[0].what, alerts[0].source) == ("bad_cosignature", "replica-1")
        # The standby's host holds the standby key the genesis pins: its note of epoch 2 under a
        # witness's name, cosigned by no witness key, proves no handover either (outsider F6).
        cosign(repl, "replica-2", STANDBY_SIGNER.sign(LEDGER, 20, root(20), (f"vledger-epoch 2 {STANDBY}",)), "x")
        wait_for(lambda: len(alerts) == 2, "the standby key's uncosigned note reported")
        assert (alerts[1].what, alerts[1].source) == ("bad_cosignature", "replica-2")
        assert not in_flight.done()
    finally:
        watch.stop()
