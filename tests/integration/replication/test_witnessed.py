"""The witnessed log on real processes and a real Redis: checkpoints, cosignatures, w=N by proof.

Issue 11's attacks, tried again: holder reports and cosignatures forged in Redis must not
make ``put -w N`` answer OK; witnesses that restart, lose their tail or fall behind cosign
only what their own store proves; and a home whose store tail was rewritten (fresh
checksums, work and links) refuses writes and is named in an alert, while the honest copies
stay as they were. Every cosignature the test counts it verifies itself, with the keys in
the cluster's key directory.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest

from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_verify_key, new_signing_key, signing_key_paths
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.errors import NoteError
from vledger.node.record import Content, Entry, decode_record
from vledger.node.storefile import DB_NAME
from vledger.node.witness import (
    CheckpointKeys,
    Cosigned,
    WitnessSigner,
    check_cosigned,
    home_key,
    witness_key,
    witness_name,
)
from vledger.tests.integration.cluster import (
    ADMIN,
    LIMITS,
    LocalCluster,
    entry,
    genesis,
    now_ms,
    remote_error,
    wait_until,
)

LEDGER = "votes"
CLUSTER = "test"  # LocalCluster's [cluster] name
WAIT = 30.0


def put(cluster: LocalCluster, count: int, **payload: Any) -> None:
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"n": n, **payload}, "writer1") for n in range(count)])


def repl(cluster: LocalCluster) -> ReplicationLedger:
    return ReplicationLedger(connect(cluster.cluster_redis_url))


def public(cluster: LocalCluster, name: str) -> bytes:
    return load_verify_key(signing_key_paths(cluster.directory / "keys", name)[1]).raw


def cosigned(cluster: LocalCluster, witness: str, ledger: str = LEDGER) -> Cosigned | None:
    """``witness``'s cosignature of ``ledger`` in Redis, checked with its key and the home's; None if none verifies."""
    note = repl(cluster).cosignatures(ledger).get(witness)
    if note is None:
        return None
    log_key = home_key(CLUSTER, ledger, public(cluster, "ingest-1"))
    try:
        key = witness_key(witness_name(CLUSTER, witness), public(cluster, witness))
        return check_cosigned(note, ledger, CLUSTER, log_key, key)
    except NoteError:
        return None


def size(cluster: LocalCluster, node: str = "ingest-1") -> int:
    return int(cluster.admin(node).call("size", {"ledger": LEDGER})["size"])


def wait_cosigned(
    cluster: LocalCluster, witnesses: list[str], at_least: int, ledger: str = LEDGER
) -> dict[str, Cosigned]:
    def found() -> dict[str, Cosigned] | None:
        got = {w: c for w in witnesses if (c := cosigned(cluster, w, ledger)) is not None and c.size >= at_least}
        return got if len(got) == len(witnesses) else None

    result: dict[str, Cosigned] = wait_until(found, WAIT, f"{witnesses} cosigned {ledger} at size >= {at_least}")
    return result


def home_root(cluster: LocalCluster, at: int) -> bytes:
    """The root of the home's tree at ``at``, from its latest checkpoint's note and the replicas' agreement."""
    keys = CheckpointKeys(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, public(cluster, "ingest-1")))
    note = cluster.admin().call("range", {"ledger": LEDGER, "start": at - 1, "limit": 1})["checkpoint"]
    checkpoint = keys.check(LEDGER, note)
    assert checkpoint.size == at
    return checkpoint.root


def alerts(cluster: LocalCluster) -> list[dict[str, str]]:
    return repl(cluster).alerts(1000)


# --- w=N counts cosignatures, nothing else ---------------------------------------------------------


