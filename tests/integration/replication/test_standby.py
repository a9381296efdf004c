"""A standby home on real processes (PROTOCOL 10.9): the home is killed under load, its standby
is promoted once it holds every record a witness cosigned, writes resume there under epoch 2,
and the old home, started again, is fenced: its writes are answered not_home naming the new
home and the witnesses take none of its checkpoints. Nothing acknowledged with w=1 is lost.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import threading
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.client import Client
from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths
from vledger.client.session import Session, node_address, now_ms
from vledger.client.write import Write
from vledger.config.cluster import load_cluster
from vledger.node.checkpoint_log import COSIGNED
from vledger.node.epoch import EPOCH_KIND, STANDBY_KEY_FIELD, epoch_claim
from vledger.node.errors import RemoteError
from vledger.node.note import parse_checkpoint, parse_note
from vledger.node.record import decode_record
from vledger.node.storefile import DB_NAME
from vledger.node.witness import PINNED_KEY_FIELD, HomeSigner, home_key
from vledger.tests.integration.cluster import (
    ADMIN,
    LIMITS,
    LocalCluster,
    entry,
    genesis,
    put_args,
    remote_error,
    wait_until,
)

LEDGER = "votes"
CLUSTER = "test"
WAIT = 60.0


def _vkey(cluster: LocalCluster, node: str) -> str:
    public = load_verify_key(signing_key_paths(cluster.directory / "keys", node)[1]).raw
    return home_key(CLUSTER, LEDGER, public).encode()


def _size(cluster: LocalCluster, node: str) -> int:
    return int(cluster.admin(node).call("size", {"ledger": LEDGER})["size"])


def standby_cluster(start_cluster: Any) -> LocalCluster:
    """Two ingest nodes, two replicas, a verifier and a gateway on replica-1, and LEDGER homed on
    ingest-1 with ingest-2 its standby, its genesis pinning both nodes' checkpoint keys."""
    cluster: LocalCluster = start_cluster(
        nodes=2,
        replicas=2,
        standbys={LEDGER: "ingest-2"},
        replication={"write_timeout_ms": 3000},
        verifiers=1,
        verifier={"lag_alert_ms": 1000, "heads_interval_ms": 200},
        gateways=["replica-1"],
    )
    rules = {PINNED_KEY_FIELD: _vkey(cluster, "ingest-1"), STANDBY_KEY_FIELD: _vkey(cluster, "ingest-2")}
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, [EPOCH_KIND, "vote"], rules))
    return cluster


