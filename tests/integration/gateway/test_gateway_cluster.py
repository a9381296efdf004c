"""The gateway and the health ports against a running cluster of real processes.

One cluster for the module: an ingest node, a replica with a gateway, two observers and a
verifier. An election and a charity fund are written over CURVE; the gateway must then show
the replica's copy, the observers' signed tallies (signatures checked again here with only
the public keys it serves), fund balances in currency units, the cluster's nodes, and push
new heads on its event stream. Every process's /metrics parses and its counters move.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sqlite3
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from Crypto.Signature import eddsa
from prometheus_client.parser import text_string_to_metric_families

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.broker.signing import load_signing_key, signing_key_paths
from vledger.broker.tallies import TallyBoard
from vledger.client.api import Client
from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import Entry
from vledger.node.sealed import new_seal_key, seal
from vledger.node.storefile import DB_NAME
from vledger.tests.integration.cluster import ADMIN, FORGING_OBSERVERS, LocalCluster, entry, now_ms, wait_until
from vledger.tests.unit.verifier.chains import Election, plan_election
from vledger.verifier.tally import Snapshot

ELECTION = "vote"
FUND = "fund"
VOTERS = 40
KEY = new_seal_key()


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=1,
        observers=2,
        verifiers=1,
        gateways=["replica-1"],
        observing=FORGING_OBSERVERS,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def election(cluster: LocalCluster) -> Election:
    planned = plan_election(ELECTION, VOTERS, now_ms(), seed=13, author="writer1")
    rules = cluster.pinned(ELECTION, planned.rules)
    genesis = rules.genesis_content(ELECTION, ADMIN, "genesis", now_ms())
    cluster.admin().create_ledger(Entry.prepare(genesis, 0, Limits()))
    writer = cluster.client("writer1")
    for phase in planned.phases:
        writer.put_many(phase)
    rules = LedgerRules(("donation", "disbursement"), 0, {"type": "charity", "currency": "EUR", "funds": ["zakat"]})
    cluster.admin().create_ledger(Entry.prepare(rules.genesis_content(FUND, ADMIN, "g", now_ms()), 0, Limits()))
    for i, amount in enumerate((1250, 775)):
        payload = {"donor": seal(KEY, f"donor-{i}"), "fund": "zakat", "amount": amount, "source": "s", "purpose": "p"}
        writer.put(entry(FUND, "donation", payload, "writer1"))
    return planned


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, body[:500]
    return json.loads(body)


def get_json_once_there(url: str) -> Any:
    """``url``'s JSON, or None while the gateway's replica does not hold the ledger yet (404): a
    test run first in the module (``-k``) may ask before the replica caught up with the writes."""
    status, body = get(url)
    if status == 404:
        return None
    assert status == 200, body[:500]
    return json.loads(body)


def metrics(url: str) -> dict[str, float]:
    status, body = get(url + "metrics")
    assert status == 200
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def test_the_gateway_serves_the_replicas_copy(cluster: LocalCluster, election: Election) -> None:
    gateway = cluster.gateway_url("replica-1")
    size = cluster.sizes(ELECTION, ["ingest-1"])["ingest-1"]
    wait_until(
        lambda: (get_json_once_there(f"{gateway}api/ledgers/{ELECTION}") or {}).get("size") == size,
        30,
        "the replica at the head",
    )
    page = get_json(f"{gateway}api/ledgers/{ELECTION}/records?start=0&limit=500")
    assert len(page["records"]) == size and page["records"][0]["kind"] == "genesis"
    # The voter's records are served under the checkpoint with the most cosignatures: until the
    # witnesses cosign past it that may still be the genesis's (seen: size 1 with 3 cosignatures,
    # the ledger at 91), so the route is 404 for a short while after the replica reached the head.
    voters = f"{gateway}api/ledgers/{ELECTION}/voters/{election.eids[3]}"
    wait_until(lambda: get(voters)[0] == 200, 30, "a served checkpoint that covers the voter's registration")
    voter = get_json(voters)
    assert voter["records"][0]["kind"] == "register"


def _outsider() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "vectors"))
    import outsider_verify  # the outsider's file, not a package of vledger

    return outsider_verify


def _path(m: int, leaves: list[bytes], ov: Any) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n]) over leaf hashes: the client's own, from the tiles' hashes."""
    if len(leaves) <= 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*_path(m, leaves[:k], ov), ov.mth(leaves[k:])]
    return [*_path(m - k, leaves[k:], ov), ov.mth(leaves[:k])]