def test_fake_holder_reports_and_fake_cosignatures_never_satisfy_w(start_cluster: Any) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=3, replication={"write_timeout_ms": 2000})
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    writer = cluster.client("writer1")
    answer = writer.call("put", {**_args(entry(LEDGER, "vote", {"w": 3}, "writer1")), "w": 3})
    assert answer["replicas"] == cluster.replica_names  # each one's cosignature verified by the home
    for name, found in wait_cosigned(cluster, cluster.replica_names, answer["height"] + 1).items():
        assert found.root == home_root(cluster, found.size), name
    old = repl(cluster).cosignatures(LEDGER)["replica-2"]  # a true cosignature, to replay later
    put(cluster, 5)
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    for name in cluster.replica_names:
        assert cluster.stop_node(name) == 0

    redis = connect(cluster.cluster_redis_url)
    ledger = repl(cluster)
    redis.publish("vledger:held", f"ghost-a {LEDGER} 99999999")  # the attack of issue 11
    redis.publish("vledger:held", f"ghost-b {LEDGER} 99999999")
    redis.mset({f"vledger:{{{LEDGER}}}:held:ghost-a": "99999999", f"vledger:{{{LEDGER}}}:held:replica-1": "99999999"})
    stranger = WitnessSigner(
        witness_name(CLUSTER, "ghost-c"), new_signing_key().seed
    )  # a key no one in the cluster knows
    latest = ledger.checkpoints()[LEDGER]
    keys = CheckpointKeys(CLUSTER, lambda name: home_key(CLUSTER, name, public(cluster, "ingest-1")))
    checkpoint = keys.check(LEDGER, latest)
    ledger.publish_cosignature(LEDGER, "ghost-c", 99_999_999, stranger.cosign(checkpoint, int(time.time())))
    wrong_key = WitnessSigner(witness_name(CLUSTER, "replica-1"), new_signing_key().seed)  # its name, another key
    ledger.publish_cosignature(LEDGER, "replica-1", 99_999_999, wrong_key.cosign(checkpoint, int(time.time())))
    ledger.publish_cosignature(LEDGER, "replica-2", 99_999_999, old)  # replayed: a smaller tree

    started = time.monotonic()
    error = remote_error(writer.call, "put", {**_args(entry(LEDGER, "vote", {"late": 1}, "writer1")), "w": 1})
    assert error.code == "replication_timeout"
    assert time.monotonic() - started >= 1.9
    # The note under replica-1's name that its key did not sign is reported, naming it; the
    # replayed one is a true cosignature of a smaller tree, and ghost-c is no witness here.
    bad = wait_until(
        lambda: [a for a in alerts(cluster) if a["what"] == "bad_cosignature"], WAIT, "a bad_cosignature alert"
    )
    assert {(a["node"], a["source"]) for a in bad} == {("ingest-1", "replica-1")}

    for name in cluster.replica_names:  # the true witnesses come back: w=3 is met again
        cluster.start_node(name)
    answer = writer.call("put", {**_args(entry(LEDGER, "vote", {"back": 1}, "writer1")), "w": 3})
    assert answer["replicas"] == cluster.replica_names


def _args(e: Entry) -> dict[str, Any]:
    return {"content": e.content_bytes, "nonce": e.nonce}


# --- witnesses cosign only what their store proves ---------------------------------------------------


def test_a_witness_that_restarts_falls_behind_or_loses_its_tail_cosigns_only_what_it_verified(
    start_cluster: Any,
) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, observers=1)
    witnesses = ["replica-1", "replica-2", "observer-1"]
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 20)
    first = wait_cosigned(cluster, witnesses, 21)  # observers are witnesses too

    # Behind: a stopped witness's cosignature stays where it was; the others move on.
    assert cluster.stop_node("replica-2") == 0
    put(cluster, 30, phase="behind")
    wait_cosigned(cluster, ["replica-1", "observer-1"], 51)
    assert cosigned(cluster, "replica-2") == first["replica-2"]
    # Restarted: it catches up from the stream and its sources, then cosigns the newest it verified.
    cluster.start_node("replica-2")
    again = wait_cosigned(cluster, ["replica-2"], 51)["replica-2"]
    assert again.root == home_root(cluster, again.size)

    # Truncated: its store loses every record from height 10 on (its tree is rebuilt at open).
    assert cluster.stop_node("replica-2") == 0
    _truncate(cluster, "replica-2", 10)
    cluster.start_node("replica-2")
    contradiction = wait_until(
        lambda: [a for a in alerts(cluster) if a["what"] == "cosigned_not_held"],
        WAIT,
        "replica-2 reports that its store no longer holds what it cosigned",
    )
    assert [(a["node"], a["ledger"]) for a in contradiction] == [("replica-2", LEDGER)]
    # It fills again from its sources, checked against checkpoints, and cosigns only what follows.
    put(cluster, 5, phase="after")
    newest = wait_cosigned(cluster, witnesses, size(cluster))
    assert {w: c.root for w, c in newest.items()} == {w: home_root(cluster, size(cluster)) for w in witnesses}
    assert cluster.sizes(LEDGER, witnesses) == {w: size(cluster) for w in witnesses}
    assert list(cluster.admin("replica-2").records(LEDGER)) == list(cluster.admin().records(LEDGER))


