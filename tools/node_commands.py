"""Subcommands that run or set up nodes: ingest, replica, observer, keygen, admin bootstrap."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..broker.accounts import AccountRegistry, bootstrap_admin
from ..broker.keys import generate, load_public
from ..broker.redis_server import connect
from ..broker.signing import generate_signing_key, load_verify_key, signing_key_paths
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, load_cluster
from ..ingest.replica import run_replica
from ..ingest.server import run_ingest
from ..node.errors import KeyExistsError, UsageError
from ..verifier.observer import run_observer
from ..verifier.process import run_verifier
from .args import Subparsers, add_command, add_json_option, node_name

log = logging.getLogger(__name__)
PASSPHRASE_ENV = "VLEDGER_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)
ADMIN_KEY = "admin"  # the cluster's first admin key pair: <keys>/admin.key, admin.key_secret


def _passphrase(args: argparse.Namespace, confirm: bool) -> str | None:
    """The passphrase asked for with --passphrase: from the environment, else typed twice."""
    if not args.passphrase:
        return None
    value = os.environ.get(PASSPHRASE_ENV)
    if value is not None:
        return value
    first = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("passphrase again: ") != first:
        raise UsageError("the two passphrases differ")
    if not first:
        raise UsageError("an empty passphrase protects nothing; leave out --passphrase instead")
    return first


# The node processes, by role: each runs until SIGTERM or SIGINT.
NODE_PROCESSES: dict[str, tuple[Callable[[ClusterConfig, str, str | None], None], str, str]] = {
    "ingest": (
        run_ingest,
        "run an ingest node",
        "Run the ingest node NAME of the cluster configuration: CURVE-encrypted client commands, durable "
        "appends, checkpointed and published to the replicas, until SIGTERM or SIGINT.",
    ),
    "replica": (
        run_replica,
        "run a replica node",
        "Run the replica node NAME of the cluster configuration: follow the feeds of the nodes it follows, "
        "verify and store every record its home's checkpoints cover, catch up on any gap, serve the read commands, "
        "until SIGTERM or SIGINT.",
    ),
    "observer": (
        run_observer,
        "run an observer node",
        "Run the observer node NAME of the cluster configuration: follow, verify and store every record "
        "as a replica does, serve the read commands, re-run every ledger's domain rules from the chain "
        "(flagging what breaks them) and publish tallies signed with NAME.sign to Redis, until SIGTERM "
        "or SIGINT.",
    ),
    "verifier": (
        run_verifier,
        "run the verifier",
        "Run the verifier NAME of the cluster configuration: check every new record on every copy, compare "
        "every copy's head with its home's, and sweep every copy from genesis, raising an alert on any "
        "divergence or tampering, until SIGTERM or SIGINT.",
    ),
}


def cmd_node(args: argparse.Namespace) -> int:
    run = NODE_PROCESSES[args.command][0]
    run(load_cluster(args.config), args.node, _passphrase(args, confirm=False))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """One key pair by name, or with --cluster every node's pair that the configuration names."""
    passphrase = _passphrase(args, confirm=True)
    if args.cluster is not None:
        config = load_cluster(args.cluster)
        directory = config.keys_dir
        made, kept = ensure_cluster_keys(config, passphrase)
    else:
        if args.name is None:
            raise UsageError("name the key pair, or give --cluster CONFIG")
        directory = args.dir
        pair = generate(directory, args.name, passphrase)
        made, kept = [{"name": args.name, "public": pair.public, "file": f"{args.name}.key"}], []
    if args.json:
        print(json.dumps({"directory": str(directory), "created": made, "kept": kept}))
    else:
        for entry in made:
            print(f"created {directory / entry['file']}  public {entry['public']}")
        for entry in kept:
            print(f"kept    {directory / entry['file']}  public {entry['public']}")
    return 0


def ensure_cluster_keys(
    config: ClusterConfig, passphrase: str | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Every node's key pair and the admin's that is missing, made; those that exist, kept as they are.
    Each ingest node (it signs its ledgers' checkpoints), replica (it cosigns them as a witness)
    and observer (it cosigns, and signs its tallies) also gets an Ed25519 signing key pair,
    ``<name>.sign`` and ``<name>.sign.pub``.

    Returns (made, kept), each entry the pair's name, public key and public file's name: safe
    to run at every start.
    """
    made, kept = [], []
    for name in [*sorted(config.nodes), ADMIN_KEY]:
        entry = {"name": name, "file": config.public_key_path(name).name}
        try:
            made.append({**entry, "public": generate(config.keys_dir, name, passphrase).public})
        except KeyExistsError:
            kept.append({**entry, "public": load_public(config.public_key_path(name))})
    signers = [n for n in config.nodes.values() if n.role in ("ingest", *FOLLOWER_ROLES)]
    for node in sorted(signers, key=lambda n: n.name):
        private_path, public_path = signing_key_paths(config.keys_dir, node.name)
        entry = {"name": private_path.name, "file": public_path.name}
        try:
            made.append({**entry, "public": generate_signing_key(config.keys_dir, node.name, passphrase).public_hex})
        except KeyExistsError:
            kept.append({**entry, "public": load_verify_key(public_path).public_hex})
    return made, kept


def cmd_admin_bootstrap(args: argparse.Namespace) -> int:
    """The first admin: a local command on a node's host, writing to the cluster's Redis."""
    config = load_cluster(args.config)
    key = load_public(args.key)
    registry = AccountRegistry(connect(os.environ.get("REDIS_URL") or config.redis_url))
    version = bootstrap_admin(registry, args.account, key)
    print(f"admin account {args.account!r} holds key {key} (accounts version {version})")
    return 0


def add_node_commands(commands: Subparsers) -> None:
    for role, (_, summary, description) in NODE_PROCESSES.items():
        node = add_command(commands, role, cmd_node, summary, description)
        node.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
        node.add_argument("--node", type=node_name, required=True, metavar="NAME", help=f"which {role} node to run")
        _add_passphrase_option(node, "the node's secret keys are protected by a passphrase")

    keygen = add_command(
        commands,
        "keygen",
        cmd_keygen,
        "create CURVE key pairs",
        "Create a CURVE key pair: NAME.key (public) and NAME.key_secret (mode 0600). With "
        "--cluster, every key pair the configuration needs that does not exist yet.",
    )
    keygen.add_argument("name", nargs="?", metavar="NAME", help="the key pair's name (an account or node name)")
    keygen.add_argument("--dir", type=Path, default=Path("."), metavar="DIR", help="where to write (default: .)")
    keygen.add_argument("--cluster", type=Path, metavar="CONFIG", help="create the cluster's missing key pairs")
    _add_passphrase_option(keygen, "protect the secret key with a passphrase (scrypt + ChaCha20-Poly1305)")
    add_json_option(keygen)

    admin = add_command(
        commands,
        "admin",
        cmd_admin_bootstrap,
        "create the first admin account (local, on a node's host)",
        "Bind a public key to a new admin account directly in the cluster's Redis. Only for the "
        "first admin: later accounts are made over the protocol by an admin.",
    )
    admin.add_argument("action", choices=["bootstrap"], help="what to do")
    admin.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    admin.add_argument("--account", required=True, metavar="NAME", help="the admin account's name")
    admin.add_argument("--key", type=Path, required=True, metavar="FILE.key", help="its public key file")


def _add_passphrase_option(command: argparse.ArgumentParser, text: str) -> None:
    command.add_argument(
        "--passphrase", action="store_true", help=f"{text}; read from ${PASSPHRASE_ENV} or asked on the terminal"
    )
