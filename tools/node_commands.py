"""Subcommands that run or set up nodes: ingest, replica, observer, keygen, admin bootstrap."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import threading
from collections.abc import Callable

from ..broker import redis_acl, redis_functions
from ..broker.accounts import AccountRegistry, bootstrap_admin
from ..broker.keys import generate, load_public
from ..broker.redis_keys import migrate
from ..broker.redis_server import connect
from ..broker.replication import REDIS_ERRORS, redis_failed
from ..broker.seal_keys import read_seal_key, write_seal_key
from ..broker.second_factor import REPLACE, SecondFactorStore
from ..broker.signing import generate_signing_key, load_verify_key, signing_key_paths
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, load_cluster
from ..config.redis import check_redis_url
from ..ingest.second_factor import SecondFactors, second_factor_issuer
from ..node.errors import AdminLedgerExistsError, KeyExistsError, UsageError
from ..node.rules.admin import ADMIN_LEDGER
from .args import ADMIN_KEY, PASSPHRASE_ENV, config_file
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


def cmd_redis_functions(args: argparse.Namespace) -> int:
    """Load vledger's functions library into the cluster's Redis as the loader user (its password
    file beside the ACL file; no user without access control), unless Redis holds it with exactly
    this code; with --keep, stay and load it again whenever Redis lost it or holds other code
    under its name, until SIGTERM or SIGINT; with --prune, then delete every other version's."""
    config = load_cluster(config_file(args.config))
    access = config.redis_access("functions")  # redis_acl.LOADER_USER, or none without access control
    client = connect(access, timeout=5.0)
    try:
        if args.keep and args.prune:
            raise UsageError("--prune deletes the other versions' libraries once: give it without --keep")
        if args.keep:
            stop = threading.Event()
            handlers = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
            log.info("keeping the functions library %s loaded in Redis", redis_functions.LIBRARY_NAME)
            try:
                redis_functions.keep_loaded(client, stop, args.interval)
            finally:
                for number, handler in handlers.items():
                    signal.signal(number, handler)
            return 0
        try:
            done = redis_functions.ensure(client)  # "replaced": other code had its name, logged as an ERROR
            pruned = redis_functions.prune(client) if args.prune else []
        except REDIS_ERRORS as e:
            raise redis_failed(access.url, e) from None
    finally:
        client.close()
    print(f"{done} {redis_functions.LIBRARY_NAME}")
    for name in pruned:
        print(f"deleted {name}")
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
                # A Redis password or the ACL file is a secret too: "secret", what it is, never "public".
                kind = f"{entry['secret']}, " if entry.get("secret") else ""
                public = f"  public {entry['public']}" if entry["public"] else f"  (secret {kind}0600)"
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
    user per node, the gateway's, the admin's and the functions loader's: broker/redis_acl.py; behind Sentinel, a
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
        for user in [*redis_acl.users(nodes), redis_acl.LOADER_USER, *(redis_acl.SERVER_USERS if servers else ())]:
            path = redis_acl.password_path(directory, user)
            entry = {"name": user, "file": str(path), "public": "", "secret": "Redis password"}
            (made if user in written else kept).append(entry)
        made.append({"name": "redis-acl", "file": str(written["acl"]), "public": "", "secret": "Redis ACL file"})
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
    access = config.redis_access("admin")
    client = connect(access)
    try:
        done = migrate(client)
    except REDIS_ERRORS as e:
        raise redis_failed(access.url, e) from None
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
    try:
        version = bootstrap_admin(registry, args.account, key)
    except AdminLedgerExistsError as e:
        if not args.once:
            raise
        # A start script's later runs: the admin ledger decides who the admins are now.
        print(json.dumps({"account": args.account, "key": key, "skipped": e.code}) if args.json else f"skipped: {e}")
        return 0
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