def _truncate(cluster: LocalCluster, node: str, keep: int) -> None:
    with sqlite3.connect(cluster.store_dir(node) / DB_NAME) as db:
        db.execute("DELETE FROM records WHERE ledger = ? AND height >= ?", (LEDGER, keep))
        db.execute("DELETE FROM tree")  # a copy restored from an older backup: its own tree, shorter
        db.execute("DELETE FROM meta WHERE key = 'tree'")


# --- the home-tail rewrite ---------------------------------------------------------------------------


def _rewrite_tail(cluster: LocalCluster, node: str, start: int, *, forget_checkpoints: bool = False) -> list[bytes]:
    """Re-make ``node``'s records from ``start`` on, consistently: other content, fresh checksums, work and
    links, each on the forged one before; the tree rebuilt at open. Returns the forged records' hashes."""
    path = cluster.store_dir(node) / DB_NAME
    forged: list[bytes] = []
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT height, data FROM records WHERE ledger = ? ORDER BY height", (LEDGER,)).fetchall()
        prev = decode_record(rows[start - 1][1], PROTOCOL_LIMITS)
        for height, data in rows[start:]:
            true = decode_record(data, PROTOCOL_LIMITS)
            content = Content(LEDGER, "vote", {"forged": height}, "writer1", f"forged-{height}", now_ms())
            record = Entry.prepare(content, 0, LIMITS).place(height, prev.link, true.accepted, true.origin)
            db.execute(
                "UPDATE records SET data = ?, hash = ?, author = ?, request_id = ? WHERE ledger = ? AND height = ?",
                (record.encode(), record.hash, "writer1", f"forged-{height}", LEDGER, height),
            )
            forged.append(record.hash)
            prev = record
        db.execute("DELETE FROM tree")
        db.execute("DELETE FROM meta WHERE key = 'tree'")
        if forget_checkpoints:  # the forger also removes what the home signed
            db.execute("DELETE FROM checkpoints")
    return forged


@pytest.mark.parametrize(
    ("forget_checkpoints", "wipe_redis"),
    [(False, False), (True, False), (True, True)],
    ids=["checkpoints-kept", "checkpoints-deleted-too", "redis-cosignatures-deleted-too"],
)
def test_a_home_whose_tail_was_rewritten_is_named_and_the_honest_copies_stay(
    start_cluster: Any, forget_checkpoints: bool, wipe_redis: bool
) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, replication={"heartbeat_ms": 200})
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 30)
    total = size(cluster)
    wait_cosigned(cluster, cluster.replica_names, total)
    honest = list(cluster.admin().records(LEDGER))
    assert cluster.stop_node("ingest-1") == 0
    forged = _rewrite_tail(cluster, "ingest-1", 20, forget_checkpoints=forget_checkpoints)
    if wipe_redis:  # the forger reaches Redis too: what the home signed and its witnesses cosigned, gone
        redis = connect(cluster.cluster_redis_url)
        redis.delete(f"vledger:{{{LEDGER}}}:checkpoint", *redis.keys(f"vledger:{{{LEDGER}}}:cosig:*"))

    cluster.start_node("ingest-1")  # the alerts below must come within 5 s of it answering
    # The home checks its tree against the last checkpoint it signed (kept in its store, else
    # cosigned in Redis, else held by the witnesses it asks at start: Redis wiped too, it once
    # signed the forged tree and only the witnesses' equivocation named it): it refuses writes,
    # and says so naming itself.
    alert = wait_until(
        lambda: next((a for a in alerts(cluster) if a["what"] == "store_contradicts_checkpoint"), None),
        5.0,
        "an alert naming the home",
    )
    assert (alert["node"], alert["source"], alert["ledger"]) == ("ingest-1", "ingest-1", LEDGER)
    error = remote_error(cluster.client("writer1").put, entry(LEDGER, "vote", {"after": 1}, "writer1"))
    assert error.code == "store_contradicts_checkpoint"
    assert not [a for a in alerts(cluster) if a["what"] == "equivocation"]  # it signed no forged tree

    # The honest copies hold what they held: no forged record got in, and they cosign nothing new.
    time.sleep(1.0)  # several heartbeats of the restarted home (200 ms) had their chance
    for name in cluster.replica_names:
        assert cluster.admin(name).call("have", {"hashes": forged})["have"] == []
        assert list(cluster.admin(name).records(LEDGER)) == honest
        kept = {size for size, _ in _cosigned_rows(cluster, name)} if wipe_redis else {0}
        found = cosigned(cluster, name)
        assert (found is not None and found.size == total) or (wipe_redis and max(kept) == total)


