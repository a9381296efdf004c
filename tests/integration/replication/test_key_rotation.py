"""Checkpoint key rotation on real processes and a real Redis (docs/PROTOCOL.md 13.8).

An admin rotates a running ledger's checkpoint key with ``vledger ledger rotate-key``: the
home writes the new key file (0600) beside its node key and appends the rotation record
signed by the old key; the witnesses keep cosigning, now checkpoints of the new key; a
receipt of a record past the rotation verifies offline from the genesis alone, after the
cluster stopped; the restarted home still signs with the new key (derived from its chain);
and a checkpoint the retired key signs for a size past the rotation is refused by the
witnesses, kept as evidence and named in an alert.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths
from vledger.broker.tallies import TallyBoard
from vledger.client import Client
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.errors import NoteError, RemoteError
from vledger.node.note import ALG_ED25519, Checkpoint, Note, SignerKey, VerifierKey, parse_verifier_key, sign
from vledger.node.record import decode_record
from vledger.node.store import ChainStore
from vledger.node.tally_body import Snapshot
from vledger.node.witness import Cosigned, check_cosigned, witness_key, witness_name
from vledger.tests.integration.cluster import LocalCluster, entry, wait_until

LEDGER = "keyed"
CLUSTER = "test"  # LocalCluster's [cluster] name
ORIGIN = f"{CLUSTER}/{LEDGER}"
WAIT = 30.0


def _repl(cluster: LocalCluster) -> ReplicationLedger:
    return ReplicationLedger(connect(cluster.cluster_redis_url))


def _put(cluster: LocalCluster, count: int) -> int:
    """``count`` records by writer1; the ledger's size afterwards."""
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"n": n}, "writer1") for n in range(count)])
    return int(cluster.admin().call("size", {"ledger": LEDGER})["size"])


def _cosigned_by(cluster: LocalCluster, witness: str, log_key: VerifierKey) -> Cosigned | None:
    note = _repl(cluster).cosignatures(LEDGER).get(witness)
    if note is None:
        return None
    key = witness_key(witness_name(CLUSTER, witness), load_verify_key(_keys(cluster) / f"{witness}.sign.pub").raw)
    try:
        return check_cosigned(note, LEDGER, CLUSTER, log_key, key)
    except NoteError:
        return None


def _wait_cosigned(
    cluster: LocalCluster, log_key: VerifierKey, at_least: int, names: list[str] | None = None
) -> dict[str, Cosigned]:
    """Each replica's (of ``names``, default all) cosignature, verified with ``log_key``, of a
    checkpoint of size >= ``at_least``."""
    wanted = names or cluster.replica_names

    def found() -> dict[str, Cosigned] | None:
        got = {w: c for w in wanted if (c := _cosigned_by(cluster, w, log_key)) and c.size >= at_least}
        return got if len(got) == len(wanted) else None

    result: dict[str, Cosigned] = wait_until(found, WAIT, f"cosignatures of {LEDGER} >= {at_least} by {log_key}")
    return result


def _keys(cluster: LocalCluster) -> Path:
    return cluster.directory / "keys"


