"""Receipts and proof commands on real processes: a receipt fetched with the CLI, the cluster
stopped, the receipt verified offline with only the genesis; a tampered receipt refused;
the proof commands refuse bad input with documented codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vledger.broker.signing import load_verify_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.node import tree
from vledger.node.note import verify_checkpoint
from vledger.node.witness import home_key, witness_key, witness_name
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, remote_error, wait_until

LEDGER = "votes"


def _pinned_cluster(start_cluster: Callable[..., LocalCluster]) -> tuple[LocalCluster, str]:
    cluster = start_cluster(nodes=1, replicas=2)
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"], cluster.checkpoint_pin(LEDGER)))
    return cluster, load_cluster(cluster.config_path).name


def _cli(cluster: LocalCluster, *args: str, check: bool = True) -> tuple[int, str]:
    key = cluster.directory / "keys" / f"{ADMIN}.key_secret"
    done = cluster.cli(*args[:2], "--config", str(cluster.config_path), "--key", str(key), *args[2:], check=check)
    return done.returncode, done.stdout + done.stderr


def test_a_receipt_verifies_offline_after_the_cluster_stopped(
    start_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster, name = _pinned_cluster(start_cluster)
    admin = cluster.admin()
    receipts = [admin.put(entry(LEDGER, "vote", {"n": i}, ADMIN)) for i in range(5)]
    height = receipts[3]["height"]
    witnesses = [
        witness_key(
            witness_name(name, r), load_verify_key(signing_key_paths(cluster.directory / "keys", r)[1]).raw
        ).encode()
        for r in cluster.replica_names
    ]
    # Both replicas cosign once they hold the records: a checkpoint with 2 cosignatures comes.
    out = tmp_path / "vote.receipt"
    _cli(cluster, "receipt", "get", LEDGER, str(height), "--quorum", "2", "--wait", "20", "-o", str(out))
    genesis_file = tmp_path / "genesis.receipt"
    _cli(cluster, "receipt", "get", LEDGER, "0", "-o", str(genesis_file))
    # The checkpoint command and the proof commands agree with the receipt.
    node = cluster.admin("replica-1")
    served = wait_until(lambda: _covering(node.call("checkpoint", {"ledger": LEDGER}), height), 10, "a checkpoint")
    log_key = home_key(name, LEDGER, cluster_public(cluster))
    checkpoint = verify_checkpoint(served["checkpoint"], log_key).checkpoint
    proof = node.call("proof.inclusion", {"ledger": LEDGER, "hash": receipts[3]["hash"], "size": checkpoint.size})
    record = node.call("get", {"ledger": LEDGER, "height": height})["record"]
    tree.verify_inclusion(tree.leaf_hash(record), proof["index"], proof["size"], proof["proof"], checkpoint.root)
    cluster.stop()

    witness_args = [a for w in witnesses for a in ("--witness", w)]
    done = cluster.cli("receipt", "verify", str(out), "--genesis", str(genesis_file), *witness_args, "--quorum", "2")
    assert "valid: record" in done.stdout and "2 witnesses cosigned" in done.stdout
    data = json.loads(out.read_bytes())
    data["index"] = height - 1  # the receipt claims another height
    tampered = tmp_path / "tampered.receipt"
    tampered.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    refused = cluster.cli("receipt", "verify", str(tampered), "--genesis", str(genesis_file), check=False)
    assert refused.returncode == 1 and "bad_receipt" in refused.stderr


def _covering(reply: dict[str, Any], height: int) -> dict[str, Any] | None:
    return reply if reply["size"] > height else None


def cluster_public(cluster: LocalCluster) -> bytes:
    return load_verify_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[1]).raw


def test_the_proof_commands_refuse_bad_input(start_cluster: Callable[..., LocalCluster]) -> None:
    cluster, _ = _pinned_cluster(start_cluster)
    admin = cluster.admin()
    for i in range(3):
        admin.put(entry(LEDGER, "vote", {"n": i}, ADMIN))
    for args, code in [
        ({"ledger": LEDGER, "index": 0, "size": 99}, "bad_tree_size"),
        ({"ledger": LEDGER, "index": 3, "size": 3}, "bad_tree_size"),
        ({"ledger": LEDGER, "index": -1, "size": 3}, "bad_request"),
        ({"ledger": LEDGER, "index": "0", "size": 3}, "bad_request"),
        ({"ledger": LEDGER, "index": 0, "hash": b"\0" * 32}, "bad_request"),
        ({"ledger": LEDGER, "hash": b"\0" * 32, "size": 3}, "not_found"),
        ({"ledger": LEDGER, "hash": b"\0" * 5}, "bad_request"),
        ({"ledger": "nope", "index": 0, "size": 1}, "not_found"),
    ]:
        assert remote_error(admin.call, "proof.inclusion", args).code == code, args
    for args, code in [
        ({"ledger": LEDGER, "old": 0, "new": 3}, "bad_request"),
        ({"ledger": LEDGER, "old": 3, "new": 2}, "bad_request"),
        ({"ledger": LEDGER, "old": 1, "new": 99}, "bad_tree_size"),
        ({"ledger": LEDGER, "old": 1}, "bad_request"),
    ]:
        assert remote_error(admin.call, "proof.consistency", args).code == code, args
    assert remote_error(admin.call, "checkpoint", {"ledger": "nope"}).code == "not_found"
    assert remote_error(admin.call, "checkpoint", {"ledger": LEDGER, "witnesses": 500}).code == "bad_request"
    proof = admin.call("proof.consistency", {"ledger": LEDGER, "old": 1, "new": 4})["proof"]
    records = list(admin.records(LEDGER))
    leaves = [tree.leaf_hash(r) for r in records]
    roots = [tree.root_at(n, lambda lv, ix: _mth(leaves[ix << lv : (ix + 1) << lv])) for n in (1, 4)]
    tree.verify_consistency(1, 4, roots[0], roots[1], proof)


def _mth(leaves: list[bytes]) -> bytes:
    while len(leaves) > 1:
        leaves = [tree.node_hash(leaves[i], leaves[i + 1]) for i in range(0, len(leaves), 2)]
    return leaves[0]
