"""Verified reads (and writes) over one connection: what :class:`vledger.client.Client` and the CLI share.

A :class:`Reader` checks what it reads before it returns it: a record fetched by height or
hash must be that record, decode, and pass its own checks (checksum, proof of work, link)
under its ledger's genesis rules; a range is checked as a chain; a checkpoint's signatures
with the keys the caller trusts; a proof against a verified checkpoint; a receipt must name
the ledger and checksum it was sent. It speaks the client protocol's commands
(docs/PROTOCOL.md section 6) over a :class:`Connection`: the CURVE client of
broker/client.py, or the gateway's HTTP routes mapped onto the same commands (client/http.py).

A :class:`Session` is a reader over CURVE with a cluster configuration: a request about a
ledger goes to the ledger's home node (unless the session is pinned to one node), checkpoint
keys come from the genesis, the key directory and the home's ``hello``; it carries an admin's
one-time code, and it writes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

from ..broker.client import Client, NodeAddress, named_home
from ..broker.client import node_address as node_address  # noqa: PLC0414 - moved to broker for the nodes
from ..broker.keys import KeyPair
from ..broker.signing import admin_checkpoint_key, witness_keys
from ..config.cluster import ClusterConfig, NodeConfig
from ..config.settings import PROTOCOL_LIMITS
from ..node import totp
from ..node.epoch import EPOCH_KIND, STANDBY_KEY_FIELD, EpochHistory
from ..node.errors import (
    BadGenesisError,
    BadLinkError,
    HeightGapError,
    NodeUnavailableError,
    NoteKeyError,
    NotFoundError,
    ProofError,
    QuorumError,
    ReceiptError,
    RemoteError,
    UnknownKindError,
    UsageError,
    VledgerError,
    WrongLedgerError,
)
from ..node.key_rotation import ROTATION_KIND, hands_over
from ..node.ledger import LedgerRules
from ..node.node_keys import NodeKeys, node_keys_of, node_of_witness, parse_node_keys
from ..node.note import VerifiedCheckpoint, parse_checkpoint, parse_note
from ..node.outside import outside_witnesses
from ..node.receipt import (
    Receipt,
    ReceiptKeys,
    RotationProof,
    keys_from_genesis,
    verify_receipt,
    verify_witnessed,
)
from ..node.record import Content, Entry, Record, decode_record
from ..node.rules.admin import ADMIN_LEDGER
from ..node.rules.engine import PLAIN, domain_defaults
from ..node.tree import Frontier, leaf_hash, verify_consistency, verify_inclusion
from ..node.verify import ChainVerifier, verify_record
from ..node.witness import PINNED_KEY_FIELD, home_key
from .home_cache import HomeCache
from .voters import VoterCheck, check_voter
from .write import Write

log = logging.getLogger(__name__)
PROVEN_RUN = 256  # records of a range per inclusion proof: one proof ties the run's chain of links
RECEIPT_POLL_SECONDS = 0.2  # how often a receipt asks again for a checkpoint that covers its record
SECOND_FACTOR_CODES = frozenset(("second_factor_required", "bad_second_factor"))
# A node's refusal of a session for the caller's role (ingest/service.py _dispatch), its role captured.
_SESSION_REFUSED = re.compile(r"the (\S+) role may not use 'totp\.session'")
_MS_MASK = (1 << 48) - 1  # 12 hex digits of milliseconds: until the year 10889
# The reads of one ledger (PROTOCOL 6.1) that any holder of it answers alike: a silent home's go to its standby.
LEDGER_READS = frozenset(("get", "range", "head", "size", "checkpoint", "proof.inclusion", "proof.consistency"))
# How long a write whose silent home its standby still names waits for the promotion (or the
# home's return), and its pauses between asking them again: doubled from the first to the
# longest (PROTOCOL 10.9). An operator promotes by hand (README); a minute covers the drill.
HANDOVER_WAIT_SECONDS = 60.0
HANDOVER_FIRST_PAUSE = 0.25
HANDOVER_LONGEST_PAUSE = 4.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_request_id(clock: Callable[[], int] = now_ms) -> str:
    """A put's default request id: the time in milliseconds as 12 hex digits, then 20 random hex
    digits (80 bits: unguessable, and two writers' ids never meet). 32 characters of
    ``[0-9a-f]``, within PROTOCOL 2's request ids.

    Time first so that an author's ids sort in the order they were made: the store's index on
    ``(ledger, author, request_id)`` then takes each put's row on the last page of that author's
    range, not on a random one (with ``secrets.token_hex(16)``, each put of a long-lived writer
    dirtied a random index page).
    """
    return f"{clock() & _MS_MASK:012x}{secrets.token_hex(10)}"


@dataclasses.dataclass(slots=True)
class Backoff:
    """Pauses that double from ``pause`` up to ``longest``, none past ``deadline`` (a clock value)."""

    deadline: float
    pause: float = HANDOVER_FIRST_PAUSE
    longest: float = HANDOVER_LONGEST_PAUSE

    def next(self, now: float) -> float | None:
        """The next pause, cut to end at the deadline; None once the deadline is reached."""
        if now >= self.deadline:
            return None
        pause = min(self.pause, self.deadline - now)
        self.pause = min(self.pause * 2, self.longest)
        return pause


class _Bounce(NamedTuple):
    """A not_home naming a node this session found silent: not followed at once (PROTOCOL 10.9)."""

    refusal: RemoteError
    home: NodeAddress | None  # the node it names (None: the session's own node)


class Connection(Protocol):
    """What a reader needs of :class:`vledger.broker.client.Client`: one request's result, a
    refusal raised as RemoteError. Tests give a simulator; client/http.py maps the gateway."""

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: NodeAddress | None = None) -> Any: ...

    def close(self) -> None: ...


def reply_field(result: dict[str, Any], key: str, kind: type[Any]) -> Any:
    """``result[key]`` if it is a ``kind``; a node that answers otherwise is not understood."""
    value = result.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NodeUnavailableError(f"the node's reply has no {kind.__name__} {key!r}")
    return value


class _SignedTree:
    """The Merkle tree of a ledger's first records as a reader takes them, to be checked
    against a verified checkpoint: the records a node served up to its size must be the signed
    chain, not another that anyone could compute record by record."""

    def __init__(self, ledger: str, proven: VerifiedCheckpoint) -> None:
        self.ledger = ledger
        self.proven = proven
        self.size = proven.checkpoint.size
        self.root = proven.checkpoint.root
        self.tree = Frontier()
        self.epochs: list[Record] = []  # the genesis and the handover records among the tree's (10.9)

    def leaves(self, records: Iterable[Record]) -> Iterator[Record]:
        """``records`` as they come, the first ``size`` of them grown into the tree."""
        for record in records:
            if self.tree.size < self.size:
                self.tree.append(leaf_hash(record.encode()))
                if record.height == 0 or record.content.kind == EPOCH_KIND:
                    self.epochs.append(record)
            yield record

    def check(self) -> EpochHistory | None:
        """Raise ProofError unless the records taken make the checkpoint's tree; for a ledger
        whose genesis pins a standby key, the checkpoint must also be of its epoch by those
        records (10.9): BadEpochError, or FencedError for a replaced home's past the handover.
        Returns those epochs (None: a ledger without a standby, whose one epoch never ends)."""
        if self.tree.size != self.size or self.tree.root() != self.root:
            raise ProofError(
                f"the first {self.tree.size} records of {self.ledger!r} this node served are not the tree of "
                f"{self.size} records its signed checkpoint states: the node serves another chain"
            )
        genesis = self.epochs[0] if self.epochs and self.epochs[0].height == 0 else None
        rules = LedgerRules.from_genesis(genesis.content, PROTOCOL_LIMITS) if genesis is not None else None
        if genesis is None or rules is None or STANDBY_KEY_FIELD not in rules.rules:
            return None
        history = EpochHistory.from_genesis(genesis, rules)
        history.feed(self.epochs[1:])
        history.verify(self.proven.note.encode())
        return history


class Reader:
    """Verified reads over one connection; every request goes to the connection's node."""

    def __init__(self, client: Connection) -> None:
        self.client = client
        self._rules: dict[str, LedgerRules] = {}
        self.otp: str | None = None  # the admin's one-time code, sent with each request
        self.ask_otp: Callable[[], str] | None = None  # where to get another one (a terminal)
        self._in_session = False  # the code was traded for a session: trade a new one too
        self._admin_copy: tuple[int, NodeKeys | None] | None = None  # (admin checkpoint size, its evidence)
        self._epoch_homes: dict[str, set[str]] = {}  # ledger -> the homes of its epochs proven so far (10.9)

    def close(self) -> None:
        self.client.close()

    # --- requests ---------------------------------------------------------------------------

    def second_factor(self, otp: str | None, ask: Callable[[], str] | None) -> None:
        """The one-time code this verb's requests carry, and where to ask for one when a node
        refuses without a good one (None: the refusal is the caller's). A session token given
        as the code (another Reader's, the demo's; --otp TOKEN) is one too when it runs out: the
        code typed then opens another, never kept and sent again used up (review r29)."""
        self.otp, self.ask_otp = otp, ask
        if otp is not None and totp.is_session(otp):
            self._in_session = True

    def second_factor_session(self, verb: str | None = None) -> None:
        """Trade the verb's one-time code for a second-factor session (PROTOCOL 16.5,
        ``totp.session``) that its later requests carry instead: a verb that sends several
        admin commands then needs one code, not one per command. The session is this
        object's only (never stored), good for the caller's key alone, for two minutes; a
        request refused past them asks for a code again as ever. Nothing changes when no
        code was needed, or the node has no sessions (an older node: a code per command).
        A session token given as the code is carried as it is: a session cannot open another.

        ``verb``: the admin command the session is for. A role that may not open a session may
        not use that command either (both are the admin's): the refusal names it, not
        ``totp.session``, a step the caller never asked for (outsider o23 LOW 1)."""
        if self.otp is not None and totp.is_session(self.otp):
            return
        try:
            result = self.call("totp.session")
        except RemoteError as e:
            if e.code == "unknown_command":
                return
            role = _SESSION_REFUSED.fullmatch(e.reason) if e.code == "forbidden" and verb is not None else None
            if role is not None:
                raise RemoteError(e.code, f"the {role[1]} role may not use {verb!r}", e.details) from e
            raise
        token = result.get("session")
        if isinstance(token, str):
            self.otp, self._in_session = token, True

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
            if self._in_session and cmd != "totp.session":
                # The session ran out: the typed code opens another, else it would be sent again
                # with each later command, used up, each refusal a guess counted (review r28).
                # Not for totp.session itself, which would then be sent with that session, which
                # opens none (a shell's second `ledger create`, review r29): the code opens it.
                token = self.client.call("totp.session", {"otp": self.otp}, node=node).get("session")
                if isinstance(token, str):
                    self.otp = token
            result = self.client.call(cmd, {**sent, "otp": self.otp}, node=node)
        if not isinstance(result, dict):
            raise NodeUnavailableError(f"{cmd}: the node's result is not a map")
        return result

    def home_node(self, ledger: str) -> NodeAddress | None:
        """Where a request to ``ledger``'s home goes; None: the connection's node."""
        return None

    def ledger_node(self, ledger: str) -> NodeAddress | None:
        """Where a request about ``ledger`` goes; None: the connection's node."""
        return None

    # --- reading, checked --------------------------------------------------------------------

    def rules(self, ledger: str) -> LedgerRules:
        """The ledger's rules, read from its genesis record (kept: a genesis never changes).

        Raises RemoteError ``no_such_ledger`` for a ledger the cluster does not hold.
        """
        rules = self._rules.get(ledger)
        if rules is None:
            rules = self._rules[ledger] = self._genesis_rules(ledger, self.ledger_node(ledger))
        return rules

    def _genesis_rules(self, ledger: str, node: NodeAddress | None) -> LedgerRules:
        """The rules of ``ledger``'s genesis as ``node`` serves it, checked as a genesis."""
        result = self.call("get", {"ledger": ledger, "height": 0}, node=node)
        return ChainVerifier(ledger, PROTOCOL_LIMITS).check(_expect(_record_of(result), ledger, 0))

    def trust_genesis(self, ledger: str, data: bytes) -> LedgerRules:
        """Take ``data`` as ``ledger``'s genesis record: its rules check every record read later,
        and the node's genesis must be these exact bytes. Raises the record's own error when
        ``data`` is not a valid genesis of ``ledger`` (section 4), BadGenesisError when the
        node holds another one."""
        rules = ChainVerifier(ledger, PROTOCOL_LIMITS).check(_expect(_decode(data), ledger, 0))
        if self.record(ledger, 0).encode() != data:
            raise BadGenesisError("the node's genesis is not the one this client trusts", ledger=ledger, height=0)
        self._rules[ledger] = rules
        return rules

    def record(self, ledger: str, height: int) -> Record:
        return self._checked(
            _expect(
                _record_of(self.call("get", {"ledger": ledger, "height": height}, node=self.ledger_node(ledger))),
                ledger,
                height,
            )
        )

    def checked_bytes(self, ledger: str, data: object) -> Record:
        """A record of ``ledger`` a server sent as bytes, decoded and checked on its own under
        the ledger's genesis rules (section 4). Raises its RecordError, WrongLedgerError for a
        record of another ledger, NodeUnavailableError for what is not bytes."""
        record = _decode(data)
        if record.ledger != ledger:
            raise WrongLedgerError(f"the node sent a record of ledger {record.ledger!r}", ledger=ledger)
        return self._checked(record)

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
        """What ``ledger``'s checkpoints are checked with: the key its genesis pins, and no
        witness key (a subclass knows more). Raises NoteKeyError when the genesis pins none."""
        try:
            return keys_from_genesis(self.record(ledger, 0).encode(), ledger, (), witnesses)
        except ReceiptError:
            raise NoteKeyError(f"ledger {ledger!r} pins no checkpoint key") from None

    def checkpoint(self, ledger: str, keys: ReceiptKeys, cosigned: int = 0) -> VerifiedCheckpoint:
        """The node's latest checkpoint of ``ledger`` with ``keys.quorum`` cosignatures, verified
        with the key in force at its size (the key chain from ``keys.log_key``, 13.8) and, when
        its genesis lists outside witnesses, with a quorum of theirs (13.9). With ``cosigned``,
        the largest the node says at least that many witnesses cosigned, its own and the outside
        ones together (only ``keys`` verify which did)."""
        return self._proven_checkpoint(ledger, keys, cosigned)[0]

    def _proven_checkpoint(
        self, ledger: str, keys: ReceiptKeys, cosigned: int = 0
    ) -> tuple[VerifiedCheckpoint, list[RotationProof], NodeKeys | None]:
        """The latest checkpoint with ``keys.quorum`` (at least ``cosigned``) cosignatures, the
        key rotations below its size (each record with its inclusion proof in it), all verified:
        the chain from the genesis key to the key that signed it; and the evidence of the
        witnesses' rotated keys it was checked with (16.6), if any."""
        node = self.ledger_node(ledger)
        asked: dict[str, Any] = {"ledger": ledger, "witnesses": keys.quorum}
        if keys.outside is not None:  # the largest checkpoint with that many outside cosignatures
            asked.update(witnesses=keys.quorum + keys.outside.quorum, outside=keys.outside.quorum)
        asked["witnesses"] = max(asked["witnesses"], cosigned)
        try:
            return self._verified_answer(ledger, keys, self.call("checkpoint", asked, node=node))
        except QuorumError:
            # The largest checkpoint may be one the standby's key signed that no witness has
            # cosigned yet, which counts for nothing (10.9): the largest that one witness did.
            if asked["witnesses"] > 0 or keys.standby_key is None:
                raise
            asked["witnesses"] = 1
            return self._verified_answer(ledger, keys, self.call("checkpoint", asked, node=node))

    def _verified_answer(
        self, ledger: str, keys: ReceiptKeys, result: dict[str, Any]
    ) -> tuple[VerifiedCheckpoint, list[RotationProof], NodeKeys | None]:
        """_proven_checkpoint of the node's ``checkpoint`` answer ``result``."""
        node = self.ledger_node(ledger)
        note = reply_field(result, "checkpoint", bytes)
        heights = result.get("rotations", [])
        if not isinstance(heights, list) or not all(type(h) is int and h >= 0 for h in heights):
            raise NodeUnavailableError("checkpoint: rotations is not a list of heights")
        node_keys = self.node_keys(result, keys)
        if not heights:
            return verify_witnessed(note, keys, node_keys=node_keys), [], node_keys
        size = parse_checkpoint(parse_note(note).text).size
        chain = keys.key_chain(ledger)
        rotations = []
        for height in heights:
            record = self._checked(self.record(ledger, height))
            chain = chain.after(record)  # bad_rotation unless the key in force signed it
            proof = self.call("proof.inclusion", {"ledger": ledger, "index": height, "size": size}, node=node)
            rotations.append(RotationProof(height, record.encode(), tuple(reply_field(proof, "proof", list))))
        verified = verify_witnessed(note, keys, chain, node_keys)
        for rotation in rotations:
            verify_inclusion(leaf_hash(rotation.record), rotation.index, size, rotation.proof, verified.checkpoint.root)
        return verified, rotations, node_keys

    def node_keys(self, result: dict[str, Any], keys: ReceiptKeys) -> NodeKeys | None:
        """The evidence of the witnesses' rotated keys (16.6) for a ``checkpoint`` answer: the
        one it carries (a gateway's), else built from the admin ledger read here, each record
        checked as the chain's next, under an admin checkpoint (the evidence is verified with
        ``keys.admin_key`` when used, never believed). None without an admin key or rotation.
        Raises ReceiptError [bad_receipt] for carried evidence that is not one."""
        if keys.admin_key is None:
            return None
        carried = result.get("node_keys")
        if carried is not None:
            return parse_node_keys(carried)
        try:
            asked = self.call("checkpoint", {"ledger": ADMIN_LEDGER}, node=self.ledger_node(ADMIN_LEDGER))
            note = reply_field(asked, "checkpoint", bytes)
            size = parse_checkpoint(parse_note(note).text).size
            if self._admin_copy is None or self._admin_copy[0] != size:
                records = [r.encode() for _, r in zip(range(size), self.records(ADMIN_LEDGER), strict=False)]
                witnesses = {node for key in keys.witnesses if (node := node_of_witness(key)) is not None}
                self._admin_copy = (size, node_keys_of(records, note, witnesses))
            return self._admin_copy[1]
        except (RemoteError, NodeUnavailableError) as e:
            log.info("the admin ledger cannot be read here (%s): rotated witness keys are not followed", e)
            return None

    def receipt(self, ledger: str, index: int, keys: ReceiptKeys, deadline: float) -> Receipt:
        """The receipt of record ``index``: the record, a checkpoint that covers it with
        ``keys.quorum`` cosignatures (waited for until ``deadline``, a ``time.monotonic``
        value) and the inclusion proof, all verified. Raises NotFoundError when no such
        checkpoint came in time, and the failed check's error when something does not verify."""
        record = self.record(ledger, index)
        while True:
            try:
                checkpoint, rotations, node_keys = self._proven_checkpoint(ledger, keys)
                if checkpoint.checkpoint.size > index:
                    break
            except RemoteError as e:
                if e.code != "not_found":
                    raise
            except QuorumError:
                if time.monotonic() >= deadline:
                    raise  # says which outside witnesses did not cosign
            if time.monotonic() >= deadline:
                outside = keys.outside
                raise NotFoundError(
                    f"no checkpoint of {ledger!r} covering height {index} with {keys.quorum} cosignatures in time"
                    + (
                        f" (nor with {outside.quorum} of the outside witnesses its genesis lists: "
                        f"{', '.join(k.name for k in outside.keys)})"
                        if outside is not None
                        else ""
                    )
                )
            time.sleep(RECEIPT_POLL_SECONDS)  # a checkpoint is signed at most every second
        size = checkpoint.checkpoint.size
        result = self.call(
            "proof.inclusion", {"ledger": ledger, "index": index, "size": size}, node=self.ledger_node(ledger)
        )
        proof = reply_field(result, "proof", list)
        receipt = Receipt.of(record.encode(), proof, checkpoint.note.encode(), rotations, node_keys)
        verify_receipt(receipt, keys)
        return receipt

    def proven_voter_check(self, ledger: str, eid: str, proven: VerifiedCheckpoint) -> VoterCheck:
        """The records of electronic id ``eid`` in ``ledger`` up to the verified checkpoint
        ``proven``, each checked on its own (section 4's own checks) and proven by its inclusion
        proof in that checkpoint; the other records are only decoded and replayed to find them
        and state the voter's standing, and their Merkle tree must have the checkpoint's root, so
        that what is found (or not found) is the whole signed chain. Raises NotFoundError for a
        ledger without records, ProofError when the records read are not the checkpoint's tree,
        the failed check's error (a RecordError, ProofError) for a record that does not verify."""
        tree = _SignedTree(ledger, proven)
        check = check_voter(ledger, tree.leaves(self.decoded_records(ledger, stop=proven.checkpoint.size)), eid)
        # Every record up to the checkpoint was read: their tree must be the one it signs, or
        # the node served another chain (a forked tail) and "no records" would prove nothing.
        self.held_epochs(ledger, tree.check())
        for item in check.records:
            self.inclusion_proof(ledger, self._checked(item.record), proven)
        return dataclasses.replace(check, proven=proven)

    def epochs_under(self, ledger: str, proven: VerifiedCheckpoint) -> EpochHistory | None:
        """The epochs (10.9) of ``ledger``'s records up to the verified checkpoint ``proven``,
        read from the node (decoded, not each checked: their Merkle tree must be the
        checkpoint's), which must be of its epoch by them; None, with nothing read, for a
        ledger whose genesis pins no standby key (one epoch, no handover to fence). Raises
        ProofError when the records read are not the checkpoint's tree, FencedError [fenced]
        for a replaced home's checkpoint past the handover, BadEpochError [bad_epoch]."""
        if STANDBY_KEY_FIELD not in self.rules(ledger).rules:
            return None
        tree = _SignedTree(ledger, proven)
        for _ in tree.leaves(self.decoded_records(ledger, stop=proven.checkpoint.size)):
            pass
        return self.held_epochs(ledger, tree.check())

    def held_epochs(self, ledger: str, epochs: EpochHistory | None) -> EpochHistory | None:
        """``epochs``, the epochs of ``ledger``'s records proven in a verified checkpoint, kept:
        their homes are nodes a not_home may move a session to (10.9); returns ``epochs``."""
        if epochs is not None:
            self._epoch_homes.setdefault(ledger, set()).update(e.home for e in epochs.epochs)
        return epochs

    def proven_records(self, ledger: str, start: int, proven: VerifiedCheckpoint | None) -> Iterator[Record]:
        """Records from ``start`` to the head, each checked as the next of the chain; those below
        the verified checkpoint ``proven`` come in runs of at most PROVEN_RUN, each yielded only
        once the inclusion proof of its last record in that checkpoint verified (its links tie
        every record of the run to it) [ProofError: the node serves another chain]. Records past
        the checkpoint (and every record, without one) are checked as the chain's next only."""
        size = proven.checkpoint.size if proven is not None else 0
        run: list[Record] = []
        for record in self.records(ledger, start):
            if record.height >= size:
                yield record
                continue
            assert proven is not None
            run.append(record)
            if len(run) == PROVEN_RUN or record.height == size - 1:
                self.inclusion_proof(ledger, record, proven)
                yield from run
                run.clear()
        if run:  # the node's chain ended below the checkpoint it signed or cosigned
            raise ProofError(
                f"the records of {ledger!r} this node served end at height {run[-1].height}, "
                f"below its signed checkpoint of {size} records"
            )

    def full_voter_check(self, ledger: str, eid: str, proven: VerifiedCheckpoint | None) -> VoterCheck:
        """The records of electronic id ``eid`` in ``ledger``: every record from genesis to the
        node's head checked as the chain's next (section 4) and replayed through the rules.
        With a verified checkpoint ``proven``, the tree of the chain's first records must be
        its tree (its size and root) [ProofError]: a chain anyone could compute, served in
        place of the signed one, is refused. Records past the checkpoint are checked as the
        chain's next only."""
        if proven is None:
            return check_voter(ledger, self.records(ledger), eid)
        tree = _SignedTree(ledger, proven)
        check = check_voter(ledger, tree.leaves(self.records(ledger)), eid)
        self.held_epochs(ledger, tree.check())
        return check

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

    def inclusion_proof(self, ledger: str, record: Record, proven: VerifiedCheckpoint) -> list[bytes]:
        """The node's proof that ``record`` stands at its height in the verified checkpoint
        ``proven``, verified (ProofError if not, a height the checkpoint does not cover included)."""
        size, root = proven.checkpoint.size, proven.checkpoint.root
        result = self.call(
            "proof.inclusion", {"ledger": ledger, "index": record.height, "size": size}, node=self.ledger_node(ledger)
        )
        proof: list[bytes] = reply_field(result, "proof", list)
        verify_inclusion(leaf_hash(record.encode()), record.height, size, proof, root)
        return proof

    def consistency_proof(self, ledger: str, old_size: int, old_root: bytes, new: VerifiedCheckpoint) -> list[bytes]:
        """The node's proof that checkpoint ``new`` extends the tree of ``old_size`` leaves and
        root ``old_root`` (one verified earlier), verified (ProofError if not)."""
        b = new.checkpoint
        result = self.call(
            "proof.consistency", {"ledger": ledger, "old": old_size, "new": b.size}, node=self.ledger_node(ledger)
        )
        proof: list[bytes] = reply_field(result, "proof", list)
        verify_consistency(old_size, b.size, old_root, b.root, proof)
        return proof


class Session(Reader):
    """One caller talking to one node of a configured cluster (and to ledgers' home nodes)."""

    def __init__(
        self,
        config: ClusterConfig,
        node: NodeConfig,
        client: Connection,
        *,
        pinned: bool = False,
        clock: Callable[[], int] = now_ms,
        request_ids: Callable[[], str] = new_request_id,
        handover_wait: float = HANDOVER_WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        homes: HomeCache | None = None,
    ) -> None:
        super().__init__(client)
        self.config = config
        self.node = node
        self.pinned = pinned  # --node was given: every request goes there
        self._clock = clock
        self._request_ids = request_ids
        self.handover_wait = handover_wait  # seconds a write waits for its standby's promotion
        self._sleep = sleep
        self._monotonic = monotonic
        self._account: str | None = None
        self._home_silent: set[str] = set()  # ledgers whose home did not answer: their standby is asked
        self._silent: set[str] = set()  # endpoints whose last write went unanswered, until they answer
        self._moved: dict[str, str] = {}  # ledger -> the home a verified not_home named (10.9)
        # Ledgers whose home an earlier process found silent (client/home_cache.py): asked of
        # their standby first, and of the home after all if the standby does not answer.
        self._homes = None if pinned else homes
        self._noted: set[str] = set()  # the ledgers the note file names (ours included)
        self._remembered: set[str] = set()  # those whose standby is asked first for that reason
        if self._homes is not None:
            for ledger, noted in self._homes.silent().items():
                self._noted.add(ledger)
                standby = config.standby_of(ledger)
                if standby is not None and standby.name == noted and noted != config.home_of(ledger).name:
                    self._home_silent.add(ledger)
                    self._remembered.add(ledger)

    def call(
        self,
        cmd: str,
        args: dict[str, Any] | None = None,
        *,
        node: NodeAddress | None = None,
        ledger: str | None = None,
    ) -> dict[str, Any]:
        """As Reader.call; a read of a ledger sent to its configured home that does not answer
        is sent to the ledger's standby (PROTOCOL 10.9: promoted in its place, or following it),
        and the session's later requests about that ledger go there too. A node that answers
        not_home is followed once (6.1); when it names the ledger's standby or configured home
        (10.9: the only nodes a promotion can make its home), the session's later requests
        about the ledger go there (see :meth:`ledger_node`). ``ledger``: the ledger a write is
        of (a read names it in ``args``)."""
        if ledger is None and isinstance((args or {}).get("ledger"), str):
            ledger = (args or {})["ledger"]
        try:
            try:
                return self._answer(cmd, args, node)
            except NodeUnavailableError as e:
                if cmd not in LEDGER_READS or ledger is None or self.pinned:
                    raise
                node = self._instead_of(ledger, node, e)
                return self._answer(cmd, args, node)
        except RemoteError as e:
            if e.code != "not_home":
                raise
            named = self._named_home(ledger, node, e)
            try:
                return self._answer(cmd, args, named)
            except NodeUnavailableError as silent:
                # The home or standby it named went silent: the other of the two, once (10.9).
                if cmd not in LEDGER_READS or ledger is None or self._trusted_home(ledger, e) is None:
                    raise
                other = self._other_of(ledger, named, silent)
                if self._endpoint(other) == self._endpoint(node):
                    raise  # the other is the node that just sent us away
                return self._answer(cmd, args, other)

    def _named_home(self, ledger: str | None, asked: NodeAddress | None, refusal: RemoteError) -> NodeAddress | None:
        """Where a request answered ``refusal`` (not_home) by ``asked`` (None: the session's node)
        goes once more. A home it names that the configuration makes ``ledger``'s standby or
        home is reached at the configuration's address and kept for the session (the old home,
        while up, would cost every read a round trip); any other node named is asked at the
        address the answer gives, this once, as PROTOCOL 6.1 says: a lying node redirects no
        later request. Raises ``refusal`` when it names no other node."""
        trusted = self._trusted_home(ledger, refusal)
        address = named_home(refusal) if trusted is None else self._address(trusted)
        if address is None and trusted is None:
            raise refusal  # it names no home
        if (self.node.endpoint if address is None else address.endpoint) == (asked or self.node).endpoint:
            raise refusal  # the node asked names itself: nowhere else to go
        if trusted is not None and ledger is not None:
            if trusted == self.config.home_of(ledger).name:
                self._moved.pop(ledger, None)  # handed back (10.9): the configured home again
            else:
                self._moved[ledger] = trusted
        return address

    def _trusted_home(self, ledger: str | None, refusal: RemoteError) -> str | None:
        """The node a not_home about ``ledger`` names, if it may move the session there."""
        home = refusal.details.get("home")
        name = home.get("node") if isinstance(home, dict) else None
        if isinstance(name, str) and ledger is not None and not self.pinned and name in self._homes_allowed(ledger):
            return name
        return None

    def _homes_allowed(self, ledger: str) -> set[str]:
        """The nodes a not_home about ``ledger`` may move the session to: its configured home
        and standby (10.9: a promotion is refused to a node the cluster file does not name the
        standby), and the home of each handover record this session read proven in a verified
        checkpoint (a cluster file changed since), if the configuration names it an ingest node."""
        standby = self.config.standby_of(ledger)
        proven = {name for name in self._epoch_homes.get(ledger, ()) if name in self.config.nodes}
        proven = {name for name in proven if self.config.nodes[name].role == "ingest"}
        return {self.config.home_of(ledger).name, *((standby.name,) if standby is not None else ()), *proven}

    def _address(self, name: str) -> NodeAddress | None:
        """Node ``name``'s address from the configuration; None for the session's own node."""
        return None if name == self.node.name else node_address(self.config, name)

    def home_node(self, ledger: str) -> NodeAddress | None:
        """The ledger's home node as the configuration names it; None when it is the session's node."""
        home = self.config.home_of(ledger)
        return None if home.name == self.node.name else node_address(self.config, home.name)

    def ledger_node(self, ledger: str) -> NodeAddress | None:
        """Where a request about ``ledger`` is sent: the session's node (None) if --node was given,
        else the ledger's home: the configured one, or the one a verified not_home named."""
        if ledger in self._home_silent:
            return self.standby_node(ledger, NodeUnavailableError(f"the home of {ledger!r} did not answer"))
        if ledger in self._moved and not self.pinned:
            return self._address(self._moved[ledger])
        return None if self.pinned else self.home_node(ledger)

    def _instead_of(
        self, ledger: str, asked: NodeAddress | None, unanswered: NodeUnavailableError
    ) -> NodeAddress | None:
        """Where a request about ``ledger`` that ``asked`` did not answer goes next: the
        standby if ``asked`` is the configured home; the configured home if ``asked`` is the
        standby only a note of an earlier process sent it to (the note then ends). Raises
        ``unanswered`` otherwise."""
        if asked == self.home_node(ledger):
            return self.standby_node(ledger, unanswered)
        if ledger in self._remembered and asked == self._standby_address(ledger):
            log.info("the standby of %s, asked first for a note of its silent home, does not answer", ledger)
            return self._other_of(ledger, asked, unanswered)
        moved = self._moved.get(ledger)
        if moved is not None and self._endpoint(asked) == self._endpoint(self._address(moved)):
            log.info("%s, which a not_home named the home of %s, does not answer", moved, ledger)
            return self._other_of(ledger, asked, unanswered)
        raise unanswered

    def _other_of(self, ledger: str, asked: NodeAddress | None, unanswered: NodeUnavailableError) -> NodeAddress | None:
        """The other of ``ledger``'s configured home and standby, when ``asked`` is one of them and
        did not answer: a not_home or a note of an earlier process may name the standby (or the
        home) just before it goes silent, and the other may well answer. Forgets what sent the
        session to ``asked``. Raises ``unanswered`` when ``asked`` is neither, or there is no other."""
        if self.pinned or self.config.standby_of(ledger) is None:
            raise unanswered
        if self._endpoint(asked) == self._endpoint(self.home_node(ledger)):
            return self.standby_node(ledger, unanswered)
        if self._endpoint(asked) == self._endpoint(self._standby_address(ledger)):
            self._moved.pop(ledger, None)
            self._remembered.discard(ledger)
            self._home_silent.discard(ledger)
            self._forget_notes({ledger})
            return self.home_node(ledger)
        raise unanswered

    def _standby_address(self, ledger: str) -> NodeAddress | None:
        standby = self.config.standby_of(ledger)
        if standby is None or standby.name == self.node.name:
            return None
        return node_address(self.config, standby.name)

    def _forget_notes(self, ledgers: set[str]) -> None:
        if self._homes is not None and ledgers & self._noted:
            self._homes.home_answered(ledgers & self._noted)
            self._noted -= ledgers

    def standby_node(self, ledger: str, unanswered: NodeUnavailableError) -> NodeAddress | None:
        """Where a request goes when the ledger's configured home did not answer (``unanswered``):
        its standby (None: the session's node), which may have been promoted in its place
        (PROTOCOL 10.9). Raises ``unanswered`` again when --node was given or the ledger has no
        standby."""
        standby = self.config.standby_of(ledger)
        if standby is None or self.pinned or standby.name == self.config.home_of(ledger).name:
            raise unanswered
        if ledger not in self._home_silent:
            self._home_silent.add(ledger)  # the session's later requests about it skip the wait
            if self._homes is not None:
                self._homes.home_silent(ledger, standby.name)  # and so do the next processes' (home_cache)
                self._noted.add(ledger)
        return None if standby.name == self.node.name else node_address(self.config, standby.name)

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

    def author_of(self, ledger: str) -> str:
        """The caller's account, as the author of a record of ``ledger``: asked of the node the
        record goes to (its home, or its standby once the home did not answer: 10.9), not of
        the session's node, which may be that silent home and cost a second timeout."""
        if self._account is None:
            node = self.ledger_node(ledger)
            try:
                self._account = reply_field(self.call("whoami", node=node), "account", str)
            except NodeUnavailableError as e:
                if self.pinned:
                    raise
                self._account = reply_field(self.call("whoami", node=self._instead_of(ledger, node, e)), "account", str)
        return self._account

    def checkpoint_keys(self, ledger: str, witnesses: int = 0) -> ReceiptKeys:
        """What this session checks ``ledger``'s checkpoints with: the key its genesis pins, else
        the key its home node states (``hello``); the witness keys of the cluster's key directory
        and a quorum of ``witnesses``. Raises NoteKeyError when no checkpoint key is known."""
        genesis = self.record(ledger, 0)
        # The admin ledger's key, from the key directory: a witness's rotated keys count (16.6).
        admin_key = admin_checkpoint_key(self.config)
        try:
            keys = keys_from_genesis(genesis.encode(), ledger, witness_keys(self.config).values(), witnesses)
            return dataclasses.replace(keys, admin_key=admin_key)
        except ReceiptError:
            pass  # the genesis pins none: the home's configured key
        hello = self.call("hello", node=self.home_node(ledger))
        raw = hello.get("checkpoint_key")
        if not isinstance(raw, bytes):
            raise NoteKeyError(f"ledger {ledger!r} pins no checkpoint key and its home states none")
        log_key = home_key(self.config.name, ledger, raw)
        outside = outside_witnesses(ledger, self.rules(ledger).rules, self.config.name)
        return ReceiptKeys(
            log_key, tuple(witness_keys(self.config).values()), witnesses, genesis, outside, admin_key=admin_key
        )

    # --- writing ------------------------------------------------------------------------------

    def put(
        self, ledger: str, write: Write, request_id: str | None = None, ts: int | None = None, *, replicas: int = 0
    ) -> dict[str, Any]:
        """Write one record on its ledger's home node, with its proof of work; returns the receipt
        (once ``replicas`` replicas hold it, when more than 0)."""
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
        content = Content(ledger, write.kind, write.payload, self.author_of(ledger), *self._request(request_id, ts))
        entry = Entry.prepare(content, rules.difficulty, self.config.settings.limits)
        return self._send("put", entry, self.ledger_node(ledger), replicas)

    def create_ledger(
        self,
        ledger: str,
        rules: LedgerRules,
        request_id: str | None = None,
        ts: int | None = None,
        *,
        keep_grants: bool = False,
    ) -> dict[str, Any]:
        """Start ``ledger``; its genesis pins the home's checkpoint key (PROTOCOL 10.7) unless the
        rules name one, or the home says none (a node from before checkpoints), and writes out
        each default of its domain the rules leave out (a resources ledger's ``max_holders``,
        7.3: the home refuses a new genesis without).

        Raises RemoteError ``already_granted`` when another account than this session's holds a
        kind of an election or a charity ``ledger`` that moves votes or money (granted before it
        existed, 16.2), unless ``keep_grants``."""
        rules = LedgerRules(rules.kinds, rules.difficulty, domain_defaults(rules.rules))
        rules = self._pin_checkpoint_key(ledger, rules)
        genesis = rules.genesis_content(ledger, self.account, *self._request(request_id, ts))
        LedgerRules.from_genesis(genesis, self.config.settings.limits)  # refuse bad rules before the work
        outside_witnesses(ledger, rules.rules, self.config.name)  # and outside witnesses the home would refuse (13.9)
        entry = Entry.prepare(genesis, rules.difficulty, self.config.settings.limits)
        receipt = self._send("ledger.create", entry, self.ledger_node(ledger), keep_grants=keep_grants)
        self._rules[ledger] = rules
        return receipt

    def promote(self, ledger: str, node: str, *, key_not_stolen: bool = False) -> dict[str, Any]:
        """Make ``node``, the ledger's standby, its home in a new epoch (PROTOCOL 10.9): the
        receipt of the handover record it placed. The node refuses [promotion_refused] while it
        lacks a record a witness cosigned, and a failback (an epoch from 3: ``node`` was a home
        before) unless ``key_not_stolen`` confirms its key was not stolen."""
        address = None if node == self.node.name else node_address(self.config, node)
        args: dict[str, Any] = {"ledger": ledger, **({"key_not_stolen": True} if key_not_stolen else {})}
        receipt: dict[str, Any] = self.call("ledger.promote", args, node=address)
        reply_field(receipt, "height", int)
        return receipt

    def _pin_checkpoint_key(self, ledger: str, rules: LedgerRules) -> LedgerRules:
        rules = self._pin_standby_key(ledger, rules)
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
        # A ledger that pins its key may rotate it (13.8): the rotation's kind is one of its kinds,
        # unless it pins a standby key too: such a ledger never rotates (10.9).
        kinds = rules.kinds if hands_over(rules) else tuple(sorted({*rules.kinds, ROTATION_KIND}))
        return dataclasses.replace(rules, kinds=kinds, rules={**rules.rules, PINNED_KEY_FIELD: vkey})

    def rotate_key(self, ledger: str) -> dict[str, Any]:
        """Rotate ``ledger``'s checkpoint key on its home (admin): the receipt of the rotation
        record and the new key (``key``, a vkey)."""
        result: dict[str, Any] = self.call("ledger.rekey", {"ledger": ledger}, node=self.home_node(ledger))
        return result

    def _pin_standby_key(self, ledger: str, rules: LedgerRules) -> LedgerRules:
        """A ledger the cluster file gives a standby pins the standby's checkpoint key (from its
        ``hello``) and allows the handover kind ``epoch`` (PROTOCOL 10.9)."""
        standby = self.config.standby_of(ledger)
        if standby is None or STANDBY_KEY_FIELD in rules.rules:
            return rules
        address = None if standby.name == self.node.name else node_address(self.config, standby.name)
        hello = self.call("hello", node=address)
        key, cluster = hello.get("checkpoint_key"), hello.get("cluster")
        if not isinstance(key, bytes) or not isinstance(cluster, str):
            raise NodeUnavailableError(f"hello: the standby {standby.name} told no checkpoint key")
        vkey = home_key(cluster, ledger, key).encode()
        kinds = tuple(sorted({*rules.kinds, EPOCH_KIND}))
        return dataclasses.replace(rules, kinds=kinds, rules={**rules.rules, STANDBY_KEY_FIELD: vkey})

    def _request(self, request_id: str | None, ts: int | None) -> tuple[str, int]:
        """A write's request id and client time: given (to repeat a write exactly), else new."""
        return request_id or self._request_ids(), self._clock() if ts is None else ts

    def _send(
        self, cmd: str, entry: Entry, node: NodeAddress | None, replicas: int = 0, *, keep_grants: bool = False
    ) -> dict[str, Any]:
        request_id = entry.content.request_id
        args: dict[str, Any] = {"content": entry.content_bytes, "nonce": entry.nonce}
        if replicas:
            args["w"] = replicas
        if keep_grants:
            args["keep_grants"] = True
        try:
            receipt = self._write(cmd, args, node, entry.content.ledger)
        except NodeUnavailableError as e:
            # Written or not: the same content under the same request id is written at most once.
            e.add_note(_retry_note(request_id, entry.content.ts))
            raise
        except RemoteError as e:
            if e.code == "replication_timeout":  # durable on the home: the same request waits again (10.3)
                e.add_note(_retry_note(request_id, entry.content.ts))
                e.details = {**e.details, "request_id": request_id, "ts": entry.content.ts}
            raise
        if receipt.get("ledger") != entry.content.ledger or receipt.get("checksum") != entry.checksum:
            raise NodeUnavailableError(f"{cmd}: the receipt is not for the record sent (request id {request_id})")
        reply_field(receipt, "height", int)
        reply_field(receipt, "hash", bytes)
        return receipt

    def _write(self, cmd: str, args: dict[str, Any], node: NodeAddress | None, ledger: str) -> dict[str, Any]:
        """The result of the write ``args`` of ``ledger``, sent to ``node`` (its home, as far as
        the session knows). A home gone may have been replaced by its standby (10.9): the
        standby is asked next, and serves the write or names the home of the newest epoch,
        which is followed. Until its promotion it names the home that just did not answer;
        see :meth:`_await_handover`."""
        if self.pinned:
            return self.call(cmd, args, node=node, ledger=ledger)
        unanswered: set[str] = set()  # this write's, not the session's: an endpoint silent for
        # another ledger's write may since be up, and promoted to this ledger's home
        try:
            answer = self._ask(cmd, args, node, ledger, unanswered)
        except NodeUnavailableError as e:
            if ledger in self._remembered and node == self._standby_address(ledger):
                node = self._instead_of(ledger, node, e)  # a note sent it there: the home after all
            else:
                node = self.standby_node(ledger, e)  # raises e when the ledger has none
                if self._endpoint(node) in unanswered:
                    raise  # the standby was the node that did not answer
            answer = self._ask(cmd, args, node, ledger)
        if isinstance(answer, _Bounce):
            return self._await_handover(cmd, args, ledger, node, answer)
        return answer

    def _await_handover(
        self, cmd: str, args: dict[str, Any], ledger: str, asked: NodeAddress | None, bounce: _Bounce
    ) -> dict[str, Any]:
        """The write ``args``, which ``asked`` (the standby) answered not_home naming a home this
        session just found silent: the standby is not promoted yet. Going back to that home at
        once only waited out its timeout again and failed a write the promotion was about to
        take over (or had kept: the home may have placed it before it went silent). So the
        write waits instead, pausing longer each round for up to ``handover_wait`` seconds,
        and asks the standby, then that home, again with the same content and request id (a
        write already placed is answered duplicate with its first receipt, never placed twice)
        until one of them serves it, or a not_home names a home that answers. Raises
        NodeUnavailableError when neither did in time."""
        backoff = Backoff(self._monotonic() + self.handover_wait)
        log.info("%s: the standby names %s, which did not answer; waiting for a promotion", cmd, bounce.home)
        while (pause := backoff.next(self._monotonic())) is not None:
            self._sleep(pause)
            for node in (asked, bounce.home):
                try:
                    answer = self._ask(cmd, args, node, ledger)
                except NodeUnavailableError:
                    continue  # silent still: the other one, or the next round
                if not isinstance(answer, _Bounce):
                    return answer
        named = bounce.refusal.details.get("home")
        home = named.get("node") if isinstance(named, dict) else None
        raise NodeUnavailableError(
            f"{cmd}: the home of {ledger!r} ({home or self._endpoint(bounce.home)}) does not answer, and "
            f"{self._endpoint(asked)} still names it the home after {self.handover_wait:g} s: no promotion yet"
        )

    def _ask(
        self,
        cmd: str,
        args: dict[str, Any],
        node: NodeAddress | None,
        ledger: str,
        unanswered: set[str] | None = None,
    ) -> dict[str, Any] | _Bounce:
        """``cmd`` sent to ``node`` and, when it answers not_home, once to the home it names
        (6.1), unless that home is one the session may trust (``_homes_allowed``) and found
        silent: then the refusal and that home, unfollowed (a node no one may trust is asked
        that once only, as ever). Raises NodeUnavailableError for a node that does not answer,
        its endpoint added to ``unanswered``."""
        try:
            return self._answer(cmd, args, node, unanswered)
        except RemoteError as refusal:
            if refusal.code != "not_home":
                raise
            home = self._named_home(ledger, node, refusal)
            if self._endpoint(home) in self._silent and self._trusted_home(ledger, refusal) is not None:
                return _Bounce(refusal, home)
            return self._answer(cmd, args, home, unanswered)

    def _answer(
        self, cmd: str, args: dict[str, Any] | None, node: NodeAddress | None, unanswered: set[str] | None = None
    ) -> dict[str, Any]:
        """Reader.call, keeping whether ``node`` answered (any answer, a refusal too) or not
        (for the session, and in ``unanswered`` for the caller)."""
        endpoint = self._endpoint(node)
        try:
            result = super().call(cmd, args, node=node)
        except NodeUnavailableError:
            self._silent.add(endpoint)
            if unanswered is not None:
                unanswered.add(endpoint)
            raise
        except RemoteError:
            self._silent.discard(endpoint)
            self._home_answers(endpoint)
            raise
        self._silent.discard(endpoint)
        self._home_answers(endpoint)
        return result

    def _home_answers(self, endpoint: str) -> None:
        """End the notes of the ledgers whose configured home is ``endpoint``, which answered."""
        if self._noted:
            self._forget_notes({ledger for ledger in self._noted if self.config.home_of(ledger).endpoint == endpoint})

    def _endpoint(self, node: NodeAddress | None) -> str:
        return self.node.endpoint if node is None else node.endpoint


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


def open_session(
    config: ClusterConfig,
    keys: KeyPair,
    node: str | None = None,
    timeout: float = 10.0,
    homes: HomeCache | None = None,
) -> Session:
    """A session over CURVE to ``node`` (default: the configuration's ``default_home``, and each
    ledger's home for a request about it), as the caller whose key pair is ``keys``; ``homes``:
    the notes of silent homes it reads and keeps (client/home_cache.py; unused with ``node``).

    Raises SettingsError for a node the configuration does not name, KeyMaterialError when its
    public key file is missing or bad. Connecting is lazy: a node that is down is found at the
    first request (NodeUnavailableError)."""
    chosen = config.node(node or config.default_home)
    address = node_address(config, chosen.name)
    # The session follows not_home itself (Session.call), to keep a verified new home.
    client = Client(address, keys, timeout=timeout, max_message_bytes=config.ingest.max_message_bytes, follow=False)
    return Session(config, chosen, client, pinned=node is not None, homes=homes)


def _retry_note(request_id: str, ts: int) -> str:
    return f"to retry safely, repeat it with --request-id {request_id} --ts {ts}"
