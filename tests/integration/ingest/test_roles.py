"""What each role may do, command by command, through a real node (docs/PROTOCOL.md 6.1)."""

from __future__ import annotations

from typing import Any

import pytest

from vledger.broker.client import Client
from vledger.tests.integration.cluster import (
    ADMIN,
    LocalCluster,
    entry,
    genesis,
    new_request_id,
    put_args,
    remote_error,
)

LEDGER = "roles"
ACCOUNT_COMMANDS = ("account.add", "account.remove", "account.enable", "account.disable", "key.add", "key.revoke")


@pytest.fixture(scope="module")
def record_hash(cluster: LocalCluster) -> bytes:
    """The roles ledger, created by the admin, with one record of writer1; that record's hash."""
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["note"]))
    receipt = cluster.client("writer1").put(entry(LEDGER, "note", {"n": 1}, "writer1"))
    return receipt["hash"]  # type: ignore[no-any-return]


def size(client: Client) -> int:
    return client.call("size", {"ledger": LEDGER})["size"]  # type: ignore[no-any-return]


def account_args(cmd: str, cluster: LocalCluster) -> dict[str, Any]:
    """Arguments that an admin could use (so a refusal can only come from the role)."""
    if cmd == "key.revoke":
        return {"key": cluster.keys["writer2"].public}
    if cmd == "key.add":
        return {"account": "writer2", "key": cluster.keys["writer2"].public}
    if cmd == "account.add":
        return {"account": "never-made", "role": "writer"}
    return {"account": "writer2"}


@pytest.mark.parametrize("node", ["ingest-1", "ingest-2"])
def test_an_observer_reads_everything(cluster: LocalCluster, record_hash: bytes, node: str) -> None:
    observer = cluster.client("observer", node)
    home = cluster.client("observer")  # the ledger lives on ingest-1
    assert observer.call("hello")["role"] == "observer"
    assert observer.call("ver")["protocol"] == 1
    assert observer.call("whoami")["account"] == "observer"
    assert home.call("get", {"ledger": LEDGER, "height": 1})["record"]
    assert home.call("get", {"hash": record_hash})["record"]
    assert len(home.call("range", {"ledger": LEDGER, "start": 0})["records"]) == 2
    assert home.call("head", {"ledger": LEDGER})["hash"] == record_hash
    assert size(home) == 2
    assert home.call("have", {"hashes": [record_hash]})["have"] == [record_hash]
    listed = {item["ledger"]: item for item in home.call("ledger.list")["ledgers"]}
    assert listed[LEDGER]["size"] == 2
    assert listed[LEDGER]["head"] == record_hash


def test_an_observer_may_not_write_nor_manage_accounts(cluster: LocalCluster, record_hash: bytes) -> None:
    observer = cluster.client("observer")
    own = entry(LEDGER, "note", {"n": 2}, "observer")
    refused = {
        "put": put_args(own),
        "ledger.create": put_args(genesis("observer-ledger", "observer", ["note"])),
        "file.upload": {"sha256": "0" * 64, "size": 1, "offset": 0, "data": b"x"},
        "account.list": {},
        **{cmd: account_args(cmd, cluster) for cmd in ACCOUNT_COMMANDS},
    }
    for cmd, args in refused.items():
        assert remote_error(observer.call, cmd, args).code == "forbidden", cmd
    assert size(observer) == 2
    names = {c["name"] for c in observer.call("help")["commands"]}
    assert "get" in names
    assert names.isdisjoint(refused), names & set(refused)


def test_a_writer_writes_but_does_not_manage_accounts_or_ledgers(cluster: LocalCluster, record_hash: bytes) -> None:
    writer = cluster.client("writer2")
    for cmd in (*ACCOUNT_COMMANDS, "account.list"):
        assert remote_error(writer.call, cmd, account_args(cmd, cluster)).code == "forbidden", cmd
    assert remote_error(writer.create_ledger, genesis("writer-ledger", "writer2", ["note"])).code == "forbidden"
    before = size(writer)
    receipt = writer.put(entry(LEDGER, "note", {"by": "writer2"}, "writer2"))
    assert (receipt["height"], receipt["duplicate"]) == (before, False)
    # writer2 is untouched by all those refused commands.
    assert writer.call("whoami")["account"] == "writer2"


def test_an_admin_manages_accounts(cluster: LocalCluster, record_hash: bytes) -> None:
    admin = cluster.admin()
    cluster.add_account("made-by-admin", "observer")
    accounts = {a["account"]: a for a in admin.call("account.list")["accounts"]}
    assert accounts["made-by-admin"]["role"] == "observer"
    assert accounts["made-by-admin"]["enabled"] is True
    assert accounts["made-by-admin"]["keys"] == [cluster.keys["made-by-admin"].public]
    assert accounts[ADMIN]["role"] == "admin"
    assert cluster.client("made-by-admin", "ingest-2").call("whoami")["role"] == "observer"
    result = admin.call("account.remove", {"account": "made-by-admin"})
    assert result["account"] == "made-by-admin"
    assert "made-by-admin" not in {a["account"] for a in admin.call("account.list")["accounts"]}


@pytest.mark.parametrize("author", ["writer1", ADMIN, "nobody"])
def test_a_record_must_name_its_sender_as_author(cluster: LocalCluster, record_hash: bytes, author: str) -> None:
    writer = cluster.client("writer2")
    before = size(writer)
    forged = entry(LEDGER, "note", {"forged": True}, author, request_id=new_request_id())
    assert remote_error(writer.put, forged).code == "forbidden"
    assert size(writer) == before
