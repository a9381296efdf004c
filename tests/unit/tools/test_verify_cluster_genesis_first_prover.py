"""`vledger verify --cluster` takes the outside witnesses from the genesis of the FIRST node that
proves one under any checkpoint a key of the ledger's home or standby signed (tools/
outside_quorum.py _listed, epoch_log_keys), and a genesis listing none drops the ledger from the
report (check_outside returns None): nothing is checked and the exit is 0. The standby's host
holds the standby's key (10.9: it signs epoch 2 on), so while the home is down (or made slow to
answer) it signs a checkpoint of a tree of its own, larger than the home's, whose genesis lists
no outside witness, and publishes it (every ingest node may HSET any ledger's `outside` hash).
heads[0] is that note; the home does not answer; the standby, asked next, proves its genesis in
it; the replica, which holds the true genesis, is never asked. A ledger whose outside witnesses
never cosigned anything then passes. No epoch line, no handover: r26's bad_epoch rule (a
checkpoint of an epoch no record opened) is not applied here. Two genesis proven under the
ledger's keys are a fork to fail, not a choice of the first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.config.cluster import ClusterConfig, load_cluster
from vledger.config.settings import Limits
from vledger.node.errors import NodeUnavailableError, RemoteError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, SignerKey
from vledger.node.record import ZERO_LINK, Content, Entry
from vledger.node.tree import Frontier, inclusion_proof, leaf_hash
from vledger.node.witness import HomeSigner
from vledger.tests.unit.tools.test_outside_quorum import _subtree
from vledger.tools import cluster_verify

LEDGER = "votes"
LIMITS = Limits()
OUTSIDE_WITNESS = SignerKey("witness.example/w1", ALG_COSIGNATURE_V1, bytes(range(32)))


def _records(rules: dict[str, Any], count: int) -> list[bytes]:
    ledger_rules = LedgerRules(kinds=("vote",), difficulty=0, rules=rules)
    genesis = ledger_rules.genesis_content(LEDGER, "admin", "g", 1)
    placed = [Entry.prepare(genesis, 0, LIMITS).place(0, ZERO_LINK, 1, "ingest-1")]
    for n in range(1, count):
        content = Content(LEDGER, "vote", {"n": n}, "admin", f"r{n}", 1)
        placed.append(Entry.prepare(content, 0, LIMITS).place(n, placed[-1].link, 1, "ingest-1"))
    return [r.encode() for r in placed]


def _root(records: list[bytes]) -> bytes:
    frontier = Frontier()
    for data in records:
        frontier.append(leaf_hash(data))
    return frontier.root()


class _Nodes:
    """Stands for ``Sources``: each node's records (None: it does not answer)."""

    def __init__(self, held: dict[str, list[bytes] | None]) -> None:
        self.held = held
        self.hellos: dict[str, dict[str, Any]] = {}  # what a probe heard: none here

    def call(self, node: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        records = self.held[node]
        if records is None:
            raise NodeUnavailableError(f"{node} did not answer")
        if cmd == "checkpoint":
            return {}
        if cmd == "get":
            return {"record": records[args["height"]]}
        if args["size"] > len(records):
            raise RemoteError("bad_tree_size", "past the records", {})
        leaves = [leaf_hash(r) for r in records]
        return {"proof": inclusion_proof(args["index"], args["size"], lambda lv, i: _subtree(leaves, lv, i))}

    def probe(self, names: Any) -> set[str]:
        return set()  # each node is asked as it is needed

    def close(self) -> None:
        pass


def standby_cluster(tmp_path: Path, redis_url: str) -> tuple[ClusterConfig, dict[str, bytes]]:
    """A cluster file of ingest-1 home of LEDGER, ingest-2 its standby and replica-1, and the
    two ingest nodes' checkpoint keys made: the file as loaded, and each key's seed."""
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\nredis = "{redis_url}"\ndefault_home = "ingest-1"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
        '[nodes.ingest-2]\nrole = "ingest"\nport = 7394\npub_port = 7396\n'
        '[nodes.replica-1]\nrole = "replica"\nport = 7398\npub_port = 7400\n'
        f'[ledgers.{LEDGER}]\nhome = "ingest-1"\nstandby = "ingest-2"\n'
    )
    config = load_cluster(path)
    config.keys_dir.mkdir(parents=True, exist_ok=True)
    seeds = {}
    for node in ("ingest-1", "ingest-2"):
        generate_signing_key(config.keys_dir, node)
        seeds[node] = load_signing_key(signing_key_paths(config.keys_dir, node)[0]).seed
    return config, seeds


def test_a_standby_cannot_drop_a_ledger_from_the_outside_check_while_its_home_is_down(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, seeds = standby_cluster(tmp_path, redis_server.url)
    honest = _records({"witnesses": [OUTSIDE_WITNESS.verifier().encode()], "quorum": 1}, 4)
    forked = _records({}, 6)  # a genesis that lists no outside witness
    home_note = HomeSigner(config.name, seeds["ingest-1"]).sign(LEDGER, 4, _root(honest)).note
    fork_note = HomeSigner(config.name, seeds["ingest-2"]).sign(LEDGER, 6, _root(forked)).note
    repl = ReplicationLedger(redis_client)
    redis_client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    redis_client.set(repl.checkpoint_key(LEDGER), home_note)
    nodes = {"ingest-1": honest, "ingest-2": forked, "replica-1": honest}
    monkeypatch.setattr(cluster_verify, "_asking_keys", lambda config, key: object())
    monkeypatch.setattr(cluster_verify, "Sources", lambda config, keys, timeout: _Nodes(nodes))
    monkeypatch.delenv("REDIS_URL", raising=False)

    # Honest, the home up: its genesis asks 1 outside witness, none cosigned: FAILS (no_quorum).
    assert cluster_verify.verify_cluster(config.path, as_json=True) == 1
    assert json.loads(capsys.readouterr().out)["outside"][0]["error"]["code"] == "no_quorum"

    # The standby's note of its own tree in the outside hash (an ingest user's HSET), the home down.
    redis_client.hset(repl.outside_key(LEDGER), "witness.example/w1", fork_note)
    nodes["ingest-1"] = None
    status = cluster_verify.verify_cluster(config.path, as_json=True)
    said = json.loads(capsys.readouterr().out)["outside"]
    assert status == 1, said
