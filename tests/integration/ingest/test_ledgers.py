"""Ledgers through a real node: create, put, the reads, homes and not_home, idempotent retries.

The module's cluster pages at 50 records (``page_size``) and homes the ledgers named in
conftest's REMOTE_LEDGERS on ingest-2; every other ledger lives on ingest-1.
"""

from __future__ import annotations

from typing import Any

import pytest

from vledger.broker.client import Client
from vledger.node.record import decode_record
from vledger.node.verify import ChainVerifier
from vledger.tests.integration.cluster import (
    ADMIN,
    LIMITS,
    LocalCluster,
    entry,
    failing_nonce,
    genesis,
    new_request_id,
    put_args,
    remote_error,
)

LEDGER = "main"
PUTS = 120
PAGE = 50


@pytest.fixture(scope="module")
def chain(cluster: LocalCluster) -> list[dict[str, Any]]:
    """The main ledger: its genesis and PUTS records of writer1; their receipts, by height."""
    receipts = [cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["note", "other"], difficulty=8))]
    entries = [entry(LEDGER, "note", {"i": i}, "writer1", difficulty=8) for i in range(PUTS)]
    receipts += cluster.client("writer1").put_many(entries)
    return receipts


def size(client: Client, ledger: str = LEDGER) -> int:
    return client.call("size", {"ledger": ledger})["size"]  # type: ignore[no-any-return]


def test_create_and_put_give_receipts_in_height_order(chain: list[dict[str, Any]]) -> None:
    assert [r["height"] for r in chain] == list(range(PUTS + 1))
    assert all(r["ledger"] == LEDGER and r["duplicate"] is False and r["values"] == {} for r in chain)
    assert len({r["hash"] for r in chain}) == PUTS + 1


def test_get_by_height_and_by_hash_give_the_receipted_record(
    cluster: LocalCluster, chain: list[dict[str, Any]]
) -> None:
    observer = cluster.client("observer")
    for receipt in (chain[0], chain[1], chain[-1]):
        by_height = observer.call("get", {"ledger": LEDGER, "height": receipt["height"]})["record"]
        by_hash = observer.call("get", {"hash": receipt["hash"]})["record"]
        assert by_height == by_hash
        record = decode_record(by_height, LIMITS)
        assert (record.height, record.hash, record.checksum) == (
            receipt["height"],
            receipt["hash"],
            receipt["checksum"],
        )
        assert record.origin == "ingest-1"
    assert decode_record(observer.call("get", {"ledger": LEDGER, "height": 5})["record"], LIMITS).content.payload == {
        "i": 4
    }


def test_missing_records_are_not_found_and_missing_ledgers_no_such_ledger(
    cluster: LocalCluster, chain: list[dict[str, Any]]
) -> None:
    observer = cluster.client("observer")
    assert remote_error(observer.call, "get", {"ledger": LEDGER, "height": PUTS + 1}).code == "not_found"
    assert remote_error(observer.call, "get", {"hash": bytes(32)}).code == "not_found"
    # Asked of ingest-2, which is not its home: not_home, followed to ingest-1, which says no_such_ledger.
    for node in ("ingest-1", "ingest-2"):
        reader = cluster.client("observer", node)
        for cmd, args in (
            ("get", {"ledger": "no-such-ledger", "height": 0}),
            ("head", {"ledger": "no-such-ledger"}),
            ("size", {"ledger": "no-such-ledger"}),
            ("range", {"ledger": "no-such-ledger", "start": 0}),
        ):
            assert remote_error(reader.call, cmd, args).code == "no_such_ledger", (node, cmd)


def test_range_pages_through_the_chain_and_it_verifies(cluster: LocalCluster, chain: list[dict[str, Any]]) -> None:
    observer = cluster.client("observer")
    pages = []
    start: int | None = 0
    while start is not None:
        page = observer.call("range", {"ledger": LEDGER, "start": start})
        assert len(page["records"]) <= PAGE
        pages.append(page)
        start = page["next"]
    assert [p["next"] for p in pages] == [50, 100, None]
    records = [decode_record(data, LIMITS) for page in pages for data in page["records"]]
    assert [(r.height, r.hash) for r in records] == [(r["height"], r["hash"]) for r in chain]
    verifier = ChainVerifier(LEDGER, LIMITS)
    for record in records:
        verifier.feed(record)
    # A limit under the page size, a limit over it, and a start at the head.
    small = observer.call("range", {"ledger": LEDGER, "start": 10, "limit": 7})
    assert (len(small["records"]), small["next"]) == (7, 17)
    assert remote_error(observer.call, "range", {"ledger": LEDGER, "start": 0, "limit": PAGE + 1}).code == "bad_request"
    last = observer.call("range", {"ledger": LEDGER, "start": PUTS})
    assert (len(last["records"]), last["next"]) == (1, None)
    assert list(observer.records(LEDGER)) == [data for page in pages for data in page["records"]]


