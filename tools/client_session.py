"""A session of the client verbs: the cluster configuration, the caller's key and one connection.

Where things come from (the options every client verb takes):

* ``--config FILE``, else ``$VLEDGER_CONFIG``, else ``config/cluster.toml``: the nodes, their
  endpoints and the key directory holding each node's public key;
* ``--node NAME``: the node to talk to. Without it, a request about a ledger (a read or a
  write) goes to the ledger's home node as the configuration names it, any other to the
  configuration's ``default_home``, and ``ledger list`` asks every ingest node. A node that
  neither holds nor homes the ledger answers ``not_home`` naming the home, and the client
  follows once (docs/PROTOCOL.md 6.1);
* ``--key FILE``, else ``$VLEDGER_KEY``: the caller's secret key; a passphrase-protected
  key takes ``$VLEDGER_PASSPHRASE`` or asks on the terminal;
* ``--otp CODE``, else ``$VLEDGER_OTP``: an admin's one-time code (or recovery code), sent
  with the verb's requests; without one, a node that asks for it (``second_factor_required``,
  or ``bad_second_factor`` for a used code) gets one typed on the terminal, once per request
  (docs/PROTOCOL.md 16.5).

A :class:`Session` checks what it reads before it shows it: a record fetched by height or
hash must be that record, decode, and pass its own checks (checksum, proof of work, link)
under its ledger's genesis rules; a receipt must name the ledger and checksum it was sent.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from ..broker.client import Client, NodeAddress
from ..broker.keys import PUBLIC_SUFFIX, KeyPair, generation_name, load_public, load_secret, newest_generation
from ..config.cluster import ClusterConfig, NodeConfig, load_cluster
from ..config.settings import PROTOCOL_LIMITS
from ..ingest.server import witness_keys
from ..node.errors import (
    BadLinkError,
    HeightGapError,
    NodeUnavailableError,
    NoteKeyError,
    NotFoundError,
    PassphraseError,
    ReceiptError,
    RemoteError,
    UnknownKindError,
    UsageError,
    VledgerError,
    WrongLedgerError,
)
from ..node.ledger import LedgerRules
from ..node.note import VerifiedCheckpoint, verify_checkpoint
from ..node.receipt import Receipt, ReceiptKeys, keys_from_genesis, verify_receipt
from ..node.record import Content, Entry, Record, decode_record
from ..node.rules.engine import PLAIN
from ..node.tree import leaf_hash, verify_consistency, verify_inclusion
from ..node.verify import ChainVerifier, verify_record
from ..node.witness import PINNED_KEY_FIELD, home_key
from .args import config_path
from .client_payloads import Write
from .node_commands import PASSPHRASE_ENV
from .vote_check import VoterCheck, check_voter

log = logging.getLogger(__name__)
RECEIPT_POLL_SECONDS = 0.2  # how often a receipt asks again for a checkpoint that covers its record

KEY_ENV = "VLEDGER_KEY"
OTP_ENV = "VLEDGER_OTP"
SECOND_FACTOR_CODES = frozenset(("second_factor_required", "bad_second_factor"))
DEFAULT_TIMEOUT = 10.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_request_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    config: Path
    node: str | None  # None: the configuration's default_home (and each ledger's home for writes)
    key: Path
    timeout: float

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> ClientOptions:
        key = args.key or environ.get(KEY_ENV)
        if not key:
            raise UsageError(f"which key? give --key FILE (your .key_secret file) or set ${KEY_ENV}")
        return cls(
            config=config_path(args.config, environ),
            node=args.node,
            key=Path(key),
            timeout=args.timeout or DEFAULT_TIMEOUT,
        )


def load_client_keys(
    path: Path, environ: Mapping[str, str] = os.environ, ask: Callable[[str], str] = getpass.getpass
) -> KeyPair:
    """The caller's key pair; a passphrase-protected file takes $VLEDGER_PASSPHRASE or asks for one."""
    try:
        return load_secret(path)
    except PassphraseError:
        passphrase = environ.get(PASSPHRASE_ENV)
        if passphrase is None:
            try:
                passphrase = ask(f"passphrase for {path}: ")
            except EOFError:  # no terminal to ask on
                raise PassphraseError(
                    f"{path}: this secret key is protected by a passphrase: set ${PASSPHRASE_ENV} or run on a terminal"
                ) from None
        return load_secret(path, passphrase)


