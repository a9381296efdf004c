"""Outbox: a real home ChainStore's durable records reach the Redis streams and held heights, outages included.

Mostly no feed here (``publisher=None``, or a FeedLog that notes what would be sent): what is
checked is the stream, the held heights and the checkpoints, on the session's Redis, and on Redis
servers of the tests' own that they stop and start.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from vledger.broker.redis_server import RedisServer, connect, free_port
from vledger.broker.replication import (
    REDIS_KEY_DAMAGED,
    ReplicationLedger,
    StreamRecord,
    copies_nothing,
    operator_resolves,
)
from vledger.broker.signing import SigningKey, new_signing_key
from vledger.config.cluster import ReplicationSettings
from vledger.config.settings import PROTOCOL_LIMITS as LIMITS
from vledger.ingest.outbox import Outbox
from vledger.node import checkpoint_log
from vledger.node.checkpoint_log import SIGNED
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.errors import StoreContradictsCheckpointError, StoreDamagedError, VledgerError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry, decode_record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.tree import leaf_hash
from vledger.node.witness import (
    CheckpointKeys,
    HomeSigner,
    SignedCheckpoint,
    WitnessSigner,
    home_key,
    witness_name,
)
from vledger.tests.sqlite_faults import malformed
from vledger.tests.unit.ingest.note_chain import T0, append

HOME = "home"
LEDGER = "ledger-a"
OTHER = "ledger-b"
# A heartbeat often, so that a Redis that comes back is noticed soon; small batches, so that
# filling a stream takes several round trips.
SETTINGS = ReplicationSettings(heartbeat_ms=50, catch_up_batch=3)
DEADLINE = 15.0  # seconds: the outbox retries Redis once a second
CLUSTER = "test"
SIGNER = new_signing_key()  # the home's Ed25519 key
KEYS = CheckpointKeys(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, SIGNER.public.raw))


def wait_until(condition: Callable[[], bool], what: str, seconds: float = DEADLINE) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def streamed(repl: ReplicationLedger, ledger: str) -> list[tuple[int, bytes, str]]:
    return [(r.height, r.data, r.origin) for r in repl.read(ledger, 0, 1_000_000)]


def in_store(store: ChainStore, ledger: str) -> list[tuple[int, bytes, str]]:
    return [(height, data, HOME) for height, data in store.range_raw(ledger)]


def caught_up(repl: ReplicationLedger, store: ChainStore) -> Callable[[], bool]:
    """Every ledger's stream is the store's, and Redis knows the home holds each head."""

    def check() -> bool:
        try:
            return all(
                streamed(repl, ledger) == in_store(store, ledger)
                and repl.held(ledger).get(HOME) == store.size(ledger) - 1
                for ledger in store.ledgers()
            )
        except Exception:  # Redis still down
            return False

    return check


class LoggedReplication(ReplicationLedger):
    """The real ReplicationLedger, noting each append the outbox makes: (ledger, first, count, checkpoint)."""

    def __init__(self, client: Any, node: str | None = None) -> None:
        super().__init__(client, node=node)
        self.appends: list[tuple[str, int, int, bytes]] = []
        self.checkpoint_sets = 0  # heartbeats that reached Redis (each sets the latest checkpoints)

    def set_checkpoints(self, checkpoints: dict[str, bytes]) -> dict[str, Exception]:
        refused = super().set_checkpoints(checkpoints)
        self.checkpoint_sets += 1
        return refused

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
        self.appends.append((ledger, first, len(records), checkpoint))
        return super().append_checked(ledger, origin, first, records, checkpoint, held=held, latest=latest)


class Home:
    """A home node's store with its outbox, started; closed by the fixture."""

    def __init__(
        self,
        directory: Path,
        client: Any,
        signer: SigningKey | None = None,
        feed: FeedLog | None = None,
        refused: Mapping[str, VledgerError] | None = None,
    ) -> None:
        self.store = ChainStore(directory, origin=HOME, clock=lambda: T0)
        self.repl = LoggedReplication(client, node=HOME)  # its alerts in its own keys, as a node's
        home_signer = HomeSigner(CLUSTER, signer.seed) if signer is not None else None
        self.outbox = Outbox(
            HOME,
            self.store,
            feed,  # type: ignore[arg-type]
            self.repl,
            SETTINGS,
            signer=home_signer,
            witnesses=lambda: [WITNESS.key.verifier()],
            refused=refused,
        )
        self.store.on_commit = self.outbox.committed
        self.outbox.start()

    def close(self) -> None:
        self.outbox.stop()
        self.store.close()


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Callable[..., Home]]:
    made: list[Home] = []

    def make(
        client: Any,
        signer: SigningKey | None = None,
        feed: FeedLog | None = None,
        refused: Mapping[str, VledgerError] | None = None,
    ) -> Home:
        home = Home(tmp_path / f"home-{len(made)}", client, signer, feed, refused)
        made.append(home)
        return home

    yield make
    for home in made:
        home.close()


class OwnRedis:
    """A redis-server of one test's own on a fixed port, to stop and start again."""

    def __init__(self, executable: Path | None) -> None:
        self.executable = executable
        self.port = free_port()
        self.directories: list[Path] = []
        self.server: RedisServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, keep_data: bool = True) -> None:
        if not keep_data or not self.directories:
            # Under /tmp: a short path, as the session fixture's.
            self.directories.append(Path(tempfile.mkdtemp(prefix="vledger-outbox-", dir="/tmp")))
        self.server = RedisServer(self.directories[-1], self.port, executable=self.executable)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def own_redis(redis_server: RedisServer) -> Iterator[OwnRedis]:
    redis = OwnRedis(redis_server.executable)
    yield redis
    redis.stop()
    for directory in redis.directories:
        shutil.rmtree(directory, ignore_errors=True)


# --- on the session's Redis ------------------------------------------------------------------------


def test_committed_records_reach_the_streams_and_the_held_heights(
    redis_client: Any, homes: Callable[..., Home]
) -> None:
    home = homes(redis_client)
    append(home.store, LEDGER, 7)
    append(home.store, OTHER, 2)
    append(home.store, LEDGER, 5)
    wait_until(caught_up(home.repl, home.store), "the streams hold the store")
    assert home.repl.ledgers() == {LEDGER: HOME, OTHER: HOME}
    assert home.repl.held(LEDGER) == {HOME: 11} and home.repl.held(OTHER) == {HOME: 1}
    assert redis_client.xlen(home.repl.stream_key(LEDGER)) == 12  # each height once


def test_a_held_height_written_by_hand_is_put_right_at_the_next_heartbeat(
    redis_client: Any, homes: Callable[..., Home]
) -> None:
    # The node's own Redis user may write its held key (outsider 20, F9): a height above what the
    # store holds stayed for good, since a report only ever raised it.
    home = homes(redis_client)
    append(home.store, LEDGER, 3)
    wait_until(caught_up(home.repl, home.store), "the stream holds the store")
    redis_client.set(home.repl.held_key(LEDGER, HOME), "99999")
    wait_until(lambda: home.repl.held(LEDGER) == {HOME: 2}, "the home's held height is its store's head again")


def test_a_homes_entry_in_a_ledgers_hash_made_a_string_is_put_back_at_the_next_heartbeat(
    redis_client: Any, homes: Callable[..., Home]
) -> None:
    # Any ingest node's Redis user may make {ledgers} a string (outsider 31, N1): every append
    # failed WRONGTYPE, and a ledger that got no record was never named there again.
    home = homes(redis_client)
    append(home.store, LEDGER, 3)
    append(home.store, OTHER, 2)
    wait_until(caught_up(home.repl, home.store), "the streams hold the store")
    redis_client.delete(home.repl.ledgers_key)
    redis_client.set(home.repl.ledgers_key, "x")
    wait_until(lambda: redis_client.type(home.repl.ledgers_key) == b"hash", "the hash replaced")
    wait_until(lambda: home.repl.ledgers() == {LEDGER: HOME, OTHER: HOME}, "both ledgers named again")
    append(home.store, LEDGER, 2)
    wait_until(caught_up(home.repl, home.store), "the stream grows again")


