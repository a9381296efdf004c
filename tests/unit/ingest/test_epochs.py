"""ingest/epochs.py and the Follower under EpochKeys: a witness takes the standby's checkpoints
only through the handover record its own store holds, and fences the old home (PROTOCOL 10.9).

Real stores: the home's ChainStore places a ledger whose genesis pins the home's and the
standby's keys; the standby's records are placed after it (origin the standby), the
checkpoints are real notes signed by either key over the real Merkle roots.
"""

from __future__ import annotations

import base64
import functools
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from vledger.broker.feed import FeedCheckpoints, FeedRecord
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.broker.signing import SigningKey, signing_key_paths
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.epochs import EpochBook, Homes, Promotion, ReadEpochs, earlier_epoch, handed_over
from vledger.ingest.follow import Follower, Page
from vledger.ingest.page_check import PageChecker
from vledger.ingest.server import _signing_key
from vledger.ingest.service import Caller, IngestService
from vledger.ingest.standby import first_difference
from vledger.node.checkpoint_log import EVIDENCE, SIGNED
from vledger.node.epoch import EPOCH_KIND, EpochKeys, epoch_payload, handover_request_id
from vledger.node.errors import NotAdminAuthorError, PromotionRefusedError, StoreError, UnknownKindError
from vledger.node.ledger import LedgerRules
from vledger.node.note import VerifierKey
from vledger.node.record import Content, Entry, Record
from vledger.node.rules.admin import Grants
from vledger.node.rules.engine import check_grant
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.tree import Frontier, leaf_hash
from vledger.node.wire import encode_request
from vledger.node.witness import HomeSigner, SignedCheckpoint, WitnessSigner, witness_name

CLUSTER = "test"
LEDGER = "votes"
HOME, STANDBY = "ingest-1", "ingest-2"
T0 = 1_790_000_000_000
HOME_SIGNER = HomeSigner(CLUSTER, bytes(range(32)))
STANDBY_SIGNER = HomeSigner(CLUSTER, bytes(range(1, 33)))
HOME_KEY = HOME_SIGNER.key(LEDGER).verifier()
STANDBY_KEY = STANDBY_SIGNER.key(LEDGER).verifier()
RULES = LedgerRules((EPOCH_KIND, "note"), 0, {"checkpoint_key": HOME_KEY.encode(), "standby_key": STANDBY_KEY.encode()})


def _place(after: Record, kind: str, payload: dict[str, object], origin: str) -> Record:
    content = Content(LEDGER, kind, payload, "admin", f"r-{after.height + 1}", T0 + after.height + 1)
    return Entry.prepare(content, 0, PROTOCOL_LIMITS).place(after.height + 1, after.link, after.accepted + 1, origin)


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Record], list[Record]]:
    """(the ledger as handed over: 5 records of the home, the handover at 5, 3 of the standby;
    the old home's own tail past 4, placed while it was cut off)."""
    with ChainStore(tmp_path_factory.mktemp("home"), origin=HOME, clock=lambda: T0) as store:
        store.create_ledger(Entry.prepare(RULES.genesis_content(LEDGER, "admin", "create", T0), 0, PROTOCOL_LIMITS))
        for i in range(1, 5):
            store.submit_entry(
                Entry.prepare(Content(LEDGER, "note", {"n": i}, "Zoe.1", f"n-{i}", T0 + i), 0, PROTOCOL_LIMITS)
            ).result()
        home = list(store.range(LEDGER))
    handed = [*home, _place(home[-1], EPOCH_KIND, epoch_payload(2, STANDBY, STANDBY_KEY), STANDBY)]
    for i in range(3):
        handed.append(_place(handed[-1], "note", {"after": i}, STANDBY))
    cut_off = _place(home[-1], "note", {"cut off": 1}, HOME)
    return handed, [*home, cut_off, _place(cut_off, "note", {"cut off": 2}, HOME)]


def _root(records: list[Record]) -> bytes:
    frontier = Frontier()
    for r in records:
        frontier.append(leaf_hash(r.encode()))
    return frontier.root()


def _checkpoint(records: list[Record], signer: HomeSigner, extensions: tuple[str, ...] = ()) -> SignedCheckpoint:
    return signer.sign(LEDGER, len(records), _root(records), extensions)


EPOCH_2 = ("vledger-epoch 2 ingest-2",)
WITNESS = WitnessSigner(witness_name(CLUSTER, "replica-1"), bytes(range(3, 35)))


def _witness_keys() -> list[VerifierKey]:
    """The witness keys in force, as the node gives Homes them."""
    return [WITNESS.key.verifier()]


def _witnessed(checkpoint: SignedCheckpoint) -> bytes:
    """``checkpoint``'s note as a witness publishes it in ``cosig``: with its cosignature."""
    return WITNESS.cosign(checkpoint, T0 // 1000)


class Pages:
    """A stream in memory: records by height, each page with the notes of the sizes that end
    among its rows (as the outbox puts a checkpoint on a stream entry)."""

    name = "redis"

    def __init__(self, records: list[Record], notes: list[SignedCheckpoint]) -> None:
        self.records = records
        self.notes = notes

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        rows = [(r.height, r.encode()) for r in self.records[start : start + count]]
        return Page(rows, [n.note for n in self.notes if start < n.size <= start + len(rows)])

    def checkpoints(self) -> dict[str, bytes]:
        return {}


class Witness:
    def __init__(
        self,
        directory: Path,
        sources: list[Pages] | None = None,
        checker: PageChecker | None = None,
        failback_allowed: Callable[[str, int, str], bool] = lambda ledger, number, home: False,
    ) -> None:
        self.store = ChainStore(directory)
        self.book = EpochBook(CLUSTER, self.store)
        self.alerts: list[Alert] = []
        self.follower = Follower(
            "replica-1",
            self.store,
            sources or [],
            keys=EpochKeys(
                CLUSTER,
                lambda ledger: HOME_KEY,
                self.book.history,
                lambda ledger: STANDBY_KEY,
                failback_allowed=failback_allowed,  # the cluster file's word on a failback (10.9)
            ),
            home_of=lambda ledger: HOME,
            on_stored=lambda records, hops: self.book.stored(records),
            on_alert=self.alerts.append,
            batch=2,
            checker=checker,
        )

    def send(self, records: list[Record], checkpoint: SignedCheckpoint, sender: str) -> None:
        self.follower.receive(
            [
                *(FeedRecord(LEDGER, r.height, 1, sender, r.encode()) for r in records),
                FeedCheckpoints(sender, {LEDGER: checkpoint.note}),
            ]
        )

    def held(self) -> list[Record]:
        return list(self.store.range(LEDGER))


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Witness]:
    made = Witness(tmp_path / "replica")
    yield made
    made.store.close()


