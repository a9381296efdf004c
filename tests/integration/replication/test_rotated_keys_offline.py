"""An observer's Ed25519 key rotated on a running cluster, then checked offline (docs/PROTOCOL.md 16.6).

``vledger key rotate observer-1`` gives the observer a new Ed25519 key: it cosigns and signs its
tallies with it. After the window, a receipt of a record made after the rotation (fetched with
``vledger receipt get``, cosigned by the replica and the observer's new key) and the observer's
signed tally verify with the cluster stopped, from the genesis and the key directory's
generation-0 keys alone, the new key learnt from the admin ledger's rotation record the
receipt proves; a tampered rotation record proves nothing. A cosignature by the replaced key
stamped inside the window on a checkpoint larger than the rotation record says that key had
cosigned (outsider F3) counts for nothing, with those keys and with the options ``vledger
receipt keys`` prints after the rotation (generation 0 and the rotation proven from the stores,
``--node-keys``), even in a receipt stripped of its node keys; with those options a receipt
saved before the rotation, cosigned by the replaced key, still counts the observer. Likewise a
tally by the replaced key, its at_ms inside the window, at a height larger than the rotation
record says that key had tallied counts for nothing, offline and in ``vledger tally``; the
observer signs its count again with its new key once it reads the record, on a quiet ledger too.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths
from vledger.broker.tallies import Published, TallyBoard
from vledger.client import Client
from vledger.config.cluster import load_cluster
from vledger.config.settings import PROTOCOL_LIMITS as LIMITS
from vledger.node.errors import VledgerError
from vledger.node.node_keys import proven_rotations
from vledger.node.note import ALG_COSIGNATURE_V1, ALG_ED25519, SignerKey, VerifierKey, cosign, origin_for, parse_note
from vledger.node.receipt import parse_receipt
from vledger.node.record import decode_record
from vledger.node.tally_body import Snapshot
from vledger.node.witness import witness_key, witness_name
from vledger.tests.integration.cluster import LocalCluster, entry, wait_until
from vledger.tools.cluster_demo import ClusterDemo
from vledger.verifier.tally import check_published, observer_histories

LEDGER = "polls"
CLUSTER = "test"  # LocalCluster's [cluster] name
OBSERVER = "observer-1"
WINDOW_SECONDS = 2
WAIT = 30.0


def rotated_record(cluster: LocalCluster, height: int) -> dict[str, Any]:
    """The payload of the admin ledger's record at ``height`` (a key_rotation)."""
    data = cluster.admin().call("get", {"ledger": "admin", "height": height})["record"]
    record = decode_record(data, LIMITS)
    assert record.content.kind == "key_rotation"
    return dict(record.content.payload)


def _put(cluster: LocalCluster, count: int, tag: str) -> int:
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {tag: n}, "writer1") for n in range(count)])
    return int(cluster.admin().call("size", {"ledger": LEDGER})["size"])