def test_a_replica_whose_tail_was_rewritten_names_itself_never_the_honest_home(start_cluster: Any) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, replication={"heartbeat_ms": 200})
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 30)
    total = size(cluster)
    wait_cosigned(cluster, cluster.replica_names, total)
    assert cluster.stop_node("replica-2") == 0
    _rewrite_tail(cluster, "replica-2", 20, forget_checkpoints=True)  # its cosignatures gone too
    cluster.start_node("replica-2")

    # The home's checkpoint of size `total` contradicts replica-2's copy, and nothing it keeps shows
    # the home signed another tree: it names itself, and takes nothing more of the ledger.
    alert = wait_until(
        lambda: next((a for a in alerts(cluster) if a["what"] == "store_contradicts_checkpoint"), None),
        WAIT,
        "replica-2 naming itself",
    )
    assert (alert["node"], alert["source"], alert["ledger"], alert["height"]) == (
        "replica-2",
        "replica-2",
        LEDGER,
        str(total - 1),
    )
    put(cluster, 5, after=1)  # the home's next records do not link on the rewritten head
    wait_cosigned(cluster, ["replica-1"], total + 5)
    time.sleep(1.0)  # several heartbeats (200 ms) and the new records had their chance
    blamed = [a for a in alerts(cluster) if a["node"] == "replica-2" and a["source"] != "replica-2"]
    assert blamed == [] and not any(a["what"] == "equivocation" for a in alerts(cluster))
    assert size(cluster, "replica-2") == total


def _cosigned_rows(cluster: LocalCluster, node: str) -> list[tuple[int, bytes]]:
    """What ``node`` kept as cosigned in its store (read-only, beside the running node)."""
    with sqlite3.connect(f"file:{cluster.store_dir(node) / DB_NAME}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT size, root FROM checkpoints WHERE kind = 'cosigned' AND ledger = ?", (LEDGER,)
        ).fetchall()


# --- the checkpoint key pinned in the genesis ---------------------------------------------------------


def test_a_genesis_pins_its_home_s_checkpoint_key_and_only_that_one(start_cluster: Any) -> None:
    cluster: LocalCluster = start_cluster(nodes=2, replicas=1)
    hello = cluster.admin("ingest-1").hello()
    assert (hello["cluster"], hello["checkpoint_key"]) == (CLUSTER, public(cluster, "ingest-1"))
    pinned = home_key(CLUSTER, LEDGER, public(cluster, "ingest-1")).encode()
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"], {"checkpoint_key": pinned}))
    put(cluster, 5)
    found = wait_cosigned(cluster, ["replica-1"], 6)["replica-1"]  # stored and cosigned under the pinned key
    assert found.root == home_root(cluster, 6)
    # Another node's key, or one named for another ledger, is refused by the home: it could never sign them.
    for key in (
        home_key(CLUSTER, LEDGER, public(cluster, "ingest-1")).encode(),  # named for another ledger
        home_key(CLUSTER, "other", public(cluster, "ingest-2")).encode(),  # another node's key
        "not a vkey",
    ):
        refused = remote_error(
            cluster.admin().create_ledger, genesis("other", ADMIN, ["vote"], {"checkpoint_key": key})
        )
        assert refused.code == "bad_genesis"