def test_the_standby_takes_over_under_load_and_the_old_home_is_fenced(start_cluster: Any, tmp_path: Path) -> None:
    cluster = standby_cluster(start_cluster)
    # Where an operator looks (hello, so vledger status; /readyz), the standby shows what it
    # follows and how often its follow restarted after a bug (PROTOCOL 6, 15.3); the home shows none.
    standby = {"ledgers": [LEDGER], "follow_restarts": 0}
    assert cluster.admin("ingest-2").call("hello")["standby"] == standby
    assert "standby" not in cluster.admin("ingest-1").call("hello")
    with urllib.request.urlopen(cluster.health_url("ingest-2") + "readyz", timeout=10) as answer:
        assert json.loads(answer.read())["standby"] == standby

    acknowledged: dict[str, bytes] = {}  # request id -> hash of each put answered with w=1
    stop = threading.Event()

    def write() -> None:
        writer = cluster.client("writer1", "ingest-1", timeout=3.0)
        n = 0
        while not stop.is_set():
            e = entry(LEDGER, "vote", {"n": n}, "writer1")
            n += 1
            try:
                receipt = writer.call("put", {**put_args(e), "w": 1})
            except Exception:
                continue  # the home is gone: nothing acknowledged
            acknowledged[e.content.request_id] = receipt["hash"]

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(acknowledged) >= 30, WAIT, "30 writes acknowledged with w=1")
        cluster.kill_node("ingest-1")  # the home's host is gone, mid-load
    finally:
        stop.set()
        writer.join()
    assert acknowledged

    refusals: list[str] = []

    def promoted() -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = cluster.admin("ingest-2").call("ledger.promote", {"ledger": LEDGER})
        except RemoteError as e:
            assert e.code == "promotion_refused", e
            refusals.append(str(e))
            return None
        return result

    try:
        receipt = wait_until(promoted, WAIT, "the standby promoted")
    except AssertionError as e:  # say why it was refused: the standby's size, the cosigned one
        sizes = {name: _size(cluster, name) for name in ("ingest-2", *cluster.replica_names)}
        raise AssertionError(f"{e}; last refusal: {refusals[-1:]}; sizes {sizes}") from None
    handover = decode_record(
        cluster.admin("ingest-2").call("get", {"ledger": LEDGER, "height": receipt["height"]})["record"], LIMITS
    )
    assert (handover.content.kind, handover.origin, handover.content.payload["epoch"]) == (EPOCH_KIND, "ingest-2", 2)
    # Every record acknowledged with w=1 is on the new home, below its handover record.
    held = {
        decode_record(data, LIMITS).content.request_id: decode_record(data, LIMITS).link
        for data in cluster.admin("ingest-2").call("range", {"ledger": LEDGER, "start": 0, "limit": 500})["records"]
    }
    assert {rid: held.get(rid) for rid in acknowledged} == acknowledged

    # Writes resume on the new home, sent to the old one's address by the client that follows not_home
    # (or, with the old home down, straight to the standby), acknowledged by witnesses of epoch 2.
    writer2 = cluster.client("writer1", "ingest-2")
    after = writer2.call("put", {**put_args(entry(LEDGER, "vote", {"after": 1}, "writer1")), "w": 2})
    assert after["height"] == receipt["height"] + 1
    note = cluster.admin("ingest-2").call("range", {"ledger": LEDGER, "start": after["height"], "limit": 1})[
        "checkpoint"
    ]
    assert epoch_claim(parse_checkpoint(parse_note(note).text)) == (2, "ingest-2")
    wait_until(
        lambda: all(_size(cluster, r) == after["height"] + 1 for r in cluster.replica_names),
        WAIT,
        "the replicas hold epoch 2",
    )
    redis = ReplicationLedger(connect(cluster.cluster_redis_url))
    assert redis.ledgers()[LEDGER] == "ingest-2" and redis.epochs()[LEDGER] == (2, "ingest-2")
    assert LEDGER in cluster.admin("ingest-2").call("hello")["ledgers"]
    # A receipt of epoch 2, cosigned by both replicas, verifies offline from the genesis alone.
    key = cluster.directory / "keys" / f"{ADMIN}.key_secret"
    common = ("--config", str(cluster.config_path), "--key", str(key), "--node", "ingest-2")
    receipt_file, genesis_file = tmp_path / "after.receipt", tmp_path / "genesis.receipt"
    cluster.cli(
        "receipt",
        "get",
        LEDGER,
        str(after["height"]),
        *common,
        "--quorum",
        "2",
        "--wait",
        "20",
        "-o",
        str(receipt_file),
    )
    cluster.cli("receipt", "get", LEDGER, "0", *common, "-o", str(genesis_file))
    # The new home kept its witnessed checkpoint of epoch 2 where no witness's user writes (10.9).
    proof = wait_until(lambda: redis.client.get(redis.epoch_proof_key(LEDGER)), WAIT, "the epoch's proof kept")
    assert epoch_claim(parse_checkpoint(parse_note(proof).text)) == (2, "ingest-2")
    assert len(parse_note(proof).signatures) >= 2  # the new home's and a witness's

    # The old home returns: fenced. Its writes are answered not_home naming the new home.
    cluster.start_node("ingest-1")
    error = remote_error(
        cluster.client("writer1", "ingest-1", follow=False).call,
        "put",
        put_args(entry(LEDGER, "vote", {"stale": 1}, "writer1")),
    )
    assert error.code == "not_home" and error.details["home"]["node"] == "ingest-2"
    assert LEDGER not in cluster.admin("ingest-1").call("hello")["ledgers"]
    # So are its reads: its copy is not the ledger's (it lacks epoch 2; it may hold records it
    # placed past the handover). A client that follows not_home reads the new home's ledger.
    stale = cluster.client("writer1", "ingest-1", follow=False)
    for cmd, args in (("size", {"ledger": LEDGER}), ("get", {"ledger": LEDGER, "height": after["height"]})):
        error = remote_error(stale.call, cmd, args)
        assert error.code == "not_home" and error.details["home"]["node"] == "ingest-2", (cmd, error)
    assert cluster.client("writer1", "ingest-1").call("size", {"ledger": LEDGER})["size"] == after["height"] + 1
    shown = cluster.cli("size", LEDGER, "--config", str(cluster.config_path), "--key", str(key), "--json")
    assert json.loads(shown.stdout)["size"] == after["height"] + 1  # asked of the configured home, ingest-1
    # Epoch 2's checkpoints are served: by a replica's checkpoint command (a receipt of an epoch-1
    # record under it, from replica-1) and by its gateway (the vote page's checkpoint and receipts).
    from_replica = tmp_path / "replica.receipt"
    cluster.cli(
        "receipt", "get", LEDGER, "5", "--config", str(cluster.config_path), "--key", str(key),
        "--node", "replica-1", "--quorum", "1", "--wait", "20", "-o", str(from_replica),
    )  # fmt: skip
    served = wait_until(
        lambda: _gateway_json(cluster, f"api/ledgers/{LEDGER}/checkpoint"), WAIT, "the gateway's checkpoint"
    )
    assert served["size"] == after["height"] + 1 and "vledger-epoch 2 ingest-2" in served["note"]
    assert served["log_key"] == _vkey(cluster, "ingest-2")
    assert _gateway_json(cluster, f"api/ledgers/{LEDGER}/receipts/{after['height']}") is not None
    # And it names the proven epoch's home, not the cluster file's (outsider o6 H8).
    info = _gateway_json(cluster, f"api/ledgers/{LEDGER}")
    assert (info["home"], info["epoch"]) == ("ingest-2", 2), info
    listed = _gateway_json(cluster, "api/cluster")["ledgers"][LEDGER]
    assert (listed["home"], listed["epoch"]) == ("ingest-2", 2), listed
    # The verifier takes the new home as the home and the old one as no copy: no alert of it stays open.
    verifier = cluster.admin("verifier-1")

    def copies() -> set[str]:
        return {c for c in verifier.call("status")["copies"] if c.endswith(f"|{LEDGER}")}

    expected = {f"{n}|{LEDGER}" for n in ("ingest-2", *cluster.replica_names)}
    wait_until(lambda: copies() == expected, WAIT, "the verifier's copies after the handover")
    assert not [k for k in redis.open_alerts() if k.startswith(f"ingest-1|{LEDGER}|")], redis.open_alerts()
    # vledger repl status takes the handover as proven by the witnesses' cosigned note of epoch 2.
    shown = cluster.cli("repl", "status", "--config", str(cluster.config_path), "--json", check=False)
    (status,) = [s for s in json.loads(shown.stdout)["ledgers"] if s["ledger"] == LEDGER]
    assert (status["home"], status["epoch"], status["claimed"]) == ("ingest-2", 2, None), status
    assert status["cosigned"], status  # epoch 2's cosignatures count: checked with ingest-2's key file
    # The witnesses keep epoch 2: what they hold is the new home's chain.
    for name in cluster.replica_names:
        assert _size(cluster, name) == after["height"] + 1
    # The stream stays the new home's: the old one does not "repair" it from its stale store.
    streamed = redis.read(LEDGER, receipt["height"], 2)
    assert [(r.height, r.origin) for r in streamed] == [(receipt["height"], "ingest-2"), (after["height"], "ingest-2")]
    assert not [a for a in redis.alerts(1000) if a.get("what") == "record_conflict" and a.get("node") == "redis"]
    for name in ("ingest-2", *cluster.replica_names):
        assert cluster.stop_node(name) == 0
        assert cluster.verify_store(name).returncode == 0
    # The witnesses' keys too: epoch 2's checkpoint, by the standby's key, counts only cosigned (14.3 step 7).
    witnesses = json.loads(cluster.cli("receipt", "keys", "--config", str(cluster.config_path), "--json").stdout)
    trusted = [arg for vkey in witnesses["witnesses"].values() for arg in ("--witness", vkey)]
    for kept in (receipt_file, from_replica):
        verified = cluster.cli("receipt", "verify", str(kept), "--genesis", str(genesis_file), *trusted)
        assert "valid: record" in verified.stdout, verified.stdout + verified.stderr
    alone = cluster.cli("receipt", "verify", str(from_replica), "--genesis", str(genesis_file), check=False)
    assert alone.returncode == 1 and "no_quorum" in alone.stdout + alone.stderr


