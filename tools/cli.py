"""The ``vledger`` command: parse the arguments, run one command, turn its outcome into an exit code.

Exit codes: 0 when everything verified, 1 when something failed (a report says what and
where), 2 for a usage error. Every expected failure is one line on stderr, never a traceback.
The commands' work is in the modules beside this one: ``verification``, ``exporting``,
``importing`` and ``demo``; what they print is in ``report``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..broker.logs import LEVELS, configure_logging
from ..broker.redis_keys import refused_login_message, wrong_type_message
from ..config.settings import DEFAULT_DIFFICULTY, Limits
from ..node.errors import NodeRunningError, RedisServerError, RemoteError, StoreDamagedError, UsageError, VledgerError
from ..node.identifiers import escape
from ..node.json_values import error_json
from .args import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    KEY_ENV,
    OTP_ENV,
    SUMMARIES,
    Subparsers,
    add_command,
    add_json_option,
    add_ledger_option,
    add_witness_option,
    config_file,
    difficulty,
    node_name,
    positive,
)
from .paths import store_target
from .report import print_cluster_demo, print_demo, print_export, print_import, print_verification
from .safe_output import EscapingWriter, escaped_stdout

# Every command's module, and what it imports (aiohttp, redis, zmq, prometheus-client, the node
# processes), cost ~0.9 s of CPU at start-up: what a script that runs `vledger put` per record
# paid each time. So the parsers are apart from the commands' modules (client_parsers.py,
# cluster_parsers.py), each naming what runs it (args.Deferred, imported when it runs); a command
# line builds the parser of the command it names alone (COMMANDS), `vledger --help` lists the
# commands from their summaries here, and a module imports what only some of its functions run
# where they run (the imports marked PLC0415).

DEFAULT_VOTERS = 1000  # a cluster demo's new voters
DEFAULT_RECORDS = 300  # a store demo's records

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def _exit_code(ok: bool) -> int:
    return EXIT_OK if ok else EXIT_FAILED


# --- commands -----------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    if args.cluster is not None:  # "" when --cluster is given bare: the configuration config_file finds
        from .cluster_verify import verify_cluster  # noqa: PLC0415 - see COMMANDS

        path = config_file(Path(args.cluster) if args.cluster else None, option="--cluster")
        return verify_cluster(path, args.json, args.key, args.timeout)
    # One thread: the workers start at once.
    from .verification import verify_path  # noqa: PLC0415 - see COMMANDS

    # Witness keys ask for what is witnessed: records no checkpoint covers are not.
    required = args.require_checkpoint or bool(args.witness)
    result = verify_path(
        args.path,
        args.ledger,
        Limits(),
        fork=True,
        witnesses=args.witness,
        require_checkpoint=required,
        rules=not args.no_rules,
    )
    print_verification(str(args.path), result, as_json=args.json)
    return _exit_code(result.ok)


def cmd_export(args: argparse.Namespace) -> int:
    from .exporting import export_store  # noqa: PLC0415 - see COMMANDS

    # A store that fails verification raises: nothing of it is exported.
    print_export(export_store(args.store, args.ledger, args.output, Limits()))
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from .importing import import_file  # noqa: PLC0415 - a store's writer: see COMMANDS

    result = import_file(args.file, args.store, args.node, Limits(), args.witness)
    print_import(str(args.file), result, as_json=args.json)
    return _exit_code(result.ok)


def cmd_demo(args: argparse.Namespace) -> int:
    """What `make run` shows, on a running cluster or a local store; safe to run again."""
    from .cluster_demo import run_cluster_demo  # noqa: PLC0415 - see COMMANDS
    from .demo import run_demo  # noqa: PLC0415

    if args.cluster is not None:
        if args.records is not None:
            raise UsageError("--records is for --store; a cluster demo takes --voters")
        say = functools.partial(print, flush=True)  # before the progress lines on stderr
        from .client_commands import ask_otp  # noqa: PLC0415

        cluster_run = run_cluster_demo(
            config_file(args.cluster, option="--cluster"),
            args.voters or DEFAULT_VOTERS,
            args.difficulty,
            say,
            # As every admin command takes it (README "second factor"): `make run` again once the admin enrolled one.
            otp=args.otp or os.environ.get(OTP_ENV) or None,
            ask=ask_otp if sys.stdin.isatty() else None,
        )
        print_cluster_demo(cluster_run)
        return _exit_code(cluster_run.ok)
    if args.voters is not None:
        raise UsageError("--voters is for --cluster; a store demo takes --records")
    run = run_demo(store_target(args.store), args.records or DEFAULT_RECORDS, args.difficulty, Limits())
    print_demo(run)
    return _exit_code(run.verification.ok)


# --- the parser ---------------------------------------------------------------------------


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415 - 25 ms at start-up, for --version alone

    try:
        return metadata.version("vledger")
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: argparse's, with the version looked up only when it is asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"vledger {_version()}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line with the parsers of ``command``'s module (see COMMANDS); with None, the
    parsers of every command: what the shell, the tests and the compose file check read."""
    parser = _top_parser()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders = [COMMANDS[command]] if command is not None else list(dict.fromkeys(COMMANDS.values()))
    for add in adders:
        add(commands)
    return parser


