"""The client verbs of the ``vledger`` command: an account talking to ingest nodes (docs/PROTOCOL.md 6).

Every verb that talks to a node takes ``--config``, ``--node``, ``--key`` and ``--timeout``
(client_session.py says where each defaults from); the ones a script reads take ``--json``.
A verb builds what it writes with client_payloads (pure), sends it through a
:class:`~vledger.client.session.Session` and prints with client_output. Exit codes are
``cli.main``'s: 0 done, 1 refused or failed (``vledger: error: <code>: <message>``), 2 usage.

``vledger shell`` runs the same verbs line by line over one kept connection (shell.py). Their
parsers are in client_parsers.py, which names each verb here with a ``Verb``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import getpass
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..broker.keys import check_public_key, load_public
from ..broker.seal_keys import read_seal_key, write_seal_key
from ..broker.signing import CHECKPOINT_KEY_INFIX
from ..client.session import Session, reply_field
from ..client.write import Write
from ..config.cluster import load_cluster
from ..node.errors import (
    BadPublicKeyError,
    BadRequestError,
    NameHoldsUnitsError,
    NodeUnavailableError,
    NoSuchLedgerError,
    NoteKeyError,
    NotFoundError,
    NotGrantableError,
    RemoteError,
    SealError,
    UnknownKindError,
    UsageError,
)
from ..node.ledger import LedgerRules
from ..node.note import VerifiedCheckpoint, parse_verifier_key
from ..node.outside import QUORUM_FIELD, WITNESSES_FIELD
from ..node.receipt import ReceiptKeys
from ..node.record import Record
from ..node.rules.admin import ADMIN_LEDGER, ANY_KIND
from ..node.rules.engine import DOMAINS, PLAIN, grant_closes, new_ledger_rules
from ..node.rules.moving_kinds import held_by_others, kind_holders, refuse_other_holders
from ..node.rules.votes import ElectionState
from ..node.sealed import is_sealed, seal, unseal
from . import client_payloads as build
from .admin_log import grant_table, inert_grants, print_grants, print_log
from .args import (
    OTP_ENV,
)
from .client_output import (
    print_account_change,
    print_accounts,
    print_enrollment,
    print_hello,
    print_json,
    print_json_list,
    print_ledgers,
    print_receipt,
    print_record,
    print_whoami,
    record_line,
)
from .client_parsers import CLIENT_OPTIONS, shell_parser
from .client_session import (
    ClientOptions,
    SessionPool,
)
from .file_transfer import download_file, upload_file
from .moving_kinds import grant_moving_kinds, moving_kinds
from .name_holdings import checked_holdings, holdings_text
from .paths import input_file, output_file
from .progress import Progress
from .shell import Shell
from .vote_check import Freshness, print_vote_check

EXIT_OK = 0

SessionVerb = Callable[[Session, argparse.Namespace], int]


# --- how a verb gets its session ---------------------------------------------------------------


def with_session(verb: SessionVerb) -> Callable[[argparse.Namespace], int]:
    """A command that runs ``verb`` on a session: the shell's (``args.pool``) or one of its own."""

    def run(args: argparse.Namespace) -> int:
        options = ClientOptions.from_args(args)
        otp = args.otp or os.environ.get(OTP_ENV) or None
        ask = ask_otp if sys.stdin.isatty() else None
        try:
            if args.pool is not None:
                session = args.pool.session(options)
                session.second_factor(otp, ask)
                return verb(session, args)
            with SessionPool() as pool:
                session = pool.session(options)
                session.second_factor(otp, ask)
                return verb(session, args)
        except NodeUnavailableError as e:
            if e.listening is False:  # a closed port: not a refused key
                e.add_note("`vledger status` shows which nodes are down; a node's log says why it does not serve")
            elif e.listening:  # its port takes connections: a refused key, or a node too busy to answer
                e.add_note("a node that refuses a key says nothing: check that your key was added, or the node's log")
            else:
                # No connection either way (dropped packets): a host cut off says nothing too (o24 F3).
                e.add_note(
                    "neither a node cut off from you by the network nor one that refuses a key says anything: "
                    "check the network to it (`vledger status` shows which nodes answer), that your key was "
                    "added, or the node's log"
                )
            raise

    return run