def _gateway_json(cluster: LocalCluster, path: str) -> Any:
    """The gateway's JSON answer at ``path``, None while it answers 404 (nothing to serve yet)."""
    try:
        with urllib.request.urlopen(cluster.gateway_url("replica-1") + path, timeout=10) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def test_the_standby_catches_up_from_the_replicas_what_the_stream_never_got(start_cluster: Any) -> None:
    """A home killed after its last records went out on the feed (the replicas cosigned them) but
    before its outbox appended them to the Redis stream, while its standby was away: the standby
    finds them on the replicas, and its promotion loses none of them."""
    cluster: LocalCluster = start_cluster(
        nodes=2, replicas=2, standbys={LEDGER: "ingest-2"}, replication={"write_timeout_ms": 3000}
    )
    rules = {PINNED_KEY_FIELD: _vkey(cluster, "ingest-1"), STANDBY_KEY_FIELD: _vkey(cluster, "ingest-2")}
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, [EPOCH_KIND, "vote"], rules))
    writer = cluster.client("writer1", "ingest-1")
    acknowledged: dict[str, bytes] = {}

    def put(n: int) -> int:
        e = entry(LEDGER, "vote", {"n": n}, "writer1")
        receipt = writer.call("put", {**put_args(e), "w": 2})
        acknowledged[e.content.request_id] = receipt["hash"]
        return int(receipt["height"])

    for n in range(5):
        put(n)
    wait_until(lambda: _size(cluster, "ingest-2") == 6, WAIT, "the standby holds the first records")
    cluster.kill_node("ingest-2")
    last = max(put(n) for n in range(5, 12))
    cluster.kill_node("ingest-1")
    redis = ReplicationLedger(connect(cluster.cluster_redis_url))
    stream = redis.stream_key(LEDGER)
    deleted = redis.client.xdel(stream, *(f"{h}-1" for h in range(8, last + 1)))
    assert deleted == last + 1 - 8  # the stream ends at height 7, the replicas hold up to `last`
    assert all(_size(cluster, r) == last + 1 for r in cluster.replica_names)

    cluster.start_node("ingest-2")

    def promoted() -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = cluster.admin("ingest-2").call("ledger.promote", {"ledger": LEDGER})
        except RemoteError as e:
            assert e.code == "promotion_refused", e
            return None
        return result

    receipt = wait_until(promoted, WAIT, "the standby promoted")
    assert receipt["height"] == last + 1
    held = {
        decode_record(data, LIMITS).content.request_id: decode_record(data, LIMITS).link
        for data in cluster.admin("ingest-2").call("range", {"ledger": LEDGER, "start": 0, "limit": 500})["records"]
    }
    assert {rid: held.get(rid) for rid in acknowledged} == acknowledged


