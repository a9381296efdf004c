"""A failback on real processes (PROTOCOL 10.9): the home's host is lost, its standby promoted
(epoch 2); the old home comes back named the ledger's standby in the cluster file (the two
swapped), sets aside the records it placed past the handover (w=0 writes of its cut-off time),
follows the new home's chain, and is promoted back (epoch 3, with its own pinned key) once the
admin confirms its key was not stolen and epoch 2's home is stopped; the witnesses, which run
on with the file they started with, take epoch 3 only because the file they read again names
ingest-1 the standby. Nothing acknowledged with w>=1 is lost on any copy, the verifier raises
nothing of its own, and a receipt of epoch 3 verifies offline from the genesis. ingest-2, named
the standby again (the file swapped back, stating `epoch = 3`), survives a second outage
(epoch 4).
"""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path
from typing import Any

from vledger.broker.accounts import heartbeat_window
from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.config.cluster import load_cluster
from vledger.node.epoch import EPOCH_KIND, epoch_claim
from vledger.node.errors import RemoteError
from vledger.node.note import parse_checkpoint, parse_note
from vledger.node.record import decode_record
from vledger.node.store import ChainStore
from vledger.tests.integration.cluster import (
    ADMIN,
    LIMITS,
    LocalCluster,
    entry,
    put_args,
    remote_error,
    wait_until,
)
from vledger.tests.integration.replication.test_standby import LEDGER, WAIT, _size, _vkey, standby_cluster


def _links(cluster: LocalCluster, node: str) -> dict[str, bytes]:
    """Request id -> link of every record ``node`` holds of the ledger."""
    records = cluster.admin(node).call("range", {"ledger": LEDGER, "start": 0, "limit": 500})["records"]
    return {decode_record(d, LIMITS).content.request_id: decode_record(d, LIMITS).link for d in records}


def _promoted(cluster: LocalCluster, node: str, refusals: list[str], **args: Any) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = cluster.admin(node).call("ledger.promote", {"ledger": LEDGER, **args})
    except RemoteError as e:
        assert e.code == "promotion_refused", e
        refusals.append(str(e))
        return None
    return result