def ask_otp() -> str:
    """A one-time code typed on the terminal (not echoed, like a passphrase)."""
    code = getpass.getpass("one-time code (authenticator app, or a recovery code): ").strip()
    if not code:
        raise UsageError("no one-time code given")
    return code


# --- session and ledgers -----------------------------------------------------------------------


def cmd_hello(session: Session, args: argparse.Namespace) -> int:
    print_hello(session.call("hello"), as_json=args.json)
    return EXIT_OK


def cmd_whoami(session: Session, args: argparse.Namespace) -> int:
    print_whoami(session.call("whoami"), as_json=args.json)
    return EXIT_OK


def cmd_ledger_list(session: Session, args: argparse.Namespace) -> int:
    print_ledgers(session.ledgers(), as_json=args.json)
    return EXIT_OK


def ledger_rules(kinds: tuple[str, ...] | None, difficulty: int, rules: build.Payload) -> LedgerRules:
    """A new ledger's rules; the kinds its domain (``rules["type"]``) reads are added to ``kinds``.

    A domain ledger gets the identifier rule (docs/PROTOCOL.md 7.5) and its domain's defaults written
    out (a resources ledger's ``max_holders``, 7.3): every ledger created now has them.
    """
    domain = DOMAINS.get(rules["type"]) if isinstance(rules.get("type"), str) else None
    allowed = set(kinds or ()) | (domain.kinds if domain is not None else set())
    if not allowed:
        raise UsageError("name the record kinds the ledger allows with --kinds a,b,c")
    if domain is not None and domain.type_name != PLAIN:
        rules = build.typed_rules(new_ledger_rules(rules))
    return LedgerRules(tuple(allowed), difficulty, rules)


def cmd_ledger_create(session: Session, args: argparse.Namespace) -> int:
    rules = ledger_rules(args.kinds, args.difficulty, args.rules)
    if args.outside_witness:  # after ledger_rules: a vkey is bytes in base64, never a typed identifier
        quorum = args.outside_quorum if args.outside_quorum is not None else len(args.outside_witness)
        listed = {WITNESSES_FIELD: [key.encode() for key in args.outside_witness], QUORUM_FIELD: quorum}
        rules = LedgerRules(rules.kinds, rules.difficulty, {**rules.rules, **listed})
    elif args.outside_quorum is not None:
        raise UsageError("--outside-quorum needs --outside-witness keys")
    closing = () if args.open else moving_kinds(rules.rules)
    granted: list[str] = []
    if closing and not _exists(session, args.ledger):  # a retry or a taken name changes no grant
        # Grants may name a ledger before it exists (this very command's do): the ones another
        # account holds already would let it write beside the creator, who must know before. The
        # home refuses that genesis too (a raw client's); asked here, no grant below is made first.
        if not args.keep_grants:
            refuse_other_holders(grant_table(_admin_records(session)), args.ledger, rules.rules, session.account)
        # The grants and the genesis are admin commands each: one code for them all (PROTOCOL 16.5).
        session.second_factor_session("ledger.create")
        # Before the genesis (16.2 judges each record by the grants before it): never open for a moment.
        granted = grant_moving_kinds(session, args.ledger, closing, session.account)
    receipt = session.create_ledger(args.ledger, rules, args.request_id, args.ts, keep_grants=args.keep_grants)
    # Said as the admin ledger has it after the genesis, not as this command meant it to be.
    holders = kind_holders(grant_table(_admin_records(session)), args.ledger, closing) if closing else {}
    if args.json:
        print_receipt(receipt, as_json=True, granted={"account": session.account, "kinds": granted}, holders=holders)
        return EXIT_OK
    print_receipt(receipt, as_json=False)
    if not holders:
        return EXIT_OK
    if not held_by_others(holders, session.account):
        print(
            f"only {session.account} may write {', '.join(holders)} on {args.ledger} (granted; vledger grant add "
            "gives another account a kind, --open leaves them open to every writer)"
        )
    else:
        print(f"who may write the kinds that move votes or money on {args.ledger}:")
        for kind, accounts in holders.items():
            print(f"  {kind}: {', '.join(accounts) or 'every writer (open)'}")
    return EXIT_OK