def test_an_outside_client_verifies_inclusion_from_the_checkpoint_and_tiles_over_http(
    cluster: LocalCluster, election: Election
) -> None:
    # Only HTTP and tests/vectors/outsider_verify.py (written from PROTOCOL.md alone): the keys
    # come from the genesis record's bytes (entry bundle 0), the witness keys as the gateway shows
    # them, the checkpoint from its tlog-tiles path, the leaves from hash tiles.
    ov = _outsider()
    gateway = cluster.gateway_url("replica-1")

    def cosigned() -> Any:
        status, note = get(f"{gateway}ledgers/{ELECTION}/checkpoint")
        if status != 200:
            return None
        shown = get_json(f"{gateway}api/ledgers/{ELECTION}/checkpoint?witnesses=1")
        return (note, shown) if shown["note"].encode() == note else None

    note, shown = wait_until(cosigned, 30, "a checkpoint a witness cosigned")
    bundle = get(f"{gateway}ledgers/{ELECTION}/tile/entries/000.p/1")[1]
    genesis = bundle[2 : 2 + int.from_bytes(bundle[:2], "big")]
    log_key = ov.genesis_key(genesis, ELECTION)
    witnesses = [ov.parse_vkey(v) for v in shown["witness_keys"].values()]
    checkpoint = ov.verify_checkpoint(note, log_key, witnesses, 1)
    size = checkpoint["size"]
    assert size > 1 and checkpoint["witnesses"]
    tile = get(f"{gateway}ledgers/{ELECTION}/tile/0/000" + ("" if size >= 256 else f".p/{size}"))[1]
    leaves = [tile[32 * i : 32 * i + 32] for i in range(min(size, 256))]
    assert ov.mth(leaves) == checkpoint["root"]  # the tiles are the checkpoint's tree
    index = size // 2
    entries = get(f"{gateway}ledgers/{ELECTION}/tile/entries/000" + ("" if size >= 256 else f".p/{size}"))[1]
    at, records = 0, []
    while at < len(entries):
        length = int.from_bytes(entries[at : at + 2], "big")
        records.append(entries[at + 2 : at + 2 + length])
        at += 2 + length
    leaf = ov.leaf_hash(records[index])
    ov.verify_inclusion(leaf, index, size, _path(index, leaves, ov), checkpoint["root"])
    with pytest.raises(ov.VerifyError):
        ov.verify_inclusion(
            ov.leaf_hash(records[index] + b"x"), index, size, _path(index, leaves, ov), checkpoint["root"]
        )
    # The gateway's own receipt of that record verifies the same way, offline.
    receipt = get(f"{gateway}api/ledgers/{ELECTION}/receipts/{index}")[1]
    assert ov.verify_receipt(receipt, log_key, witnesses, 1, genesis)["size"] >= 1


