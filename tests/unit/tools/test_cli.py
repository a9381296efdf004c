"""The vledger command, run in-process through main(argv) and once as the real console script."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.logs import KeyValueFormatter, configure_logging
from vledger.broker.node_lock import node_lock
from vledger.config.settings import Limits
from vledger.config.supervisor import EXIT_NODE_RUNNING
from vledger.node.errors import RecordError, SourceChangedError, StoreClosedError, TreeMismatchError
from vledger.node.export import max_line_bytes
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.tools import cli, demo, importing, verification
from vledger.tools.progress import Progress, render

LIMITS = Limits()
T0 = 1_790_000_000_000


# --- helpers ------------------------------------------------------------------------------


def add_records(directory: Path, ledger: str, count: int, difficulty: int = 0) -> None:
    """Give ``ledger`` ``count`` more records (its genesis first if it is new)."""
    with ChainStore(directory, origin="test-node") as store:
        entries = []
        if ledger not in store.ledgers():
            rules = LedgerRules(("note", "vote"), difficulty, {"choices": ["alice", "bob"]})
            entries.append(Entry.prepare(rules.genesis_content(ledger, "admin", "genesis", T0), difficulty, LIMITS))
        start = store.size(ledger) + len(entries)
        for i in range(start, start + count - len(entries)):
            content = Content(ledger, "note", {"n": i, "text": f"Zoë {i}"}, "Zoe.1", f"r-{i}", T0 + i)
            entries.append(Entry.prepare(content, difficulty, LIMITS))
        futures = [store.submit_entry(e) for e in entries]
        for future in futures:
            future.result()


def make_store(directory: Path, ledgers: dict[str, int] | None = None) -> Path:
    for ledger, count in (ledgers or {"alpha": 5, "beta": 4}).items():
        add_records(directory, ledger, count)
    return directory


def rows(directory: Path) -> list[tuple[str, int, bytes]]:
    with sqlite3.connect(directory / DB_NAME) as conn:
        return conn.execute("SELECT ledger, height, data FROM records ORDER BY ledger, height").fetchall()


def sql(directory: Path, statement: str, *args: Any) -> None:
    conn = sqlite3.connect(directory / DB_NAME)
    try:
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


def flip_byte(directory: Path, ledger: str, height: int) -> None:
    """Change one byte in the middle of a row's record bytes, as an attacker with the file could."""
    (data,) = [d for lg, h, d in rows(directory) if (lg, h) == (ledger, height)]
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    sql(directory, "UPDATE records SET data = ? WHERE ledger = ? AND height = ?", bytes(changed), ledger, height)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def ledger_entry(report: dict[str, Any], ledger: str) -> dict[str, Any]:
    (entry,) = [e for e in report["ledgers"] if e["ledger"] == ledger]
    return entry


def export(capsys: pytest.CaptureFixture[str], store: Path, target: Path) -> list[bytes]:
    code, _, err = run(capsys, "export", store, "-o", target)
    assert code == 0, err
    return target.read_bytes().splitlines(keepends=True)


