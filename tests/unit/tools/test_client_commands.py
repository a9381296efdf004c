"""The client verbs, the interactive shell and their pure parts, without a network.

The remote side is :class:`SimulatedNode`: a real ChainStore with the real rules engine behind
the answers of docs/PROTOCOL.md section 6, called in-process. A verb runs either through
``cli.main`` (exit codes, stdout and stderr) with the session pool swapped for one that opens
sessions on the simulator, or through a :class:`Shell`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from Crypto.Cipher import AES

from vledger.broker.client import NodeAddress
from vledger.broker.keys import generate, load_public
from vledger.broker.seal_keys import read_seal_key, write_seal_key
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.broker.tallies import TallyBoard
from vledger.client.session import Session
from vledger.config.cluster import REDIS_URL_ENV, IngestSettings, load_cluster
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.errors import (
    BadChecksumError,
    HeightGapError,
    KeyExistsError,
    KeyMaterialError,
    KeyPermissionsError,
    NodeUnavailableError,
    PassphraseError,
    RemoteError,
    SealError,
    SourceChangedError,
    UsageError,
    VledgerError,
)
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry, Record, decode_content, decode_record
from vledger.node.rules.admin import ADMIN_LEDGER, admin_genesis_rules
from vledger.node.rules.engine import RulesEngine, check_new_rules
from vledger.node.sealed import MAX_INFO_BYTES, is_sealed, seal, siv_encrypt, unseal
from vledger.node.store import ChainStore
from vledger.node.times import time_text
from vledger.tools import cli, client_commands
from vledger.tools import client_payloads as build
from vledger.tools import shell as shell_module
from vledger.tools.client_commands import donor_id, ledger_rules, public_key_argument, shell_parser
from vledger.tools.client_output import print_hello
from vledger.tools.client_payloads import Write, parse_json_map
from vledger.tools.client_session import ClientOptions, SessionPool, load_client_keys
from vledger.tools.file_transfer import chunk_size, chunks, destination, download_file, upload_file
from vledger.tools.name_holdings import Holding, holdings
from vledger.tools.progress import Progress
from vledger.tools.shell import Shell, completions, error_line
from vledger.verifier.tally import TallyKeeper

T0 = 1_790_000_000_000
OBSERVER_PORTS = {"observer-1": 7394, "observer-2": 7395}
DAY = 86_400_000
ELECTION_RULES = {"type": "election", "choices": ["yes", "no"], "opens": T0 - DAY, "closes": T0 + DAY}
CHARITY_RULES = {"type": "charity", "currency": "SAR", "funds": ["zakat"]}
RESOURCES_RULES = {"type": "resources", "unit": "credits", "issuers": ["alice"]}
FILES_RULES = {"type": "files", "read": "public"}


# --- the remote side -------------------------------------------------------------------------


class SimulatedNode:
    """An ingest node in memory: the protocol's commands over a real store and rules engine."""

    def __init__(self, directory: Path, account: str = "alice", role: str = "admin", page_size: int = 500) -> None:
        self.store = ChainStore(directory, origin="ingest-1", clock=lambda: T0, domain=RulesEngine())
        self.account = account
        self.role = role
        self.page_size = page_size
        self.calls: list[tuple[str, dict[str, Any], NodeAddress | None]] = []
        self.blobs: dict[str, bytes] = {}
        self.grants: list[tuple[str, str, str]] = []  # grant.add's, in order
        self.parts: dict[str, bytearray] = {}
        self.closed = False
        # A test replaces an answer by putting a function here under the command's name.
        self.override: dict[str, Callable[[dict[str, Any]], Any]] = {}

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: NodeAddress | None = None) -> Any:
        args = args or {}
        self.calls.append((cmd, args, node))
        handler = self.override.get(cmd) or getattr(self, "_" + cmd.replace(".", "_"), None)
        if handler is None:
            raise RemoteError("unknown_command", f"unknown command {cmd!r}", {})
        try:
            return handler(args)
        except (RemoteError, NodeUnavailableError):  # a refusal as sent, or no answer at all
            raise
        except VledgerError as e:
            raise RemoteError(e.code, e.message, {}) from e

    def close(self) -> None:
        self.closed = True

    def sent(self, cmd: str) -> list[dict[str, Any]]:
        return [args for name, args, _ in self.calls if name == cmd]

    def contents(self) -> list[Content]:
        """The contents of every record written (put and ledger.create), in order."""
        return [
            decode_content(args["content"], PROTOCOL_LIMITS)
            for name, args, _ in self.calls
            if name in ("put", "ledger.create")
        ]

    def _entry(self, args: dict[str, Any]) -> Entry:
        entry = Entry.from_wire(args["content"], args["nonce"], PROTOCOL_LIMITS)
        if entry.content.author != self.account:
            raise RemoteError("forbidden", "a record's author must be the caller's account", {})
        return entry

    def _record(self, record: Record | None) -> dict[str, Any]:
        if record is None:
            raise RemoteError("not_found", "no such record on this node", {})
        return {"record": record.encode()}

    @staticmethod
    def _receipt(receipt: Any) -> dict[str, Any]:
        keys = ("ledger", "height", "hash", "checksum", "duplicate", "values")
        return {key: getattr(receipt, key) for key in keys}

    def _hello(self, args: dict[str, Any]) -> Any:
        return {"node": "ingest-1", "version": "0.1.0", "protocol": 1, "ledgers": self.store.ledgers()} | {
            "account": self.account,
            "role": self.role,
        }

    def _whoami(self, args: dict[str, Any]) -> Any:
        return {"account": self.account, "role": self.role, "key": "k" * 40}

    def _help(self, args: dict[str, Any]) -> Any:
        return {"commands": [{"name": "put", "args": "content nonce", "roles": ["admin"], "summary": "append"}]}

    def _ledger_create(self, args: dict[str, Any]) -> Any:
        entry = self._entry(args)
        check_new_rules(
            entry.content.ledger, LedgerRules.from_genesis(entry.content, PROTOCOL_LIMITS).rules
        )  # as a home
        return self._receipt(self.store.create_ledger(entry))

    def _put(self, args: dict[str, Any]) -> Any:
        return self._receipt(self.store.append(self._entry(args)))

    def _ledger_list(self, args: dict[str, Any]) -> Any:
        ledgers = []
        for ledger in self.store.ledgers():
            rules = self.store.rules(ledger)
            ledgers.append(
                {
                    "ledger": ledger,
                    "home": "ingest-1",
                    "size": self.store.size(ledger),
                    "head": None,
                    "difficulty": rules.difficulty,
                    "kinds": list(rules.kinds),
                    "type": rules.rules.get("type", "plain"),
                }
            )
        return {"ledgers": ledgers}

    def _get(self, args: dict[str, Any]) -> Any:
        if "hash" in args:
            return self._record(self.store.get_by_hash(args["hash"]))
        return self._record(self.store.get(args["ledger"], args["height"]))

    def _range(self, args: dict[str, Any]) -> Any:
        start = args["start"]
        rows = list(self.store.range_raw(args["ledger"], start, start + self.page_size))
        end = start + len(rows)
        return {"records": [data for _, data in rows], "next": end if end < self.store.size(args["ledger"]) else None}

    def _head(self, args: dict[str, Any]) -> Any:
        record = self.store.head(args["ledger"])
        if record is None:
            raise RemoteError("not_found", "no such ledger", {})
        return {"height": record.height, "hash": record.hash, "record": record.encode()}

    def _size(self, args: dict[str, Any]) -> Any:
        return {"size": self.store.size(args["ledger"])}

    def _grant_add(self, args: dict[str, Any]) -> Any:
        grant = (args["ledger"], args["kind"], args["account"])
        if grant in self.grants:
            raise RemoteError("already_granted", f"{grant[2]!r} already holds {grant[1]!r} on {grant[0]!r}", {})
        self.grants.append(grant)
        return {**dict(zip(("ledger", "kind", "account"), grant, strict=True)), "height": len(self.grants)}

    def _file_upload(self, args: dict[str, Any]) -> Any:
        sha256, size, offset, data = args["sha256"], args["size"], args["offset"], args["data"]
        if sha256 in self.blobs:
            return {"received": size, "complete": True}
        part = self.parts.setdefault(sha256, bytearray())
        assert offset == len(part), "the client must continue where the node stands"
        part.extend(data)
        if len(part) < size:
            return {"received": len(part), "complete": False}
        assert hashlib.sha256(part).hexdigest() == sha256
        self.blobs[sha256] = bytes(self.parts.pop(sha256))
        return {"received": size, "complete": True}

    def _file_download(self, args: dict[str, Any]) -> Any:
        blob = self.blobs.get(args["sha256"])
        if blob is None:
            raise RemoteError("not_found", "no such file, or not one you may read", {})
        offset = args["offset"]
        return {"data": blob[offset : offset + args["length"]], "size": len(blob)}

    def _account_op(self, args: dict[str, Any]) -> Any:
        return {**args, "pending": [], "version": 7}

    _account_add = _account_remove = _account_enable = _account_disable = _key_add = _key_revoke = _account_op

    def _account_list(self, args: dict[str, Any]) -> Any:
        return {"accounts": [{"account": "alice", "role": "admin", "enabled": True, "keys": []}]}


def write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "cluster.toml"
    path.write_text(
        '[cluster]\nkeys = "keys"\ndata = "data"\ndefault_home = "ingest-1"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
        '[nodes.ingest-2]\nrole = "ingest"\nport = 7391\npub_port = 7393\n'
        '[ledgers.far]\nhome = "ingest-2"\n' + extra
    )
    return path


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SimulatedNode]:
    simulated = SimulatedNode(tmp_path / "store")
    yield simulated
    simulated.store.close()


@pytest.fixture
def session(tmp_path: Path, node: SimulatedNode) -> Session:
    config = load_cluster(write_config(tmp_path))
    generate(tmp_path / "keys", "ingest-2")  # the second ingest node's public key, for its address
    ids = iter(f"req-{i}" for i in range(1000))
    return Session(config, config.node("ingest-1"), node, clock=lambda: T0, request_ids=lambda: next(ids))