class Connection(Protocol):
    """What a session needs of :class:`vledger.broker.client.Client`; tests give a simulator."""

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: NodeAddress | None = None) -> Any: ...

    def close(self) -> None: ...


def node_address(config: ClusterConfig, name: str) -> NodeAddress:
    """How a client reaches node ``name``: its newest key in the key directory (PROTOCOL 16.6),
    on its endpoint and, once its keys rotated, its rotation endpoint too (which serves the new
    key while the endpoint still serves the old one, until the window ends)."""
    node = config.node(name)
    generation = newest_generation(config.keys_dir, node.name)
    key = load_public(config.keys_dir / f"{generation_name(node.name, generation)}{PUBLIC_SUFFIX}")
    also = (node.rotation_endpoint,) if generation > 0 and node.rotation_endpoint is not None else ()
    return NodeAddress(node.endpoint, key, also)


def open_session(options: ClientOptions) -> Session:
    config = load_cluster(options.config)
    node = config.node(options.node or config.default_home)
    address = node_address(config, node.name)
    keys = load_client_keys(options.key)
    client = Client(address, keys, timeout=options.timeout, max_message_bytes=config.ingest.max_message_bytes)
    return Session(config, node, client, pinned=options.node is not None)


def reply_field(result: dict[str, Any], key: str, kind: type[Any]) -> Any:
    """``result[key]`` if it is a ``kind``; a node that answers otherwise is not understood."""
    value = result.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NodeUnavailableError(f"the node's reply has no {kind.__name__} {key!r}")
    return value


