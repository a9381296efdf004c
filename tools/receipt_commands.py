"""``vledger receipt get|verify|keys``: a record's receipt fetched from a node, checked offline,
and the keys to check it with.

``get`` asks a node for the record, a checkpoint that covers it with the cosignatures asked
for (waiting for one until ``--wait``), and the inclusion proof; the session verifies all of
it before it writes the receipt file (docs/PROTOCOL.md section 14). ``verify`` needs no
cluster: the file, and the ledger's genesis record (its pinned checkpoint key) or the key
given with ``--key``; witness keys and a quorum when the cosignatures must count, and with
``--admin-key`` (the admin ledger's checkpoint key) their rotated keys the receipt proves (16.6).
``keys`` prints those vkeys from a cluster's key directory (each witness's newest generation,
``<node>@<g>.sign.pub`` or ``<node>.sign.pub``, and the admin home's), as ``verify`` options:
the files hold PEM, the options want vkeys.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..broker.signing import newest_witness_keys
from ..client.session import Session
from ..config.cluster import load_cluster
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import RecordError, UsageError
from ..node.note import VerifierKey, parse_verifier_key, witness_groups
from ..node.receipt import ReceiptKeys, keys_from_genesis, parse_receipt, verify_receipt
from ..node.record import decode_record
from ..verifier.node_keys import admin_checkpoint_key
from .args import config_file
from .client_output import print_json
from .paths import output_file

EXIT_OK, EXIT_REFUSED = 0, 1
DEFAULT_WAIT_SECONDS = 10.0
MAX_FILE_BYTES = 1024 * 1024  # a receipt or genesis file is far smaller: refuse before reading more


def vkey_arg(value: str) -> VerifierKey:
    try:
        return parse_verifier_key(value)
    except Exception as e:
        raise argparse.ArgumentTypeError(f"not a verifier key: {getattr(e, 'message', e)}") from None


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
        sys.stdout.write(data.decode("utf-8"))
    else:
        args.output.write_bytes(data)
        print(f"receipt of {args.ledger} height {index} written to {args.output}", file=sys.stderr)
    return EXIT_OK


def _genesis_bytes(data: bytes) -> bytes:
    """A genesis file holds the record's bytes (2.4), or is the receipt of height 0."""
    try:
        return parse_receipt(data).record
    except Exception:
        return data


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    receipt = parse_receipt(_read(args.file))
    witnesses = tuple(args.witness or ())
    # Names that share a public key are one witness (PROTOCOL 13.4): they count once.
    if args.quorum > len(set(witness_groups(witnesses).values())):
        raise UsageError(f"--quorum {args.quorum} needs as many --witness keys, each of its own public key")
    if args.genesis is not None:
        if args.key:
            raise UsageError("give --genesis or --key, not both")
        genesis = _genesis_bytes(_read(args.genesis))
        try:
            keys = keys_from_genesis(genesis, receipt.ledger, witnesses, args.quorum)
        except RecordError as e:  # name the file: a gateway's 404 answer saved read only "trailing bytes..."
            e.message = f"--genesis {args.genesis}: {e.message}"
            raise
    elif args.key:
        keys = ReceiptKeys(args.key, witnesses, args.quorum)
    else:
        raise UsageError("give the ledger's --genesis FILE or its checkpoint --key VKEY")
    if args.admin_key is not None:
        keys = replace(keys, admin_key=args.admin_key)
    verified = verify_receipt(receipt, keys)
    checkpoint = verified.checkpoint.checkpoint
    record = decode_record(receipt.record, PROTOCOL_LIMITS)
    if args.json:
        print_json(
            {
                "ok": True,
                "ledger": receipt.ledger,
                "height": receipt.index,
                "hash": record.link.hex(),
                "checkpoint": {"origin": checkpoint.origin, "size": checkpoint.size, "root": checkpoint.root.hex()},
                "witnesses": list(verified.checkpoint.witnesses),
                "outside_witnesses": list(verified.outside),
            }
        )
        return EXIT_OK
    cosigned = verified.checkpoint.witnesses
    print(
        f"valid: record {record.link.hex()} stands at height {receipt.index} of {receipt.ledger}, in the tree of "
        f"size {checkpoint.size} that {checkpoint.origin} signed"
        + (f" and {_witnesses(len(cosigned))} cosigned ({', '.join(cosigned)})" if cosigned else "")
        + (
            f"; {_witnesses(len(verified.outside), 'outside ')} cosigned "
            f"({', '.join(verified.outside)}), "
            f"the genesis asks {keys.outside.quorum}"
            if keys.outside is not None
            else ""
        )
    )
    return EXIT_OK


def _witnesses(count: int, kind: str = "") -> str:
    return f"{count} {kind}witness" + ("" if count == 1 else "es")


def cmd_receipt_keys(args: argparse.Namespace) -> int:
    """The cluster's witness keys (each witness's newest generation in the key directory) and
    the admin ledger's checkpoint key, as ``--witness VKEY`` and ``--admin-key VKEY`` for
    ``receipt verify``. A rotated witness's replaced key is left out: with any timestamp its
    thief chooses, a cosignature by it would count (PROTOCOL 14.3, 16.6).

    Raises KeyMaterialError [bad_key] for a witness's ``.sign.pub`` that is not an Ed25519 key.
    """
    config = load_cluster(config_file(args.config))
    witnesses = {name: key.encode() for name, key in sorted(newest_witness_keys(config).items())}
    admin = admin_checkpoint_key(config)
    if args.json:
        print_json({"witnesses": witnesses, "admin_key": None if admin is None else admin.encode()})
        return EXIT_OK
    for vkey in witnesses.values():
        print(f"--witness {vkey}")
    if admin is not None:
        print(f"--admin-key {admin.encode()}")
    return EXIT_OK