def listing_parser() -> argparse.ArgumentParser:
    """The command line as `vledger --help` shows it: every command by its summary, none of its
    options, no command's module imported. A usage error lists the same names."""
    parser = _top_parser()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in SUMMARIES.items():
        commands.add_parser(name, help=summary)
    return parser


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vledger", description="A tamper-evident, hash-chained public ledger.")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    parser.add_argument("--log-level", choices=LEVELS, default="warning", help="log to stderr from this level")
    return parser


# The parser modules, imported when one of their commands is named (see COMMANDS): light, but
# `vledger verify` needs none of their argument types (client_payloads.py, the rules' states).


def _add_node_commands(commands: Subparsers) -> None:
    from .cluster_parsers import add_node_commands  # noqa: PLC0415

    add_node_commands(commands)


def _add_admin_commands(commands: Subparsers) -> None:
    from .client_parsers import add_admin_verbs  # noqa: PLC0415
    from .cluster_parsers import add_admin_commands  # noqa: PLC0415

    add_admin_verbs(add_admin_commands(commands))


def _add_client_commands(commands: Subparsers) -> None:
    from .client_parsers import add_client_commands  # noqa: PLC0415

    add_client_commands(commands)


def _add_supervise_command(commands: Subparsers) -> None:
    from .cluster_parsers import add_supervise_command  # noqa: PLC0415

    add_supervise_command(commands)


def _add_tally_command(commands: Subparsers) -> None:
    from .cluster_parsers import add_tally_command  # noqa: PLC0415

    add_tally_command(commands)


def _add_repl_commands(commands: Subparsers) -> None:
    from .cluster_parsers import add_repl_commands  # noqa: PLC0415

    add_repl_commands(commands)


def _add_repair_command(commands: Subparsers) -> None:
    from .cluster_parsers import add_repair_command  # noqa: PLC0415

    add_repair_command(commands)


def _add_alert_commands(commands: Subparsers) -> None:
    from .cluster_parsers import add_alert_commands  # noqa: PLC0415

    add_alert_commands(commands)


def _add_status_command(commands: Subparsers) -> None:
    from .cluster_parsers import add_status_command  # noqa: PLC0415

    add_status_command(commands)


def _add_anchors_command(commands: Subparsers) -> None:
    from .cluster_parsers import add_anchors_command  # noqa: PLC0415

    add_anchors_command(commands)