def test_head_size_have_and_ledger_list(cluster: LocalCluster, chain: list[dict[str, Any]]) -> None:
    observer = cluster.client("observer", "ingest-1")
    head = observer.call("head", {"ledger": LEDGER})
    assert (head["height"], head["hash"]) == (PUTS, chain[-1]["hash"])
    assert decode_record(head["record"], LIMITS).hash == chain[-1]["hash"]
    assert size(observer) == PUTS + 1
    known = [chain[3]["hash"], chain[-1]["hash"]]
    assert observer.call("have", {"hashes": [known[0], bytes(32), known[1]]})["have"] == known
    assert observer.call("have", {"hashes": []})["have"] == []
    too_many = [bytes([i % 256]) * 32 for i in range(PAGE + 1)]
    assert remote_error(observer.call, "have", {"hashes": too_many}).code == "bad_request"
    listed = {item["ledger"]: item for item in observer.call("ledger.list")["ledgers"]}
    note = listed[LEDGER].pop("checkpoint")  # the home's checkpoint of its whole tree (PROTOCOL 10.7)
    assert note.startswith(f"test/{LEDGER}\n{PUTS + 1}\n".encode())
    assert f"\n\n\u2014 test/{LEDGER} ".encode() in note
    assert listed[LEDGER] == {
        "ledger": LEDGER,
        "home": "ingest-1",
        "size": PUTS + 1,
        "head": chain[-1]["hash"],
        "difficulty": 8,
        "kinds": ["note", "other"],
        "type": "plain",
    }


def test_a_write_to_another_node_is_answered_not_home_and_the_client_follows(cluster: LocalCluster) -> None:
    home = cluster.address("ingest-2")
    admin = cluster.client(ADMIN, "ingest-1")
    created = admin.create_ledger(genesis("remote", ADMIN, ["note"]))
    assert created["height"] == 0

    first = entry("remote", "note", {"x": 1}, "writer1")
    wire = cluster.wire("writer1", "ingest-1")
    reply = wire.call("put", put_args(first))
    assert reply["ok"] is False
    error = reply["error"]
    assert error["code"] == "not_home"
    assert error["home"] == {"node": "ingest-2", "endpoint": home.endpoint, "key": home.key}

    writer = cluster.client("writer1", "ingest-1")
    receipt = writer.put(first)
    assert (receipt["height"], receipt["duplicate"]) == (1, False)
    on_home = cluster.client("observer", "ingest-2")
    assert decode_record(on_home.call("get", {"hash": receipt["hash"]})["record"], LIMITS).origin == "ingest-2"
    assert size(on_home, "remote") == 2
    assert cluster.own_size("ingest-1", "remote") == 0  # placed on its home only
    assert "remote" in on_home.call("hello")["ledgers"]
    assert "remote" not in cluster.client("observer", "ingest-1").call("hello")["ledgers"]
    # The client remembers nothing wrong: a retry through ingest-1 again is a duplicate.
    again = writer.put(first)
    assert again["duplicate"] is True
    assert again["hash"] == receipt["hash"]


def test_a_retry_is_a_duplicate_with_the_same_receipt_and_one_record(
    cluster: LocalCluster, chain: list[dict[str, Any]]
) -> None:
    writer = cluster.client("writer1")
    once = entry(LEDGER, "other", {"retry": 1}, "writer1", difficulty=8)
    first = writer.put(once)
    before = size(writer)
    second = writer.put(once)
    third = writer.put_many([once, once])
    assert first["duplicate"] is False
    for again in (second, *third):
        assert again["duplicate"] is True
        assert {k: v for k, v in again.items() if k != "duplicate"} == {
            k: v for k, v in first.items() if k != "duplicate"
        }
    assert size(writer) == before
    records = [decode_record(data, LIMITS) for data in writer.records(LEDGER)]
    assert sum(r.content.request_id == once.content.request_id for r in records) == 1


