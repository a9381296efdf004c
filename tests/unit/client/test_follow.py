"""client/api.py: Client.follow, and every other read, on a ledger handed over to its standby (PROTOCOL 10.9).

The node followed serves one store's records and whichever checkpoint note the test sets. The
ledger's genesis pins its home's key (ingest-1) and its standby's (ingest-2); ingest-2 placed
the handover record at height 2, opening epoch 2. A checkpoint of epoch 1 (the home's key, no
epoch line) of a size past 2 is a fenced home's: follow refuses it with ``fenced`` and yields
none of its records, whether the handover came among the records it follows or below the
checkpoint it started from; epoch 2's checkpoints are followed. A client that verified epoch
2's checkpoint takes no epoch 1 checkpoint after it, in any read (checkpoint, record, records,
receipt), nor in a later run that keeps its trusted state in a file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.client import api
from vledger.client.api import Client, FollowEvent, Trust
from vledger.client.session import Reader
from vledger.client.state import TrustedState
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.errors import BadEpochError, FencedError, QuorumError, RollbackError, StaleCheckpointError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, Note, SignerKey, cosign, parse_note
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, home_key

LEDGER = "fund"
HANDOVER = 2  # the height of the record that opens epoch 2
HOME = HomeSigner("t", bytes(range(32)))  # ingest-1, the genesis home
STANDBY = HomeSigner("t", bytes(range(1, 33)))  # ingest-2, its standby, home of epoch 2
# A witness the clients trust: the standby's key counts only with a witness's cosignature (14.3 step 7).
WITNESS = SignerKey("t/witness/replica-1", ALG_COSIGNATURE_V1, bytes([7]) * 32)


def _witnessed(note: bytes) -> bytes:
    """``note`` with WITNESS's cosignature, made now (an old one is a stale head, PROTOCOL 11.4)."""
    parsed = parse_note(note)
    return Note(
        parsed.text, (*parsed.signatures, cosign(parsed.text, WITNESS, int(time.time())).note_signature())
    ).encode()


class Followed:
    """A node that serves ``store`` and, as its latest checkpoint, ``note``."""

    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self.note = b""
        self.cosigned = b""  # when set, the answer to a checkpoint asked with a witness or more
        self.asked: list[str] = []  # the commands asked, in order

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: object = None) -> Any:
        args = args or {}
        self.asked.append(cmd)
        if cmd == "checkpoint":
            return {"checkpoint": self.cosigned if self.cosigned and args.get("witnesses") else self.note}
        if cmd == "range":
            return {"records": [data for _, data in self.store.range_raw(LEDGER, args["start"])], "next": None}
        if cmd == "get":
            record = self.store.get(LEDGER, args["height"])
            assert record is not None
            return {"record": record.encode()}
        if cmd == "proof.inclusion":
            return {"proof": self.store.inclusion_proof(LEDGER, args["index"], args["size"])}
        if cmd == "proof.consistency":
            return {"proof": self.store.consistency_proof(LEDGER, args["old"], args["new"])}
        raise AssertionError(f"not asked here: {cmd}")

    def close(self) -> None:
        return None

    def home_signs(self, size: int) -> None:
        """The genesis home's checkpoint of ``size`` records: epoch 1's, no epoch line, cosigned
        by the witness the client trusts (one it does not vouch for is a stale head, 11.4)."""
        self.note = _witnessed(HOME.sign(LEDGER, size, self.store.root(LEDGER, size)).note)

    def standby_signs(self, size: int) -> None:
        """Epoch 2's checkpoint of ``size`` records, as its home ingest-2 signs it."""
        self.note = _witnessed(
            STANDBY.sign(LEDGER, size, self.store.root(LEDGER, size), ("vledger-epoch 2 ingest-2",)).note
        )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Followed]:
    """The ledger: genesis and a record by ingest-1, the handover to ingest-2, two records by it."""
    pins = {
        "checkpoint_key": home_key("t", LEDGER, HOME.key(LEDGER).public_key).encode(),
        "standby_key": home_key("t", LEDGER, STANDBY.key(LEDGER).public_key).encode(),
    }
    with ChainStore(tmp_path / "store", origin="ingest-1") as store:
        genesis = LedgerRules(kinds=(EPOCH_KIND, "note"), difficulty=0, rules=pins).genesis_content(
            LEDGER, "admin", "g", 1
        )
        store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        store.append(Entry.prepare(Content(LEDGER, "note", {"n": 1}, "admin", "r1", 2), 0, PROTOCOL_LIMITS))
        standby_key = home_key("t", LEDGER, STANDBY.key(LEDGER).public_key)
        for height, content in (
            (HANDOVER, Content(LEDGER, EPOCH_KIND, epoch_payload(2, "ingest-2", standby_key), "admin", "epoch-2", 3)),
            (3, Content(LEDGER, "note", {"n": 3}, "admin", "r3", 4)),
            (4, Content(LEDGER, "note", {"n": 4}, "admin", "r4", 5)),
        ):
            head = store.head(LEDGER)
            assert head is not None
            store.append_record(Entry.prepare(content, 0, PROTOCOL_LIMITS).place(height, head.link, 3, "ingest-2"))
        yield Followed(store)