def replace_line(path: Path, index: int, change: dict[str, Any]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    line = json.loads(lines[index])
    line.update(change)
    lines[index] = (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    path.write_bytes(b"".join(lines))


def tamper_record_in_line(path: Path, index: int) -> None:
    """Change one byte of the record a line carries, keeping the line itself well-formed."""
    line = json.loads(path.read_bytes().splitlines()[index])
    data = bytearray(base64.b64decode(line["record"]))
    data[-1] ^= 0x01  # the last byte of ``prev``: still a record, no longer the chained one
    replace_line(path, index, {"record": base64.b64encode(bytes(data)).decode()})


# --- verify a store -----------------------------------------------------------------------


def test_verify_a_valid_store_prints_each_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    with ChainStore(store) as opened:
        head = opened.head("alpha")
    assert head is not None
    code, out, err = run(capsys, "verify", store)
    assert code == 0, err
    assert f"alpha: OK, 5 records, head {head.hash.hex()}" in out
    assert "beta: OK, 4 records" in out
    assert "verified: OK" in out


def test_verify_json_has_the_documented_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    code, report = run_json(capsys, "verify", store)
    assert code == 0
    assert report["ok"] is True
    assert report["cosignatures"] == {"witness_keys": 0, "checked": 0, "unchecked": 0}
    assert [e["ledger"] for e in report["ledgers"]] == ["alpha", "beta"]
    entry = ledger_entry(report, "alpha")
    assert set(entry) == {
        "ledger",
        "records",
        "head",
        "checkpoints",
        "vouched",
        "unvouched",
        "cosignatures",
        "ok",
        "error",
        "rules",
    }
    assert entry["records"] == 5 and entry["ok"] is True and entry["error"] is None
    # A plain ledger: every record judged by the observers' rules, none flagged, no tally of a domain.
    assert entry["rules"] == {
        "judged": 5,
        "flagged": 0,
        "violations": [],
        "waiting": None,
        "tally": None,
        "counted": None,
    }
    assert report["rules"] == {"checked": True, "grants_judged": False}
    assert len(entry["head"]) == 64


def test_verify_one_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    flip_byte(store, "alpha", 1)
    code, report = run_json(capsys, "verify", store, "--ledger", "beta")
    assert code == 0
    assert [e["ledger"] for e in report["ledgers"]] == ["beta"]


def test_a_changed_byte_fails_naming_ledger_and_height(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    flip_byte(store, "beta", 2)
    code, out, _ = run(capsys, "verify", store)
    assert code == 1
    assert "beta: FAILED at height 2 [" in out
    assert "alpha: OK, 5 records" in out  # the other ledger is still checked
    code, report = run_json(capsys, "verify", store)
    assert code == 1 and report["ok"] is False
    beta = ledger_entry(report, "beta")
    assert beta["ok"] is False and beta["records"] == 2
    assert beta["error"]["height"] == 2 and beta["error"]["code"] and beta["error"]["message"]
    assert ledger_entry(report, "alpha")["ok"] is True


def test_a_deleted_row_is_a_height_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    sql(store, "DELETE FROM records WHERE ledger = 'alpha' AND height = 2")
    code, report = run_json(capsys, "verify", store)
    assert code == 1
    error = ledger_entry(report, "alpha")["error"]
    assert error["code"] == "height_gap" and error["height"] == 3
    assert "expected height 2" in error["message"]


def test_a_row_moved_to_another_height_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Moving the head keeps the chain itself intact: only the height column gives it away.
    store = make_store(tmp_path / "s")
    sql(store, "UPDATE records SET height = 99 WHERE ledger = 'alpha' AND height = 4")
    code, out, _ = run(capsys, "verify", store)
    assert code == 1
    assert "alpha: FAILED at height 99 [height_gap]: the row at height 99 holds the record of height 4" in out


def test_a_row_moved_from_the_middle_leaves_a_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    sql(store, "UPDATE records SET height = 50 WHERE ledger = 'beta' AND height = 1")
    code, report = run_json(capsys, "verify", store)
    assert code == 1
    assert ledger_entry(report, "beta")["error"]["code"] == "height_gap"


def test_undecodable_bytes_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    sql(store, "UPDATE records SET data = x'c1' WHERE ledger = 'alpha' AND height = 3")
    code, report = run_json(capsys, "verify", store)
    assert code == 1
    error = ledger_entry(report, "alpha")["error"]
    assert error["height"] == 3 and error["code"] == "bad_encoding"


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("hash", bytes(32), "00" * 32),
        ("hash", "not a blob", "a value stored as TEXT, not as BLOB"),
        ("author", "Mallory.1", "'Mallory.1'"),
        ("request_id", "r-forged", "'r-forged'"),
    ],
    ids=["hash", "hash-not-bytes", "author", "request_id"],
)
def test_an_index_column_that_lies_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str, value: bytes | str, shown: str
) -> None:
    # The record bytes and the chain are intact: only the lookup column disagrees with them.
    store = make_store(tmp_path / "s")
    sql(store, f"UPDATE records SET {column} = ? WHERE ledger = 'alpha' AND height = 2", value)
    code, out, _ = run(capsys, "verify", store)
    assert code == 1
    assert f"alpha: FAILED at height 2 [index_mismatch]: the {column} column holds {shown}, the record " in out
    assert "(2 records before it verified)" in out
    assert "beta: OK, 4 records" in out
    code, report = run_json(capsys, "verify", store)
    error = ledger_entry(report, "alpha")["error"]
    assert (error["code"], error["height"]) == ("index_mismatch", 2)
    code, _, err = run(capsys, "export", store, "-o", tmp_path / "e.jsonl")
    assert code == 1
    assert err.startswith(f"vledger: error: index_mismatch: ledger 'alpha' height 2: the {column} column holds {shown}")
    assert not (tmp_path / "e.jsonl").exists()


def test_a_row_moved_to_another_ledger_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    sql(store, "UPDATE records SET ledger = 'beta' WHERE ledger = 'alpha' AND height = 4")
    code, report = run_json(capsys, "verify", store)
    assert code == 1
    error = ledger_entry(report, "beta")["error"]
    assert (error["code"], error["height"]) == ("wrong_ledger", 4)


# --- export and verify an export file -----------------------------------------------------