def _tampered(receipt: bytes) -> bytes:
    """The receipt with a byte of its first rotation record changed, re-encoded canonically."""
    obj = json.loads(receipt)
    proven = obj["node_keys"]["rotations"][0]
    record = base64.b64decode(proven["record"])
    changed = record.replace(b"until", b"untim", 1)
    assert changed != record
    proven["record"] = base64.b64encode(changed).decode("ascii")
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def _backdated(receipt: bytes, witness: str, seed: bytes, timestamp: int) -> bytes:
    """The receipt with ``witness``'s cosignature replaced by one of key ``seed`` stamped at
    ``timestamp``: what a thief of a rotated-out key makes (outsider F3)."""
    obj = json.loads(receipt)
    note = parse_note(obj["checkpoint"].encode("utf-8"))
    key = SignerKey(witness, ALG_COSIGNATURE_V1, seed)
    line = cosign(note.text, key, timestamp).note_signature()
    kept = tuple(s for s in note.signatures if s.name != witness)
    obj["checkpoint"] = type(note)(note.text, (*kept, line)).encode().decode("utf-8")
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def _without_node_keys(receipt: bytes) -> bytes:
    """The receipt without its node keys, re-encoded canonically: what a forger leaves out."""
    obj = json.loads(receipt)
    del obj["node_keys"]
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def test_an_observer_s_rotated_key_verifies_offline(start_cluster: Any, tmp_path: Path) -> None:
    cluster: LocalCluster = start_cluster(
        nodes=1,
        replicas=1,
        observers=1,
        observing={"tally_interval_ms": 100},
        replication={"heartbeat_ms": 200},
        gateways=["replica-1"],
        verifiers=1,
    )
    keys = cluster.directory / "keys"
    common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]
    cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
    genesis = cluster.admin().call("get", {"ledger": LEDGER, "height": 0})["record"]
    before = _put(cluster, 3, "before")
    first = load_verify_key(signing_key_paths(keys, OBSERVER)[1])
    # A receipt saved before the rotation: cosigned by the observer's key file's key alone.
    old_receipt_file = tmp_path / "old.receipt"
    cluster.cli("receipt", "get", LEDGER, str(before - 1), "--quorum", "2", "-o", str(old_receipt_file), *common)
    assert b'"node_keys"' not in old_receipt_file.read_bytes()
    # The verifier reads the observers' keys at a look at their tallies and keeps them a minute: a
    # look at this ledger before the rotation, so that the observer's first tallies by its new key
    # meet keys read before it (outsider24 G4). A first look after the rotation read the rotated
    # key already, and this test passed without the fix.
    verifier = cluster.admin("verifier-1")
    wait_until(
        lambda: f"{OBSERVER}|{LEDGER}" in verifier.call("status")["copies"], WAIT, "the verifier checking the ledger"
    )
    looks = verifier.call("status")["tally_looks"]
    wait_until(lambda: verifier.call("status")["tally_looks"] > looks, WAIT, "a look at the ledger's tallies")

    rotated = json.loads(
        cluster.cli("key", "rotate", OBSERVER, "--window", str(WINDOW_SECONDS), "--json", *common).stdout
    )
    new_sign = load_verify_key(signing_key_paths(keys, f"{OBSERVER}@1")[1]).public_hex
    # The record states what the replaced key had cosigned (16.6), read from Redis by the home.
    stated = rotated_record(cluster, rotated["height"])
    assert stated["cosigned"].get(LEDGER, 0) <= 4, stated  # at most the 4 records before (the genesis too)
    assert stated["tallied"].get(LEDGER, -1) <= 3, stated  # and tallied at most height 3
    assert rotated["sign"] == new_sign != first.public_hex
    board = TallyBoard(connect(cluster.cluster_redis_url))
    new_key = load_verify_key(signing_key_paths(keys, f"{OBSERVER}@1")[1])

    def signed_again() -> Any:
        published = board.latest(LEDGER, [OBSERVER]).get(OBSERVER)
        return published is not None and check_published(published, new_key, LEDGER).ok

    # Nothing written since: the observer signs its count of the quiet ledger again with its new key.
    wait_until(signed_again, WAIT, "the observer's latest tally signed again by its new key")
    wait_until(lambda: time.time() * 1000 > rotated["until"] + 200, WINDOW_SECONDS + 5, "the window's end")
    size = _put(cluster, 3, "after")

    # The observer's tally at the head, signed after the window: by its new key.

    def tally_at_head() -> Any:
        published = board.latest(LEDGER, [OBSERVER]).get(OBSERVER)
        return published if published is not None and published.height == size - 1 else None

    tally = wait_until(tally_at_head, WAIT, "the observer's tally at the head")
    assert not check_published(tally, first, LEDGER).ok  # not by its key file's key

    # A receipt of a record made after the rotation, cosigned by the replica and the observer.
    receipt_file = tmp_path / "vote.receipt"
    cluster.cli("receipt", "get", LEDGER, str(size - 1), "--quorum", "2", "-o", str(receipt_file), *common)
    receipt = receipt_file.read_bytes()
    assert b'"node_keys":{"checkpoint":' in receipt

    home = load_verify_key(signing_key_paths(keys, "ingest-1")[1]).raw
    admin_key = VerifierKey(origin_for(CLUSTER, "admin"), ALG_ED25519, home)
    generation0 = [
        witness_key(witness_name(CLUSTER, w), load_verify_key(keys / f"{w}.sign.pub").raw)
        for w in [*cluster.replica_names, *cluster.observer_names]
    ]

    # `vledger tally` checks the tally by the observer's new key, proven from Redis's admin cache.
    counted = cluster.cli("tally", LEDGER, "--config", str(cluster.config_path), "--json")
    shown = json.loads(counted.stdout)
    assert shown["observers"][0]["signature"] == "ok", counted.stdout

    # `vledger repl status` (and make run's demo) counts the observer's cosignature by its new key.
    def status_cosigned() -> Any:
        shown = json.loads(cluster.cli("repl", "status", "--config", str(cluster.config_path), "--json").stdout)
        (ledger,) = [entry for entry in shown["ledgers"] if entry["ledger"] == LEDGER]
        (node,) = [n for n in ledger["nodes"] if n["node"] == OBSERVER]
        return node["cosigned"] is not None and node["cosigned"] >= size

    wait_until(status_cosigned, WAIT, "repl status counts the observer's cosignature by its new key")

    # `make run`'s offline receipt check asks a majority of the 2 witnesses, as `receipt verify`
    # with `vledger receipt keys`' options does: with the generation-0 keys alone it was refused
    # no_quorum, the observer's new key proven by nothing, and `make run` failed (outsider45).
    demo = ClusterDemo(load_cluster(cluster.config_path), 0)
    try:
        checked = demo._receipt(cast(Any, SimpleNamespace(ledger=LEDGER, head=SimpleNamespace(height=size - 1))))
    finally:
        demo.close()
    assert checked.verified is None and witness_name(CLUSTER, OBSERVER) in checked.witnesses, checked.verified

    # The gateway, and the HTTP client with the admin key: the observer's cosignature and tally count.
    url = cluster.gateway_url("replica-1")

    def gateway_checkpoint() -> Any:
        try:
            with urllib.request.urlopen(f"{url}api/ledgers/{LEDGER}/checkpoint?witnesses=2", timeout=5) as answer:
                shown = json.loads(answer.read())
        except OSError:
            return None  # 404 until a checkpoint has both cosignatures
        return shown if shown["size"] >= size else None

    served = wait_until(gateway_checkpoint, WAIT, "the gateway's checkpoint with 2 cosignatures")
    assert served["node_keys"] is not None and witness_name(CLUSTER, OBSERVER) in served["cosigned_by"]
    newest = witness_key(witness_name(CLUSTER, OBSERVER), bytes.fromhex(new_sign))
    assert served["witness_keys"][newest.name] == newest.encode()
    with Client.http(
        url,
        genesis={LEDGER: genesis},
        witnesses=generation0,
        quorum=2,
        observers={OBSERVER: first.public_hex},
        admin_key=admin_key,
    ) as client:
        assert client.checkpoint(LEDGER).checkpoint.size >= size
        (count,) = client.tally(LEDGER).observers
        assert count.problem is None and count.snapshot is not None, count

    # The old key's thief signs a tally at the head, its at_ms inside the window: the rotation
    # says that key tallied no such height (16.6), so `vledger tally` refuses its signature. The
    # observer is stopped first: running, it would publish its own tally again over the forgery.
    assert cluster.stop_node(OBSERVER) == 0
    old_signer = load_signing_key(signing_key_paths(keys, OBSERVER)[0])
    forged = dataclasses.replace(Snapshot.decode(tally.body), at_ms=rotated["until"] - 1)
    assert forged.height > stated["tallied"].get(LEDGER, -1)
    signature = old_signer.sign(forged.body())
    entry_id = board.publish(LEDGER, OBSERVER, forged.height, forged.body(), signature)
    backdated_tally = Published(entry_id, OBSERVER, forged.height, forged.body(), signature)
    refused_tally = cluster.cli("tally", LEDGER, "--config", str(cluster.config_path), "--json", check=False)
    assert refused_tally.returncode == 1, refused_tally.stdout
    assert json.loads(refused_tally.stdout)["observers"][0]["signature"] != "ok", refused_tally.stdout
    # The verifier raises bad_signature for the forgery, and never raised it for the observer's
    # honest tallies by its new key (outsider24 G4: checked with keys read before the rotation,
    # they raised it, which only an operator resolves, on every ledger within 3 s).
    alerts = ReplicationLedger(board.client)
    forged_found = "sha256:" + hashlib.sha256(forged.body()).hexdigest()

    def bad_signature_raised() -> Any:
        return alerts.open_alerts().get(f"{OBSERVER}|{LEDGER}|bad_signature")

    raised = wait_until(bad_signature_raised, WAIT, "the verifier's bad_signature alert of the forged tally")
    assert raised["found"] == forged_found and raised["raised_by"] == "verifier-1", raised
    raised_ever = [a for a in alerts.alerts(1000) if a.get("what") == "bad_signature"]
    assert [a["found"] for a in raised_ever] == [forged_found], raised_ever

    # Offline, with the cluster stopped: the genesis, the generation-0 keys and the admin key.
    for name in [*cluster.replica_names, *cluster.node_names]:
        assert cluster.stop_node(name) == 0
    genesis_file = tmp_path / "genesis.bin"
    genesis_file.write_bytes(genesis)
    witnesses = [
        arg
        for w in [*cluster.replica_names, *cluster.observer_names]
        for arg in (
            "--witness",
            witness_key(witness_name(CLUSTER, w), load_verify_key(keys / f"{w}.sign.pub").raw).encode(),
        )
    ]
    verify = ["receipt", "verify", "--genesis", str(genesis_file), *witnesses, "--quorum", "2"]
    checked = cluster.cli(*verify, str(receipt_file), "--admin-key", admin_key.encode())
    assert checked.stdout.startswith("valid: ") and OBSERVER in checked.stdout, checked.stdout
    # Without the admin ledger's key the observer's new key is unknown: no quorum.
    refused = cluster.cli(*verify, str(receipt_file), check=False)
    assert refused.returncode == 1 and "no_quorum" in refused.stdout + refused.stderr
    # Outsider F3: the old key's thief stamps a cosignature of this post-window checkpoint with
    # a T inside the window. The rotation record states what the old key had cosigned (16.6):
    # this checkpoint is larger, so the line counts for nothing whatever T it claims.
    assert stated["cosigned"].get(LEDGER, 0) < size
    backdated_file = tmp_path / "backdated.receipt"
    old_seed = load_signing_key(signing_key_paths(keys, OBSERVER)[0]).seed
    backdated_file.write_bytes(
        _backdated(receipt, witness_name(CLUSTER, OBSERVER), old_seed, rotated["until"] // 1000 - 1)
    )
    refused = cluster.cli(*verify, str(backdated_file), "--admin-key", admin_key.encode(), check=False)
    assert refused.returncode == 1 and "no_quorum" in refused.stdout + refused.stderr, refused.stdout
    # `vledger receipt keys` gives each witness's generation 0 and the rotation records proven
    # under an admin checkpoint (read from the nodes' stores): with its options the receipt saved
    # before the rotation counts the observer by its replaced key, the one after by its new key,
    # and the forged line counts for nothing, even in a receipt stripped of its node keys.
    printed = cluster.cli("receipt", "keys", "--config", str(cluster.config_path)).stdout.split()
    newest_key = witness_key(witness_name(CLUSTER, OBSERVER), bytes.fromhex(new_sign)).encode()
    assert generation0[-1].encode() in printed and newest_key not in printed, printed
    assert printed[-2] == "--node-keys", printed
    from_keys = ["receipt", "verify", "--genesis", str(genesis_file), *printed, "--quorum", "2"]
    checked = cluster.cli(*from_keys, str(receipt_file))
    assert checked.stdout.startswith("valid: ") and OBSERVER in checked.stdout, checked.stdout
    checked = cluster.cli(*from_keys, str(old_receipt_file))
    assert checked.stdout.startswith("valid: ") and OBSERVER in checked.stdout, checked.stdout
    refused = cluster.cli(*from_keys, str(backdated_file), check=False)
    assert refused.returncode == 1 and "no_quorum" in refused.stdout + refused.stderr, refused.stdout
    stripped_file = tmp_path / "stripped.receipt"
    stripped_file.write_bytes(_without_node_keys(backdated_file.read_bytes()))
    refused = cluster.cli(*from_keys, str(stripped_file), check=False)
    assert refused.returncode == 1 and "no_quorum" in refused.stdout + refused.stderr, refused.stdout
    # Without those node keys, the stripped forgery counts the old key (the window alone binds it,
    # and only when something shows the rotation): what the printed node keys are for.
    without = [word for word in printed[:-2]]
    accepted = cluster.cli(
        "receipt", "verify", "--genesis", str(genesis_file), *without, "--quorum", "2", str(stripped_file)
    )
    assert accepted.stdout.startswith("valid: "), accepted.stdout
    # A tampered rotation record is not the one the admin checkpoint holds.
    tampered_file = tmp_path / "tampered.receipt"
    tampered_file.write_bytes(_tampered(receipt))
    refused = cluster.cli(*verify, str(tampered_file), "--admin-key", admin_key.encode(), check=False)
    assert refused.returncode == 1, refused.stdout

    # The signed tally, offline: by the observer's key in force at its at_ms, learnt from the
    # rotation the receipt proves; not from a tampered one.
    evidence = parse_receipt(receipt).node_keys
    assert evidence is not None
    histories = observer_histories({OBSERVER: first}, proven_rotations(evidence, admin_key))
    checked_tally = check_published(tally, first, LEDGER, histories[OBSERVER])
    assert checked_tally.ok and checked_tally.snapshot is not None, checked_tally.problem
    assert checked_tally.snapshot.at_ms > rotated["until"]
    # The thief's backdated tally, by the rotation the receipt proves: past what the key tallied.
    refused_offline = check_published(backdated_tally, first, LEDGER, histories[OBSERVER])
    assert not refused_offline.ok and "tallied" in str(refused_offline.problem), refused_offline.problem
    forged = parse_receipt(_tampered(receipt)).node_keys
    assert forged is not None
    with pytest.raises(VledgerError):  # the record's own checks, or its proof
        proven_rotations(forged, admin_key)
