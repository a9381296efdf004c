"""IngestService's put rounds, in process over a real ChainStore: where each round is committed.

A round of at most ``[ingest] inline_commit_max`` puts is committed on the thread that calls
``flush`` (the request loop's); a larger one goes to the store's committer thread, and ``flush``
returns before it is durable. Either way each put is answered in its order, with its own
receipt or its own documented error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgpack
import pytest

from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import new_signing_key
from vledger.config.cluster import ClusterConfig, IngestSettings, ReplicationSettings, cluster_from_mapping
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.outbox import Outbox
from vledger.ingest.service import Caller, IngestService, Pending
from vledger.node import verify as verify_module
from vledger.node.cosigning import GatheredCheckpoint
from vledger.node.errors import NoSuchLedgerError, StoreDamagedError, StoreError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, Checkpoint, SignerKey, parse_checkpoint, parse_note
from vledger.node.record import Content, Entry, decode_record
from vledger.node.store import ChainStore
from vledger.node.storefile import StoreReader
from vledger.node.wire import Args, encode_request
from vledger.node.witness import HomeSigner, witness_name
from vledger.tests.integration.cluster import wait_until
from vledger.tests.unit.ingest.test_write_concern import make_watch

NODE = "ingest-1"
LEDGER = "orders"
KIND = "order"
WRITER = "alice"
KEY = "k" * 40  # the CURVE key the loop would pass; the accounts below know only this one
TIMEOUT = 10.0


class OneAccount:
    def lookup(self, key: str) -> Caller | None:
        return Caller(WRITER, "writer", key) if key == KEY else None


class NoAdmin:
    def apply(self, command: str, args: Args, caller: Caller | None = None) -> dict[str, Any]:
        raise AssertionError("no admin command is sent here")

    def list_accounts(self) -> list[dict[str, Any]]:
        raise AssertionError("no admin command is sent here")


def _config(tmp_path: Path, inline_commit_max: int) -> ClusterConfig:
    config = cluster_from_mapping(
        {
            "cluster": {
                "name": "local",
                "keys": "keys",
                "data": "data",
                "redis": "redis://127.0.0.1:1/0",
                "default_home": NODE,
            },
            "nodes": {NODE: {"role": "ingest", "port": 7101, "pub_port": 7201}},
        },
        tmp_path / "cluster.toml",
    )
    return dataclasses.replace(config, ingest=IngestSettings(inline_commit_max=inline_commit_max))


def _entry(number: int, author: str = WRITER) -> Entry:
    content = Content(LEDGER, KIND, {"n": number}, author, f"req-{number}", 1_700_000_000_000 + number)
    return Entry.prepare(content, 0, PROTOCOL_LIMITS)


def _put(request_id: int, entry: Entry) -> bytes:
    return encode_request(request_id, "put", {"content": entry.content_bytes, "nonce": entry.nonce})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChainStore]:
    with ChainStore(tmp_path / "store", origin=NODE) as opened:
        genesis = LedgerRules(kinds=(KIND,), difficulty=0).genesis_content(LEDGER, WRITER, "genesis", 0)
        opened.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        yield opened


def _service(tmp_path: Path, store: ChainStore, inline_commit_max: int) -> IngestService:
    config = _config(tmp_path, inline_commit_max)
    return IngestService(config, config.nodes[NODE], store, OneAccount(), NoAdmin(), {})


def _pending(reply: object) -> Pending:
    assert isinstance(reply, Pending), reply
    return reply


def _answer(pending: Pending) -> dict[str, Any]:
    pending.future.result(TIMEOUT)
    value: dict[str, Any] = msgpack.unpackb(pending.reply(), raw=False)
    return value


def _committing_threads(pendings: list[Pending]) -> set[int]:
    """The threads that complete each reply's future (its done callback runs on that thread,
    or on this one when the future is already done)."""
    threads: set[int] = set()
    for pending in pendings:
        pending.future.add_done_callback(lambda _: threads.add(threading.get_ident()))
    return threads


def test_a_lone_put_is_durable_when_flush_returns_on_the_calling_thread(tmp_path: Path, store: ChainStore) -> None:
    service = _service(tmp_path, store, inline_commit_max=1)
    pending = _pending(service.handle(KEY, _put(7, _entry(1))))
    threads = _committing_threads([pending])
    service.flush()
    assert pending.future.done()  # no wait: committed here
    assert threads == {threading.get_ident()}
    answer = _answer(pending)
    assert answer["id"] == 7 and answer["ok"] and answer["result"]["height"] == 1


def test_a_round_of_puts_is_not_hashed_again_when_placed(
    tmp_path: Path, store: ChainStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service makes each put's entry from its bytes (Entry.from_wire or from_checked, which
    hash the content), so the store places its round without a second SHA-256 of each (p39)."""
    service = _service(tmp_path, store, inline_commit_max=1)
    pendings = [_pending(service.handle(KEY, _put(7 + i, _entry(1 + i)))) for i in range(3)]
    hashed: list[bytes] = []
    checksum_of = verify_module.checksum_of
    monkeypatch.setattr(verify_module, "checksum_of", lambda data: hashed.append(data) or checksum_of(data))
    service.flush()
    assert [_answer(p)["result"]["height"] for p in pendings] == [1, 2, 3]
    assert hashed == []