def test_signed_tallies_verify_with_the_served_keys(cluster: LocalCluster, election: Election) -> None:
    gateway = cluster.gateway_url("replica-1")
    head = cluster.sizes(ELECTION, ["ingest-1"])["ingest-1"] - 1

    def agreed() -> Any:
        shown = get_json_once_there(f"{gateway}api/ledgers/{ELECTION}/tally")
        # Judged against the checkpoint served as `vledger tally` judges against the head (11.4).
        current = {"checkpoint_size": head + 1, "stale": [], "ahead": [], "behind": False, "head_stale": False}
        verdict = {"status": "agree", "height": head, "differing": [], "recount": [], **current}
        if shown is None or set(shown["verdict"]) != {*verdict, "fresh_ms"}:
            return None
        # A majority of the witnesses vouched for the served checkpoint by now (10.7, 11.4).
        vouched = isinstance(shown["verdict"]["fresh_ms"], int) and shown["verdict"]["fresh_ms"] <= now_ms()
        return shown if vouched and {k: shown["verdict"][k] for k in verdict} == verdict else None

    shown = wait_until(agreed, 30, "the observers to agree")
    for observer in shown["observers"]:
        key = eddsa.new(eddsa.import_public_key(bytes.fromhex(observer["public_key"])), "rfc8032")
        key.verify(bytes.fromhex(observer["body"]), bytes.fromhex(observer["signature"]))
        assert observer["snapshot"]["tally"]["counts"] == dict(election.counts)


def test_fund_balances_are_in_currency_units(cluster: LocalCluster, election: Election) -> None:
    gateway = cluster.gateway_url("replica-1")

    def counted() -> Any:
        funds = get_json_once_there(f"{gateway}api/ledgers/{FUND}/funds")
        return funds if funds and funds["funds"] and funds["funds"]["zakat"]["donations"] == 2 else None

    funds = wait_until(counted, 30, "the fund's tally")
    assert funds["currency"] == "EUR" and funds["decimals"] == 2 and funds["funds"]["zakat"]["balance"] == "20.25"
    status, body = get(f"{gateway}api/ledgers/{ELECTION}/funds")
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"


def test_one_observer_s_key_cannot_set_the_published_funds(cluster: LocalCluster, election: Election) -> None:
    # An outsider with observer-1's key signed a body of the fund at height 1,000,000 with a balance of
    # its choosing: /funds showed it, "the newest verified tally" being the body with the largest height.
    gateway = cluster.gateway_url("replica-1")

    def counted() -> bool:
        shown = get_json_once_there(f"{gateway}api/ledgers/{FUND}/tally")
        if shown is None:
            return False
        heights = {o["snapshot"]["height"] for o in shown["observers"] if o["snapshot"] is not None}
        return heights == {2} and shown["verdict"]["status"] == "agree"  # genesis and two donations

    wait_until(counted, 30, "both observers' tallies of the fund")
    tallies = TallyBoard(connect(cluster.cluster_redis_url))
    original = tallies.latest(FUND, ["observer-1"])["observer-1"]
    assert original is not None
    honest = Snapshot.decode(original.body)
    tally = {**honest.tally, "balance": 99_999_999}
    key = load_signing_key(signing_key_paths(cluster.directory / "keys", "observer-1")[0])
    forged = {}
    for height, head in ((1_000_000, honest.head), (honest.height, bytes(32))):  # no such record; not the record
        body = dataclasses.replace(honest, height=height, head=head, tally=tally, at_ms=now_ms()).body()
        tallies.publish(FUND, "observer-1", height, body, key.sign(body))
        shown = get_json(f"{gateway}api/ledgers/{FUND}/tally")
        forged[height] = next(o for o in shown["observers"] if o["observer"] == "observer-1")
        funds = get_json(f"{gateway}api/ledgers/{FUND}/funds")
        if height == honest.height:  # two bodies at one height that differ: nobody's figures are shown
            assert funds["funds"] is None and funds["verdict"]["status"] == "mismatch", funds
        else:  # the agreement at the common height, never the body past every record
            assert funds["balance"] == "20.25" and funds["height"] == honest.height, funds
    assert forged[1_000_000]["signature_ok"] and forged[1_000_000]["head_ok"] is None
    assert forged[honest.height]["signature_ok"] and forged[honest.height]["head_ok"] is False
    tallies.client.set(tallies.latest_key(FUND, "observer-1"), original.entry_id)
    shown = get_json(f"{gateway}api/ledgers/{FUND}/tally")
    assert all(o["head_ok"] is True for o in shown["observers"])