def _follow(node: Followed, monkeypatch: pytest.MonkeyPatch) -> Iterator[FollowEvent]:
    monkeypatch.setattr(api, "FOLLOW_POLL_SECONDS", 0)
    genesis = node.store.get(LEDGER, 0)
    assert genesis is not None
    client = Client(Reader(node), trust=Trust(genesis={LEDGER: genesis.encode()}, witnesses=(WITNESS.verifier(),)))
    return client.follow(LEDGER)


def test_the_standby_s_epoch_is_followed(node: Followed, monkeypatch: pytest.MonkeyPatch) -> None:
    node.home_signs(HANDOVER)  # epoch 1's last checkpoint: it holds no handover record
    events = _follow(node, monkeypatch)
    assert next(events).checkpoint.checkpoint.size == HANDOVER
    node.standby_signs(4)
    event = next(events)
    assert event.checkpoint.checkpoint.size == 4 and [r.height for r in event.records] == [2, 3]


def test_a_followed_checkpoint_nobody_vouches_for_again_turns_stale(
    node: Followed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen server keeps answering with the checkpoint it had: nothing new to yield, and
    before, follow() waited on it for ever. Past the interval and the grace (PROTOCOL 11.4) with
    no witness vouching for it again, the same checkpoint is stale: follow() raises."""
    node.standby_signs(4)
    events = _follow(node, monkeypatch)
    assert next(events).checkpoint.checkpoint.size == 4
    real, asked = time.time_ns, node.call
    monkeypatch.setattr(api.time, "time_ns", lambda: real() + 311 * 10**9)
    looks = iter(range(5))

    def bounded(cmd: str, args: dict[str, Any] | None = None, **how: Any) -> Any:
        if cmd == "checkpoint" and next(looks, None) is None:
            raise AssertionError("follow() asked 5 times and never judged the checkpoint stale")
        return asked(cmd, args, **how)

    monkeypatch.setattr(node, "call", bounded)
    with pytest.raises(StaleCheckpointError, match="checkpoint of 4 records"):
        next(events)


def test_a_replaced_home_s_checkpoint_over_the_handover_it_brings_is_fenced(
    node: Followed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records it adds hold the handover: the old home's checkpoint over them is fenced,
    and none of them is yielded (before, they came as the home's next event)."""
    node.home_signs(HANDOVER)
    events = _follow(node, monkeypatch)
    next(events)
    node.home_signs(4)
    with pytest.raises(FencedError):
        next(events)


def test_a_replaced_home_s_checkpoint_after_the_new_epoch_s_is_fenced(
    node: Followed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Followed into epoch 2, a node that serves the old home's checkpoint of the same tree
    (consistent, so no proof fails) is refused fenced before any record is read."""
    node.standby_signs(4)
    events = _follow(node, monkeypatch)
    assert next(events).checkpoint.checkpoint.size == 4
    node.home_signs(5)
    with pytest.raises(FencedError):
        next(events)


def test_a_fenced_checkpoint_to_start_from_is_refused(node: Followed, monkeypatch: pytest.MonkeyPatch) -> None:
    node.home_signs(4)
    with pytest.raises(FencedError):
        next(_follow(node, monkeypatch))


def test_an_announced_fenced_checkpoint_is_not_taken_and_the_node_is_asked(
    node: Followed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway's event that carries the old home's note past the handover (Redis fed by it)
    is not taken: the checkpoint is asked of the node, and epoch 2's is followed."""
    fenced = HOME.sign(LEDGER, 5, node.store.root(LEDGER, 5)).note
    event = _after_announced(node, monkeypatch, fenced)
    assert "vledger-epoch 2 ingest-2" in event.checkpoint.checkpoint.extensions


def test_an_announced_checkpoint_older_than_the_one_followed_is_not_taken(
    node: Followed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late or replayed event (a smaller checkpoint than the last one taken) is not a rollback
    of the log: it is not taken and the node is asked (follow ended with RollbackError)."""
    late = STANDBY.sign(LEDGER, 3, node.store.root(LEDGER, 3), ("vledger-epoch 2 ingest-2",)).note
    _after_announced(node, monkeypatch, late)


def _after_announced(node: Followed, monkeypatch: pytest.MonkeyPatch, announced: bytes) -> FollowEvent:
    """Follow epoch 2 from size 4 while the gateway announces ``announced``, which must not be
    taken: the event after it is the node's checkpoint of 5, with record 4."""
    monkeypatch.setattr(Client, "_wakeups", lambda self, ledger: iter([announced]))
    node.standby_signs(4)
    events = _follow(node, monkeypatch)
    assert next(events).checkpoint.checkpoint.size == 4
    node.standby_signs(5)
    event = next(events)
    assert event.checkpoint.checkpoint.size == 5 and [r.height for r in event.records] == [4]
    return event


def _client(node: Followed, state: TrustedState | None = None) -> Client:
    genesis = node.store.get(LEDGER, 0)
    assert genesis is not None
    return Client(
        Reader(node), trust=Trust(genesis={LEDGER: genesis.encode()}, witnesses=(WITNESS.verifier(),)), state=state
    )


READS = {
    "checkpoint": lambda client: client.checkpoint(LEDGER),
    "record": lambda client: client.record(LEDGER, 1),
    "records": lambda client: list(client.records(LEDGER)),
    "receipt": lambda client: client.receipt(LEDGER, 1, wait=0),
}


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize("size", [4, 5])
def test_after_epoch_2_no_read_takes_the_replaced_home_s_checkpoint(node: Followed, read: str, size: int) -> None:
    """The old home's checkpoint of the tree epoch 2's was of (consistent with it: no proof
    fails), or of one more record, is past the handover: every read refuses it (before, only
    follow did; the others returned it, and a record or receipt proven by it)."""
    client = _client(node)
    node.standby_signs(4)
    READS[read](client)
    seen = client.state.get(LEDGER)
    assert seen is not None and (seen.size, seen.epoch, seen.home) == (4, 2, "ingest-2")
    node.home_signs(size)
    with pytest.raises(FencedError, match="past the handover to epoch 2"):
        READS[read](client)


def test_a_smaller_checkpoint_of_an_earlier_epoch_is_a_rollback_naming_the_epochs(node: Followed) -> None:
    client = _client(node)
    node.standby_signs(4)
    client.checkpoint(LEDGER)
    node.home_signs(3)  # past the handover at 2, or below it: a smaller one is a rollback either way
    with pytest.raises(RollbackError, match="it is of epoch 1, that one of epoch 2, home ingest-2"):
        client.checkpoint(LEDGER)


def test_epoch_2_stated_by_another_home_is_refused(node: Followed) -> None:
    client = _client(node)
    node.standby_signs(4)
    client.checkpoint(LEDGER)
    node.note = _witnessed(STANDBY.sign(LEDGER, 5, node.store.root(LEDGER, 5), ("vledger-epoch 2 ingest-3",)).note)
    with pytest.raises(BadEpochError, match="by home ingest-3, where one by ingest-2"):
        client.checkpoint(LEDGER)


def test_a_later_run_with_the_state_file_refuses_the_replaced_home(node: Followed, tmp_path: Path) -> None:
    """The epoch is kept with the size and root: a new client of the same file meets the old
    home's checkpoint of the same tree and refuses it (a root and size alone let it pass)."""
    path = tmp_path / "trusted.json"
    node.standby_signs(4)
    assert _client(node, TrustedState(path)).checkpoint(LEDGER).checkpoint.size == 4
    node.home_signs(4)
    with pytest.raises(FencedError):
        _client(node, TrustedState(path)).checkpoint(LEDGER)


def test_follow_after_epoch_2_refuses_the_replaced_home_before_reading_its_records(
    node: Followed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "FOLLOW_POLL_SECONDS", 0)
    client = _client(node)
    node.standby_signs(4)
    client.checkpoint(LEDGER)
    node.home_signs(4)
    node.asked.clear()
    with pytest.raises(FencedError):
        next(client.follow(LEDGER))
    assert "range" not in node.asked  # the records up to it (the whole ledger) are not read for nothing


def test_the_standby_s_checkpoint_no_witness_cosigned_counts_for_nothing(node: Followed) -> None:
    """The standby's key alone could sign a tree of its own making (14.3 step 7): its checkpoint
    no witness cosigned is refused [no_quorum] (before, it was taken with quorum 0), and a client
    asks then for the largest a witness cosigned."""
    client = _client(node)
    node.note = STANDBY.sign(LEDGER, 5, node.store.root(LEDGER, 5), ("vledger-epoch 2 ingest-2",)).note
    with pytest.raises(QuorumError):
        client.checkpoint(LEDGER)
    node.cosigned = _witnessed(STANDBY.sign(LEDGER, 4, node.store.root(LEDGER, 4), ("vledger-epoch 2 ingest-2",)).note)
    node.asked.clear()
    assert client.checkpoint(LEDGER).checkpoint.size == 4
    assert node.asked.count("checkpoint") == 2  # the largest first, then the largest one witness cosigned
