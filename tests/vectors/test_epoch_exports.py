"""An export of a ledger handed over to its standby (PROTOCOL 5 and 10.9), checked by
`vledger verify` (tools/verification.py) and by the outsider verifier written from the
specification alone: both accept each epoch's checkpoint lines under its own key, and both
refuse the old home's checkpoint past the handover (fenced) and the standby's key without
its epoch line (bad_epoch).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.export import StoredRecord, encode_checkpoint_line, encode_line
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.tree import Frontier, leaf_hash
from vledger.node.witness import HomeSigner
from vledger.tools.verification import verify_file

HERE = Path(__file__).resolve().parent
CLUSTER, LEDGER = "local", "votes"
HOME, STANDBY = HomeSigner(CLUSTER, bytes(range(32))), HomeSigner(CLUSTER, bytes(range(1, 33)))
T0 = 1_790_000_000_000


def _outsider() -> Any:
    spec = importlib.util.spec_from_file_location("outsider_verify_epochs", HERE / "outsider_verify.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OV = _outsider()


def _next(head: Record, kind: str, payload: dict[str, Any], origin: str) -> Record:
    content = Content(LEDGER, kind, payload, "admin", f"r-{head.height + 1}", T0 + head.height + 1)
    return Entry.prepare(content, 0, PROTOCOL_LIMITS).place(head.height + 1, head.link, head.accepted + 1, origin)


def _chain() -> list[Record]:
    """Heights 0..3 by ingest-1, the handover to ingest-2 at 4, then 5..6 by ingest-2."""
    pinned = {
        "checkpoint_key": HOME.key(LEDGER).verifier().encode(),
        "standby_key": STANDBY.key(LEDGER).verifier().encode(),
    }
    rules = LedgerRules((EPOCH_KIND, "note"), 0, pinned)
    genesis = Entry.prepare(rules.genesis_content(LEDGER, "admin", "create", T0), 0, PROTOCOL_LIMITS)
    records = [genesis.place(0, ZERO_LINK, T0, "ingest-1")]
    for i in range(1, 4):
        records.append(_next(records[-1], "note", {"n": i}, "ingest-1"))
    records.append(
        _next(records[-1], EPOCH_KIND, epoch_payload(2, "ingest-2", STANDBY.key(LEDGER).verifier()), "ingest-2")
    )
    for i in range(5, 7):
        records.append(_next(records[-1], "note", {"n": i}, "ingest-2"))
    return records


def _root(records: list[Record]) -> bytes:
    frontier = Frontier()
    for r in records:
        frontier.append(leaf_hash(r.encode()))
    return frontier.root()


def _export(records: list[Record], checkpoints: dict[int, tuple[HomeSigner, tuple[str, ...]]]) -> bytes:
    """Record lines, each followed by the checkpoint line of its size when one is given."""
    lines = []
    for r in records:
        lines.append(encode_line(StoredRecord(r, r.encode())))
        size = r.height + 1
        if size in checkpoints:
            signer, extensions = checkpoints[size]
            lines.append(
                encode_checkpoint_line(LEDGER, signer.sign(LEDGER, size, _root(records[:size]), extensions).note)
            )
    return b"".join(lines)


EPOCH_2 = ("vledger-epoch 2 ingest-2",)


def _both(tmp_path: Path, data: bytes) -> tuple[tuple[str, int | None] | None, tuple[str, int | None] | None]:
    """(vledger verify's first failure, the outsider's), each as (code, height), or None."""
    path = tmp_path / "export.jsonl"
    path.write_bytes(data)
    ours = verify_file(path, None, PROTOCOL_LIMITS)
    report = ours.reports[0]
    mine = None if report.ok else (report.error.code, report.error_height)  # type: ignore[union-attr]
    (theirs,) = OV.verify_lines(data)
    outsider = None if theirs["ok"] else (theirs["error"]["code"], theirs["error"]["height"])
    return mine, outsider


def test_each_epoch_s_checkpoints_verify_under_its_key(tmp_path: Path) -> None:
    records = _chain()
    data = _export(records, {2: (HOME, ()), 4: (HOME, ()), 5: (STANDBY, EPOCH_2), 7: (STANDBY, EPOCH_2)})
    assert _both(tmp_path, data) == (None, None)


@pytest.mark.parametrize(
    ("checkpoint", "code", "height"),
    [
        ((HOME, ()), "fenced", 5),  # the old home's checkpoint past the handover at 4
        ((STANDBY, ()), "bad_epoch", 5),  # the standby's key without its epoch line
        ((HOME, EPOCH_2), "bad_epoch", 5),  # the epoch line under the old home's key
    ],
    ids=["fenced", "no-line", "old-key"],
)
def test_a_checkpoint_line_not_of_its_epoch_fails_alike(
    tmp_path: Path, checkpoint: tuple[HomeSigner, tuple[str, ...]], code: str, height: int
) -> None:
    data = _export(_chain(), {6: checkpoint})
    assert _both(tmp_path, data) == ((code, height), (code, height))


EPOCH_3 = ("vledger-epoch 3 ingest-1",)


def _failed_back() -> list[Record]:
    """_chain, then the failback: the handover to ingest-1 at 7 (epoch 3, the genesis key), 8..9 by ingest-1."""
    records = _chain()
    records.append(
        _next(records[-1], EPOCH_KIND, epoch_payload(3, "ingest-1", HOME.key(LEDGER).verifier()), "ingest-1")
    )
    for i in range(8, 10):
        records.append(_next(records[-1], "note", {"n": i}, "ingest-1"))
    return records


def test_a_failback_s_epoch_3_verifies_under_the_genesis_key_and_fences_epoch_2(tmp_path: Path) -> None:
    """A failback (10.9): epoch 3 is the genesis home's again, under its pinned key, with its
    line; both verifiers take it, and refuse epoch 2's home past its handover (fenced), the
    genesis key without the line (epoch 1, fenced since the handover at 4) and the standby's key
    stating epoch 3 (bad_epoch)."""
    records = _failed_back()
    checkpoints = {4: (HOME, ()), 7: (STANDBY, EPOCH_2), 8: (HOME, EPOCH_3), 10: (HOME, EPOCH_3)}
    assert _both(tmp_path, _export(records, checkpoints)) == (None, None)
    for checkpoint, code in (((STANDBY, EPOCH_2), "fenced"), ((HOME, ()), "fenced"), ((STANDBY, EPOCH_3), "bad_epoch")):
        assert _both(tmp_path, _export(records, {9: checkpoint})) == ((code, 8), (code, 8)), (checkpoint, code)