def test_the_same_request_id_with_other_content_is_a_conflict(
    cluster: LocalCluster, chain: list[dict[str, Any]]
) -> None:
    writer = cluster.client("writer1")
    request_id = new_request_id()
    writer.put(entry(LEDGER, "note", {"v": 1}, "writer1", request_id=request_id, difficulty=8))
    before = size(writer)
    other = entry(LEDGER, "note", {"v": 2}, "writer1", request_id=request_id, difficulty=8)
    assert remote_error(writer.put, other).code == "request_conflict"
    # Another author may use the same request id: idempotency is per (ledger, author, request id).
    mine = cluster.client("writer2").put(
        entry(LEDGER, "note", {"v": 2}, "writer2", request_id=request_id, difficulty=8)
    )
    assert mine["duplicate"] is False
    assert size(writer) == before + 1


def test_refused_writes_write_nothing(cluster: LocalCluster, chain: list[dict[str, Any]]) -> None:
    admin = cluster.admin()
    writer = cluster.client("writer1")
    before = size(writer)
    assert remote_error(admin.create_ledger, genesis(LEDGER, ADMIN, ["note"])).code == "ledger_exists"
    assert remote_error(writer.put, entry("no-such-ledger", "note", {}, "writer1")).code == "no_such_ledger"
    assert remote_error(writer.put, entry(LEDGER, "vote", {}, "writer1", difficulty=8)).code == "unknown_kind"
    weak = entry(LEDGER, "note", {}, "writer1")
    weak_args = {"content": weak.content_bytes, "nonce": failing_nonce(weak.content_bytes, 8)}
    assert remote_error(writer.call, "put", weak_args).code == "insufficient_work"
    genesis_as_put = genesis("sneaky", "writer1", ["note"])
    assert remote_error(writer.put, genesis_as_put).code == "forbidden"
    assert remote_error(admin.call, "ledger.create", put_args(entry("sneaky", "note", {}, ADMIN))).code == "bad_genesis"
    assert size(writer) == before
    assert remote_error(size, writer, "sneaky").code == "no_such_ledger"


def test_a_read_finds_the_ledger_on_its_home(cluster: LocalCluster) -> None:
    """ingest-1 neither holds nor homes remote-2: it names the home, and the client reads there."""
    home = cluster.address("ingest-2")
    cluster.admin().create_ledger(genesis("remote-2", ADMIN, ["note"]))
    cluster.client("writer1").put(entry("remote-2", "note", {"x": 1}, "writer1"))
    pinned = cluster.client("observer", "ingest-1", follow=False)
    for cmd, args in (
        ("get", {"ledger": "remote-2", "height": 1}),
        ("head", {"ledger": "remote-2"}),
        ("size", {"ledger": "remote-2"}),
        ("range", {"ledger": "remote-2", "start": 0}),
    ):
        error = remote_error(pinned.call, cmd, args)
        assert (error.code, error.details["home"]) == (
            "not_home",
            {"node": "ingest-2", "endpoint": home.endpoint, "key": home.key},
        ), cmd
    reader = cluster.client("observer", "ingest-1")
    assert size(reader, "remote-2") == 2
    assert decode_record(reader.call("get", {"ledger": "remote-2", "height": 1})["record"], LIMITS).origin == "ingest-2"
    assert reader.call("head", {"ledger": "remote-2"})["height"] == 1
    assert len(reader.call("range", {"ledger": "remote-2", "start": 0})["records"]) == 2


def test_the_cli_reads_any_ledger_and_lists_every_ledger_of_the_cluster(
    cluster: LocalCluster, chain: list[dict[str, Any]]
) -> None:
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    cluster.admin().create_ledger(genesis("remote-files", ADMIN, ["note"]))
    assert cluster.cli("size", "remote-files", *common).stdout == "1\n"
    assert cluster.cli("get", "remote-files", "0", "--json", *common).stdout
    assert len(cluster.cli("range", "remote-files", *common).stdout.splitlines()) == 1
    listed = cluster.cli("ledger", "list", "--json", *common).stdout
    assert '"remote-files"' in listed and f'"{LEDGER}"' in listed  # homed on ingest-2 and on ingest-1
    for verb in (["size", "nope"], ["range", "nope"], ["head", "nope"], ["get", "nope", "0"]):
        done = cluster.cli(*verb, *common, check=False)
        assert (done.returncode, done.stdout) == (1, ""), verb
        assert "no_such_ledger" in done.stderr, verb
    done = cluster.cli("put", "nope", "note", "--payload", "{}", *common, check=False)
    assert done.returncode == 1 and "no_such_ledger" in done.stderr