def test_the_old_home_comes_back_as_standby_sets_its_tail_aside_and_fails_back_into_epoch_3(
    start_cluster: Any, tmp_path: Path
) -> None:
    cluster = standby_cluster(start_cluster)
    acknowledged: dict[str, bytes] = {}  # request id -> link of each put answered with w >= 1

    def put(node: str, n: int, w: int = 2) -> dict[str, Any]:
        e = entry(LEDGER, "vote", {"n": n}, "writer1")
        receipt: dict[str, Any] = cluster.client("writer1", node, follow=False).call("put", {**put_args(e), "w": w})
        acknowledged[e.content.request_id] = receipt["hash"]
        return receipt

    for n in range(5):
        put("ingest-1", n)
    wait_until(lambda: _size(cluster, "ingest-2") == 6, WAIT, "the standby holds epoch 1")
    cluster.kill_node("ingest-1")  # its host is gone
    # What it placed while cut off, acknowledged with w=0 (no witness, no standby saw them): here
    # written into its store while it is down, as it would have placed them (origin ingest-1).
    with ChainStore(cluster.store_dir("ingest-1"), origin="ingest-1") as store:
        cut_off = [store.append(entry(LEDGER, "vote", {"cut off": n}, "writer1")) for n in range(2)]
    assert [r.height for r in cut_off] == [6, 7]

    refusals: list[str] = []
    handover = wait_until(lambda: _promoted(cluster, "ingest-2", refusals), WAIT, "ingest-2 promoted")
    assert handover["height"] == 6
    second = [put("ingest-2", n) for n in range(10, 13)]
    assert second[-1]["height"] == 9

    # The operator names the old home the standby, the new one the home, and starts it again.
    text = cluster.config_path.read_text()
    swapped = text.replace('home = "ingest-1"\nstandby = "ingest-2"', 'home = "ingest-2"\nstandby = "ingest-1"')
    assert swapped != text
    cluster.config_path.write_text(swapped)
    cluster.start_node("ingest-1")
    wait_until(lambda: _size(cluster, "ingest-1") == 10, WAIT, "the old home follows epoch 2")
    assert _links(cluster, "ingest-1") == _links(cluster, "ingest-2")  # its tail is gone from its store ...
    (aside,) = sorted(cluster.store_dir("ingest-1").glob("set-aside-votes-6-*.json"))  # ... into a file
    assert aside.stat().st_mode & 0o777 == 0o600
    kept = [decode_record(base64.b64decode(r), LIMITS) for r in json.loads(aside.read_text())["records"]]
    assert [(r.height, r.origin, r.content.payload) for r in kept] == [
        (6, "ingest-1", {"cut off": 0}),
        (7, "ingest-1", {"cut off": 1}),
    ]
    redis = ReplicationLedger(connect(cluster.cluster_redis_url))
    raised = redis.open_alerts().get(f"ingest-1|{LEDGER}|record_conflict")
    assert raised is not None and aside.name in str(raised), redis.open_alerts()

    # The failback: refused until the admin confirms the old home's key was not stolen.
    error = remote_error(cluster.admin("ingest-1").call, "ledger.promote", {"ledger": LEDGER})
    assert error.code == "promotion_refused" and "not stolen" in str(error)
    key = cluster.directory / "keys" / f"{ADMIN}.key_secret"
    common = ("--config", str(cluster.config_path), "--key", str(key))

    def failed_back() -> dict[str, Any] | None:
        done = cluster.cli(
            "ledger", "promote", LEDGER, "ingest-1", *common, "--node", "ingest-1", "--key-not-stolen", "--json",
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            assert "promotion_refused" in done.stdout + done.stderr, done.stdout + done.stderr
            return None
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    # Refused while epoch 2's home runs: it would go on acknowledging w>=1 puts that a witness may
    # cosign before it stores the handover (review r30 F4). The operator stops it first.
    error = remote_error(cluster.admin("ingest-1").call, "ledger.promote", {"ledger": LEDGER, "key_not_stolen": True})
    assert error.code == "promotion_refused" and "ingest-2, the home of epoch 2" in str(error), error
    assert "stop it first" in str(error)
    assert cluster.stop_node("ingest-2") == 0
    third = wait_until(failed_back, WAIT, "ingest-1 promoted back")
    assert third["height"] == 10
    record = decode_record(cluster.admin("ingest-1").call("get", {"ledger": LEDGER, "height": 10})["record"], LIMITS)
    assert (record.content.kind, record.origin, record.content.payload["epoch"]) == (EPOCH_KIND, "ingest-1", 3)
    assert record.content.payload["key"] == _vkey(cluster, "ingest-1")  # the genesis home's own pinned key
    hello = cluster.admin("ingest-1").call("hello")  # the home, no longer listed as its standby
    assert LEDGER in hello["ledgers"] and LEDGER not in hello["standby"]["ledgers"], hello
    after = put("ingest-1", 20)
    assert after["height"] == 11
    note = cluster.admin("ingest-1").call("range", {"ledger": LEDGER, "start": 11, "limit": 1})["checkpoint"]
    assert epoch_claim(parse_checkpoint(parse_note(note).text)) == (3, "ingest-1")
    # The witnesses stored epoch 3 (w=2): the file they read again named ingest-1 the standby.
    # The operator swaps it back, stating the failback made (`epoch = 3`: else a witness that
    # catches up from scratch, the verifier and repl status would take epoch 3 for a thief's),
    # and starts ingest-2 again as the standby, for a second outage. It is fenced as ingest-1
    # was, from its start (the witnessed epoch 3): its writes are answered not_home naming the
    # new home, and it follows epoch 3.
    back = text.replace('home = "ingest-1"\nstandby = "ingest-2"', 'home = "ingest-1"\nstandby = "ingest-2"\nepoch = 3')
    assert back != text
    cluster.config_path.write_text(back)
    cluster.start_node("ingest-2")
    wait_until(lambda: LEDGER not in cluster.admin("ingest-2").call("hello")["ledgers"], WAIT, "ingest-2 fenced")
    stale = remote_error(
        cluster.client("writer1", "ingest-2", follow=False).call,
        "put",
        put_args(entry(LEDGER, "vote", {"stale": 1}, "writer1")),
    )
    assert stale.code == "not_home" and stale.details["home"]["node"] == "ingest-1"
    assert redis.epochs()[LEDGER] == (3, "ingest-1")

    # Every record acknowledged with w >= 1, in all three epochs, on every copy.
    wait_until(lambda: cluster.own_size("ingest-2", LEDGER) == 12, WAIT, "ingest-2 follows epoch 3")
    for name in ("ingest-1", "ingest-2", *cluster.replica_names):
        wait_until(lambda name=name: _size(cluster, name) == 12, WAIT, f"{name} holds epoch 3")
        held = _links(cluster, name)
        assert {rid: held.get(rid) for rid in acknowledged} == acknowledged, name
    # The client library follows the new home: asked of the file's home (ingest-2, fenced), it reads
    # epoch 3's size from ingest-1. The gateway (a replica's store) names epoch 3's home.
    shown = cluster.cli("size", LEDGER, *common, "--json")
    assert json.loads(shown.stdout)["size"] == 12
    with urllib.request.urlopen(f"{cluster.gateway_url('replica-1')}api/ledgers/{LEDGER}", timeout=10) as answer:
        info = json.loads(answer.read())
    assert (info["home"], info["epoch"]) == ("ingest-1", 3), info
    # The verifier, started again on the edited file, takes epoch 3's home and raises nothing.
    cluster.restart_node("verifier-1")
    verifier = cluster.admin("verifier-1")
    wait_until(
        lambda: (
            {f"ingest-1|{LEDGER}", *(f"{r}|{LEDGER}" for r in cluster.replica_names)}
            <= {c for c in verifier.call("status")["copies"] if c.endswith(f"|{LEDGER}")}
        ),
        WAIT,
        "the verifier checks epoch 3's copies",
    )

    raised_key = f"ingest-1|{LEDGER}|record_conflict"
    others: list[dict[str, Any]] = []

    def quiet() -> bool:
        others[:] = [e for e in redis.open_entries() if e.get("ledger") == LEDGER and e["key"] != raised_key]
        return not others

    try:
        wait_until(quiet, WAIT, "no alert of the ledger but the tail set aside")
    except AssertionError as e:
        raise AssertionError(f"{e}: {others}") from None
    # A receipt of epoch 3, cosigned by both replicas, verifies offline from the genesis.
    receipt_file, genesis_file = tmp_path / "epoch3.receipt", tmp_path / "genesis.receipt"
    cluster.cli(
        "receipt", "get", LEDGER, "11", *common, "--node", "ingest-1", "--quorum", "2", "--wait", "20",
        "-o", str(receipt_file),
    )  # fmt: skip
    cluster.cli("receipt", "get", LEDGER, "0", *common, "--node", "ingest-1", "-o", str(genesis_file))
    witnesses = json.loads(cluster.cli("receipt", "keys", "--config", str(cluster.config_path), "--json").stdout)
    trusted = [arg for vkey in witnesses["witnesses"].values() for arg in ("--witness", vkey)]
    verified = cluster.cli("receipt", "verify", str(receipt_file), "--genesis", str(genesis_file), *trusted)
    assert "valid: record" in verified.stdout, verified.stdout + verified.stderr
    # A second outage is survived: ingest-2, which the file names the standby again and which
    # followed epoch 3, takes over again (epoch 4, the standby's key), nothing acknowledged lost.
    cluster.kill_node("ingest-1")
    # Killed, it says nothing to Redis: refused until its heartbeat there is older than the window
    # (a failback also asks Redis whether the home still runs, review r31), then promoted.
    window = heartbeat_window(load_cluster(cluster.config_path).settings.broker.accounts_poll_ms / 1000)
    fourth = wait_until(
        lambda: _promoted(cluster, "ingest-2", refusals, key_not_stolen=True), WAIT + window, "ingest-2 promoted again"
    )
    assert fourth["height"] == 12
    assert put("ingest-2", 30)["height"] == 13
    assert redis.epochs()[LEDGER] == (4, "ingest-2")
    for name in ("ingest-2", *cluster.replica_names):
        wait_until(lambda name=name: cluster.own_size(name, LEDGER) == 14, WAIT, f"{name} holds epoch 4")
        held = _links(cluster, name)
        assert {rid: held.get(rid) for rid in acknowledged} == acknowledged, name
    for name in ("ingest-2", *cluster.replica_names):
        assert cluster.stop_node(name) == 0
    for name in ("ingest-1", "ingest-2", *cluster.replica_names):
        assert cluster.verify_store(name).returncode == 0, name
