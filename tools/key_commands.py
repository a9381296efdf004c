"""``vledger key rotate NODE``: a node's new key, with an overlap window (PROTOCOL 16.6).

An ingest node's CURVE key rotates (its request socket's and its feed's), and a verifier's (the
client key it reads every node with, and its status socket's; it has no Ed25519 key); a
replica's or an observer's Ed25519 cosignature key (``<node>@<g>.sign``, 0600, and
``.sign.pub``), which it cosigns with from the record on, and with it, when the node has a
``rotation_port``, its CURVE key (the one it serves and the one it connects to the others
with), in one record.

Run where the cluster's key directory is (the operator's machine, as ``keygen --cluster``):
it writes the node's next key generation, ``<node>@<g>.key`` and ``<node>@<g>.key_secret``
(0600), and asks the home of ``admin`` to record the rotation (``node.rotate``, an admin
command: second factor as for the others). Every node learns the new key from the admin
ledger; the rotated node serves it on its ``rotation_port`` at once, and on its ``port``
once the window ends, when its old key stops working.

The generation number comes from the admin ledger, the authority the nodes read: one more
than the ``key_rotation`` records that name the node (PROTOCOL 16.6), whatever files this key
directory holds (a rotation recorded from another machine, or by a raw ``node.rotate``, made
none here). Files of that generation already here were left by an attempt that was never
recorded: refused, rather than sent again or overwritten. If the command is refused, the new
files are removed again, so that the next attempt makes the same generation; if the home
does not answer, they are kept (the rotation may have been recorded, naming them).
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from ..broker.keys import generate, generation_name, key_paths
from ..broker.signing import PUBLIC_SUFFIX, generate_signing_key, load_verify_key, signing_key_paths
from ..client.session import Session, node_address
from ..config.cluster import FOLLOWER_ROLES
from ..node.errors import KeyExistsError, KeyMaterialError, RemoteError, UsageError, VledgerError
from ..node.node_key_rotation import NO_SIGN_KEY
from ..node.node_keys import ROTATION_RECORD_KIND
from ..node.rules.admin import ADMIN_LEDGER
from .args import PASSPHRASE_ENV
from .client_output import print_json


def cmd_key_rotate(session: Session, args: argparse.Namespace) -> int:
    """Make the node's next key generation and record the rotation; 0 on success.

    An ingest node or a verifier gets a new CURVE key (``<node>@<g>.key``, ``.key_secret``), a
    replica or an observer a new Ed25519 cosignature key (``<node>@<g>.sign``, ``.sign.pub``)
    and, with a ``rotation_port``, a new CURVE key too. Raises UsageError for a node the
    cluster file does not have, an ingest node or a verifier without ``rotation_port``, a
    node with a ``pub_port`` and a ``rotation_port`` but no ``feed_rotation_port``,
    KeyMaterialError when its keys cannot be read, KeyExistsError when files of the next
    generation the admin ledger gives are here already, and the node's refusal (RemoteError:
    bad_request, key_in_use, second_factor_required, ...).
    """
    config = session.config
    node = config.nodes.get(args.rotated)
    if node is None:
        raise UsageError(f"{args.rotated!r} is not a node of {config.path}")
    if node.role in ("ingest", "verifier") and node.rotation_port is None:
        raise UsageError(
            f"{args.rotated} has no rotation_port in {config.path}: give it one (and restart it) first, so that "
            "clients holding the new key reach it during the window"
        )
    # A replica or an observer without a rotation_port rotates its Ed25519 key alone.
    rotates_curve = node.rotation_port is not None
    if rotates_curve and node.pub_port is not None and node.feed_rotation_port is None:
        raise UsageError(
            f"{args.rotated} has a pub_port but no feed_rotation_port in {config.path}: give it one (and restart "
            "it) first, so that subscribers holding the new key receive its feed during the window"
        )
    passphrase = os.environ.get(PASSPHRASE_ENV) if args.passphrase else None
    if args.passphrase and not passphrase:
        raise UsageError(f"--passphrase: set ${PASSPHRASE_ENV} to the node's passphrase")
    generation = recorded_generation(session, node.name) + 1
    name = generation_name(node.name, generation)
    _check_unused(config.keys_dir, node.name, generation)
    made: list[Path] = []
    if node.role == "ingest":
        sign = _sign_key(config.keys_dir, node.name)
    elif node.role == "verifier":
        sign = NO_SIGN_KEY  # a verifier signs nothing: its CURVE key alone rotates (PROTOCOL 16.1)
    else:
        # A witness's cosignature key rotates with its CURVE key (PROTOCOL 16.6): one record, one window.
        sign = generate_signing_key(config.keys_dir, name, passphrase).public_hex
        made.extend(signing_key_paths(config.keys_dir, name))
    if rotates_curve:
        pair = generate(config.keys_dir, name, passphrase)
        made.extend(key_paths(config.keys_dir, name))
        curve, fingerprint, what = pair.public, pair.fingerprint, "CURVE"
    else:
        curve, fingerprint, what = node_address(config, node.name).key, sign[:16], "Ed25519"
    if node.role in FOLLOWER_ROLES and rotates_curve:
        fingerprint, what = f"{fingerprint}, Ed25519 key {sign[:16]}", "CURVE"
    try:
        request = {"node": node.name, "curve": curve, "sign": sign, "window_ms": args.window * 1000}
        result = session.call("node.rotate", request)
    except RemoteError:  # refused: nothing was recorded
        for path in made:
            path.unlink(missing_ok=True)
        raise
    except (VledgerError, OSError) as e:  # no answer: it may have been recorded, naming these keys
        e.add_note(
            f"the rotation may have been recorded (see: vledger admin log); {', '.join(p.name for p in made)} "
            f"are kept in {config.keys_dir}: if it was not, remove them before trying again"
        )
        raise
    if args.json:
        print_json({**result, "generation": generation})
        return 0
    until = datetime.fromtimestamp(int(result["until"]) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(f"{node.name}: new {what} key {fingerprint} (generation {generation}, admin ledger height "
          f"{result.get('height')}); its old key works until {until}")  # fmt: skip
    public = [p.name for p in made if p.name.endswith((".key", PUBLIC_SUFFIX))]
    secret = [p.name for p in made if p.name not in public]
    print(f"copy {', '.join(public)} to every host that reaches {node.name}, and {', '.join(secret)} to "
          f"{node.name}'s host")  # fmt: skip
    return 0


def _sign_key(keys_dir: Path, node: str) -> str:
    try:
        return load_verify_key(signing_key_paths(keys_dir, node)[1]).public_hex
    except KeyMaterialError as e:
        raise KeyMaterialError(f"{node}: its Ed25519 key is needed for the record: {e}") from None


def recorded_generation(session: Session, node: str) -> int:
    """The newest key generation of ``node`` that the admin ledger records: how many of its
    ``key_rotation`` records name it (PROTOCOL 16.6), read from the home of ``admin``, each
    record checked as the chain's next; 0 before the first admin record. Raises RemoteError
    or NodeUnavailableError as :meth:`Session.records`."""
    try:
        return sum(
            1
            for record in session.records(ADMIN_LEDGER)
            if record.content.kind == ROTATION_RECORD_KIND and record.content.payload.get("node") == node
        )
    except RemoteError as e:
        if e.code == "no_such_ledger":
            return 0
        raise


def _check_unused(keys_dir: Path, node: str, generation: int) -> None:
    """Refuse (KeyExistsError) when files of ``node``'s generation ``generation`` are here
    already: the admin ledger does not record it, so an attempt that never reached it (or whose
    answer was lost and was not recorded) left them; they may have been copied elsewhere."""
    name = generation_name(node, generation)
    found = [path.name for path in (*key_paths(keys_dir, name), *signing_key_paths(keys_dir, name)) if path.exists()]
    if found:
        raise KeyExistsError(
            f"{keys_dir}: {', '.join(found)} exist, but the admin ledger records {generation - 1} rotations of "
            f"{node}: files of an attempt that was never recorded; move them aside, then run this again"
        )