def test_the_event_stream_pushes_new_heads(cluster: LocalCluster, election: Election) -> None:
    gateway = cluster.gateway_url("replica-1")
    host, port = gateway.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"retry:" not in received:
            received += conn.recv(4096)
        payload = {"donor": seal(KEY, "late"), "fund": "zakat", "amount": 5, "source": "s", "purpose": "p"}
        placed = cluster.client("writer1").put(entry(FUND, "donation", payload, "writer1"))
        deadline = time.monotonic() + 20
        while f'"height":{placed["height"]}'.encode() not in received:
            assert time.monotonic() < deadline, received[-500:]
            received += conn.recv(65536)
        assert b"event: head" in received


def test_the_cluster_view_and_health_of_every_node(cluster: LocalCluster, election: Election) -> None:
    gateway = cluster.gateway_url("replica-1")
    state = get_json(f"{gateway}api/cluster")
    assert {name: node["state"] for name, node in state["nodes"].items()} == dict.fromkeys(cluster.procs, "ready")
    assert state["ledgers"][ELECTION]["held"]["replica-1"] >= 1
    assert all(state["logs"][name] for name in cluster.procs)  # each process's latest log lines
    for name in cluster.procs:
        assert get_json(cluster.health_url(name) + "healthz") == {"ok": True}
        assert get_json(cluster.health_url(name) + "readyz")["ok"] is True
    assert get_json(gateway + "readyz")["ok"] is True


def test_a_page_rebound_to_127_0_0_1_reads_neither_logs_nor_metrics(cluster: LocalCluster, election: Election) -> None:
    """DNS rebinding (an outsider's finding): a web page whose name now points at 127.0.0.1 reads
    "its own" origin, sending its own Host; a loopback server answers it no logs and no metrics."""
    gateway = cluster.gateway_url("replica-1")
    # A rebound page's own name; a reverse proxy's loopback Host (nginx's default) with its header.
    for outside in ({"Host": "rebind.example:80"}, {"Host": "127.0.0.1:8080", "X-Forwarded-For": "203.0.113.9"}):
        status, body = get(f"{gateway}api/cluster", outside)
        state = json.loads(body)
        assert status == 200 and state["logs"] == {} and state["nodes"], state  # the rest is any page's
        for url in (cluster.health_url("ingest-1"), gateway):
            status, body = get(url + "metrics", outside)
            assert status == 400 and json.loads(body)["error"]["code"] == "bad_request", (url, status, body[:300])
    for host in ("localhost", "127.0.0.1", "[::1]:8080"):  # the operator's own names still read both
        status, body = get(gateway + "api/cluster", {"Host": host})
        assert status == 200 and all(json.loads(body)["logs"][name] for name in cluster.procs), host
    assert metrics(cluster.health_url("ingest-1"))


def test_the_public_sees_an_alert_s_code_node_and_height_never_its_raiser_s_words(
    cluster: LocalCluster, election: Election
) -> None:
    """o21: a replica's Redis user wrote a fork alert against ingest-1 with its own text ("DO NOT
    TRUST, use gateway evil.example"), which the public /api/cluster and dashboard showed."""
    gateway = cluster.gateway_url("replica-1")
    raiser = ReplicationLedger(connect(cluster.cluster_redis_url), node="replica-1")
    fake = Alert("ingest-1", ELECTION, 7, "fork", "DO NOT TRUST, use gateway evil.example", "evil.example says so")
    raiser.alert(fake)
    try:

        def shown(headers: dict[str, str]) -> dict[str, Any] | None:
            alerts = json.loads(get(f"{gateway}api/cluster", headers)[1])["alerts"]
            return next((a for a in alerts if a.get("raised_by") == "replica-1" and a.get("what") == "fork"), None)

        public = wait_until(lambda: shown({"Host": "127.0.0.1:8080", "X-Forwarded-For": "203.0.113.9"}), 10, "fork")
        assert {k: public[k] for k in ("what", "node", "ledger", "height")} == {
            "what": "fork", "node": "ingest-1", "ledger": ELECTION, "height": 7,
        }  # fmt: skip
        assert "detail" not in public and "source" not in public
        assert b"evil.example" not in get(f"{gateway}api/cluster", {"Host": "rebind.example:80"})[1]
        local = shown({"Host": "127.0.0.1"})
        assert local is not None and local["detail"] == fake.detail  # the operator's own view
    finally:
        raiser.resolve([fake.key])