def test_a_ledger_re_homed_in_the_ledgers_hash_is_put_back_with_an_alert(
    redis_client: Any, homes: Callable[..., Home]
) -> None:
    """outsider43 M1: any ingest node's Redis user may HSET ``{ledgers}`` L ingest-2 (home
    ingest-1): it stayed so for good, with no alert, and `vledger repair` took that home. The
    home puts its field back at its heartbeat and raises ``home_rewritten``, which an operator
    resolves; a field naming the node Redis's epochs name (a promotion's) is left alone."""
    home = homes(redis_client)
    append(home.store, LEDGER, 3)
    append(home.store, OTHER, 2)
    wait_until(caught_up(home.repl, home.store), "the streams hold the store")
    redis_client.hset(home.repl.ledgers_key, mapping={LEDGER: "ingest-2", "ghost": "ingest-2", "<b>": HOME})
    wait_until(lambda: home.repl.ledgers().get(LEDGER) == HOME, "the home's field put back")
    assert home.repl.ledgers() == {LEDGER: HOME, OTHER: HOME, "ghost": "ingest-2"}  # "<b>" is no ledger's name
    [alert] = [a for a in home.repl.alerts() if a["what"] == "home_rewritten"]
    assert (alert["node"], alert["ledger"], alert["found"], alert["expected"]) == ("redis", LEDGER, "ingest-2", HOME)
    assert operator_resolves(HOME, f"redis|{LEDGER}|home_rewritten", copies_nothing)
    redis_client.hset(home.repl.epochs_key, OTHER, "2 ingest-2")
    # OTHER as a promotion writes it (both hashes), LEDGER re-homed again: one heartbeat sees both.
    redis_client.hset(home.repl.ledgers_key, mapping={OTHER: "ingest-2", LEDGER: "ingest-3"})
    wait_until(lambda: home.repl.ledgers().get(LEDGER) == HOME, "put back again")
    assert home.repl.ledgers()[OTHER] == "ingest-2"
    raised = [(a["ledger"], a["found"]) for a in home.repl.alerts() if a["what"] == "home_rewritten"]
    assert raised == [(LEDGER, "ingest-2"), (LEDGER, "ingest-3")]


def test_an_epochs_hash_made_a_string_stops_no_heartbeat(redis_client: Any, homes: Callable[..., Home]) -> None:
    # Any ingest node's Redis user may SET {ledgers}:epochs (review17 2): each heartbeat's sync
    # failed at its first read, so Redis was "unavailable", held heights were never put right
    # and nothing was refilled. It reads as it last did (a claim either way: _replaced).
    home = homes(redis_client)
    append(home.store, LEDGER, 3)
    wait_until(caught_up(home.repl, home.store), "the stream holds the store")
    redis_client.set(home.repl.epochs_key, "x")
    redis_client.set(home.repl.held_key(LEDGER, HOME), "99999")
    wait_until(lambda: home.repl.held(LEDGER) == {HOME: 2}, "the home's held height is its store's head again")
    redis_client.xtrim(home.repl.stream_key(LEDGER), maxlen=1)
    redis_client.xdel(home.repl.stream_key(LEDGER), "2-1")
    wait_until(caught_up(home.repl, home.store), "the stream's tail filled again")


def test_a_followers_held_height_follows_a_tail_cut_behind_its_store(redis_client: Any, tmp_path: Path) -> None:
    """outsider 25, H2: a replica's tail cut with sqlite behind its node's back stayed "current,
    HELD = head" in `vledger repl status` for minutes, while the node itself (hello, size) said
    it lacked the records: the heartbeat set the held key to the head the store last placed,
    kept in memory, not the one its file holds (PROTOCOL 10.3, 10.4)."""
    with ChainStore(tmp_path / "replica", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 12)
        repl = ReplicationLedger(redis_client, node="replica-1")
        follower = Outbox("replica-1", store, None, repl, SETTINGS, stream=False)
        store.on_commit = follower.committed
        follower.start()
        try:
            wait_until(lambda: repl.held(LEDGER) == {"replica-1": 11}, "the replica reported its head")
            with sqlite3.connect(tmp_path / "replica" / DB_NAME) as cut:
                cut.execute("DELETE FROM records WHERE ledger = ? AND height > 6", (LEDGER,))
            wait_until(lambda: repl.held(LEDGER) == {"replica-1": 6}, "the held key is the file's head again")
            assert store.size(LEDGER) == 12  # what the store placed last: not what it holds now
        finally:
            follower.stop()


