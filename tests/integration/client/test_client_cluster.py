"""vledger.client against a running cluster, over CURVE and over the gateway's HTTP.

One cluster for the module: an ingest node, a replica with a gateway, two observers. An
election and a charity ledger whose genesis pins the home's checkpoint key are written over
CURVE. Both transports must then give the same verified voter records; the HTTP client
checks the observers' signed tallies with keys it holds; follow() yields a new verified
checkpoint with a record written after it started; the gateway's event stream carries
checkpoints; a fresh script that imports only vledger.client reads and verifies a vote.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths, witness_keys
from vledger.broker.tallies import TallyBoard
from vledger.client import Client, FollowEvent, TallyCheck, Write
from vledger.client.http import GatewayConnection
from vledger.config.cluster import load_cluster
from vledger.config.settings import Limits
from vledger.node.errors import BadPayloadError, RemoteError
from vledger.node.ledger import LedgerRules
from vledger.node.note import verify_checkpoint
from vledger.node.receipt import keys_from_genesis
from vledger.node.record import Entry
from vledger.node.sealed import new_seal_key, seal
from vledger.tests.integration.cluster import ADMIN, FORGING_OBSERVERS, LocalCluster, now_ms, wait_until
from vledger.tests.unit.verifier.chains import Election, plan_election
from vledger.verifier.tally import Snapshot

ELECTION = "vote"
FUND = "fund"
VOTERS = 30
KEY = new_seal_key()
WAIT = 30.0


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=1,
        observers=2,
        gateways=["replica-1"],
        observing=FORGING_OBSERVERS,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def written(cluster: LocalCluster) -> dict[str, Any]:
    """The election and the fund, written over CURVE; their genesis records' bytes."""
    config = load_cluster(cluster.config_path)
    planned = plan_election(ELECTION, VOTERS, now_ms(), seed=17, author="writer1")
    genesis = {}
    for ledger, rules in (
        (ELECTION, planned.rules),
        (
            FUND,
            LedgerRules(("donation", "disbursement"), 0, {"type": "charity", "currency": "EUR", "funds": ["zakat"]}),
        ),
    ):
        pinned = cluster.pinned(ledger, rules)
        cluster.admin().create_ledger(Entry.prepare(pinned.genesis_content(ledger, ADMIN, "g", now_ms()), 0, Limits()))
        genesis[ledger] = cluster.admin().call("get", {"ledger": ledger, "height": 0})["record"]
    writer = cluster.client("writer1")
    for phase in planned.phases:
        writer.put_many(phase)
    return {"election": planned, "genesis": genesis, "config": config}


def http_client(cluster: LocalCluster, written: dict[str, Any]) -> Client:
    config = written["config"]
    observers = {
        node.name: load_verify_key(signing_key_paths(config.keys_dir, node.name)[1]).raw.hex()
        for node in config.nodes_of("observer")
    }
    return Client.http(
        cluster.gateway_url("replica-1"),
        genesis=written["genesis"],
        witnesses=list(witness_keys(config).values()),
        quorum=1,
        observers=observers,
    )


def curve_client(cluster: LocalCluster) -> Client:
    return Client.curve(cluster.config_path, cluster.directory / "keys" / f"{ADMIN}.key_secret", quorum=1)


# What a node or the gateway answers while the ledger, or a checkpoint of it with the quorum,
# is not there yet: a test run first in the module (``-k``) asks right after `written`.
NOT_YET = ("not_found", "no_such_ledger")


def covered(client: Client, ledger: str, size: int) -> bool:
    try:
        return client.checkpoint(ledger).checkpoint.size >= size
    except RemoteError as e:  # no checkpoint with the quorum yet
        if e.code not in NOT_YET:
            raise
        return False


def agreed_at(client: Client, ledger: str, head: int) -> TallyCheck | None:
    """``client``'s tally of ``ledger`` once every observer agrees at ``head``, else None."""
    try:
        check = client.tally(ledger)
    except RemoteError as e:
        if e.code not in NOT_YET:
            raise
        return None
    return check if check.full and check.verdict.height == head else None