def test_export_writes_one_canonical_line_per_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    lines = export(capsys, store, tmp_path / "e.jsonl")
    assert len(lines) == 9
    first = json.loads(lines[0])
    assert list(first) == ["ledger", "height", "hash", "record"]
    assert [(json.loads(x)["ledger"], json.loads(x)["height"]) for x in lines] == [
        *[("alpha", h) for h in range(5)],
        *[("beta", h) for h in range(4)],
    ]
    stored = {(lg, h): d for lg, h, d in rows(store)}
    for raw in lines:
        line = json.loads(raw)
        assert base64.b64decode(line["record"]) == stored[(line["ledger"], line["height"])]
        assert raw == (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def test_export_to_stdout_equals_the_file(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    store = make_store(tmp_path / "s")
    assert cli.main(["export", str(store), "--ledger", "beta"]) == 0
    out = capsysbinary.readouterr().out
    assert cli.main(["export", str(store), "--ledger", "beta", "-o", str(tmp_path / "b.jsonl")]) == 0
    capsysbinary.readouterr()
    assert out == (tmp_path / "b.jsonl").read_bytes()
    assert len(out.splitlines()) == 4


def test_export_of_a_damaged_store_fails_and_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    flip_byte(store, "beta", 1)
    code, _, err = run(capsys, "export", store, "-o", tmp_path / "e.jsonl")
    assert code == 1
    assert err.startswith("vledger: error: bad_field: ledger 'beta' height 1:")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_export_never_takes_the_place_of_a_store_s_database_or_a_special_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # -o chain.sqlite3 of a running node's store replaced its database by the export; -o /dev/full
    # (as root) replaced the device by a regular file: both rename a file over what was there.
    store = make_store(tmp_path / "s")
    before = (store / DB_NAME).read_bytes()
    copy = tmp_path / "copy.db"
    copy.write_bytes(before)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, says in (
        (store / DB_NAME, "store's database"),
        (store / f"{DB_NAME}-wal", "store's database"),
        (copy, "SQLite database"),
        (fifo, "not a regular file"),
        (tmp_path, "not a regular file"),
    ):
        code, _, err = run(capsys, "export", store, "-o", target)
        assert code == 2 and says in err, (target, err)
    assert (store / DB_NAME).read_bytes() == before and copy.read_bytes() == before
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "fifo", "s"]
    assert run(capsys, "verify", store)[0] == 0


def test_verify_a_valid_export_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    export(capsys, store, tmp_path / "e.jsonl")
    code, store_report = run_json(capsys, "verify", store)
    code_file, file_report = run_json(capsys, "verify", tmp_path / "e.jsonl")
    assert code == code_file == 0
    assert file_report == store_report


def test_a_tampered_record_in_an_export_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    export(capsys, make_store(tmp_path / "s"), path)
    tamper_record_in_line(path, 6)  # beta height 1
    code, out, _ = run(capsys, "verify", path)
    assert code == 1
    assert "beta: FAILED at height 1 [bad_link]" in out
    assert "alpha: OK, 5 records" in out


def test_a_line_whose_hash_lies_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    export(capsys, make_store(tmp_path / "s"), path)
    replace_line(path, 2, {"hash": "0" * 64})
    code, report = run_json(capsys, "verify", path)
    assert code == 1
    error = ledger_entry(report, "alpha")["error"]
    assert error == {"code": "bad_field", "height": 2, "line": 3, "message": error["message"]}
    assert error["message"].startswith("line 3: ")


def test_a_line_whose_height_lies_names_the_records_height(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    export(capsys, make_store(tmp_path / "s"), path)
    replace_line(path, 2, {"height": 7})
    code, report = run_json(capsys, "verify", path)
    error = ledger_entry(report, "alpha")["error"]
    assert (code, error["code"], error["height"], error["line"]) == (1, "bad_field", 2, 3)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda line: line[:-2] + b',"hops":1}\n', id="extra-key"),
        pytest.param(lambda line: line[:-2] + b',"height":2}\n', id="repeated-key"),
        pytest.param(lambda line: line[:-3] + b"A" * (max_line_bytes(LIMITS) + 10) + b'"}\n', id="overlong"),
        pytest.param(lambda line: line.replace(b'"ledger":"alpha"', b'"ledger":"alpha\\ud800"'), id="lone-surrogate"),
        pytest.param(lambda line: line[:-2] + b',"x":' + b"[" * 40_000 + b"]" * 40_000 + b"}\n", id="deep-40000"),
        pytest.param(lambda line: b"  " + line, id="names-no-ledger"),
    ],
)
def test_one_bad_line_fails_only_its_ledger_and_every_ledger_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any
) -> None:
    """The damaged line (alpha height 2) fails alpha there, with its line; beta is still read
    to its end. No ledger is ok unless every one of its lines was read and passed."""
    path = tmp_path / "e.jsonl"
    lines = export(capsys, make_store(tmp_path / "s"), path)
    lines[2] = damage(lines[2])
    path.write_bytes(b"".join(lines))
    code, report = run_json(capsys, "verify", path)
    assert code == 1 and report["ok"] is False and report["error"] is None
    alpha, beta = ledger_entry(report, "alpha"), ledger_entry(report, "beta")
    assert alpha["ok"] is False and alpha["records"] == 2
    assert (alpha["error"]["height"], alpha["error"]["line"]) == (2, 3)
    assert alpha["error"]["code"] == ("too_large" if len(lines[2]) > max_line_bytes(LIMITS) else "bad_line")
    assert alpha["error"]["message"].startswith("line 3: ") and len(alpha["error"]["message"]) > 10
    assert beta["ok"] is True and beta["records"] == 4
    code, out, err = run(capsys, "verify", path)
    assert "Traceback" not in out + err and "beta: OK, 4 records" in out