def test_a_write_sent_while_the_home_is_frozen_waits_for_the_standby_s_promotion(
    start_cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The outsider's drill: the home frozen (SIGSTOP) under a client's writes with w=1, its
    standby not promoted yet answers them not_home naming that frozen home. The client went
    straight back there and failed after a second timeout, though the handover kept a write
    the home had placed. It now waits and asks the standby again until its promotion: the
    placed write is answered duplicate with its first receipt, a new one is placed in epoch 2."""
    cluster: LocalCluster = start_cluster(
        nodes=2, replicas=1, standbys={LEDGER: "ingest-2"}, replication={"write_timeout_ms": 3000}
    )
    rules = {PINNED_KEY_FIELD: _vkey(cluster, "ingest-1"), STANDBY_KEY_FIELD: _vkey(cluster, "ingest-2")}
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, [EPOCH_KIND, "vote"], rules))
    config = load_cluster(cluster.config_path)

    def session() -> Session:  # as open_session makes it (default node ingest-1), with a short timeout
        home = config.node(config.default_home)
        return Session(
            config, home, Client(node_address(config, home.name), cluster.keys["writer1"], timeout=2.0, follow=False)
        )

    ts = now_ms()
    placed = session().put(LEDGER, Write("vote", {"n": 64}), request_id="drill-64", ts=ts, replicas=1)
    wait_until(lambda: _size(cluster, "ingest-2") > placed["height"], WAIT, "the standby holds the write")
    caplog.set_level(logging.INFO, logger="vledger.client.session")
    answers: dict[str, Any] = {}

    def write(request_id: str, n: int) -> None:
        try:
            answers[request_id] = session().put(
                LEDGER, Write("vote", {"n": n}), request_id=request_id, ts=ts + n - 64, replicas=1
            )
        except Exception as e:
            answers[request_id] = e

    # drill-64 again, the very write: its answer was lost with the home (it was placed); drill-65: new.
    writers = [threading.Thread(target=write, args=(rid, n)) for rid, n in (("drill-64", 64), ("drill-65", 65))]
    cluster.signal_node("ingest-1", signal.SIGSTOP)
    try:
        for writer in writers:
            writer.start()
        wait_until(
            lambda: answers or caplog.text.count("waiting for a promotion") >= 2,
            WAIT,
            "the writes refused by the standby",
        )
        assert not answers, answers  # neither failed (nor was served) before the promotion

        def promoted() -> dict[str, Any] | None:
            try:
                result: dict[str, Any] = cluster.admin("ingest-2").call("ledger.promote", {"ledger": LEDGER})
            except RemoteError as e:
                assert e.code == "promotion_refused", e
                return None
            return result

        handover = wait_until(promoted, WAIT, "the standby promoted")
        for writer in writers:
            writer.join(timeout=WAIT)
    finally:
        cluster.signal_node("ingest-1", signal.SIGCONT)
    again, new = answers["drill-64"], answers["drill-65"]
    assert isinstance(again, dict) and isinstance(new, dict), answers
    assert (again["height"], again["hash"], again["duplicate"]) == (placed["height"], placed["hash"], True)
    assert new["height"] > handover["height"] and new["duplicate"] is False
    assert again["replicas"] == new["replicas"] == ["replica-1"]
    record = decode_record(
        cluster.admin("ingest-2").call("get", {"ledger": LEDGER, "height": new["height"]})["record"], LIMITS
    )
    assert (record.content.request_id, record.origin) == ("drill-65", "ingest-2")


def test_the_standby_s_host_alone_moves_no_ledger_the_live_home_keeps_it(start_cluster: Any) -> None:
    """Outsider F6: an attacker on the standby's host, with its key file (``ingest-2.sign``, the
    genesis's ``standby_key``) and its Redis user, signs a checkpoint of the served tree with the
    line ``vledger-epoch 2 ingest-2``, makes it the ledger's latest (and a witness's note, under
    a witness's name) and names ingest-2 in ``vledger:{ledgers}:epochs``. No admin promoted it;
    there is no handover record, so no witness cosigned that epoch. The live home went not_home
    and the honest standby placed the writes as epoch 2, which no replica took. Now neither
    node takes the claim (each logs it, once): the home keeps serving, w=1 writes included,
    and the standby answers not_home naming the home and places nothing of its own."""
    cluster: LocalCluster = start_cluster(nodes=2, replicas=1, standbys={LEDGER: "ingest-2"})
    rules = {PINNED_KEY_FIELD: _vkey(cluster, "ingest-1"), STANDBY_KEY_FIELD: _vkey(cluster, "ingest-2")}
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, [EPOCH_KIND, "vote"], rules))
    # A name no home announced is no ledger, on a standby or not (it was promotion_refused, as
    # if the standby were not ready yet); a ledger that exists is only refused.
    for node in ("ingest-2", "ingest-1"):
        missing = remote_error(cluster.admin(node).call, "ledger.promote", {"ledger": "nosuch"})
        assert missing.code == "no_such_ledger" and "no home announced it" in missing.message, missing
    refused = remote_error(cluster.admin("ingest-1").call, "ledger.promote", {"ledger": LEDGER})
    assert refused.code == "promotion_refused", refused
    home = cluster.client("writer1", "ingest-1", follow=False)
    before = home.call("put", {**put_args(entry(LEDGER, "vote", {"n": 1}, "writer1")), "w": 1})
    served = home.call("range", {"ledger": LEDGER, "start": before["height"], "limit": 1})["checkpoint"]
    checkpoint = parse_checkpoint(parse_note(served).text)

    seed = load_signing_key(signing_key_paths(cluster.directory / "keys", "ingest-2")[0]).seed
    claim = HomeSigner(CLUSTER, seed).sign(LEDGER, checkpoint.size, checkpoint.root, ("vledger-epoch 2 ingest-2",))
    redis = ReplicationLedger(connect(cluster.cluster_redis_url))
    redis.set_checkpoints({LEDGER: claim.note})
    redis.publish_cosignature(LEDGER, "replica-1", checkpoint.size, claim.note)  # a witness's name, no cosignature
    redis.client.hset(redis.epochs_key, LEDGER, "2 ingest-2")
    unproven = "Redis names ingest-2 the home of votes (epoch 2), but no checkpoint of that epoch"

    def read(name: str) -> bool:  # the node read the claim (every second): it logged it unproven, or took it
        homes = LEDGER in cluster.admin(name).call("hello")["ledgers"]
        return unproven in cluster.log_text(name) or homes != (name == "ingest-1")

    for name in ("ingest-1", "ingest-2"):
        wait_until(lambda name=name: read(name), WAIT, f"{name} read the claim")

    after = home.call("put", {**put_args(entry(LEDGER, "vote", {"n": 2}, "writer1")), "w": 1})
    assert after["height"] == before["height"] + 1 and after["replicas"] == ["replica-1"]
    assert LEDGER in cluster.admin("ingest-1").call("hello")["ledgers"]
    standby = cluster.client("writer1", "ingest-2", follow=False)
    error = remote_error(standby.call, "put", put_args(entry(LEDGER, "vote", {"n": 3}, "writer1")))
    assert error.code == "not_home" and error.details["home"]["node"] == "ingest-1"
    assert LEDGER not in cluster.admin("ingest-2").call("hello")["ledgers"]
    # The standby follows the home as before: every record it holds is the home's.
    wait_until(lambda: _size(cluster, "ingest-2") == after["height"] + 1, WAIT, "the standby holds the home's write")
    held = cluster.admin("ingest-2").call("range", {"ledger": LEDGER, "start": 1, "limit": 500})["records"]
    assert {decode_record(data, LIMITS).origin for data in held} == {"ingest-1"}
    assert redis.epochs()[LEDGER] == (2, "ingest-2")  # the hash still says so: its word alone changed nothing


def _newest_cosigned(cluster: LocalCluster, node: str) -> bytes:
    """The note of the largest cosigned checkpoint ``node``'s store keeps (read without writing)."""
    path = cluster.store_dir(node) / DB_NAME
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT note FROM checkpoints WHERE ledger = ? AND kind = ? ORDER BY size DESC LIMIT 1", (LEDGER, COSIGNED)
        ).fetchone()
    return bytes(row[0])


