"""``vledger key rotate NODE``: a node's new CURVE key, with an overlap window (PROTOCOL 16.6).

Run where the cluster's key directory is (the operator's machine, as ``keygen --cluster``):
it writes the node's next key generation, ``<node>@<g>.key`` and ``<node>@<g>.key_secret``
(0600), and asks the home of ``admin`` to record the rotation (``node.rotate``, an admin
command: second factor as for the others). Every node learns the new key from the admin
ledger; the rotated node serves it on its ``rotation_port`` at once, and on its ``port``
once the window ends, when its old key stops working. If the command is refused, the new
files are removed again, so that the next attempt makes the same generation.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime

from ..broker.keys import generate, generation_name, key_paths, newest_generation
from ..broker.signing import load_verify_key, signing_key_paths
from ..client.session import Session
from ..node.errors import KeyMaterialError, UsageError, VledgerError
from .client_output import print_json
from .node_commands import PASSPHRASE_ENV

DEFAULT_WINDOW_SECONDS = 24 * 3600


def cmd_key_rotate(session: Session, args: argparse.Namespace) -> int:
    """Make the node's next key generation and record the rotation; 0 on success.

    Raises UsageError for a node that is not an ingest node of the configuration or has no
    ``rotation_port``, KeyMaterialError when its Ed25519 key cannot be read, and the node's
    refusal (RemoteError: bad_request, key_in_use, second_factor_required, ...).
    """
    config = session.config
    node = config.nodes.get(args.node)
    if node is None or node.role != "ingest":
        raise UsageError(
            f"{args.node!r} is not an ingest node of {config.path}: only an ingest node's keys rotate (yet)"
        )
    if node.rotation_port is None:
        raise UsageError(
            f"{args.node} has no rotation_port in {config.path}: give it one (and restart it) first, so that "
            "clients holding the new key reach it during the window"
        )
    sign_public = signing_key_paths(config.keys_dir, node.name)[1]
    try:
        sign = load_verify_key(sign_public).public_hex
    except KeyMaterialError as e:
        raise KeyMaterialError(f"{node.name}: its Ed25519 key is needed for the record: {e}") from None
    passphrase = os.environ.get(PASSPHRASE_ENV) if args.passphrase else None
    if args.passphrase and not passphrase:
        raise UsageError(f"--passphrase: set ${PASSPHRASE_ENV} to the node's passphrase")
    generation = newest_generation(config.keys_dir, node.name) + 1
    name = generation_name(node.name, generation)
    pair = generate(config.keys_dir, name, passphrase)
    try:
        request = {"node": node.name, "curve": pair.public, "sign": sign, "window_ms": args.window * 1000}
        result = session.call("node.rotate", request)
    except (VledgerError, OSError):
        for path in key_paths(config.keys_dir, name):
            path.unlink(missing_ok=True)
        raise
    if args.json:
        print_json({**result, "generation": generation})
        return 0
    until = datetime.fromtimestamp(int(result["until"]) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    public, secret = key_paths(config.keys_dir, name)
    print(f"{node.name}: new CURVE key {pair.fingerprint} (generation {generation}, admin ledger height "
          f"{result.get('height')}); its old key works until {until}")  # fmt: skip
    print(f"copy {public.name} to every host that reaches {node.name}, and {secret.name} to {node.name}'s host")
    return 0