def test_a_lone_put_answered_in_flush_is_seen_by_the_next_request(tmp_path: Path, store: ChainStore) -> None:
    """A lone put is answered from its done callback before the store books its group (heads,
    lookups): the request loop's next request, handled once flush returned, must find it
    whichever way it asks (by height, by hash, by request, the ledger's head)."""
    service = _service(tmp_path, store, inline_commit_max=1)
    entry = _entry(1)
    pending = _pending(service.handle(KEY, _put(7, entry)))
    answers: list[dict[str, Any]] = []
    pending.future.add_done_callback(lambda _: answers.append(msgpack.unpackb(pending.reply(), raw=False)))
    service.flush()
    assert len(answers) == 1 and answers[0]["ok"]  # answered within flush, on this thread
    receipt = answers[0]["result"]

    def ask(request_id: int, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        reply = service.handle(KEY, encode_request(request_id, cmd, args))
        assert isinstance(reply, bytes), reply  # answered at once, on the loop's thread
        value: dict[str, Any] = msgpack.unpackb(reply, raw=False)
        assert value["ok"], value
        return value["result"]  # type: ignore[no-any-return]

    assert ask(8, "head", {"ledger": LEDGER})["height"] == receipt["height"] == 1
    record = ask(9, "get", {"ledger": LEDGER, "height": 1})["record"]
    assert decode_record(record, PROTOCOL_LIMITS).hash == receipt["hash"]
    assert ask(10, "get", {"hash": receipt["hash"]})["record"] == record
    retry = _pending(service.handle(KEY, _put(11, entry)))  # the same request again: its first receipt
    service.flush()
    assert _answer(retry)["result"] == {**receipt, "duplicate": True}


def test_a_round_over_the_inline_limit_is_committed_by_the_committer_thread(tmp_path: Path, store: ChainStore) -> None:
    service = _service(tmp_path, store, inline_commit_max=1)
    store_held = threading.Event()
    release = threading.Event()

    # The committer's group cannot finish before the test has seen flush return: the store's
    # on_commit (called inside the group commit, before any future is done) waits for it.
    def hold(_: object) -> None:
        store_held.set()
        assert release.wait(TIMEOUT)

    store.on_commit = hold
    pendings = [_pending(service.handle(KEY, _put(i, _entry(i)))) for i in range(1, 6)]
    threads = _committing_threads(pendings)
    service.flush()
    assert store_held.wait(TIMEOUT)  # the round is being committed elsewhere, and flush returned
    assert not any(p.future.done() for p in pendings)
    release.set()
    answers = [_answer(p) for p in pendings]
    assert [a["id"] for a in answers] == [1, 2, 3, 4, 5]
    assert [a["result"]["height"] for a in answers] == [1, 2, 3, 4, 5]  # placed in the order read
    assert threading.get_ident() not in threads and len(threads) == 1


def test_a_round_within_a_raised_inline_limit_is_committed_on_the_calling_thread(
    tmp_path: Path, store: ChainStore
) -> None:
    service = _service(tmp_path, store, inline_commit_max=8)
    pendings = [_pending(service.handle(KEY, _put(i, _entry(i)))) for i in range(1, 6)]
    service.flush()
    assert all(p.future.done() for p in pendings)
    assert [_answer(p)["result"]["height"] for p in pendings] == [1, 2, 3, 4, 5]


def test_a_refused_put_in_a_handed_over_round_gets_its_own_error_and_the_others_their_receipts(
    tmp_path: Path, store: ChainStore
) -> None:
    service = _service(tmp_path, store, inline_commit_max=1)
    first = _entry(1)
    # The same request id with other content is refused by the store (request_conflict);
    # malformed bytes and another author's entry are refused before the round (bad_request, forbidden).
    conflicting = Entry.prepare(dataclasses.replace(first.content, payload={"n": 99}), 0, PROTOCOL_LIMITS)
    replies = [
        service.handle(KEY, _put(1, first)),
        service.handle(KEY, b"\x93not a request"),
        service.handle(KEY, _put(3, _entry(3, author="mallory"))),
        service.handle(KEY, _put(4, conflicting)),
        service.handle(KEY, _put(5, _entry(5))),
    ]
    service.flush()
    errors = [msgpack.unpackb(r, raw=False) for r in replies if isinstance(r, bytes)]
    assert [e["error"]["code"] for e in errors] == ["bad_request", "forbidden"]
    answers = [_answer(r) for r in replies if isinstance(r, Pending)]
    assert [a["id"] for a in answers] == [1, 4, 5]
    assert answers[0]["ok"] and answers[0]["result"]["height"] == 1
    assert not answers[1]["ok"] and answers[1]["error"]["code"] == "request_conflict"
    assert answers[2]["ok"] and answers[2]["result"]["height"] == 2


def test_a_round_answered_together_gets_the_bytes_each_reply_would_have(tmp_path: Path, store: ChainStore) -> None:
    # replies() reads each future's outcome once for the run of replies waiting on it: a
    # receipt, a put's own refusal and a whole failed round must each come out as reply() says.
    service = _service(tmp_path, store, inline_commit_max=1)
    first = _entry(1)
    conflicting = Entry.prepare(dataclasses.replace(first.content, payload={"n": 99}), 0, PROTOCOL_LIMITS)
    committed = [_pending(service.handle(KEY, _put(i, e))) for i, e in ((1, first), (2, conflicting), (3, _entry(3)))]
    service.flush()
    failed: Future[Any] = Future()
    failed.set_exception(NoSuchLedgerError("no ledger 'x'"))
    refused = [Pending(i, failed, lambda result: result) for i in (4, 5)]
    waiting = [*committed, *refused]
    assert service.replies(list(waiting)) == [p.reply() for p in waiting]
    codes = [msgpack.unpackb(r, raw=False).get("error", {}).get("code") for r in service.replies(list(waiting))]
    assert codes == [None, "request_conflict", None, "no_such_ledger", "no_such_ledger"]


def test_a_round_handed_over_after_the_store_closed_is_answered_with_its_error(
    tmp_path: Path, store: ChainStore
) -> None:
    service = _service(tmp_path, store, inline_commit_max=1)
    pendings = [_pending(service.handle(KEY, _put(i, _entry(i)))) for i in (1, 2)]
    store.close()
    service.flush()
    answers = [_answer_even_failed(p) for p in pendings]
    assert [a["error"]["code"] for a in answers] == ["store_closed"] * 2


def _answer_even_failed(pending: Pending) -> dict[str, Any]:
    done: Future[Any] = pending.future
    done.exception(TIMEOUT)
    value: dict[str, Any] = msgpack.unpackb(pending.reply(), raw=False)
    return value


@pytest.mark.parametrize(
    ("cmd", "args"),
    [
        ("put", {"W": 2}),  # a misspelt write concern: never a put without it
        ("put", {"zzz": 1}),
        ("size", {"ledger": LEDGER, "start": 0}),
        ("hello", {"verbose": True}),
    ],
)
def test_an_argument_a_command_does_not_take_is_refused_naming_it(
    tmp_path: Path, store: ChainStore, cmd: str, args: dict[str, Any]
) -> None:
    service = _service(tmp_path, store, inline_commit_max=1)
    sent = {"content": _entry(1).content_bytes, "nonce": _entry(1).nonce, **args} if cmd == "put" else args
    reply = msgpack.unpackb(service.handle(KEY, encode_request(7, cmd, sent)), raw=False)  # type: ignore[arg-type]
    unknown = sorted(set(sent) - {"content", "nonce", "ledger"})
    assert reply["error"]["code"] == "bad_request", reply
    assert all(repr(name) in reply["error"]["message"] for name in unknown)
    assert store.size(LEDGER) == 1  # nothing was written


def test_otp_may_come_with_any_command_and_the_taken_arguments_pass(tmp_path: Path, store: ChainStore) -> None:
    service = _service(tmp_path, store, inline_commit_max=1)
    entry = _entry(1)
    pending = service.handle(
        KEY, encode_request(8, "put", {"content": entry.content_bytes, "nonce": entry.nonce, "w": 0, "otp": "123456"})
    )
    service.flush()
    assert _answer(_pending(pending))["result"]["height"] == 1
    reply = msgpack.unpackb(service.handle(KEY, encode_request(9, "size", {"ledger": LEDGER, "otp": "1"})), raw=False)  # type: ignore[arg-type]
    assert reply["result"]["size"] == 2


PROTOCOL = Path(__file__).parents[3] / "docs" / "PROTOCOL.md"


def _section_6_1() -> str:
    text = PROTOCOL.read_text(encoding="utf-8")
    section = text[text.index("### 6.1 Commands") :]
    return section[: section.index("\n### ", 1)]


def test_each_command_takes_the_arguments_protocol_6_1_lists() -> None:
    """An argument a command does not take is refused: the table an outsider reads must name
    every one a command takes, and none it would refuse."""
    from vledger.ingest.service import COMMANDS

    listed = 0
    for line in _section_6_1().splitlines():
        row = re.match(r"\| (`[^|]*) \| ([^|]*) \|", line)
        if row is None:
            continue
        documented = set(re.findall(r'"([a-z_0-9]+)"', row.group(2)))
        for name in re.findall(r"`([a-z.]+)`", row.group(1)):
            assert COMMANDS[name].takes - {"otp"} == documented, name
            listed += 1
    assert listed >= 20


def test_a_replica_serves_the_commands_protocol_6_1_says() -> None:
    from vledger.ingest.service import READ_COMMANDS

    said = re.search(r"A replica node serves only (.*?); a write sent there", _section_6_1(), re.S)
    assert said is not None
    writes = {"put", "ledger.create"}  # answered not_home, as the same sentence says
    assert set(re.findall(r"`([a-z.]+)`", said.group(1))) == READ_COMMANDS - writes


def test_binary_argument_names_are_refused_with_the_others(tmp_path: Path, store: ChainStore) -> None:
    # msgpack lets a map key be bin as well as str: the refusal must name both kinds, not
    # fail sorting them together (a TypeError, answered as a bug).
    service = _service(tmp_path, store, inline_commit_max=1)
    args: dict[Any, Any] = {b"ledger": LEDGER, "x": 1}
    reply = msgpack.unpackb(service.handle(KEY, encode_request(7, "size", args)), raw=False)  # type: ignore[arg-type]
    assert reply["error"]["code"] == "bad_request", reply
    assert "b'ledger'" in reply["error"]["message"] and "'x'" in reply["error"]["message"]


@pytest.mark.parametrize("beside", [{"ledger": "other"}, {"ledger": LEDGER}, {"height": 0}])
def test_get_by_hash_with_a_ledger_or_height_beside_it_is_refused(
    tmp_path: Path, store: ChainStore, beside: dict[str, Any]
) -> None:
    # The hash form finds a record in any ledger: a ledger named beside it would be answered
    # with a record of another ledger, as though it were that ledger's.
    service = _service(tmp_path, store, inline_commit_max=1)
    genesis = store.get(LEDGER, 0)
    assert genesis is not None
    args = {"hash": genesis.hash, **beside}
    reply = msgpack.unpackb(service.handle(KEY, encode_request(7, "get", args)), raw=False)  # type: ignore[arg-type]
    assert reply["error"] == {"code": "bad_request", "message": "give ledger and height, or hash, not both"}
    alone = msgpack.unpackb(service.handle(KEY, encode_request(8, "get", {"hash": genesis.hash})), raw=False)  # type: ignore[arg-type]
    assert alone["result"]["record"] == genesis.encode()


class OneAdmin:
    def lookup(self, key: str) -> Caller | None:
        return Caller("root", "admin", key) if key == KEY else None


@pytest.mark.parametrize("name", ["totp", "accounts", "ledgers"])
def test_a_ledger_named_as_a_redis_group_tag_is_refused_at_create(tmp_path: Path, store: ChainStore, name: str) -> None:
    # Its keys (vledger:{totp}:held:<node>, ...) would share the group's tag and its ACL patterns.
    config = _config(tmp_path, 1)
    service = IngestService(config, config.nodes[NODE], store, OneAdmin(), NoAdmin(), {})
    genesis = Entry.prepare(
        LedgerRules(kinds=(KIND,), difficulty=0).genesis_content(name, "root", "g", 0), 0, PROTOCOL_LIMITS
    )
    sent = encode_request(3, "ledger.create", {"content": genesis.content_bytes, "nonce": genesis.nonce})
    reply = msgpack.unpackb(service.handle(KEY, sent), raw=False)  # type: ignore[arg-type]
    assert reply["error"]["code"] == "bad_genesis" and repr(name) in reply["error"]["message"], reply
    assert store.size(name) == 0


@pytest.mark.parametrize("node", ["replica-1", "anything"])
def test_an_outside_witness_named_as_a_witness_of_the_cluster_is_refused_at_create(
    tmp_path: Path, store: ChainStore, node: str
) -> None:
    # Review r19 4: cosigners are told apart by name, so such a key's cosignatures counted as the
    # cluster witness's, which says its store holds the records (a fenced tail served immutable).
    config = _config(tmp_path, 1)
    service = IngestService(config, config.nodes[NODE], store, OneAdmin(), NoAdmin(), {})
    impostor = SignerKey(witness_name(config.name, node), ALG_COSIGNATURE_V1, bytes([11]) * 32)
    rules = {"witnesses": [impostor.verifier().encode()], "quorum": 1}
    content = LedgerRules(kinds=(KIND,), difficulty=0, rules=rules).genesis_content("polls", "root", "g", 0)
    genesis = Entry.prepare(content, 0, PROTOCOL_LIMITS)
    sent = encode_request(3, "ledger.create", {"content": genesis.content_bytes, "nonce": genesis.nonce})
    reply = msgpack.unpackb(service.handle(KEY, sent), raw=False)  # type: ignore[arg-type]
    assert reply["error"]["code"] == "bad_genesis" and "is named as a witness of cluster" in reply["error"]["message"]
    assert store.size("polls") == 0


@pytest.mark.parametrize("bound", [{}, {"max_holders": 3}], ids=["unbounded", "bounded"])
def test_a_new_resources_ledger_must_write_out_its_holders_bound(
    tmp_path: Path, store: ChainStore, bound: dict[str, Any]
) -> None:
    # Review r12, 5: without max_holders a resources ledger has no bound (kept for the ledgers of
    # before it), so a raw ledger.create brought back outsider o6 H9's flood of holders.
    config = _config(tmp_path, 1)
    service = IngestService(config, config.nodes[NODE], store, OneAdmin(), NoAdmin(), {})
    rules = {"type": "resources", "unit": "credits", "issuers": ["root"], **bound}
    genesis = Entry.prepare(
        LedgerRules(("issue", "transfer"), 0, rules).genesis_content("credits", "root", "g", 0), 0, PROTOCOL_LIMITS
    )
    sent = encode_request(3, "ledger.create", {"content": genesis.content_bytes, "nonce": genesis.nonce})
    handled = service.handle(KEY, sent)
    if bound:
        assert "error" not in _answer(_pending(handled))
        assert store.rules("credits").rules["max_holders"] == 3
        return
    reply = msgpack.unpackb(handled, raw=False)  # type: ignore[arg-type]
    assert reply["error"]["code"] == "bad_genesis", reply
    assert "rules.max_holders (10000 by default)" in reply["error"]["message"], reply
    assert store.size("credits") == 0


@pytest.mark.parametrize(
    ("cmd", "args"),
    [
        ("range", {"ledger": LEDGER, "start": 0}),
        ("get", {"ledger": LEDGER, "height": 2}),
        ("head", {"ledger": LEDGER}),
    ],
)
def test_a_record_tampered_into_text_while_the_node_runs_is_answered_store_damaged(
    tmp_path: Path, store: ChainStore, cmd: str, args: dict[str, Any]
) -> None:
    """Valid UTF-8 TEXT is read as a str, with no decode error to stop it: range served it as a
    record's bytes, get and head failed with a TypeError, until the node's next start."""
    for number in (1, 2, 3):
        store.append(_entry(number))
    found: list[StoreDamagedError] = []
    store.on_damaged = found.append
    height = 3 if cmd == "head" else 2
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        conn.execute("UPDATE records SET data = 'hello' WHERE ledger = ? AND height = ?", (LEDGER, height))
        conn.commit()
    reply = _service(tmp_path, store, 1).handle(KEY, encode_request(1, cmd, args))
    answer = _answer(reply) if isinstance(reply, Pending) else msgpack.unpackb(reply, raw=False)
    assert answer["error"]["code"] == "store_damaged"
    assert f"data column holds a text value, not blob (ledger '{LEDGER}' at {height})" in answer["error"]["message"]
    assert len(found) == 1  # the node's stop (its runtime's on_damaged), once


def test_a_record_tampered_into_text_is_damage_when_found_by_its_hash(tmp_path: Path, store: ChainStore) -> None:
    """Its copy by bytes() raised a TypeError (the request failed unexpectedly), a number's made zero bytes."""
    link = store.append(_entry(1)).hash
    found: list[StoreDamagedError] = []
    store.on_damaged = found.append
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        conn.execute("UPDATE records SET data = 'hello' WHERE ledger = ? AND height = 1", (LEDGER,))
        conn.commit()
    reply = _service(tmp_path, store, 1).handle(KEY, encode_request(1, "get", {"hash": link}))
    answer = _answer(reply) if isinstance(reply, Pending) else msgpack.unpackb(reply, raw=False)
    assert answer["error"]["code"] == "store_damaged" and len(found) == 1
    with (
        contextlib.closing(StoreReader(store.directory)) as reader,
        pytest.raises(StoreError, match="holds a text value"),
    ):
        reader.find_hash(link)


def test_a_range_over_a_hole_continues_after_the_last_record_it_gave(tmp_path: Path, store: ChainStore) -> None:
    """fl28b: a store lacking heights below its head gives the records it holds (each names its
    height, 10.6 step 1), and ``next`` was ``start + len(records)``: a reader asked again for
    records it had just read; a page wholly in the hole said ``next`` = its own start, forever."""
    for number in range(1, 10):
        store.append(_entry(number))
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        conn.execute("DELETE FROM records WHERE ledger = ? AND height BETWEEN 3 AND 5", (LEDGER,))
        conn.commit()
    service = _service(tmp_path, store, 1)

    def page(start: int, limit: int) -> tuple[list[int], int | None]:
        reply = service.handle(KEY, encode_request(1, "range", {"ledger": LEDGER, "start": start, "limit": limit}))
        answer = _answer(reply) if isinstance(reply, Pending) else msgpack.unpackb(reply, raw=False)
        result = answer["result"]
        return [decode_record(data, PROTOCOL_LIMITS).height for data in result["records"]], result["next"]

    assert page(0, 8) == ([0, 1, 2, 6, 7], 8)
    assert page(3, 3) == ([], 6)  # wholly in the hole: passed over, not asked again
    assert page(2, 3) == ([2], 3)
    assert page(8, 8) == ([8, 9], None)


def test_a_range_over_a_hole_carries_no_checkpoint_whose_last_record_is_in_the_hole(
    tmp_path: Path, store: ChainStore
) -> None:
    """review r14 small28: ``end`` is the height after the last record given, so a checkpoint
    of size 5 (its last record, 4, in the hole) went with records 0-2 and 6-7, which its reader
    cannot store by it; PROTOCOL's rule is that height ``n - 1`` is among the records given."""
    for number in range(1, 10):
        store.append(_entry(number))
    signer = HomeSigner("test", new_signing_key().seed)
    outbox = Outbox(NODE, store, None, None, ReplicationSettings(), signer=signer)
    assert outbox.sign(LEDGER, 5) is not None and outbox.sign(LEDGER, 8) is not None
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        conn.execute("DELETE FROM records WHERE ledger = ? AND height BETWEEN 3 AND 5", (LEDGER,))
        conn.commit()
    config = _config(tmp_path, 1)
    service = IngestService(config, config.nodes[NODE], store, OneAccount(), NoAdmin(), {}, checkpoints=outbox)

    def page(start: int, limit: int) -> tuple[list[int], int | None]:
        reply = service.handle(KEY, encode_request(1, "range", {"ledger": LEDGER, "start": start, "limit": limit}))
        result = (_answer(reply) if isinstance(reply, Pending) else msgpack.unpackb(reply, raw=False))["result"]
        note = result["checkpoint"]
        return [decode_record(data, PROTOCOL_LIMITS).height for data in result["records"]], (
            None if note is None else parse_checkpoint(parse_note(note).text).size
        )

    assert page(0, 3) == ([0, 1, 2], None)  # size 5 ends past these
    assert page(0, 7) == ([0, 1, 2, 6], None)  # was 5: record 4 is in the hole
    assert page(0, 8) == ([0, 1, 2, 6, 7], 8)  # record 7 is given


@pytest.mark.parametrize("request_id", ["epoch-2", "rotate-0000abcd", "epoch-"])
def test_a_put_may_not_take_a_request_id_the_node_makes_for_its_own_records(
    tmp_path: Path, store: ChainStore, request_id: str
) -> None:
    """ho32: the node places a handover as ``epoch-<e>`` and a key rotation as ``rotate-<id>``
    for the admin who asks (PROTOCOL 6, 10.9): a record of the author's under such an id took
    it first. Refused bad_field, nothing written; another id of the same shape passes."""
    service = _service(tmp_path, store, inline_commit_max=1)
    taken = Entry.prepare(dataclasses.replace(_entry(1).content, request_id=request_id), 0, PROTOCOL_LIMITS)
    reply = service.handle(KEY, _put(1, taken))
    assert isinstance(reply, bytes)
    error = msgpack.unpackb(reply, raw=False)["error"]
    assert error["code"] == "bad_field" and request_id in error["message"]
    assert store.size(LEDGER) == 1
    fine = Entry.prepare(dataclasses.replace(_entry(1).content, request_id="my-epoch-2"), 0, PROTOCOL_LIMITS)
    pending = _pending(service.handle(KEY, _put(2, fine)))
    service.flush()
    assert _answer(pending)["result"]["height"] == 1


def test_a_put_whose_w_can_never_be_met_is_refused_before_it_is_written(
    tmp_path: Path, store: ChainStore, redis_client: Any
) -> None:
    # outsider o15 #3: the node itself said "w=4 can never be met here", yet only after writing the
    # record and waiting write_timeout_ms, and answered replication_timeout.
    config = _config(tmp_path, inline_commit_max=1)
    watch = make_watch(ReplicationLedger(redis_client), store.checkpoints, [])  # 3 replicas count, not observer-1
    service = IngestService(config, config.nodes[NODE], store, OneAccount(), NoAdmin(), {}, replicas=watch)
    entry = _entry(1)
    args = {"content": entry.content_bytes, "nonce": entry.nonce}
    reply = service.handle(KEY, encode_request(7, "put", {**args, "w": 4}))
    assert isinstance(reply, bytes), "taken, to be written and time out"
    error = msgpack.unpackb(reply, raw=False)["error"]
    assert error["code"] == "bad_request", error
    assert "w=4 can never be met here: only 3 witnesses count for w" in error["message"]
    assert "not written" in error["message"]
    service.flush()
    assert store.size(LEDGER) == 1  # nothing was written
    within = _pending(service.handle(KEY, encode_request(8, "put", {**args, "w": 3})))
    service.flush()
    wait_until(lambda: store.size(LEDGER) == 2, TIMEOUT, "the put of a w that can be met written")
    assert not within.future.done()  # waiting for its witnesses, none of which runs here


class _LatestNote:
    def latest(self, ledger: str) -> bytes:
        return b"the home's latest"


class _Gathered:
    """A CosignatureSource: a ledger with outside witness ow.example/w1 and cluster witness replica-1."""

    def __init__(self, gathered: list[GatheredCheckpoint]) -> None:
        self._gathered = gathered

    def gathered(self, ledger: str, latest: bytes) -> list[GatheredCheckpoint]:
        return self._gathered

    def outside_names(self, ledger: str) -> frozenset[str]:
        return frozenset({"ow.example/w1"})

    def cluster_names(self) -> frozenset[str]:
        return frozenset({"local/witness/replica-1"})


def test_a_checkpoint_asked_with_cosignatures_follows_the_epoch_rule(tmp_path: Path, store: ChainStore) -> None:
    """Outsider o24 F0 (13.5 step 3): an outside witness's line alone makes no checkpoint of an
    epoch from 2 count, so a reader asking for cosignatures is not served one (it would refuse
    it, and a client with quorum 0 asking again for 1 cosignature got it again)."""
    lines = ("vledger-epoch 2 ingest-2",)
    outside_only = GatheredCheckpoint(Checkpoint(f"local/{LEDGER}", 5, bytes(32), lines), b"5", ("ow.example/w1",))
    both = ("local/witness/replica-1", "ow.example/w1")
    cosigned = GatheredCheckpoint(Checkpoint(f"local/{LEDGER}", 4, bytes(32), lines), b"4", both)
    config = _config(tmp_path, 0)
    service = IngestService(
        config,
        config.nodes[NODE],
        store,
        OneAccount(),
        NoAdmin(),
        {},
        checkpoints=_LatestNote(),  # type: ignore[arg-type]
        cosignatures=_Gathered([outside_only, cosigned]),
    )
    assert service.cosigned_checkpoint(LEDGER).checkpoint.size == 5  # no cosignature asked: the latest
    assert service.cosigned_checkpoint(LEDGER, 1).checkpoint.size == 4
    assert service.cosigned_checkpoint(LEDGER, 2, outside=1).checkpoint.size == 4
