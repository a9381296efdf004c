"""Subcommands that run or set up nodes: ingest, replica, observer, keygen, admin bootstrap."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..broker import redis_acl
from ..broker.accounts import AccountRegistry, bootstrap_admin
from ..broker.keys import generate, load_public
from ..broker.redis_keys import migrate
from ..broker.redis_server import connect
from ..broker.seal_keys import read_seal_key, write_seal_key
from ..broker.second_factor import REPLACE, SecondFactorStore
from ..broker.signing import generate_signing_key, load_verify_key, signing_key_paths
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, load_cluster
from ..config.redis import check_redis_url
from ..ingest.second_factor import SecondFactors, second_factor_issuer
from ..node.errors import KeyExistsError, UsageError
from ..node.rules.admin import ADMIN_LEDGER
from .args import ADMIN_KEY, PASSPHRASE_ENV, Subparsers, add_command, add_json_option, config_file, node_name
from .client_output import print_enrollment
from .key_bundles import Written, write_bundles
from .paths import input_file

log = logging.getLogger(__name__)


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
NODE_PROCESSES: dict[str, tuple[str, str]] = {
    "ingest": (
        "run an ingest node",
        "Run the ingest node NAME of the cluster configuration: CURVE-encrypted client commands, durable "
        "appends, checkpointed and published to the replicas, until SIGTERM or SIGINT.",
    ),
    "replica": (
        "run a replica node",
        "Run the replica node NAME of the cluster configuration: follow the feeds of the nodes it follows, "
        "verify and store every record its home's checkpoints cover, catch up on any gap, serve the read commands, "
        "until SIGTERM or SIGINT.",
    ),
    "observer": (
        "run an observer node",
        "Run the observer node NAME of the cluster configuration: follow, verify and store every record "
        "as a replica does, serve the read commands, re-run every ledger's domain rules from the chain "
        "(flagging what breaks them) and publish tallies signed with NAME.sign to Redis, until SIGTERM "
        "or SIGINT.",
    ),
    "verifier": (
        "run the verifier",
        "Run the verifier NAME of the cluster configuration: check every new record on every copy, compare "
        "every copy's head with its home's, and sweep every copy from genesis, raising an alert on any "
        "divergence or tampering, until SIGTERM or SIGINT.",
    ),
}


def cmd_node(args: argparse.Namespace) -> int:
    run = _process(args.command)
    run(load_cluster(config_file(args.config)), args.node, _passphrase(args, confirm=False))
    return 0


def _process(role: str) -> Callable[[ClusterConfig, str, str | None], None]:
    """The process a node of ``role`` runs, whose module alone is imported: each process module
    imports its own servers (aiohttp, prometheus-client, Redis), which the others do not run."""
    if role == "ingest":
        from ..ingest.server import run_ingest  # noqa: PLC0415

        return run_ingest
    if role == "replica":
        from ..ingest.replica import run_replica  # noqa: PLC0415

        return run_replica
    if role == "observer":
        from ..verifier.observer import run_observer  # noqa: PLC0415

        return run_observer
    from ..verifier.process import run_verifier  # noqa: PLC0415

    return run_verifier


def cmd_gateway(args: argparse.Namespace) -> int:
    config = load_cluster(config_file(args.config))
    if args.list:
        for node in sorted(config.nodes.values(), key=lambda n: n.name):
            if node.gateway_url is not None:
                print(f"{node.gateway_url}  (the store of {node.name}: web pages, /api/, /ledgers/<ledger>/tile/)")
        return 0
    if args.node is None:
        raise UsageError("name the node whose store to serve (--node NAME), or give --list")
    from ..verifier.gateway import run_gateway  # noqa: PLC0415 - see _process

    run_gateway(config, args.node, logs_dir=args.logs, host=args.host, port=args.port)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """One key pair by name, or with --cluster every node's pair that the configuration names."""
    if args.bundles is not None and args.cluster is None:
        raise UsageError("--bundles needs --cluster CONFIG: the folders are of that cluster's processes")
    passphrase = _passphrase(args, confirm=True)
    bundles: dict[str, Written] | None = None
    if args.cluster is not None:
        config = load_cluster(config_file(args.cluster, option="--cluster"))
        directory = config.keys_dir
        made, kept = ensure_cluster_keys(config, passphrase)
        if args.bundles is not None:
            bundles = write_bundles(config, args.bundles)
    else:
        if args.name is None:
            raise UsageError("name the key pair, or give --cluster CONFIG")
        directory = args.dir
        pair = generate(directory, args.name, passphrase)
        made, kept = [{"name": args.name, "public": pair.public, "file": f"{args.name}.key"}], []
    if args.json:
        shown: dict[str, object] = {"directory": str(directory), "created": made, "kept": kept}
        if bundles is not None:
            shown["bundles"] = {
                name: {"directory": str(args.bundles / name), "files": done.files, "extra": done.extra}
                for name, done in bundles.items()
            }
        print(json.dumps(shown))
    else:
        for what, entries in (("created", made), ("kept   ", kept)):
            for entry in entries:
                public = f"  public {entry['public']}" if entry["public"] else "  (secret, 0600)"
                print(f"{what} {directory / entry['file']}{public}")
        for name, done in (bundles or {}).items():
            print(f"bundle  {args.bundles / name}  {len(done.files)} files: what {name} alone reads")
            for extra in done.extra:  # never removed: a home's rotated checkpoint key is written there
                print(
                    f"extra   {args.bundles / name / extra}  (not from {directory}: kept; copy it back, or remove it)"
                )
    return 0