def test_a_ledger_redis_refuses_this_node_leaves_the_others_streaming(
    redis_client: Any, homes: Callable[..., Home], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redis.acl written before the cluster file named this node a ledger's home refuses its
    writes of that ledger (NOPERM): they stay behind, logged, and every other ledger goes on.
    That refusal paused all of Redis for the outbox, at every retry: every stream stalled."""
    home = homes(redis_client)
    real = home.repl.append_checked

    def refusing(ledger: str, *args: Any, **kwargs: Any) -> Any:
        if ledger == LEDGER:  # the first ledger of each pass, the heartbeat's included
            raise redis.exceptions.NoPermissionError("this user has no permissions to access one of the keys")
        return real(ledger, *args, **kwargs)

    monkeypatch.setattr(home.repl, "append_checked", refusing)
    append(home.store, LEDGER, 3)
    append(home.store, OTHER, 4)
    wait_until(lambda: streamed(home.repl, OTHER) == in_store(home.store, OTHER), "the other ledger streamed")
    append(home.store, LEDGER, 2)
    append(home.store, OTHER, 3)
    wait_until(lambda: streamed(home.repl, OTHER) == in_store(home.store, OTHER), "and goes on")
    assert streamed(home.repl, LEDGER) == []
    # Said as an alert of its own, with a command its operator can run (outsider o21 F1: only a
    # log line, advising the ACL LOAD no vledger user may run, while `vledger status` said OK).
    key = f"{HOME}|{LEDGER}|stream_refused"
    alert = home.repl.open_alerts()[key]
    assert "vledger keygen --cluster" in alert["detail"] and "redis-server" in alert["detail"]
    assert OTHER not in str(home.repl.open_alerts())
    monkeypatch.setattr(home.repl, "append_checked", real)  # Redis given the new redis.acl
    wait_until(lambda: streamed(home.repl, LEDGER) == in_store(home.store, LEDGER), "streamed once allowed")
    wait_until(lambda: key not in home.repl.open_alerts(), "its alert resolved")


def test_stop_sends_what_is_queued_first(redis_client: Any, homes: Callable[..., Home]) -> None:
    home = homes(redis_client)
    append(home.store, LEDGER, 20)
    home.outbox.stop()  # at once: the records were queued when their appends returned
    assert streamed(home.repl, LEDGER) == in_store(home.store, LEDGER)
    assert home.repl.held(LEDGER) == {HOME: 19}


def test_a_store_that_redis_never_saw_is_streamed_when_the_outbox_starts(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 10)  # no outbox yet
    home = homes(redis_client)  # the same directory
    assert home.store.size(LEDGER) == 10
    wait_until(caught_up(home.repl, home.store), "the stream filled from the store")
    append(home.store, LEDGER, 2)
    wait_until(caught_up(home.repl, home.store), "and then the new records")
    assert redis_client.xlen(home.repl.stream_key(LEDGER)) == 12


def test_a_stream_that_lags_the_store_is_filled_from_its_last_height(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 10)
        repl = ReplicationLedger(redis_client)  # the stream got heights 0..3 before a crash, say
        repl.add([StreamRecord(LEDGER, h, data, HOME) for h, data in store.range_raw(LEDGER, 0, 4)])
    home = homes(redis_client)
    wait_until(caught_up(home.repl, home.store), "the stream filled from height 4")
    assert redis_client.xlen(home.repl.stream_key(LEDGER)) == 10


def test_a_stream_that_lags_the_store_with_a_foreign_tail_is_rewritten_from_its_first_foreign_entry(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    """The stream ends below the store's head with entries that are not the store's records (a
    fork's, left by this home before its store was rebuilt from its followers: outsider 33 F2).
    Appending after them made a stream no link joins, which a follower took the fork from."""
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 10)
        repl = ReplicationLedger(redis_client)
        held = list(store.range_raw(LEDGER, 0, 4))
    repl.add([StreamRecord(LEDGER, h, data, HOME) for h, data in held])
    repl.add([StreamRecord(LEDGER, h, b"fork %d" % h, HOME) for h in range(4, 7)])
    home = homes(redis_client)
    wait_until(caught_up(home.repl, home.store), "the stream filled")
    entries = [r.data for r in home.repl.read(LEDGER, 0, 100)]
    assert entries == [data for _, data in home.store.range_raw(LEDGER, 0, 10)]  # main: fork 4..6 kept
    alerts = [a for a in home.repl.alerts() if a["what"] == "record_conflict"]
    assert [(a["node"], a["height"]) for a in alerts] == [("redis", "4")]


def test_a_streamed_record_changed_with_its_link_kept_is_named_by_its_leaf_hash(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    """sm31: the home's record_conflict against the stream named both records by the link they
    claim, the same for a record whose content was changed and its link kept: the alert showed
    one hash twice. Named as the verifier's are (node/conflict.py): leaf hashes, what differs."""
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 10)
        repl = ReplicationLedger(redis_client)
        held = dict(store.range_raw(LEDGER, 0, 11))
    ours = decode_record(held[4], LIMITS)  # the tail of a stream behind the store: what the home checks
    changed = dataclasses.replace(ours, content_bytes=decode_record(held[3], LIMITS).content_bytes).encode()
    repl.add([StreamRecord(LEDGER, h, changed if h == 4 else held[h], HOME) for h in range(5)])
    home = homes(redis_client)
    wait_until(caught_up(home.repl, home.store), "the stream rewritten and filled")
    assert [r.data for r in home.repl.read(LEDGER, 0, 100)] == [held[h] for h in sorted(held)]
    (alert,) = [a for a in home.repl.alerts() if a["what"] == "record_conflict"]
    assert (alert["node"], alert["height"]) == ("redis", "4")
    assert alert["expected"] == "leaf:" + leaf_hash(held[4]).hex() != alert["found"]
    assert alert["found"] == "leaf:" + leaf_hash(changed).hex()
    assert alert["detail"].endswith(": the same link, another content (expected and found: their leaf hashes)")


def test_a_stream_whose_tail_was_deleted_is_rewound_filled_and_alerted(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    """Someone deleted the stream's last entries (XDEL: its last id stays above them). The home
    cannot append after what is left until it rewinds the stream: it fills it again from its
    store and says so in an alert, instead of failing every heartbeat with held heights frozen;
    once the stream holds its records again, it resolves its own alert (no other node may)."""
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 10)
        repl = ReplicationLedger(redis_client)
        repl.add([StreamRecord(LEDGER, h, data, HOME) for h, data in store.range_raw(LEDGER, 0, 10)])
    redis_client.xdel(repl.stream_key(LEDGER), "7-1", "8-1", "9-1")
    home = homes(redis_client)
    wait_until(caught_up(home.repl, home.store), "the stream filled again from height 7")
    append(home.store, LEDGER, 2)
    wait_until(caught_up(home.repl, home.store), "and then the new records")
    alerts = [a for a in home.repl.alerts() if a["what"] == "record_conflict"]
    assert [(a["node"], a["ledger"], a["height"], a["found"]) for a in alerts] == [("redis", LEDGER, "7", "missing")]
    assert alerts[0]["raised_by"] == home.repl.node
    wait_until(lambda: not home.repl.open_alerts(), "the home's alert resolved by the home")


def test_a_home_refused_a_ledger_leaves_the_longer_stream_of_it_alone(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    """A home put back from an older copy of its store, refused the ledger (it is behind a
    checkpoint it signed): the stream's records past its store are what it acknowledged and
    lost, the ones a follower catches up from; it does not rewind them (outsider 26 I6)."""
    with ChainStore(tmp_path / "before", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 7)
    shutil.copytree(tmp_path / "before", tmp_path / "home-0")  # the copy put back later
    with ChainStore(tmp_path / "before", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 3)
        repl = ReplicationLedger(redis_client)
        repl.add([StreamRecord(LEDGER, h, data, HOME) for h, data in store.range_raw(LEDGER, 0, 10)])
    behind = StoreContradictsCheckpointError("behind a checkpoint it signed", ledger=LEDGER, height=9)
    home = homes(redis_client, refused={LEDGER: behind})
    # Its held height is reported after the streams are looked at, in the same pass.
    wait_until(lambda: home.repl.held(LEDGER).get(HOME) == 6, "the home's held height reported")
    assert len(streamed(home.repl, LEDGER)) == 10
    assert not [a for a in home.repl.alerts() if a["what"] == "record_conflict"]


STANDBY = "standby"
STANDBY_SIGNER = HomeSigner(CLUSTER, new_signing_key().seed)  # the standby's checkpoint key
WITNESS = WitnessSigner(witness_name(CLUSTER, "replica-1"), new_signing_key().seed)  # the home trusts it


def handed_over_chain(store: ChainStore, count: int) -> None:
    """A genesis of LEDGER pinning the home's and the standby's checkpoint keys (10.9), then notes."""
    home_key_ = HomeSigner(CLUSTER, SIGNER.seed).key(LEDGER).verifier()
    pinned = {"checkpoint_key": home_key_.encode(), "standby_key": STANDBY_SIGNER.key(LEDGER).verifier().encode()}
    rules = LedgerRules((EPOCH_KIND, "note"), 0, pinned)
    store.submit_entry(Entry.prepare(rules.genesis_content(LEDGER, "admin", "create-1", T0), 0, LIMITS)).result()
    append(store, LEDGER, count - 1)


def replaced_home(tmp_path: Path, repl: ReplicationLedger) -> tuple[list[StreamRecord], SignedCheckpoint]:
    """The old home's store (10 records up to the handover) at ``home-0``, the new home's stream
    in Redis, the promotion named there, and the new home's latest checkpoint (the standby key's
    note of epoch 2, no cosignature yet) as the ledger's latest: the stream and that checkpoint."""
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        handed_over_chain(store, 10)
    new_stream = new_home_stream(tmp_path, repl)
    assert repl.promote(LEDGER, 2, STANDBY) is None
    latest = STANDBY_SIGNER.sign(LEDGER, 12, bytes(32), (f"vledger-epoch 2 {STANDBY}",))
    repl.set_checkpoints({LEDGER: latest.note})
    return new_stream, latest


def assert_left_alone(home: Home, new_stream: list[StreamRecord]) -> None:
    """The replaced home's outbox rewrote nothing of the new home's stream and raised no conflict."""
    assert [(r.height, r.data) for r in home.repl.read(LEDGER, 0, 100)] == [(r.height, r.data) for r in new_stream]
    assert not [a for a in home.repl.open_alerts().values() if a["what"] == "record_conflict"]


def new_home_stream(tmp_path: Path, repl: ReplicationLedger) -> list[StreamRecord]:
    """The stream as the promoted standby wrote it: a chain of its own (12 records), from height 0."""
    with ChainStore(tmp_path / "new-home", origin=STANDBY, clock=lambda: T0) as new_home:
        append(new_home, LEDGER, 12)
        stream = [StreamRecord(LEDGER, h, data, STANDBY) for h, data in new_home.range_raw(LEDGER)]
    repl.add(stream)
    return stream


def test_a_home_proven_replaced_leaves_the_new_homes_stream_and_checkpoint_alone(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    """A home's outbox process hears whether its node owns a ledger only from the node. The
    node hung (SIGSTOP) while its standby was promoted and went on writing: the outbox, still
    running, found the stream longer than its store and rewound it at every heartbeat (its
    alert: "the home rewrote the stream from its store"), cutting the new home's records out
    of the stream the replicas read, until the node woke and learnt of the epoch (PROTOCOL 10.9).
    Redis names the new home, and a witness's note there, the new home's checkpoint signed with
    the standby key the genesis pins and cosigned by the witness (which held the handover record),
    proves it: the outbox leaves the stream, and the new home's latest checkpoint, alone."""
    repl = ReplicationLedger(redis_client)
    new_stream, latest = replaced_home(tmp_path, repl)
    repl.publish_cosignature(LEDGER, "replica-1", 12, WITNESS.cosign(latest, T0 // 1000))
    home = homes(redis_client, SIGNER)
    home.outbox.owns = lambda ledger: True  # what the outbox process last heard from its node
    wait_until(lambda: home.repl.held(LEDGER).get(HOME) == 9, "the outbox reported its head after a pass")
    append(home.store, LEDGER, 1)  # a write the hung node committed but never answered
    wait_until(lambda: home.repl.held(LEDGER).get(HOME) == 10, "and that one too")
    wait_until(lambda: home.outbox.checkpoints.get(LEDGER, SignedCheckpoint("", 0, b"", b"")).size == 11, "signed")
    beats = home.repl.checkpoint_sets
    wait_until(lambda: home.repl.checkpoint_sets >= beats + 2, "two heartbeats after it signed")
    assert_left_alone(home, new_stream)
    assert redis_client.get(repl.checkpoint_key(LEDGER)) == latest.note


@pytest.mark.parametrize("epochs_entry", [None, f"3 {HOME}", ""], ids=["deleted", "naming-the-old-home", "a-string"])
def test_a_home_proven_replaced_leaves_the_stream_alone_whatever_redis_epochs_say(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home], epochs_entry: str | None
) -> None:
    """The outbox process's own guard read only Redis's ``epochs``: with its entry deleted (or
    set to name the old home again), which every ingest node's Redis user may do, a hung home's
    outbox never looked for the witnessed note that proves the handover, and rewound the new
    home's stream to its own store at every heartbeat. The rule is the node's (10.9): the notes
    decide, whatever that hash says."""
    repl = ReplicationLedger(redis_client)
    new_stream, latest = replaced_home(tmp_path, repl)
    repl.publish_cosignature(LEDGER, "replica-1", 12, WITNESS.cosign(latest, T0 // 1000))
    if epochs_entry is None:
        redis_client.hdel(repl.epochs_key, LEDGER)
    elif not epochs_entry:  # the hash made a string (review17 2): no heartbeat reached Redis
        redis_client.delete(repl.epochs_key)
        redis_client.set(repl.epochs_key, "x")
    else:
        redis_client.hset(repl.epochs_key, LEDGER, epochs_entry)
    home = homes(redis_client, SIGNER)
    home.outbox.owns = lambda ledger: True  # what the outbox process last heard from its hung node
    append(home.store, LEDGER, 1)  # a write the hung node committed but never answered
    wait_until(lambda: home.repl.held(LEDGER).get(HOME) == 10, "the outbox reported its head")
    beats = home.repl.checkpoint_sets
    wait_until(lambda: home.repl.checkpoint_sets >= beats + 2, "two heartbeats after")
    assert_left_alone(home, new_stream)
    assert redis_client.get(repl.checkpoint_key(LEDGER)) == latest.note


def test_a_home_replaced_learns_it_from_the_kept_proof_when_a_witness_emptied_its_hash(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    """A witness's Redis user may delete its own note in ``cosig`` (every witness's, when they
    shared one hash): one compromised witness deleted the epoch-2 notes there in a loop, and the
    home it replaced, back, never learnt of the handover and rewound the new home's stream. The
    new home keeps its witnessed checkpoint in ``epoch_proof`` too, which only ingest users
    write (10.9): that proves it."""
    repl = ReplicationLedger(redis_client)
    new_stream, latest = replaced_home(tmp_path, repl)  # latest: the standby key's alone, no proof
    repl.keep_epoch_proof(LEDGER, WITNESS.cosign(latest, T0 // 1000))
    _delete_cosignatures(redis_client, repl)  # the witness's note, deleted
    home = homes(redis_client, SIGNER)
    home.outbox.owns = lambda ledger: True
    append(home.store, LEDGER, 1)
    wait_until(lambda: home.repl.held(LEDGER).get(HOME) == 10, "the outbox reported its head")
    beats = home.repl.checkpoint_sets
    wait_until(lambda: home.repl.checkpoint_sets >= beats + 2, "two heartbeats after")
    assert_left_alone(home, new_stream)


def test_epoch_2_s_home_leaves_its_stream_for_a_witnessed_epoch_3_only_as_its_cluster_file_allows(
    tmp_path: Path, redis_client: Any
) -> None:
    """A thief of the genesis home's key signs epoch 3 at that home and one compromised witness
    cosigns it: epoch 2's home's outbox (its own process, which reads the node's cluster file)
    keeps its stream and checkpoints unless the file allows that failback (10.9, fix31)."""
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as old:
        handed_over_chain(old, 10)
        records = list(old.range(LEDGER))
    with ChainStore(tmp_path / "new-home", origin=STANDBY, clock=lambda: T0) as store:
        store.append_records(records)
        payload = epoch_payload(2, STANDBY, STANDBY_SIGNER.key(LEDGER).verifier())
        content = Content(LEDGER, EPOCH_KIND, payload, "admin", "promote-1", T0 + 100)
        store.submit_entry(Entry.prepare(content, 0, LIMITS)).result()
        repl = ReplicationLedger(redis_client, node=STANDBY)
        back = HomeSigner(CLUSTER, SIGNER.seed).sign(LEDGER, 11, bytes(32), (f"vledger-epoch 3 {HOME}",))
        repl.publish_cosignature(LEDGER, "replica-1", 11, WITNESS.cosign(back, T0 // 1000))
        asked: list[tuple[str, int, str]] = []
        for allowed, expected in ((lambda *a: bool(asked.append(a)), None), (lambda *a: True, (3, HOME))):
            outbox = Outbox(
                STANDBY,
                store,
                None,
                repl,
                SETTINGS,
                witnesses=lambda: [WITNESS.key.verifier()],
                failback_allowed=allowed,
            )
            assert outbox._handover(LEDGER) == expected
        assert asked == [(LEDGER, 3, HOME)]
        default = Outbox(STANDBY, store, None, repl, SETTINGS, witnesses=lambda: [WITNESS.key.verifier()])
        assert default._handover(LEDGER) is None  # given no file: no failback counts


def test_the_new_home_keeps_its_epoch_s_witnessed_checkpoint_where_no_witness_writes(
    tmp_path: Path, redis_client: Any
) -> None:
    """The promoted standby's outbox copies the first checkpoint of its epoch a witness
    cosigned into ``epoch_proof`` (10.9), and keeps it there once the witnesses' hash is emptied."""
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as old:
        handed_over_chain(old, 10)
        records = list(old.range(LEDGER))
    store = ChainStore(tmp_path / "new-home", origin=STANDBY, clock=lambda: T0)
    store.append_records(records)
    payload = epoch_payload(2, STANDBY, STANDBY_SIGNER.key(LEDGER).verifier())
    content = Content(LEDGER, EPOCH_KIND, payload, "admin", "promote-1", T0 + 100)
    store.submit_entry(Entry.prepare(content, 0, LIMITS)).result()
    repl = LoggedReplication(redis_client, node=STANDBY)
    outbox = Outbox(STANDBY, store, None, repl, SETTINGS, witnesses=lambda: [WITNESS.key.verifier()])
    store.on_commit = outbox.committed
    outbox.start()
    try:
        wait_until(lambda: repl.held(LEDGER).get(STANDBY) == 10, "the new home streamed its store")
        mine = STANDBY_SIGNER.sign(LEDGER, 11, bytes(32), (f"vledger-epoch 2 {STANDBY}",))
        repl.publish_cosignature(LEDGER, "replica-2", 11, mine.note)  # no witness's cosignature
        stale = STANDBY_SIGNER.sign(LEDGER, 11, bytes(32))  # no epoch line: not the epoch's
        repl.publish_cosignature(LEDGER, "replica-3", 11, WITNESS.cosign(stale, T0 // 1000))
        beats = repl.checkpoint_sets
        wait_until(lambda: repl.checkpoint_sets >= beats + 2, "two heartbeats after")
        assert redis_client.get(repl.epoch_proof_key(LEDGER)) is None
        witnessed = WITNESS.cosign(mine, T0 // 1000)
        repl.publish_cosignature(LEDGER, "replica-1", 11, witnessed)
        wait_until(lambda: redis_client.get(repl.epoch_proof_key(LEDGER)) == witnessed, "the proof kept")
        _delete_cosignatures(redis_client, repl)
        assert witnessed in repl.epoch_notes(LEDGER)
        # Made a hash (the admin's user may), it failed every read of the notes that prove an
        # epoch (a promotion, each node's look for a handover, the verifier's, repl status), and
        # its home had kept it once for the epoch: read as none, its home sets it again (wt31).
        key = repl.epoch_proof_key(LEDGER)
        pipe = redis_client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, "x", "1")
        pipe.execute()
        assert witnessed not in repl.epoch_notes(LEDGER) or redis_client.type(key) == b"string"
        wait_until(lambda: redis_client.type(key) == b"string", "the proof set again")
        assert repl.epoch_proof(LEDGER) == witnessed and witnessed in repl.epoch_notes(LEDGER)
        raised = [(a["node"], a["ledger"], a["what"], a["raised_by"]) for a in repl.alerts()]
        assert raised == [("redis", key, REDIS_KEY_DAMAGED, STANDBY)]
        assert repl.own_open_alerts() == {}  # resolved once written anew
        # Gone (Redis lost its data, o21 F5): kept again at once, not once per epoch only.
        redis_client.delete(key)
        wait_until(lambda: redis_client.get(key) == witnessed, "the proof kept again")
    finally:
        outbox.stop()
        store.close()


@pytest.mark.parametrize("placer", [HOME, "intruder"], ids=["the-fenced-home-s-record", "another-node-s-record"])
def test_the_new_home_rewrites_the_fenced_home_s_last_append_without_blaming_redis(
    tmp_path: Path, redis_client: Any, placer: str
) -> None:
    """A CI flake of test_standby's takeover: the old home's outbox process, running on for a
    moment after its node was killed, appended that node's record at the height where the
    standby, promoted, then placed its handover record. The new home's first append found the
    entry and rewrote the stream from its store (as it must), but raised ``record_conflict``
    against ``redis``: Redis did not lie, the fenced home's record past its handover is simply
    no part of the ledger (10.9). The order is driven here: the old home's record in the stream
    at the handover height, the standby made home, its handover record committed. A record
    there that another node placed is still the stream's fault, and alerted."""
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as old:
        handed_over_chain(old, 10)
        records = list(old.range(LEDGER))
    with ChainStore(tmp_path / "placer", origin=placer, clock=lambda: T0) as other:
        other.append_records(records)
        append(other, LEDGER, 1)  # its record 10, where the handover goes
        (leftover,) = [data for _, data in other.range_raw(LEDGER, 10)]
    repl = LoggedReplication(redis_client, node=STANDBY)
    repl.add([StreamRecord(LEDGER, r.height, r.encode(), HOME) for r in records])
    repl.add([StreamRecord(LEDGER, 10, leftover, HOME)])  # the killed home's outbox's last append
    store = ChainStore(tmp_path / "new-home", origin=STANDBY, clock=lambda: T0)
    store.append_records(records)
    promoted = threading.Event()
    outbox = Outbox(
        STANDBY, store, None, repl, SETTINGS, witnesses=lambda: [WITNESS.key.verifier()],
        owns=lambda ledger: promoted.is_set(),  # a standby adds nothing to the stream until promoted
    )  # fmt: skip
    store.on_commit = outbox.committed
    outbox.start()
    try:
        promoted.set()
        payload = epoch_payload(2, STANDBY, STANDBY_SIGNER.key(LEDGER).verifier())
        content = Content(LEDGER, EPOCH_KIND, payload, "admin", "promote-1", T0 + 100)
        store.submit_entry(Entry.prepare(content, 0, LIMITS)).result()
        mine = [(h, data, STANDBY if h == 10 else HOME) for h, data in store.range_raw(LEDGER)]
        wait_until(lambda: streamed(repl, LEDGER) == mine, "the stream rewritten from the new home's store")
        alerts = [(a["node"], a["height"], a["found"]) for a in repl.alerts() if a["what"] == "record_conflict"]
        assert alerts == ([] if placer == HOME else [("redis", "10", decode_record(leftover, LIMITS).hash.hex())])
    finally:
        outbox.stop()
        store.close()


@pytest.mark.parametrize("restarted", [False, True], ids=["same-run", "after-a-restart"])
def test_an_old_home_s_record_after_the_new_home_streamed_its_handover_is_still_a_redis_conflict(
    tmp_path: Path, redis_client: Any, restarted: bool
) -> None:
    """Review r15 F-B: the exemption above is for the fenced outbox's last append, which came
    before the new home's first. Here the new home has streamed 10..12 when the replaced home's
    Redis user (it keeps its write selector on the stream) adds its own-origin record at 13,
    before the new home's 13: no fenced outbox left that, so it is raised against ``redis``
    as before sb28, whether the new home's outbox ran all along or was restarted (it then has
    no memory of its run and reads its handover record in the stream instead)."""
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as old:
        handed_over_chain(old, 10)
        records = list(old.range(LEDGER))
    repl = LoggedReplication(redis_client, node=STANDBY)
    repl.add([StreamRecord(LEDGER, r.height, r.encode(), HOME) for r in records])
    store = ChainStore(tmp_path / "new-home", origin=STANDBY, clock=lambda: T0)
    store.append_records(records)
    promoted = threading.Event()

    def new_outbox() -> Outbox:
        made = Outbox(
            STANDBY, store, None, repl, SETTINGS, witnesses=lambda: [WITNESS.key.verifier()],
            owns=lambda ledger: promoted.is_set(),
        )  # fmt: skip
        store.on_commit = made.committed
        return made.start()

    outbox = new_outbox()
    try:
        promoted.set()
        payload = epoch_payload(2, STANDBY, STANDBY_SIGNER.key(LEDGER).verifier())
        handover = Content(LEDGER, EPOCH_KIND, payload, "admin", "p-1", T0 + 100)
        store.submit_entry(Entry.prepare(handover, 0, LIMITS)).result()
        append(store, LEDGER, 2)  # 11, 12
        wait_until(lambda: len(streamed(repl, LEDGER)) == 13, "the new home's 10..12 streamed")
        if restarted:
            outbox.stop()
            outbox = new_outbox()
        with ChainStore(tmp_path / "rogue", origin=HOME, clock=lambda: T0) as rogue:
            rogue.append_records(list(store.range(LEDGER)))
            append(rogue, LEDGER, 1)
            (forged,) = [data for _, data in rogue.range_raw(LEDGER, 13)]
        repl.add([StreamRecord(LEDGER, 13, forged, HOME)])  # the replaced home's user, at the head
        append(store, LEDGER, 1)  # the new home's 13
        mine = [(h, data, STANDBY if h >= 10 else HOME) for h, data in store.range_raw(LEDGER)]
        wait_until(lambda: streamed(repl, LEDGER) == mine, "the stream rewritten from the new home's store")
        alerts = [(a["node"], a["height"], a["found"]) for a in repl.alerts() if a["what"] == "record_conflict"]
        assert alerts == [("redis", "13", decode_record(forged, LIMITS).hash.hex())]
    finally:
        outbox.stop()
        store.close()


def test_a_home_the_standby_key_alone_names_replaced_keeps_its_stream(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    """Outsider F6: the standby's host holds its Redis user and the standby key the genesis pins.
    It names its node the home of epoch 2, writes entries of its own in the stream and sets the
    latest checkpoint to one of epoch 2 it signed itself, with no promotion and no handover
    record. No witness cosigned that epoch (none holds its handover record), so nothing proves
    it: the home rewrites the stream from its store, as for any foreign entry, and signs on."""
    repl = ReplicationLedger(redis_client)
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        handed_over_chain(store, 10)
        repl.add([StreamRecord(LEDGER, h, data, HOME) for h, data in store.range_raw(LEDGER)])
    with ChainStore(tmp_path / "standby", origin=STANDBY, clock=lambda: T0) as other:
        append(other, LEDGER, 12)
        repl.add([StreamRecord(LEDGER, h, data, STANDBY) for h, data in other.range_raw(LEDGER, 10)])
    assert repl.promote(LEDGER, 2, STANDBY) is None  # what HSET ... epochs LEDGER '2 standby' writes
    claim = STANDBY_SIGNER.sign(LEDGER, 12, bytes(32), (f"vledger-epoch 2 {STANDBY}",))
    repl.set_checkpoints({LEDGER: claim.note})
    # Under a witness's name too, cosigned by a key that is not the witness's.
    forged = WitnessSigner(witness_name(CLUSTER, "replica-1"), new_signing_key().seed).cosign(claim, T0 // 1000)
    repl.publish_cosignature(LEDGER, "replica-1", 12, forged)
    home = homes(redis_client, SIGNER)
    wait_until(caught_up(home.repl, home.store), "the stream rewritten from the home's store")
    alerts = [a for a in home.repl.alerts() if a["what"] == "record_conflict"]
    assert [(a["node"], a["ledger"], a["height"]) for a in alerts] == [("redis", LEDGER, "10")]
    append(home.store, LEDGER, 1)
    wait_until(lambda: home.repl.held(LEDGER).get(HOME) == 10, "a new record streamed by the home")
    wait_until(
        lambda: unpacked(LEDGER, redis_client.get(repl.checkpoint_key(LEDGER))).size == 11,
        "the home's own checkpoint the latest again",
    )


def test_a_home_redis_alone_names_replaced_keeps_its_stream(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home]
) -> None:
    """Every ingest node's Redis user may write ``epochs``: a compromised node names itself the
    home of another's ledger and writes entries of its own in the stream. Nothing signed proves
    that epoch (the only note there is signed by a key the genesis does not pin), so the home
    rewrites the stream from its store and says so in an alert, as for any foreign entry."""
    repl = ReplicationLedger(redis_client)
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        handed_over_chain(store, 10)
        repl.add([StreamRecord(LEDGER, h, data, HOME) for h, data in store.range_raw(LEDGER)])
    with ChainStore(tmp_path / "forger", origin="ingest-2", clock=lambda: T0) as other:
        append(other, LEDGER, 12)
        repl.add([StreamRecord(LEDGER, h, data, "ingest-2") for h, data in other.range_raw(LEDGER, 10)])
    assert repl.promote(LEDGER, 2, STANDBY) is None  # what HSET ... epochs LEDGER '2 standby' writes
    forger = HomeSigner(CLUSTER, new_signing_key().seed)
    repl.set_checkpoints({LEDGER: forger.sign(LEDGER, 12, bytes(32), (f"vledger-epoch 2 {STANDBY}",)).note})
    home = homes(redis_client)
    wait_until(caught_up(home.repl, home.store), "the stream rewritten from the home's store")
    alerts = [a for a in home.repl.alerts() if a["what"] == "record_conflict"]
    assert [(a["node"], a["ledger"], a["height"]) for a in alerts] == [("redis", LEDGER, "10")]


# --- checkpoints: a home's outbox with a signing key ------------------------------------------------------


def unpacked(ledger: str, note: bytes) -> SignedCheckpoint:
    """A checkpoint as a stream entry or ``vledger:checkpoints`` holds it, its signature checked."""
    return KEYS.check(ledger, note)


def checkpointed_entries(home: Home, ledger: str) -> dict[int, SignedCheckpoint]:
    """The stream entries of ``ledger`` that carry a checkpoint, by height; each is of the tree up to its entry."""
    found = {}
    for entry in home.repl.read(ledger, 0, 1_000_000):
        if entry.checkpoint:
            checkpoint = unpacked(ledger, entry.checkpoint)
            held = home.store.get(ledger, entry.height)
            assert held is not None and held.encode() == entry.data
            assert (checkpoint.ledger, checkpoint.height) == (ledger, entry.height)
            assert checkpoint.root == home.store.root(ledger, entry.height + 1)
            found[entry.height] = checkpoint
    return found


def latest_checkpoint(home: Home, ledger: str) -> SignedCheckpoint:
    return unpacked(ledger, home.repl.checkpoints()[ledger])


def test_a_home_signs_a_checkpoint_at_the_last_record_of_each_ledger_in_each_batch(
    redis_client: Any, homes: Callable[..., Home]
) -> None:
    feed = FeedLog()
    home = homes(redis_client, SIGNER, feed)
    wait_until(lambda: feed.heads_sent >= 1, "the outbox's first heartbeat")  # it signed the (empty) store
    append(home.store, LEDGER, 5)
    wait_until(caught_up(home.repl, home.store), "the first records streamed")
    append(home.store, OTHER, 2)
    append(home.store, LEDGER, 2)
    wait_until(caught_up(home.repl, home.store), "the next records streamed")

    assert home.repl.appends  # every run the outbox appended carries the checkpoint up to its last record
    for ledger, first, count, note in home.repl.appends:
        checkpoint = unpacked(ledger, note)
        assert (checkpoint.size, checkpoint.root) == (first + count, home.store.root(ledger, first + count))
    assert set(checkpointed_entries(home, LEDGER)) == {
        f + n - 1 for ledger, f, n, _ in home.repl.appends if ledger == LEDGER
    }
    assert {4, 6} <= set(checkpointed_entries(home, LEDGER))  # the last of each group of appends, at least
    assert set(checkpointed_entries(home, OTHER)) >= {1}
    assert latest_checkpoint(home, LEDGER) == HomeSigner(CLUSTER, SIGNER.seed).sign(
        LEDGER, 7, home.store.root(LEDGER, 7)
    )
    assert latest_checkpoint(home, OTHER).height == 1
    assert home.outbox.checkpoints == {LEDGER: latest_checkpoint(home, LEDGER), OTHER: latest_checkpoint(home, OTHER)}
    # The home keeps every checkpoint it signed, and serves one among the records of a range page.
    kept = home.store.checkpoints.all(LEDGER, SIGNED)
    assert {4, 6} <= {c.size - 1 for c in kept} and all(c.root == home.store.root(LEDGER, c.size) for c in kept)
    assert home.outbox.covering(LEDGER, 0, 7) == latest_checkpoint(home, LEDGER).note

    # On the feed each checkpoint follows the records it covers.
    published: dict[str, int] = {}
    checkpoints_sent: set[tuple[str, int]] = set()
    for item in feed.sent:
        if isinstance(item, tuple):
            published[item[0]] = max(published.get(item[0], -1), item[1])
            continue
        for sent in item:
            KEYS.check(sent.ledger, sent.note)
            assert sent.height <= published.get(sent.ledger, -1), f"{sent} before its record"
            checkpoints_sent.add((sent.ledger, sent.height))
    assert {(LEDGER, 4), (LEDGER, 6), (OTHER, 1)} <= checkpoints_sent
    assert [r[1] for r in feed.records if r[0] == LEDGER] == list(range(7))


def test_a_home_without_a_signing_key_streams_no_checkpoint(redis_client: Any, homes: Callable[..., Home]) -> None:
    home = homes(redis_client)
    append(home.store, LEDGER, 4)
    wait_until(caught_up(home.repl, home.store), "the records streamed")
    assert all(note == b"" for _, _, _, note in home.repl.appends)
    assert checkpointed_entries(home, LEDGER) == {} and home.repl.checkpoints() == {} and home.outbox.checkpoints == {}


def test_a_relay_forwards_the_checkpoints_it_is_given_after_the_records(tmp_path: Path) -> None:
    with ChainStore(tmp_path / "relay", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 3)
        records = list(store.range(LEDGER))
        feed = FeedLog()
        settings = ReplicationSettings(heartbeat_ms=50, catch_up_batch=3, max_hops=2)  # a relay republishes
        relay = Outbox("replica-1", store, feed, None, settings, stream=False)  # type: ignore[arg-type]
        signer = HomeSigner(CLUSTER, SIGNER.seed)
        top = signer.sign(LEDGER, 3, store.root(LEDGER, 3))  # the home's, as the follower verified it
        relay.committed(records, 2, [top])
        relay.committed([], 255, [signer.sign(LEDGER, 2, store.root(LEDGER, 2))])  # an older one: kept out
        relay.start()
        relay.stop()
    assert feed.sent[:4] == [(LEDGER, 0, 2), (LEDGER, 1, 2), (LEDGER, 2, 2), [top]]
    assert relay.checkpoints == {LEDGER: top}
    assert [top] in feed.sent[4:]  # and the heartbeat sends it again


@pytest.mark.parametrize(
    ("streamed_before", "checkpointed"),
    [(0, {2, 5, 8, 9}), (4, {6, 9})],
    ids=["redis-never-saw-the-store", "the-stream-lags-the-store"],
)
def test_a_stream_filled_from_the_store_is_checkpointed_chunk_by_chunk(
    tmp_path: Path, redis_client: Any, homes: Callable[..., Home], streamed_before: int, checkpointed: set[int]
) -> None:
    with ChainStore(tmp_path / "home-0", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 10)  # no outbox yet
        repl = ReplicationLedger(redis_client)
        repl.add([StreamRecord(LEDGER, h, data, HOME) for h, data in store.range_raw(LEDGER, 0, streamed_before)])
    home = homes(redis_client, SIGNER)  # the same directory
    wait_until(caught_up(home.repl, home.store), "the stream filled from the store")
    # catch_up_batch is 3: each chunk added from the store carries the checkpoint up to its last record.
    assert set(checkpointed_entries(home, LEDGER)) == checkpointed
    assert [(first, count) for _, first, count, _ in home.repl.appends] == [
        (first, min(3, 10 - first)) for first in range(streamed_before, 10, 3)
    ]
    assert latest_checkpoint(home, LEDGER).height == 9


# --- Redis outages ---------------------------------------------------------------------------------


def test_a_redis_that_comes_up_later_gets_everything_from_the_store(
    own_redis: OwnRedis, homes: Callable[..., Home]
) -> None:
    client = connect(own_redis.url, timeout=0.5)  # nothing listens there yet
    try:
        home = homes(client)
        append(home.store, LEDGER, 6)  # committed and answered although Redis is down
        append(home.store, OTHER, 3)
        assert home.store.size(LEDGER) == 6
        own_redis.start()
        wait_until(caught_up(home.repl, home.store), "the streams filled once Redis answered")
        append(home.store, LEDGER, 2)
        wait_until(caught_up(home.repl, home.store), "and the records after it")
        assert client.xlen(home.repl.stream_key(LEDGER)) == 8
    finally:
        client.close()


@pytest.mark.parametrize("keep_data", [True, False], ids=["redis-kept-its-data", "redis-lost-its-data"])
def test_after_an_outage_the_stream_is_filled_from_the_store(
    own_redis: OwnRedis, homes: Callable[..., Home], keep_data: bool
) -> None:
    own_redis.start()
    client = connect(own_redis.url, timeout=0.5)
    try:
        home = homes(client)
        append(home.store, LEDGER, 4)
        wait_until(caught_up(home.repl, home.store), "the first records streamed")
        own_redis.stop()
        append(home.store, LEDGER, 5)  # while Redis is down
        append(home.store, OTHER, 2)
        own_redis.start(keep_data=keep_data)
        wait_until(caught_up(home.repl, home.store), "the stream filled after the outage")
        assert client.xlen(home.repl.stream_key(LEDGER)) == 9  # nothing twice, nothing missing
        assert home.repl.ledgers() == {LEDGER: HOME, OTHER: HOME}
    finally:
        client.close()


@pytest.mark.parametrize(
    ("keep_data", "refilled"),
    [(True, {6, 9, 11}), (False, {2, 5, 8, 11})],
    ids=["redis-kept-its-data", "redis-lost-its-data"],
)
def test_after_an_outage_the_refilled_stream_is_checkpointed_chunk_by_chunk(
    own_redis: OwnRedis, homes: Callable[..., Home], keep_data: bool, refilled: set[int]
) -> None:
    own_redis.start()
    client = connect(own_redis.url, timeout=0.5)
    feed = FeedLog()
    try:
        home = homes(client, SIGNER, feed)
        append(home.store, LEDGER, 4)
        wait_until(caught_up(home.repl, home.store), "the first records streamed")
        before = set(checkpointed_entries(home, LEDGER))
        assert 3 in before
        own_redis.stop()
        append(home.store, LEDGER, 8)  # while Redis is down
        append(home.store, OTHER, 2)
        wait_until(lambda: len(feed.records) == 14, "the records on the feed, Redis down")  # so not streamed
        own_redis.start(keep_data=keep_data)
        wait_until(caught_up(home.repl, home.store), "the stream filled after the outage")
        # catch_up_batch is 3: every chunk the outbox added from the store carries a checkpoint.
        assert set(checkpointed_entries(home, LEDGER)) == (before | refilled if keep_data else refilled)
        assert set(checkpointed_entries(home, OTHER)) == {1}
        assert latest_checkpoint(home, LEDGER).height == 11 and latest_checkpoint(home, OTHER).height == 1
    finally:
        client.close()


# --- a Redis that answers with errors --------------------------------------------------------------


class FeedLog:
    """Stands for the Publisher: what the outbox put on the feed, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int, int]] = []
        self.heads_sent = 0
        self.sent: list[tuple[str, int, int] | list[SignedCheckpoint]] = []  # records and checkpoints as they went

    def record(self, ledger: str, height: int, data: bytes, hops: int = 1) -> None:
        self.records.append((ledger, height, hops))
        self.sent.append((ledger, height, hops))

    def checkpoints(self, checkpoints: Iterable[SignedCheckpoint]) -> None:
        self.heads_sent += 1
        self.sent.append(list(checkpoints))


def refuse_writes(client: Any) -> None:
    """Redis at its memory limit with no eviction: every write is an OOM error reply, reads still answer."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")


def accept_writes(client: Any) -> None:
    client.config_set("maxmemory", "0")


# Found while writing these tests. REDIS_ERRORS (broker/replication.py) holds the connection
# errors only: an error *reply* (OOM at maxmemory, READONLY, NOPERM, WRONGTYPE) is a
# ResponseError, which the outbox's handlers let through. In the loop it aborts _drain before
# the batch is published, so the feed stops while Redis refuses writes; in the first
# _sync_redis, which _run calls outside its try, it ends the outbox thread for good.


def test_the_feed_goes_on_while_redis_refuses_writes(own_redis: OwnRedis, tmp_path: Path) -> None:
    own_redis.start()
    client = connect(own_redis.url, timeout=0.5)
    feed = FeedLog()
    store = ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0)
    outbox = Outbox(HOME, store, feed, ReplicationLedger(client), SETTINGS)  # type: ignore[arg-type]
    store.on_commit = outbox.committed
    outbox.start()
    try:
        refuse_writes(client)
        append(store, LEDGER, 3)
        wait_until(lambda: len(feed.records) == 3, "the records on the feed, Redis refusing writes", 3.0)
        accept_writes(client)
        wait_until(caught_up(ReplicationLedger(client), store), "the stream filled once Redis accepts writes")
    finally:
        outbox.stop()
        store.close()
        client.close()


def test_an_outbox_started_while_redis_refuses_writes_goes_on(own_redis: OwnRedis, tmp_path: Path) -> None:
    with ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 3)  # the stream lacks these: the first sync must fill it
    own_redis.start()
    client = connect(own_redis.url, timeout=0.5)
    refuse_writes(client)
    feed = FeedLog()
    store = ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0)
    outbox = Outbox(HOME, store, feed, ReplicationLedger(client), SETTINGS)  # type: ignore[arg-type]
    store.on_commit = outbox.committed
    outbox.start()
    try:
        time.sleep(0.2)  # the first sync meets the refusal
        accept_writes(client)
        append(store, LEDGER, 2)
        wait_until(lambda: len(feed.records) == 2, "the new records on the feed", 3.0)
        wait_until(caught_up(ReplicationLedger(client), store), "the stream filled")
    finally:
        outbox.stop()
        store.close()
        client.close()


def test_checkpoint_interval_signs_each_ledger_at_most_that_often_and_then_its_head(tmp_path: Path) -> None:
    with ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0) as store:
        settings = ReplicationSettings(heartbeat_ms=50, catch_up_batch=3, checkpoint_interval_ms=400)
        outbox = Outbox(HOME, store, FeedLog(), None, settings, signer=HomeSigner(CLUSTER, SIGNER.seed))  # type: ignore[arg-type]
        store.on_commit = outbox.committed
        outbox.start()
        try:
            started = time.monotonic()
            for _ in range(5):  # five batches within one interval
                append(store, LEDGER, 3)
            wait_until(lambda: outbox.checkpoints.get(LEDGER) is not None, "a first checkpoint")
            wait_until(lambda: outbox.checkpoints[LEDGER].size == store.size(LEDGER), "the head signed once due")
            assert time.monotonic() - started >= 0.4  # the head waited for the interval
        finally:
            outbox.stop()
        kept = store.checkpoints.all(LEDGER, SIGNED)
        assert len(kept) <= 3, [c.size for c in kept]  # at most one now and one per interval passed
        assert kept[-1].size == 15 and kept[-1].root == store.root(LEDGER, 15)


def test_a_range_page_without_a_kept_checkpoint_gets_one_at_a_multiple_of_256(tmp_path: Path) -> None:
    with ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 300)  # a store from before checkpoints: none kept
        outbox = Outbox(HOME, store, None, None, SETTINGS, signer=HomeSigner(CLUSTER, SIGNER.seed))
        assert outbox.covering(LEDGER, 0, 100) is None  # no multiple of 256 among these: nothing signed
        note = outbox.covering(LEDGER, 200, 300)
        assert note is not None and unpacked(LEDGER, note).size == 256
        assert unpacked(LEDGER, note).root == store.root(LEDGER, 256)
        assert outbox.covering(LEDGER, 250, 260) == note  # kept, served again
        assert outbox.covering(LEDGER, 255, 400) == note
        assert [c.size for c in store.checkpoints.all(LEDGER, SIGNED)] == [256]  # one signature, whatever was asked
        contradiction = StoreContradictsCheckpointError("a rewritten tail", ledger=LEDGER)
        refused = Outbox(
            HOME, store, None, None, SETTINGS, signer=HomeSigner(CLUSTER, SIGNER.seed), refused={LEDGER: contradiction}
        )
        assert refused.covering(LEDGER, 200, 300) is None and refused.sign(LEDGER, 300) is None


def test_a_checkpoint_kept_before_is_reused_and_a_new_size_is_signed_once(tmp_path: Path) -> None:
    """What an earlier run (here with another key: a rotation) signed at a size is served again,
    never signed anew; sizes past every one signed get one row each, whatever asks first."""
    with ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 10)
        earlier = Outbox(HOME, store, None, None, SETTINGS, signer=HomeSigner(CLUSTER, new_signing_key().seed))
        before = earlier.sign(LEDGER, 10)
        assert before is not None
        outbox = Outbox(HOME, store, None, None, SETTINGS, signer=HomeSigner(CLUSTER, SIGNER.seed))
        assert outbox.sign(LEDGER, 10) == before  # its first look at the ledger finds the kept row
        append(store, LEDGER, 5)
        fresh = outbox.sign(LEDGER, 15)
        assert fresh is not None and fresh.note != before.note and unpacked(LEDGER, fresh.note).size == 15
        assert outbox.sign(LEDGER, 15) == fresh and outbox.sign(LEDGER, 10) == before
        assert [(c.size, c.note) for c in store.checkpoints.all(LEDGER, SIGNED)] == [
            (10, before.note),
            (15, fresh.note),
        ]


def test_a_batch_over_many_ledgers_hands_its_signed_rows_to_one_group_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r11 H: a batch's checkpoint rows were handed over one ledger at a time, each waiting
    for a group commit of its own (or HANDOVER_SECONDS): 50 ledgers, 50 waits. Handed together,
    one put's group commit writes them all, and the batch's checkpoints are returned only then."""
    monkeypatch.setattr(checkpoint_log, "HANDOVER_SECONDS", DEADLINE)  # only a group commit ends a wait
    ledgers = [f"ledger-{n:02d}" for n in range(50)]
    with ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0) as store:
        for ledger in ledgers:
            append(store, ledger, 2)
        taken: list[int] = []  # the rows each group commit took
        take = store.checkpoints.take_handed
        monkeypatch.setattr(store.checkpoints, "take_handed", lambda: _noted(take(), taken))
        outbox = Outbox(HOME, store, None, None, SETTINGS, signer=HomeSigner(CLUSTER, SIGNER.seed))
        signed: list[SignedCheckpoint] = []
        batch = threading.Thread(target=lambda: signed.extend(outbox._sign_batch(dict.fromkeys(ledgers, 2))))
        batch.start()
        wait_until(lambda: bool(store.checkpoints._handed), "the batch's rows handed over")
        assert len(store.checkpoints._handed) == len(ledgers)  # all at once, not the first alone
        assert not signed
        append(store, ledgers[0], 1)  # one put: its group commit takes them
        batch.join(DEADLINE)
        assert not batch.is_alive()
        assert [n for n in taken if n] == [len(ledgers)]
        assert sorted(c.ledger for c in signed) == ledgers
        for checkpoint in signed:  # each kept (in that put's fsynced transaction) before it was returned
            assert [c.note for c in store.checkpoints.all(checkpoint.ledger, SIGNED)] == [checkpoint.note]


def _noted(rows: list[Any], counts: list[int]) -> list[Any]:
    counts.append(len(rows))
    return rows


def test_group_commits_within_outbox_interval_go_out_in_one_pass(redis_client: Any, tmp_path: Path) -> None:
    """A lone writer's puts, one group commit each, share the outbox's next pass: one append to
    the stream (one Redis round trip) for all of them, not one each."""
    settings = ReplicationSettings(heartbeat_ms=60_000, outbox_interval_ms=300)
    with ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 1)  # the genesis, streamed by the outbox's first pass
        repl = LoggedReplication(redis_client)
        outbox = Outbox(HOME, store, FeedLog(), repl, settings)  # type: ignore[arg-type]
        store.on_commit = outbox.committed
        outbox.start()
        try:
            wait_until(caught_up(repl, store), "the genesis streamed")
            before = len(repl.appends)
            for _ in range(5):  # five group commits, one record each, well within one interval
                append(store, LEDGER, 1)
            wait_until(caught_up(repl, store), "the five records streamed")
        finally:
            outbox.stop()
        passes = repl.appends[before:]
        assert sum(count for _, _, count, _ in passes) == 5
        assert len(passes) <= 2, passes  # the first may go at once; the others wait for the next pass


def test_a_put_committed_within_outbox_interval_wakes_no_outbox_thread(redis_client: Any, tmp_path: Path) -> None:
    """After a pass the outbox thread sleeps out the interval before it waits for work: a put
    committed meanwhile (on_commit, on the request loop's thread) wakes no thread, which then
    took the GIL from the loop only to go back to sleep; it still goes out at the next pass."""
    gap = 0.4
    settings = ReplicationSettings(heartbeat_ms=60_000, outbox_interval_ms=int(gap * 1000))
    with ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0) as store:
        append(store, LEDGER, 1)  # the genesis, streamed by the outbox's first pass
        repl = LoggedReplication(redis_client)
        outbox = Outbox(HOME, store, FeedLog(), repl, settings)  # type: ignore[arg-type]
        passes: list[float] = []  # when each pass began (its drain)
        woken: list[float] = []  # when each wait for work ended
        drain, wait = outbox._drain, outbox._await
        outbox._drain = lambda: (passes.append(time.monotonic()), drain())[1]  # type: ignore[method-assign]
        outbox._await = lambda seconds: (wait(seconds), woken.append(time.monotonic()))[0]  # type: ignore[method-assign]
        store.on_commit = outbox.committed
        outbox.start()
        try:
            wait_until(caught_up(repl, store), "the genesis streamed")
            committed_at = time.monotonic()
            append(store, LEDGER, 1)  # within the interval after the first pass
            wait_until(caught_up(repl, store), "the put streamed")
        finally:
            outbox.stop()
        assert committed_at < passes[0] + gap, "the put came too late to test the interval"
        # No wait for work ended between the put and the end of the interval: no thread was woken.
        assert not [at for at in woken if committed_at <= at < passes[0] + gap], (passes, woken, committed_at)
        assert passes[1] >= passes[0] + gap


class ReadLogged(LoggedReplication):
    """Notes each read of the stream as well: (ledger, start, count)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.reads: list[tuple[str, int, int]] = []

    def read(self, ledger: str, start: int, count: int, stop: int | None = None) -> list[StreamRecord]:
        self.reads.append((ledger, start, count))
        return super().read(ledger, start, count, stop)


def test_entries_the_outbox_streamed_itself_are_not_read_back_but_others_above_a_run_are(
    redis_client: Any, tmp_path: Path
) -> None:
    """A heartbeat's fill from the store runs ahead of a queue that is behind; the queue's runs
    then find the stream above them. What this outbox added itself is not read back for each
    run (that made each pass slower the further behind it was), while an entry above a run that
    it did not add is still found, and the stream rewritten from the store."""
    settings = ReplicationSettings(heartbeat_ms=60_000, catch_up_batch=8)
    with ChainStore(tmp_path / "home", origin=HOME, clock=lambda: T0) as store:
        repl = ReadLogged(redis_client)
        outbox = Outbox(HOME, store, None, repl, settings)
        store.on_commit = outbox.committed
        # Not started: its passes are run here, one step at a time.
        for _ in range(5):
            append(store, LEDGER, 8)  # queued, 5 group commits
        outbox._sync_redis()  # the heartbeat: fills the stream from the store, ahead of the queue
        outbox._drain()  # each run finds the stream above it
        assert repl.reads == []
        assert streamed(repl, LEDGER) == in_store(store, LEDGER)
        assert redis_client.xlen(repl.stream_key(LEDGER)) == 40  # each height once

        append(store, LEDGER, 1)  # height 40, queued
        data = store.get(LEDGER, 40)
        assert data is not None
        repl.append(LEDGER, HOME, 40, [data.encode(), b"not a record of the home"])
        repl.reads.clear()
        outbox._drain()
        assert repl.reads[0] == (LEDGER, 41, 1)  # only what this outbox did not add
        assert streamed(repl, LEDGER) == in_store(store, LEDGER)  # cut back to the store's chain
        outbox.stop()


class _DamagedFeed(FeedLog):
    """A feed whose sends meet the store's damage, as a pass's reads of the file would."""

    def record(self, ledger: str, height: int, data: bytes, hops: int = 1) -> None:
        raise malformed()


def test_a_pass_that_meets_a_damaged_store_reports_it_and_ends_the_outbox(tmp_path: Path) -> None:
    """Its catch-all logged it and tried again at every pass, for ever; the store is told now
    (ChainStore.damaged: the node's store_damaged alert, and it stops with status 65)."""
    told: list[StoreDamagedError] = []
    with ChainStore(tmp_path / "relay", origin=HOME, clock=lambda: T0) as store:
        store.on_damaged = told.append
        append(store, LEDGER, 3)
        settings = ReplicationSettings(heartbeat_ms=50, catch_up_batch=3, max_hops=2)
        relay = Outbox("replica-1", store, _DamagedFeed(), None, settings, stream=False)  # type: ignore[arg-type]
        relay.committed(list(store.range(LEDGER)), 2)
        relay.start()
        thread = relay._thread
        assert thread is not None
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the outbox ended"
        relay.stop()
    assert len(told) == 1 and "malformed" in told[0].message


def _delete_cosignatures(redis_client: Any, repl: ReplicationLedger) -> None:
    """What a witness's Redis user may do to its own note (each witness's, by one user each)."""
    for key in redis_client.keys(repl.cosig_key(LEDGER, "*")):
        redis_client.delete(key)