def test_a_first_line_that_names_no_ledger_fails_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    lines = export(capsys, make_store(tmp_path / "s"), path)
    path.write_bytes(b"".join([lines[0].replace(b'{"ledger":"alpha"', b'{"ledger" "alpha"'), *lines[1:]]))
    code, report = run_json(capsys, "verify", path)
    assert code == 1 and report["ok"] is False
    assert (report["error"]["code"], report["error"]["line"]) == ("bad_line", 1)
    assert report["error"]["message"].startswith("line 1: ")
    # alpha's genesis went with it: alpha starts at height 1; beta is read all the same.
    assert ledger_entry(report, "alpha")["error"]["code"] == "height_gap"
    assert ledger_entry(report, "beta")["ok"] is True
    code, out, _ = run(capsys, "verify", path)
    assert f"{path}: FAILED [bad_line]: line 1:" in out


def test_a_crlf_file_gets_one_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    lines = export(capsys, make_store(tmp_path / "s"), path)
    path.write_bytes(b"".join(line.replace(b"\n", b"\r\n") for line in lines))
    code, report = run_json(capsys, "verify", path)
    assert code == 1 and report["ledgers"] == []
    assert (report["error"]["code"], report["error"]["line"]) == ("bad_line", 1)
    assert "CR LF" in report["error"]["message"]
    assert run_json(capsys, "verify", path, "--ledger", "beta")[1]["error"]["code"] == "bad_line"


def test_an_export_missing_its_first_line_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    lines = export(capsys, make_store(tmp_path / "s"), path)
    path.write_bytes(b"".join(lines[1:]))
    code, report = run_json(capsys, "verify", path)
    assert code == 1
    assert ledger_entry(report, "alpha")["error"]["code"] == "height_gap"


def test_an_overlong_line_fails_its_ledger_and_the_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    lines = export(capsys, make_store(tmp_path / "s"), path)
    path.write_bytes(b"".join([*lines[:2], b"x" * (max_line_bytes(LIMITS) + 10) + b"\n", *lines[2:]]))
    code, report = run_json(capsys, "verify", path)
    assert code == 1 and report["ok"] is False and report["error"] is None
    error = ledger_entry(report, "alpha")["error"]
    assert (error["code"], error["height"], error["line"]) == ("too_large", 2, 3)
    assert ledger_entry(report, "beta")["ok"] is True
    code, out, _ = run(capsys, "import", path, "--store", tmp_path / "copy")
    assert code == 1
    assert "alpha: FAILED at height 2 [too_large]: line 3: " in out and "nothing was imported" in out
    assert not (tmp_path / "copy").exists()


# --- import -------------------------------------------------------------------------------


def test_export_import_round_trip_is_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    export(capsys, store, tmp_path / "e.jsonl")
    code, out, err = run(capsys, "import", tmp_path / "e.jsonl", "--store", tmp_path / "copy")
    assert code == 0, err
    assert "alpha: 5 imported, 0 already present" in out
    assert rows(tmp_path / "copy") == rows(store)
    assert run(capsys, "verify", tmp_path / "copy")[0] == 0


def test_import_and_demo_make_no_store_among_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `import FILE --store run/keys` and `demo --store run/keys` made a store (and blobs/) in the
    # key directory, beside the secrets: a directory of other files is no store to write into.
    store = make_store(tmp_path / "s")
    export(capsys, store, tmp_path / "e.jsonl")
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "admin.key_secret").write_text("secret")
    for argv in (("import", tmp_path / "e.jsonl", "--store", keys), ("demo", "--store", keys, "--records", "2")):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "a directory of other files, not a vledger store" in err, err
    assert sorted(p.name for p in keys.iterdir()) == ["admin.key_secret"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, "import", tmp_path / "e.jsonl", "--store", empty)[0] == 0  # an empty one is fine
    assert rows(empty) == rows(store)