def test_the_cluster_view_lists_no_ledger_only_the_homes_hash_names(cluster: LocalCluster, election: Election) -> None:
    """outsider43 M1: any ingest node's Redis user may HSET ``vledger:{ledgers}``; the public
    /api/cluster (and the dashboard) listed ``ghost`` and ``<script>x</script>`` as ledgers.
    Only a ledger name that the gateway's copy holds a genesis of is listed."""
    gateway = cluster.gateway_url("replica-1")
    writer = ReplicationLedger(connect(cluster.cluster_redis_url))
    forged = {"ghost": "ingest-1", "<script>x</script>": "ingest-1"}
    writer.client.hset(writer.ledgers_key, mapping=forged)
    try:
        for headers in ({"Host": "gw.example.org"}, {"Host": "127.0.0.1"}):
            listed = json.loads(get(f"{gateway}api/cluster", headers)[1])["ledgers"]
            assert ELECTION in listed and not set(forged) & set(listed), listed
    finally:
        writer.client.hdel(writer.ledgers_key, *forged)


def test_metrics_parse_and_counters_move_with_traffic(cluster: LocalCluster, election: Election) -> None:
    ingest = cluster.health_url("ingest-1")
    before = metrics(ingest)
    puts = before.get("vledger_requests_total{code=ok,command=put}", 0)
    payload = {"donor": seal(KEY, "metered"), "fund": "zakat", "amount": 1, "source": "s", "purpose": "p"}
    cluster.client("writer1").put(entry(FUND, "donation", payload, "writer1"))
    # Counted once the answer went out (the loop's Service.sent), a moment after the client has it.
    after = wait_until(
        lambda: (m := metrics(ingest)).get("vledger_requests_total{code=ok,command=put}", 0) > puts and m,
        10.0,
        "the put counted",
    )
    assert after["vledger_requests_total{code=ok,command=put}"] == puts + 1
    assert after["vledger_put_seconds_count{}"] >= 1
    assert after[f"vledger_store_height{{ledger={FUND}}}"] >= 4
    replica = metrics(cluster.health_url("replica-1"))
    assert f"vledger_replica_lag_records{{ledger={ELECTION}}}" in replica
    verifier = metrics(cluster.health_url("verifier-1"))
    assert "vledger_alerts_open{}" in verifier and "vledger_checked_records_total{}" in verifier
    gateway = cluster.gateway_url("replica-1")
    served = metrics(gateway)
    get(f"{gateway}api/ledgers/{ELECTION}")
    again = metrics(gateway)
    key = "vledger_gateway_requests_total{route=/api/ledgers/{ledger},status=200}"
    assert again[key] == served.get(key, 0) + 1


