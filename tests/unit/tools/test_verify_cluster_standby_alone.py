"""(review r27 F5 rest) `vledger verify --cluster` takes the outside witnesses a ledger's genesis
lists from every node that proves its genesis under a checkpoint of the ledger's keys; when the
standby was the only one that answered, its proof decided alone. Its host holds the standby's key
(10.9), which signs a tree of its own whose genesis lists no witness: the ledger was then not
reported and the exit 0, though its outside witnesses never cosigned. A genesis only the standby
proves decides nothing: the ledger fails [no_quorum], saying so (PROTOCOL 11.6 step 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import ReplicationLedger
from vledger.node.witness import HomeSigner
from vledger.tests.unit.tools.test_verify_cluster_genesis_first_prover import (
    LEDGER,
    OUTSIDE_WITNESS,
    _Nodes,
    _records,
    _root,
    standby_cluster,
)
from vledger.tools import cluster_verify


@pytest.mark.parametrize("served", ["its own tree, listing no witness", "the true tree"])
def test_a_genesis_only_the_standby_proves_decides_nothing(
    served: str,
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, seeds = standby_cluster(tmp_path, redis_server.url)
    honest = _records({"witnesses": [OUTSIDE_WITNESS.verifier().encode()], "quorum": 1}, 4)
    forked = _records({}, 6)  # a genesis that lists no outside witness
    standby_tree = forked if served.startswith("its own") else honest
    repl = ReplicationLedger(redis_client)
    redis_client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    redis_client.set(
        repl.checkpoint_key(LEDGER), HomeSigner(config.name, seeds["ingest-1"]).sign(LEDGER, 4, _root(honest)).note
    )
    fork_note = HomeSigner(config.name, seeds["ingest-2"]).sign(LEDGER, 6, _root(forked)).note
    redis_client.hset(repl.outside_key(LEDGER), "witness.example/w1", fork_note)  # an ingest user's HSET
    nodes: dict[str, list[bytes] | None] = {"ingest-1": None, "ingest-2": standby_tree, "replica-1": None}
    monkeypatch.setattr(cluster_verify, "_asking_keys", lambda config, key: object())
    monkeypatch.setattr(cluster_verify, "Sources", lambda config, keys, timeout: _Nodes(nodes))
    monkeypatch.delenv("REDIS_URL", raising=False)

    status = cluster_verify.verify_cluster(config.path, as_json=True)
    said = json.loads(capsys.readouterr().out)["outside"]
    assert status == 1, said
    assert [r["ledger"] for r in said] == [LEDGER]
    error = said[0]["error"]
    assert error["code"] == "no_quorum"
    assert "only by its standby ingest-2" in error["message"]