class Run:
    """``vledger ARGS`` in-process against the simulator: exit code, stdout, stderr."""

    def __init__(self, session: Session, capsys: pytest.CaptureFixture[str]) -> None:
        self.session = session
        self.capsys = capsys
        self.options: list[ClientOptions] = []

    def pool(self) -> SessionPool:
        def opener(options: ClientOptions) -> Session:
            self.options.append(options)
            return self.session

        return SessionPool(opener)

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def vledger(session: Session, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    run = Run(session, capsys)
    monkeypatch.setattr(client_commands, "SessionPool", run.pool)
    monkeypatch.setenv("VLEDGER_KEY", "/nonexistent/alice.key_secret")  # the opener above never reads it
    monkeypatch.delenv("VLEDGER_CONFIG", raising=False)
    return run


def create(vledger: Run, ledger: str, kinds: str = "note", rules: dict[str, Any] | None = None) -> None:
    argv = ["ledger", "create", ledger, "--kinds", kinds, "--difficulty", "2", "--rules", json.dumps(rules or {})]
    code, _, err = vledger(*argv)
    assert code == 0, err


# --- JSON from the command line ----------------------------------------------------------------


@pytest.mark.parametrize("text", ['{"a": 1.5}', '{"a": 1e3}', '{"a": -0.0}', '{"a": [1, {"b": 2.0}]}'])
def test_json_floats_are_refused_with_the_minor_units_rule(text: str) -> None:
    with pytest.raises(UsageError, match="minor units"):
        parse_json_map(text, "--payload")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": NaN}', "NaN is not a number a record can hold"),
        ('{"a": -Infinity}', "-Infinity is not a number"),
        ('{"a": 1, "a": 2}', r"repeated keys \['a'\]"),
        ("[1, 2]", "must be a JSON object .* not an array"),
        ("null", "not null"),
        ('"text"', "not a string"),
        ('{"a": 1', "not valid JSON: Expecting ',' delimiter \\(line 1, column 8\\)"),
        ("", "not valid JSON"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON: nested deeper"),  # no RecursionError
    ],
)
def test_json_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_json_map(text, "--payload")


def test_json_keeps_integers_text_and_nesting() -> None:
    payload = parse_json_map('{"amount": 1250, "big": 18446744073709551615, "name": "Zoë", "x": [null, true]}', "p")
    assert payload == {"amount": 1250, "big": 2**64 - 1, "name": "Zoë", "x": [None, True]}


# --- argument types ----------------------------------------------------------------------------


def _argument_error(check: Callable[[str], Any], value: str) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        check(value)
    return str(raised.value)


def test_amounts_are_positive_whole_minor_units() -> None:
    assert build.amount("1250") == 1250
    assert build.amount(str(2**64 - 1)) == 2**64 - 1
    assert "not a whole number" in _argument_error(build.amount, "12.50")
    for bad in ("0", "-5", "1e3", "abc", "²", str(2**64), ""):
        assert "not an amount" in _argument_error(build.amount, bad)
    # 2**64 is a whole number of 1 or more: the message says the upper bound it passed
    assert "1 to 18446744073709551615" in _argument_error(build.amount, str(2**64))


def test_kinds_heights_hashes_and_accounts() -> None:
    assert build.kind_list("note,memo") == ("note", "memo")
    assert "first record's kind" in _argument_error(build.kind_list, "note,genesis")
    assert "not a valid name" in _argument_error(build.kind_list, "Note")
    assert build.height("0") == 0
    assert "not a height" in _argument_error(build.height, "-1")
    assert build.record_hash("AB" * 32) == bytes([0xAB]) * 32
    assert "64 hexadecimal" in _argument_error(build.record_hash, "ab" * 31)
    assert build.sha256_hex("AB" * 32) == "ab" * 32
    assert build.account_name("Zoe.1@org") == "Zoe.1@org"
    assert "not an account name" in _argument_error(build.account_name, "-x")
    assert build.seconds("2.5") == 2.5
    assert "seconds" in _argument_error(build.seconds, "0")


# --- domain payloads: accepted by the real rules -------------------------------------------------


def _chain(rules: dict[str, Any], writes: list[tuple[str, Write]]) -> list[dict[str, Any]]:
    """Run a genesis with ``rules`` and ``writes`` (author, write) through the rules engine; their values."""
    engine = RulesEngine()
    ledger_rules_ = ledger_rules(None, 0, rules)
    genesis = Entry.prepare(ledger_rules_.genesis_content("l", "alice", "g", T0), 0, PROTOCOL_LIMITS)
    record = genesis.place(0, bytes(32), T0, "ingest-1")
    engine.check_and_apply(record, ledger_rules_)
    values = []
    for height, (author, write) in enumerate(writes, start=1):
        assert write.kind in ledger_rules_.kinds
        content = Content("l", write.kind, write.payload, author, f"r{height}", T0)
        record = Entry.prepare(content, 0, PROTOCOL_LIMITS).place(height, record.link, T0, "ingest-1")
        values.append(engine.check_and_apply(record, ledger_rules_))
    return values


def test_vote_payloads_pass_the_election_rules() -> None:
    values = _chain(ELECTION_RULES, [("alice", build.register("V-1"))])
    electronic_id = values[0]["electronic_id"]
    writes = [
        build.register("V-1"),
        build.cast(electronic_id, "yes"),
        build.uncast(electronic_id),
        build.cast(electronic_id, "no"),
        build.withdraw(electronic_id),
    ]
    assert {w.domain for w in writes} == {"election"}
    _chain(ELECTION_RULES, [("alice", w) for w in writes])


def test_money_payloads_pass_the_charity_and_resources_rules(tmp_path: Path) -> None:
    donor = seal(bytes(64), "Zoë", "l")
    _chain(
        CHARITY_RULES,
        [
            ("alice", build.donation(donor, "zakat", 1250, "cash", "")),
            ("alice", build.disbursement("zakat", "family 12", 1000, "food")),
        ],
    )
    _chain(
        RESOURCES_RULES,
        [("alice", build.issue("bob", 10)), ("bob", build.transfer("bob", "carol", 4))],
    )
    _chain(FILES_RULES, [("alice", build.file_record("report.pdf", 3, "ab" * 32))])


def test_a_donor_must_be_a_sealed_id() -> None:
    with pytest.raises(UsageError, match="not a sealed id"):
        build.donation("Zoë", "zakat", 1, "", "")


def test_ledger_rules_add_the_kinds_of_the_domain() -> None:
    assert ledger_rules(("note",), 3, ELECTION_RULES).kinds == ("cast", "note", "register", "uncast", "withdraw")
    assert ledger_rules(("a", "b"), 0, {}).kinds == ("a", "b")
    with pytest.raises(UsageError, match="--kinds"):
        ledger_rules(None, 0, {})


# --- seal keys and sealed donor ids ----------------------------------------------------------------


def test_seal_key_files_are_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "seal.key"
    write_seal_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_seal_key(path)
    assert len(key) == 64
    with pytest.raises(KeyExistsError):
        write_seal_key(path)
    assert read_seal_key(path) == key
    path.chmod(0o640)
    with pytest.raises(KeyPermissionsError, match="chmod 600"):
        read_seal_key(path)
    short = tmp_path / "short.key"
    short.write_bytes(bytes(63))
    short.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="exactly 64 bytes"):
        read_seal_key(short)


def test_a_seal_key_file_is_the_64_raw_key_bytes_that_aes_siv_takes_as_they_are(tmp_path: Path) -> None:
    # PROTOCOL 8 (outsider o19 F7): the file is K1 || K2 raw, no header or newline; an outside
    # reader's AES-SIV of those bytes and one AD component seals a donor to the same id.
    path = tmp_path / "seal.key"
    write_seal_key(path)
    raw = path.read_bytes()
    assert len(raw) == 64 and read_seal_key(path) == raw
    padded = "Zoë".encode() + b"\x80" + bytes(64 - len("Zoë".encode()) - 1)
    siv = AES.new(raw, AES.MODE_SIV)
    siv.update(b"zakat")
    ciphertext, tag = siv.encrypt_and_digest(padded)
    outside = "S2-" + base64.b32encode(tag + ciphertext).decode("ascii").rstrip("=").lower()
    assert seal(raw, "Zoë", "zakat") == outside
    with_newline = tmp_path / "newline.key"
    with_newline.write_bytes(raw + b"\n")
    with_newline.chmod(0o600)
    with pytest.raises(KeyMaterialError):
        read_seal_key(with_newline)


def test_donor_info_is_sealed_with_the_ledger_as_context(tmp_path: Path) -> None:
    key_file = tmp_path / "seal.key"
    write_seal_key(key_file)
    args = argparse.Namespace(
        donor=None, donor_info="Zoë, Riyadh", donor_info_file=None, seal_key=key_file, ledger="zakat"
    )
    donor = donor_id(args)
    assert is_sealed(donor)
    assert donor == donor_id(args)  # the same donor is always the same id
    assert unseal(read_seal_key(key_file), donor, "zakat") == "Zoë, Riyadh"
    with pytest.raises(SealError):
        unseal(read_seal_key(key_file), donor, "other-fund")
    with pytest.raises(UsageError, match="--seal-key"):
        donor_id(argparse.Namespace(donor=None, donor_info="x", donor_info_file=None, seal_key=None, ledger="zakat"))


def test_seal_unseal_and_seal_key_commands(vledger: Run, tmp_path: Path) -> None:
    key = tmp_path / "k"
    code, out, _ = vledger("seal-key", "--out", str(key))
    assert code == 0 and "0600" in out
    code, _, err = vledger("seal-key", "--out", str(key))
    assert code == 1 and "already exists" in err
    code, out, _ = vledger("seal", "--key", str(key), "Zoë", "--context", "zakat")
    sealed = out.strip()
    assert code == 0 and is_sealed(sealed)
    code, out, _ = vledger("unseal", "--key", str(key), sealed, "--context", "zakat")
    assert (code, out) == (0, "Zoë\n")
    code, _, err = vledger("unseal", "--key", str(key), sealed)
    assert code == 1 and "does not open without a context" in err and "--context LEDGER" in err
    assert "tampered" not in err
    code, _, err = vledger("unseal", "--key", str(key), sealed, "--context", "other")
    assert code == 1 and "context 'other'" in err and "tampered" not in err


def s1_id(key: bytes, info: str, context: str) -> str:
    """A version 1 id (PROTOCOL 8), as chains written before S2 hold them: nothing writes one now."""
    return "S1-" + base64.b32encode(siv_encrypt(key, info.encode(), context.encode())).decode().rstrip("=").lower()