def test_a_key_rotated_on_a_running_cluster(start_cluster: Any, tmp_path: Path) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, replication={"heartbeat_ms": 200})
    common = ["--config", str(cluster.config_path), "--key", str(_keys(cluster) / "admin.key_secret")]
    cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
    genesis = cluster.admin().call("get", {"ledger": LEDGER, "height": 0})["record"]
    old_seed = load_signing_key(signing_key_paths(_keys(cluster), "ingest-1")[0]).seed
    old = SignerKey(ORIGIN, ALG_ED25519, old_seed)
    size = _put(cluster, 3)
    _wait_cosigned(cluster, old.verifier(), size)
    # replica-2 loses its copy and is away during the rotation: it comes back through it from scratch.
    assert cluster.stop_node("replica-2") == 0
    shutil.rmtree(cluster.store_dir("replica-2"))

    done = cluster.cli("ledger", "rotate-key", LEDGER, "--json", *common)
    rotated = json.loads(done.stdout)
    height = rotated["height"]
    new = parse_verifier_key(rotated["checkpoint_key"])
    assert height == size and new.name == ORIGIN and new.public_key != old.verifier().public_key
    files = sorted(_keys(cluster).glob("ingest-1.ckpt-*.sign"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert load_signing_key(files[0]).public.raw == new.public_key

    # The witnesses keep cosigning: checkpoints past the rotation, of the new key; the one that
    # starts empty after the rotation follows the chain from the genesis it fetches.
    size = _put(cluster, 4)
    _wait_cosigned(cluster, new, size, ["replica-1"])
    cluster.start_node("replica-2")
    found = _wait_cosigned(cluster, new, size)
    assert all(c.size > height for c in found.values())
    assert [a for a in _repl(cluster).alerts(1000) if a["node"] == "replica-2"] == []
    # o21 F3: an operator's key directory lacks the new key's public file (it is written on the
    # home's host alone); repl status checks the checkpoints along the stream's rotation record.
    for public in _keys(cluster).glob("ingest-1.ckpt-*.sign.pub"):
        public.unlink()
    shown = json.loads(cluster.cli("repl", "status", "--config", str(cluster.config_path), "--json").stdout)
    (keyed,) = [entry for entry in shown["ledgers"] if entry["ledger"] == LEDGER]
    assert keyed["checkpoint"] is not None and keyed["checkpoint"] > height, keyed

    # A receipt of a record past the rotation (with 2 cosignatures), then the home restarted:
    # which key is in force comes from its chain, and it signs with the new key again.
    receipt = tmp_path / "vote.receipt"
    cluster.cli("receipt", "get", LEDGER, str(height + 2), "--quorum", "2", "-o", str(receipt), *common)
    assert b'"rotations":[{"index":' + str(height).encode() in receipt.read_bytes()
    assert cluster.restart_node("ingest-1") == 0
    size = _put(cluster, 2)
    _wait_cosigned(cluster, new, size)

    # The retired key signs a checkpoint of the true tree past its rotation: the witnesses refuse
    # it, keep it as evidence and name the home.
    true_note = cluster.admin().call("checkpoint", {"ledger": LEDGER})["checkpoint"]
    body = true_note.decode("utf-8").split("\n\n")[0] + "\n"  # the new key's checkpoint body, past the rotation
    forged = Note(body, (sign(body, old),)).encode()
    ledger = _repl(cluster)

    def retired_alert() -> dict[str, str] | None:
        ledger.set_checkpoints({LEDGER: forged})  # the home rewrites the hash as it signs: put it back
        return next((a for a in ledger.alerts(1000) if a["what"] == "retired_key"), None)

    alert = wait_until(retired_alert, WAIT, "a retired_key alert")
    assert alert["source"] == "ingest-1" and alert["node"] in cluster.replica_names and alert["ledger"] == LEDGER
    assert any(LEDGER in key for key in ledger.evidence())

    # Offline, with the cluster stopped: the genesis alone verifies the receipt through the rotation.
    genesis_file = tmp_path / "genesis.bin"
    genesis_file.write_bytes(genesis)
    for name in [*cluster.replica_names, "ingest-1"]:
        assert cluster.stop_node(name) == 0
    witness_args = [
        arg
        for w in cluster.replica_names
        for arg in (
            "--witness",
            witness_key(witness_name(CLUSTER, w), load_verify_key(_keys(cluster) / f"{w}.sign.pub").raw).encode(),
        )
    ]
    checked = cluster.cli(
        "receipt", "verify", str(receipt), "--genesis", str(genesis_file), *witness_args, "--quorum", "2"
    )
    assert checked.stdout.startswith("valid: "), checked.stdout


def test_a_star_grant_of_the_ledger_s_data_does_not_stop_its_key_rotation(start_cluster: Any) -> None:
    """Outsider 32 R3: after `grant add L '*' writer1`, `vledger ledger rotate-key L` (the remedy
    for a stolen home key) was refused not_granted 'checkpoint_key' and left a stray key file.
    A grant governs the ledger's data, not the admin's acts on its machinery."""
    cluster: LocalCluster = start_cluster(nodes=1, replicas=1)
    common = ["--config", str(cluster.config_path), "--key", str(_keys(cluster) / "admin.key_secret")]
    cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
    cluster.cli("grant", "add", LEDGER, "*", "writer1", *common)
    size = _put(cluster, 2)
    rotated = json.loads(cluster.cli("ledger", "rotate-key", LEDGER, "--json", *common).stdout)
    assert rotated["height"] == size
    (made,) = sorted(_keys(cluster).glob("ingest-1.ckpt-*.sign"))
    assert load_signing_key(made).public.raw == parse_verifier_key(rotated["checkpoint_key"]).public_key


def test_an_observer_counts_an_admin_s_rotation_and_flags_nothing(start_cluster: Any) -> None:
    """ho32: observers judge who wrote a ``checkpoint_key`` record (PROTOCOL 16.7), by the admin
    ledger they hold: the one the home placed for the admin's `ledger rotate-key` is no
    ``not_admin_author``; the observer signs the ledger's tally past it with nothing flagged."""
    cluster: LocalCluster = start_cluster(nodes=1, replicas=1, observers=1)
    common = ["--config", str(cluster.config_path), "--key", str(_keys(cluster) / "admin.key_secret")]
    cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
    _put(cluster, 2)
    height = json.loads(cluster.cli("ledger", "rotate-key", LEDGER, "--json", *common).stdout)["height"]
    size = _put(cluster, 2)
    board = TallyBoard(connect(cluster.cluster_redis_url))

    def counted() -> Snapshot | None:
        published = board.latest(LEDGER, ["observer-1"])["observer-1"]
        snapshot = Snapshot.decode(published.body) if published is not None else None
        return snapshot if snapshot is not None and snapshot.height == size - 1 else None

    tally = wait_until(counted, WAIT, "observer-1's tally of the ledger past the rotation").tally
    assert height < size - 1 and tally["flagged"] == 0 and tally["records"] == size, tally
    assert not [key for key in _repl(cluster).open_alerts() if key.endswith("|not_admin_author")]


def _fork_past(honest: list[bytes], at: int, count: int, old: SignerKey, directory: Path) -> tuple[list[bytes], bytes]:
    """What a home put back from a copy older than its rotation writes (outsider o13 F1): the
    honest records below ``at``, then ``count`` others; their bytes and a checkpoint of the fork
    signed by the old key, which a chain without the rotation verifies."""
    with ChainStore(directory, origin="ingest-1") as fork:
        fork.append_records([decode_record(data, PROTOCOL_LIMITS) for data in honest[:at]])
        for n in range(count):
            fork.append(entry(LEDGER, "vote", {"n": f"fork-{n}"}, "writer1"))
        body = Checkpoint(ORIGIN, fork.size(LEDGER), fork.root(LEDGER)).body()
        return [r.encode() for r in fork.range(LEDGER, at)], Note(body, (sign(body, old),)).encode()


def test_a_replica_put_back_before_a_rotation_never_stores_the_old_key_s_fork_and_catches_up(
    start_cluster: Any, tmp_path: Path
) -> None:
    """Outsider o13 F2 (PROTOCOL 10.7): replica-2 put back from a copy older than `rotate-key`
    read from Redis a fork its home (put back from an older copy too) had signed with the OLD key
    past the rotation; its key chain verified it: it stored the fork, cosigned it, and stuck.
    Now the witnesses' notes by the new key, which its chain cannot check, hold it back: it
    stores nothing of the fork, and once the home answers again it takes the true chain."""
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, replication={"heartbeat_ms": 200})
    common = ["--config", str(cluster.config_path), "--key", str(_keys(cluster) / "admin.key_secret")]
    cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
    old = SignerKey(ORIGIN, ALG_ED25519, load_signing_key(signing_key_paths(_keys(cluster), "ingest-1")[0]).seed)
    before = _put(cluster, 3)
    _wait_cosigned(cluster, old.verifier(), before)
    assert cluster.stop_node("replica-2") == 0
    copy = tmp_path / "replica-2-copy"
    shutil.copytree(cluster.store_dir("replica-2"), copy, symlinks=True)
    cluster.start_node("replica-2")

    rotated = json.loads(cluster.cli("ledger", "rotate-key", LEDGER, "--json", *common).stdout)
    assert rotated["height"] == before
    total = _put(cluster, 4)
    _wait_cosigned(cluster, parse_verifier_key(rotated["checkpoint_key"]), total)  # both witnesses' notes
    honest = list(cluster.admin().records(LEDGER))

    # The home down, replica-2 put back; Redis's stream and latest checkpoint are the fork's.
    assert cluster.stop_node("ingest-1") == 0
    assert cluster.stop_node("replica-2") == 0
    shutil.rmtree(cluster.store_dir("replica-2"))
    shutil.copytree(copy, cluster.store_dir("replica-2"), symlinks=True)
    forked, fork_note = _fork_past(honest, before, 3, old, tmp_path / "fork")
    ledger = _repl(cluster)
    ledger.rewind(LEDGER, before)
    ledger.append_checked(LEDGER, "ingest-1", before, forked, fork_note)

    started = cluster.log_text("replica-2").count("replica-2: caught up:")
    cluster.start_node("replica-2")
    wait_until(
        lambda: cluster.log_text("replica-2").count("replica-2: caught up:") > started, WAIT, "replica-2's catch-up"
    )
    replica = cluster.admin("replica-2")
    assert int(replica.call("size", {"ledger": LEDGER})["size"]) == before  # the fork waits, unstored

    cluster.start_node("ingest-1")
    wait_until(
        lambda: int(replica.call("size", {"ledger": LEDGER})["size"]) >= total, WAIT, "replica-2 holds the true chain"
    )
    assert list(replica.records(LEDGER))[: len(honest)] == honest
    _wait_cosigned(cluster, parse_verifier_key(rotated["checkpoint_key"]), total, ["replica-2"])  # it witnesses again


def test_a_home_without_the_rotated_key_in_force_refuses_the_ledger_s_writes(start_cluster: Any) -> None:
    """Outsider o21 F2: the rotated key file exists on the home's host alone; a key folder put
    back from an older copy (or a `--bundles` folder) lost it, and the restarted home
    acknowledged w=0 writes it could never sign a checkpoint of (a NoteKeyError traceback each
    heartbeat, no record reached any copy, and the alerts blamed the replicas as lagging). It
    refuses that ledger's writes, saying which key file it lacks, raises an alert naming itself,
    and takes writes again (the alert resolved) once the file is back."""
    cluster: LocalCluster = start_cluster(nodes=1, replicas=1, replication={"heartbeat_ms": 200})
    common = ["--config", str(cluster.config_path), "--key", str(_keys(cluster) / "admin.key_secret")]
    cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
    _put(cluster, 2)
    rotated = cluster.cli("ledger", "rotate-key", LEDGER, *common)
    size = _put(cluster, 2)
    assert cluster.stop_node("ingest-1") == 0
    aside = cluster.directory / "aside"
    aside.mkdir()
    moved = sorted(_keys(cluster).glob("ingest-1.ckpt-*"))
    assert len(moved) == 2  # the .sign and its .sign.pub
    # The admin was told where that file is, and to keep it (the bundles do not have it otherwise).
    assert f"*{moved[0].name.removeprefix('ingest-1').removesuffix('.pub')} (and its .sign.pub)" in rotated.stderr
    for path in moved:
        path.rename(aside / path.name)
    cluster.start_node("ingest-1")

    with pytest.raises(RemoteError) as refused:
        _put(cluster, 1)
    assert refused.value.code == "no_checkpoint_key"
    assert (
        "ingest-1.ckpt-" in refused.value.message
        and int(cluster.admin().call("size", {"ledger": LEDGER})["size"]) == size
    )
    key = f"ingest-1|{LEDGER}|no_checkpoint_key"
    alert = wait_until(lambda: _repl(cluster).open_alerts().get(key), WAIT, "the home's alert naming itself")
    assert alert.get("raised_by") == "ingest-1"

    assert cluster.stop_node("ingest-1") == 0
    for path in moved:
        (aside / path.name).rename(path)
    cluster.start_node("ingest-1")
    assert _put(cluster, 1) == size + 1
    wait_until(lambda: key not in _repl(cluster).open_alerts(), WAIT, "the alert resolved")


def test_the_http_client_follows_a_rotated_key_through_a_gateway(start_cluster: Any) -> None:
    """Outsider o20 F2: after `vledger ledger rotate-key`, Client.http (with the genesis) raised
    UnverifiedNoteError on every read of the ledger: it dropped the rotations the gateway's
    checkpoint answer carries, where `receipt verify` and the pages follow the key chain (13.8)."""
    cluster: LocalCluster = start_cluster(nodes=1, replicas=1, gateways=["ingest-1"])
    common = ["--config", str(cluster.config_path), "--key", str(_keys(cluster) / "admin.key_secret")]
    cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
    genesis = cluster.admin().call("get", {"ledger": LEDGER, "height": 0})["record"]
    _put(cluster, 2)
    new = parse_verifier_key(
        json.loads(cluster.cli("ledger", "rotate-key", LEDGER, "--json", *common).stdout)["checkpoint_key"]
    )
    size = _put(cluster, 2)
    _wait_cosigned(cluster, new, size)
    witness = witness_key(
        witness_name(CLUSTER, "replica-1"), load_verify_key(_keys(cluster) / "replica-1.sign.pub").raw
    )
    gateway = cluster.gateway_url("ingest-1")

    def read() -> int:
        with Client.http(gateway, genesis={LEDGER: genesis}, witnesses=[witness], quorum=1) as client:
            verified = client.checkpoint(LEDGER)
            assert client.record(LEDGER, size - 1).record.ledger == LEDGER
            return verified.checkpoint.size

    assert wait_until(lambda: read() == size, WAIT, "the gateway serves the new key's checkpoint")