def test_a_witness_repaired_after_a_promotion_is_not_taken_for_a_forger(start_cluster: Any) -> None:
    """Outsider 21, F5: after a promotion, `vledger repair --force` of a witness carried over only
    the old epoch's cosignatures, so the witness republished on start its cosignature of the old
    home's checkpoint, and the new home, checking it against its own checkpoints only, raised
    bad_cosignature against an honest replica. The repair now keeps the newest (the new epoch's),
    and the new home takes an old epoch's checkpoint below its handover as an old cosignature."""
    cluster: LocalCluster = start_cluster(
        nodes=2, replicas=2, standbys={LEDGER: "ingest-2"}, replication={"write_timeout_ms": 5000}
    )
    rules = {PINNED_KEY_FIELD: _vkey(cluster, "ingest-1"), STANDBY_KEY_FIELD: _vkey(cluster, "ingest-2")}
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, [EPOCH_KIND, "vote"], rules))
    redis = ReplicationLedger(connect(cluster.cluster_redis_url))

    def put(home: str, n: int) -> int:
        e = entry(LEDGER, "vote", {"n": n}, "writer1")
        return int(cluster.client("writer1", home).call("put", {**put_args(e), "w": 2})["height"])

    for n in range(5):
        put("ingest-1", n)
    old_note = redis.cosignatures(LEDGER)["replica-2"]  # its genuine cosignature of an epoch-1 checkpoint
    assert epoch_claim(parse_checkpoint(parse_note(old_note).text))[0] == 1
    wait_until(lambda: _size(cluster, "ingest-2") == 6, WAIT, "the standby holds every record")

    def promoted() -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = cluster.admin("ingest-2").call("ledger.promote", {"ledger": LEDGER})
        except RemoteError as e:
            assert e.code == "promotion_refused", e
            return None
        return result

    handover = wait_until(promoted, WAIT, "the standby promoted")["height"]
    last = max(put("ingest-2", n) for n in range(5, 8))  # both replicas cosign epoch 2's checkpoints

    assert cluster.stop_node("replica-2") == 0
    done = cluster.cli("repair", "replica-2", "--config", str(cluster.config_path), "--json", "--force", check=False)
    assert done.returncode == 0, done.stderr
    # The rebuilt store keeps the new epoch's cosignature, the one it publishes again on start.
    newest = parse_checkpoint(parse_note(_newest_cosigned(cluster, "replica-2")).text)
    assert newest.size == last + 1 and epoch_claim(newest) == (2, "ingest-2")
    cluster.start_node("replica-2")
    put("ingest-2", 8)  # w=2: replica-2 cosigns again

    # A witness that puts back its genuine cosignature of the old home's checkpoint below the
    # handover (as the repaired store did) is not called a forger by the new home.
    old_size = parse_checkpoint(parse_note(old_note).text).size
    assert old_size <= handover
    redis.client.set(redis.cosig_key(LEDGER, "replica-2"), old_note)
    redis.client.publish(redis.cosigned_channel, f"replica-2 {LEDGER} {old_size}")
    log = cluster.directory / "ingest-2.log"
    said = f"replica-2's cosignature on {LEDGER} at {old_size} is of an earlier epoch"
    wait_until(lambda: said in log.read_text(), WAIT, "the old note read")
    put("ingest-2", 9)
    assert not [key for key in redis.open_alerts() if key.endswith("|bad_cosignature")], redis.open_alerts()