def _add_verify(commands: Subparsers) -> None:
    verify = add_command(
        commands,
        "verify",
        cmd_verify,
        SUMMARIES["verify"],
        "Verify every record of a store directory or an export (.jsonl) file, from each "
        "ledger's genesis. Exit 0 if all is valid, 1 naming the ledger, height and failure otherwise; "
        "with --require-checkpoint or a --witness key, also 1 when a ledger has records past its largest "
        "checkpoint that verified (a copy whose tail was cut with its checkpoint lines looks whole). "
        "The observers' rules judge the records that verified, after the copy's admin ledger: a record "
        "they flag (a second vote, a write without a grant) fails its ledger with their code, and each "
        "counted ledger's tally is printed as they sign it. With --cluster, report the running "
        "cluster's open alerts (the verifier's findings, the observers' flags among them) instead, "
        "each with the node that raised it (two raisers of one key: two alerts), and for each ledger whose "
        "genesis lists outside witnesses how far a quorum of them cosigned it and whether every copy holds "
        "that tree (asking the nodes): exit 1 while there is an open alert or such a ledger fails.",
    )
    what = verify.add_mutually_exclusive_group(required=True)
    what.add_argument("path", type=Path, nargs="?", metavar="PATH", help="a store directory or an export file")
    what.add_argument(
        "--cluster",
        nargs="?",
        const="",
        metavar="FILE",
        help=f"a cluster's open alerts; FILE its configuration (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )
    add_ledger_option(verify, "verify")
    add_witness_option(verify, "check")
    verify.add_argument(
        "--require-checkpoint",
        action="store_true",
        help="exit 1 when a ledger has records past its largest checkpoint that verified "
        "(implied by --witness); without it they are only reported",
    )
    verify.add_argument(
        "--no-rules",
        action="store_true",
        help="check the records, trees and signatures only, not the observers' rules (nor count)",
    )
    verify.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help=f"with --cluster: the secret key that asks the nodes (default: ${KEY_ENV}, else a node's key of the "
        "cluster's key directory)",
    )
    verify.add_argument(
        "--timeout",
        type=positive,
        default=5,
        metavar="SECONDS",
        help="with --cluster: how long one node's answer may take (5)",
    )
    add_json_option(verify)


def _add_export(commands: Subparsers) -> None:
    export = add_command(
        commands,
        "export",
        cmd_export,
        SUMMARIES["export"],
        "Verify and write a store's records, one JSON line each, in ledger then height order.",
    )
    export.add_argument("store", type=Path, metavar="STORE", help="a store directory")
    add_ledger_option(export, "export")
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: stdout)")


def _add_import(commands: Subparsers) -> None:
    imp = add_command(
        commands,
        "import",
        cmd_import,
        SUMMARIES["import"],
        "Verify the whole export file against the store first; only if everything "
        "verifies, append the records the store does not hold yet. Otherwise nothing is written. "
        "It verifies what a replica does (records, chain, checkpoints), not the observers' rules: "
        "a ledger's records are its home's, rule breakers included; `vledger verify` of the store "
        "judges those.",
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="an export file")
    imp.add_argument("--store", type=Path, metavar="DIR", required=True, help="the store to import into")
    imp.add_argument("--node", type=node_name, metavar="NAME", help="this store's node name")
    add_witness_option(imp, "check")
    add_json_option(imp)


def _add_demo(commands: Subparsers) -> None:
    demo = add_command(
        commands,
        "demo",
        cmd_demo,
        SUMMARIES["demo"],
        "With --cluster: as the cluster's admin, create the election, zakat and resource ledgers "
        "if missing, register a batch of new voters who vote (some change their mind, a few "
        "withdraw), donate, disburse, issue and transfer, all with real proof of work; then read "
        "each ledger back from its node, recount it through the rules, and verify every node's "
        "store. With --store: the same three ledgers in a local store, a few hundred records, verified.",
    )
    where = demo.add_mutually_exclusive_group(required=True)
    where.add_argument("--cluster", type=Path, metavar="CONFIG", help="the running cluster's configuration")
    where.add_argument("--store", type=Path, metavar="DIR", help="a local store directory")
    demo.add_argument("--voters", type=positive, metavar="N", help=f"new voters in a cluster demo ({DEFAULT_VOTERS})")
    demo.add_argument("--records", type=positive, metavar="N", help=f"records to append to a store ({DEFAULT_RECORDS})")
    demo.add_argument(
        "--otp",
        metavar="CODE",
        help=f"with --cluster, the admin's one-time code or recovery code once it has a second factor (default: "
        f"${OTP_ENV}; asked on a terminal when a node wants one)",
    )
    # A lower difficulty is for tests only: it applies to new ledgers and weakens the demo.
    demo.add_argument("--difficulty", type=difficulty, default=DEFAULT_DIFFICULTY, help=argparse.SUPPRESS)