def test_both_transports_verify_the_same_voter_records(cluster: LocalCluster, written: dict[str, Any]) -> None:
    election: Election = written["election"]
    size = cluster.sizes(ELECTION, ["ingest-1"])["ingest-1"]
    eid = election.eids[3]
    with http_client(cluster, written) as web, curve_client(cluster) as curve:
        for client in (web, curve):
            wait_until(lambda c=client: covered(c, ELECTION, size), WAIT, "a cosigned checkpoint of the election")
        over_http = web.voter_records(ELECTION, eid)
        over_curve = curve.voter_records(ELECTION, eid)
        assert over_http.records and over_http.records[0].record.content.kind == "register"
        assert [r.record.link for r in over_http.records] == [r.record.link for r in over_curve.records]
        assert over_http.proven is not None and over_http.proven.witnesses  # proven in a cosigned checkpoint
        assert over_http.voter == over_curve.voter
        # The gateway's short list, each record proven on its own: the same records, few bytes.
        receipts = web.voter_receipts(ELECTION, eid)
        assert [p.record.link for p in receipts] == [r.record.link for r in over_http.records]
        proven = web.record(ELECTION, 1)
        assert proven.record.link == curve.record(ELECTION, 1).record.link
        assert [r.height for r in web.records(ELECTION, 0, 5)] == [0, 1, 2, 3, 4]


def test_signed_tallies_checked_with_the_clients_own_keys(cluster: LocalCluster, written: dict[str, Any]) -> None:
    election: Election = written["election"]
    head = cluster.sizes(ELECTION, ["ingest-1"])["ingest-1"] - 1
    with http_client(cluster, written) as client:
        check = wait_until(lambda: agreed_at(client, ELECTION, head), WAIT, "the observers to agree")
        assert all(o.snapshot is not None and o.problem is None for o in check.observers)
        assert check.agreed is not None and check.agreed.tally["counts"] == dict(election.counts)


def test_a_tally_claiming_records_no_checkpoint_holds_is_ahead_and_the_others_are_judged(
    cluster: LocalCluster, written: dict[str, Any]
) -> None:
    # An outsider with observer-1's key signed its body at height 1,000,000: the HTTP client
    # compared only latest bodies, found two heights and said still_counting for ever.
    head = cluster.sizes(ELECTION, ["ingest-1"])["ingest-1"] - 1
    tallies = TallyBoard(connect(cluster.cluster_redis_url))
    with http_client(cluster, written) as client:
        # At the head: right after `written`, both observers may still agree at the genesis alone.
        wait_until(lambda: agreed_at(client, ELECTION, head), WAIT, "the observers to agree")
        original = tallies.latest(ELECTION, ["observer-1"])["observer-1"]
        assert original is not None
        honest = Snapshot.decode(original.body)
        lie = dataclasses.replace(honest, height=1_000_000, tally={**honest.tally, "counts": {"mallory": 10**6}})
        key = load_signing_key(signing_key_paths(cluster.directory / "keys", "observer-1")[0])
        tallies.publish(ELECTION, "observer-1", lie.height, lie.body(), key.sign(lie.body()))
        try:
            check = client.tally(ELECTION)
            assert check.ahead == ("observer-1",) and check.size is not None and check.size <= head + 1
            # Never an agreement beside an observer ahead: which one is ahead is the served checkpoint's word.
            assert check.verdict.status == "still_counting" and check.verdict.height == head and not check.full
            assert check.agreed is None
        finally:
            tallies.client.set(tallies.latest_key(ELECTION, "observer-1"), original.entry_id)
        assert client.tally(ELECTION).full


