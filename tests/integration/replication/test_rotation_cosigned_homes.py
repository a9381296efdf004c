"""A witness's rotation states what its replaced key cosigned of every ledger, whichever node homes
it (docs/PROTOCOL.md 16.6, outsider o19 F1).

Two ingest nodes: ``near`` is homed on ingest-1 (the admin home, which writes the rotation
record), ``far`` on ingest-2, whose checkpoint key is rotated (13.8) before anything else. The
admin home checks each ledger's witness notes with that ledger's own key chain, not its own
key: the ``key_rotation`` records of the observer and of the replica list both ledgers at the
sizes their replaced keys cosigned. So a receipt of ``far`` saved before the rotations, cosigned
by both replaced keys, still verifies with quorum 2 once the rotations are given as node keys
(``vledger receipt keys``), which is what 14.3 and 15.5 tell a verifier to do. Before the fix,
``far`` was left out (its notes were checked with ingest-1's key) and that receipt was no_quorum.
Likewise a ledger a standby took over (10.9): its epoch-2 notes are checked with the standby's
pinned key, which the admin home, holding no copy, finds by the epoch line and the cluster file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_verify_key, signing_key_paths
from vledger.config.settings import PROTOCOL_LIMITS as LIMITS
from vledger.node.epoch import EPOCH_KIND, STANDBY_KEY_FIELD
from vledger.node.errors import RemoteError
from vledger.node.note import parse_checkpoint, parse_note
from vledger.node.record import decode_record
from vledger.node.witness import PINNED_KEY_FIELD, home_key
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until

NEAR, FAR = "near", "far"
OBSERVER, REPLICA = "observer-1", "replica-1"
CLUSTER = "test"  # LocalCluster's [cluster] name
WAIT = 30.0


def _put(cluster: LocalCluster, ledger: str, count: int, tag: str) -> int:
    cluster.client("writer1").put_many([entry(ledger, "vote", {tag: n}, "writer1") for n in range(count)])
    return int(cluster.admin().call("size", {"ledger": ledger})["size"])


def _rotation(cluster: LocalCluster, height: int) -> dict[str, Any]:
    data = cluster.admin().call("get", {"ledger": "admin", "height": height})["record"]
    record = decode_record(data, LIMITS)
    assert record.content.kind == "key_rotation"
    return dict(record.content.payload)


def test_a_witness_rotation_lists_the_ledgers_of_every_home_and_an_older_receipt_keeps_its_quorum(
    start_cluster: Any, tmp_path: Path
) -> None:
    cluster: LocalCluster = start_cluster(
        nodes=2,
        replicas=1,
        observers=1,
        homes={FAR: "ingest-2"},
        replication={"heartbeat_ms": 200},
    )
    keys = cluster.directory / "keys"
    common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]
    for ledger in (NEAR, FAR):
        cluster.cli("ledger", "create", ledger, "--kinds", "vote", "--difficulty", "0", *common)
    # far's checkpoint key rotates on its home: its later checkpoints are signed by a key that
    # no key file of the admin home holds, only far's chain names it.
    cluster.cli("ledger", "rotate-key", FAR, "--json", *common)
    sizes = {NEAR: _put(cluster, NEAR, 3, "before"), FAR: _put(cluster, FAR, 3, "before")}
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))

    def cosigned_all() -> bool:
        for ledger, size in sizes.items():
            notes = replication.cosignatures(ledger, [OBSERVER, REPLICA])
            if sorted(notes) != [OBSERVER, REPLICA]:
                return False
            if any(parse_checkpoint(parse_note(n).text).size != size for n in notes.values()):
                return False
        return True

    wait_until(cosigned_all, WAIT, "both witnesses' notes of both ledgers at their heads")
    # A receipt of far saved now: cosigned by both witnesses' keys that are about to be replaced.
    old_receipt = tmp_path / "far.receipt"
    cluster.cli("receipt", "get", FAR, str(sizes[FAR] - 1), "--quorum", "2", "-o", str(old_receipt), *common)
    genesis = tmp_path / "far-genesis.bin"
    genesis.write_bytes(cluster.admin().call("get", {"ledger": FAR, "height": 0})["record"])

    # The observer's rotation and the replica's: each states both ledgers, at the heads they cosigned.
    for node in (OBSERVER, REPLICA):
        rotated = json.loads(cluster.cli("key", "rotate", node, "--window", "2", "--json", *common).stdout)
        stated = _rotation(cluster, rotated["height"])
        assert stated["cosigned"].get(NEAR) == sizes[NEAR], (node, stated)
        assert stated["cosigned"].get(FAR) == sizes[FAR], (node, stated)

    # The receipt saved before: with the rotations as node keys, both replaced keys still count.
    printed = cluster.cli("receipt", "keys", "--config", str(cluster.config_path)).stdout.split()
    assert "--node-keys" in printed, printed
    checked = cluster.cli(
        "receipt", "verify", "--genesis", str(genesis), *printed, "--quorum", "2", str(old_receipt), check=False
    )
    assert checked.returncode == 0 and checked.stdout.startswith("valid: "), checked.stdout + checked.stderr
    assert OBSERVER in checked.stdout and REPLICA in checked.stdout, checked.stdout


HANDED = "handed"


def test_a_witness_rotation_lists_a_ledger_a_standby_took_over_by_its_epoch_s_key(start_cluster: Any) -> None:
    """A ledger homed on ingest-2 with ingest-3 its standby (10.9): ingest-2 stopped, ingest-3
    promoted, its epoch-2 checkpoints signed by the standby's pinned key. The admin home
    (ingest-1, which holds no copy) checks the observer's note of it by that epoch's key."""
    cluster: LocalCluster = start_cluster(
        nodes=3,
        replicas=1,
        observers=1,
        homes={HANDED: "ingest-2"},
        standbys={HANDED: "ingest-3"},
        replication={"heartbeat_ms": 200, "write_timeout_ms": 3000},
    )
    keys = cluster.directory / "keys"
    common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]

    def vkey(node: str) -> str:
        public = load_verify_key(signing_key_paths(keys, node)[1]).raw
        return home_key(CLUSTER, HANDED, public).encode()

    rules = {PINNED_KEY_FIELD: vkey("ingest-2"), STANDBY_KEY_FIELD: vkey("ingest-3")}
    cluster.admin("ingest-2").create_ledger(genesis(HANDED, ADMIN, [EPOCH_KIND, "vote"], rules))
    writer = cluster.client("writer1", "ingest-2")
    writer.put_many([entry(HANDED, "vote", {"n": n}, "writer1") for n in range(3)])
    size = int(cluster.admin("ingest-2").call("size", {"ledger": HANDED})["size"])
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))

    def witnessed_at(wanted: int) -> bool:
        notes = replication.cosignatures(HANDED, [OBSERVER, REPLICA])
        return sorted(notes) == [OBSERVER, REPLICA] and all(
            parse_checkpoint(parse_note(n).text).size >= wanted for n in notes.values()
        )

    wait_until(lambda: witnessed_at(size), WAIT, "both witnesses at the first home's head")
    assert cluster.stop_node("ingest-2") == 0

    def promoted() -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = cluster.admin("ingest-3").call("ledger.promote", {"ledger": HANDED})
        except RemoteError as e:
            assert e.code == "promotion_refused", e
            return None
        return result

    wait_until(promoted, WAIT, "the standby promoted")
    cluster.client("writer1", "ingest-3").put_many([entry(HANDED, "vote", {"m": n}, "writer1") for n in range(2)])
    size = int(cluster.admin("ingest-3").call("size", {"ledger": HANDED})["size"])
    wait_until(lambda: witnessed_at(size), WAIT, "both witnesses at epoch 2's head")
    note = replication.cosignatures(HANDED, [OBSERVER])[OBSERVER]
    assert b"\nvledger-epoch 2 ingest-3\n" in note  # signed by the standby's key, not the genesis key
    rotated = json.loads(cluster.cli("key", "rotate", OBSERVER, "--window", "2", "--json", *common).stdout)
    assert _rotation(cluster, rotated["height"])["cosigned"].get(HANDED) == size