def _exists(session: Session, ledger: str) -> bool:
    try:
        return session.size(ledger) > 0  # a ledger holds its genesis at least
    except RemoteError as e:
        if e.code == "no_such_ledger":
            return False
        raise


def cmd_ledger_promote(session: Session, args: argparse.Namespace) -> int:
    # NODE is the node promoted: a --node naming another is a typo, never a promotion of that node.
    if args.node is not None and args.node != args.standby:
        raise BadRequestError(
            f"ledger promote: NODE is the node promoted ({args.standby!r}) and --node names another "
            f"({args.node!r}): give --node {args.standby} or leave --node out"
        )
    print_receipt(session.promote(args.ledger, args.standby, key_not_stolen=args.key_not_stolen), as_json=args.json)
    return EXIT_OK


def cmd_ledger_rotate_key(session: Session, args: argparse.Namespace) -> int:
    result = session.rotate_key(args.ledger)
    print_receipt(result, as_json=args.json, checkpoint_key=result.get("key"))
    key = result.get("key")
    if isinstance(key, str):
        # Outsider o21 F2: that file was on the home's host alone, and a key folder refreshed
        # from `keygen --bundles` lost it; the home then refuses the ledger's writes.
        file = f"*{CHECKPOINT_KEY_INFIX}{hashlib.sha256(parse_verifier_key(key).public_key).hexdigest()[:16]}.sign"
        print(
            f"vledger: the home wrote the new private key {file} (and its .sign.pub) in its own key directory,"
            " on its host only: copy both into the operator's key folder ([cluster] keys), so that"
            " `vledger keygen --cluster FILE --bundles DIR` carries them, and keep them when a key folder is"
            " replaced: a home without it refuses the ledger's writes (no_checkpoint_key)",
            file=sys.stderr,
        )
    return EXIT_OK


# --- records -------------------------------------------------------------------------------------


def cmd_put(session: Session, args: argparse.Namespace) -> int:
    receipt = session.put(args.ledger, Write(args.kind, args.payload), args.request_id, args.ts, replicas=args.replicas)
    print_receipt(receipt, as_json=args.json)
    return EXIT_OK


def cmd_get(session: Session, args: argparse.Namespace) -> int:
    if args.hash is not None:
        if args.ledger is not None:
            raise UsageError("give LEDGER HEIGHT or --hash HEX, not both")
        record = session.record_by_hash(args.hash)
    else:
        if args.ledger is None or args.height is None:
            raise UsageError("give LEDGER HEIGHT, or --hash HEX")
        record = session.record(args.ledger, args.height)
    print_record(record, as_json=args.json)
    return EXIT_OK


def cmd_range(session: Session, args: argparse.Namespace) -> int:
    # Below the node's signed checkpoint each run of records is proven in it before it is shown:
    # a chain anyone could compute, served by a node in place of the signed one, is refused.
    proven = _signed_checkpoint(session, args.ledger, _checkpoint_keys(session, args.ledger, 0))
    records = session.proven_records(args.ledger, args.start, proven)
    if args.json:
        print_json_list({"ledger": args.ledger, "start": args.start}, "records", map(build.record_map, records))
        return EXIT_OK
    for record in records:
        print(record_line(record))
    return EXIT_OK


def cmd_head(session: Session, args: argparse.Namespace) -> int:
    print_record(session.head(args.ledger), as_json=args.json)
    return EXIT_OK


def cmd_size(session: Session, args: argparse.Namespace) -> int:
    size = session.size(args.ledger)
    if args.json:
        print_json({"ledger": args.ledger, "size": size})
    else:
        print(size)
    return EXIT_OK


# --- domain verbs ----------------------------------------------------------------------------------


