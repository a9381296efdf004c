"""``vledger receipt get|verify|keys``: a record's receipt fetched from a node, checked offline,
and the keys to check it with.

``get`` asks a node for the record, a checkpoint that covers it with the cosignatures asked
for (waiting for one until ``--wait``), and the inclusion proof; the session verifies all of
it before it writes the receipt file (docs/PROTOCOL.md section 14). ``verify`` needs no
cluster: the file, and the ledger's genesis record (its pinned checkpoint key) or the key
given with ``--key``; witness keys and a quorum when the cosignatures must count, and with
``--admin-key`` (the admin ledger's checkpoint key) their rotated keys the receipt proves, and
those ``--node-keys`` proves whatever the receipt carries (16.6). ``keys`` prints those options
from a cluster's key directory (each witness's generation 0, and the admin home's key, as
vkeys: the files hold PEM) and a store's admin ledger (the witnesses' rotations, proven).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..broker.keys import newest_generation
from ..broker.signing import PUBLIC_SUFFIX, admin_checkpoint_key, newest_witness_keys, witness_keys
from ..client.anchors_file import read_anchors
from ..client.session import Session
from ..config.cluster import ClusterConfig, load_cluster
from ..config.settings import PROTOCOL_LIMITS
from ..node.anchors import Anchors
from ..node.errors import BadGenesisError, ReceiptError, RecordError, UsageError
from ..node.node_keys import ROTATION_RECORD_KIND, NodeKeys, encode_node_keys, node_keys_of
from ..node.note import Checkpoint, VerifierKey, parse_checkpoint, parse_note, witness_groups
from ..node.receipt import ReceiptKeys, VerifiedReceipt, keys_from_genesis, parse_receipt, verify_receipt
from ..node.record import decode_record
from ..node.rules.admin import ADMIN_LEDGER
from ..node.storefile import StoreReader
from ..verifier.node_keys import follow_copy
from .args import config_file
from .client_output import print_json
from .paths import is_store, output_file
from .voter_receipts import VoterReceipts, check_voter_record, parse_voter_receipts

EXIT_OK, EXIT_REFUSED = 0, 1
MAX_FILE_BYTES = 1024 * 1024  # a receipt or genesis file is far smaller: refuse before reading more


def _read(path: Path) -> bytes:
    # A path that names no file is a usage error (exit 2), as `vledger verify`'s is: not the
    # generic OSError's exit 1 with code "error".
    if not path.is_file():
        raise UsageError(f"{path}: {'a directory, not a file' if path.is_dir() else 'no such file'}")
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{path}: over {MAX_FILE_BYTES} bytes, not a receipt or a genesis record")
    return data


def cmd_receipt_get(session: Session, args: argparse.Namespace) -> int:
    if (args.hash is None) == (args.height is None):
        raise UsageError("give HEIGHT or --hash HEX")
    if args.output is not None:
        output_file(args.output)
    index = args.height if args.hash is None else session.record_by_hash(args.hash).height
    keys = session.checkpoint_keys(args.ledger, args.quorum)
    receipt = session.receipt(args.ledger, index, keys, time.monotonic() + args.wait)
    data = receipt.encode()
    if args.output is None:
        sys.stdout.write(data.decode("utf-8"))  # the receipt file: one JSON object already
        return EXIT_OK
    args.output.write_bytes(data)
    if args.json:  # one object on stdout, as every --json command prints (outsider o12: none)
        checkpoint = parse_checkpoint(parse_note(receipt.checkpoint).text)
        print_json(
            {
                "ledger": receipt.ledger,
                "height": receipt.index,
                "hash": receipt.hash.hex(),
                "file": str(args.output),
                "checkpoint": _checkpoint_json(checkpoint),
            }
        )
    else:
        print(f"receipt of {args.ledger} height {index} written to {args.output}", file=sys.stderr)
    return EXIT_OK


def _genesis_bytes(data: bytes) -> bytes:
    """A genesis file holds the record's bytes (2.4), or is the receipt of height 0."""
    try:
        return parse_receipt(data).record
    except Exception:
        return data


class _Trust(NamedTuple):
    """What ``receipt verify``'s options make of the keys a ledger's receipts are checked with."""

    keys: ReceiptKeys
    genesis_link: bytes | None  # the link of the --genesis given, else None
    anchored: bool
    quorum: int