# What adds each command's parser (and the parsers of its module's other commands): a command
# line builds the one it names; `vledger --help` lists args.SUMMARIES.
COMMANDS: dict[str, Callable[[Subparsers], None]] = {
    "verify": _add_verify,
    "export": _add_export,
    "import": _add_import,
    "demo": _add_demo,
    "ingest": _add_node_commands,
    "replica": _add_node_commands,
    "observer": _add_node_commands,
    "verifier": _add_node_commands,
    "gateway": _add_node_commands,
    "redis-functions": _add_node_commands,
    "keygen": _add_node_commands,
    "admin": _add_admin_commands,
    "hello": _add_client_commands,
    "whoami": _add_client_commands,
    "ledger": _add_client_commands,
    "put": _add_client_commands,
    "get": _add_client_commands,
    "range": _add_client_commands,
    "head": _add_client_commands,
    "size": _add_client_commands,
    "vote": _add_client_commands,
    "donate": _add_client_commands,
    "disburse": _add_client_commands,
    "transfer": _add_client_commands,
    "issue": _add_client_commands,
    "seal": _add_client_commands,
    "unseal": _add_client_commands,
    "seal-key": _add_client_commands,
    "file": _add_client_commands,
    "user": _add_client_commands,
    "receipt": _add_client_commands,
    "grant": _add_client_commands,
    "key": _add_client_commands,
    "shell": _add_client_commands,
    "supervise": _add_supervise_command,
    "tally": _add_tally_command,
    "repl": _add_repl_commands,
    "repair": _add_repair_command,
    "alerts": _add_alert_commands,
    "status": _add_status_command,
    "anchors": _add_anchors_command,
}