def test_the_standby_s_checkpoints_are_taken_through_the_handover_record(
    witness: Witness, chains: tuple[list[Record], list[Record]]
) -> None:
    handed, _ = chains
    witness.send(handed[:5], _checkpoint(handed[:5], HOME_SIGNER), HOME)
    assert witness.held() == handed[:5]
    # The new epoch's first checkpoint is ahead of this copy: its run holds the handover, so it is stored.
    witness.send(handed[5:], _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
    assert witness.held() == handed and witness.alerts == []
    history = witness.book.history(LEDGER)
    assert history is not None and (history.current.number, history.current.home, history.current.height) == (
        2,
        STANDBY,
        5,
    )


def test_the_old_home_is_fenced_past_the_handover(witness: Witness, chains: tuple[list[Record], list[Record]]) -> None:
    handed, stale = chains
    witness.send(handed, _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
    assert witness.held() == handed
    # The old home comes back and announces what it placed while cut off, under its own key.
    witness.follower.receive([FeedCheckpoints(HOME, {LEDGER: _checkpoint(stale, HOME_SIGNER).note})])
    assert witness.held() == handed
    assert [(a.what, a.height, a.source) for a in witness.alerts] == [("fenced", len(stale) - 1, HOME)]
    # Its checkpoints of what it placed before the handover still check out.
    assert witness.follower.take_checkpoint(LEDGER, _checkpoint(handed[:5], HOME_SIGNER).note, HOME)


def test_a_standby_checkpoint_without_a_handover_on_the_chain_stores_nothing(
    witness: Witness, chains: tuple[list[Record], list[Record]]
) -> None:
    handed, stale = chains
    witness.send(handed[:5], _checkpoint(handed[:5], HOME_SIGNER), HOME)
    # The standby signs the old home's tail as if it were epoch 2: no handover record in the run.
    witness.send(stale[5:], _checkpoint(stale, STANDBY_SIGNER, EPOCH_2), STANDBY)
    assert witness.held() == handed[:5]
    assert [a.what for a in witness.alerts] == ["bad_epoch"]


def test_the_book_reads_the_epochs_a_reopened_store_holds(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    handed, _ = chains
    with ChainStore(tmp_path / "copy") as store:
        store.append_records(handed)
        history = EpochBook(CLUSTER, store).history(LEDGER)
        assert history is not None and history.current.number == 2 and history.current.key == STANDBY_KEY


def test_epochs_read_by_a_reader_follow_a_copy_cut_back_and_refilled_past_where_they_were_read(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    # The gateway's view: a follower cut back to the handover (node/store_cut.py) and refilled
    # past the 7 records read before, between two looks; the history restarted only for a copy
    # smaller than what was read, so the handover at 5 was never read (review r18, finding 4).
    handed, cut_off = chains
    with ChainStore(tmp_path / "copy") as store:
        store.append_records(cut_off)
        epochs = ReadEpochs(CLUSTER, store)
        first = epochs.history(LEDGER)
        assert first is not None and first.current.number == 1
        with sqlite3.connect(tmp_path / "copy" / DB_NAME) as db:
            db.execute("DELETE FROM records WHERE ledger = ? AND height >= 5", (LEDGER,))
        db.close()
        assert store.roll_back(LEDGER) is not None
        store.append_records(handed[5:])
        assert store.size(LEDGER) > len(cut_off)
        later = epochs.history(LEDGER)
        assert later is not None and later.current.number == 2 and later.current.home == STANDBY


class _NamedEpochs:
    """Redis's ``vledger:epochs`` as ReplicationLedger.epochs gives it (a test's stand-in)."""

    epochs_key = "vledger:{ledgers}:epochs"

    def __init__(self, named: dict[str, tuple[int, str]]) -> None:
        self.named = named
        self.notes: list[bytes] = []  # the latest checkpoint and the witnesses' notes, of any ledger

    def epochs(self) -> dict[str, tuple[int, str]]:
        return dict(self.named)

    def epoch_notes(self, ledger: str) -> list[bytes]:
        return list(self.notes)


def _home_and_standby(tmp_path: Path, ledger: dict[str, object] | None = None) -> ClusterConfig:
    """A cluster of two ingest nodes: LEDGER's home and its standby (or ``ledger``'s table)."""
    return cluster_from_mapping(
        {
            "cluster": {"name": CLUSTER, "default_home": HOME},
            "nodes": {
                HOME: {"role": "ingest", "port": 7001, "pub_port": 7101},
                STANDBY: {"role": "ingest", "port": 7002, "pub_port": 7102},
                "replica-1": {"role": "replica", "port": 7011},  # a standby's epoch needs a witness (10.9)
            },
            "ledgers": {LEDGER: ledger or {"home": HOME, "standby": STANDBY}},
        },
        tmp_path / "cluster.toml",
    )


def test_homes_take_the_newest_epoch_the_store_or_redis_names(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    handed, _ = chains
    config = _home_and_standby(tmp_path)
    with ChainStore(tmp_path / "old-home") as store:
        store.append_records(handed[:5])  # the old home: cut off before the handover reached it
        redis = _NamedEpochs({})
        homes = Homes(config, EpochBook(CLUSTER, store), redis, witnesses=_witness_keys)  # type: ignore[arg-type]
        homes.refresh()
        assert homes.home_of(LEDGER).name == HOME
        redis.named[LEDGER] = (2, STANDBY)  # the standby was promoted meanwhile, or any node's user wrote so
        homes.refresh()
        assert homes.home_of(LEDGER).name == HOME  # nothing signed proves it yet
        redis.notes.append(_witnessed(_checkpoint(handed, HOME_SIGNER, EPOCH_2)))
        homes.refresh()
        assert homes.home_of(LEDGER).name == HOME  # signed by the key of the epoch it would end
        redis.notes.append(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2).note)
        homes.refresh()  # the standby key's alone: its host could sign it with no handover (outsider F6)
        assert homes.home_of(LEDGER).name == HOME
        redis.notes.append(_witnessed(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2)))
        homes.refresh()  # the new home's checkpoint as a witness cosigned it once it held the handover
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((2, STANDBY), STANDBY)
    with ChainStore(tmp_path / "copy") as store:
        store.append_records(handed)  # its own records name epoch 2, whatever Redis says
        homes = Homes(config, EpochBook(CLUSTER, store), _NamedEpochs({}), witnesses=_witness_keys)  # type: ignore[arg-type]
        assert homes.epoch_of(LEDGER) == (2, STANDBY)
        assert homes.home_of("other").name == HOME  # no epoch of it anywhere: the cluster file's home


def test_a_handover_is_found_and_kept_whatever_redis_s_epochs_hash_says_of_it(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """Any ingest node's Redis user may delete the ledger's entry in ``epochs``: a home cut off
    during the promotion that starts after that still reads the notes now and then and finds
    the witnessed epoch; and one proven is kept when the entry goes."""
    handed, _ = chains
    config = _home_and_standby(tmp_path)
    with ChainStore(tmp_path / "old-home") as store:
        store.append_records(handed[:5])  # no handover record
        redis = _NamedEpochs({})
        redis.notes.append(_witnessed(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2)))
        homes = Homes(config, EpochBook(CLUSTER, store), redis, witnesses=_witness_keys)  # type: ignore[arg-type]
        homes.refresh()
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((2, STANDBY), STANDBY)
    with ChainStore(tmp_path / "old-home-2") as store:
        store.append_records(handed[:5])
        redis = _NamedEpochs({LEDGER: (2, STANDBY)})
        redis.notes.append(_witnessed(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2)))
        homes = Homes(config, EpochBook(CLUSTER, store), redis, witnesses=_witness_keys)  # type: ignore[arg-type]
        homes.refresh()
        assert homes.home_of(LEDGER).name == STANDBY
        redis.named.clear()  # the entry deleted, and the witnesses' notes emptied
        redis.notes.clear()
        homes._look_at = 0.0  # due to look again
        homes.refresh()
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((2, STANDBY), STANDBY)


def test_a_home_back_while_the_epochs_hash_is_made_a_string_still_finds_the_handover_it_is_fenced_by(
    tmp_path: Path, chains: tuple[list[Record], list[Record]], redis_client: Any
) -> None:
    """Any ingest node's Redis user may SET ``{ledgers}:epochs`` (review17 2): each refresh then
    stopped at its read, never looked at the notes, and the old home that came back during the
    handover stayed the ledger's home for its clients. The hash reads as it last did, and the
    witnessed note fences it all the same; one proven before stays proven."""
    handed, _ = chains
    config = _home_and_standby(tmp_path)
    redis = ReplicationLedger(redis_client)
    redis.promote(LEDGER, 2, STANDBY)
    redis_client.delete(redis.epochs_key)
    redis_client.set(redis.epochs_key, "x")
    witnessed = _checkpoint(handed, STANDBY_SIGNER, EPOCH_2)
    redis.publish_cosignature(LEDGER, "replica-1", witnessed.size, _witnessed(witnessed))
    with ChainStore(tmp_path / "old-home") as store:
        store.append_records(handed[:5])  # no handover record
        homes = Homes(config, EpochBook(CLUSTER, store), redis, witnesses=_witness_keys)
        homes.refresh()
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((2, STANDBY), STANDBY)
        homes._look_at = 0.0  # due to look again: nothing read changes what is proven
        homes.refresh()
        assert homes.home_of(LEDGER).name == STANDBY


def test_a_node_that_holds_no_copy_takes_a_handover_only_once_a_witnessed_note_proves_it(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """A node that does not hold the ledger has no genesis to check Redis's ``epochs`` by, and
    only sends its writes on (``not_home`` names the home): it keeps the cluster file's home
    until a witness's note proves the handover to the file's standby, signed by the standby's
    key file (``<standby>.sign.pub``), as the verifier and ``vledger repl status`` do. Any
    ingest node's Redis user may write ``epochs``: before, one HSET sent every other node's
    clients of the ledger to the node it named."""
    handed, _ = chains
    config = _home_and_standby(tmp_path)
    config.keys_dir.mkdir(parents=True, exist_ok=True)
    signing_key_paths(config.keys_dir, STANDBY)[1].write_text(SigningKey(bytes(range(1, 33))).public.pem())
    with ChainStore(tmp_path / "elsewhere") as store:  # holds nothing of LEDGER
        redis = _NamedEpochs({LEDGER: (2, "replica-1")})
        homes = Homes(config, EpochBook(CLUSTER, store), redis, witnesses=_witness_keys)  # type: ignore[arg-type]
        homes.refresh()
        assert homes.home_of(LEDGER).name == HOME  # a claim only: the cluster file's home
        redis.named[LEDGER] = (2, STANDBY)
        redis.notes.append(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2).note)
        homes.refresh()
        assert homes.home_of(LEDGER).name == HOME  # the standby key's alone proves nothing
        redis.notes.append(_witnessed(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2)))
        homes.refresh()
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((2, STANDBY), STANDBY)
        redis.named[LEDGER] = (3, "replica-1")  # a later claim again: the proven epoch stays
        homes.refresh()
        assert homes.home_of(LEDGER).name == STANDBY


def test_a_home_kept_between_puts_follows_the_handover_the_store_takes_and_a_promotion(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """Homes keeps each ledger's home between calls: the handover record stored after it (told
    to the book by the store's on_commit, as the node wires it) and a promotion this node makes
    change the answer at once."""
    handed, _ = chains
    config = _home_and_standby(tmp_path)
    with ChainStore(tmp_path / "copy") as store:
        book = EpochBook(CLUSTER, store)
        store.on_commit = book.stored
        homes = Homes(config, book, _NamedEpochs({}), witnesses=_witness_keys)  # type: ignore[arg-type]
        assert homes.home_of(LEDGER).name == HOME  # not held yet: the cluster file's home
        store.append_records(handed[:5])
        assert homes.home_of(LEDGER).name == HOME
        assert homes.home_of(LEDGER).name == HOME  # kept
        store.append_records(handed[5:])  # the handover to the standby, and its records
        assert homes.home_of(LEDGER).name == STANDBY
        homes.named(LEDGER, 3, HOME)  # this node promoted itself again
        assert homes.home_of(LEDGER).name == HOME


def test_a_catch_up_fences_the_old_home_right_after_the_handover_s_page(
    tmp_path: Path, chains: tuple[list[Record], list[Record]], checker: PageChecker | None
) -> None:
    """Pages of 2: the run holding the handover goes to the store (and the book) before the
    next page's notes are checked, so the old home's note over its own tail, in that page, is
    fenced, as on the feed, and the standby's records are stored."""
    handed, stale = chains
    notes = [
        _checkpoint(handed[:2], HOME_SIGNER),
        _checkpoint(handed[:4], HOME_SIGNER),
        _checkpoint(handed[:6], STANDBY_SIGNER, EPOCH_2),
        _checkpoint(stale, HOME_SIGNER),
        _checkpoint(handed, STANDBY_SIGNER, EPOCH_2),
    ]
    assert len(stale) == 7 and len(handed) == 9  # the old home's note comes in the page after the handover's
    witness = Witness(tmp_path / "replica", [Pages(handed, notes)], checker)
    try:
        assert witness.follower.catch_up(LEDGER, len(handed))
        assert witness.held() == handed
        assert [(a.what, a.height, a.source) for a in witness.alerts] == [("fenced", len(stale) - 1, "redis")]
    finally:
        witness.store.close()


class _Reader:
    def lookup(self, key: str) -> Caller | None:
        return Caller("Zoe.1", "writer", key)


def test_a_replaced_home_answers_the_ledger_s_reads_with_not_home_naming_the_new_home(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """The old home came back holding records it placed while cut off, past the handover (not
    the ledger's, 10.9): every read of the ledger is answered not_home naming the new home, as
    its writes are; the standby, which follows its home, goes on serving them."""
    handed, cut_off = chains
    config = _home_and_standby(tmp_path)
    with ChainStore(tmp_path / "old-home") as store:
        store.append_records(cut_off)
        homes = Homes(config, EpochBook(CLUSTER, store), _NamedEpochs({}), witnesses=_witness_keys)  # type: ignore[arg-type]
        service = IngestService(
            config,
            config.nodes[HOME],
            store,
            _Reader(),
            None,  # type: ignore[arg-type]
            {STANDBY: "standby-key"},
            homes=homes.home_of,
            replaced=functools.partial(homes.replaced, name=HOME),
        )

        def call(cmd: str, args: dict[str, Any]) -> dict[str, Any]:
            reply: dict[str, Any] = msgpack.unpackb(service.handle("k", encode_request(1, cmd, args)), raw=False)
            return reply

        assert call("size", {"ledger": LEDGER})["result"] == {"size": len(cut_off)}  # epoch 1: its own
        assert call("have", {"hashes": [cut_off[-1].link]})["result"] == {"have": [cut_off[-1].link]}
        homes.named(LEDGER, 2, STANDBY)  # Redis names the promoted standby (read every second)
        assert homes.replaced(LEDGER, HOME) and not homes.replaced(LEDGER, STANDBY)
        reads: list[tuple[str, dict[str, Any]]] = [
            ("size", {"ledger": LEDGER}),
            ("head", {"ledger": LEDGER}),
            ("get", {"ledger": LEDGER, "height": len(cut_off) - 1}),
            ("get", {"hash": cut_off[-1].link}),
            ("range", {"ledger": LEDGER, "start": 0}),
            ("checkpoint", {"ledger": LEDGER}),
            ("proof.inclusion", {"ledger": LEDGER, "index": 0, "size": 1}),
            ("proof.consistency", {"ledger": LEDGER, "old": 1, "new": 2}),
        ]
        for cmd, args in reads:
            error = call(cmd, args)["error"]
            assert error["code"] == "not_home", (cmd, error)
            assert error["home"] == {"node": STANDBY, "endpoint": config.nodes[STANDBY].endpoint, "key": "standby-key"}
            assert "replaced" in error["message"]
        assert call("ledger.list", {})["result"] == {"ledgers": []}  # its copy is not the ledger's
        assert call("have", {"hashes": [cut_off[-1].link]})["result"] == {"have": []}
    with ChainStore(tmp_path / "standby") as store:
        store.append_records(handed[:5])  # the standby, following: its reads are the ledger's
        homes = Homes(config, EpochBook(CLUSTER, store), _NamedEpochs({}), witnesses=_witness_keys)  # type: ignore[arg-type]
        assert not homes.replaced(LEDGER, STANDBY) and not homes.replaced(LEDGER, HOME)


def test_a_copy_on_a_fenced_tail_refuses_the_new_epoch_s_note_and_accuses_no_home_of_equivocation(
    witness: Witness, chains: tuple[list[Record], list[Record]]
) -> None:
    """A copy that stored the old home's tail (placed while it was cut off, checkpointed by its
    key before the copy knew of any handover) then gets the new epoch's checkpoint of the same
    size, another root. The old home's note agrees with the copy, but no home signed two trees:
    before, it was kept as equivocation against the home. The copy's records open no epoch 2,
    so by 10.9 the note is refused as bad_epoch, naming who sent it."""
    handed, stale = chains
    witness.send(stale, _checkpoint(stale, HOME_SIGNER), HOME)
    assert witness.held() == stale
    new_epoch = _checkpoint(handed[: len(stale)], STANDBY_SIGNER, EPOCH_2)
    witness.follower.receive([FeedCheckpoints(STANDBY, {LEDGER: new_epoch.note})])
    assert [(a.what, a.source, a.height) for a in witness.alerts] == [("bad_epoch", STANDBY, len(stale) - 1)]
    assert witness.store.checkpoints.all(LEDGER, EVIDENCE) == []


def test_a_note_of_another_epoch_is_no_proof_that_the_home_signed_two_trees(
    witness: Witness, chains: tuple[list[Record], list[Record]]
) -> None:
    """The reviewer's finding on follow.py's proof: the largest note heard of (``best``) is
    used without being checked again, and may be one the standby's key signed as epoch 2 that
    was never confirmed (taken ahead of the store, its run then refused). Its root is the copy's,
    but it is not the home's: a home note that contradicts the copy is then no equivocation,
    and the copy names itself."""
    _, stale = chains
    witness.send(stale, _checkpoint(stale, HOME_SIGNER), HOME)
    state = witness.follower._state(LEDGER)
    state.vouched = None  # as after the store was vouched for below: only ``best`` is in memory
    state.best = _checkpoint(stale, STANDBY_SIGNER, EPOCH_2)  # never confirmed: no handover in stale
    other = _place(stale[-2], "note", {"another": 1}, HOME)
    witness.follower.receive([FeedCheckpoints(HOME, {LEDGER: _checkpoint([*stale[:-1], other], HOME_SIGNER).note})])
    assert [(a.what, a.source) for a in witness.alerts] == [("store_contradicts_checkpoint", "replica-1")]


def test_a_standby_s_note_with_no_handover_among_the_records_held_is_refused_not_held_against_the_copy(
    witness: Witness, chains: tuple[list[Record], list[Record]]
) -> None:
    """The standby's pinned key signs, as epoch 2, a tree of a size this copy holds (any root):
    a note of an epoch ahead of the store passes the key check only for records not stored yet.
    Here the store holds every record up to it and no handover among them: the note is refused
    (bad_epoch, naming who sent it), and neither the copy nor the home is blamed."""
    handed, _ = chains
    witness.send(handed[:5], _checkpoint(handed[:5], HOME_SIGNER), HOME)
    bogus = STANDBY_SIGNER.sign(LEDGER, 4, bytes(range(32)), EPOCH_2)
    witness.follower.receive([FeedCheckpoints(STANDBY, {LEDGER: bogus.note})])
    assert [(a.what, a.source, a.height) for a in witness.alerts] == [("bad_epoch", STANDBY, 3)]
    assert witness.held() == handed[:5]
    # Still following: the home's next records and checkpoint are stored.
    witness.alerts.clear()
    witness.send(handed[5:], _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
    assert witness.held() == handed and witness.alerts == []


def _standby_store(directory: Path, rules: LedgerRules, *, taken: str | None = None, **kwargs: Any) -> ChainStore:
    """The standby's copy of a ledger of ``rules``: the home's genesis and 4 notes, and with
    ``taken`` a fifth, by the admin, under that request id; ``kwargs`` the standby store's
    (its clock, its accepted floor)."""
    home = ChainStore(directory / "home", origin=HOME, clock=lambda: T0)
    with home:
        home.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "create", T0), 0, PROTOCOL_LIMITS))
        for i in range(1, 6 if taken else 5):
            author, request_id = ("admin", taken) if i == 5 and taken else ("Zoe.1", f"n-{i}")
            content = Content(LEDGER, "note", {"n": i}, author, request_id, T0 + i)
            home.submit_entry(Entry.prepare(content, 0, PROTOCOL_LIMITS)).result()
        records = list(home.range(LEDGER))
    store = ChainStore(directory / "standby", origin=STANDBY, **kwargs)
    store.append_records(records)
    return store


def _promotion(
    config: ClusterConfig, store: ChainStore, redis: ReplicationLedger, grants: Grants | None = None
) -> tuple[Promotion, Homes]:
    homes = Homes(config, EpochBook(CLUSTER, store), redis, witnesses=_witness_keys)
    return Promotion(config, STANDBY, homes, redis, {}, STANDBY_KEY.public_key, grants=lambda: grants), homes


def test_a_standby_whose_clock_is_behind_the_admin_home_s_takes_a_new_admin_s_promotion(
    tmp_path: Path, redis_client: Any
) -> None:
    """r20 F5: the standby checked its handover by its own clock before placing it; a clock
    behind the admin home's by more than the admin's age judged an honest admin's promotion
    not_admin_author. It judges it at the time the store places it, past every admin record the
    node applied (16.2's floor): the record observers then read is after the admin's making, so
    their rule (by ``accepted``) passes it. A forging author is still refused."""
    grants = Grants()
    grants.opened = T0 - 5_000  # the admin ledger, by the admin home's clock
    grants.set_admin("boss", True, T0 + 1_000)  # a new admin, stamped ahead of the standby's clock
    grants.last_accepted = T0 + 1_000
    config = _home_and_standby(tmp_path)
    redis = ReplicationLedger(redis_client)
    redis_client.hset(redis.ledgers_key, LEDGER, HOME)
    slow = {"clock": lambda: T0 + 10, "accepted_floor": lambda: grants.last_accepted + 1}
    with _standby_store(tmp_path, RULES, **slow) as store:
        promotion, _ = _promotion(config, store, redis, grants)
        with pytest.raises(NotAdminAuthorError):  # never an admin: refused, Redis untouched
            promotion.promote(LEDGER, "mallory", T0 + 10, store.append)
        assert redis.epochs() == {} and store.size(LEDGER) == 5
        promotion.promote(LEDGER, "boss", T0 + 10, store.append)
        handover = store.get(LEDGER, 5)
        assert handover is not None and handover.content.kind == EPOCH_KIND
        assert handover.accepted == T0 + 1_001 and redis.epochs()[LEDGER] == (2, STANDBY)
        check_grant(grants, handover)  # what every observer judges it by
        grants.set_admin("boss", False, T0 + 3_000)  # disabled: a forged handover after it is flagged
        with pytest.raises(NotAdminAuthorError):
            check_grant(grants, _at(handover, T0 + 3_001))


def _at(record: Record, accepted: int) -> Record:
    """``record`` as a home would have placed it at ``accepted``."""
    return Entry(record.content, record.content_bytes, record.checksum, record.nonce).place(
        record.height, record.prev, accepted, record.origin
    )


def test_a_handover_that_cannot_be_placed_is_undone_and_the_standby_is_no_home(
    tmp_path: Path, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Outsider 32 R1: Redis named the standby (10.9 step 3) and the standby took itself for the
    home at once; its handover record then failed (step 4) and it answered writes on a fork.
    Here the store fails to place the record (a store error): Redis names the old epoch again,
    and the standby is no home."""
    config = _home_and_standby(tmp_path)
    redis = ReplicationLedger(redis_client)
    redis_client.hset(redis.ledgers_key, LEDGER, HOME)  # as the home's outbox announced it

    def failing(entry: Entry) -> Record:
        raise StoreError("disk I/O error")

    with _standby_store(tmp_path, RULES) as store:
        promotion, homes = _promotion(config, store, redis)
        with pytest.raises(StoreError):
            promotion.promote(LEDGER, "admin", T0 + 100, failing)
        assert redis.epochs() == {} and redis.ledgers()[LEDGER] == HOME
        homes.refresh()
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((1, HOME), HOME)
        assert store.size(LEDGER) == 5
        assert "could not place the handover record of votes (epoch 2" in caplog.text
        assert "promoted to home" not in caplog.text

    # The undo is a compare-and-set: it never touches a later promotion's entry.
    assert redis.promote(LEDGER, 2, STANDBY) is None
    redis_client.hset(redis.epochs_key, LEDGER, "3 ingest-3")
    assert not redis.unpromote(LEDGER, 2, STANDBY, (1, HOME)) and redis.epochs()[LEDGER] == (3, "ingest-3")
    assert redis.unpromote(LEDGER, 3, "ingest-3", (2, STANDBY)) and redis.epochs()[LEDGER] == (2, STANDBY)


def test_a_request_id_epoch_2_already_held_blocks_no_promotion(tmp_path: Path, redis_client: Any) -> None:
    """ho32: the handover's request id was always ``epoch-<e>``: a record of the ledger by the
    same admin under that id (written before clients were refused the prefix) made every
    promotion to that epoch fail request_conflict, for good. The node picks the next free id."""
    config = _home_and_standby(tmp_path)
    redis = ReplicationLedger(redis_client)
    redis_client.hset(redis.ledgers_key, LEDGER, HOME)
    with _standby_store(tmp_path, RULES, taken="epoch-2") as store:
        promotion, _ = _promotion(config, store, redis)
        promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        handover = store.get(LEDGER, 6)
        assert handover is not None and handover.content.kind == EPOCH_KIND
        assert handover.content.request_id == "epoch-2.2" and redis.epochs()[LEDGER] == (2, STANDBY)
    assert handover_request_id(3, lambda taken: False) == "epoch-3"
    assert handover_request_id(3, {"epoch-3", "epoch-3.2"}.__contains__) == "epoch-3.3"


def test_a_handover_that_breaks_a_rule_is_refused_before_redis_names_the_standby(
    tmp_path: Path, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The handover record is checked by the rules it will meet before Redis names the standby
    (10.9 step 2): a genesis that lists no kind ``epoch`` refuses it, and Redis never named the
    standby (nothing to undo)."""
    config = _home_and_standby(tmp_path)
    redis = ReplicationLedger(redis_client)
    rules = LedgerRules(("note",), 0, RULES.rules)
    with _standby_store(tmp_path, rules) as store:
        promotion, homes = _promotion(config, store, redis)
        with pytest.raises(UnknownKindError):
            promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        assert redis.epochs() == {} and store.size(LEDGER) == 5
        assert "could not place" not in caplog.text and homes.home_of(LEDGER).name == HOME


@pytest.mark.parametrize("claim", ["x", "999 ingest-3", "0999 ingest-3", "7 ingest 3", "2 ingest-1", "2 ingest-3"])
def test_an_epochs_entry_nothing_proves_blocks_no_promotion(
    tmp_path: Path, redis_client: Any, caplog: pytest.LogCaptureFixture, claim: str
) -> None:
    """review18 3: every ingest node's Redis user may HSET ``{ledgers}:epochs``. A value that is no
    ``<epoch> <home>`` failed the promotion's script; a made-up high epoch refused every
    promotion, though no witnessed note proves it. The first counts as no entry; the second is
    replaced by a compare-and-set on exactly it. So is one of the very epoch the standby opens
    naming a node whose keys are not the pinned standby key (fix18a: the old home, or a node of
    no key file): no promotion of it could be cosigned."""
    config = _home_and_standby(tmp_path)
    config.keys_dir.mkdir(parents=True, exist_ok=True)
    signing_key_paths(config.keys_dir, HOME)[1].write_text(SigningKey(bytes(range(32))).public.pem())
    redis = ReplicationLedger(redis_client)
    redis_client.hset(redis.epochs_key, LEDGER, claim)
    with _standby_store(tmp_path, RULES) as store:
        promotion, homes = _promotion(config, store, redis)
        promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        assert redis.epochs()[LEDGER] == (2, STANDBY) and store.size(LEDGER) == 6
        assert homes.epoch_of(LEDGER) == (2, STANDBY)
    assert ("which no witnessed note proves" in caplog.text) == (claim[0].isdigit() and claim != "7 ingest 3")


def test_an_epochs_entry_of_the_same_epoch_or_a_proven_one_refuses_the_promotion(
    tmp_path: Path, redis_client: Any, chains: tuple[list[Record], list[Record]]
) -> None:
    """What stays of the compare-and-set (10.9): an entry of the epoch the standby would open,
    naming a node whose key files hold the pinned standby key, is another promotion of it under
    way (one winner per epoch), and one past it that a witnessed note proves is a handover this
    store lacks; the replacement takes only the entry it found."""
    handed, _ = chains
    config = _home_and_standby(tmp_path)
    config.keys_dir.mkdir(parents=True, exist_ok=True)  # ingest-3 holds the standby's key as well
    signing_key_paths(config.keys_dir, "ingest-3")[1].write_text(SigningKey(bytes(range(1, 33))).public.pem())
    redis = ReplicationLedger(redis_client)
    with _standby_store(tmp_path, RULES) as store:
        promotion, _ = _promotion(config, store, redis)
        redis_client.hset(redis.epochs_key, LEDGER, "2 ingest-3")
        with pytest.raises(PromotionRefusedError, match="Redis names epoch 2 of 'votes' at ingest-3"):
            promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        redis_client.hset(redis.epochs_key, LEDGER, "3 ingest-3")
        proof = _witnessed(_checkpoint(handed, HOME_SIGNER, ("vledger-epoch 3 ingest-3",)))
        redis_client.set(redis.epoch_proof_key(LEDGER), proof)
        with pytest.raises(PromotionRefusedError, match="a witnessed note proves epoch 3 of 'votes' at ingest-3"):
            promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        assert redis.epochs()[LEDGER] == (3, "ingest-3") and store.size(LEDGER) == 5
    # Another promotion replaced the entry first: the second finds its own, and loses.
    redis_client.hset(redis.epochs_key, LEDGER, "2 ingest-1")
    assert redis.promote(LEDGER, 2, STANDBY, replacing=(999, "ingest-3")) == (2, "ingest-1")
    assert redis.epochs()[LEDGER] == (2, "ingest-1")


def test_a_standby_whose_store_lost_its_own_handover_is_not_promoted_into_the_same_epoch_again(
    tmp_path: Path, redis_client: Any, chains: tuple[list[Record], list[Record]]
) -> None:
    """Review r19 1: the standby was promoted (epoch 2) and a witness cosigned its epoch-2
    checkpoint; then its store was put back from a copy older than its handover. Promoted again,
    Redis's entry is its own ``"2 <standby>"``, which the script takes as this very promotion:
    a second handover of epoch 2 was placed, and the standby's key would sign epoch-2 trees
    contradicting the cosigned one. The witnessed note refuses it, whatever the entry says."""
    handed, _ = chains
    config = _home_and_standby(tmp_path)
    redis = ReplicationLedger(redis_client)
    redis_client.hset(redis.epochs_key, LEDGER, f"2 {STANDBY}")  # the first promotion's entry
    redis_client.set(redis.epoch_proof_key(LEDGER), _witnessed(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2)))
    with _standby_store(tmp_path, RULES) as store:  # 5 records of epoch 1: no handover
        promotion, _ = _promotion(config, store, redis)
        with pytest.raises(PromotionRefusedError, match="a witnessed note proves epoch 2 of 'votes' at ingest-2"):
            promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        assert store.size(LEDGER) == 5 and redis.epochs()[LEDGER] == (2, STANDBY)


def test_an_old_home_takes_the_handover_the_other_nodes_notes_prove_when_redis_holds_none(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """Review r19 5: the old home's start check gathers every node's newest checkpoint, and a
    witness's carries the new epoch's, cosigned; Homes proved epochs from Redis's notes alone.
    Restarted while Redis held none (it lost its data), the fenced home took writes as home
    until a witness cosigned again and Homes looked again."""
    handed, _ = chains
    config = _home_and_standby(tmp_path)
    with ChainStore(tmp_path / "old-home") as store:
        store.append_records(handed[:5])  # no handover record
        homes = Homes(config, EpochBook(CLUSTER, store), _NamedEpochs({}), witnesses=_witness_keys)  # type: ignore[arg-type]
        homes.refresh()
        assert homes.home_of(LEDGER).name == HOME  # Redis lost everything
        homes.take_notes({LEDGER: [_checkpoint(handed, STANDBY_SIGNER, EPOCH_2).note], "other": [b"x"]})
        assert homes.home_of(LEDGER).name == HOME  # the standby key's alone proves nothing (outsider F6)
        homes.take_notes({LEDGER: [_witnessed(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2))]})
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((2, STANDBY), STANDBY)
        homes._look_at = 0.0  # Redis read again, still empty: the proven epoch stays
        homes.refresh()
        assert homes.home_of(LEDGER).name == STANDBY


def test_the_genesis_home_named_standby_fails_back_into_epoch_3_once_the_admin_confirms_its_key(
    tmp_path: Path, redis_client: Any, chains: tuple[list[Record], list[Record]]
) -> None:
    """A failback (10.9): after epoch 2, the cluster file names the old home the standby (and
    epoch 2's home the home). Its promotion was refused for good: the genesis does not pin its
    key as standby_key. Epoch 3 signs with the key the genesis pins as checkpoint_key, which is
    the old home's: it opens epoch 3, once the admin confirms that key was not stolen (it gives
    that key the pen again)."""
    handed, _ = chains
    swapped = cluster_from_mapping(
        {
            "cluster": {"name": CLUSTER, "default_home": STANDBY},
            "nodes": {
                HOME: {"role": "ingest", "port": 7001, "pub_port": 7101},
                STANDBY: {"role": "ingest", "port": 7002, "pub_port": 7102},
                "replica-1": {"role": "replica", "port": 7011},
            },
            "ledgers": {LEDGER: {"home": STANDBY, "standby": HOME}},
        },
        tmp_path / "cluster.toml",
    )
    redis = ReplicationLedger(redis_client)
    redis_client.hset(redis.ledgers_key, LEDGER, STANDBY)
    with ChainStore(tmp_path / "old-home", origin=HOME) as store:
        store.append_records(handed)  # it came back and followed epoch 2 as the standby
        book = EpochBook(CLUSTER, store)
        store.on_commit = book.stored  # as the node wires it
        homes = Homes(swapped, book, redis, witnesses=_witness_keys)
        promotion = Promotion(swapped, HOME, homes, redis, {}, HOME_KEY.public_key)
        with pytest.raises(PromotionRefusedError, match="was not stolen"):
            promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        assert redis.epochs() == {} and store.size(LEDGER) == len(handed)
        # Another node with the file naming it standby holds neither key of epoch 3.
        wrong_key = Promotion(swapped, HOME, homes, redis, {}, STANDBY_KEY.public_key)
        with pytest.raises(PromotionRefusedError, match="pins as checkpoint_key, which is not ingest-1's"):
            wrong_key.promote(LEDGER, "admin", T0 + 100, store.append, key_not_stolen=True)
        # Epoch 2's home still answers hello: it would go on acknowledging w>=1 puts that a
        # witness may cosign before it stores the handover, lost from epoch 3 (review r30 F4).
        asked: list[str] = []
        alive = Promotion(swapped, HOME, homes, redis, {}, HOME_KEY.public_key, answers=lambda n: not asked.append(n))
        with pytest.raises(
            PromotionRefusedError, match="ingest-2, the home of epoch 2 of 'votes', still answers: stop"
        ):
            alive.promote(LEDGER, "admin", T0 + 100, store.append, key_not_stolen=True)
        assert asked == [STANDBY] and redis.epochs() == {} and store.size(LEDGER) == len(handed)
        promotion.promote(LEDGER, "admin", T0 + 100, store.append, key_not_stolen=True)  # it answers no more
        handover = store.get(LEDGER, len(handed))
        assert handover is not None and (handover.content.kind, handover.origin) == (EPOCH_KIND, HOME)
        assert handover.content.payload == epoch_payload(3, HOME, HOME_KEY)
        assert handover.content.request_id == "epoch-3"
        assert redis.epochs()[LEDGER] == (3, HOME) and homes.home_of(LEDGER).name == HOME
        history = EpochBook(CLUSTER, store).history(LEDGER)  # what any copy reads from the record
        assert history is not None and (history.current.number, history.current.key) == (3, HOME_KEY)
        with pytest.raises(PromotionRefusedError, match="home of 'votes' already"):
            promotion.promote(LEDGER, "admin", T0 + 200, store.append, key_not_stolen=True)
    # Without the file naming it the standby, the old home is refused as before.
    with ChainStore(tmp_path / "unswapped", origin=HOME) as store:
        store.append_records(handed)
        config = _home_and_standby(tmp_path)
        homes = Homes(config, EpochBook(CLUSTER, store), redis, witnesses=_witness_keys)
        with pytest.raises(PromotionRefusedError, match="not the standby"):
            Promotion(config, HOME, homes, redis, {}, HOME_KEY.public_key).promote(
                LEDGER, "admin", T0 + 100, store.append, key_not_stolen=True
            )


def test_a_witnessed_note_of_epoch_3_the_cluster_file_does_not_allow_moves_no_home(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """A thief of the genesis home's pinned key signs a checkpoint of epoch 3 at that home, and one
    compromised witness cosigns it into Redis (honest witnesses cosign no epoch from 3 their file
    does not allow, 10.9): an ingest node whose cluster file names no such failback (the home is
    not the standby, no ``epoch = 3``) keeps epoch 2's home, as the witnesses, the verifier and
    `repl status` do; the file swapped for the failback takes it (fix31)."""
    handed, _ = chains
    back = _witnessed(_checkpoint(handed, HOME_SIGNER, (f"vledger-epoch 3 {HOME}",)))
    config = _home_and_standby(tmp_path)  # names STANDBY the standby, states no epoch
    with ChainStore(tmp_path / "epoch-2-home", origin=STANDBY) as store:
        store.append_records(handed)  # epoch 2's home (or any node that holds the handover)
        book = EpochBook(CLUSTER, store)
        redis = _NamedEpochs({LEDGER: (3, HOME)})  # any ingest node's Redis user may name it
        redis.notes.append(back)
        homes = Homes(config, book, redis, witnesses=_witness_keys)  # type: ignore[arg-type]
        homes.refresh()
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((2, STANDBY), STANDBY)
        redis.named.clear()  # and looked for without a claim in Redis, and in the others' answers
        homes._look_at = 0.0
        homes.refresh()
        homes.take_notes({LEDGER: [back]})
        assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((2, STANDBY), STANDBY)
        # Nor does epoch 2's home's write concern take the note for its own handover.
        allowed = homes.failback_allowed
        assert not handed_over(book, STANDBY, LEDGER, back, witnesses=_witness_keys, failback_allowed=allowed)
        # The swap for the failback (the genesis home named standby), or the file swapped back with `epoch = 3`.
        for spec in ({"home": STANDBY, "standby": HOME}, {"home": HOME, "standby": STANDBY, "epoch": 3}):
            swapped = _home_and_standby(tmp_path, spec)
            homes = Homes(swapped, book, _NamedEpochs({}), witnesses=_witness_keys)  # type: ignore[arg-type]
            homes.take_notes({LEDGER: [back]})
            assert (homes.epoch_of(LEDGER), homes.home_of(LEDGER).name) == ((3, HOME), HOME)
            allowed = homes.failback_allowed
            assert handed_over(book, STANDBY, LEDGER, back, witnesses=_witness_keys, failback_allowed=allowed)


def test_a_former_home_s_tail_past_the_handover_is_set_aside_in_a_file_and_the_chain_follows_on(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """The old home's w=0 writes placed while cut off (10.9: they are not the ledger's) and its
    own checkpoint of them: moved to a file beside the store (0600), the signed row kept as
    evidence (its start check would else find a store that lost what it signed), and the store
    takes the new home's chain from the handover on; it opens again as a whole store."""
    handed, cut_off = chains
    with ChainStore(tmp_path / "old-home", origin=HOME) as store:
        store.append_records(cut_off)
        tail = _checkpoint(cut_off, HOME_SIGNER)
        store.checkpoints.keep(LEDGER, SIGNED, tail.size, tail.root, tail.note)
        assert store.set_aside(LEDGER, 7) is None and store.set_aside(LEDGER, 0) is None  # nothing, or all
        aside = store.set_aside(LEDGER, 5, clock=lambda: T0 / 1000)
        assert aside is not None and (aside.kept, aside.count) == (5, 2)
        assert aside.path.parent == tmp_path / "old-home" and aside.path.name.startswith("set-aside-votes-5-")
        assert aside.path.stat().st_mode & 0o777 == 0o600
        kept = json.loads(aside.path.read_text())
        assert [base64.b64decode(r) for r in kept["records"]] == [r.encode() for r in cut_off[5:]]
        assert [base64.b64decode(n) for n in kept["checkpoints"]] == [tail.note]
        assert store.size(LEDGER) == 5 and store.root(LEDGER) == _root(handed[:5])
        assert store.checkpoints.at(LEDGER, SIGNED, tail.size) == []
        assert [c.note for c in store.checkpoints.at(LEDGER, EVIDENCE, tail.size)] == [tail.note]
        store.append_records(handed[5:])  # the new home's chain, from its handover on
        assert store.root(LEDGER) == _root(handed)
    with ChainStore(tmp_path / "old-home", origin=HOME) as store:
        assert store.size(LEDGER) == len(handed) and store.root(LEDGER) == _root(handed)


class _Down:
    name = "ingest-9"

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        raise OSError("no answer")

    def checkpoints(self) -> dict[str, bytes]:
        return {}


def test_where_a_former_home_s_records_leave_the_chain_is_found_by_halves(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """first_difference: the lowest height whose record the chain does not hold (another
    record there, or none), the store's size when it holds only the chain's, None when no
    source answered (compared again later, nothing set aside)."""
    handed, cut_off = chains
    with ChainStore(tmp_path / "old-home", origin=HOME) as store:
        store.append_records(cut_off)
        assert first_difference(store, [_Down(), Pages(handed, [])], LEDGER) == 5
        assert first_difference(store, [Pages(handed[:5], [])], LEDGER) == 5  # the chain ends below its tail
        assert first_difference(store, [_Down()], LEDGER) is None
    with ChainStore(tmp_path / "standby", origin=STANDBY) as store:
        store.append_records(handed[:7])
        assert first_difference(store, [Pages(handed, [])], LEDGER) == 7


def test_a_failed_back_home_checks_a_witness_s_epoch_2_note_with_epoch_2_s_key(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """The write concern of the home of epoch 3 checks each witness's note in Redis with the key
    it was signed with: a witness's last note of epoch 2 (before it cosigned epoch 3) was checked
    with this home's own key, did not verify, and was reported a forgery (bad_cosignature). Its
    epoch's key, as the store's records name it, checks it (then earlier_epoch counts it)."""
    handed, _ = chains
    back = _place(handed[-1], EPOCH_KIND, epoch_payload(3, HOME, HOME_KEY), HOME)
    with ChainStore(tmp_path / "failed-back", origin=HOME) as store:
        store.append_records([*handed, back])
        book = EpochBook(CLUSTER, store)
        key_of = functools.partial(_signing_key, CLUSTER, None, HOME_KEY.public_key, book)
        second = _witnessed(_checkpoint(handed, STANDBY_SIGNER, EPOCH_2))
        third = _witnessed(_checkpoint([*handed, back], HOME_SIGNER, ("vledger-epoch 3 ingest-1",)))
        assert key_of(LEDGER, second) == STANDBY_KEY
        assert key_of(LEDGER, third) == HOME_KEY
        assert earlier_epoch(book, HOME, LEDGER, second, STANDBY_KEY)


def test_a_node_named_standby_after_it_started_says_to_restart_it(tmp_path: Path, redis_client: Any) -> None:
    """Outsider o21 F1: a ledger named in the cluster file on every host after its standby
    started was refused "not the standby of ... in the cluster file" at every promotion, for
    85 s, with its home dead: the running standby never read the new file, and follows only the
    ledgers its file named at its start. The file is read again then: the refusal says what to do."""
    started = cluster_from_mapping(
        {
            "cluster": {"name": CLUSTER, "default_home": HOME},
            "nodes": {
                HOME: {"role": "ingest", "port": 7001, "pub_port": 7101},
                STANDBY: {"role": "ingest", "port": 7002, "pub_port": 7102},
                "replica-1": {"role": "replica", "port": 7011},
            },
        },
        tmp_path / "cluster.toml",
    )
    redis = ReplicationLedger(redis_client)
    redis_client.hset(redis.ledgers_key, LEDGER, HOME)
    with _standby_store(tmp_path, RULES) as store:
        promotion, _ = _promotion(started, store, redis)
        (tmp_path / "cluster.toml").write_text("not toml [")  # unreadable now: the refusal as it was
        with pytest.raises(PromotionRefusedError, match=f"{STANDBY} is not the standby of 'votes' in the cluster"):
            promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        (tmp_path / "cluster.toml").write_text(
            f'[cluster]\nname = "{CLUSTER}"\ndefault_home = "{HOME}"\n'
            f'[nodes.{HOME}]\nrole = "ingest"\nport = 7001\npub_port = 7101\n'
            f'[nodes.{STANDBY}]\nrole = "ingest"\nport = 7002\npub_port = 7102\n'
            '[nodes.replica-1]\nrole = "replica"\nport = 7011\n'
            f'[ledgers.{LEDGER}]\nhome = "{HOME}"\nstandby = "{STANDBY}"\n'
        )
        with pytest.raises(PromotionRefusedError) as refused:
            promotion.promote(LEDGER, "admin", T0 + 100, store.append)
        assert f"named {STANDBY} the standby of 'votes' after it started: restart {STANDBY}" in refused.value.message
        assert redis.epochs() == {} and store.size(LEDGER) == 5