def _trust(args: argparse.Namespace, ledger: str) -> _Trust:
    witnesses = tuple(args.witness or ())
    anchors = None if args.anchors is None else read_anchors(args.anchors)
    admin_key = args.admin_key
    if anchors is not None:
        if args.genesis is None:
            raise UsageError("--anchors checks the ledger's genesis: give it with --genesis FILE (not --key)")
        witnesses += tuple(key for key in anchors.witnesses.values() if key not in witnesses)
        if admin_key is not None and anchors.admin is not None:
            raise UsageError("given both in the trust anchors and as an argument: the admin key")
        admin_key = admin_key or anchors.admin
    groups = len(set(witness_groups(witnesses).values()))
    # Without a quorum, anchors ask a majority of their witnesses, as the pages do (15.5): a
    # checkpoint the home's key alone signed would show its fork of the ledger as valid.
    quorum = args.quorum if args.quorum is not None else (groups // 2 + 1 if anchors and groups else 0)
    # Names that share a public key are one witness (PROTOCOL 13.4): they count once.
    if quorum > groups:
        raise UsageError(f"--quorum {quorum} needs as many --witness keys, each of its own public key")
    genesis_link: bytes | None = None
    if args.genesis is not None:
        if args.key:
            raise UsageError("give --genesis or --key, not both")
        genesis = _genesis_bytes(_read(args.genesis))
        try:
            keys = keys_from_genesis(genesis, ledger, witnesses, quorum, admin_key)
        except RecordError as e:  # name the file: a gateway's 404 answer saved read only "trailing bytes..."
            e.message = f"--genesis {args.genesis}: {e.message}"
            raise
        genesis_link = decode_record(genesis, PROTOCOL_LIMITS).link
        if anchors is not None:
            _check_anchored(anchors, ledger, genesis_link, args)
    elif args.key:
        keys = ReceiptKeys(args.key, witnesses, quorum)
    else:
        raise UsageError("give the ledger's --genesis FILE or its checkpoint --key VKEY")
    if args.node_keys is not None and admin_key is None:
        raise UsageError("--node-keys needs --admin-key: its rotations are proven under the admin ledger's checkpoint")
    if admin_key is not None:
        keys = replace(keys, admin_key=admin_key, node_keys=args.node_keys)
    return _Trust(keys, genesis_link, anchors is not None, quorum)


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    data = _read(args.file)
    voter = parse_voter_receipts(data)
    if voter is not None:
        return _verify_voter(voter, _trust(args, voter.ledger), as_json=args.json)
    receipt = parse_receipt(data)
    trust = _trust(args, receipt.ledger)
    verified = verify_receipt(receipt, trust.keys)
    if args.json:
        print_json({"ok": True, **_verified_json(verified), **_trust_json(trust)})
        return EXIT_OK
    print(f"valid: {_stands(verified, trust)}{_cosigned(verified, trust)}")
    return EXIT_OK


def _verify_voter(voter: VoterReceipts, trust: _Trust, *, as_json: bool) -> int:
    """Verify each receipt of a voter's set (15.2), each a record of the voter: refused at the first
    that fails; the records listed without one are named pending, never counted as proven."""
    if not voter.receipts:
        raise ReceiptError(
            f"voters answer: no record of {voter.electronic_id} has a receipt yet (no checkpoint the gateway "
            "serves covers them): save the answer again once one does"
        )
    verified = []
    for receipt in voter.receipts:
        checked = verify_receipt(receipt, trust.keys)
        check_voter_record(voter, checked)
        verified.append(checked)
    if as_json:
        print_json(
            {
                "ok": True,
                "ledger": voter.ledger,
                "electronic_id": voter.electronic_id,
                "receipts": [_verified_json(checked) for checked in verified],
                "pending": list(voter.pending),
                **_trust_json(trust),
            }
        )
        return EXIT_OK
    print(f"valid: {len(verified)} receipt{'s' if len(verified) != 1 else ''} of {voter.electronic_id}:")
    for checked in verified:
        print(f"  {checked.record.content.kind} {_stands(checked, trust)}{_cosigned(checked, trust)}")
    for height in voter.pending:
        print(f"  height {height}: no receipt yet (no checkpoint the gateway serves covers it): save the answer later")
    return EXIT_OK


def _verified_json(verified: VerifiedReceipt) -> dict[str, object]:
    checkpoint = verified.checkpoint.checkpoint
    return {
        "ledger": verified.receipt.ledger,
        "height": verified.receipt.index,
        "hash": verified.record.link.hex(),
        "checkpoint": _checkpoint_json(checkpoint),
        "witnesses": list(verified.checkpoint.witnesses),
        "outside_witnesses": list(verified.outside),
    }


def _checkpoint_json(checkpoint: Checkpoint) -> dict[str, object]:
    return {"origin": checkpoint.origin, "size": checkpoint.size, "root": checkpoint.root.hex()}


def _trust_json(trust: _Trust) -> dict[str, object]:
    genesis = None if trust.genesis_link is None else trust.genesis_link.hex()
    return {"genesis": genesis, "anchored": trust.anchored, "quorum": trust.quorum}


def _stands(verified: VerifiedReceipt, trust: _Trust) -> str:
    receipt, checkpoint = verified.receipt, verified.checkpoint.checkpoint
    # The genesis is the ledger's identity (15.5): a reader compares it with what the publisher
    # published, unless the anchors already did.
    link = trust.genesis_link
    of = "" if link is None else f" (genesis {link.hex()}{', anchored' if trust.anchored else ''})"
    return (
        f"record {verified.record.link.hex()} stands at height {receipt.index} of {receipt.ledger}{of}, in the tree "
        f"of size {checkpoint.size} that {checkpoint.origin} signed"
    )


def _cosigned(verified: VerifiedReceipt, trust: _Trust) -> str:
    cosigned = verified.checkpoint.witnesses
    outside = trust.keys.outside
    return (f" and {_witnesses(len(cosigned))} cosigned ({', '.join(cosigned)})" if cosigned else "") + (
        f"; {_witnesses(len(verified.outside), 'outside ')} cosigned ({', '.join(verified.outside)}), "
        f"the genesis asks {outside.quorum}"
        if outside is not None
        else ""
    )


def _check_anchored(anchors: Anchors, ledger: str, link: bytes, args: argparse.Namespace) -> None:
    """Refuse a genesis that is not the one ``anchors`` name for ``ledger`` [bad_genesis]: a server
    that serves its own genesis pins its own checkpoint key, and every receipt it forges verifies."""
    anchored = anchors.ledgers.get(ledger)
    if anchored is None:
        raise BadGenesisError(f"--anchors {args.anchors} names no ledger {ledger!r}", ledger=ledger, height=0)
    if link != anchored:
        raise BadGenesisError(
            f"--genesis {args.genesis} (link {link.hex()}) is not the genesis the anchors name for {ledger!r} "
            f"({anchored.hex()})",
            ledger=ledger,
            height=0,
        )


def _witnesses(count: int, kind: str = "") -> str:
    return f"{count} {kind}witness" + ("" if count == 1 else "es")


def cmd_receipt_keys(args: argparse.Namespace) -> int:
    """The cluster's witness keys, the admin ledger's checkpoint key and the node keys that
    bound its witnesses' replaced keys, as ``--witness VKEY``, ``--admin-key VKEY`` and
    ``--node-keys TEXT`` for ``receipt verify`` (PROTOCOL 14.3).

    Each witness is given by its generation 0 (``<node>.sign.pub``), and its rotations by the
    admin ledger's ``key_rotation`` records proven under an admin checkpoint, read from a store
    (``--store``, else the configuration's under its data directory): a receipt cosigned by a
    replaced key before its rotation counts that witness, one by its newest key too, and one by
    a replaced key on a checkpoint larger than its rotation's ``cosigned`` does not, whatever
    node keys the receipt carries or leaves out. A witness whose rotations the key directory
    shows and no store proves (all of them) is given by its newest key instead, as before, and
    said on stderr: a replaced key given as generation 0 with no rotation known would count
    with any timestamp its thief chooses.

    Raises KeyMaterialError [bad_key] for a witness's ``.sign.pub`` that is not an Ed25519 key,
    UsageError for a ``--store`` that is not a store.
    """
    config = load_cluster(config_file(args.config))
    found = receipt_keys_of(config, args.store)
    for note in found.notes:
        print(f"vledger: {note}", file=sys.stderr)
    witnesses, admin, evidence = found.witnesses, found.admin_key, found.node_keys
    if args.json:
        print_json(
            {
                "witnesses": {name: key.encode() for name, key in witnesses.items()},
                "admin_key": None if admin is None else admin.encode(),
                "node_keys": None if evidence is None else evidence.json(),
            }
        )
        return EXIT_OK
    for key in witnesses.values():
        print(f"--witness {key.encode()}")
    if admin is not None:
        print(f"--admin-key {admin.encode()}")
    if evidence is not None:
        print(f"--node-keys {encode_node_keys(evidence)}")
    return EXIT_OK


class CheckingKeys(NamedTuple):
    """What ``vledger receipt keys`` prints (PROTOCOL 14.3): the witness keys by node, the admin
    ledger's checkpoint key, the node keys bounding the replaced keys given, and a note for each
    witness given by its newest key because no store proves its rotations."""

    witnesses: dict[str, VerifierKey]
    admin_key: VerifierKey | None
    node_keys: NodeKeys | None
    notes: list[str]


def receipt_keys_of(config: ClusterConfig, store: Path | None = None) -> CheckingKeys:
    """The keys ``vledger receipt keys`` gives (cmd_receipt_keys says which), read from the key
    directory and a store (``store``, else the configuration's); what ``make run``'s offline
    receipt check uses too: after a witness's key rotated, its generation-0 key alone with a
    quorum was refused no_quorum (outsider45). Raises as cmd_receipt_keys."""
    admin = admin_checkpoint_key(config)
    first, newest = witness_keys(config), newest_witness_keys(config)
    proven = _proven_rotations(config, store, admin, first)
    witnesses: dict[str, VerifierKey] = {}
    notes = []
    for node in sorted(newest):
        generations = newest_generation(config.keys_dir, node, PUBLIC_SUFFIX)
        if node in first and proven[0].get(node, 0) >= generations:
            witnesses[node] = first[node]
        else:
            witnesses[node] = newest[node]
            if generations:
                notes.append(
                    f"{node}: generation {generations} is in the key directory, and no store proves its "
                    f"{generations} rotations under an admin checkpoint: its newest key is given, so receipts its "
                    "replaced keys cosigned do not count it (give --store DIR of a node holding the admin ledger)"
                )
    bound = {node for node, key in witnesses.items() if key is first.get(node) and proven[0].get(node)}
    evidence = None if not bound or proven[1] is None else proven[1](bound)
    return CheckingKeys(witnesses, admin, evidence, notes)


def _proven_rotations(
    config: ClusterConfig, given: Path | None, admin: VerifierKey | None, witnesses: Collection[str]
) -> tuple[dict[str, int], Callable[[Collection[str]], NodeKeys | None] | None]:
    """How many ``key_rotation`` records of each witness the best store's admin ledger proves
    under its largest admin checkpoint that ``admin`` verifies (the store whose proves the
    most), and how to build the evidence for some of those witnesses; ({}, None) when none does."""
    if admin is None:
        return {}, None
    if given is not None and not is_store(given):
        raise UsageError(f"--store {given}: not a store directory")
    stores = [given] if given is not None else [config.store_dir(n) for n in sorted(config.nodes)]
    best: tuple[dict[str, int], Callable[[Collection[str]], NodeKeys | None] | None] = ({}, None)
    for store in stores:
        if not is_store(store):
            continue
        with contextlib.closing(StoreReader(store)) as reader:
            if ADMIN_LEDGER not in reader.ledgers():
                continue
            records = [data for _, data in reader.iter_raw(ADMIN_LEDGER, 0, reader.size(ADMIN_LEDGER))]
            notes = [note for _, note in reader.latest_checkpoints(ADMIN_LEDGER)]
        evidence, rotations = follow_copy(records, notes, admin, witnesses)
        if evidence is None:
            continue
        counts = dict(collections.Counter(str(r["node"]) for r in rotations))
        # Evidence holds the last MAX_NODE_ROTATIONS: a witness with an earlier rotation left
        # out would get its generation 0 bounded by a later rotation's sizes. Not proven so.
        size = parse_checkpoint(parse_note(evidence.checkpoint).text).size
        held = collections.Counter(
            str(record.content.payload.get("node"))
            for record in (decode_record(data, PROTOCOL_LIMITS) for data in records[:size])
            if record.content.kind == ROTATION_RECORD_KIND and isinstance(record.content.payload, dict)
        )
        counts = {node: count for node, count in counts.items() if held[node] == count}
        if sum(counts.values()) > sum(best[0].values()):
            best = (counts, functools.partial(node_keys_of, records, evidence.checkpoint))
    return best
