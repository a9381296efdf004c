"""Domain rules enforced by a real ingest node: elections, charity funds, resources.

Each refusal carries the rule's own code, and nothing is written for it: the ledger's size
is the same before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vledger.broker.client import Client
from vledger.node.record import decode_record
from vledger.node.sealed import new_seal_key, seal, unseal
from vledger.tests.integration.cluster import (
    ADMIN,
    LIMITS,
    LocalCluster,
    entry,
    genesis,
    now_ms,
    raw_content,
    remote_error,
)

HOUR_MS = 3_600_000
ELECTION = "election"
CHARITY = "charity"
RESOURCES = "resources"
SEAL_KEY = new_seal_key()


def size(client: Client, ledger: str) -> int:
    return client.call("size", {"ledger": ledger})["size"]  # type: ignore[no-any-return]


def refused(client: Client, ledger: str, code: str, put: Callable[[], Any]) -> None:
    """``put()`` is refused with ``code`` and the ledger does not grow."""
    before = size(client, ledger)
    assert remote_error(put).code == code
    assert size(client, ledger) == before


@pytest.fixture(scope="module")
def ledgers(cluster: LocalCluster) -> None:
    admin = cluster.admin()
    now = now_ms()
    admin.create_ledger(
        genesis(
            ELECTION,
            ADMIN,
            ["cast", "register", "uncast", "withdraw"],
            {"type": "election", "choices": ["yes", "no"], "opens": now - HOUR_MS, "closes": now + HOUR_MS},
        )
    )
    admin.create_ledger(
        genesis(
            CHARITY, ADMIN, ["disbursement", "donation"], {"type": "charity", "currency": "SAR", "funds": ["relief"]}
        )
    )
    admin.create_ledger(
        genesis(
            RESOURCES,
            ADMIN,
            ["issue", "transfer"],
            {"type": "resources", "unit": "credits", "issuers": [ADMIN], "max_holders": 100},
        )
    )


# --- elections ----------------------------------------------------------------------------


def test_an_election_through_the_node(cluster: LocalCluster, ledgers: None) -> None:
    voter = cluster.client("writer1")

    def put(kind: str, **payload: Any) -> dict[str, Any]:
        return voter.put(entry(ELECTION, kind, payload, "writer1"))

    def refuse(code: str, kind: str, **payload: Any) -> None:
        refused(voter, ELECTION, code, lambda: put(kind, **payload))

    registration = entry(ELECTION, "register", {"voter_id": "V-1001"}, "writer1")
    receipt = voter.put(registration)
    eid = receipt["values"]["electronic_id"]
    assert eid == "E-" + registration.checksum[:8].hex()
    # A retried registration gives the same electronic id, from the stored record.
    assert voter.put(registration)["values"] == {"electronic_id": eid}
    refuse("already_registered", "register", voter_id="V-1001")

    assert put("cast", electronic_id=eid, choice="yes")["values"] == {}
    refuse("already_voted", "cast", electronic_id=eid, choice="no")
    refuse("invalid_choice", "cast", electronic_id=eid, choice="maybe")
    refuse("not_registered", "cast", electronic_id="E-0000000000000000", choice="yes")
    refuse("bad_payload", "cast", electronic_id=eid)
    put("uncast", electronic_id=eid)
    refuse("no_active_vote", "uncast", electronic_id=eid)
    put("cast", electronic_id=eid, choice="no")
    put("withdraw", electronic_id=eid)
    refuse("withdrawn", "cast", electronic_id=eid, choice="yes")
    refuse("withdrawn", "withdraw", electronic_id=eid)

    kinds = [decode_record(data, LIMITS).content.kind for data in voter.records(ELECTION)]
    assert kinds == ["genesis", "register", "cast", "uncast", "cast", "withdraw"]


def test_a_closed_election_refuses_votes(cluster: LocalCluster, ledgers: None) -> None:
    now = now_ms()
    cluster.admin().create_ledger(
        genesis(
            "election-closed",
            ADMIN,
            ["cast", "register", "uncast", "withdraw"],
            {"type": "election", "choices": ["yes"], "opens": now - 2 * HOUR_MS, "closes": now - HOUR_MS},
        )
    )
    voter = cluster.client("writer2")
    refused(
        voter,
        "election-closed",
        "election_closed",
        lambda: voter.put(entry("election-closed", "register", {"voter_id": "late"}, "writer2")),
    )


def test_invalid_election_rules_refuse_the_ledger(cluster: LocalCluster, ledgers: None) -> None:
    now = now_ms()
    bad = genesis(
        "election-bad",
        ADMIN,
        ["cast", "register", "uncast", "withdraw"],
        {"type": "election", "choices": ["yes"], "opens": now, "closes": now - 1},
    )
    assert remote_error(cluster.admin().create_ledger, bad).code == "bad_rules"
    assert remote_error(size, cluster.admin(), "election-bad").code == "no_such_ledger"


# --- charity ------------------------------------------------------------------------------


def donation(donor: str, amount: Any, **overrides: Any) -> dict[str, Any]:
    return {"donor": donor, "fund": "relief", "amount": amount, "source": "bank", "purpose": "", **overrides}


def test_charity_donations_and_disbursements(cluster: LocalCluster, ledgers: None) -> None:
    treasurer = cluster.client("writer1")

    def put(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        return treasurer.put(entry(CHARITY, kind, payload, "writer1"))

    donor = seal(SEAL_KEY, "national id 1234567890", CHARITY)
    put("donation", donation(donor, 10_000))
    stored = decode_record(treasurer.call("head", {"ledger": CHARITY})["record"], LIMITS)
    assert stored.content.payload["donor"] == donor
    assert unseal(SEAL_KEY, donor, CHARITY) == "national id 1234567890"  # only the key holder can open it

    spend = {"fund": "relief", "target": "shelter", "purpose": "blankets"}
    refused(treasurer, CHARITY, "insufficient_funds", lambda: put("disbursement", {**spend, "amount": 10_001}))
    put("disbursement", {**spend, "amount": 6_000})
    refused(treasurer, CHARITY, "insufficient_funds", lambda: put("disbursement", {**spend, "amount": 4_001}))
    put("disbursement", {**spend, "amount": 4_000})

    refused(treasurer, CHARITY, "unknown_fund", lambda: put("donation", donation(donor, 5, fund="other")))
    refused(treasurer, CHARITY, "bad_payload", lambda: put("donation", donation("Ahmed", 5)))
    refused(treasurer, CHARITY, "bad_payload", lambda: put("donation", donation(donor, 0)))
    refused(treasurer, CHARITY, "bad_payload", lambda: put("donation", donation(donor, True)))


def test_a_float_amount_is_refused(cluster: LocalCluster, ledgers: None) -> None:
    """Money is whole minor units: a float never gets into a record, whatever the rules say."""
    treasurer = cluster.client("writer1")
    donor = seal(SEAL_KEY, "donor 2", CHARITY)
    content = raw_content(CHARITY, "donation", donation(donor, 12.5), "writer1")
    before = size(treasurer, CHARITY)
    assert remote_error(treasurer.call, "put", {"content": content, "nonce": 0}).code == "non_canonical"
    assert size(treasurer, CHARITY) == before


# --- resources ----------------------------------------------------------------------------


def test_resources_issue_and_transfer(cluster: LocalCluster, ledgers: None) -> None:
    issuer = cluster.admin()
    holder = cluster.client("writer1")
    issuer.put(entry(RESOURCES, "issue", {"account": "writer1", "amount": 100}, ADMIN))
    refused(
        holder,
        RESOURCES,
        "not_issuer",
        lambda: holder.put(entry(RESOURCES, "issue", {"account": "writer1", "amount": 5}, "writer1")),
    )

    def transfer(amount: int, source: str = "writer1", target: str = "writer2") -> dict[str, Any]:
        return holder.put(entry(RESOURCES, "transfer", {"from": source, "to": target, "amount": amount}, "writer1"))

    refused(holder, RESOURCES, "insufficient_funds", lambda: transfer(101))
    transfer(60)
    refused(holder, RESOURCES, "insufficient_funds", lambda: transfer(41))
    refused(holder, RESOURCES, "not_owner", lambda: transfer(1, source="writer2", target="writer1"))
    refused(holder, RESOURCES, "self_transfer", lambda: transfer(1, target="writer1"))
    transfer(40)
    refused(holder, RESOURCES, "insufficient_funds", lambda: transfer(1))
    # writer2 now holds 100 and can move them.
    spender = cluster.client("writer2")
    spender.put(entry(RESOURCES, "transfer", {"from": "writer2", "to": "writer1", "amount": 100}, "writer2"))
    assert size(holder, RESOURCES) == 5
