"""verifier/node_keys.py: a copy of the admin ledger and notes nothing vouches for give the key
rotations only under the largest note the admin key signed that the copy reaches, and a copy
that is not the signed tree gives none (docs/PROTOCOL.md 16.6)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from vledger.broker.accounts import AccountRegistry
from vledger.broker.redis_server import connect, free_port
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import generate_signing_key, load_signing_key, load_verify_key, signing_key_paths
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.node import tree
from vledger.node.note import ALG_ED25519, Checkpoint, Note, SignerKey, parse_verifier_key, sign
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.node.witness import witness_key, witness_name
from vledger.verifier.node_keys import ProvenRotations, follow_copies, follow_copy, follow_redis, witness_histories_of
from vledger.verifier.process import WitnessKeys

VECTOR = json.loads((Path(__file__).parents[2] / "vectors" / "node_keys.json").read_text(encoding="utf-8"))
RECORDS = [base64.b64decode(r) for r in VECTOR["admin_records_b64"]]  # genesis, account, key_rotation
ADMIN = SignerKey("local/admin", ALG_ED25519, bytes(range(40, 72)))
OTHER = SignerKey("local/admin", ALG_ED25519, bytes(range(80, 112)))


def _note(records: list[bytes], signer: SignerKey = ADMIN) -> bytes:
    leaves = [tree.leaf_hash(r) for r in records]
    frontier = tree.Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    body = Checkpoint(signer.name, len(records), frontier.root()).body()
    return Note(body, (sign(body, signer),)).encode()


def test_the_largest_note_the_admin_key_signed_proves_the_rotation() -> None:
    notes = [_note(RECORDS[:2]), _note(RECORDS, OTHER), _note(RECORDS), b"not a note"]
    evidence, rotations = follow_copy(RECORDS, notes, ADMIN.verifier())
    assert evidence is not None and [r.index for r in evidence.rotations] == [2]
    assert [(r["node"], r["until"]) for r in rotations] == [("replica-1", VECTOR["until"])]
    witnesses = {"replica-1": parse_verifier_key(VECTOR["witnesses"][0])}
    history = witness_histories_of(witnesses, rotations)["replica-1"]
    assert history.newest.sign == parse_verifier_key(VECTOR["rotated_witness_key"]).public_key.hex()
    # Below the rotation, or only notes of another key: nothing is proven.
    assert follow_copy(RECORDS, [_note(RECORDS[:2])], ADMIN.verifier()) == (None, ())
    assert follow_copy(RECORDS, [_note(RECORDS, OTHER)], ADMIN.verifier()) == (None, ())
    # Of other nodes only.
    assert follow_copy(RECORDS, [_note(RECORDS)], ADMIN.verifier(), {"observer-1"}) == (None, ())


def test_a_note_past_the_copy_or_a_copy_that_is_not_the_signed_tree_proves_nothing() -> None:
    assert follow_copy(RECORDS[:2], [_note(RECORDS)], ADMIN.verifier()) == (None, ())
    changed = next(c for c in VECTOR["cases"] if c["code"] == "bad_proof")  # another until, same height
    record = base64.b64decode(json.loads(changed["receipt"])["node_keys"]["rotations"][0]["record"])
    assert record != RECORDS[2]
    assert follow_copy([*RECORDS[:2], record], [_note(RECORDS)], ADMIN.verifier()) == (None, ())


def _cluster(tmp_path: Path) -> ClusterConfig:
    """A cluster "local" of ingest-1 (the admin home), replica-1 and observer-1, with key files."""
    keys = tmp_path / "keys"
    for name in ("ingest-1", "replica-1", "observer-1"):
        generate_signing_key(keys, name)
    return cluster_from_mapping(
        {
            "cluster": {"name": "local", "keys": str(keys), "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 1, "pub_port": 2},
                "replica-1": {"role": "replica", "port": 3},
                "observer-1": {"role": "observer", "port": 4},
            },
        },
        tmp_path / "cluster.toml",
    )


def test_the_verifier_s_witness_keys_are_the_key_files_and_redis_proves_no_other(tmp_path: Path) -> None:
    """verifier/process.py WitnessKeys: what a note the standby's key signed must be cosigned by
    (PROTOCOL 10.9): each replica's and observer's key file, not the home's; with no Redis to
    prove a rotation, no other key joins them and nothing is raised."""
    config = _cluster(tmp_path)
    keys = config.keys_dir
    expected = {
        witness_key(witness_name("local", name), load_verify_key(signing_key_paths(keys, name)[1]).raw)
        for name in ("replica-1", "observer-1")
    }
    now = [0.0]
    client = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)  # no Redis there
    try:
        found = WitnessKeys(config, client, clock=lambda: now[0])
        assert set(found()) == expected
        now[0] += 61  # read again: still none
        assert set(found()) == expected
    finally:
        client.close()


def test_the_verifier_s_witness_keys_keep_a_rotation_once_proven_when_redis_s_admin_checkpoint_is_set_back(
    tmp_path: Path, redis_client: Any
) -> None:
    """wk28 (outsider o8 J5's other reader): replica-1's key rotated (past its window, so only its
    new key cosigns), then an older, genuinely signed checkpoint of the admin ledger from before
    the rotation was set in Redis with the copy cut to it. WitnessKeys took that shorter view and
    dropped the new key: a standby's note cosigned by the honest, rotated replica-1 lacked its
    cosignature (PROTOCOL 10.9). A key view proven once never goes back."""
    config = _cluster(tmp_path)
    seed = load_signing_key(signing_key_paths(config.keys_dir, "ingest-1")[0]).seed
    admin = SignerKey("local/admin", ALG_ED25519, seed)  # the admin home's key signs the admin checkpoints
    registry, replication = AccountRegistry(redis_client), ReplicationLedger(redis_client)
    registry.push_admin_records(0, RECORDS)  # genesis, account, replica-1's key_rotation
    redis_client.set(replication.checkpoint_key(ADMIN_LEDGER), _note(RECORDS, admin))
    rotated = parse_verifier_key(VECTOR["rotated_witness_key"])
    now = [0.0]
    found = WitnessKeys(config, redis_client, clock=lambda: now[0])
    assert rotated in found()  # the rotation is proven
    registry.rewrite_admin_records(RECORDS[:2])  # set back to before the rotation
    redis_client.set(replication.checkpoint_key(ADMIN_LEDGER), _note(RECORDS[:2], admin))
    for _ in range(2):
        now[0] += 61  # read again from the set-back copy
        assert rotated in found()
    # A verifier started now has never proven the rotation: the set-back copy is all it has.
    assert rotated not in WitnessKeys(config, redis_client, clock=lambda: now[0])()


def test_the_copy_a_note_proves_the_most_records_of_gives_the_rotations() -> None:
    """follow_copies: a copy proven shorter (set back) never drops what a longer proven one shows,
    whichever comes first; a copy no note proves counts for nothing."""
    notes = [_note(RECORDS[:2]), _note(RECORDS)]
    for copies in ([RECORDS[:2], RECORDS], [RECORDS, RECORDS[:2]], [[b"junk"] * 5, RECORDS]):
        _, rotations = follow_copies(copies, notes, ADMIN.verifier())
        assert [r["node"] for r in rotations] == ["replica-1"], copies
    assert follow_copies([RECORDS[:2]], notes, ADMIN.verifier()) == (None, ())


def test_commands_prove_a_rotation_from_the_admin_stream_and_a_witness_s_note_when_the_cache_is_set_back(
    tmp_path: Path, redis_client: Any
) -> None:
    """outsider o9 J5: an insider set an older, genuine admin checkpoint back in Redis and cut the
    accounts' copy to it; `vledger tally` (follow_redis) then checked a rotated observer's honest
    tallies by its replaced key. The admin ledger's stream and a witness's cosigned checkpoint
    still prove the rotation: the view that proves the most records is taken."""
    config = _cluster(tmp_path)
    seed = load_signing_key(signing_key_paths(config.keys_dir, "ingest-1")[0]).seed
    admin = SignerKey("local/admin", ALG_ED25519, seed)
    registry, replication = AccountRegistry(redis_client), ReplicationLedger(redis_client)
    replication.append(ADMIN_LEDGER, "ingest-1", 0, RECORDS)
    replication.publish_cosignature(ADMIN_LEDGER, "replica-1", len(RECORDS), _note(RECORDS, admin))
    registry.push_admin_records(0, RECORDS[:2])  # the cache and the home's checkpoint set back
    redis_client.set(replication.checkpoint_key(ADMIN_LEDGER), _note(RECORDS[:2], admin))
    assert [r["node"] for r in follow_redis(config, redis_client)] == ["replica-1"]
    # Without the witness's note nothing proves past the set-back checkpoint.
    redis_client.delete(replication.cosig_key(ADMIN_LEDGER, "replica-1"))
    assert follow_redis(config, redis_client) == ()


def test_a_set_back_list_as_long_as_the_proven_one_is_not_taken() -> None:
    """A copy's evidence holds the last MAX_NODE_ROTATIONS rotations: past that, the list an older
    admin checkpoint proves is as long as the one proven before, and ProvenRotations compared
    their lengths only. It keeps the proven list while the newest proven rotation is missing,
    and follows the honest ledger's growth (the oldest dropped, newer ones added)."""
    every = [{"node": f"replica-{n % 3}", "accepted": 1000 + n} for n in range(40)]
    shown = [every[1:33]]
    proven = ProvenRotations(lambda: shown[0])
    assert proven() == tuple(every[1:33])
    shown[0] = every[0:32]  # set back by one record: as many rotations, the newest gone
    assert proven() == tuple(every[1:33])
    shown[0] = every[8:40]  # grown
    assert proven() == tuple(every[8:40])
