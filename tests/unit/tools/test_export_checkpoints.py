"""Exports carry the store's latest checkpoints, and ``vledger verify`` checks them: each after
the record that completes its tree, its root that tree's, its note signed by the pinned key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from vledger.config.settings import Limits
from vledger.node.checkpoint_log import COSIGNED, IMPORTED_COSIGNED, IMPORTED_SIGNED, SIGNED
from vledger.node.epoch import epoch_payload
from vledger.node.export import ExportedCheckpoint, decode_export_line, encode_checkpoint_line
from vledger.node.key_rotation import rotation_payload
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Content, Entry
from vledger.node.store import ChainStore
from vledger.node.storefile import StoreReader
from vledger.node.witness import HomeSigner, WitnessSigner, home_key, witness_key
from vledger.tools import cli
from vledger.tools.exporting import export_store
from vledger.tools.importing import import_file
from vledger.tools.report import print_import
from vledger.tools.verification import verify_file

LIMITS = Limits()
SEED = bytes(range(32))
LEDGER = "votes"
PUBLIC = HomeSigner("local", SEED).key(LEDGER).public_key


def _store(directory: Path, records: int, *, pin: bool = True, signer: HomeSigner | None = None) -> Path:
    rules = {"checkpoint_key": home_key("local", LEDGER, PUBLIC).encode()} if pin else {}
    with ChainStore(directory, origin="node-1") as store:
        genesis = LedgerRules(kinds=("note",), difficulty=0, rules=rules).genesis_content(LEDGER, "admin", "g", 1)
        store.create_ledger(Entry.prepare(genesis, 0, LIMITS))
        for i in range(1, records):
            store.append(Entry.prepare(Content(LEDGER, "note", {"n": i}, "admin", f"r{i}", 1), 0, LIMITS))
        signed = (signer or HomeSigner("local", SEED)).sign(LEDGER, 3, store.root(LEDGER, 3))
        store.checkpoints.keep(LEDGER, "signed", 3, signed.root, signed.note)
    return directory


def _export(store: Path, out: Path) -> list[bytes]:
    export_store(store, None, out, LIMITS)
    return out.read_bytes().splitlines(keepends=True)


def test_the_checkpoint_follows_the_record_that_completes_its_tree(tmp_path: Path) -> None:
    lines = _export(_store(tmp_path / "s", 6), tmp_path / "e.jsonl")
    kinds = [type(decode_export_line(line, n, LIMITS)).__name__ for n, line in enumerate(lines, 1)]
    assert kinds == ["StoredRecord"] * 3 + ["ExportedCheckpoint"] + ["StoredRecord"] * 3
    result = verify_file(tmp_path / "e.jsonl", None, LIMITS)
    assert result.ok and result.reports[0].checkpoints == 1 and result.reports[0].records == 6


def test_a_checkpoint_line_given_twice_counts_once(tmp_path: Path) -> None:
    # It counted "2 checkpoints" (outsider 20, F12): one checkpoint, verified twice.
    lines = _export(_store(tmp_path / "s", 6), tmp_path / "e.jsonl")
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_bytes(b"".join([*lines[:4], lines[3], *lines[4:]]))
    result = verify_file(doubled, None, LIMITS)
    assert result.ok and result.reports[0].checkpoints == 1 and result.reports[0].records == 6


def test_a_checkpoint_out_of_place_or_not_canonical_fails(tmp_path: Path) -> None:
    lines = _export(_store(tmp_path / "s", 6), tmp_path / "e.jsonl")
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(b"".join([*lines[:2], lines[3], lines[2], *lines[4:]]))
    report = verify_file(moved, None, LIMITS).reports[0]
    assert report.error is not None and report.error.code == "bad_field"  # after 2 records, not 3
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_bytes(b"".join([*lines[:3], lines[3].replace(b'","checkpoint":', b'", "checkpoint":'), *lines[4:]]))
    report = verify_file(spaced, None, LIMITS).reports[0]
    assert report.error is not None and report.error.code == "bad_line"


def test_a_checkpoint_by_another_key_than_the_pinned_one_fails(tmp_path: Path) -> None:
    lines = _export(_store(tmp_path / "s", 4, signer=HomeSigner("local", SEED[::-1])), tmp_path / "e.jsonl")
    report = verify_file(tmp_path / "e.jsonl", None, LIMITS).reports[0]
    assert report.error is not None and report.error.code == "unverified_note", report.error
    assert len(lines) == 5


def test_a_root_that_is_not_the_records_tree_fails(tmp_path: Path) -> None:
    store = _store(tmp_path / "s", 4, pin=False)
    with ChainStore(store) as opened:  # a checkpoint of size 4 whose root is the tree of size 3
        wrong = HomeSigner("local", SEED).sign(LEDGER, 4, opened.root(LEDGER, 3))
        opened.checkpoints.keep(LEDGER, "signed", 4, wrong.root, wrong.note)
    _export(store, tmp_path / "e.jsonl")
    report = verify_file(tmp_path / "e.jsonl", None, LIMITS).reports[0]
    assert report.error is not None and report.error.code == "tree_mismatch"
    assert report.checkpoints == 0


def test_an_export_with_checkpoint_lines_imports(tmp_path: Path) -> None:
    # Pass 1 skipped the checkpoint lines, pass 2 read every line as a record line and refused
    # the first checkpoint (bad_line) after pass 1 had said the file verified.
    lines = _export(_store(tmp_path / "s", 6), tmp_path / "e.jsonl")
    assert any(b'"checkpoint":' in line for line in lines)
    result = import_file(tmp_path / "e.jsonl", tmp_path / "copy", None, LIMITS)
    assert result.ok and result.reports[0].imported == 6
    with ChainStore(tmp_path / "copy") as copy, ChainStore(tmp_path / "s") as original:
        assert copy.size(LEDGER) == 6 and copy.root(LEDGER, 6) == original.root(LEDGER, 6)


def _latest(store: Path) -> list[tuple[int, bytes]]:
    reader = StoreReader(store)
    try:
        return reader.latest_checkpoints(LEDGER)
    finally:
        reader.close()


def test_an_import_keeps_the_checkpoint_lines_and_exports_them_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A store both signed (size 3) and cosigned (size 5, a witness's line on the home's note):
    # the copy holds both as imported rows, serves the same latest checkpoints and exports
    # the same bytes.
    original = _store(tmp_path / "s", 6)
    with ChainStore(original) as store:
        signed = HomeSigner("local", SEED).sign(LEDGER, 5, store.root(LEDGER, 5))
        cosigned = WitnessSigner("local/witness/replica-1", SEED[::-1]).cosign(signed, 1_790_000_000)
        store.checkpoints.keep(LEDGER, COSIGNED, 5, signed.root, cosigned)
    lines = _export(original, tmp_path / "e.jsonl")
    result = import_file(tmp_path / "e.jsonl", tmp_path / "copy", None, LIMITS)
    assert result.ok and result.reports[0].checkpoints == 2
    print_import("e.jsonl", result, as_json=False)
    assert "votes: 6 imported, 0 already present, 2 checkpoints kept (of 2 verified)" in capsys.readouterr().out
    with ChainStore(tmp_path / "copy") as copy:
        assert [c.size for c in copy.checkpoints.all(LEDGER, IMPORTED_SIGNED)] == [3]
        assert [c.note for c in copy.checkpoints.all(LEDGER, IMPORTED_COSIGNED)] == [cosigned]
        # Not the copy's own: its self-checks and cosigning read only these kinds.
        assert copy.checkpoints.all(LEDGER, SIGNED) == [] and copy.checkpoints.all(LEDGER, COSIGNED) == []
    assert _latest(tmp_path / "copy") == _latest(original)
    assert _export(tmp_path / "copy", tmp_path / "again.jsonl") == lines
    again = import_file(tmp_path / "e.jsonl", tmp_path / "copy", None, LIMITS)  # idempotent
    assert again.ok and _latest(tmp_path / "copy") == _latest(original)
    # It added nothing, and says so: "kept" counts rows added, not lines that verified.
    print_import("e.jsonl", again, as_json=False)
    out = capsys.readouterr().out
    assert "votes: 0 imported, 6 already present, 0 checkpoints kept (of 2 verified)" in out
    assert out.rstrip().endswith("imported 0 records and kept 0 checkpoints")


def test_a_checkpoint_line_twice_in_the_file_is_one_row_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _export(_store(tmp_path / "s", 6), tmp_path / "e.jsonl")
    # The checkpoint of size 3 follows record 2 (line 4), here twice.
    (tmp_path / "twice.jsonl").write_bytes(b"".join([*lines[:4], lines[3], *lines[4:]]))
    result = import_file(tmp_path / "twice.jsonl", tmp_path / "copy", None, LIMITS)
    assert result.ok and result.reports[0].checkpoints == 1 and result.reports[0].kept == 1
    print_import("twice.jsonl", result, as_json=True)
    assert json.loads(capsys.readouterr().out)["ledgers"][0]["kept"] == 1
    with ChainStore(tmp_path / "copy") as copy:
        assert len(copy.checkpoints.all(LEDGER, IMPORTED_SIGNED)) == 1


def test_an_import_refuses_a_forged_checkpoint_line_and_writes_nothing(tmp_path: Path) -> None:
    _export(_store(tmp_path / "s", 4, signer=HomeSigner("local", SEED[::-1])), tmp_path / "e.jsonl")
    result = import_file(tmp_path / "e.jsonl", tmp_path / "copy", None, LIMITS)
    report = result.reports[0]
    assert not result.ok and report.error is not None and report.error.code == "unverified_note"
    assert report.error_line == 4 and not (tmp_path / "copy").exists()


def test_an_import_onto_a_store_checks_its_checkpoints_with_the_records_below(tmp_path: Path) -> None:
    # The file starts at height 2 on a store that holds heights 0 and 1: a checkpoint of size
    # 3 is the tree of the store's two records and the file's first; a root that is not fails.
    lines = _export(_store(tmp_path / "s", 6), tmp_path / "e.jsonl")
    (tmp_path / "head.jsonl").write_bytes(b"".join(lines[:2]))
    assert import_file(tmp_path / "head.jsonl", tmp_path / "copy", None, LIMITS).ok
    tail = tmp_path / "tail.jsonl"
    tail.write_bytes(b"".join(lines[2:]))
    wrong_root = tmp_path / "wrong.jsonl"
    with ChainStore(tmp_path / "s") as opened:
        wrong = HomeSigner("local", SEED).sign(LEDGER, 3, opened.root(LEDGER, 2))
    wrong_root.write_bytes(b"".join([lines[2], encode_checkpoint_line(LEDGER, wrong.note), *lines[4:]]))
    refused = import_file(wrong_root, tmp_path / "copy", None, LIMITS)
    assert refused.reports[0].error is not None and refused.reports[0].error.code == "tree_mismatch"
    result = import_file(tail, tmp_path / "copy", None, LIMITS)
    assert result.ok and result.reports[0].checkpoints == 1 and result.reports[0].imported == 4
    assert _latest(tmp_path / "copy") == _latest(tmp_path / "s")


WITNESS = WitnessSigner("local/witness/replica-1", SEED[::-1])


def _cosigned_store(directory: Path, *, forged: bool = False) -> Path:
    """A store whose latest cosigned checkpoint (size 6, its head) carries replica-1's cosignature line;
    ``forged``: that line's signature changed (its name and key id still the witness's)."""
    _store(directory, 6)
    with ChainStore(directory) as store:
        signed = HomeSigner("local", SEED).sign(LEDGER, 6, store.root(LEDGER, 6))
        note = WITNESS.cosign(signed, 1_790_000_000)
        if forged:
            head, line = note.rstrip(b"\n").rsplit(b"\n", 1)
            dash, name, blob = line.split(b" ")
            raw = bytearray(base64.b64decode(blob))
            raw[-1] ^= 1
            note = head + b"\n" + b" ".join([dash, name, base64.b64encode(bytes(raw))]) + b"\n"
        store.checkpoints.keep(LEDGER, COSIGNED, 6, signed.root, note)
    return directory


def _witness_vkey() -> str:
    return witness_key(WITNESS.name, WITNESS.key.public_key).encode()


def test_cosignatures_are_checked_with_witness_keys_and_said_unchecked_without(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _export(_cosigned_store(tmp_path / "s"), tmp_path / "e.jsonl")
    export = str(tmp_path / "e.jsonl")
    assert cli.main(["verify", export]) == 0
    out = capsys.readouterr().out
    assert "votes: OK, 6 records, 2 checkpoints, head" in out
    assert "cosignatures NOT checked: 1 cosignature line, and no --witness key given" in out
    assert cli.main(["verify", export, "--json"]) == 0
    value = json.loads(capsys.readouterr().out)
    assert value["cosignatures"] == {"witness_keys": 0, "checked": 0, "unchecked": 1}
    assert cli.main(["verify", export, "--witness", _witness_vkey()]) == 0
    out = capsys.readouterr().out
    assert "votes: OK, 6 records, 2 checkpoints (1 cosignature verified), head" in out and "cosignatures NOT" not in out
    assert cli.main(["verify", export, "--witness", _witness_vkey(), "--json"]) == 0
    value = json.loads(capsys.readouterr().out)
    assert value["cosignatures"] == {"witness_keys": 1, "checked": 1, "unchecked": 0}
    assert value["ledgers"][0]["cosignatures"] == {"checked": 1, "unchecked": 0}
    # Another witness's key checks nothing here, and the output says what was not checked.
    other = witness_key("local/witness/replica-2", SEED).encode()
    assert cli.main(["verify", export, "--witness", other]) == 0
    assert "cosignatures: 1 line by witnesses no --witness key names, NOT checked" in capsys.readouterr().out
    # The store itself: its cosigned row's line, checked the same way.
    assert cli.main(["verify", str(tmp_path / "s"), "--witness", _witness_vkey(), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cosignatures"]["checked"] == 1


def test_a_forged_cosignature_fails_verify_and_import_given_its_witness_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _export(_cosigned_store(tmp_path / "s", forged=True), tmp_path / "e.jsonl")
    export = tmp_path / "e.jsonl"
    assert verify_file(export, None, LIMITS).ok  # without the key it cannot be told
    assert cli.main(["verify", str(export), "--witness", _witness_vkey()]) == 1
    out = capsys.readouterr().out
    assert "votes: FAILED at height 5 [bad_cosignature]: line 8: the cosignature by witness " in out
    result = import_file(export, tmp_path / "copy", None, LIMITS, [witness_key(WITNESS.name, WITNESS.key.public_key)])
    report = result.reports[0]
    assert report.error is not None and report.error.code == "bad_cosignature" and report.error_line == 8
    assert not (tmp_path / "copy").exists()
    assert cli.main(["verify", str(tmp_path / "s"), "--witness", _witness_vkey()]) == 1
    assert "[bad_cosignature]" in capsys.readouterr().out


def test_a_witness_option_takes_a_cosignature_key_only(capsys: pytest.CaptureFixture[str]) -> None:
    log_key = home_key("local", LEDGER, PUBLIC).encode()  # a note key (type 0x01)
    assert cli.main(["verify", "x.jsonl", "--witness", log_key]) == 2
    assert "a witness key is a cosignature key (type 0x04)" in capsys.readouterr().err


def test_a_tail_cut_with_its_checkpoint_lines_is_reported_and_fails_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # outsider26 I4: an export without a ledger's last records and its checkpoint line (or
    # without any checkpoint line) verified "OK", exit 0, even with every --witness key.
    lines = _export(_cosigned_store(tmp_path / "s"), tmp_path / "e.jsonl")
    checkpoints = [
        n for n, line in enumerate(lines) if isinstance(decode_export_line(line, n + 1, LIMITS), ExportedCheckpoint)
    ]
    assert checkpoints == [3, 7]  # after heights 2 and 5: the file is whole
    whole, cut, bare = tmp_path / "e.jsonl", tmp_path / "cut.jsonl", tmp_path / "bare.jsonl"
    cut.write_bytes(b"".join(lines[:6]))  # heights 0..4 and the checkpoint line of size 3
    bare.write_bytes(b"".join(line for n, line in enumerate(lines) if n not in checkpoints))
    vkey = _witness_vkey()
    assert cli.main(["verify", str(whole), "--witness", vkey]) == 0
    assert "vouched for by nothing" not in capsys.readouterr().out

    assert cli.main(["verify", str(cut)]) == 0  # reported, not failed: nothing asked for a checkpoint
    out = capsys.readouterr().out
    assert "votes: OK, 5 records, 1 checkpoint" in out
    assert "votes: 2 records past its largest checkpoint (size 3): vouched for by nothing" in out
    assert "with --require-checkpoint or a --witness key, that fails" in out
    for asked in (["--witness", vkey], ["--require-checkpoint"]):
        assert cli.main(["verify", str(cut), *asked]) == 1
        out = capsys.readouterr().out
        assert "verification FAILED: 1 of 1 ledgers with records past their largest checkpoint" in out
    assert cli.main(["verify", str(bare), "--witness", vkey, "--json"]) == 1
    value = json.loads(capsys.readouterr().out)
    assert value["ok"] is False and value["require_checkpoint"] is True
    [ledger] = value["ledgers"]
    # o8: the entry of the ledger that failed the run says so, and why, not "ok": true.
    assert (ledger["ok"], ledger["records"], ledger["vouched"], ledger["unvouched"]) == (False, 6, 0, 6)
    assert ledger["error"] == {
        "code": "unvouched",
        "height": 0,
        "line": None,
        "message": "no checkpoint: its 6 records are vouched for by nothing",
    }
    assert cli.main(["verify", str(cut), "--require-checkpoint", "--json"]) == 1
    [ledger] = json.loads(capsys.readouterr().out)["ledgers"]
    assert (ledger["ok"], ledger["error"]["code"], ledger["error"]["height"]) == (False, "unvouched", 3)
    assert ledger["error"]["message"] == "2 records past its largest checkpoint (size 3): vouched for by nothing"
    assert cli.main(["verify", str(bare), "--json"]) == 0  # not asked: the entry stays valid
    [ledger] = json.loads(capsys.readouterr().out)["ledgers"]
    assert (ledger["ok"], ledger["error"], ledger["unvouched"]) == (True, None, 6)
    assert cli.main(["verify", str(bare)]) == 0
    assert "votes: no checkpoint: its 6 records are vouched for by nothing" in capsys.readouterr().out
    # A store's records past its latest checkpoint row, the same (its signed row is of size 3).
    store = str(_store(tmp_path / "s2", 6))
    assert cli.main(["verify", store]) == 0
    assert "votes: 3 records past its largest checkpoint (size 3)" in capsys.readouterr().out
    assert cli.main(["verify", store, "--require-checkpoint"]) == 1


HOME, STANDBY = HomeSigner("local", SEED), HomeSigner("local", SEED[::-1])


def _standby_export(
    directory: Path, out: Path, sixth: Content, origin: str, epoch_line: tuple[str, ...], signer: HomeSigner
) -> Path:
    """An export of a ledger whose genesis pins the home's key and a standby's (10.9), listing
    the rotation kind as geneses written before 13.8's rule did: notes 1..3, then ``sixth``'s
    record at 4 placed by ``origin``, a note at 5, and ``signer``'s checkpoint of size 6."""
    pinned = {
        "checkpoint_key": home_key("local", LEDGER, PUBLIC).encode(),
        "standby_key": STANDBY.key(LEDGER).verifier().encode(),
    }
    rules = LedgerRules(kinds=("checkpoint_key", "epoch", "note"), difficulty=0, rules=pinned)
    records = [
        Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS).place(0, ZERO_LINK, 1, "node-1")
    ]
    contents = [Content(LEDGER, "note", {"n": i}, "admin", f"r{i}", 1) for i in range(1, 4)]
    for i, (content, by) in enumerate([*((c, "node-1") for c in contents), (sixth, origin)], 1):
        records.append(Entry.prepare(content, 0, LIMITS).place(i, records[-1].link, 1, by))
    note = Content(LEDGER, "note", {"n": 5}, "admin", "r5", 1)
    records.append(Entry.prepare(note, 0, LIMITS).place(5, records[-1].link, 1, origin))
    with ChainStore(directory, origin="node-1") as store:
        store.append_records(records)
        signed = signer.sign(LEDGER, 6, store.root(LEDGER, 6), epoch_line)
        store.checkpoints.keep(LEDGER, "signed", 6, signed.root, signed.note)
    export_store(directory, None, out, LIMITS)
    return out