def test_the_seal_commands_write_s2_ids_of_one_length_and_still_open_s1_ids(
    vledger: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROTOCOL 8: what `seal` and `donate --donor-info` write is padded (S2); S1 ids on chains still open."""
    key_file = tmp_path / "k"
    assert vledger("seal-key", "--out", str(key_file))[0] == 0
    key = read_seal_key(key_file)
    ids = []
    for info in ("A", "Zoë Ahmed, +966 5 0123 4567", "x" * 63):
        code, out, _ = vledger("seal", "--key", str(key_file), info, "--context", "zakat")
        ids.append(out.strip())
        assert code == 0 and ids[-1].startswith("S2-") and unseal(key, ids[-1], "zakat") == info
        code, out, _ = vledger("unseal", "--key", str(key_file), ids[-1], "--context", "zakat")
        assert (code, out) == (0, info + "\n")
    assert {len(sealed) for sealed in ids} == {131}
    args = argparse.Namespace(
        donor=None, donor_info="Zoë Ahmed, +966 5 0123 4567", donor_info_file=None, seal_key=key_file, ledger="zakat"
    )
    assert donor_id(args) == ids[1]  # donate seals exactly as `seal --context LEDGER` does
    # ... and from a file, or standard input, off the command line others see (outsider19 F7).
    info = tmp_path / "donor.txt"
    info.write_text("Zoë Ahmed, +966 5 0123 4567\n", encoding="utf-8")
    from_file = argparse.Namespace(**{**vars(args), "donor_info": None, "donor_info_file": str(info)})
    assert donor_id(from_file) == ids[1]  # one final line end is not the donor's
    code, out, _ = vledger("seal", "--key", str(key_file), "--file", str(info), "--context", "zakat")
    assert (code, out.strip()) == (0, ids[1])
    monkeypatch.setattr("sys.stdin", io.StringIO("Zoë Ahmed, +966 5 0123 4567\r\n"))
    code, out, _ = vledger("seal", "--key", str(key_file), "--file", "-", "--context", "zakat")
    assert (code, out.strip()) == (0, ids[1])
    assert vledger("seal", "--key", str(key_file), "--file", str(tmp_path / "missing"))[0] == 2
    assert vledger("seal", "--key", str(key_file), "A", "--file", str(info))[0] == 2  # one or the other
    assert vledger("seal", "--key", str(key_file))[0] == 2
    code, out, _ = vledger("unseal", "--key", str(key_file), s1_id(key, "Zoë", "zakat"), "--context", "zakat")
    assert (code, out) == (0, "Zoë\n")


def test_information_too_long_to_seal_is_a_bad_seal_error_not_a_crash(vledger: Run, tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    assert vledger("seal-key", "--out", str(key_file))[0] == 0
    code, out, err = vledger("seal", "--key", str(key_file), "x" * (MAX_INFO_BYTES + 1))
    assert (code, out) == (1, "")
    assert "bad_seal" in err and f"at most {MAX_INFO_BYTES}" in err and "Traceback" not in err
    args = argparse.Namespace(
        donor=None, donor_info="x" * (MAX_INFO_BYTES + 1), donor_info_file=None, seal_key=key_file, ledger="zakat"
    )
    with pytest.raises(SealError, match=f"at most {MAX_INFO_BYTES}"):
        donor_id(args)


# --- sessions: options, keys, routing --------------------------------------------------------------


def test_client_options_come_from_arguments_then_the_environment() -> None:
    args = argparse.Namespace(config=None, node=None, key=None, timeout=None)
    environ = {"VLEDGER_KEY": "me.key_secret", "VLEDGER_CONFIG": "/etc/c.toml"}
    assert ClientOptions.from_args(args, environ) == ClientOptions(
        Path("/etc/c.toml"), None, Path("me.key_secret"), 10.0
    )
    assert ClientOptions.from_args(args, {"VLEDGER_KEY": "k"}).config == Path("config/cluster.toml")
    given = argparse.Namespace(config=Path("c.toml"), node="ingest-2", key=Path("k"), timeout=2.0)
    assert ClientOptions.from_args(given, environ) == ClientOptions(Path("c.toml"), "ingest-2", Path("k"), 2.0)
    with pytest.raises(UsageError, match="VLEDGER_KEY"):
        ClientOptions.from_args(args, {})


def test_a_protected_key_takes_the_environment_or_asks(tmp_path: Path) -> None:
    pair = generate(tmp_path, "me", "s3cret")
    path = tmp_path / "me.key_secret"
    assert load_client_keys(path, {"VLEDGER_PASSPHRASE": "s3cret"}) == pair
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "s3cret"

    assert load_client_keys(path, {}, ask=ask) == pair
    assert asked == [f"passphrase for {path}: "]

    def no_terminal(prompt: str) -> str:
        raise EOFError

    with pytest.raises(PassphraseError, match="VLEDGER_PASSPHRASE"):
        load_client_keys(path, {}, ask=no_terminal)
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_client_keys(path, {"VLEDGER_PASSPHRASE": "wrong"})


def test_requests_about_a_ledger_go_to_its_home_unless_a_node_is_given(tmp_path: Path, session: Session) -> None:
    home = session.ledger_node("far")
    assert home == NodeAddress("tcp://127.0.0.1:7391", load_public(tmp_path / "keys" / "ingest-2.key"))
    assert session.ledger_node("notes") is None  # its home is the session's node
    session.pinned = True
    assert session.ledger_node("far") is None


def test_reads_go_to_the_ledger_home(tmp_path: Path, vledger: Run, node: SimulatedNode) -> None:
    """zakat lives on ingest-2: size, range, get and head are asked there, not of the default node."""
    create(vledger, "far")
    vledger.session._rules.clear()
    node.calls.clear()
    for verb in (["size", "far"], ["range", "far"], ["get", "far", "0"], ["head", "far"]):
        code, _, err = vledger(*verb)
        assert code == 0, (verb, err)
    asked = {cmd: where for cmd, _, where in node.calls}
    # range also asks for the home's checkpoint key (hello: "far" pins none) to prove its runs.
    assert {"size", "range", "get", "head"} <= set(asked) <= {"size", "range", "get", "head", "hello", "checkpoint"}
    assert all(where is not None and where.endpoint.endswith(":7391") for where in asked.values()), asked


# --- ledgers and records ----------------------------------------------------------------------------


def test_create_put_and_read_back(vledger: Run, node: SimulatedNode) -> None:
    created = vledger.json("ledger", "create", "notes", "--kinds", "note,memo", "--difficulty", "4")
    assert (created["ledger"], created["height"], created["duplicate"]) == ("notes", 0, False)
    genesis = node.contents()[0]
    assert (genesis.kind, genesis.author, genesis.request_id, genesis.ts) == ("genesis", "alice", "req-0", T0)
    assert genesis.payload == {"difficulty": 4, "kinds": ["memo", "note"], "rules": {}}

    receipt = vledger.json("put", "notes", "note", "--payload", '{"text": "Zoë", "n": 1}', "--request-id", "r-1")
    assert receipt["height"] == 1 and len(receipt["hash"]) == 64
    content = node.contents()[-1]
    assert (content.kind, content.payload, content.author, content.request_id) == (
        "note",
        {"n": 1, "text": "Zoë"},
        "alice",
        "r-1",
    )

    record = vledger.json("get", "notes", "1")
    assert record["payload"] == {"n": 1, "text": "Zoë"} and record["hash"] == receipt["hash"]
    assert vledger.json("get", "--hash", receipt["hash"])["height"] == 1
    assert vledger.json("head", "notes")["hash"] == receipt["hash"]
    assert vledger.json("size", "notes") == {"ledger": "notes", "size": 2}
    code, out, _ = vledger("size", "notes")
    assert (code, out) == (0, "2\n")
    listed = vledger.json("ledger", "list")["ledgers"]
    assert [(e["ledger"], e["size"], e["type"]) for e in listed] == [("notes", 2, "plain")]

    code, out, _ = vledger("get", "notes", "1")
    assert code == 0 and "author    alice" in out and 'payload   {"n":1,"text":"Zoë"}' in out


def test_a_retry_with_the_same_request_id_and_ts_writes_once(vledger: Run) -> None:
    create(vledger, "notes")
    argv = ("put", "notes", "note", "--payload", "{}", "--request-id", "r-9", "--ts", str(T0 - 5))
    first, again = vledger.json(*argv), vledger.json(*argv)
    assert (first["duplicate"], again["duplicate"], again["hash"]) == (False, True, first["hash"])
    code, out, _ = vledger(*argv)
    assert code == 0 and out.startswith("already written")


def test_float_payloads_are_refused_before_anything_is_sent(vledger: Run, node: SimulatedNode) -> None:
    code, out, err = vledger("put", "notes", "note", "--payload", '{"amount": 12.5}')
    assert code == 2 and out == ""
    assert "argument --payload" in err and "12.5 is not an integer" in err and "minor units" in err
    assert node.calls == []


def test_an_unknown_kind_is_refused_before_the_work(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "notes")
    code, _, err = vledger("put", "notes", "vote", "--payload", "{}")
    assert code == 1 and "kind 'vote' is not one of this ledger's kinds ['note']" in err
    assert len(node.sent("put")) == 0


def test_node_refusals_exit_1_with_their_code(vledger: Run) -> None:
    code, _, err = vledger("get", "nowhere", "3")
    assert code == 1 and err == "vledger: error: not_found: no such record on this node\n"


def test_get_needs_a_ledger_and_height_or_a_hash(vledger: Run) -> None:
    assert vledger("get")[0] == 2
    assert vledger("get", "notes")[0] == 2
    assert vledger("get", "notes", "1", "--hash", "00" * 32)[0] == 2
    assert vledger("get", "notes", "x")[0] == 2


def test_range_streams_pages_and_checks_the_chain(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "notes")
    for i in range(6):
        vledger.json("put", "notes", "note", "--payload", json.dumps({"i": i}))
    node.page_size = 2
    code, out, _ = vledger("range", "notes", "--json")
    shown = json.loads(out)  # one object, its records a line each as they came (outsider26 I2)
    assert code == 0 and [line["height"] for line in shown["records"]] == list(range(7))
    assert (shown["ledger"], shown["start"], len(out.splitlines())) == ("notes", 0, 7 + 2)
    assert len(node.sent("range")) == 4
    code, out, _ = vledger("range", "notes", "--start", "5")
    assert code == 0 and [line.split("\t")[0] for line in out.splitlines()] == ["5", "6"]
    assert out.splitlines()[0].endswith('\tnote\talice\t{"i":4}')


def test_a_node_sending_another_record_is_caught(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "notes")
    vledger.json("put", "notes", "note", "--payload", "{}")
    node.override["get"] = lambda args: node._record(node.store.get("notes", 0))
    code, _, err = vledger("get", "notes", "1")
    assert code == 1 and "asked for height 1, the node sent height 0" in err


def test_a_tampered_record_fails_its_checks(session: Session, node: SimulatedNode, vledger: Run) -> None:
    create(vledger, "notes")
    vledger.json("put", "notes", "note", "--payload", '{"amount": 100}')
    record = node.store.get("notes", 1)
    assert record is not None
    forged = Content("notes", "note", {"amount": 900}, "alice", record.content.request_id, record.content.ts)
    tampered = Record(
        forged,
        forged.encode(PROTOCOL_LIMITS),
        record.checksum,
        record.nonce,
        record.height,
        record.prev,
        record.accepted,
        record.origin,
        record.link,
    )
    node.override["get"] = lambda args: {"record": tampered.encode()}
    with pytest.raises(BadChecksumError):
        session.record("notes", 1)


def test_range_refuses_a_page_that_goes_nowhere(session: Session, node: SimulatedNode, vledger: Run) -> None:
    create(vledger, "notes")
    node.override["range"] = lambda args: {"records": [], "next": 0}
    with pytest.raises(NodeUnavailableError, match="continue at 0"):
        list(session.records("notes"))


def test_a_receipt_for_other_content_is_refused(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "notes")
    node.override["put"] = lambda args: {**node._put(args), "checksum": bytes(32)}
    code, _, err = vledger("put", "notes", "note", "--payload", "{}")
    assert code == 1 and "not for the record sent" in err


def test_a_write_that_gets_no_answer_says_how_to_retry(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "notes")

    def silent(args: dict[str, Any]) -> Any:
        raise NodeUnavailableError("tcp://127.0.0.1:7390: no answer within 10 s")

    node.override["put"] = silent
    code, _, err = vledger("put", "notes", "note", "--payload", "{}", "--request-id", "r-7")
    assert code == 1
    assert f"--request-id r-7 --ts {T0}" in err and "no answer within 10 s" in err


def test_a_write_that_timed_out_waiting_for_replicas_says_how_to_wait_again(vledger: Run, node: SimulatedNode) -> None:
    """o6 H7: README says to repeat the same request; the CLI made its id and time and printed neither."""
    create(vledger, "notes")
    fields = {"ledger": "notes", "height": 1, "hash": b"\x01" * 32, "replicas": ["replica-1"]}

    def short(args: dict[str, Any]) -> Any:
        raise RemoteError("replication_timeout", "the record is durable on ingest-1, but 1 of the 3 ...", fields)

    node.override["put"] = short
    code, out, err = vledger("put", "notes", "note", "--payload", "{}", "--request-id", "r-8", "-w", "3", "--json")
    assert code == 1
    assert f"--request-id r-8 --ts {T0}" in err
    refusal = json.loads(out)["error"]
    assert refusal["code"] == "replication_timeout"
    assert (refusal["height"], refusal["hash"], refusal["replicas"]) == (1, "01" * 32, ["replica-1"])
    assert (refusal["request_id"], refusal["ts"]) == ("r-8", T0)


def test_hello_whoami_and_the_default_options(vledger: Run, tmp_path: Path) -> None:
    code, out, _ = vledger("hello")
    assert code == 0 and "you are alice (admin)" in out
    assert vledger.json("whoami")["account"] == "alice"
    assert vledger.options[-1] == ClientOptions(
        Path("config/cluster.toml"), None, Path("/nonexistent/alice.key_secret"), 10.0
    )
    vledger("whoami", "--node", "ingest-2", "--timeout", "1.5", "--config", "x.toml", "--key", "k")
    assert vledger.options[-1] == ClientOptions(Path("x.toml"), "ingest-2", Path("k"), 1.5)


# --- domain verbs -----------------------------------------------------------------------------------


def test_vote_verbs(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "e2026", "note", ELECTION_RULES)
    registered = vledger.json("vote", "register", "e2026", "--voter-id", "V-17")
    electronic_id = registered["electronic_id"]
    assert electronic_id.startswith("E-") and registered["values"] == {"electronic_id": electronic_id}
    code, out, _ = vledger("vote", "register", "e2026", "--voter-id", "V-18")
    assert code == 0 and "electronic id: E-" in out
    for argv in (
        ("cast", "--electronic-id", electronic_id, "--choice", "yes"),
        ("uncast", "--electronic-id", electronic_id),
        ("withdraw", "--electronic-id", electronic_id),
    ):
        assert vledger("vote", argv[0], "e2026", *argv[1:])[0] == 0
    assert [(c.kind, c.payload) for c in node.contents()[1:]] == [
        ("register", {"voter_id": "V-17"}),
        ("register", {"voter_id": "V-18"}),
        ("cast", {"choice": "yes", "electronic_id": electronic_id}),
        ("uncast", {"electronic_id": electronic_id}),
        ("withdraw", {"electronic_id": electronic_id}),
    ]
    code, _, err = vledger("vote", "cast", "e2026", "--electronic-id", electronic_id, "--choice", "no")
    assert code == 1 and "withdrawn" in err


def test_creating_an_election_or_a_charity_closes_the_kinds_that_move_votes_or_money(
    vledger: Run, node: SimulatedNode
) -> None:
    created = vledger.json("ledger", "create", "e2026", "--difficulty", "2", "--rules", json.dumps(ELECTION_RULES))
    election = [("e2026", kind, "alice") for kind in ("register", "cast", "uncast", "withdraw")]
    assert node.grants == election and created["granted"] == {"account": "alice", "kinds": [g[1] for g in election]}
    # Granted before the genesis is sent: no record of those kinds is ever judged open (16.2).
    order = [name for name, _, _ in node.calls if name in ("grant.add", "ledger.create")]
    assert order == ["grant.add"] * 4 + ["ledger.create"]

    code, out, err = vledger("ledger", "create", "relief", "--difficulty", "2", "--rules", json.dumps(CHARITY_RULES))
    assert code == 0, err
    assert node.grants[4:] == [("relief", "donation", "alice"), ("relief", "disbursement", "alice")]
    assert "only alice may write donation, disbursement on relief" in out

    # A retry, or a name already taken, changes no grant; --open and other domains grant nothing.
    node.grants.clear()
    assert vledger("ledger", "create", "e2026", "--difficulty", "2", "--rules", json.dumps(ELECTION_RULES))[0] == 1
    code, _, err = vledger("ledger", "create", "open-vote", "--open", "--rules", json.dumps(ELECTION_RULES))
    assert code == 0, err
    create(vledger, "credits", "note", RESOURCES_RULES)
    create(vledger, "notes")
    assert node.grants == []


def test_a_voter_id_typed_in_nfd_is_sent_in_nfc_so_it_is_one_voter(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "e2026", "note", ELECTION_RULES)
    assert node.contents()[0].payload["rules"]["identifiers"] == "nfc-visible"  # a new ledger has the rule
    composed, decomposed = unicodedata.normalize("NFC", "José-Ñúñez"), unicodedata.normalize("NFD", "José-Ñúñez")
    assert vledger("vote", "register", "e2026", "--voter-id", composed)[0] == 0
    code, _, err = vledger("vote", "register", "e2026", "--voter-id", decomposed)
    assert code == 1 and "already_registered" in err
    assert [c.payload for c in node.contents()[1:]] == [{"voter_id": composed}] * 2  # sent twice, the same id


def test_a_bidi_override_typed_is_refused_before_anything_is_sent(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "e2026", "note", ELECTION_RULES)
    code, out, err = vledger("vote", "register", "e2026", "--voter-id", "V-1\u202eevil")
    assert code == 2 and out == ""
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in err and "\\u202e" in err and "\u202e" not in err
    code, _, err = vledger("ledger", "create", "e2", "--rules", json.dumps({**ELECTION_RULES, "choices": ["a\u2067"]}))
    assert code == 2 and "U+2067" in err
    assert node.sent("put") == []


def test_free_text_typed_may_hold_marks_and_joiners_an_id_may_not(
    vledger: Run, node: SimulatedNode, tmp_path: Path
) -> None:
    """A purpose is not an id: the RLM of Arabic text and an emoji's ZWJ go through (PROTOCOL 7.5),
    the strict check stays on the fund, the target and the ids."""
    create(vledger, "zakat", "note", CHARITY_RULES)
    assert node.contents()[0].payload["rules"]["identifiers"] == "nfc-visible"
    key = tmp_path / "seal.key"
    write_seal_key(key)
    arabic, family = "كفالة \u200fأيتام", "family \U0001f468\u200d\U0001f469\u200d\U0001f467"
    decomposed = unicodedata.normalize("NFD", "für Zoë")
    argv = ("--fund", "zakat", "--amount", "10", "--source", family, "--purpose", arabic)
    code, _, err = vledger("donate", "zakat", "--donor-info", "Zoë", "--seal-key", str(key), *argv)
    assert code == 0, err
    code, _, err = vledger(
        "disburse", "zakat", "--fund", "zakat", "--target", "t", "--amount", "1", "--purpose", decomposed
    )
    assert code == 0, err
    donation, paid = node.contents()[1:]
    assert (donation.payload["source"], donation.payload["purpose"]) == (family, arabic)
    assert paid.payload["purpose"] == unicodedata.normalize("NFC", "für Zoë")  # still sent in NFC
    sent = len(node.sent("put"))
    for refused in (
        ("disburse", "zakat", "--fund", "zakat", "--target", family, "--amount", "1", "--purpose", ""),
        ("disburse", "zakat", "--fund", "zakat", "--target", "t", "--amount", "1", "--purpose", "a\u202eb"),
        ("donate", "zakat", "--donor-info", "Zoë", "--seal-key", str(key), *argv[:1], "zakat\u200f", *argv[2:]),
    ):
        assert vledger(*refused)[0] == 2
    assert len(node.sent("put")) == sent


def test_human_and_json_output_escape_what_a_terminal_cannot_show_safely(vledger: Run, node: SimulatedNode) -> None:
    # A ledger of before the rule (or a hostile node) may hold anything: show it, never obey it.
    create(vledger, "notes", "note")
    payload = {"text": "V-1\u202eevil\x1b[2J\u2028"}
    assert vledger("put", "notes", "note", "--payload", json.dumps(payload))[0] == 0
    code, out, _ = vledger("get", "notes", "1")
    assert code == 0
    assert "V-1\\u202eevil\\u001b[2J\\u2028" in out
    assert not any(unicodedata.category(c)[0] == "C" for c in out.replace("\n", ""))
    assert vledger.json("get", "notes", "1")["payload"] == payload


def test_a_domain_verb_on_a_ledger_of_another_domain_writes_nothing(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "notes", "register")
    code, _, err = vledger("vote", "register", "notes", "--voter-id", "V-1")
    assert code == 2 and "'plain' rules" in err and "'election' ledgers" in err
    assert node.sent("put") == []


def test_donate_and_disburse(vledger: Run, node: SimulatedNode, tmp_path: Path) -> None:
    create(vledger, "zakat", "note", CHARITY_RULES)
    key = tmp_path / "seal.key"
    write_seal_key(key)
    argv = ("--fund", "zakat", "--amount", "1250", "--source", "cash", "--purpose", "")
    code, out, _ = vledger("donate", "zakat", "--donor-info", "Zoë", "--seal-key", str(key), *argv)
    assert code == 0 and f"donor: {seal(read_seal_key(key), 'Zoë', 'zakat')}\n" in out  # the donor's id, to look up
    donor = seal(read_seal_key(key), "Anon", "zakat")
    assert vledger("donate", "zakat", "--donor", donor, *argv)[0] == 0
    assert (
        vledger("disburse", "zakat", "--fund", "zakat", "--target", "t", "--amount", "2000", "--purpose", "p")[0] == 0
    )
    first, second, paid = node.contents()[1:]
    assert unseal(read_seal_key(key), first.payload["donor"], "zakat") == "Zoë"
    assert first.payload["donor"].startswith("S2-") and len(first.payload["donor"]) == 131  # padded: no length told
    assert first.payload == {
        "donor": first.payload["donor"],
        "fund": "zakat",
        "amount": 1250,
        "source": "cash",
        "purpose": "",
    }
    assert second.payload["donor"] == donor
    assert (paid.kind, paid.payload) == (
        "disbursement",
        {"fund": "zakat", "target": "t", "amount": 2000, "purpose": "p"},
    )
    code, _, err = vledger("disburse", "zakat", "--fund", "zakat", "--target", "t", "--amount", "600", "--purpose", "")
    assert code == 1 and "insufficient_funds" in err
    assert vledger("donate", "zakat", "--donor", "Zoë", *argv)[0] == 2
    assert vledger("donate", "zakat", "--donor-info", "Zoë", *argv)[0] == 2  # no --seal-key
    assert vledger.json("donate", "zakat", "--donor", donor, *argv)["donor"] == donor
    assert vledger("donate", "zakat", "--donor", donor, "--donor-info", "x", *argv)[0] == 2
    code, _, err = vledger("donate", "zakat", "--donor", donor, *argv[:2], "--amount", "12.50", *argv[4:])
    assert code == 2 and "not a whole number" in err
    old = s1_id(read_seal_key(key), "Zoë", "zakat")  # a donor sealed before S2, looked up on the chain
    assert vledger("donate", "zakat", "--donor", old, *argv)[0] == 0
    assert node.contents()[-1].payload["donor"] == old
    sent = len(node.sent("put"))
    code, _, err = vledger("donate", "zakat", "--donor-info", "x" * 1024, "--seal-key", str(key), *argv)
    assert code == 1 and "bad_seal" in err and "at most 1023" in err
    assert len(node.sent("put")) == sent


@pytest.mark.parametrize(("given", "written"), [({}, 10_000), ({"max_holders": 3}, 3)])
def test_the_python_client_writes_out_a_resources_ledgers_bound(
    session: Session, node: SimulatedNode, given: dict[str, Any], written: int
) -> None:
    # Review r12, 5: only the CLI wrote the bound; a home now refuses a new genesis without it.
    session.create_ledger("credits", LedgerRules(("issue", "transfer"), 0, {**RESOURCES_RULES, **given}))
    assert node.contents()[0].payload["rules"]["max_holders"] == written


def test_issue_and_transfer_from_the_callers_account(vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "credits", "note", RESOURCES_RULES)
    # The bound written out (PROTOCOL 7.3): a genesis without it is unbounded, as before the bound.
    assert node.contents()[0].payload["rules"]["max_holders"] == 10_000
    assert vledger("issue", "credits", "--account", "alice", "--amount", "10")[0] == 0
    assert vledger("transfer", "credits", "--to", "bob", "--amount", "4")[0] == 0
    issued, moved = node.contents()[1:]
    assert (issued.kind, issued.payload) == ("issue", {"account": "alice", "amount": 10})
    assert (moved.kind, moved.payload, moved.author) == (
        "transfer",
        {"from": "alice", "to": "bob", "amount": 4},
        "alice",
    )
    code, _, err = vledger("transfer", "credits", "--to", "bob", "--amount", "7")
    assert code == 1 and "insufficient_funds" in err


def test_every_domain_verb_takes_a_write_concern(vledger: Run, node: SimulatedNode, tmp_path: Path) -> None:
    # Only put had -w: a donation or a vote that must be on N replicas before it counts could not ask.
    create(vledger, "e2026", "note", ELECTION_RULES)
    create(vledger, "zakat", "note", CHARITY_RULES)
    create(vledger, "credits", "note", RESOURCES_RULES)
    electronic_id = vledger.json("vote", "register", "e2026", "--voter-id", "V-1", "-w", "2")["electronic_id"]
    write_seal_key(tmp_path / "seal.key")
    donor = seal(read_seal_key(tmp_path / "seal.key"), "Anon", "zakat")
    for argv in (
        ("vote", "cast", "e2026", "--electronic-id", electronic_id, "--choice", "yes"),
        ("donate", "zakat", "--donor", donor, "--fund", "zakat", "--amount", "5", "--source", "s", "--purpose", ""),
        ("disburse", "zakat", "--fund", "zakat", "--target", "t", "--amount", "1", "--purpose", "p"),
        ("issue", "credits", "--account", "alice", "--amount", "10"),
        ("transfer", "credits", "--to", "bob", "--amount", "4"),
    ):
        assert vledger(*argv, "-w", "3")[0] == 0, argv
    assert [args.get("w") for args in node.sent("put")] == [2, 3, 3, 3, 3, 3]
    assert vledger("vote", "uncast", "e2026", "--electronic-id", electronic_id)[0] == 0
    assert "w" not in node.sent("put")[-1]  # none asked: none sent


# --- files ----------------------------------------------------------------------------------------------


def test_chunks_cover_a_file_once() -> None:
    assert list(chunks(0, 4)) == [(0, 0)]
    assert list(chunks(8, 4)) == [(0, 4), (4, 4)]
    assert list(chunks(10, 4)) == [(0, 4), (4, 4), (8, 2)]
    assert list(chunks(10, 4, start=8)) == [(8, 2)]
    assert chunk_size(IngestSettings(file_chunk_bytes=256 * 1024, max_message_bytes=1024 * 1024)) == 256 * 1024
    assert chunk_size(IngestSettings(file_chunk_bytes=4 * 1024 * 1024, max_message_bytes=1024 * 1024)) == 1023 * 1024


@pytest.fixture
def small_chunks(session: Session) -> None:
    ingest = IngestSettings(file_chunk_bytes=1000, max_message_bytes=1024 * 1024, max_file_bytes=100_000)
    session.config = dataclasses.replace(session.config, ingest=ingest)


@pytest.mark.usefixtures("small_chunks")
def test_file_put_uploads_in_chunks_then_records_it(vledger: Run, node: SimulatedNode, tmp_path: Path) -> None:
    create(vledger, "files", "note", FILES_RULES)
    data = os.urandom(2500)
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    receipt = vledger.json("file", "put", "files", str(path))
    sha256 = hashlib.sha256(data).hexdigest()
    assert (receipt["name"], receipt["size"], receipt["sha256"]) == ("report.pdf", 2500, sha256)
    assert [(a["offset"], len(a["data"]), a["size"]) for a in node.sent("file.upload")] == [
        (0, 1000, 2500),
        (1000, 1000, 2500),
        (2000, 500, 2500),
    ]
    record = node.contents()[-1]
    assert (record.kind, record.payload) == ("file", {"name": "report.pdf", "size": 2500, "sha256": sha256})

    node.calls.clear()  # the node holds it now: one request finds that out, then the record
    assert vledger("file", "put", "files", str(path), "--name", "copy.pdf")[0] == 0
    assert len(node.sent("file.upload")) == 1 and node.contents()[-1].payload["name"] == "copy.pdf"


@pytest.mark.usefixtures("small_chunks")
def test_file_get_checks_the_digest_before_the_file_appears(vledger: Run, node: SimulatedNode, tmp_path: Path) -> None:
    data = os.urandom(2100)
    sha256 = hashlib.sha256(data).hexdigest()
    node.blobs[sha256] = data
    out = tmp_path / "out" / "got.bin"
    out.parent.mkdir()
    assert vledger.json("file", "get", sha256, "-o", str(out)) == {"path": str(out), "size": 2100, "sha256": sha256}
    assert out.read_bytes() == data
    assert [a["offset"] for a in node.sent("file.download")] == [0, 1000, 2000]
    code, _, err = vledger("file", "get", sha256, "-o", str(out))
    assert code == 2 and "--force" in err
    assert vledger("file", "get", sha256, "-o", str(out), "--force")[0] == 0
    assert vledger("file", "get", sha256, "-o", str(out.parent))[0] == 0
    assert (out.parent / sha256).read_bytes() == data

    node.blobs[sha256] = data[:-1] + bytes([data[-1] ^ 1])
    bad = tmp_path / "out" / "bad.bin"
    code, _, err = vledger("file", "get", sha256, "-o", str(bad))
    assert code == 1 and "not kept" in err
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([sha256, "got.bin"])  # no part left behind


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"data": b"", "size": 10}, "0 bytes at offset 0 of 10"),
        ({"data": b"x" * 20, "size": 10}, "20 bytes at offset 0 of 10"),
        ({"data": b"", "size": 10**9}, "over the limit"),
        ({"size": 3}, "no bytes 'data'"),
    ],
)
def test_file_get_bounds_what_the_node_sends(
    session: Session, node: SimulatedNode, tmp_path: Path, answer: dict[str, Any], message: str
) -> None:
    node.override["file.download"] = lambda args: answer
    with pytest.raises(NodeUnavailableError, match=message):
        download_file(session, "ab" * 32, tmp_path / "x", False, Progress("t", enabled=False))
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@pytest.mark.usefixtures("small_chunks")
def test_file_get_goes_on_to_another_node_when_its_node_has_no_sound_copy(
    session: Session, node: SimulatedNode, tmp_path: Path
) -> None:
    data = os.urandom(1500)
    sha256 = hashlib.sha256(data).hexdigest()
    node.blobs[sha256] = data
    served = node._file_download

    def damaged_here(args: dict[str, Any]) -> Any:
        if node.calls[-1][2] is None:  # the session's own node: its copy is being copied again
            raise RemoteError("bad_blob", "this replica's copy of the file was damaged", {})
        return served(args)

    node.override["file.download"] = damaged_here
    path, size = download_file(session, sha256, tmp_path / "x", False, Progress("t", enabled=False))
    assert (path.read_bytes(), size) == (data, 1500)
    assert [where is None for cmd, _, where in node.calls if cmd == "file.download"] == [True, False, False]

    session.pinned = True  # --node: that node only
    with pytest.raises(RemoteError, match="damaged"):
        download_file(session, sha256, tmp_path / "y", False, Progress("t", enabled=False))
    session.pinned = False

    def refused(args: dict[str, Any]) -> Any:
        raise RemoteError("not_found", "no such file", {})

    node.override["file.download"] = refused
    with pytest.raises(RemoteError, match="no such file"):  # a refusal is the cluster's answer, not one node's
        download_file(session, sha256, tmp_path / "z", False, Progress("t", enabled=False))
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


@pytest.mark.usefixtures("small_chunks")
def test_an_upload_of_a_file_that_shrinks_is_stopped(session: Session, node: SimulatedNode, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 2500)

    def shrink(args: dict[str, Any]) -> Any:
        path.write_bytes(b"x" * 1500)
        return {"received": args["offset"] + len(args["data"]), "complete": False}

    node.override["file.upload"] = shrink
    with pytest.raises(SourceChangedError):
        upload_file(session, "files", path, "f", Progress("t", enabled=False))


def test_a_download_goes_under_the_name_given(tmp_path: Path) -> None:
    assert destination(tmp_path / "a.txt", "ab" * 32, force=False) == tmp_path / "a.txt"
    assert destination(tmp_path, "ab" * 32, force=False) == tmp_path / ("ab" * 32)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UsageError):
        destination(tmp_path / "a.txt", "ab" * 32, force=False)
    assert destination(tmp_path / "a.txt", "ab" * 32, force=True) == tmp_path / "a.txt"


def test_a_download_or_a_receipt_never_takes_the_place_of_a_store_s_database_or_a_special_file(
    vledger: Run, node: SimulatedNode, tmp_path: Path
) -> None:
    # `receipt get -o run/data/replica-2/chain.sqlite3` truncated a running replica's database in
    # place (it answered `error` from then on), and `file get --force` renamed over a device.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    store = tmp_path / "store"
    ChainStore(store, origin="n").close()
    database = store / "chain.sqlite3"
    before = database.read_bytes()
    for target in (fifo, database):
        with pytest.raises(UsageError):
            destination(target, "ab" * 32, force=True)
        code, _, err = vledger("receipt", "get", "votes", "1", "-o", str(target))
        assert code == 2 and str(target) in err
    assert node.calls == []  # refused before anything was asked
    assert stat.S_ISFIFO(fifo.stat().st_mode) and database.read_bytes() == before


# --- accounts ---------------------------------------------------------------------------------------------


def test_user_verbs_send_the_account_commands(vledger: Run, node: SimulatedNode, tmp_path: Path) -> None:
    pair = generate(tmp_path, "bob")
    assert vledger("user", "add", "bob", "--role", "writer")[0] == 0
    for action in ("remove", "enable", "disable"):
        assert vledger("user", action, "bob")[0] == 0
    assert vledger("user", "key", "add", "bob", str(tmp_path / "bob.key"))[0] == 0
    code, out, _ = vledger("user", "key", "revoke", "--", pair.public)  # a Z85 key may start with "-"
    assert code == 0 and out == f"key {pair.public}: revoked\n"
    assert vledger.json("user", "list")["accounts"][0]["account"] == "alice"
    # (ledger.list: add and remove read what the name holds on the resources ledgers; none here)
    assert [(cmd, args) for cmd, args, _ in node.calls if cmd != "ledger.list"] == [
        ("account.add", {"account": "bob", "role": "writer"}),
        ("account.remove", {"account": "bob"}),
        ("account.enable", {"account": "bob"}),
        ("account.disable", {"account": "bob"}),
        ("key.add", {"account": "bob", "key": pair.public}),
        ("key.revoke", {"key": pair.public}),
        ("account.list", {}),
    ]
    assert vledger("user", "add", "bob", "--role", "king")[0] == 2
    assert vledger("user", "key", "revoke", "not-a-key")[0] == 2
    assert vledger("user")[0] == 2


def test_user_key_revoke_takes_the_arguments_of_user_key_add(vledger: Run, node: SimulatedNode, tmp_path: Path) -> None:
    pair = generate(tmp_path, "bob")

    def revoke(args: dict[str, Any]) -> Any:
        if args.get("account") != "bob":
            raise RemoteError("no_such_key", f"key {args['key']} is not bound to account {args['account']!r}", {})
        return {"key": args["key"]}

    node.override["key.revoke"] = revoke
    code, out, err = vledger("user", "key", "revoke", "bob", str(tmp_path / "bob.key"))
    assert (code, out) == (0, f"key {pair.public}: revoked\n"), err
    code, _, err = vledger("user", "key", "revoke", "carol", str(tmp_path / "bob.key"))
    assert code != 0 and "no_such_key" in err and "not bound to account 'carol'" in err
    # The node checks the name: one admin request per verb, so one one-time code
    assert node.sent("key.revoke") == [{"key": pair.public, "account": "bob"}, {"key": pair.public, "account": "carol"}]
    assert node.sent("account.list") == []


# --- second factors ---------------------------------------------------------------------------------------

ENROLLED = {
    "account": "bob",
    "uri": "otpauth://totp/vledger%20t:bob?secret=ABC&issuer=vledger%20t",
    "recovery_codes": ["aaaa-bbbb-cccc-dddd"],
    "height": 4,
    "pending": [],
    "version": 9,
}


def test_the_one_time_code_goes_with_the_verb_s_requests(
    vledger: Run, node: SimulatedNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert vledger("user", "add", "bob", "--role", "writer", "--otp", "123456")[0] == 0
    monkeypatch.setenv("VLEDGER_OTP", "654321")
    assert vledger("user", "enable", "bob")[0] == 0
    assert vledger("user", "disable", "bob", "--otp", "111111")[0] == 0  # the option wins
    monkeypatch.delenv("VLEDGER_OTP")
    assert vledger("user", "remove", "bob")[0] == 0
    accounts = [args.get("otp") for cmd, args, _ in node.calls if cmd.startswith("account.")]
    assert accounts == ["123456", "654321", "111111", None]


def test_creating_an_election_needs_one_code_for_its_grants_and_genesis(vledger: Run, node: SimulatedNode) -> None:
    token = "s" * 32
    node.override["totp.session"] = lambda args: {"session": token if args.get("otp") else None, "expires_ms": 1}
    created = vledger.json("ledger", "create", "e2026", "--rules", json.dumps(ELECTION_RULES), "--otp", "123456")
    assert created["granted"]["kinds"] == ["register", "cast", "uncast", "withdraw"]
    admin = [
        (name, args.get("otp"))
        for name, args, _ in node.calls
        if name in ("totp.session", "grant.add", "ledger.create")
    ]
    # The code opens a session, which the four grants and the genesis carry in its place.
    assert admin == [("totp.session", "123456"), *[("grant.add", token)] * 4, ("ledger.create", token)]
    node.calls.clear()
    assert vledger("ledger", "create", "relief", "--rules", json.dumps(CHARITY_RULES))[0] == 0  # no code needed
    assert [args.get("otp") for name, args, _ in node.calls if name in ("grant.add", "ledger.create")] == [None] * 3
    del node.override["totp.session"]  # an older node: no sessions, the code goes with every command
    node.calls.clear()
    assert vledger("ledger", "create", "e2027", "--rules", json.dumps(ELECTION_RULES), "--otp", "654321")[0] == 0
    assert {args.get("otp") for name, args, _ in node.calls if name in ("grant.add", "ledger.create")} == {"654321"}


def test_a_writer_s_ledger_create_is_refused_naming_ledger_create(vledger: Run, node: SimulatedNode) -> None:
    """Outsider o23 LOW 1: refused as "the writer role may not use 'totp.session'", a step the
    writer never asked for (a second factor problem, it read). Only the admin may open a
    session, as only the admin may create a ledger: the refusal names the verb."""

    def refuse(args: dict[str, Any]) -> Any:  # the node's role check, before any handler
        raise RemoteError("forbidden", "the writer role may not use 'totp.session'", {})

    node.override["totp.session"] = refuse
    code, out, _ = vledger("ledger", "create", "alice-ledger", "--rules", json.dumps(CHARITY_RULES), "--json")
    assert code != 0
    assert json.loads(out)["error"] == {"code": "forbidden", "message": "the writer role may not use 'ledger.create'"}
    assert node.sent("grant.add") == [] and node.sent("ledger.create") == []

    def revoked(args: dict[str, Any]) -> Any:
        raise RemoteError("forbidden", "this key may not use this node", {})

    node.override["totp.session"] = revoked
    code, out, _ = vledger("ledger", "create", "alice-ledger", "--rules", json.dumps(CHARITY_RULES), "--json")
    assert json.loads(out)["error"]["message"] == "this key may not use this node"  # any other refusal as sent


def test_a_refusal_for_the_second_factor_is_the_caller_s_without_a_terminal(vledger: Run, node: SimulatedNode) -> None:
    def refuse(args: dict[str, Any]) -> Any:
        raise RemoteError("second_factor_required", "admin commands need a one-time code here", {})

    node.override["account.add"] = refuse
    code, _, err = vledger("user", "add", "bob", "--role", "writer")  # stdin is not a terminal under pytest
    assert code != 0 and "second_factor_required" in err
    assert len(node.sent("account.add")) == 1


def test_a_session_asks_for_a_code_once_when_a_node_wants_one(session: Session, node: SimulatedNode) -> None:
    def needs_code(args: dict[str, Any]) -> Any:
        if args.get("otp") != "246810":
            raise RemoteError("bad_second_factor", "the one-time code is wrong, expired or already used", {})
        return {"account": args["account"]}

    node.override["account.add"] = needs_code
    asked: list[str] = []
    session.second_factor("135790", lambda: asked.append("asked") or "246810")
    assert session.call("account.add", {"account": "bob", "role": "writer"}) == {"account": "bob"}
    assert asked == ["asked"]
    assert [args["otp"] for args in node.sent("account.add")] == ["135790", "246810"]
    session.second_factor(None, lambda: "000000")  # a wrong code typed: the refusal is the caller's
    with pytest.raises(RemoteError, match="bad_second_factor"):
        session.call("account.add", {"account": "bob", "role": "writer"})
    assert len(node.sent("account.add")) == 4  # asked once per request, not in a loop


def test_totp_enroll_and_reset_print_the_uri_and_recovery_codes_once(vledger: Run, node: SimulatedNode) -> None:
    node.override["totp.enroll"] = lambda args: ENROLLED
    node.override["totp.reset"] = lambda args: ENROLLED
    code, out, err = vledger("admin", "totp", "enroll", "--otp", "123456")
    assert code == 0, err
    assert ENROLLED["uri"] in out and "aaaa-bbbb-cccc-dddd" in out and "height 4" in out
    assert vledger.json("admin", "totp", "reset", "bob") == ENROLLED
    assert node.sent("totp.enroll") == [{"otp": "123456"}]
    assert node.sent("totp.reset") == [{"account": "bob"}]
    assert vledger("admin", "totp", "reset")[0] == 2  # whose?


def test_a_public_key_argument_is_a_file_or_z85(tmp_path: Path) -> None:
    pair = generate(tmp_path, "bob")
    assert public_key_argument(str(tmp_path / "bob.key")) == pair.public
    assert public_key_argument(pair.public) == pair.public
    with pytest.raises(UsageError, match="neither"):
        public_key_argument(str(tmp_path / "missing.key"))


# --- the shell ---------------------------------------------------------------------------------------------


def make_shell(session: Session, lines: list[str] | None = None) -> tuple[Shell, list[ClientOptions]]:
    opened: list[ClientOptions] = []

    def opener(options: ClientOptions) -> Session:
        opened.append(options)
        return session

    feed = iter(lines or [])

    def read(prompt: str) -> str:
        line = next(feed, None)
        if line is None:
            raise EOFError
        if line == "^C":
            raise KeyboardInterrupt
        return line

    defaults = {"config": Path("shell.toml"), "node": None, "key": Path("me.key_secret"), "timeout": None}
    return Shell(shell_parser(), SessionPool(opener), defaults, read=read, interactive=False), opened


def test_shell_lines_run_like_the_command_line(
    session: Session, node: SimulatedNode, capsys: pytest.CaptureFixture[str]
) -> None:
    shell, opened = make_shell(session)
    assert shell.run_line("ledger create notes --kinds note --difficulty 1")
    assert shell.run_line("""put notes note --payload '{"text": "two words"}' --json  # a comment""")
    assert node.contents()[-1].payload == {"text": "two words"}
    assert shell.run_line("vledger size notes")  # copied from a command line
    out = capsys.readouterr().out
    assert out.endswith("2\n") and '"height": 1' in out
    assert shell.status == 0
    # One session for every line, opened with the shell's options.
    assert opened == [ClientOptions(Path("shell.toml"), None, Path("me.key_secret"), 10.0)]


def test_shell_options_of_a_line_win(session: Session) -> None:
    shell, opened = make_shell(session)
    shell.run_line("whoami --node ingest-2 --timeout 3")
    assert opened == [ClientOptions(Path("shell.toml"), "ingest-2", Path("me.key_secret"), 3.0)]


def test_shell_errors_print_and_the_shell_goes_on(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    shell, _ = make_shell(session)
    assert shell.run_line("get nowhere 1")
    assert (shell.status, capsys.readouterr().err) == (1, "error: not_found: no such record on this node\n")
    assert shell.run_line("put notes note --payload '{\"a\": 0.5}'")
    assert shell.status == 2 and "minor units" in capsys.readouterr().err
    assert shell.run_line("frobnicate")
    assert shell.status == 2 and "invalid choice: 'frobnicate'" in capsys.readouterr().err
    assert shell.run_line('put notes "unclosed')
    assert (shell.status, capsys.readouterr().err) == (2, "error: usage: No closing quotation\n")
    assert shell.run_line("get")
    assert "error: usage: give LEDGER HEIGHT" in capsys.readouterr().err
    assert shell.run_line("") and shell.run_line("   # only a comment")
    assert not shell.run_line("quit") and not shell.run_line("exit")


def test_shell_loop_ends_at_quit_or_end_of_input(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    shell, _ = make_shell(session, ["whoami", "^C", "quit", "whoami"])
    assert shell.run() == 0
    assert capsys.readouterr().out.count("account alice") == 1
    shell, _ = make_shell(session, ["whoami"])
    assert shell.run() == 0


def test_shell_help_lists_the_verbs_and_the_nodes_commands(
    session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    shell, _ = make_shell(session)
    shell.run_line("help")
    out = capsys.readouterr().out
    assert "  put        append a record" in out and "  quit" in out
    assert "Commands of node ingest-1" in out and "  put content nonce  append" in out
    shell.run_line("help vote cast")
    assert "--electronic-id E" in capsys.readouterr().out


def test_shell_help_without_a_node_still_lists_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    def unreachable(options: ClientOptions) -> Session:
        raise NodeUnavailableError("tcp://127.0.0.1:7390: no answer within 10 s")

    shell = Shell(
        shell_parser(), SessionPool(unreachable), {"config": None, "node": None, "key": Path("k"), "timeout": None}
    )
    shell.run_line("help")
    captured = capsys.readouterr()
    assert "  hello" in captured.out and "error: unavailable: tcp://127.0.0.1:7390" in captured.err


def test_completion_of_verbs_subverbs_and_options() -> None:
    parser = shell_parser()
    assert completions(parser, "", "le") == ["ledger"]
    assert "help" in completions(parser, "", "") and "quit" in completions(parser, "", "")
    assert completions(parser, "ledger ", "") == ["create", "list", "promote", "rotate-key"]
    assert completions(parser, "user key ", "") == ["add", "revoke"]
    assert completions(parser, "put notes note ", "--p") == ["--payload"]
    assert "--electronic-id" in completions(parser, "vote cast e ", "--")
    assert completions(parser, 'put "open', "") == []


def test_error_lines_carry_the_code() -> None:
    assert error_line(RemoteError("forbidden", "no", {})) == "error: forbidden: no"
    assert error_line(UsageError("bad")) == "error: usage: bad"
    assert error_line(HeightGapError("gap", ledger="l", height=2)) == "error: height_gap: ledger 'l' height 2: gap"


def test_shell_history_is_kept_only_in_a_writable_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert shell_module._history_path() == tmp_path / ".vledger_history"
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert shell_module._history_path() is None


def test_record_and_receipt_maps_are_json_ready() -> None:
    assert build.jsonable({"a": b"\x01\xff", "b": [b"\x00"], "c": (1,)}) == {"a": "01ff", "b": ["00"], "c": [1]}
    assert time_text(T0) == "2026-09-21T14:13:20.000Z"
    assert time_text(2**64 - 1) == str(2**64 - 1)
    receipt = {"ledger": "l", "height": 1, "hash": b"\x01", "checksum": b"\x02", "duplicate": False, "values": {}}
    assert build.receipt_map(receipt) == {**receipt, "hash": "01", "checksum": "02"}
    record = Entry.prepare(Content("l", "note", {"b": b"\x07"}, "alice", "r", T0), 0, PROTOCOL_LIMITS).place(
        0, bytes(32), T0, "n"
    )
    mapped = build.record_map(decode_record(record.encode(), PROTOCOL_LIMITS))
    assert mapped["payload"] == {"b": "07"} and mapped["hash"] == record.link.hex()
    json.dumps(mapped)


def test_rules_of_the_created_ledger_are_those_sent(session: Session, node: SimulatedNode) -> None:
    rules = LedgerRules(("note",), 1, {"type": "plain"})
    session.create_ledger("notes", rules)
    session._rules.clear()
    assert session.rules("notes") == rules


def test_ledger_list_merges_every_ingest_node(tmp_path: Path, vledger: Run, node: SimulatedNode) -> None:
    create(vledger, "notes")
    on_ingest_1 = node._ledger_list({})["ledgers"]
    zakat = {**on_ingest_1[0], "ledger": "zakat", "home": "ingest-2"}
    asked: list[NodeAddress | None] = []

    def per_node(args: dict[str, Any]) -> Any:
        where = node.calls[-1][2]
        asked.append(where)
        return {"ledgers": on_ingest_1 if where is None else [zakat]}

    node.override["ledger.list"] = per_node
    code, out, err = vledger("ledger", "list", "--json")
    assert code == 0, err
    assert [entry["ledger"] for entry in json.loads(out)["ledgers"]] == ["notes", "zakat"]
    assert len(asked) == 2 and asked[0] is None and asked[1] is not None and asked[1].endpoint.endswith(":7391")
    vledger.session.pinned = True  # as with --node ingest-1: that node's ledgers only
    code, out, _ = vledger("ledger", "list", "--json")
    assert [entry["ledger"] for entry in json.loads(out)["ledgers"]] == ["notes"]


def test_a_node_without_a_signed_checkpoint_is_read_as_a_chain_and_the_reader_told(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # range and vote check --full prove what a node serves against its signed checkpoint; a
    # ledger created a moment ago has none yet: its chain is checked alone, and stderr says so.
    from vledger.tools.client_commands import _signed_checkpoint

    class NoCheckpoint:
        refusal = RemoteError("not_found", "no checkpoint of 'notes' yet", {})

        def checkpoint_keys(self, ledger: str, quorum: int) -> object:
            return object()

        def checkpoint(self, ledger: str, keys: object) -> object:
            raise self.refusal

    assert _signed_checkpoint(NoCheckpoint(), "notes", 0) is None  # type: ignore[arg-type]
    assert "no signed checkpoint of 'notes' from this node: checked as a chain only" in capsys.readouterr().err
    other = NoCheckpoint()
    other.refusal = RemoteError("forbidden", "not for you", {})
    with pytest.raises(RemoteError, match="forbidden"):
        _signed_checkpoint(other, "notes", 0)  # type: ignore[arg-type]


def test_hello_of_a_standby_shows_its_follow_restarts(capsys: pytest.CaptureFixture[str]) -> None:
    hello = {"node": "ingest-2", "version": "0.1.0", "protocol": 1, "ledgers": [], "account": "a", "role": "admin"}
    print_hello(hello, as_json=False)
    assert "standby" not in capsys.readouterr().out
    print_hello({**hello, "standby": {"ledgers": ["votes", "x"], "follow_restarts": 2}}, as_json=False)
    assert capsys.readouterr().out.endswith("home to: none yet\nstandby of: votes, x (follow restarts: 2)\n")


def test_a_grant_on_a_ledger_that_does_not_exist_needs_before_create(vledger: Run, node: SimulatedNode) -> None:
    code, _, err = vledger("grant", "add", "nosuchledger", "donation", "bob")
    assert code == 1 and "no_such_ledger" in err and "--before-create" in err
    assert node.grants == []  # nothing sent
    assert vledger("grant", "add", "nosuchledger", "donation", "bob", "--before-create")[0] == 0
    create(vledger, "notes")
    assert vledger("grant", "add", "notes", "note", "bob")[0] == 0
    assert node.grants == [("nosuchledger", "donation", "bob"), ("notes", "note", "bob")]


def test_a_grant_that_would_change_nothing_is_refused_before_anything_is_sent(
    vledger: Run, node: SimulatedNode
) -> None:
    """Outsider o12: `grant add L foo` of a kind L's genesis lacks, and `grant add credits transfer
    admin` on a resources ledger (whose issue and transfer no grant closes, 7.3), exited 0 and
    recorded a grant `grant list` showed in force. `*` still goes through: it closes other kinds."""
    create(vledger, "notes")
    create(vledger, "credits", "issue,transfer,note", RESOURCES_RULES)
    code, _, err = vledger("grant", "add", "notes", "foo", "bob")
    assert code == 1 and "unknown_kind" in err and "'foo' is not one of notes's kinds ['note']" in err, err
    for kind in ("issue", "transfer"):
        code, _, err = vledger("grant", "add", "credits", kind, "bob")
        assert code == 1 and "not_grantable" in err and f"no grant closes {kind!r} on credits" in err, err
    assert node.grants == []
    for kind in ("note", "*"):
        assert vledger("grant", "add", "credits", kind, "bob")[0] == 0
    assert node.grants == [("credits", "note", "bob"), ("credits", "*", "bob")]


def _admin_ledger(node: SimulatedNode, grants: list[tuple[str, str, str]]) -> None:
    """The admin ledger in the node's store, as its home writes it: alice imported, then ``grants``."""
    store, serial = node.store, iter(range(1, 100))
    store.create_ledger(
        Entry.prepare(admin_genesis_rules().genesis_content(ADMIN_LEDGER, "alice", "g", T0), 0, PROTOCOL_LIMITS)
    )
    imported = {"account": "alice", "op": "import", "role": "admin", "enabled": True, "keys": [], "via": ""}
    rows = [("account", imported)] + [
        ("grant", {"ledger": ledger, "kind": kind, "account": account, "via": ""}) for ledger, kind, account in grants
    ]
    for kind, payload in rows:
        content = Content(ADMIN_LEDGER, kind, payload, "alice", f"a{next(serial)}", T0)
        store.append(Entry.prepare(content, 0, PROTOCOL_LIMITS))


def test_grant_list_shows_the_grants_no_rule_applies_as_inert(vledger: Run, node: SimulatedNode) -> None:
    """gr32: `grant list` showed a raw client's grant of `transfer` on a resources ledger (7.3:
    no grant closes it), or one of a kind the genesis lacks, as in force: they close nothing.
    `*` there closes the other kinds, and a grant on a ledger not created yet closes its kind
    once it is: both are in force."""
    create(vledger, "notes")
    create(vledger, "credits", "issue,transfer,note", RESOURCES_RULES)
    granted = [("credits", "transfer", "bob"), ("credits", "*", "carol"), ("credits", "note", "bob")]
    _admin_ledger(node, [*granted, ("notes", "foo", "bob"), ("notes", "note", "dan"), ("later", "donation", "eve")])
    code, out, err = vledger("grant", "list")
    assert code == 0, err
    listed, _, inert = out.partition("recorded, but no rule applies them")
    for ledger, kind, account in (("credits", "*", "carol"), ("credits", "note", "bob"), ("notes", "note", "dan")):
        assert re.search(rf"^{ledger} +{re.escape(kind)} +{account}$", listed, re.MULTILINE), out
    assert re.search(r"^later +donation +eve$", listed, re.MULTILINE), out
    assert "transfer" not in listed and "foo" not in listed
    assert re.search(r"^credits +transfer +bob +no grant closes 'transfer' on a resources ledger", inert, re.MULTILINE)
    assert re.search(r"^notes +foo +bob +notes's genesis lists no kind 'foo'", inert, re.MULTILINE), out
    grants = {(g["ledger"], g["kind"]): (g["applies"], g["inert"]) for g in vledger.json("grant", "list")["grants"]}
    assert grants[("credits", "transfer")] == (False, "no grant closes 'transfer' on a resources ledger (7.3)")
    assert grants[("notes", "foo")][0] is False
    assert grants[("credits", "*")] == grants[("later", "donation")] == grants[("notes", "note")] == (True, "")


def test_user_add_of_a_name_that_holds_units_or_issues_is_refused_unless_reused(
    vledger: Run, node: SimulatedNode
) -> None:
    create(vledger, "credits", "note", RESOURCES_RULES)  # alice issues
    assert vledger("issue", "credits", "--account", "bob", "--amount", "7")[0] == 0
    for name, held in (("bob", "the name bob holds 7 credits on credits"), ("alice", "the right to issue on credits")):
        code, _, err = vledger("user", "add", name, "--role", "writer")
        assert code == 1 and "name_holds_units" in err and held in err, err
    assert node.sent("account.add") == []
    code, out, _ = vledger("user", "remove", "bob")
    assert code == 0 and "the name bob holds 7 credits on credits still" in out
    code, out, _ = vledger("user", "add", "bob", "--role", "writer", "--reuse-name")
    assert code == 0 and node.sent("account.add") == [{"account": "bob", "role": "writer"}]
    assert vledger("user", "add", "carol", "--role", "writer")[0] == 0  # a name that holds nothing


def test_user_remove_reads_the_holdings_first_and_a_failed_read_leaves_the_removal_done(
    vledger: Run, node: SimulatedNode
) -> None:
    """Review r11 E: the holdings were read after the removal, and a read that failed its checks
    made a removal already done exit 1."""
    create(vledger, "credits", "note", RESOURCES_RULES)
    assert vledger("issue", "credits", "--account", "bob", "--amount", "7")[0] == 0
    not_the_chain = {"records": [node.store.get("credits", 1).encode()], "next": None}  # no genesis first
    node.override["range"] = lambda args: not_the_chain
    node.calls.clear()
    code, out, err = vledger("user", "remove", "bob")
    assert code == 0, err
    assert "bob" in out and "removed" in out
    assert "warning: could not read what the name bob holds" in err
    assert [cmd for cmd, _, _ in node.calls if cmd in ("range", "account.remove")] == ["range", "account.remove"]


OBSERVERS = "".join(f'[nodes.{name}]\nrole = "observer"\nport = {port}\n' for name, port in OBSERVER_PORTS.items())


def test_holdings_come_from_the_observers_agreed_count_and_a_replay_only_without_one(
    tmp_path: Path,
    vledger: Run,
    node: SimulatedNode,
    redis_server: Any,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review r11 E: every resources ledger was downloaded and replayed in full on each account
    command. With a count every observer signed alike, only the records after it are read."""
    create(vledger, "credits", "note", RESOURCES_RULES)  # alice issues
    assert vledger("issue", "credits", "--account", "bob", "--amount", "7")[0] == 0
    monkeypatch.setenv(REDIS_URL_ENV, redis_server.url)
    (tmp_path / "observed").mkdir()
    config = load_cluster(write_config(tmp_path / "observed", OBSERVERS))
    generate(config.keys_dir, "ingest-2")
    session = Session(config, config.node("ingest-1"), node, clock=lambda: T0, request_ids=lambda: "r")
    board = TallyBoard(redis_client)
    for name in OBSERVER_PORTS:
        generate_signing_key(config.keys_dir, name)
        key = load_signing_key(signing_key_paths(config.keys_dir, name)[0])
        keeper = TallyKeeper()
        for record in node.store.range("credits"):
            keeper.feed(record)
        snapshot = keeper.snapshot(name, "credits", T0)
        board.publish("credits", name, snapshot.height, snapshot.body(), key.sign(snapshot.body()))
    counted = node.store.size("credits")

    def read(account: str) -> tuple[list[Holding], list[int]]:
        node.calls.clear()
        return holdings(session, account), [args["start"] for args in node.sent("range")]

    assert read("bob") == ([Holding("credits", "credits", 7, False)], [counted])  # the count, and no record after it
    assert read("alice") == ([Holding("credits", "credits", 0, True)], [counted])  # issuers from the genesis
    assert vledger("issue", "credits", "--account", "carol", "--amount", "1")[0] == 0
    assert read("bob") == ([Holding("credits", "credits", 7, False)], [counted])  # a record naming another
    assert vledger("issue", "credits", "--account", "bob", "--amount", "1")[0] == 0
    assert read("bob") == ([Holding("credits", "credits", 8, False)], [counted, 0])  # named after the count: replayed
    board.publish("credits", "observer-2", counted - 1, b"junk", b"")  # they no longer agree: replayed
    assert read("carol") == ([Holding("credits", "credits", 1, False)], [0])


def test_promote_refuses_a_node_option_naming_another_node(vledger: Run, node: SimulatedNode) -> None:
    """`ledger promote L NODE --node X`: NODE is the node promoted, so an X naming another is a
    typo that must not promote X (outsider44 F7); the same node twice, or NODE alone, goes to NODE."""
    node.override["ledger.promote"] = lambda args: {"ledger": "far", "height": 9, "hash": b"\x01", "checksum": b"\x02"}
    for argv in (["far", "ingest-2", "--node", "ingest-1"], ["far", "bogus", "--node", "ingest-1"]):
        node.calls.clear()
        code, _, err = vledger("ledger", "promote", *argv)
        assert code == 1 and "bad_request" in err and f"--node {argv[1]}" in err, err
        assert node.sent("ledger.promote") == []
    for argv in (["far", "ingest-2"], ["far", "ingest-2", "--node", "ingest-2"]):
        node.calls.clear()
        code, _, err = vledger("ledger", "promote", *argv)
        assert code == 0, err
        sent = [where for name, _, where in node.calls if name == "ledger.promote"]
        assert len(sent) == 1 and sent[0] is not None and sent[0].endpoint.endswith(":7391"), sent


@pytest.mark.parametrize(
    ("listening", "hint"),
    [
        (None, "neither a node cut off from you by the network nor one that refuses a key says anything"),
        (True, "a node that refuses a key says nothing: check that your key was added"),
        (False, "`vledger status` shows which nodes are down"),
    ],
)
def test_a_silent_node_s_hint_names_a_network_cut_when_no_connection_was_made(
    vledger: Run, node: SimulatedNode, listening: bool | None, hint: str
) -> None:
    """o24 F3: a home whose inbound packets were dropped got "check that your key was added"
    alone; a connection that could not be made (neither accepted nor refused) may be the network."""

    def silent(args: dict[str, Any]) -> Any:
        raise NodeUnavailableError("tcp://127.0.0.1:7390: no answer within 10 s", listening=listening)

    node.override["hello"] = silent
    code, _, err = vledger("hello")
    assert code == 1 and hint in err, err
