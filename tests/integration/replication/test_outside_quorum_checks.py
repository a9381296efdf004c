"""`vledger verify --cluster` and `vledger repair` ask the outside witnesses a ledger's genesis
lists (PROTOCOL 13.9, 11.5), on real processes with the tlog-witness of tests/tlog_witness.py.

Before, both asked the cluster's own witnesses alone: a ledger whose outside quorum never
cosigned, or cosigned a tree the stores do not hold, passed `verify --cluster`, and `repair`
copied a tree the outside witnesses had seen another of.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths
from vledger.node.note import add_checkpoint_request
from vledger.node.witness import HomeSigner, home_key
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until
from vledger.tests.integration.replication.test_repair import fingerprint, leftovers, repair
from vledger.tests.integration.replication.test_witnessed import wait_cosigned
from vledger.tests.tlog_witness import TlogWitness

CLUSTER = "test"  # LocalCluster's [cluster] name
VOTES, AUDIT, FORK = "votes", "audit", "fork"
WAIT = 30.0


@pytest.fixture
def outside() -> Iterator[dict[str, TlogWitness]]:
    """An honest witness, one the cluster file gives no URL (never fed: it never cosigns), and
    one a thief of the home's key fed another tree of ``fork`` first (it refuses the true one)."""
    made = {
        "honest": TlogWitness("witness.example/honest", secrets.token_bytes(32), {}).start(),
        "unfed": TlogWitness("witness.example/unfed", secrets.token_bytes(32), {}),
        "forked": TlogWitness("witness.example/forked", secrets.token_bytes(32), {}).start(),
    }
    yield made
    made["honest"].stop()
    made["forked"].stop()


def _start(start_cluster: Callable[..., LocalCluster], outside: dict[str, TlogWitness]) -> tuple[LocalCluster, str]:
    fed = {w.name: w.url for w in (outside["honest"], outside["forked"])}
    cluster = start_cluster(nodes=1, replicas=1, outside_witnesses=fed)
    public = load_verify_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[1]).raw
    for ledger in (VOTES, AUDIT, FORK):
        for witness in outside.values():
            witness.trust(f"{CLUSTER}/{ledger}", home_key(CLUSTER, ledger, public).encode())
    return cluster, home_key(CLUSTER, VOTES, public).encode()


def _create(cluster: LocalCluster, ledger: str, witnesses: list[TlogWitness], quorum: int, records: int) -> None:
    public = load_verify_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[1]).raw
    rules = {"checkpoint_key": home_key(CLUSTER, ledger, public).encode(), "witnesses": [w.vkey for w in witnesses]}
    admin = cluster.admin()
    admin.create_ledger(genesis(ledger, ADMIN, ["vote"], {**rules, "quorum": quorum}))
    put(cluster, ledger, records)


def put(cluster: LocalCluster, ledger: str, count: int, start: int = 0) -> None:
    admin = cluster.admin()
    for n in range(start, start + count):
        admin.put(entry(ledger, "vote", {"n": n}, ADMIN))


def size(cluster: LocalCluster, ledger: str) -> int:
    return int(cluster.admin().call("size", {"ledger": ledger})["size"])


def verify(cluster: LocalCluster, *extra: str) -> tuple[int, dict[str, Any]]:
    done = cluster.cli("verify", "--cluster", str(cluster.config_path), "--json", *extra, check=False)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def outside_of(answer: dict[str, Any], ledger: str) -> dict[str, Any]:
    return next(r for r in answer.get("outside", []) if r["ledger"] == ledger)


def _witnessed(cluster: LocalCluster, witness: TlogWitness, ledger: str, at_least: int) -> None:
    origin = f"{CLUSTER}/{ledger}"
    wait_until(lambda: witness.latest.get(origin, (0, b""))[0] >= at_least, WAIT, f"{witness.name} cosigns {ledger}")
    repl = ReplicationLedger(connect(cluster.cluster_redis_url))
    wait_until(lambda: witness.name in repl.outside_cosignatures(ledger), WAIT, "its note published")


def _held(cluster: LocalCluster, node: str, ledger: str) -> None:
    """Wait until ``node`` holds every record of ``ledger`` its home holds."""
    wait_until(
        lambda: cluster.admin(node).call("size", {"ledger": ledger})["size"] == size(cluster, ledger),
        WAIT,
        f"{node} holds {ledger}",
    )


def _fork_note(cluster: LocalCluster, forked: TlogWitness) -> bytes:
    """A checkpoint of ``fork`` at size 2 that the home's key signs over a root of no store,
    cosigned by ``forked`` (fed it before the ledger exists): what a thief of that key shows."""
    seed = load_signing_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[0]).seed
    fork = HomeSigner(CLUSTER, seed).sign(FORK, 2, secrets.token_bytes(32))
    status, _, line = forked.add_checkpoint(add_checkpoint_request(0, [], fork.note).encode())
    assert status == 200, line
    return fork.note + line


