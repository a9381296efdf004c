"""Argument types and parser pieces shared by every ``vledger`` subcommand module."""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from ..config.settings import Limits
from ..node.errors import BadRequestError, UsageError, VledgerError
from ..node.note import ALG_COSIGNATURE_V1, VerifierKey, parse_verifier_key
from ..node.record import check_ledger_name, check_node_name
from ..node.rules.votes import check_electronic_id
from .paths import input_file


def name_type(check: Callable[[str, Limits], str]) -> Callable[[str], str]:
    """An argparse type from one of the record's name checks, so that its sentence is the message."""

    def checked(value: str) -> str:
        try:
            return check(value, Limits())
        except VledgerError as e:
            raise argparse.ArgumentTypeError(e.message) from e

    return checked


ledger_name = name_type(check_ledger_name)
node_name = name_type(check_node_name)


def positive(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def count_arg(value: str) -> int:
    """A count from 0 up (a write concern, a number of records)."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    return int(value)


def difficulty(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"{value!r} is not a difficulty in 0..64")
    return int(value)


def witness_key(value: str) -> VerifierKey:
    """A witness's cosignature key: a vkey of type 0x04, as `vledger receipt keys` prints it."""
    try:
        key = parse_verifier_key(value)
    except VledgerError as e:
        raise argparse.ArgumentTypeError(f"not a verifier key: {e.message}") from e
    if key.alg != ALG_COSIGNATURE_V1:
        raise argparse.ArgumentTypeError(
            f"{key.name}: a witness key is a cosignature key (type 0x04), not of type {key.alg:#04x}"
        )
    return key


def vkey_arg(value: str) -> VerifierKey:
    try:
        return parse_verifier_key(value)
    except Exception as e:
        raise argparse.ArgumentTypeError(f"not a verifier key: {getattr(e, 'message', e)}") from None


def electronic_id_arg(value: str) -> str:
    try:
        return check_electronic_id(value)
    except BadRequestError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def add_witness_option(command: argparse.ArgumentParser, verb: str) -> None:
    command.add_argument(
        "--witness",
        type=witness_key,
        action="append",
        default=[],
        metavar="VKEY",
        help=f"a witness's cosignature key: {verb} each checkpoint's cosignature by it, which must verify "
        "(repeatable; `vledger receipt keys` prints a cluster's). Without one, cosignatures are not checked",
    )


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass(frozen=True)
class Deferred:
    """What runs a command, by name: the function ``name`` of the module ``module`` of this
    package, imported when the command runs. A parser is built without its command's module and
    what that imports (Redis, ZeroMQ, aiohttp, the ciphers): see cli.COMMANDS. With ``params``,
    ``name`` is a factory (one function for several commands) and runs what it makes of them."""

    module: str
    name: str
    params: tuple[str, ...] = ()

    def target(self) -> Callable[..., int]:
        found: Callable[..., Any] = getattr(importlib.import_module(f".{self.module}", __package__), self.name)
        return found(*self.params) if self.params else found

    def __call__(self, args: argparse.Namespace) -> int:
        return self.target()(args)


def add_command(
    commands: Subparsers, name: str, run: Callable[[argparse.Namespace], int], summary: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand whose parsed arguments go to ``run`` (main calls ``args.run``)."""
    command = commands.add_parser(name, help=summary, description=description)
    command.set_defaults(run=run)
    return command


def add_ledger_option(command: argparse.ArgumentParser, verb: str) -> None:
    command.add_argument("--ledger", type=ledger_name, metavar="NAME", help=f"{verb} only this ledger")


# Every command's summary, in `vledger --help`'s order: the listing (cli.listing_parser) shows them
# without building a command's parser, whose help= is the same entry.
SUMMARIES: dict[str, str] = {
    "verify": "verify a store or an export file from genesis",
    "export": "write a store's records as JSON Lines",
    "import": "verify an export file, then append it to a store",
    "demo": "show a running cluster (or a local store) at work, then check it",
    "ingest": "run an ingest node",
    "replica": "run a replica node",
    "observer": "run an observer node",
    "verifier": "run the verifier",
    "gateway": "serve a node's store over public read-only HTTP",
    "redis-functions": "load vledger's functions library into Redis (as the loader user)",
    "keygen": "create CURVE key pairs",
    "admin": "the first admin, and the admin ledger",
    "hello": "greet a node: its name, version, your account",
    "whoami": "your account, role and key",
    "ledger": "list, create, promote or rekey ledgers",
    "put": "append a record",
    "get": "show one record",
    "range": "list a ledger's records",
    "head": "show a ledger's last record",
    "size": "how many records a ledger holds",
    "vote": "register, cast, uncast, withdraw",
    "donate": "record a donation to a fund",
    "disburse": "pay out of a fund",
    "transfer": "move units from your account",
    "issue": "create units (issuers)",
    "seal": "turn private information into a sealed id (local)",
    "unseal": "open a sealed id (local)",
    "seal-key": "create a seal key file (local)",
    "file": "upload or download a file",
    "user": "manage accounts and keys (admin)",
    "receipt": "fetch a record's receipt, or check one offline",
    "grant": "who may write which kind of record (admin)",
    "key": "rotate a node's keys (admin)",
    "shell": "an interactive client",
    "supervise": "run the cluster on this host under supervisord: start, stop, status",
    "tally": "the observers' signed tallies of a ledger, checked, and whether they agree",
    "repl": "replication: who holds how much of each ledger",
    "repair": "rebuild a node's store from copies consistent with a quorum-cosigned checkpoint",
    "alerts": "list, follow or resolve alerts",
    "status": "the whole cluster: nodes up, replication, the verifier, open alerts",
    "anchors": "print the cluster's trust anchors, to publish out of band",
}


CONFIG_ENV = "VLEDGER_CONFIG"
KEY_ENV = "VLEDGER_KEY"
OTP_ENV = "VLEDGER_OTP"
DEFAULT_TIMEOUT = 10.0  # seconds a client waits for each answer
DEFAULT_WAIT_SECONDS = 10.0  # how long `receipt get --wait` waits for cosignatures
DEFAULT_WINDOW_SECONDS = 24 * 3600  # how long a rotated node key keeps working
PASSPHRASE_ENV = "VLEDGER_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)
ADMIN_KEY = "admin"  # the cluster's first admin key pair: <keys>/admin.key, admin.key_secret
DEFAULT_CONFIG = Path("config/cluster.toml")
CONFIG_HELP = f"the cluster configuration (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})"


def config_path(given: Path | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The cluster configuration every command reads: ``given`` (``--config``), else
    ``$VLEDGER_CONFIG`` (what ``make run`` tells the user to export), else config/cluster.toml."""
    return given or Path(environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def config_file(given: Path | None, environ: Mapping[str, str] = os.environ, option: str = "--config") -> Path:
    """:func:`config_path`, once it is there: else UsageError (exit 2) saying where its name came from."""
    if given is not None:
        return input_file(given, option)
    exported = environ.get(CONFIG_ENV)
    if exported:
        return input_file(Path(exported), f"${CONFIG_ENV}")
    return default_config_file(option)


def default_config_file(option: str = "--config") -> Path:
    if not DEFAULT_CONFIG.is_file():
        raise UsageError(f"{DEFAULT_CONFIG}: no such file here: give {option} FILE or set ${CONFIG_ENV}")
    return DEFAULT_CONFIG


def add_config_option(command: argparse.ArgumentParser) -> None:
    """``--config FILE``, optional: :func:`config_path` says where it defaults from."""
    command.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)


def add_json_option(command: argparse.ArgumentParser, shape: str = "") -> None:
    """``--json``: one JSON object on stdout (``shape`` says which, when --help should), and a
    failure's ``{"error": {"code", "message"}}`` (cli.main)."""
    command.add_argument("--json", action="store_true", help=f"print one JSON object{shape} for scripts")
