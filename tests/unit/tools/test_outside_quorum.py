"""What a ledger's outside witnesses cosigned, from notes nothing vouches for (tools/outside_quorum.py)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any, cast

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.config.settings import Limits
from vledger.ingest.key_chains import HomeKeys, KeyChains
from vledger.node.errors import NodeUnavailableError, RemoteError
from vledger.node.key_rotation import ROTATION_KIND
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, ALG_ED25519, Checkpoint, SignerKey, cosign, parse_note
from vledger.node.outside import OutsideWitnesses
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.tree import Frontier, inclusion_proof, leaf_hash
from vledger.node.witness import HomeSigner, home_key
from vledger.tools.outside_quorum import (
    ANOTHER_ROOT,
    BEHIND,
    HOLDS,
    SILENT,
    OutsideReport,
    _check_copies,
    check_outside,
    forged_notes,
    signed,
    witnessed,
)

CLUSTER, LEDGER = "test", "votes"
ORIGIN = f"{CLUSTER}/{LEDGER}"
HOME = HomeSigner(CLUSTER, secrets.token_bytes(32))
LOG_KEY = home_key(CLUSTER, LEDGER, HOME.key(LEDGER).public_key)
W1 = SignerKey("witness.example/w1", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
W2 = SignerKey("witness.example/w2", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
OUTSIDE = OutsideWitnesses((W1.verifier(), W2.verifier()), 2)


def _cosigned(size: int, *witnesses: SignerKey, root: bytes | None = None) -> bytes:
    note = parse_note(HOME.sign(LEDGER, size, root or bytes([size]) * 32).note)
    lines = [cosign(note.text, w, 1_700_000_000 + size).note_signature() for w in witnesses]
    return note.with_signatures(*lines).encode()


def test_the_quorum_checkpoint_is_the_largest_a_quorum_cosigned_across_notes() -> None:
    # Each witness's note carries its own line: the quorum is met by gathering both.
    notes = [_cosigned(5, W1), _cosigned(5, W2), _cosigned(7, W1)]
    seen = witnessed(notes, [LOG_KEY], ORIGIN, OUTSIDE)
    assert seen.checkpoint is not None and seen.checkpoint.checkpoint.size == 5
    assert seen.checkpoint.witnesses == (W1.name, W2.name)
    assert [g.checkpoint.size for g in signed(notes, [LOG_KEY], ORIGIN)] == [7, 5]


def test_no_quorum_names_who_is_missing_and_a_forged_line_counts_for_nothing() -> None:
    genuine = _cosigned(5, W1)
    # W1's signature under W2's name: the home's hash holds it under W2, the key id is not W2's.
    relabelled = genuine.replace(W1.name.encode(), W2.name.encode())
    seen = witnessed([genuine, relabelled], [LOG_KEY], ORIGIN, OUTSIDE)
    assert seen.checkpoint is None
    assert seen.missing() == [W2.name]
    assert "no checkpoint cosigned by 2 of the 2 outside witnesses" in seen.shortfall(LEDGER)
    assert "at most 1, at size 5" in seen.shortfall(LEDGER) and W2.name in seen.shortfall(LEDGER)
    bad = forged_notes({W1.name: genuine, W2.name: relabelled, "someone/else": genuine}, OUTSIDE, ORIGIN)
    assert bad == ["someone/else (no witness the genesis lists)", f"{W2.name} (its cosignature does not verify)"]


def test_a_checkpoint_the_home_s_key_did_not_sign_is_no_quorum_checkpoint() -> None:
    other = HomeSigner(CLUSTER, secrets.token_bytes(32))
    note = parse_note(other.sign(LEDGER, 9, bytes(32)).note)
    lines = [cosign(note.text, w, 1_700_000_000).note_signature() for w in (W1, W2)]
    seen = witnessed([note.with_signatures(*lines).encode()], [LOG_KEY], ORIGIN, OUTSIDE)
    assert seen.checkpoint is None and seen.most is None and seen.missing() == [W1.name, W2.name]


class _Nodes:
    """Stands for ``Sources``: each node's records, answering ``get`` and ``proof.inclusion`` as
    a node does (a size past its records: bad_tree_size); a node with none does not answer."""

    def __init__(self, held: dict[str, list[bytes] | None]) -> None:
        self.held = held
        self.hellos: dict[str, dict[str, Any]] = {}  # what a probe heard: none here

    def call(self, node: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        records = self.held[node]
        if records is None:
            raise NodeUnavailableError(f"{node} did not answer")
        leaves = [leaf_hash(r) for r in records]

        def hash_at(level: int, index: int) -> bytes:
            return _subtree(leaves, level, index)

        if cmd == "checkpoint":
            return {}  # none of its own to give: Redis's are read first
        if cmd == "get":
            if args["height"] >= len(records):
                raise RemoteError("bad_request", "past the head", {})
            return {"record": records[args["height"]]}
        if args["size"] > len(records):
            raise RemoteError("bad_tree_size", "past the records", {})
        return {"proof": inclusion_proof(args["index"], args["size"], hash_at)}


def _subtree(leaves: list[bytes], level: int, index: int) -> bytes:
    """The hash of the complete subtree of ``2**level`` leaves from ``index * 2**level`` (RFC 6962)."""
    part = leaves[index << level : (index + 1) << level]
    while len(part) > 1:
        part = [hashlib.sha256(b"\x01" + part[i] + part[i + 1]).digest() for i in range(0, len(part), 2)]
    return part[0]


def _tree_root(records: list[bytes], size: int) -> bytes:
    frontier = Frontier()
    for data in records[:size]:
        frontier.append(leaf_hash(data))
    return frontier.root()


RECORDS = [b"record %d" % n for n in range(8)]
FORKED = [*RECORDS[:4], b"forged 4", b"forged 5"]


def _copies(held: dict[str, list[bytes] | None], size: int = 6) -> OutsideReport:
    report = OutsideReport(LEDGER, "ingest-1")
    checkpoint = Checkpoint(ORIGIN, size, _tree_root(RECORDS, size))
    _check_copies(report, cast(Any, _Nodes(held)), list(held), checkpoint)
    return report


def test_each_copy_is_held_to_the_outside_quorum_s_tree() -> None:
    report = _copies({"ingest-1": RECORDS, "replica-1": RECORDS[:5], "replica-2": FORKED, "replica-3": None})
    assert report.copies["ingest-1"] == HOLDS and report.copies["replica-1"] == BEHIND
    assert report.copies["replica-2"].startswith(ANOTHER_ROOT) and report.copies["replica-3"] == SILENT
    assert report.error is not None and report.error.code == "store_contradicts_checkpoint"
    assert "replica-2" in report.error.message and "replica-1" not in report.error.message
    # A home short of what its key signed fails; a follower behind or a home down does not.
    short = _copies({"ingest-1": RECORDS[:5], "replica-1": RECORDS})
    assert short.error is not None and "its home ingest-1 holds fewer records" in short.error.message
    down = _copies({"ingest-1": None, "replica-1": RECORDS, "replica-2": RECORDS[:3]})
    assert down.ok and down.warnings == [] and down.copies["replica-1"] == HOLDS
    nobody = _copies({"ingest-1": None, "replica-1": RECORDS[:3]})
    assert nobody.ok and "not compared" in nobody.warnings[0]


def test_a_rotated_ledger_s_checkpoints_are_found_along_the_chain_redis_s_stream_holds(
    tmp_path: Path, redis_server: RedisServer, redis_client: Any
) -> None:
    """o21 F3: after `vledger ledger rotate-key`, verify --cluster said "not checked: no checkpoint
    its home's key signed" of a ledger that lists no outside witness (its new key's file is on the
    home's host alone); the rotation record in the stream proves it, and the ledger is none of
    this check's (None)."""
    config_path = tmp_path / "cluster.toml"
    config_path.write_text(
        f'[cluster]\nname = "{CLUSTER}"\nredis = "{redis_server.url}"\ndefault_home = "ingest-1"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
        '[nodes.replica-1]\nrole = "replica"\nport = 7398\n'
    )
    config = load_cluster(config_path)
    config.keys_dir.mkdir(parents=True, exist_ok=True)
    generate_signing_key(config.keys_dir, "ingest-1")
    seed = load_signing_key(signing_key_paths(config.keys_dir, "ingest-1")[0]).seed
    pinned = SignerKey(ORIGIN, ALG_ED25519, seed).verifier()
    limits = Limits()
    with ChainStore(tmp_path / "home", origin="ingest-1", clock=lambda: 1_790_000_000_000) as store:
        rules = LedgerRules((ROTATION_KIND, "vote"), 0, {"checkpoint_key": pinned.encode()})
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, limits))
        keys = HomeKeys(CLUSTER, seed, KeyChains(store, lambda ledger: None), make_seed=lambda: bytes(range(32)))
        keys.rotate(LEDGER, "admin", store.append)
        store.append(Entry.prepare(Content(LEDGER, "vote", {"n": 1}, "admin", "r1", 2), 0, limits))
        size = store.size(LEDGER)
        note = keys.sign(LEDGER, size, store.root(LEDGER, size)).note
        records = [data for _, data in store.range_raw(LEDGER)]
    repl = ReplicationLedger(redis_client)
    redis_client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    redis_client.set(repl.checkpoint_key(LEDGER), note)
    sources = cast(Any, _Nodes({"ingest-1": records, "replica-1": records}))
    unproven = check_outside(config, repl, sources, LEDGER, "ingest-1")  # the stream holds nothing yet
    assert unproven is not None and unproven.warnings[0].startswith("not checked: no checkpoint its home's key")
    repl.append(LEDGER, "ingest-1", 0, records)
    assert check_outside(config, repl, sources, LEDGER, "ingest-1") is None