@pytest.mark.parametrize("transport", ["http", "curve"])
def test_follow_yields_a_new_checkpoint_with_the_new_record(
    cluster: LocalCluster, written: dict[str, Any], transport: str
) -> None:
    reader = http_client(cluster, written) if transport == "http" else curve_client(cluster)
    with reader, curve_client(cluster) as writer:
        wait_until(lambda: covered(reader, FUND, 1), WAIT, "a checkpoint of the fund")
        events: queue.Queue[FollowEvent | BaseException] = queue.Queue()

        def follow() -> None:
            try:
                for event in reader.follow(FUND):
                    events.put(event)
            except BaseException as e:
                events.put(e)

        threading.Thread(target=follow, daemon=True).start()
        first = events.get(timeout=WAIT)
        assert isinstance(first, FollowEvent) and first.records == ()
        payload = {
            "donor": seal(KEY, f"donor-{transport}"),
            "fund": "zakat",
            "amount": 500,
            "source": "s",
            "purpose": "p",
        }
        receipt = writer.put(FUND, Write("donation", payload))
        deadline = time.monotonic() + WAIT
        while True:
            event = events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert isinstance(event, FollowEvent), event
            # follow also yields a checkpoint of the same size with other cosignatures (a witness's
            # re-cosignature, 10.7): no records, the same tree; never a smaller one.
            assert event.checkpoint.checkpoint.size >= first.checkpoint.checkpoint.size
            if event.checkpoint.checkpoint.size == first.checkpoint.checkpoint.size:
                assert event.records == () and event.checkpoint.checkpoint.root == first.checkpoint.checkpoint.root
                continue
            if receipt.height in [r.height for r in event.records]:
                break
        written_record = next(r for r in event.records if r.height == receipt.height)
        assert written_record.link == receipt.hash and written_record.content.payload["amount"] == 500


SCRIPT = """
import json, sys
from vledger.client import Client

url, ledger, genesis_hex, eid = sys.argv[1:]
with Client.http(url, genesis={ledger: bytes.fromhex(genesis_hex)}) as client:
    check = client.voter_records(ledger, eid)
print(json.dumps({
    "records": [[item.record.height, item.record.content.kind] for item in check.records],
    "checkpoint": check.proven.checkpoint.size,
    "counted": check.voter is not None and check.voter.counted,
    "other_parts": sorted({m.split(".")[1] for m in sys.modules if m.startswith("vledger.tools")}),
}))
"""


def test_a_fresh_script_importing_only_the_client_verifies_a_vote(
    cluster: LocalCluster, written: dict[str, Any], tmp_path: Path
) -> None:
    election: Election = written["election"]
    size = cluster.sizes(ELECTION, ["ingest-1"])["ingest-1"]
    with http_client(cluster, written) as client:
        wait_until(lambda: covered(client, ELECTION, size), WAIT, "a checkpoint of the whole election")
        expected = client.voter_records(ELECTION, election.eids[5])
    script = tmp_path / "check_my_vote.py"
    script.write_text(SCRIPT)
    args = [cluster.gateway_url("replica-1"), ELECTION, written["genesis"][ELECTION].hex(), election.eids[5]]
    done = subprocess.run(
        [sys.executable, "-I", str(script), *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["records"] == [[r.record.height, r.record.content.kind] for r in expected.records]
    assert shown["checkpoint"] >= size and shown["other_parts"] == []
    assert shown["counted"] == (expected.voter is not None and expected.voter.counted)


def test_the_event_stream_carries_checkpoints(cluster: LocalCluster, written: dict[str, Any]) -> None:
    gateway = GatewayConnection(cluster.gateway_url("replica-1"))
    stream = gateway.open_events(WAIT)
    with curve_client(cluster) as writer:
        payload = {"donor": seal(KEY, "donor-events"), "fund": "zakat", "amount": 7, "source": "s", "purpose": "p"}
        receipt = writer.put(FUND, Write("donation", payload))
    deadline = time.monotonic() + WAIT
    for kind, data in stream:
        if kind == "checkpoint" and data["ledger"] == FUND and data["size"] > receipt.height:
            break
        assert time.monotonic() < deadline, "no checkpoint event covering the new record"
    # The event's note verifies with the key the fund's genesis pins, as the client checks it.
    keys = keys_from_genesis(written["genesis"][FUND], FUND)
    assert verify_checkpoint(data["note"].encode(), keys.log_key).checkpoint.size == data["size"]


def test_a_gateway_listing_another_voters_record_is_caught(
    cluster: LocalCluster, written: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    election: Election = written["election"]
    honest = GatewayConnection.voter

    def swapped(self: GatewayConnection, ledger: str, eid: str) -> list[bytes]:
        return honest(self, ledger, election.eids[4])  # another voter's records

    with http_client(cluster, written) as client:
        wait_until(lambda: covered(client, ELECTION, 2), WAIT, "a checkpoint of the election")
        monkeypatch.setattr(GatewayConnection, "voter", swapped)
        with pytest.raises(BadPayloadError, match="does not name"):
            client.voter_receipts(ELECTION, election.eids[3])
