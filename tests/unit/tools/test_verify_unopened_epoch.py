"""`vledger verify` of an export or a store holds every record up to a
checkpoint's size, so a checkpoint stating an epoch that none of those records opened is
[bad_epoch] (PROTOCOL 10.9 rule 1: "epoch e exists"); "an epoch past the last one the checker
holds" is taken only for records not yet stored. EpochHistory.check returns None for it and
both verify paths vouch the checkpoint: the standby's host alone (the standby key) signs an
"epoch 2" tree that no handover opened and verify passes it."""

from __future__ import annotations

from pathlib import Path

from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Content, Entry
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, home_key
from vledger.tools.exporting import export_store
from vledger.tools.importing import import_file
from vledger.tools.verification import verify_file, verify_store

LIMITS = Limits()
SEED = bytes(range(32))
LEDGER = "votes"
HOME, STANDBY = HomeSigner("local", SEED), HomeSigner("local", SEED[::-1])


def _store_without_handover(directory: Path, epoch_line: tuple[str, ...], signer: HomeSigner) -> Path:
    """A ledger pinning the home's key and a standby's: 6 notes, no handover record, and
    ``signer``'s checkpoint of size 6 stating ``epoch_line``."""
    pinned = {
        "checkpoint_key": HOME.key(LEDGER).verifier().encode(),
        "standby_key": STANDBY.key(LEDGER).verifier().encode(),
    }
    assert pinned["checkpoint_key"] == home_key("local", LEDGER, HOME.key(LEDGER).public_key).encode()
    rules = LedgerRules(kinds=("epoch", "note"), difficulty=0, rules=pinned)
    records = [
        Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS).place(0, ZERO_LINK, 1, "node-1")
    ]
    for i in range(1, 6):
        content = Content(LEDGER, "note", {"n": i}, "admin", f"r{i}", 1)
        records.append(Entry.prepare(content, 0, LIMITS).place(i, records[-1].link, 1, "node-1"))
    with ChainStore(directory, origin="node-1") as store:
        store.append_records(records)
        signed = signer.sign(LEDGER, 6, store.root(LEDGER, 6), epoch_line)
        store.checkpoints.keep(LEDGER, "signed", 6, signed.root, signed.note)
    return directory


def test_export_verify_refuses_a_standby_checkpoint_of_an_epoch_no_record_opened(tmp_path: Path) -> None:
    store = _store_without_handover(tmp_path / "s", ("vledger-epoch 2 node-2",), STANDBY)
    out = tmp_path / "e.jsonl"
    export_store(store, None, out, LIMITS)
    error = verify_file(out, None, LIMITS).reports[0].error
    assert error is not None and error.code == "bad_epoch", error


def test_store_verify_refuses_a_standby_checkpoint_of_an_epoch_no_record_opened(tmp_path: Path) -> None:
    store = _store_without_handover(tmp_path / "s", ("vledger-epoch 2 node-2",), STANDBY)
    error = verify_store(store, None, LIMITS).reports[0].error
    assert error is not None and error.code == "bad_epoch", error


def test_import_refuses_a_standby_checkpoint_of_an_epoch_no_record_opened(tmp_path: Path) -> None:
    """`vledger import` checks an export as verify does, and keeps its checkpoint lines."""
    store = _store_without_handover(tmp_path / "s", ("vledger-epoch 2 node-2",), STANDBY)
    out = tmp_path / "e.jsonl"
    export_store(store, None, out, LIMITS)
    result = import_file(out, tmp_path / "copy", None, LIMITS)
    error = result.reports[0].error if result.reports else result.error
    assert error is not None and error.code == "bad_epoch", error


def test_the_honest_epoch_one_checkpoint_still_verifies(tmp_path: Path) -> None:
    store = _store_without_handover(tmp_path / "s", (), HOME)
    out = tmp_path / "e.jsonl"
    export_store(store, None, out, LIMITS)
    assert verify_file(out, None, LIMITS).ok
    assert verify_store(store, None, LIMITS).ok