def test_import_into_a_store_a_running_node_holds_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # outsider o13: nothing kept a second writer off a running node's store, which the node then
    # read as damage (a false store_damaged). The node holds the lock; an import writes nothing.
    source = make_store(tmp_path / "s", {"alpha": 3})
    export(capsys, source, tmp_path / "first.jsonl")
    target = tmp_path / "node"
    assert run(capsys, "import", tmp_path / "first.jsonl", "--store", target)[0] == 0
    add_records(source, "alpha", 2)
    export(capsys, source, tmp_path / "e.jsonl")
    before = rows(target)
    with node_lock(target, "node replica-1"):
        code, out, err = run(capsys, "import", tmp_path / "e.jsonl", "--store", target)
    assert code == EXIT_NODE_RUNNING and "node_running" in err and "node.lock is locked" in err, out + err
    assert rows(target) == before
    assert run(capsys, "import", tmp_path / "e.jsonl", "--store", target)[0] == 0  # once it is let go
    assert rows(target) == rows(source)


def test_import_of_a_tampered_export_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    export(capsys, make_store(tmp_path / "s"), path)
    tamper_record_in_line(path, 8)  # the very last line: beta's head
    code, out, _ = run(capsys, "import", path, "--store", tmp_path / "new")
    assert code == 1
    assert "beta: FAILED at height 3" in out and "nothing was imported" in out
    assert not (tmp_path / "new").exists()
    existing = make_store(tmp_path / "old", {"gamma": 2})
    before = rows(existing)
    code, report = run_json(capsys, "import", path, "--store", existing)
    assert code == 1 and report["ok"] is False
    assert ledger_entry(report, "alpha")["imported"] == 0
    assert rows(existing) == before


def test_import_appends_only_what_the_store_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_store(tmp_path / "s", {"alpha": 3})
    export(capsys, source, tmp_path / "first.jsonl")
    assert run(capsys, "import", tmp_path / "first.jsonl", "--store", tmp_path / "copy")[0] == 0
    add_records(source, "alpha", 4)
    add_records(source, "beta", 2)
    export(capsys, source, tmp_path / "second.jsonl")
    code, report = run_json(capsys, "import", tmp_path / "second.jsonl", "--store", tmp_path / "copy")
    assert code == 0
    alpha = ledger_entry(report, "alpha")
    assert (alpha["imported"], alpha["present"], alpha["records"]) == (4, 3, 7)
    assert (ledger_entry(report, "beta")["imported"], ledger_entry(report, "beta")["present"]) == (2, 0)
    assert rows(tmp_path / "copy") == rows(source)
    code, report = run_json(capsys, "import", tmp_path / "second.jsonl", "--store", tmp_path / "copy")
    assert code == 0 and ledger_entry(report, "alpha")["present"] == 7


def test_import_continues_a_file_that_starts_above_genesis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_store(tmp_path / "s", {"alpha": 6})
    lines = export(capsys, source, tmp_path / "all.jsonl")
    (tmp_path / "head.jsonl").write_bytes(b"".join(lines[:3]))
    (tmp_path / "tail.jsonl").write_bytes(b"".join(lines[3:]))
    code, report = run_json(capsys, "import", tmp_path / "tail.jsonl", "--store", tmp_path / "copy")
    assert code == 1 and ledger_entry(report, "alpha")["error"]["code"] == "height_gap"
    assert not (tmp_path / "copy").exists()
    assert run(capsys, "import", tmp_path / "head.jsonl", "--store", tmp_path / "copy")[0] == 0
    code, report = run_json(capsys, "import", tmp_path / "tail.jsonl", "--store", tmp_path / "copy")
    assert code == 0 and ledger_entry(report, "alpha")["imported"] == 3
    assert rows(tmp_path / "copy") == rows(source)


def test_import_refuses_a_store_with_another_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export(capsys, make_store(tmp_path / "s", {"alpha": 3}), tmp_path / "e.jsonl")
    other = tmp_path / "other"
    add_records(other, "alpha", 2, difficulty=1)  # a different genesis under the same name
    before = rows(other)
    code, report = run_json(capsys, "import", tmp_path / "e.jsonl", "--store", other)
    assert code == 1
    error = ledger_entry(report, "alpha")["error"]
    assert error["code"] == "record_conflict" and error["height"] == 0
    assert rows(other) == before


def test_import_appends_only_the_bytes_it_verified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """If the file changes between the verifying pass and the appending pass, nothing unverified goes in."""
    lines = export(capsys, make_store(tmp_path / "s", {"alpha": 4}), tmp_path / "e.jsonl")
    with (tmp_path / "e.jsonl").open("rb") as f:
        view = importing.StoreView(tmp_path / "copy", LIMITS)
        plan = importing.plan_import(f, view, LIMITS, chunk_size=2)
    assert plan.verification.ok and len(plan.digests) == 2
    swapped = io.BytesIO(b"".join([*lines[:2], lines[3], lines[2]]))
    changed = pytest.raises(SourceChangedError, match="changed while it was imported")
    with ChainStore(tmp_path / "copy") as store, changed:
        importing.apply_import(swapped, plan, store, LIMITS, chunk_size=2)
    assert [h for _, h, _ in rows(tmp_path / "copy")] == [0, 1]  # the first chunk, as verified