def test_a_tree_row_changed_in_the_replica_s_file_is_never_served_and_served_again_once_put_back(
    cluster: LocalCluster, election: Election
) -> None:
    """gw31: one byte of a tree row (the hash of records 16..31) changed with SQLite, the
    records left as they are: the gateway served the inclusion and consistency proofs made of
    it, and the receipts, which every client then rejected. Now refused store_damaged; put back
    (the same file), served again once the refusal's 10 s are over and the proof checks again."""
    ledger, records = "rows", 40
    rules = cluster.pinned(ledger, LedgerRules(("note",), 0, {}))
    cluster.admin().create_ledger(Entry.prepare(rules.genesis_content(ledger, ADMIN, "g", now_ms()), 0, Limits()))
    cluster.client("writer1").put_many([entry(ledger, "note", {"n": i}, "writer1") for i in range(records)])
    gateway = cluster.gateway_url("replica-1")
    api = f"{gateway}api/ledgers/{ledger}"
    wait_until(
        lambda: (get_json_once_there(f"{api}/checkpoint") or {}).get("size") == records + 1,
        60,
        "a served checkpoint covering every record",
    )
    routes = (
        f"{api}/proof/inclusion?index=3",
        f"{api}/proof/consistency?old=16",
        f"{api}/receipts/3",
    )
    genuine = [get(url) for url in routes]
    assert all(status == 200 for status, _ in genuine), genuine
    path = cluster.store_dir("replica-1") / DB_NAME
    row = "FROM tree WHERE ledger = ? AND level = 4 AND idx = 1"
    with sqlite3.connect(path) as db:
        (kept,) = db.execute(f"SELECT hash {row}", (ledger,)).fetchone()
        db.execute(f"UPDATE tree SET hash = ? {row.removeprefix('FROM tree')}", (bytes(32), ledger))
    db.close()
    for url in (*routes, f"{gateway}ledgers/{ledger}/checkpoint"):
        status, body = get(url)
        assert status == 503 and json.loads(body)["error"]["code"] == "store_damaged", (url, body[:300])
    assert f"ledger {ledger!r}" in json.loads(get(f"{gateway}readyz")[1])["checks"]["store"]
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE tree SET hash = ? {row.removeprefix('FROM tree')}", (bytes(kept), ledger))
    db.close()
    wait_until(lambda: get(routes[0]) == genuine[0], 30, "the proof served again once its row is put back")
    again = [get(url) for url in routes]
    assert again[:2] == genuine[:2] and again[2][0] == 200  # a receipt's note may have been cosigned anew


def test_a_record_changed_in_the_replica_s_file_is_never_served(cluster: LocalCluster, election: Election) -> None:
    """Last in the module: it damages the replica's copy (of a ledger of its own). Outsider o10
    M1: one byte of a record changed with SQLite; the gateway served the forged entry bundle as
    immutable, and the record, its receipt and proof, while its node had raised bad_checksum."""
    ledger, records = "tampered", 12
    rules = cluster.pinned(ledger, LedgerRules(("note",), 0, {}))
    cluster.admin().create_ledger(Entry.prepare(rules.genesis_content(ledger, ADMIN, "g", now_ms()), 0, Limits()))
    cluster.client("writer1").put_many(
        [entry(ledger, "note", {"amount": 40_000 + i}, "writer1") for i in range(records)]
    )
    gateway = cluster.gateway_url("replica-1")
    bundle = f"{gateway}ledgers/{ledger}/tile/entries/000.p/{records + 1}"

    def proven() -> bool:
        status, headers = head(bundle)
        return status == 200 and headers.get("Cache-Control") == "public, max-age=31536000, immutable"

    wait_until(proven, 60, "a served checkpoint covering every record, its bundle immutable")
    assert get(f"{gateway}api/ledgers/{ledger}/records/3")[0] == 200
    with sqlite3.connect(cluster.store_dir("replica-1") / DB_NAME) as db:
        (data,) = db.execute("SELECT data FROM records WHERE ledger = ? AND height = 3", (ledger,)).fetchone()
        forged = bytes(data).replace(struct.pack(">BH", 0xCD, 40_002), struct.pack(">BH", 0xCD, 7_232))
        assert forged != data
        db.execute("UPDATE records SET data = ? WHERE ledger = ? AND height = 3", (forged, ledger))
    db.close()
    api = f"{gateway}api/ledgers/{ledger}"
    for url in (bundle, f"{api}/records/3", f"{api}/receipts/3", f"{api}/proof/inclusion?index=3", api):
        status, body = get(url)
        assert status == 503 and json.loads(body)["error"]["code"] == "store_damaged", (url, body[:300])
    assert head(f"{gateway}ledgers/{ledger}/checkpoint")[0] == 503