def test_after_a_proven_promotion_repl_status_and_the_demo_take_the_new_home(start_cluster: Any) -> None:
    """Outsider 25 H8: once ``vledger ledger promote`` proved ingest-2 the home of the demo's
    election, ``repl status`` still counted the fenced ingest-1 a holder ("712 on 7 nodes", its
    record at the handover's height its own orphan), and ``vledger demo`` judged the replicas by
    ingest-1's key, whose checkpoints the witnesses no longer take: "FAILED: a ledger is not on
    every replica" though every copy held every ledger."""
    election = "election-2026"
    cluster: LocalCluster = start_cluster(
        nodes=2, replicas=2, standbys={election: "ingest-2"}, replication={"write_timeout_ms": 5000}
    )
    config = str(cluster.config_path)
    demo = ("demo", "--cluster", config, "--voters", "3", "--difficulty", "0")
    assert "All OK." in cluster.cli(*demo, timeout=300).stdout
    key = str(cluster.directory / "keys" / f"{ADMIN}.key_secret")
    cluster.cli("ledger", "promote", election, "ingest-2", "--config", config, "--key", key, "--node", "ingest-2")

    def proven() -> dict[str, Any] | None:
        shown = cluster.cli("repl", "status", "--config", config, "--json", check=False)
        (status,) = [s for s in json.loads(shown.stdout)["ledgers"] if s["ledger"] == election]
        return status if status["home"] == "ingest-2" and status["cosigned"] else None

    wait_until(proven, WAIT, "the handover proven to repl status")
    ran = cluster.cli(*demo, check=False, timeout=300)
    assert ran.returncode == 0 and "All OK." in ran.stdout, ran.stdout + ran.stderr
    (read_back,) = [
        line.split() for line in ran.stdout.splitlines() if line.startswith(f"  {election}  ") and " head " in line
    ]
    assert read_back[1] == "ingest-2"  # read back from the new home, not through the old one's not_home
    status = wait_until(
        lambda: (s := proven()) is not None and len(s["counts"]) == 1 and s,
        WAIT,
        "every copy of the election at its head",
    )
    assert status["counts"] == [{"holders": 3, "records": status["head"] + 1}]  # ingest-2 and the replicas
    (old_home,) = [n for n in status["nodes"] if n["node"] == "ingest-1"]
    assert old_home["fenced"] and old_home["lag"] is None, old_home