def test_an_import_the_store_stops_says_how_far_it_got(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    export(capsys, make_store(tmp_path / "s", {"alpha": 3}), tmp_path / "e.jsonl")

    def refuse(store: ChainStore, records: Any) -> None:
        raise StoreClosedError("the store is shutting down")

    monkeypatch.setattr(ChainStore, "append_records", refuse)
    code, _, err = run(capsys, "import", tmp_path / "e.jsonl", "--store", tmp_path / "copy")
    assert code == 1
    assert err == (
        "vledger: import stopped after appending 0 verified records\n"
        "vledger: error: store_closed: the store is shutting down\n"
    )


# --- demo ---------------------------------------------------------------------------------


def test_demo_runs_twice_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "demo"
    code, out, err = run(capsys, "demo", "--store", store, "--records", "8", "--difficulty", "4")
    assert code == 0, err
    assert out.count("verified: OK") == 3
    assert f"vledger verify {store}" in out and f"vledger export {store}" in out
    code, out, err = run(capsys, "demo", "--store", store, "--records", "8", "--difficulty", "4")
    assert code == 0, err
    assert "reopened" in out
    code, report = run_json(capsys, "verify", store)
    assert code == 0
    counts = {e["ledger"]: e["records"] for e in report["ledgers"]}
    assert counts == {"election-2026": 9, "zakat": 5, "resources": 5}
    with ChainStore(store) as opened:
        assert opened.rules("election-2026").rules == {"choices": ["alice", "bob", "carol"]}
        assert opened.rules("zakat").difficulty == 4
        notes = [r.content.payload.get("note", "") for r in opened.range("election-2026")]
    assert any("Zoë" in note for note in notes)


def test_demo_contents_number_on_from_the_store() -> None:
    first = demo.demo_contents({}, 8, T0)
    again = demo.demo_contents({"election-2026": 5, "zakat": 3, "resources": 3}, 8, T0)
    ids = {(c.ledger, c.author, c.request_id) for c in first}
    assert ids.isdisjoint((c.ledger, c.author, c.request_id) for c in again)
    voters = [c.payload["voter"] for c in first if c.ledger == "election-2026"]
    assert voters[:2] == ["V-000001", "V-000001"]
    assert all(isinstance(c.payload.get("amount", 0), int) for c in first)


# --- usage and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["verify"],
        ["verify", "--no-such-option", "."],
        ["verify", "--ledger", "Not A Name", "."],
        ["import", "e.jsonl"],
        ["import", "e.jsonl", "--store", "x", "--node", "Bad Node"],
        ["demo"],
        ["demo", "--store", "x", "--records", "0"],
        ["--log-level", "loud", "verify", "."],
    ],
)
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage: vledger" in err and "Traceback" not in err