def _put_write(session: Session, args: argparse.Namespace, write: Write) -> int:
    print_receipt(session.put(args.ledger, write, args.request_id, args.ts, replicas=args.replicas), as_json=args.json)
    return EXIT_OK


def cmd_vote_register(session: Session, args: argparse.Namespace) -> int:
    receipt = session.put(args.ledger, build.register(args.voter_id), args.request_id, args.ts, replicas=args.replicas)
    electronic_id = reply_field(reply_field(receipt, "values", dict), "electronic_id", str)
    print_receipt(receipt, as_json=args.json, electronic_id=electronic_id)
    return EXIT_OK


def cmd_vote_cast(session: Session, args: argparse.Namespace) -> int:
    return _put_write(session, args, build.cast(args.electronic_id, args.choice))


def cmd_vote_uncast(session: Session, args: argparse.Namespace) -> int:
    return _put_write(session, args, build.uncast(args.electronic_id))


def cmd_vote_withdraw(session: Session, args: argparse.Namespace) -> int:
    return _put_write(session, args, build.withdraw(args.electronic_id))


def _vote_check(session: Session, args: argparse.Namespace) -> int:
    if args.ledger is not None:
        ledgers = [args.ledger]
    else:
        ledgers = [e["ledger"] for e in session.ledgers() if e.get("type") == ElectionState.type_name]
    keys: dict[str, ReceiptKeys | None] = {}
    if args.full:
        keys = {ledger: _checkpoint_keys(session, ledger, args.quorum) for ledger in ledgers}
        checks = [
            session.full_voter_check(ledger, args.electronic_id, _signed_checkpoint(session, ledger, keys[ledger]))
            for ledger in ledgers
        ]
    else:  # a proof needs a signed checkpoint: a ledger that pins no key is NoteKeyError
        keys = {ledger: session.checkpoint_keys(ledger, args.quorum) for ledger in ledgers}
        checks = [
            session.proven_voter_check(ledger, args.electronic_id, session.checkpoint(ledger, pinned))
            for ledger, pinned in keys.items()
            if pinned is not None
        ]
    found = [check for check in checks if check.records]
    if not found:
        raise NotFoundError(f"no records of electronic id {args.electronic_id}")
    now_ms, recosign_ms = time.time_ns() // 1_000_000, session.config.replication.recosign_interval_ms
    freshness = {ledger: Freshness.of(k, now_ms, recosign_ms) for ledger, k in keys.items() if k is not None}
    print_vote_check(found, session.node.name, args.electronic_id, as_json=args.json, freshness=freshness)
    return EXIT_OK


def _checkpoint_keys(session: Session, ledger: str, quorum: int) -> ReceiptKeys | None:
    """What ``ledger``'s checkpoints are checked and judged with; None for a ledger made before
    keys were pinned (its chain alone is checked, with ``--full``)."""
    try:
        return session.checkpoint_keys(ledger, quorum)
    except NoteKeyError:
        return None


def _signed_checkpoint(session: Session, ledger: str, keys: ReceiptKeys | None) -> VerifiedCheckpoint | None:
    """The node's latest checkpoint of ``ledger``, verified with ``keys``; None (the chain alone
    is checked) for a ledger that pins no key, or when the node has no such checkpoint yet (said
    on stderr: a ledger created a moment ago, or a node that keeps its checkpoints from the reader)."""
    if keys is None:
        return None  # a ledger made before keys were pinned: its chain alone is checked
    try:
        return session.checkpoint(ledger, keys)
    except RemoteError as e:
        if e.code != "not_found":
            raise
        print(
            f"vledger: note: no signed checkpoint of {ledger!r} from this node: checked as a chain only",
            file=sys.stderr,
        )
        return None


def cmd_vote_check(args: argparse.Namespace) -> int:
    """``vote check`` reads from --node, else the first replica of the configuration, else the election's home."""
    if args.node is None:
        config = load_cluster(ClientOptions.from_args(args).config)
        replicas = config.nodes_of("replica")
        home = config.home_of(args.ledger) if args.ledger is not None else config.node(config.default_home)
        args = argparse.Namespace(**{**vars(args), "node": replicas[0].name if replicas else home.name})
    return with_session(_vote_check)(args)