def head(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as answer:
            return answer.status, dict(answer.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_the_admin_ledger_s_cosigned_head_receipts_and_tiles_are_public_and_proven_by_the_anchors_admin_key(
    cluster: LocalCluster, election: Election, tmp_path: Path
) -> None:
    """outsider32 P2: /ledgers/admin/checkpoint and the admin receipts were 404 ("pins no
    checkpoint key") and its tiles served unproven, so an outside recount judging grants (16.2)
    took the gateway's admin records on trust. The admin genesis pins no key by rule (16.1): its
    home's key signs its checkpoints, as the nodes prove them (16.4), and the anchors carry that
    key on their admin line (15.5). Here from HTTP, the anchors and outsider_verify.py alone."""
    ov = _outsider()
    gateway = cluster.gateway_url("replica-1")
    text = cluster.cli(
        "anchors", "--config", str(cluster.config_path), "--store", str(cluster.store_dir("ingest-1"))
    ).stdout
    lines = [line.split(" ") for line in text.splitlines()]
    admin_vkey = next(f[1] for f in lines if f[0] == "admin")
    admin_key = ov.parse_vkey(admin_vkey)
    witnesses = [ov.parse_vkey(f[1]) for f in lines if f[0] == "witness"]
    majority = len(witnesses) // 2 + 1
    assert any(f[:2] == ["ledger", "admin"] for f in lines), text  # its genesis is anchored too

    def cosigned() -> Any:
        status, note = get(f"{gateway}ledgers/admin/checkpoint")
        if status != 200:
            return None
        shown = get_json(f"{gateway}api/ledgers/admin/checkpoint")
        return (note, shown) if shown["note"].encode() == note and len(shown["cosigned_by"]) >= majority else None

    note, shown = wait_until(cosigned, 30, "the admin ledger's checkpoint cosigned by a majority of the witnesses")
    assert shown["log_key"] == admin_vkey
    checkpoint = ov.verify_checkpoint(note, admin_key, witnesses, majority)
    size = checkpoint["size"]
    assert size > 1
    for height in range(size):  # every admin record (its grants among them) proven offline
        status, receipt = get(f"{gateway}api/ledgers/admin/receipts/{height}")
        assert status == 200, receipt[:300]
        assert ov.verify_receipt(receipt, admin_key, witnesses, majority)["size"] >= size
    # Its tiles are the signed tree, served as proven (immutable), no longer unproven (no-cache).
    with urllib.request.urlopen(f"{gateway}ledgers/admin/tile/0/000.p/{size}", timeout=10) as answer:
        assert answer.headers["Cache-Control"] != "no-cache"
        tile = answer.read()
    assert ov.mth([tile[32 * i : 32 * i + 32] for i in range(size)]) == checkpoint["root"]

    # The verifying client takes the anchors' admin key for the ledger whose genesis pins none.
    anchors = tmp_path / "anchors.txt"
    anchors.write_text(text)
    with Client.http(gateway, anchors=anchors, quorum=majority) as client:
        verified = client.checkpoint("admin")
        assert verified.checkpoint.size >= size
        assert client.record("admin", size - 1).record.ledger == "admin"
    # And `vledger receipt verify` with the anchors, the genesis given as its receipt (14.2).
    for height in (0, size - 1):
        (tmp_path / f"admin-{height}.json").write_bytes(get(f"{gateway}api/ledgers/admin/receipts/{height}")[1])
    done = cluster.cli(
        "receipt",
        "verify",
        str(tmp_path / f"admin-{size - 1}.json"),
        "--genesis",
        str(tmp_path / "admin-0.json"),
        "--anchors",
        str(anchors),
        "--json",
    )
    assert json.loads(done.stdout)["ok"] is True and json.loads(done.stdout)["ledger"] == "admin"
