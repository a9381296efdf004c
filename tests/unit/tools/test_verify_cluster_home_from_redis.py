"""`vledger verify --cluster` takes a ledger's home from Redis's ``{ledgers}`` hash and checks
the outside quorum with that node's checkpoint keys (tools/cluster_verify.py:43, epoch_log_keys).
Every ingest node's Redis user may HSET that hash (broker/redis_acl.py: ``~{ledgers}``), so one
ingest node's password names another node (itself) the home of a ledger it does not home: no
checkpoint verifies with that node's key, the ledger is "NOT checked" (a warning, PROTOCOL 11.6)
and the command exits 0 for a ledger whose outside witnesses never cosigned anything.
The home a check trusts is the cluster file's home or its standby (10.9), as repair's
copy_ledger pins it; Redis's word picks between those two only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, SignerKey
from vledger.node.record import ZERO_LINK, Content, Entry
from vledger.node.tree import Frontier, inclusion_proof, leaf_hash
from vledger.node.witness import HomeSigner, home_key
from vledger.tests.unit.tools.test_outside_quorum import _subtree
from vledger.tools import cluster_verify

LEDGER = "votes"
LIMITS = Limits()
OUTSIDE_WITNESS = SignerKey("witness.example/w1", ALG_COSIGNATURE_V1, bytes(range(32)))


def _records(cluster: str, public: bytes) -> list[bytes]:
    rules = {
        "checkpoint_key": home_key(cluster, LEDGER, public).encode(),
        "witnesses": [OUTSIDE_WITNESS.verifier().encode()],
        "quorum": 1,
    }
    ledger_rules = LedgerRules(kinds=("vote",), difficulty=0, rules=rules)
    placed = [
        Entry.prepare(ledger_rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS).place(
            0, ZERO_LINK, 1, "ingest-1"
        )
    ]
    for n in range(1, 4):
        content = Content(LEDGER, "vote", {"n": n}, "admin", f"r{n}", 1)
        placed.append(Entry.prepare(content, 0, LIMITS).place(n, placed[-1].link, 1, "ingest-1"))
    return [r.encode() for r in placed]


class _Nodes:
    """Stands for ``Sources``: every node holds ``records`` and the home's ``note``, as honest nodes do."""

    def __init__(self, records: list[bytes], note: bytes) -> None:
        self.records, self.note = records, note
        self.hellos: dict[str, dict[str, Any]] = {}  # what a probe heard: none here

    def call(self, node: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        leaves = [leaf_hash(r) for r in self.records]
        if cmd == "checkpoint":
            return {"checkpoint": self.note}
        if cmd == "get":
            return {"record": self.records[args["height"]]}
        return {"proof": inclusion_proof(args["index"], args["size"], lambda lv, i: _subtree(leaves, lv, i))}

    def probe(self, names: Any) -> set[str]:
        return set()  # each node is asked as it is needed

    def close(self) -> None:
        pass


def test_an_ingest_nodes_redis_user_cannot_switch_the_outside_check_off_by_naming_a_home(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\nredis = "{redis_server.url}"\ndefault_home = "ingest-1"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
        '[nodes.ingest-2]\nrole = "ingest"\nport = 7394\npub_port = 7396\n'
    )
    config = load_cluster(path)
    config.keys_dir.mkdir(parents=True, exist_ok=True)
    public = generate_signing_key(config.keys_dir, "ingest-1").raw
    generate_signing_key(config.keys_dir, "ingest-2")
    seed = load_signing_key(signing_key_paths(config.keys_dir, "ingest-1")[0]).seed
    records = _records(config.name, public)
    frontier = Frontier()
    for data in records:
        frontier.append(leaf_hash(data))
    note = HomeSigner(config.name, seed).sign(LEDGER, len(records), frontier.root()).note
    repl = ReplicationLedger(redis_client)
    redis_client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    redis_client.set(repl.checkpoint_key(LEDGER), note)
    monkeypatch.setattr(cluster_verify, "_asking_keys", lambda config, key: object())
    monkeypatch.setattr(cluster_verify, "Sources", lambda config, keys, timeout: _Nodes(records, note))
    monkeypatch.delenv("REDIS_URL", raising=False)

    # Honest: the genesis asks 1 outside witness, none ever cosigned: the ledger FAILS (no_quorum).
    assert cluster_verify.verify_cluster(path, as_json=True) == 1
    honest = json.loads(capsys.readouterr().out)["outside"][0]
    assert honest["checked"] and honest["error"]["code"] == "no_quorum"

    # ingest-2's Redis user (it may HSET {ledgers}) names itself votes' home: still a failure.
    redis_client.hset(repl.ledgers_key, LEDGER, "ingest-2")
    status = cluster_verify.verify_cluster(path, as_json=True)
    said = json.loads(capsys.readouterr().out)["outside"]
    assert status == 1, said