def _promote(cluster: LocalCluster) -> dict[str, Any] | None:
    """ledger.promote on ingest-2: its receipt, None while refused as not caught up yet."""
    try:
        result: dict[str, Any] = cluster.admin("ingest-2").call("ledger.promote", {"ledger": LEDGER})
    except RemoteError as e:
        if e.code != "promotion_refused":
            raise
        return None
    return result


def test_an_old_home_restarted_while_redis_holds_no_proof_of_its_replacement_is_fenced(start_cluster: Any) -> None:
    """Review r19 5: the old home's start check gathers every node's newest checkpoint, and the
    witness's carries epoch 2's, cosigned; yet it took the ledger's home from Redis's notes alone.
    Restarted once Redis lost them (its data, or an admin user's DELs), it took w=0 writes as
    home on a fenced fork until a witness cosigned again (300 s) and it looked again."""
    cluster: LocalCluster = start_cluster(nodes=2, replicas=1, standbys={LEDGER: "ingest-2"})
    rules = {PINNED_KEY_FIELD: _vkey(cluster, "ingest-1"), STANDBY_KEY_FIELD: _vkey(cluster, "ingest-2")}
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, [EPOCH_KIND, "vote"], rules))
    before = cluster.admin().call("put", {**put_args(entry(LEDGER, "vote", {"n": 1}, ADMIN)), "w": 1})
    wait_until(lambda: _size(cluster, "ingest-2") > before["height"], WAIT, "the standby holds the write")
    assert cluster.stop_node("ingest-1") == 0
    wait_until(lambda: _promote(cluster), WAIT, "the standby promoted")
    after = cluster.client("writer1", "ingest-2", follow=False).call(
        "put", {**put_args(entry(LEDGER, "vote", {"n": 2}, "writer1")), "w": 1}
    )
    assert after["replicas"] == ["replica-1"]  # replica-1 cosigned a checkpoint of epoch 2
    assert cluster.stop_node("ingest-2") == 0  # no heartbeat of the new home writes its notes again
    client = connect(cluster.cluster_redis_url)
    redis = ReplicationLedger(client)
    client.delete(redis.checkpoint_key(LEDGER), redis.epoch_proof_key(LEDGER), redis.cosig_key(LEDGER, "replica-1"))
    client.hdel(redis.epochs_key, LEDGER)

    cluster.start_node("ingest-1")
    error = remote_error(
        cluster.client("writer1", "ingest-1", follow=False).call,
        "put",
        put_args(entry(LEDGER, "vote", {"fork": 1}, "writer1")),
    )
    assert error.code == "not_home" and error.details["home"]["node"] == "ingest-2", error
    read = remote_error(cluster.client(ADMIN, "ingest-1", follow=False).call, "size", {"ledger": LEDGER})
    assert read.code == "not_home", read  # its copy is not the ledger's (10.9)