def donor_id(args: argparse.Namespace) -> str:
    """The donation's sealed donor id: given, or sealed here with the ledger's name as context."""
    if args.donor is not None:
        return str(args.donor)
    if args.seal_key is None:
        raise UsageError("--donor-info needs --seal-key FILE to seal it (or give a sealed --donor)")
    info = args.donor_info if args.donor_info_file is None else private_text(args.donor_info_file, "--donor-info-file")
    return seal(read_seal_key(input_file(args.seal_key, "--seal-key")), info, args.ledger)


def private_text(source: str, option: str) -> str:
    """The text of a file, or of standard input for ``-``, less one final line end: private
    information read so, not from the command line, which other local users see (``ps``,
    /proc/PID/cmdline) and the shell keeps in its history. A file that is not there is a usage
    error as for every file named on the command line (input_file); ``option`` names it."""
    given = f"{option} {source}"
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with input_file(Path(source), option).open(encoding="utf-8") as f:
                text = f.read()
    except UnicodeDecodeError:
        raise UsageError(f"{given}: not UTF-8 text") from None
    except OSError as e:
        raise UsageError(f"{given}: cannot read it ({e.strerror})") from None
    return text.removesuffix("\n").removesuffix("\r")


def cmd_donate(session: Session, args: argparse.Namespace) -> int:
    donor = donor_id(args)
    write = build.donation(donor, args.fund, args.amount, args.source, args.purpose)
    # The donor's id as the chain holds it: what the donor looks their gifts up by.
    receipt = session.put(args.ledger, write, args.request_id, args.ts, replicas=args.replicas)
    print_receipt(receipt, as_json=args.json, donor=donor)
    return EXIT_OK


def cmd_disburse(session: Session, args: argparse.Namespace) -> int:
    return _put_write(session, args, build.disbursement(args.fund, args.target, args.amount, args.purpose))


def cmd_transfer(session: Session, args: argparse.Namespace) -> int:
    return _put_write(session, args, build.transfer(session.account, args.to, args.amount))


def cmd_issue(session: Session, args: argparse.Namespace) -> int:
    return _put_write(session, args, build.issue(args.account, args.amount))


# --- sealed ids (local) ------------------------------------------------------------------------------


def cmd_seal(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.file is None):
        raise UsageError("give the TEXT to seal, or --file FILE (- for standard input), not both")
    text = args.text if args.file is None else private_text(args.file, "--file")
    print(seal(read_seal_key(input_file(args.seal_key, "--key")), text, args.context))
    return EXIT_OK


def cmd_unseal(args: argparse.Namespace) -> int:
    key = read_seal_key(input_file(args.seal_key, "--key"))
    try:
        print(unseal(key, args.sealed, args.context))
    except SealError as e:
        if not is_sealed(args.sealed):
            raise
        # Well formed, yet it does not open: a missing or wrong context is the usual cause.
        if not args.context:
            raise SealError(
                "this id does not open without a context: a donor id is sealed with its ledger's name; "
                "give --context LEDGER (or check that this is the seal key it was made with)"
            ) from e
        raise SealError(
            f"this id does not open with this key and context {args.context!r}: give the ledger it was "
            "sealed for as --context, and the seal key it was made with"
        ) from e
    return EXIT_OK


def cmd_seal_key(args: argparse.Namespace) -> int:
    write_seal_key(output_file(args.out))
    print(f"wrote a new seal key to {args.out} (mode 0600): keep it secret, and keep it")
    return EXIT_OK


# --- files ---------------------------------------------------------------------------------------------


def cmd_file_put(session: Session, args: argparse.Namespace) -> int:
    input_file(args.path)
    name = args.name or args.path.name
    with Progress(f"upload {name}") as progress:
        upload = upload_file(session, args.ledger, args.path, name, progress, request_id=args.request_id, ts=args.ts)
    print_receipt(upload.receipt, as_json=args.json, name=upload.name, size=upload.size, sha256=upload.sha256)
    return EXIT_OK