# --- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse, run one command, turn every expected failure into an exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = _command_word(words)
    parser = build_parser(command) if command in COMMANDS else listing_parser()
    if not words:
        parser.print_help(sys.stderr)  # what there is to run, rather than "COMMAND is required"
        return EXIT_USAGE
    try:
        args, extra = parser.parse_known_args(argv)
        # argparse fills a list of positionals (nargs="*") only from the words before the first
        # option after them: `alerts resolve --config F KEY` left KEY over. A command that
        # names such a list (``trailing``) takes the words left over; anything else is refused.
        trailing: str | None = getattr(args, "trailing", None)
        if extra and (trailing is None or any(word.startswith("-") for word in extra)):
            args = parser.parse_args(argv)  # argparse's own usage error
        elif extra and trailing is not None:
            getattr(args, trailing).extend(extra)
    except SystemExit as e:  # --help, --version or a usage error, already printed by argparse
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    configure_logging(args.log_level)
    run: Callable[[argparse.Namespace], int] = args.run
    # With --json, a failure is also one JSON object on stdout, where a script reads the answer,
    # unless the command already wrote its own answer there (repair's refusal is one object).
    as_json = bool(getattr(args, "json", False))
    out: EscapingWriter | None = None

    def error(message: str, code: str | None = None, text: str = "", details: dict[str, object] | None = None) -> None:
        _error(message, code, text, details, as_json=as_json and not (out is not None and out.written))

    try:
        with escaped_stdout() as out:
            return run(args)
    except UsageError as e:
        error(f"{e.message} (see: vledger {args.command} --help)", e.code, e.message)
        return EXIT_USAGE
    except NodeRunningError as e:
        from ..config.supervisor import EXIT_NODE_RUNNING  # noqa: PLC0415 - see COMMANDS

        error(f"{e.code}: {e.message}", e.code, e.message)
        return EXIT_NODE_RUNNING
    except StoreDamagedError as e:
        # A node whose store does not open: supervisord takes this status as final (config/supervisor.py,
        # imported here: it reads the cluster file's format, which no local command needs at start-up).
        from ..config.supervisor import EXIT_STORE_DAMAGED  # noqa: PLC0415 - see COMMANDS

        error(f"{e.code}: {e.message}", e.code, e.message)
        return EXIT_STORE_DAMAGED
    except VledgerError as e:
        # A note says what had already been done when the error came (see importing.apply_import).
        for note in getattr(e, "__notes__", ()):
            print(f"vledger: {escape(note)}", file=sys.stderr)
        # A node's refusal already starts with its code; a local failure gets it here.
        if isinstance(e, RemoteError):
            error(e.message, e.code, e.reason, e.details)
        else:
            error(f"{e.code}: {e.message}", e.code, e.message)
        return EXIT_FAILED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILED
    except OSError as e:
        error(_os_message(e), VledgerError.code, _os_message(e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:
        # A command that reads Redis without wrapping its errors (admin bootstrap did) still
        # fails with the documented code and object, not a traceback a script cannot read.
        failed = _redis_failure(e)
        if failed is None:
            raise
        error(f"{failed.code}: {failed.message}", failed.code, failed.message)
        return EXIT_FAILED


def _command_word(words: Sequence[str]) -> str | None:
    """The command ``words`` name when only ``--log-level`` (and its value) comes before it, else
    None: an option such as ``--help`` or ``--version`` before the command is the full parser's."""
    rest = iter(words)
    for word in rest:
        if not word.startswith("-"):
            return word
        name = word.partition("=")[0]
        # argparse takes any unambiguous prefix of an option: "--log" is --log-level.
        if len(name) < 3 or not "--log-level".startswith(name):
            return None
        if "=" not in word:
            next(rest, None)  # its value
    return None


def _error(
    message: str,
    code: str | None = None,
    text: str = "",
    details: dict[str, object] | None = None,
    *,
    as_json: bool = False,
) -> None:
    """``message`` on stderr; with ``as_json``, also ``{"error": {"code", "message", ...}}`` (``code``
    and ``text``, and a node's refusal's own fields, ``details``: PROTOCOL 6.2) on stdout, one line."""
    # A node's message may quote what it was sent: escape it as stdout is (safe_output.py).
    print(f"vledger: error: {escape(message)}", file=sys.stderr)
    if as_json and code is not None:
        # ensure_ascii: every control or non-ASCII character is a \u escape, nothing for a terminal to run.
        with contextlib.suppress(OSError):
            print(json.dumps(error_json(code, text, details), ensure_ascii=True, default=str), flush=True)


def _redis_failure(error: Exception) -> RedisServerError | None:
    """``error`` as ``redis_server`` when it is the Redis client's; redis is looked up, not
    imported: a command that never loaded it cannot have raised its errors."""
    client = sys.modules.get("redis.exceptions")
    if client is None or not isinstance(error, client.RedisError):
        return None
    unanswered = isinstance(error, (client.ConnectionError, client.TimeoutError))
    if "WRONGTYPE" in str(error):  # Redis answered: one key is of another type (outsider 31, N1)
        return RedisServerError(f"Redis refused: {wrong_type_message(error)}")
    if isinstance(error, client.AuthenticationError):  # a ConnectionError, yet Redis answered (o21 F6)
        return RedisServerError(f"Redis {refused_login_message(error)}")
    return RedisServerError(f"Redis {'does not answer' if unanswered else 'refused'}: {error}")


def _os_message(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename is not None else ""
    return f"{where}{error.strerror or error}"


def _silence_stdout() -> None:
    """After a closed pipe (``vledger export | head``), stop Python's final flush from failing too."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