def test_a_star_grant_of_the_ledger_s_data_does_not_stop_its_promotion(start_cluster: Any) -> None:
    """Outsider 32 R1/R3: after `grant add votes '*' writer1` the handover record (kind `epoch`,
    author the admin) was refused not_granted, with the admin home down and no grant possible.
    A grant governs a ledger's data, never the admin's own acts on it: the promotion succeeds
    and writes go on in epoch 2, witnessed."""
    cluster: LocalCluster = start_cluster(nodes=2, replicas=1, standbys={LEDGER: "ingest-2"})
    rules = {PINNED_KEY_FIELD: _vkey(cluster, "ingest-1"), STANDBY_KEY_FIELD: _vkey(cluster, "ingest-2")}
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, [EPOCH_KIND, "vote"], rules))
    cluster.admin().call("grant.add", {"ledger": LEDGER, "kind": "*", "account": "writer1"})
    before = cluster.client("writer1", "ingest-1").call(
        "put", {**put_args(entry(LEDGER, "vote", {"n": 1}, "writer1")), "w": 1}
    )
    wait_until(lambda: _size(cluster, "ingest-2") > before["height"], WAIT, "the standby holds the write")
    # Nor may a grant holder write a handover: the node places one only for ledger.promote.
    payload = {"epoch": 2, "home": "ingest-1", "key": _vkey(cluster, "ingest-1")}
    forged = remote_error(
        cluster.client("writer1", "ingest-1").call, "put", put_args(entry(LEDGER, EPOCH_KIND, payload, "writer1"))
    )
    assert forged.code == "forbidden", forged
    assert cluster.stop_node("ingest-1") == 0  # the home of the ledger and of the admin ledger

    handover = wait_until(lambda: _promote(cluster), WAIT, "the standby promoted")
    assert handover["height"] == before["height"] + 1
    after = cluster.client("writer1", "ingest-2", follow=False).call(
        "put", {**put_args(entry(LEDGER, "vote", {"n": 2}, "writer1")), "w": 1}
    )
    assert after["height"] == handover["height"] + 1 and after["replicas"] == ["replica-1"]


def test_a_client_cannot_take_the_handover_s_request_id_so_the_promotion_goes_through(start_cluster: Any) -> None:
    """ho32: the handover is placed as `epoch-<e>` by the admin who asks (10.9 step 4); a put of
    the admin's own under `epoch-2` took that id first, and every promotion to epoch 2 failed
    request_conflict (and was undone in Redis), for good. A put may not take an id the node
    makes (PROTOCOL 6: bad_field, nothing written), so the promotion succeeds. (The undo of a
    handover that fails at placement anyway: tests/unit/ingest/test_epochs.py.)"""
    cluster: LocalCluster = start_cluster(nodes=2, replicas=1, standbys={LEDGER: "ingest-2"})
    rules = {PINNED_KEY_FIELD: _vkey(cluster, "ingest-1"), STANDBY_KEY_FIELD: _vkey(cluster, "ingest-2")}
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, [EPOCH_KIND, "vote"], rules))
    refused = remote_error(
        cluster.admin().call, "put", put_args(entry(LEDGER, "vote", {"n": 0}, ADMIN, request_id="epoch-2"))
    )
    assert refused.code == "bad_field" and "epoch-2" in refused.reason, refused
    last = cluster.admin().call("put", {**put_args(entry(LEDGER, "vote", {"n": 1}, ADMIN)), "w": 1})["height"]
    wait_until(lambda: _size(cluster, "ingest-2") > last, WAIT, "the standby holds the home's records")
    assert cluster.stop_node("ingest-1") == 0

    handover = wait_until(lambda: _promote(cluster), WAIT, "the standby promoted")
    assert handover["height"] == last + 1
    (data,) = cluster.admin("ingest-2").call("range", {"ledger": LEDGER, "start": last + 1, "limit": 1})["records"]
    placed = decode_record(data, LIMITS)
    assert (placed.content.kind, placed.content.request_id, placed.origin) == (EPOCH_KIND, "epoch-2", "ingest-2")
    after = cluster.client("writer1", "ingest-2", follow=False).call(
        "put", {**put_args(entry(LEDGER, "vote", {"after": 1}, "writer1")), "w": 1}
    )
    assert after["height"] == last + 2