def cmd_file_get(session: Session, args: argparse.Namespace) -> int:
    with Progress(f"download {args.sha256[:12]}") as progress:
        path, size = download_file(session, args.sha256, args.output, args.force, progress)
    if args.json:
        print_json({"path": str(path), "size": size, "sha256": args.sha256})
    else:
        print(f"wrote {path}: {size} bytes, SHA-256 {args.sha256} checked")
    return EXIT_OK


# --- accounts ----------------------------------------------------------------------------------------------


def cmd_user_add(session: Session, args: argparse.Namespace) -> int:
    held = checked_holdings(session, args.account)
    if held and not args.reuse_name:
        raise NameHoldsUnitsError(
            f"{holdings_text(args.account, held)}: a new account of that name would take them over "
            "(PROTOCOL 7.3); choose another name, or give --reuse-name if it is the same holder"
        )
    result = session.call("account.add", {"account": args.account, "role": args.role})
    if held is not None:
        result["holdings"] = [dataclasses.asdict(h) for h in held]
    print_account_change(result, f"added as {args.role}", as_json=args.json)
    if held and not args.json:
        print(f"{holdings_text(args.account, held)}: the new account moves those units (--reuse-name)")
    return EXIT_OK


def cmd_user_remove(session: Session, args: argparse.Namespace) -> int:
    # Read first (a name's units and issues are the same before and after): read after, a read
    # that failed made a removal done already exit as failed.
    held = checked_holdings(session, args.account)
    result = session.call("account.remove", {"account": args.account})
    if held is not None:
        result["holdings"] = [dataclasses.asdict(h) for h in held]
    print_account_change(result, "removed", as_json=args.json)
    if held and not args.json:
        print(
            f"{holdings_text(args.account, held)} still: units and issuer rights are the name's, not the "
            "account's, and an account added again under it takes them (vledger user add refuses that "
            "without --reuse-name)"
        )
    return EXIT_OK


def _account_action(cmd: str, done: str) -> SessionVerb:
    def run(session: Session, args: argparse.Namespace) -> int:
        print_account_change(session.call(cmd, {"account": args.account}), done, as_json=args.json)
        return EXIT_OK

    return run


def public_key_argument(value: str) -> str:
    """A Z85 public key, given as itself or as a ``.key`` file holding it."""
    path = Path(value)
    if path.is_file():
        return load_public(path)
    try:
        return check_public_key(value)
    except BadPublicKeyError:
        raise UsageError(f"{value!r} is neither a public key file nor a Z85 public key") from None


def cmd_user_key_add(session: Session, args: argparse.Namespace) -> int:
    result = session.call("key.add", {"account": args.account, "key": public_key_argument(args.keyfile)})
    print_account_change(result, "added", as_json=args.json)
    return EXIT_OK


def cmd_user_key_revoke(session: Session, args: argparse.Namespace) -> int:
    key = public_key_argument(args.keyfile)
    request = {"key": key}
    if args.account is not None:  # as `user key add NAME KEYFILE`: the node checks it is that account's
        request["account"] = args.account
    result = session.call("key.revoke", request)
    print_account_change(result, "revoked", as_json=args.json)
    return EXIT_OK


def cmd_user_list(session: Session, args: argparse.Namespace) -> int:
    print_accounts(reply_field(session.call("account.list"), "accounts", list), as_json=args.json)
    return EXIT_OK


# --- grants and the admin ledger ---------------------------------------------------------------------------


def _grant_action(cmd: str) -> SessionVerb:
    def run(session: Session, args: argparse.Namespace) -> int:
        if cmd == "grant.add" and not args.before_create:
            _refuse_idle_grant(session, args.ledger, args.kind)
        result = session.call(cmd, {"ledger": args.ledger, "kind": args.kind, "account": args.account})
        if args.json:
            print_json(result)
            return EXIT_OK
        verb = "may now write" if cmd == "grant.add" else "may no longer write"
        print(
            f"{args.account} {verb} {args.kind!r} records on {args.ledger} (admin ledger height {result.get('height')})"
        )
        pending = result.get("pending") or []
        if pending:
            print(f"not yet confirmed by {', '.join(map(str, pending))}: they apply it when they catch up")
        return EXIT_OK

    return run