def test_paths_that_are_neither_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    (tmp_path / "empty").mkdir()
    cases = [
        (["verify", tmp_path / "missing"], "no such store directory or export file"),
        (["import", tmp_path / "missing", "--store", tmp_path / "x"], "no such export file"),
        (["verify", tmp_path / "empty"], "not a vledger store"),
        (["verify", store / DB_NAME], "give its directory"),
        (["export", tmp_path / "missing"], "not a vledger store"),
        (["import", tmp_path / "empty", "--store", tmp_path / "x"], "not an export file"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert err.startswith("vledger: error: ") and message in err and "Traceback" not in err


def test_an_unknown_ledger_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s")
    code, _, err = run(capsys, "export", store, "--ledger", "nope")
    assert code == 1
    assert err == "vledger: error: no_such_ledger: ledger 'nope' is not in this store or file\n"


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("verify", "export", "import", "demo"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and f"usage: vledger {command}" in out
    assert "--difficulty" not in run(capsys, "demo", "--help")[1]
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("vledger ")


def test_the_console_script(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    script = Path(sys.executable).parent / "vledger"
    assert script.exists(), "run the tests with the project's virtualenv (.venv/bin/python -m pytest)"
    done = subprocess.run([script, "verify", store, "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert done.stderr == ""  # no progress bar: stderr is not a terminal
    flip_byte(store, "alpha", 4)
    done = subprocess.run([script, "verify", store], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "alpha: FAILED at height 4" in done.stdout
    done = subprocess.run([script, "verify", tmp_path / "nothing"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.startswith("vledger: error:")


# What only the commands of nodes and clusters need: `vledger verify` must start without them.
CLUSTER_MODULES = ("aiohttp", "redis", "zmq", "prometheus_client", "vledger.tools.client_commands")


def imported_by(argv: list[str]) -> tuple[int, list[str]]:
    """main(argv)'s exit code in a fresh interpreter, and which CLUSTER_MODULES it imported."""
    probe = (
        "import json, sys\nfrom vledger.tools.cli import main\n"
        f"code = main({argv!r})\n"
        f"print(json.dumps([code, [m for m in {CLUSTER_MODULES!r} if m in sys.modules]]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    code, modules = json.loads(done.stdout.splitlines()[-1])
    return code, modules


def test_a_local_command_imports_no_cluster_module(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    assert imported_by(["--log", "info", "verify", str(store), "--json"]) == (0, [])


# What `vledger verify` of a store needs only to check a signature (node/note.py) or to name a
# node's exit status (config/supervisor.py): imported when used, not before its workers start.
START_UP_SPARED = ("Crypto", "nacl", "cffi", "vledger.config.cluster", "vledger.config.supervisor")


def test_the_command_line_starts_without_the_signature_libraries() -> None:
    probe = (
        "import json, sys\nimport vledger.tools.cli, vledger.tools.verification\n"
        f"print(json.dumps([m for m in {START_UP_SPARED!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize(
    ("words", "command"),
    [
        (["verify", "x"], "verify"),
        (["--log-level", "debug", "export", "s"], "export"),
        (["--log", "debug", "import", "f"], "import"),
        (["--log-level=debug", "verify"], "verify"),
        (["--help", "verify"], None),
        (["--version", "verify"], None),
        (["-h"], None),
        (["--", "verify"], None),
        (["--log-level"], None),
        ([], None),
        (["status", "verify"], "status"),
    ],
)
def test_the_command_word_is_found_only_behind_the_log_level(words: list[str], command: str | None) -> None:
    assert cli._command_word(words) == command


# --- progress and logs --------------------------------------------------------------------


def test_render_shows_count_rate_and_eta() -> None:
    assert render("verifying", 50, 200, 5.0, 10.0) == "verifying [######------------------] 50/200 (10.0/s, ETA 0:15)"
    assert render("verifying", 200, 200, 5.0).endswith("200/200 (40.0/s, ETA 0:00)")
    assert render("verifying", 7, None, 2.0) == "verifying 7 (3.5/s)"
    # No measured rate yet: no ETA, rather than hours guessed from the start-up.
    assert render("records", 1, 1000, 7.5).endswith("1/1000 (0.1/s, ETA --:--)")


def test_the_first_eta_waits_for_a_measured_rate() -> None:
    """The demo's first line used to read ETA 2:04:48: one record after 7.5 s of start-up."""
    stream = io.StringIO()
    ticks = iter([0.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0])  # start, then a record every 0.5 s
    with Progress("records", 1000, stream=stream, enabled=True, interval=0.0, clock=lambda: next(ticks)) as progress:
        for _ in range(5):
            progress.advance()
    lines = stream.getvalue().replace("\r", "\n").split()
    etas = [lines[i + 1] for i, word in enumerate(lines) if word == "ETA"]
    assert etas[:2] == ["--:--)", "--:--)"]  # at 7.5 s and 8.0 s: no rate over a second yet
    assert etas[2] == "8:18)"  # at 8.5 s: 2 records a second, 997 left


def test_progress_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("working", 3, stream=stream) as progress:
        progress.advance(3)
    assert stream.getvalue() == ""


def test_progress_draws_one_line_on_a_terminal() -> None:
    stream = io.StringIO()
    ticks = iter(range(100))
    with Progress("working", 2, stream=stream, enabled=True, clock=lambda: float(next(ticks))) as progress:
        progress.advance()
        progress.advance()
    text = stream.getvalue()
    assert text.startswith("\rworking [") and text.endswith("2/2 (0.5/s, ETA 0:00)\n")
    assert text.count("\n") == 1


def test_logs_are_single_key_value_lines() -> None:
    stream = io.StringIO()
    configure_logging("info", stream)
    try:
        logging.getLogger("vledger.tools.test").info('said "hi"\nand left %d', 2)
        logging.getLogger("vledger.tools.test").debug("not shown")
    finally:
        configure_logging("warning")
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("ts=") and line.endswith(
        ' level=info logger=vledger.tools.test msg="said \\"hi\\"\\nand left 2"'
    )
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    assert "\n" not in KeyValueFormatter().format(record)


def test_expected_failures_are_record_errors(tmp_path: Path) -> None:
    """The commands raise our errors, not bare exceptions, so main() can report them."""
    store = make_store(tmp_path / "s")
    flip_byte(store, "alpha", 0)
    result = verification.verify_store(store, None, LIMITS)
    assert not result.ok
    assert isinstance(result.reports[0].error, RecordError)


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["repl", "status"],
        ["tally", "zakat"],
        ["alerts"],
        ["alerts", "--follow"],
        ["verify", "--cluster"],
    ],
)
def test_cluster_commands_read_the_configuration_from_vledger_config(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `make run` says: export VLEDGER_CONFIG once, and every command finds the cluster."""
    exported = tmp_path / "exported.toml"  # missing: the error shows that this is the file read
    monkeypatch.setenv("VLEDGER_CONFIG", str(exported))
    assert cli.main(argv) == 2  # a missing file is a usage error (test_missing_paths.py)
    assert f"$VLEDGER_CONFIG {exported}: no such file" in capsys.readouterr().err
    exported.write_text("[cluster]\nname = 'x'\n", encoding="utf-8")
    monkeypatch.setenv("VLEDGER_KEY", str(exported))  # there (`status` wants one): the configuration is read
    assert cli.main(argv) == 1
    assert f"bad_settings: {exported}: " in capsys.readouterr().err
    given = tmp_path / "given.toml"
    assert cli.main([*argv, "--config", str(given)] if argv != ["verify", "--cluster"] else [*argv, str(given)]) == 2
    assert f"{given}: no such file" in capsys.readouterr().err


def test_vledger_without_arguments_lists_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: vledger")
    for command in ("verify", "status", "tally", "ledger", "put", "get", "range", "alerts", "shell"):
        assert f"\n    {command} " in err or f"\n    {command}\n" in err, command


def test_each_store_verification_bar_says_which_store_and_what_it_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels: list[str] = []

    class Recorded(Progress):
        def __init__(self, label: str, total: int | None = None, **kwargs: Any) -> None:
            labels.append(label)
            super().__init__(label, total, **kwargs)

    monkeypatch.setattr(verification, "Progress", Recorded)
    for node in ("ingest-1", "replica-2"):
        add_records(tmp_path / node, "election", 3)
        assert verification.verify_path(tmp_path / node, None, Limits()).ok
    assert labels == [
        "verifying ingest-1: checksums, work, links",
        "verifying replica-2: checksums, work, links",
    ]


def test_words_left_after_options_are_refused_unless_the_command_takes_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """cli.main takes words argparse leaves over only for a command that names a list for them
    (``alerts resolve --config F KEY``); for any other command they stay a usage error."""
    assert cli.main(["size", "zakat", "--timeout", "1", "stray"]) == 2
    assert "unrecognized arguments: stray" in capsys.readouterr().err
    assert cli.main(["alerts", "resolve", "--json", "--bogus", "a|b|c"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_failure_with_json_is_one_json_object_on_stdout_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A script reading stdout got nothing at all; the line on stderr stays as it was.
    store = make_store(tmp_path / "s")
    code, out, err = run(capsys, "verify", store, "--ledger", "nosuch", "--json")
    assert code == 1
    assert json.loads(out) == {
        "error": {"code": "no_such_ledger", "message": "ledger 'nosuch' is not in this store or file"}
    }
    assert out.count("\n") == 1
    assert err.startswith("vledger: error: no_such_ledger: ledger 'nosuch")
    code, out, err = run(capsys, "verify", tmp_path / "missing", "--json")
    assert code == 2
    assert (
        json.loads(out)["error"]["code"] == "usage" and str(tmp_path / "missing") in json.loads(out)["error"]["message"]
    )
    assert "(see: vledger verify --help)" in err
    code, out, err = run(capsys, "verify", tmp_path / "missing")
    assert code == 2 and out == "" and "no such store directory" in err


def test_verify_names_the_changed_record_where_the_node_names_the_tree_row_over_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # README: a record whose bytes changed fails the node's open check at the stored subtree
    # over it (leaves 96..111: level 4, index 6), and `vledger verify DIR` at the record itself.
    store = make_store(tmp_path / "s", {"alpha": 120})
    flip_byte(store, "alpha", 100)
    with pytest.raises(TreeMismatchError, match="level 4, index 6"):
        ChainStore(store, origin="test-node").close()
    code, report = run_json(capsys, "verify", store)
    assert code == 1 and ledger_entry(report, "alpha")["error"]["height"] == 100
    # A tree row changed with its records intact: both name that row.
    make_store(tmp_path / "t", {"alpha": 120})
    sql(tmp_path / "t", "UPDATE tree SET hash = ? WHERE ledger = 'alpha' AND level = 4 AND idx = 6", bytes(32))
    with pytest.raises(TreeMismatchError, match="level 4, index 6"):
        ChainStore(tmp_path / "t", origin="test-node").close()
    code, out, _ = run(capsys, "verify", tmp_path / "t")
    assert code == 1 and "level 4, index 6" in out, out
