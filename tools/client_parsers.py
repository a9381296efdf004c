"""The parsers of the client verbs (client_commands.py runs them): built without importing
client_commands, its session, ZeroMQ or the ciphers, which a command imports when it runs
(cli.COMMANDS). Each parser names what runs it: a :class:`Verb`, or an :class:`~.args.Deferred`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..config.settings import DEFAULT_DIFFICULTY
from ..node.node_keys import NodeKeys, decode_node_keys
from .args import (
    CONFIG_HELP,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    KEY_ENV,
    OTP_ENV,
    PASSPHRASE_ENV,
    SUMMARIES,
    Deferred,
    Subparsers,
    add_command,
    add_config_option,
    add_json_option,
    count_arg,
    difficulty,
    electronic_id_arg,
    ledger_name,
    node_name,
    positive,
    vkey_arg,
)
from .client_payloads import (
    account_name,
    amount,
    height,
    json_map,
    kind_list,
    milliseconds,
    record_hash,
    seconds,
    sha256_hex,
)

CLIENT_OPTIONS = ("config", "node", "key", "timeout", "otp")  # the shell's: every line's defaults
ROLES = ("admin", "writer", "observer", "replica")

# A Z85 key may start with "-", which argparse would take for an option: `--` ends the options.
KEY_ARGUMENT_HELP = "the public key file, or the Z85 key itself (one that starts with - goes after --)"


@dataclass(frozen=True)
class Verb(Deferred):
    """A client verb: what it names runs on a session (client_commands.with_session gives it one)."""

    def __call__(self, args: argparse.Namespace) -> int:
        from .client_commands import with_session  # noqa: PLC0415 - see the module's docstring

        return with_session(self.target())(args)


def node_keys_arg(value: str) -> NodeKeys:
    try:
        return decode_node_keys(value)
    except Exception as e:
        raise argparse.ArgumentTypeError(f"not node keys: {getattr(e, 'message', e)}") from None


# --- the verbs ---------------------------------------------------------------------------------


def add_client_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("connection")
    group.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    group.add_argument(
        "--node",
        type=node_name,
        metavar="NAME",
        help="the node to talk to (default: the ledger's home as the configuration names it, its default_home "
        "for a command of no ledger; vote check: its first replica); a write goes on to the ledger's home",
    )
    group.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help=f"your secret key, NAME.key_secret (default: ${KEY_ENV}); its passphrase from ${PASSPHRASE_ENV} or asked",
    )
    group.add_argument(
        "--otp",
        metavar="CODE",
        help=f"an admin's one-time code or recovery code (default: ${OTP_ENV}; asked on a terminal when a node "
        "wants one)",
    )
    group.add_argument(
        "--timeout", type=seconds, metavar="SECONDS", help=f"wait this long for each answer ({DEFAULT_TIMEOUT:g})"
    )
    command.set_defaults(pool=None)  # the shell sets its SessionPool after parsing


def _verb(commands: Subparsers, name: str, verb: Verb, summary: str, description: str) -> argparse.ArgumentParser:
    command = add_command(commands, name, verb, summary, description)
    add_client_options(command)
    add_json_option(command)
    return command


def _write_verb(commands: Subparsers, name: str, verb: Verb, summary: str, description: str) -> argparse.ArgumentParser:
    command = _verb(commands, name, verb, summary, description)
    command.add_argument(
        "--request-id",
        metavar="ID",
        help="the request's id (default: a new random one); the same id and content are written at most once",
    )
    command.add_argument(
        "--ts",
        type=milliseconds,
        metavar="MS",
        help="the record's client time, ms since 1970 UTC (default: now); with --request-id, repeats a write",
    )
    return command


def _add_write_concern(command: argparse.ArgumentParser) -> None:
    """``-w N``, for every verb that writes one record with ``session.put`` (PROTOCOL 10.3)."""
    command.add_argument(
        "-w",
        "--replicas",
        type=count_arg,
        default=0,
        metavar="N",
        help="answer once N replicas hold the record (else exit 1 with replication_timeout; the record "
        "stays written at home)",
    )


def _group(commands: Subparsers, name: str, summary: str, description: str) -> Subparsers:
    group = commands.add_parser(name, help=summary, description=description)
    return group.add_subparsers(dest=f"{name}_action", required=True, metavar="ACTION")


def _add_ledger_verbs(commands: Subparsers) -> None:
    _verb(
        commands,
        "hello",
        Verb("client_commands", "cmd_hello"),
        SUMMARIES["hello"],
        "Say hello to a node.",
    )
    _verb(
        commands,
        "whoami",
        Verb("client_commands", "cmd_whoami"),
        SUMMARIES["whoami"],
        "Show the account your key is bound to.",
    )
    ledger = _group(
        commands,
        "ledger",
        SUMMARIES["ledger"],
        "List the cluster's ledgers, start one, hand one to its standby, or rotate its checkpoint key.",
    )
    _verb(
        ledger,
        "list",
        Verb("client_commands", "cmd_ledger_list"),
        "the cluster's ledgers",
        "List every ledger of the cluster, as its home node reports it (with --node: the ledgers that node holds).",
    )
    create = _write_verb(
        ledger,
        "create",
        Verb("client_commands", "cmd_ledger_create"),
        "start a ledger (admin)",
        "Start a ledger with its genesis record: the kinds it allows, its proof-of-work difficulty and "
        "its domain rules (node/rules/: election, charity, resources, files). The kinds a domain reads "
        "are added to --kinds. The proof of work is done here, before sending. An election's or a "
        "charity's kinds that move votes or money are first granted to you, so that no other writer "
        "may write them (--open: leave them open).",
    )
    create.add_argument("ledger", type=ledger_name, metavar="NAME", help="the new ledger's name")
    create.add_argument("--kinds", type=kind_list, metavar="A,B", help="the record kinds allowed after genesis")
    create.add_argument(
        "--difficulty",
        type=difficulty,
        default=DEFAULT_DIFFICULTY,
        metavar="N",
        help=f"proof-of-work bits every record needs ({DEFAULT_DIFFICULTY})",
    )
    create.add_argument(
        "--rules",
        type=json_map,
        default={},
        metavar="JSON",
        help='domain rules, e.g. \'{"type":"election","choices":["a","b"],"opens":MS,"closes":MS}\'',
    )
    create.add_argument(
        "--open",
        action="store_true",
        help="leave the kinds that move votes or money open to every writer; without it an election's "
        "register, cast, uncast and withdraw, and a charity's donation and disbursement, are granted to "
        "you before the genesis (PROTOCOL 16.2)",
    )
    create.add_argument(
        "--keep-grants",
        action="store_true",
        help="create the ledger even if another account already holds one of those kinds (granted before "
        "the ledger existed: vledger grant add --before-create); without it that is refused (already_granted)",
    )
    create.add_argument(
        "--outside-witness",
        type=vkey_arg,
        action="append",
        metavar="VKEY",
        help="an outside witness's cosignature key to list in the genesis (repeatable; PROTOCOL 13.9)",
    )
    create.add_argument(
        "--outside-quorum",
        type=int,
        metavar="N",
        help="how many outside witnesses must cosign a checkpoint (default: all listed)",
    )
    promote = _verb(
        ledger,
        "promote",
        Verb("client_commands", "cmd_ledger_promote"),
        "make a ledger's standby its home (admin)",
        "Make NODE, the ledger's standby in the cluster file, its home in a new epoch (PROTOCOL 10.9). "
        "NODE refuses while it lacks a record a witness cosigned; it places the handover record, "
        "signs the ledger's checkpoints from then on, and the old home is fenced.",
    )
    promote.add_argument("ledger", type=ledger_name, metavar="LEDGER", help="the ledger to hand over")
    # Not "node": the global --node option has that name, and would silently take its place.
    promote.add_argument("standby", type=ledger_name, metavar="NODE", help="its standby ingest node")
    promote.add_argument(
        "--key-not-stolen",
        action="store_true",
        help="a failback (NODE was the ledger's home before: epoch 3 and later) gives NODE's checkpoint key "
        "the pen again: confirm that key was not stolen (a host outage, not a theft); if it was, make a new ledger. "
        "Stop the current home first (refused while it answers), and swap home and standby in the cluster file "
        "on every host (witnesses take epoch 3 only so)",
    )
    rotate = _verb(
        ledger,
        "rotate-key",
        Verb("client_commands", "cmd_ledger_rotate_key"),
        "rotate a ledger's checkpoint key (admin)",
        "Rotate the checkpoint key of a ledger whose genesis pins one: its home makes a new key file "
        "beside its node key and appends a checkpoint_key record signed by the old key; checkpoints "
        "past that record are signed by the new key (docs/PROTOCOL.md 13.8).",
    )
    rotate.add_argument("ledger", type=ledger_name, metavar="NAME", help="the ledger")


def _add_record_verbs(commands: Subparsers) -> None:
    put = _write_verb(
        commands,
        "put",
        Verb("client_commands", "cmd_put"),
        SUMMARIES["put"],
        "Append a record of KIND with a JSON payload, with its proof of work, on the ledger's home node. "
        "A payload holds no floats: amounts are whole numbers of minor units (cents, halalas).",
    )
    put.add_argument("ledger", type=ledger_name, metavar="LEDGER")
    put.add_argument("kind", metavar="KIND", help="one of the kinds the ledger's genesis allows")
    put.add_argument("--payload", type=json_map, required=True, metavar="JSON", help="a JSON object")
    _add_write_concern(put)

    get = _verb(
        commands,
        "get",
        Verb("client_commands", "cmd_get"),
        SUMMARIES["get"],
        "Show a record, by ledger and height or by hash, after checking its checksum, proof of work and link.",
    )
    get.add_argument("ledger", type=ledger_name, nargs="?", metavar="LEDGER")
    get.add_argument("height", type=height, nargs="?", metavar="HEIGHT")
    get.add_argument("--hash", type=record_hash, metavar="HEX", help="the record's hash (64 hex characters)")

    ranged = _verb(
        commands,
        "range",
        Verb("client_commands", "cmd_range"),
        SUMMARIES["range"],
        "List a ledger's records from a height to its head, a page at a time, checking each one as the "
        "next of the chain and, below the node's latest signed checkpoint, each run of 256 by an inclusion "
        "proof in it (bad_proof: the node serves another chain) before it is shown (with --json: one JSON "
        'object {"ledger", "start", "records": [...]}, a record a line as each is checked; a failure part-way '
        'ends it with its "error" beside the records before it).',
    )
    ranged.add_argument("ledger", type=ledger_name, metavar="LEDGER")
    ranged.add_argument("--start", type=height, default=0, metavar="N", help="the first height (0)")

    head = _verb(
        commands,
        "head",
        Verb("client_commands", "cmd_head"),
        SUMMARIES["head"],
        "Show a ledger's last record, checked.",
    )
    head.add_argument("ledger", type=ledger_name, metavar="LEDGER")

    size = _verb(
        commands,
        "size",
        Verb("client_commands", "cmd_size"),
        SUMMARIES["size"],
        "Print a ledger's number of records.",
    )
    size.add_argument("ledger", type=ledger_name, metavar="LEDGER")


def _domain_verb(
    commands: Subparsers, name: str, verb: Verb, summary: str, description: str, ledger: str = "LEDGER"
) -> argparse.ArgumentParser:
    command = _write_verb(commands, name, verb, summary, description)
    command.add_argument("ledger", type=ledger_name, metavar=ledger)
    _add_write_concern(command)  # a donation or a vote may need to be on N replicas as much as a put
    return command


def _add_vote_verbs(commands: Subparsers) -> None:
    vote = _group(commands, "vote", SUMMARIES["vote"], "Write an election's records.")
    register = _domain_verb(
        vote,
        "register",
        Verb("client_commands", "cmd_vote_register"),
        "register a voter; prints the electronic id",
        "Register a voter id on an election ledger and print the electronic id the ledger allocates: "
        "the voter casts with it, and nobody else learns whose it is.",
        "ELECTION",
    )
    register.add_argument("--voter-id", required=True, metavar="V", help="the authority's voter id")
    cast = _domain_verb(
        vote,
        "cast",
        Verb("client_commands", "cmd_vote_cast"),
        "cast a vote",
        "Cast the vote of an electronic id.",
        "ELECTION",
    )
    _add_electronic_id(cast)
    cast.add_argument("--choice", required=True, metavar="C", help="one of the election's choices")
    for name, verb, summary in (
        ("uncast", Verb("client_commands", "cmd_vote_uncast"), "take back a vote (one may vote again)"),
        ("withdraw", Verb("client_commands", "cmd_vote_withdraw"), "withdraw a voter: the vote no longer counts"),
    ):
        _add_electronic_id(_domain_verb(vote, name, verb, summary, summary[0].upper() + summary[1:] + ".", "ELECTION"))
    check = add_command(
        vote,
        "check",
        Deferred("client_commands", "cmd_vote_check"),
        "find your records on a verified copy of the chain",
        "Read the election from a replica or an observer (default: the configuration's first replica), find "
        "the records of an electronic id and prove each by inclusion in the latest signed checkpoint (with "
        "--full: verify every record from genesis to the head instead); either way the records read must make "
        "the tree of that checkpoint (bad_proof: the node serves another chain). Show their heights and hashes "
        "and whether the vote counts. Without ELECTION, every election the node holds. "
        "Exit 1 if the chain does not verify, or with not_found if the id has no records.",
    )
    add_client_options(check)
    add_json_option(check)
    check.add_argument("ledger", type=ledger_name, nargs="?", metavar="ELECTION")
    check.add_argument("--electronic-id", type=electronic_id_arg, required=True, metavar="E", help="your electronic id")
    check.add_argument(
        "--full",
        action="store_true",
        help="verify and replay every record from genesis instead of proofs (their tree must still be the "
        "signed checkpoint's)",
    )
    check.add_argument(
        "--quorum", type=count_arg, default=0, metavar="N", help="cosignatures the checkpoint needs (default 0)"
    )


def _add_electronic_id(command: argparse.ArgumentParser) -> None:
    command.add_argument("--electronic-id", required=True, metavar="E", help="the id `vote register` printed")


def _add_money_verbs(commands: Subparsers) -> None:
    minor_units = "a whole number of minor units (cents, halalas)"
    donate = _domain_verb(
        commands,
        "donate",
        Verb("client_commands", "cmd_donate"),
        SUMMARIES["donate"],
        "Record a donation on a charity ledger. The donor is a sealed id: give the donor's information "
        "with --donor-info-file (or --donor-info) and --seal-key (sealed here, with the ledger's name as "
        "context), or an id "
        "already sealed with --donor.",
    )
    who = donate.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--donor-info",
        metavar="TEXT",
        help="the donor's information, sealed before it is sent (visible to other local users while the "
        "command runs, and kept in shell history: prefer --donor-info-file)",
    )
    who.add_argument(
        "--donor-info-file",
        metavar="FILE",
        help="read the donor's information from FILE, or standard input for -, less one final line end",
    )
    who.add_argument("--donor", metavar="SEALED", help="the donor's sealed id (S2-..., or an older S1-...)")
    donate.add_argument("--seal-key", type=Path, metavar="FILE", help="the seal key for --donor-info(-file)")
    donate.add_argument("--fund", required=True, metavar="F")
    donate.add_argument("--amount", type=amount, required=True, metavar="MINOR_UNITS", help=minor_units)
    donate.add_argument("--source", required=True, metavar="S", help="where the money came from (may be empty)")
    donate.add_argument("--purpose", required=True, metavar="P", help="what it is for (may be empty)")

    disburse = _domain_verb(
        commands,
        "disburse",
        Verb("client_commands", "cmd_disburse"),
        SUMMARIES["disburse"],
        "Record a disbursement from a charity fund.",
    )
    disburse.add_argument("--fund", required=True, metavar="F")
    disburse.add_argument("--target", required=True, metavar="T", help="who receives it")
    disburse.add_argument("--amount", type=amount, required=True, metavar="N", help=minor_units)
    disburse.add_argument("--purpose", required=True, metavar="P", help="what it is for (may be empty)")

    transfer = _domain_verb(
        commands,
        "transfer",
        Verb("client_commands", "cmd_transfer"),
        SUMMARIES["transfer"],
        "Move units of a resources ledger from your own account to another.",
    )
    transfer.add_argument("--to", type=account_name, required=True, metavar="ACCOUNT")
    transfer.add_argument("--amount", type=amount, required=True, metavar="N", help="whole units, 1 or more")

    issue = _domain_verb(
        commands,
        "issue",
        Verb("client_commands", "cmd_issue"),
        SUMMARIES["issue"],
        "Create units of a resources ledger for an account.",
    )
    issue.add_argument("--account", type=account_name, required=True, metavar="A")
    issue.add_argument("--amount", type=amount, required=True, metavar="N", help="whole units, 1 or more")


def _add_seal_verbs(commands: Subparsers) -> None:
    context = "the context sealed with; `donate` uses the ledger's name (default: none)"
    sealer = add_command(
        commands,
        "seal",
        Deferred("client_commands", "cmd_seal"),
        SUMMARIES["seal"],
        "Print the sealed id of TEXT (S2: padded, so its length does not tell TEXT's; at most 1023 UTF-8 "
        "bytes): the same text, key and context always give the same id, and only the key's holder can "
        "open it. Nothing is sent anywhere.",
    )
    sealer.add_argument("--key", dest="seal_key", type=Path, required=True, metavar="FILE", help="the seal key file")
    sealer.add_argument(
        "text",
        nargs="?",
        metavar="TEXT",
        help="the information (visible to other local users while the command runs: prefer --file)",
    )
    sealer.add_argument(
        "--file",
        metavar="FILE",
        help="read the information from FILE, or standard input for -, less one final line end",
    )
    sealer.add_argument("--context", default="", metavar="LEDGER", help=context)
    opener = add_command(
        commands,
        "unseal",
        Deferred("client_commands", "cmd_unseal"),
        SUMMARIES["unseal"],
        "Print the information a sealed id holds.",
    )
    opener.add_argument("--key", dest="seal_key", type=Path, required=True, metavar="FILE", help="the seal key file")
    opener.add_argument("sealed", metavar="SEALED")
    opener.add_argument("--context", default="", metavar="LEDGER", help=context)
    key = add_command(
        commands,
        "seal-key",
        Deferred("client_commands", "cmd_seal_key"),
        SUMMARIES["seal-key"],
        "Write a new random 64-byte seal key (AES-256-SIV) to FILE, mode 0600. An existing file is never replaced.",
    )
    key.add_argument("--out", type=Path, required=True, metavar="FILE")


def _add_file_verbs(commands: Subparsers) -> None:
    files = _group(commands, "file", SUMMARIES["file"], "Upload a file to a files ledger, or fetch one.")
    put = _write_verb(
        files,
        "put",
        Verb("client_commands", "cmd_file_put"),
        "upload a file and record it",
        "Upload PATH to the files ledger's home node in chunks, then write a `file` record "
        "{name, size, sha256} on LEDGER.",
    )
    put.add_argument("ledger", type=ledger_name, metavar="LEDGER")
    put.add_argument("path", type=Path, metavar="PATH")
    put.add_argument("--name", metavar="NAME", help="the name to record (default: PATH's file name)")
    get = _verb(
        files,
        "get",
        Verb("client_commands", "cmd_file_get"),
        "download a file by its SHA-256",
        "Download a file in chunks; it is moved to PATH only once its SHA-256 matched.",
    )
    get.add_argument("sha256", type=sha256_hex, metavar="SHA256")
    get.add_argument("-o", "--output", type=Path, required=True, metavar="PATH", help="where to write it")
    get.add_argument("--force", action="store_true", help="replace PATH if it exists")


def _add_user_verbs(commands: Subparsers) -> None:
    users = _group(commands, "user", SUMMARIES["user"], "Manage accounts and their keys (admin).")
    add = _verb(
        users, "add", Verb("client_commands", "cmd_user_add"), "create an account", "Create an account with a role."
    )
    add.add_argument("account", type=account_name, metavar="NAME")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument(
        "--reuse-name",
        action="store_true",
        help="add the account even if the name holds units or may issue on a resources ledger (a removed "
        "account's, or units sent to the name before): the new account takes them; without it that is "
        "refused (name_holds_units)",
    )
    remove = _verb(
        users,
        "remove",
        Verb("client_commands", "cmd_user_remove"),
        "delete an account, its keys and its grants",
        "Delete an account, its keys and its grants; say what units and issuer rights its name keeps.",
    )
    remove.add_argument("account", type=account_name, metavar="NAME")
    for action, done, summary in (
        ("enable", "enabled", "let an account's keys in again"),
        ("disable", "disabled", "refuse an account's keys from their next request"),
    ):
        command = _verb(
            users,
            action,
            Verb("client_commands", "_account_action", (f"account.{action}", done)),
            summary,
            summary.capitalize() + ".",
        )
        command.add_argument("account", type=account_name, metavar="NAME")
    _verb(
        users,
        "list",
        Verb("client_commands", "cmd_user_list"),
        "every account, role, state, keys",
        "List every account and its keys.",
    )
    keys = users.add_parser("key", help="add or revoke an account's keys", description="Add or revoke keys.")
    key_actions = keys.add_subparsers(dest="key_action", required=True, metavar="ACTION")
    key_add = _verb(
        key_actions,
        "add",
        Verb("client_commands", "cmd_user_key_add"),
        "bind a public key to an account",
        "Bind a public key to an account.",
    )
    key_add.add_argument("account", type=account_name, metavar="NAME")
    key_add.add_argument("keyfile", metavar="KEYFILE.key", help=KEY_ARGUMENT_HELP)
    revoke = _verb(
        key_actions,
        "revoke",
        Verb("client_commands", "cmd_user_key_revoke"),
        "refuse a key from its next request",
        "Revoke a key: every node refuses it from its next request.",
    )
    revoke.add_argument(
        "account", type=account_name, nargs="?", metavar="NAME", help="the account it is bound to (checked first)"
    )
    revoke.add_argument("keyfile", metavar="KEYFILE.key", help=KEY_ARGUMENT_HELP)


# What a user must know before a first grant (outsider o12 R2: the help said only "Let an account write a kind").
GRANT_ADD_MORE = (
    " A kind is open to every writer until its first grant, which closes it for good: from then on only "
    "the accounts holding a grant for it (or for *) may write it, and revoking every grant leaves it "
    "closed to all (PROTOCOL 16.2). No grant closes a resources ledger's issue or transfer: its rules "
    "already let only the genesis issuers issue and each holder move only its own units (7.3), so a "
    "grant of either is refused (not_grantable), as is one of a kind the ledger's genesis does not list "
    "(unknown_kind)."
)


def _add_grant_verbs(commands: Subparsers) -> None:
    grants = _group(
        commands,
        "grant",
        SUMMARIES["grant"],
        "Grant or revoke the right to write a kind of record on a ledger (recorded on the admin ledger), "
        "or list the grants in force.",
    )
    for action, cmd, summary, more in (
        ("add", "grant.add", "let an account write a kind of record on a ledger", GRANT_ADD_MORE),
        ("revoke", "grant.revoke", "end an account's grant", " A revoke does not reopen the kind (PROTOCOL 16.2)."),
    ):
        command = _verb(
            grants, action, Verb("client_commands", "_grant_action", (cmd,)), summary, summary.capitalize() + "." + more
        )
        command.add_argument("ledger", type=ledger_name, metavar="LEDGER")
        command.add_argument(
            "kind",
            metavar="KIND",
            help="a record kind, or * for every data kind of the ledger (epoch and checkpoint_key, which the node "
            "places for an admin's ledger promote and rotate-key, take no grant and stay admin-only)",
        )
        command.add_argument("account", type=account_name, metavar="ACCOUNT")
        if action == "add":
            command.add_argument(
                "--before-create",
                action="store_true",
                help="grant on a ledger that does not exist yet (without it that is refused: no_such_ledger); "
                "vledger ledger create then names every holder and refuses other accounts' without --keep-grants",
            )
    _verb(
        grants,
        "list",
        Verb("client_commands", "cmd_grant_list"),
        "the grants in force",
        "The grants in force, replayed from the admin ledger.",
    )


def _add_key_verbs(commands: Subparsers) -> None:
    keys = _group(commands, "key", SUMMARIES["key"], "Rotate a node's keys (PROTOCOL 16.6).")
    rotate = _verb(
        keys,
        "rotate",
        Verb("key_commands", "cmd_key_rotate"),
        "a node's new key; the old one works until the window ends",
        "Make a node's next key and record the rotation on the admin ledger: an ingest node's CURVE key "
        "pair (during the window it serves the old key on its port and the new one on its rotation_port; "
        "then only the new one), a replica's or an observer's Ed25519 cosignature key (its cosignatures by "
        "the old key count only when stamped before the window's end, with its CURVE key if it has a "
        "rotation_port), a verifier's CURVE key (the key it reads the nodes with and serves status on).",
    )
    # Not "node": the global --node option (which node a command goes to) has that name.
    rotate.add_argument("rotated", metavar="NODE")
    rotate.add_argument(
        "--window",
        type=positive,
        default=DEFAULT_WINDOW_SECONDS,
        metavar="SECONDS",
        help=f"how long the old key keeps working (default {DEFAULT_WINDOW_SECONDS})",
    )
    rotate.add_argument(
        "--passphrase",
        action="store_true",
        help=f"protect the new secret key with the node's passphrase, from ${PASSPHRASE_ENV}",
    )


def add_admin_verbs(actions: Subparsers) -> None:
    """``vledger admin log`` and ``vledger admin totp``: the admin ledger, record by record, and
    admins' second factors (the ``admin`` group is the node commands')."""
    _verb(
        actions,
        "log",
        Verb("client_commands", "cmd_admin_log"),
        "every account, key and grant change, in order",
        "Show the admin ledger: each change of an account, key, grant or node key, when, by whom and "
        "through which key, each record checked as the next of the chain.",
    )
    totp = actions.add_parser(
        "totp",
        help="admins' second factors (TOTP)",
        description="Give an admin account a second factor: an authenticator app's one-time codes (RFC 6238) "
        "and ten recovery codes, printed once. Admin commands then need a code (--otp), and in production "
        "mode ([cluster] production = true) every admin command does.",
    )
    totp_actions = totp.add_subparsers(dest="totp_action", required=True, metavar="ACTION")
    enroll = _verb(
        totp_actions,
        "enroll",
        Verb("client_commands", "_totp_action", ("totp.enroll",)),
        "a first second factor for an admin (default: you)",
        "Enroll an admin account that has no second factor (default: your own): prints its otpauth:// URI "
        "and recovery codes once.",
    )
    enroll.add_argument("account", type=account_name, nargs="?", metavar="ACCOUNT")
    reset = _verb(
        totp_actions,
        "reset",
        Verb("client_commands", "_totp_action", ("totp.reset",)),
        "a new second factor for another admin",
        "Replace another admin's second factor (a lost phone): the old codes and recovery codes stop working; "
        "prints the new URI and recovery codes once, to hand over.",
    )
    reset.add_argument("account", type=account_name, metavar="ACCOUNT")


def add_client_verbs(commands: Subparsers) -> None:
    """Every client verb: what ``vledger`` offers and what a shell line may run."""
    _add_ledger_verbs(commands)
    _add_record_verbs(commands)
    _add_vote_verbs(commands)
    _add_money_verbs(commands)
    _add_seal_verbs(commands)
    _add_file_verbs(commands)
    _add_user_verbs(commands)
    _add_receipt_verbs(commands)
    _add_grant_verbs(commands)
    _add_key_verbs(commands)


def _add_receipt_verbs(commands: Subparsers) -> None:
    receipts = _group(
        commands,
        "receipt",
        SUMMARIES["receipt"],
        "A receipt is a record, its inclusion proof and a cosigned checkpoint (docs/PROTOCOL.md section 14).",
    )
    get = _verb(
        receipts,
        "get",
        Verb("receipt_commands", "cmd_receipt_get"),
        "fetch and verify a record's receipt",
        "Fetch the record, a checkpoint covering it with --quorum cosignatures (waiting up to --wait "
        "seconds for one) and its inclusion proof; verify them all; write the receipt file.",
    )
    get.add_argument("ledger", type=ledger_name, metavar="LEDGER")
    get.add_argument("height", type=height, nargs="?", metavar="HEIGHT")
    get.add_argument("--hash", type=record_hash, metavar="HEX", help="the record's hash instead of its height")
    get.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the receipt here (default: stdout)")
    get.add_argument(
        "--quorum", type=count_arg, default=0, metavar="N", help="cosignatures of the cluster's witnesses needed (0)"
    )
    get.add_argument(
        "--wait",
        type=seconds,
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help=f"wait this long for a checkpoint that covers the record ({DEFAULT_WAIT_SECONDS:g})",
    )
    verify = add_command(
        receipts,
        "verify",
        Deferred("receipt_commands", "cmd_receipt_verify"),
        "check a receipt offline (exit 0 valid, 1 refused)",
        "Check a receipt file, or a voter's set of receipts (the gateway's /voters answer saved as a file: "
        "each of its receipts, each a record of that voter), with no cluster: the record, its inclusion proof, "
        "the home's signature on "
        "the checkpoint (the key the --genesis record pins, or --key) and a --quorum of --witness keys "
        "(with --admin-key, also their rotated keys the receipt proves). With --anchors, the genesis must be "
        "the one the publisher anchored, and a majority of its witnesses must have cosigned.",
    )
    verify.add_argument("file", type=Path, metavar="FILE")
    verify.add_argument(
        "--genesis", type=Path, metavar="FILE", help="the ledger's genesis record bytes, or its height-0 receipt"
    )
    verify.add_argument("--key", type=vkey_arg, metavar="VKEY", help="the ledger's checkpoint key (a note vkey)")
    verify.add_argument(
        "--witness", type=vkey_arg, action="append", metavar="VKEY", help="a trusted witness key (repeatable)"
    )
    verify.add_argument(
        "--quorum",
        type=count_arg,
        metavar="N",
        help="cosignatures needed (0; with --anchors, a majority of the anchored witnesses)",
    )
    verify.add_argument(
        "--anchors",
        type=Path,
        metavar="FILE",
        help="the publisher's trust anchors (vledger anchors, PROTOCOL 15.5): the --genesis must be the ledger's "
        "anchored genesis, the anchors' witness keys join --witness and their admin key is --admin-key",
    )
    verify.add_argument(
        "--admin-key",
        type=vkey_arg,
        metavar="VKEY",
        help="the admin ledger's checkpoint key (<cluster>/admin): a witness's rotated keys the receipt "
        "proves on the admin ledger count as its own (PROTOCOL 16.6)",
    )
    verify.add_argument(
        "--node-keys",
        type=node_keys_arg,
        metavar="TEXT",
        help="node keys as vledger receipt keys prints them (with --admin-key): the witnesses' rotations, each "
        "replaced key counting only for what its rotation says it cosigned, whatever the receipt carries",
    )
    add_json_option(verify)
    keys = add_command(
        receipts,
        "keys",
        Deferred("receipt_commands", "cmd_receipt_keys"),
        "print the cluster's witness and admin keys as receipt verify options",
        "Print each witness's cosignature key of generation 0 (<node>.sign.pub) as --witness VKEY, the admin "
        "ledger's checkpoint key as --admin-key VKEY and, once a witness's key rotated, the rotation records "
        "proven under an admin checkpoint (read from --store, else the configuration's stores) as --node-keys "
        "TEXT: vledger receipt verify FILE --genesis G $(vledger receipt keys) --quorum N. A receipt cosigned by a "
        "replaced key before its rotation then counts the witness, one by its newest key too, and a replaced "
        "key's line on a checkpoint larger than its rotation says it cosigned does not (PROTOCOL 14.3). A witness "
        "whose rotations no store proves is given by its newest key. Give a receipt reader these from a key "
        "directory you trust, not from the receipt's source.",
    )
    keys.add_argument(
        "--store", type=Path, metavar="DIR", help="a store holding the admin ledger (default: the configuration's)"
    )
    add_config_option(keys)
    add_json_option(keys)


def shell_parser() -> argparse.ArgumentParser:
    """The parser of a shell line: the client verbs, without a `vledger` in front."""
    parser = argparse.ArgumentParser(prog="vledger", add_help=False)
    add_client_verbs(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def add_client_commands(commands: Subparsers) -> None:
    add_client_verbs(commands)
    shell = add_command(
        commands,
        "shell",
        Deferred("client_commands", "cmd_shell"),
        SUMMARIES["shell"],
        "Run client verbs line by line over one connection: `help`, tab completion, history in "
        "~/.vledger_history, `quit` or end of input to leave.",
    )
    add_client_options(shell)