def ensure_cluster_keys(
    config: ClusterConfig, passphrase: str | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Every node's key pair and the admin's that is missing, made; those that exist, kept as they are.
    Each ingest node (it signs its ledgers' checkpoints), replica (it cosigns them as a witness)
    and observer (it cosigns, and signs its tallies) also gets an Ed25519 signing key pair,
    ``<name>.sign`` and ``<name>.sign.pub``.

    With ``[redis] passwords``, each Redis user's password file that is missing is made (a
    user per node, the gateway's and the admin's: broker/redis_acl.py; behind Sentinel, a
    ``sentinel://`` URL, also the replica's and the Sentinels' users of the data servers) and
    the ACL file written again from them.

    The cluster's second-factor key (``second-factor.seal``, 0600: it seals admins' TOTP
    secrets, docs/PROTOCOL.md 16.5) is made once too; its entry's ``public`` is empty.

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
    directory = config.redis.passwords_dir
    if directory is not None:  # Redis access control: a password per node's user, and the server's ACL file
        nodes = config.redis_users()
        writers = redis_acl.checkpoint_writers(config.default_home, config.homes, config.standbys)
        admin_home = config.home_of(ADMIN_LEDGER).name
        # Behind Sentinel the data servers and the Sentinels sign in to each other too (redis_acl.SERVER_USERS).
        servers = check_redis_url(config.redis_url) is not None
        written = redis_acl.write_passwords(
            directory, nodes, admin_homes=(admin_home,), checkpoints=writers, servers=servers
        )
        for user in [*redis_acl.users(nodes), *(redis_acl.SERVER_USERS if servers else ())]:
            path = redis_acl.password_path(directory, user)
            entry = {"name": user, "file": str(path), "public": "Redis password (0600)"}
            (made if user in written else kept).append(entry)
        made.append({"name": "redis-acl", "file": str(written["acl"]), "public": "Redis ACL file (0600)"})
    seal_path = config.second_factor_key_path()
    entry = {"name": seal_path.name, "file": seal_path.name, "public": ""}
    try:
        write_seal_key(seal_path)
        made.append(entry)
    except KeyExistsError:
        kept.append(entry)
    return made, kept


def cmd_admin_migrate_keys(args: argparse.Namespace) -> int:
    """Move the cluster's Redis to the tagged key names (broker/redis_keys.py); 1 when an old
    key had to be kept because its new name holds other data."""
    config = load_cluster(config_file(args.config))
    client = connect(config.redis_access("admin"))
    try:
        done = migrate(client)
    finally:
        client.close()
    if args.json:
        print(json.dumps({"moved": done.moved, "kept": done.kept}, sort_keys=True))
    else:
        for old, new in sorted(done.moved.items()):
            print(f"moved {old} -> {new}")
        for old, new in sorted(done.kept.items()):
            print(f"kept {old}: {new} exists and holds other data (compare them, then delete one)")
        if not done.moved and not done.kept:
            print("no key of the older layout: nothing to do")
    return 1 if done.kept else 0


def cmd_admin_bootstrap(args: argparse.Namespace) -> int:
    """The first admin: a local command on a node's host, writing to the cluster's Redis.
    With --totp it also gives the account a new second factor (the way back in for an admin
    who lost theirs), printed here once."""
    key_file = input_file(args.key, "--key")  # a missing file is said before the configuration is read
    config = load_cluster(config_file(args.config))
    key = load_public(key_file)
    client = connect(config.redis_access("admin"))
    registry = AccountRegistry(client)
    version = bootstrap_admin(registry, args.account, key)
    enrollment = None
    if args.totp:
        factors = SecondFactors(
            SecondFactorStore(client),
            read_seal_key(config.second_factor_key_path()),
            production=config.production,
            issuer=second_factor_issuer(config),
        )
        enrollment = factors.enroll(args.account, REPLACE)
    if args.json:
        result: dict[str, object] = {"account": args.account, "key": key, "version": version}
        if enrollment is not None:
            result.update(uri=enrollment.uri, recovery_codes=list(enrollment.recovery_codes))
        print(json.dumps(result))
        return 0
    print(f"admin account {args.account!r} holds key {key} (accounts version {version})")
    if enrollment is not None:
        print_enrollment(args.account, enrollment.uri, list(enrollment.recovery_codes))
    return 0


def add_node_commands(commands: Subparsers) -> None:
    """The node processes' commands, ``gateway`` and ``keygen``."""
    for role, (summary, description) in NODE_PROCESSES.items():
        node = add_command(commands, role, cmd_node, summary, description)
        node.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
        node.add_argument("--node", type=node_name, required=True, metavar="NAME", help=f"which {role} node to run")
        _add_passphrase_option(node, "the node's secret keys are protected by a passphrase")

    gateway = add_command(
        commands,
        "gateway",
        cmd_gateway,
        "serve a node's store over public read-only HTTP",
        "Serve the store of node NAME read-only over HTTP on its gateway_port: the C2SP tlog-tiles of "
        "every ledger, JSON records, ranges, proofs, voters' records, the observers' signed tallies, "
        "fund balances, an event stream and the web pages (check my vote, live tally, charity, "
        "operators' dashboard), until SIGTERM or SIGINT. No account is needed; nothing is written.",
    )
    gateway.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    gateway.add_argument("--node", type=node_name, metavar="NAME", help="whose store to serve")
    gateway.add_argument("--list", action="store_true", help="print the configured gateways' addresses and exit")
    gateway.add_argument("--port", type=int, metavar="PORT", help="listen here instead of the node's gateway_port")
    gateway.add_argument(
        "--host", metavar="ADDRESS", help="bind this address (a container: 0.0.0.0) instead of the node's bind or host"
    )
    gateway.add_argument(
        "--logs",
        type=Path,
        metavar="DIR",
        help="the processes' log files (<node>.log): their last lines are shown on the dashboard (/api/cluster) "
        "to whoever reaches the gateway, so give it only to a gateway this host alone reaches",
    )

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
    keygen.add_argument(
        "--bundles",
        type=Path,
        metavar="DIR",
        help="with --cluster: also write DIR/<node>, DIR/gateway, DIR/redis (and DIR/sentinel behind Sentinel), "
        "each holding only the key files that process reads, to be its key directory (tools/key_bundles.py)",
    )
    _add_passphrase_option(keygen, "protect the secret key with a passphrase (scrypt + ChaCha20-Poly1305)")
    add_json_option(keygen)


def add_admin_commands(commands: Subparsers) -> Subparsers:
    """The ``admin`` group; returns its actions, where the client verbs ``admin log`` and ``totp`` go."""
    admin = commands.add_parser(
        "admin",
        help="the first admin, and the admin ledger",
        description="Create the first admin account (bootstrap) or read the admin ledger (log).",
    )
    actions = admin.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    bootstrap = add_command(
        actions,
        "bootstrap",
        cmd_admin_bootstrap,
        "create the first admin account (local, on a node's host)",
        "Bind a public key to a new admin account directly in the cluster's Redis. Only for the "
        "first admin: later accounts are made over the protocol by an admin, and the first admin "
        "command records this one on the admin ledger.",
    )
    bootstrap.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    bootstrap.add_argument("--account", required=True, metavar="NAME", help="the admin account's name")
    bootstrap.add_argument("--key", type=Path, required=True, metavar="FILE.key", help="its public key file")
    bootstrap.add_argument(
        "--totp",
        action="store_true",
        help="also give the account a new second factor (replacing any it has): prints its otpauth:// URI and "
        "recovery codes once",
    )
    add_json_option(bootstrap)
    migrate_keys = add_command(
        actions,
        "migrate-keys",
        cmd_admin_migrate_keys,
        "rename Redis keys of the older layout (before hash tags)",
        "Rename every Redis key of the layout without hash tags to its tagged name (docs/PROTOCOL.md "
        "10.10), once, after an upgrade; running it again changes nothing. An old key whose new name "
        "holds other data is kept and listed, never deleted.",
    )
    migrate_keys.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    add_json_option(migrate_keys)
    return actions


def _add_passphrase_option(command: argparse.ArgumentParser, text: str) -> None:
    command.add_argument(
        "--passphrase", action="store_true", help=f"{text}; read from ${PASSPHRASE_ENV} or asked on the terminal"
    )