class Session:
    """One caller talking to one node (and to ledgers' home nodes for writes)."""

    def __init__(
        self,
        config: ClusterConfig,
        node: NodeConfig,
        client: Connection,
        *,
        pinned: bool = False,
        clock: Callable[[], int] = now_ms,
        request_ids: Callable[[], str] = new_request_id,
    ) -> None:
        self.config = config
        self.node = node
        self.client = client
        self.pinned = pinned  # --node was given: every request goes there
        self._clock = clock
        self._request_ids = request_ids
        self._account: str | None = None
        self._rules: dict[str, LedgerRules] = {}
        self.otp: str | None = None  # the admin's one-time code, sent with each request
        self.ask_otp: Callable[[], str] | None = None  # where to get another one (a terminal)

    def close(self) -> None:
        self.client.close()

    # --- requests ---------------------------------------------------------------------------

    def second_factor(self, otp: str | None, ask: Callable[[], str] | None) -> None:
        """The one-time code this verb's requests carry, and where to ask for one when a node
        refuses without a good one (None: the refusal is the caller's)."""
        self.otp, self.ask_otp = otp, ask

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: NodeAddress | None = None) -> dict[str, Any]:
        """One request's result map; raises RemoteError for a refusal. An admin command refused
        for its second factor is sent once more with a code typed on the terminal, if there is
        one: nothing was done for the refused one."""
        sent = dict(args or {})
        if self.otp is not None:
            sent["otp"] = self.otp
        try:
            result = self.client.call(cmd, sent, node=node)
        except RemoteError as e:
            if e.code not in SECOND_FACTOR_CODES or self.ask_otp is None:
                raise
            self.otp = self.ask_otp()
            result = self.client.call(cmd, {**sent, "otp": self.otp}, node=node)
        if not isinstance(result, dict):
            raise NodeUnavailableError(f"{cmd}: the node's result is not a map")
        return result

    def home_node(self, ledger: str) -> NodeAddress | None:
        """The ledger's home node as the configuration names it; None when it is the session's node."""
        home = self.config.home_of(ledger)
        return None if home.name == self.node.name else node_address(self.config, home.name)

    def ledger_node(self, ledger: str) -> NodeAddress | None:
        """Where a request about ``ledger`` is sent: the session's node (None) if --node was given,
        else the ledger's home."""
        return None if self.pinned else self.home_node(ledger)

    def ledgers(self) -> list[dict[str, Any]]:
        """Every ledger of the cluster (``ledger.list`` of each ingest node, merged by name, each
        from its home), or those of the session's node if --node was given."""
        if self.pinned:
            return _ledger_entries(self.call("ledger.list"))
        merged: dict[str, dict[str, Any]] = {}
        for node in self.config.ingest_nodes():
            address = None if node.name == self.node.name else node_address(self.config, node.name)
            for entry in _ledger_entries(self.call("ledger.list", node=address)):
                name = entry.get("ledger")
                if isinstance(name, str) and (name not in merged or entry.get("home") == node.name):
                    merged[name] = entry
        return [merged[name] for name in sorted(merged)]

    @property
    def account(self) -> str:
        """The caller's account, the author of every record it writes."""
        if self._account is None:
            self._account = reply_field(self.call("whoami"), "account", str)
        return self._account

    # --- reading, checked --------------------------------------------------------------------

    def rules(self, ledger: str) -> LedgerRules:
        """The ledger's rules, read from its genesis record (kept: a genesis never changes).

        Raises RemoteError ``no_such_ledger`` for a ledger the cluster does not hold.
        """
        rules = self._rules.get(ledger)
        if rules is None:
            result = self.call("get", {"ledger": ledger, "height": 0}, node=self.ledger_node(ledger))
            genesis = _expect(_record_of(result), ledger, 0)
            rules = self._rules[ledger] = ChainVerifier(ledger, PROTOCOL_LIMITS).check(genesis)
        return rules

    def record(self, ledger: str, height: int) -> Record:
        return self._checked(
            _expect(
                _record_of(self.call("get", {"ledger": ledger, "height": height}, node=self.ledger_node(ledger))),
                ledger,
                height,
            )
        )

    def record_by_hash(self, digest: bytes) -> Record:
        record = _record_of(self.call("get", {"hash": digest}))
        if record.link != digest:
            raise BadLinkError(f"asked for record {digest.hex()}, the node sent {record.link.hex()}")
        return self._checked(record)

    def head(self, ledger: str) -> Record:
        result = self.call("head", {"ledger": ledger}, node=self.ledger_node(ledger))
        record = _expect(_record_of(result), ledger, reply_field(result, "height", int))
        if record.link != result.get("hash"):
            raise BadLinkError(
                "the head's hash is not the link of the record sent", ledger=ledger, height=record.height
            )
        return self._checked(record)

    def size(self, ledger: str) -> int:
        """How many records ``ledger`` holds; raises RemoteError ``no_such_ledger`` if none."""
        return int(reply_field(self.call("size", {"ledger": ledger}, node=self.ledger_node(ledger)), "size", int))

    def records(self, ledger: str, start: int = 0) -> Iterator[Record]:
        """Records from ``start`` to the head, page by page, each checked as the next of the chain."""
        if start == 0:
            verifier = ChainVerifier(ledger, PROTOCOL_LIMITS)
        else:
            before = self.record(ledger, start - 1)
            verifier = ChainVerifier.after(ledger, before.height, before.link, self.rules(ledger), PROTOCOL_LIMITS)
        following: int | None = start
        while following is not None:
            page = self.call("range", {"ledger": ledger, "start": following}, node=self.ledger_node(ledger))
            records = reply_field(page, "records", list)
            for data in records:
                record = _decode(data)
                verifier.feed(record)
                yield record
            following = page.get("next")
            if following is not None and (not records or following != verifier.next_height):
                raise NodeUnavailableError(
                    f"range: the node says continue at {following!r} after height {verifier.next_height - 1}"
                )

    def _checked(self, record: Record) -> Record:
        """``record`` if it passes every check that needs no neighbour, under its genesis' rules."""
        if record.height == 0:
            ChainVerifier(record.ledger, PROTOCOL_LIMITS).check(record)
        else:
            verify_record(record, self.rules(record.ledger))
        return record

    # --- checkpoints and proofs, verified before they are returned -----------------------------

    def checkpoint_keys(self, ledger: str, witnesses: int = 0) -> ReceiptKeys:
        """What this session checks ``ledger``'s checkpoints with: the key its genesis pins, else
        the key its home node states (``hello``); the witness keys of the cluster's key directory
        and a quorum of ``witnesses``. Raises NoteKeyError when no checkpoint key is known."""
        genesis = self.record(ledger, 0)
        try:
            return keys_from_genesis(genesis.encode(), ledger, witness_keys(self.config).values(), witnesses)
        except ReceiptError:
            pass  # the genesis pins none: the home's configured key
        hello = self.call("hello", node=self.home_node(ledger))
        raw = hello.get("checkpoint_key")
        if not isinstance(raw, bytes):
            raise NoteKeyError(f"ledger {ledger!r} pins no checkpoint key and its home states none")
        log_key = home_key(self.config.name, ledger, raw)
        return ReceiptKeys(log_key, tuple(witness_keys(self.config).values()), witnesses, genesis)

    def checkpoint(self, ledger: str, keys: ReceiptKeys) -> VerifiedCheckpoint:
        """The node's latest checkpoint of ``ledger`` with ``keys.quorum`` cosignatures, verified."""
        result = self.call("checkpoint", {"ledger": ledger, "witnesses": keys.quorum}, node=self.ledger_node(ledger))
        note = reply_field(result, "checkpoint", bytes)
        return verify_checkpoint(note, keys.log_key, keys.witnesses, keys.quorum)

    def receipt(self, ledger: str, index: int, keys: ReceiptKeys, deadline: float) -> Receipt:
        """The receipt of record ``index``: the record, a checkpoint that covers it with
        ``keys.quorum`` cosignatures (waited for until ``deadline``, a ``time.monotonic``
        value) and the inclusion proof, all verified. Raises NotFoundError when no such
        checkpoint came in time, and the failed check's error when something does not verify."""
        record = self.record(ledger, index)
        while True:
            try:
                checkpoint = self.checkpoint(ledger, keys)
                if checkpoint.checkpoint.size > index:
                    break
            except RemoteError as e:
                if e.code != "not_found":
                    raise
            if time.monotonic() >= deadline:
                raise NotFoundError(
                    f"no checkpoint of {ledger!r} covering height {index} with {keys.quorum} cosignatures in time"
                )
            time.sleep(RECEIPT_POLL_SECONDS)  # a checkpoint is signed at most every second
        size = checkpoint.checkpoint.size
        result = self.call(
            "proof.inclusion", {"ledger": ledger, "index": index, "size": size}, node=self.ledger_node(ledger)
        )
        proof = reply_field(result, "proof", list)
        receipt = Receipt.of(record.encode(), proof, checkpoint.note.encode())
        verify_receipt(receipt, keys)
        return receipt

    def proven_voter_check(self, ledger: str, eid: str, quorum: int) -> VoterCheck:
        """The records of electronic id ``eid`` in ``ledger`` up to its latest checkpoint with
        ``quorum`` cosignatures, each checked on its own (section 4's own checks) and proven by
        its inclusion proof in that verified checkpoint; the other records are only decoded
        and replayed to find them and state the voter's standing."""
        keys = self.checkpoint_keys(ledger, quorum)
        proven = self.checkpoint(ledger, keys)
        size, root = proven.checkpoint.size, proven.checkpoint.root
        check = check_voter(ledger, self.decoded_records(ledger, stop=size), eid)
        for item in check.records:
            record = self._checked(item.record)
            result = self.call(
                "proof.inclusion",
                {"ledger": ledger, "index": record.height, "size": size},
                node=self.ledger_node(ledger),
            )
            verify_inclusion(leaf_hash(record.encode()), record.height, size, reply_field(result, "proof", list), root)
        return dataclasses.replace(check, proven=proven)

    def decoded_records(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """Records from ``start`` to ``stop`` (default: the head), decoded but not verified."""
        following: int | None = start
        while following is not None and (stop is None or following < stop):
            page = self.call("range", {"ledger": ledger, "start": following}, node=self.ledger_node(ledger))
            records = reply_field(page, "records", list)
            for data in records:
                record = _decode(data)
                if record.height != following:
                    raise NodeUnavailableError(f"range: height {record.height} where {following} was due")
                if stop is not None and record.height >= stop:
                    return
                yield record
                following += 1
            if not records:
                return
            following = page.get("next")

    def consistency_proof(self, ledger: str, old: VerifiedCheckpoint, new: VerifiedCheckpoint) -> list[bytes]:
        """The node's proof that checkpoint ``new`` extends ``old``, verified (ProofError if not)."""
        a, b = old.checkpoint, new.checkpoint
        result = self.call(
            "proof.consistency", {"ledger": ledger, "old": a.size, "new": b.size}, node=self.ledger_node(ledger)
        )
        proof: list[bytes] = reply_field(result, "proof", list)
        verify_consistency(a.size, b.size, a.root, b.root, proof)
        return proof

    # --- writing ------------------------------------------------------------------------------

    def put(
        self, ledger: str, write: Write, request_id: str | None = None, ts: int | None = None, *, replicas: int = 0
    ) -> dict[str, Any]:
        """Write one record on its ledger's home node, with its proof of work; returns the receipt
        (once ``replicas`` replicas hold it, when more than 0)."""
        node = self.ledger_node(ledger)
        rules = self.rules(ledger)
        domain = rules.rules.get("type", PLAIN)
        if write.domain is not None and domain != write.domain:
            raise UsageError(
                f"ledger {ledger!r} has {domain!r} rules; a {write.kind!r} record goes on {write.domain!r} ledgers"
            )
        if write.kind not in rules.kinds:
            raise UnknownKindError(
                f"kind {write.kind!r} is not one of this ledger's kinds {list(rules.kinds)}", ledger=ledger
            )
        content = Content(ledger, write.kind, write.payload, self.account, *self._request(request_id, ts))
        entry = Entry.prepare(content, rules.difficulty, self.config.settings.limits)
        return self._send("put", entry, node, replicas)

    def create_ledger(
        self, ledger: str, rules: LedgerRules, request_id: str | None = None, ts: int | None = None
    ) -> dict[str, Any]:
        """Start ``ledger``; its genesis pins the home's checkpoint key (PROTOCOL 10.7) unless the
        rules name one, or the home says none (a node from before checkpoints)."""
        rules = self._pin_checkpoint_key(ledger, rules)
        genesis = rules.genesis_content(ledger, self.account, *self._request(request_id, ts))
        LedgerRules.from_genesis(genesis, self.config.settings.limits)  # refuse bad rules before the work
        entry = Entry.prepare(genesis, rules.difficulty, self.config.settings.limits)
        receipt = self._send("ledger.create", entry, self.ledger_node(ledger))
        self._rules[ledger] = rules
        return receipt

    def _pin_checkpoint_key(self, ledger: str, rules: LedgerRules) -> LedgerRules:
        if PINNED_KEY_FIELD in rules.rules:
            return rules
        hello = self.call("hello", node=self.home_node(ledger))
        key, cluster = hello.get("checkpoint_key"), hello.get("cluster")
        if not isinstance(key, bytes) or not isinstance(cluster, str):
            return rules
        try:
            vkey = home_key(cluster, ledger, key).encode()
        except VledgerError as e:
            raise NodeUnavailableError(f"hello: the home's checkpoint key is not one: {e.message}") from None
        return dataclasses.replace(rules, rules={**rules.rules, PINNED_KEY_FIELD: vkey})

    def _request(self, request_id: str | None, ts: int | None) -> tuple[str, int]:
        """A write's request id and client time: given (to repeat a write exactly), else new."""
        return request_id or self._request_ids(), self._clock() if ts is None else ts

    def _send(self, cmd: str, entry: Entry, node: NodeAddress | None, replicas: int = 0) -> dict[str, Any]:
        request_id = entry.content.request_id
        args: dict[str, Any] = {"content": entry.content_bytes, "nonce": entry.nonce}
        if replicas:
            args["w"] = replicas
        try:
            receipt = self.call(cmd, args, node=node)
        except NodeUnavailableError as e:
            # Written or not: the same content under the same request id is written at most once.
            e.add_note(f"to retry safely, repeat it with --request-id {request_id} --ts {entry.content.ts}")
            raise
        if receipt.get("ledger") != entry.content.ledger or receipt.get("checksum") != entry.checksum:
            raise NodeUnavailableError(f"{cmd}: the receipt is not for the record sent (request id {request_id})")
        reply_field(receipt, "height", int)
        reply_field(receipt, "hash", bytes)
        return receipt


def _ledger_entries(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in reply_field(result, "ledgers", list) if isinstance(entry, dict)]


def _decode(data: object) -> Record:
    if not isinstance(data, bytes):
        raise NodeUnavailableError("the node's reply holds no record bytes")
    return decode_record(data, PROTOCOL_LIMITS)


def _record_of(result: dict[str, Any]) -> Record:
    return _decode(result.get("record"))


def _expect(record: Record, ledger: str, height: int) -> Record:
    """``record`` if it is the one asked for: a node that sends another is caught here."""
    if record.ledger != ledger:
        raise WrongLedgerError(f"the node sent a record of ledger {record.ledger!r}", ledger=ledger, height=height)
    if record.height != height:
        raise HeightGapError(f"asked for height {height}, the node sent height {record.height}", ledger=ledger)
    return record


class SessionPool:
    """Sessions by their options, kept open: one for a command, several over a shell's life."""

    def __init__(self, opener: Callable[[ClientOptions], Session] = open_session) -> None:
        self._opener = opener
        self._sessions: dict[ClientOptions, Session] = {}

    def session(self, options: ClientOptions) -> Session:
        session = self._sessions.get(options)
        if session is None:
            session = self._sessions[options] = self._opener(options)
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