def test_verify_cluster_says_how_far_the_outside_quorum_witnessed_and_fails_what_it_did_not(
    start_cluster: Callable[..., LocalCluster], outside: dict[str, TlogWitness]
) -> None:
    cluster, _ = _start(start_cluster, outside)
    honest, unfed, forked = outside["honest"], outside["unfed"], outside["forked"]
    forged_fork = _fork_note(cluster, forked)

    # The happy path: a quorum of 1 of [honest] cosigned the head; every copy holds that tree.
    _create(cluster, VOTES, [honest], 1, 5)
    _witnessed(cluster, honest, VOTES, size(cluster, VOTES))
    _held(cluster, "replica-1", VOTES)
    code, answer = verify(cluster)
    assert code == 0 and answer["ok"], answer
    votes = outside_of(answer, VOTES)
    assert votes["ok"] and votes["error"] is None and votes["quorum"] == 1
    assert votes["size"] == size(cluster, VOTES) and votes["witnesses"] == [honest.name]
    assert votes["copies"] == {"ingest-1": "holds", "replica-1": "holds"}
    text = cluster.cli("verify", "--cluster", str(cluster.config_path))
    assert f"votes: witnessed outside up to 6 by 1 of 1 ({honest.name}; the genesis asks 1)" in text.stdout

    # A missing quorum: audit asks 2 of [honest, unfed], and unfed is never fed.
    _create(cluster, AUDIT, [honest, unfed], 2, 3)
    _witnessed(cluster, honest, AUDIT, size(cluster, AUDIT))
    code, answer = verify(cluster)
    audit = outside_of(answer, AUDIT)
    assert code == 1 and not answer["ok"] and outside_of(answer, VOTES)["ok"]
    assert audit["error"]["code"] == "no_quorum" and unfed.name in audit["error"]["message"], audit
    assert audit["size"] is None and audit["witnesses"] == []

    # A forged outside note: a line under unfed's name in the home's Redis hash is not counted.
    repl = ReplicationLedger(connect(cluster.cluster_redis_url))
    [note] = [n for w, n in repl.outside_cosignatures(AUDIT).items() if w == honest.name]
    forged = note.replace(honest.name.encode(), unfed.name.encode())  # honest's signature, unfed's name
    repl.client.hset(repl.outside_key(AUDIT), unfed.name, forged)
    code, answer = verify(cluster)
    audit = outside_of(answer, AUDIT)
    assert code == 1 and audit["error"]["code"] == "no_quorum", audit
    assert any("[bad_cosignature]" in w and unfed.name in w for w in audit["warnings"]), audit

    # A conflicting root: the forked witness cosigned a tree of fork that no store holds.
    _create(cluster, FORK, [forked], 1, 4)
    wait_until(lambda: 422 in forked.answers, WAIT, "the forked witness refuses the true tree")
    repl.client.hset(repl.outside_key(FORK), forked.name, forged_fork)
    code, answer = verify(cluster)
    fork = outside_of(answer, FORK)
    assert code == 1 and fork["error"]["code"] == "store_contradicts_checkpoint", fork
    assert fork["size"] == 2 and fork["witnesses"] == [forked.name]
    assert fork["copies"]["ingest-1"].startswith("another_root"), fork
    text = cluster.cli("verify", "--cluster", str(cluster.config_path), check=False)
    assert "FAILED [store_contradicts_checkpoint]" in text.stdout and "FAILED (audit, fork)" in text.stdout


def test_repair_holds_a_copy_to_what_the_outside_quorum_cosigned(
    start_cluster: Callable[..., LocalCluster], outside: dict[str, TlogWitness]
) -> None:
    cluster, _ = _start(start_cluster, outside)
    honest, forked = outside["honest"], outside["forked"]
    forged_fork = _fork_note(cluster, forked)
    _create(cluster, VOTES, [honest], 1, 5)
    wait_cosigned(cluster, ["replica-1"], 6, VOTES)
    # replica-1 stops; the home writes on and the outside witness cosigns past what the cluster's did.
    assert cluster.stop_node("replica-1") == 0
    put(cluster, VOTES, 4, start=10)
    _witnessed(cluster, honest, VOTES, 10)

    done = repair(cluster, "replica-1", "--force", "--timeout", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    [votes] = [r for r in json.loads(done.stdout)["ledgers"] if r["ledger"] == VOTES]
    assert votes["size"] == 6  # the cluster's quorum checkpoint: what replica-1 cosigned
    assert votes["outside"] == {
        "quorum": 1,
        "size": 10,
        "root": votes["outside"]["root"],
        "witnesses": [honest.name],
    }, votes
    cluster.start_node("replica-1")

    # fork: the outside quorum cosigned another tree at 2 than the one the cluster's witness did.
    _create(cluster, FORK, [forked], 1, 4)
    _held(cluster, "replica-1", FORK)
    repl = ReplicationLedger(connect(cluster.cluster_redis_url))
    repl.client.hset(repl.outside_key(FORK), forked.name, forged_fork)
    assert cluster.stop_node("replica-1") == 0
    before = fingerprint(cluster, "replica-1")
    refused = repair(cluster, "replica-1", "--force", "--timeout", "4")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = json.loads(refused.stdout)["error"]["message"]
    assert "not proven consistent with the one 1 of its outside witnesses cosigned (size 2" in message, message
    assert forked.name in message
    assert fingerprint(cluster, "replica-1") == before
    assert [p for p in leftovers(cluster, "replica-1") if ".broken-" not in p.name] == []