def _refuse_idle_grant(session: Session, ledger: str, kind: str) -> None:
    """Refuse a grant the node would record to no end (PROTOCOL 16.2). On a ledger that does not
    exist it is a typo more often than a plan: the node takes it (ledger create closes kinds that
    way), so the command asks for --before-create to mean it. Of a kind the ledger's genesis does
    not list, or one no grant closes there (a resources ledger's issue and transfer, 7.3), it
    would change nothing while `grant list` showed it in force.

    Raises NoSuchLedgerError, UnknownKindError or NotGrantableError."""
    try:
        if not _exists(session, ledger):
            raise NoSuchLedgerError(
                f"no ledger {ledger!r}: a grant on it would close the kind for whatever ledger is later created "
                "under that name; give --before-create to grant it ahead of vledger ledger create"
            )
        if kind == ANY_KIND:
            return
        rules = session.rules(ledger)
    except NodeUnavailableError as e:  # a home down must not stop an admin granting
        print(f"vledger: warning: could not check ledger {ledger} and its kinds ({e.message})", file=sys.stderr)
        return
    if kind not in rules.kinds:
        raise UnknownKindError(
            f"kind {kind!r} is not one of {ledger}'s kinds {list(rules.kinds)}: no record of it can be "
            "written there, and a grant of it would close nothing",
            ledger=ledger,
        )
    if not grant_closes(rules, kind):
        raise NotGrantableError(
            f"no grant closes {kind!r} on {ledger}, a {rules.rules.get('type')} ledger: its rules already "
            "let only the genesis issuers issue and each holder move only its own units, so every holder "
            "keeps writing it whatever grants exist (PROTOCOL 7.3, 16.2)",
            ledger=ledger,
        )


def cmd_grant_list(session: Session, args: argparse.Namespace) -> int:
    rows = grant_table(_admin_records(session))
    rules_of = functools.cache(functools.partial(_rules_or_none, session))
    print_grants(rows, as_json=args.json, inert=inert_grants(rows, rules_of))
    return EXIT_OK


def _rules_or_none(session: Session, ledger: str) -> LedgerRules | None:
    """``ledger``'s genesis rules, None when it does not exist (yet) or cannot be read now (said
    on stderr: its grants are then listed as in force, unjudged)."""
    try:
        return session.rules(ledger)
    except RemoteError as e:
        if e.code != "no_such_ledger":
            print(f"vledger: warning: could not read ledger {ledger}'s rules ({e.message})", file=sys.stderr)
    except NodeUnavailableError as e:
        print(f"vledger: warning: could not read ledger {ledger}'s rules ({e.message})", file=sys.stderr)
    return None


def _admin_records(session: Session) -> list[Record]:
    try:
        return list(session.records(ADMIN_LEDGER))
    except RemoteError as e:
        if e.code == "no_such_ledger":
            return []  # no admin command ran yet
        raise


def cmd_admin_log(session: Session, args: argparse.Namespace) -> int:
    print_log(_admin_records(session), as_json=args.json)
    return EXIT_OK


def _totp_action(cmd: str) -> SessionVerb:
    def run(session: Session, args: argparse.Namespace) -> int:
        request = {} if args.account is None else {"account": args.account}
        result = session.call(cmd, request)
        if args.json:
            print_json(result)
            return EXIT_OK
        account = reply_field(result, "account", str)
        print_enrollment(account, reply_field(result, "uri", str), reply_field(result, "recovery_codes", list))
        print(f"recorded on the admin ledger at height {result.get('height')} (the secret is not)")
        return EXIT_OK

    return run


# --- registration ------------------------------------------------------------------------------------------


def cmd_shell(args: argparse.Namespace) -> int:
    defaults = {name: getattr(args, name) for name in CLIENT_OPTIONS}
    with SessionPool() as pool:
        return Shell(shell_parser(), pool, defaults).run()