def test_verify_refuses_a_rotation_on_a_ledger_with_a_standby(tmp_path: Path) -> None:
    """Outsider o16 F4: `vledger verify` followed a rotation signed by the key in force on a
    ledger that hands over; such a ledger never rotates [standby_rotation]."""
    home = HOME.key(LEDGER)
    new = HomeSigner("local", bytes(range(2, 34))).key(LEDGER).verifier()
    rotation = Content(LEDGER, "checkpoint_key", rotation_payload(home, new), "admin", "rot", 1)
    report = verify_file(
        _standby_export(tmp_path / "s", tmp_path / "e.jsonl", rotation, "node-1", (), HOME), None, LIMITS
    )
    error = report.reports[0].error
    assert error is not None and (error.code, getattr(error, "height", None)) == ("standby_rotation", 4), error


def test_verify_refuses_the_replaced_home_s_checkpoint_of_a_handover_that_kept_its_key(tmp_path: Path) -> None:
    """Outsider o16 F5: a handover record naming node-2 but keeping the home's key opens no
    epoch, so the home's checkpoint stating epoch 2 is refused [bad_epoch]."""
    kept = Content(LEDGER, "epoch", epoch_payload(2, "node-2", home_key("local", LEDGER, PUBLIC)), "admin", "e", 1)
    out = _standby_export(tmp_path / "s", tmp_path / "e.jsonl", kept, "node-2", ("vledger-epoch 2 node-2",), HOME)
    error = verify_file(out, None, LIMITS).reports[0].error
    assert error is not None and error.code == "bad_epoch", error
    honest = Content(LEDGER, "epoch", epoch_payload(2, "node-2", STANDBY.key(LEDGER).verifier()), "admin", "e", 1)
    line = ("vledger-epoch 2 node-2",)
    out = _standby_export(tmp_path / "t", tmp_path / "f.jsonl", honest, "node-2", line, STANDBY)
    assert verify_file(out, None, LIMITS).ok
