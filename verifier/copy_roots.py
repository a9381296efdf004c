"""Each copy's tree held against the ledger's largest verified checkpoint, home up or down.

The heads check compares a copy with the home; while the home does not answer, a copy that
serves a forked tail (each record valid on its own: anyone can compute checksums, work and
links) would go unnoticed. A checkpoint the home signed needs no home to be checked: the
verifier keeps, per ledger, the largest checkpoint it verified (:class:`LedgerCheckpoint`,
the home's latest note from Redis, else from a node's ``checkpoint`` answer; checked with the
key in force at its size, PROTOCOL 13.8, along the key chain from the genesis), and asks each
copy that holds that size for its record at ``size - 1`` and the inclusion proof of that leaf
in its own tree of ``size`` leaves (:func:`copy_root`): the root they lead to is the copy's
tree at that size, which must be the checkpoint's. Nothing is believed because of where it
came from: a note counts once its signature verifies, a rotation record once it is a valid
rotation and included in the checkpoint's tree. A note the standby's pinned key signed counts
only with a verified cosignature of a cluster witness (the cluster's witness keys; never an
outside witness its genesis lists, which holds no records), whatever the quorum (PROTOCOL
13.5 step 3, the epoch rule: the shared verify_ledger_checkpoint): that key alone could sign a
tree of its own making. A note
counts only if it states the ledger's newest epoch the verifier holds proven (PROTOCOL 10.9;
epoch 1 until one is, :meth:`LedgerCheckpoint.proven_epoch`): the verifier holds no records,
so it cannot tell a fenced home's note past the handover, or one the standby's key signed
before any handover, from the current home's, and either would make it blame the home and
the copies for a tree their key never signed. Redis's ``epochs`` hash proves no epoch: every
ingest node's Redis user writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..config.settings import PROTOCOL_LIMITS
from ..node.epoch import EpochHistory, epoch_claim, may_open, newest_witnessed_epoch
from ..node.errors import NodeUnavailableError, ProofError, ReceiptError, RemoteError, VledgerError
from ..node.key_rotation import ROTATION_KIND, KeyChain
from ..node.ledger import LedgerRules
from ..node.note import VerifiedCheckpoint, VerifierKey, parse_checkpoint, parse_note
from ..node.receipt import ReceiptKeys, keys_from_genesis, verify_ledger_checkpoint
from ..node.record import decode_record
from ..node.tree import leaf_hash, root_from_inclusion, verify_inclusion

log = logging.getLogger(__name__)

# A node's answers to a request it cannot serve from its copy (PROTOCOL 6.1, 12.5): not a fork.
CANNOT_ANSWER = frozenset(("not_found", "not_home", "no_such_ledger", "bad_tree_size"))


class CopyReader(Protocol):
    """What is read from a copy here (verifier.checks.NodeReader)."""

    @property
    def name(self) -> str: ...

    def record(self, ledger: str, height: int) -> bytes | None: ...

    def inclusion(self, ledger: str, index: int, size: int) -> list[bytes] | None: ...

    def checkpoint(self, ledger: str) -> tuple[bytes, list[int]] | None: ...


@dataclass(frozen=True, slots=True)
class Proven:
    """A checkpoint whose signature verified: ``size`` records whose tree has ``root``, signed
    in ``epoch`` (its claim, PROTOCOL 10.9: (1, None) without an epoch line, else number and home)."""

    size: int
    root: bytes
    epoch: tuple[int, str | None] = (1, None)


@dataclass(frozen=True, slots=True)
class SignedFork:
    """Two checkpoints of one size, both verified with the ledger's key in force there and of
    the epoch held, with different roots: two signed trees of one size, which no honest home
    signs (PROTOCOL 10.5 ``signed_fork``). ``held`` was verified first; ``found`` came from
    ``source`` (``redis``, or the node whose ``checkpoint`` answer it was)."""

    held: Proven
    held_note: bytes
    found: Proven
    found_note: bytes
    source: str


def size_of(note: bytes) -> int:
    """The size a checkpoint note states (unverified), -1 when it is no checkpoint."""
    try:
        return parse_checkpoint(parse_note(note).text).size
    except VledgerError:
        return -1


class LedgerCheckpoint:
    """The largest checkpoint of one ledger the verifier verified, and the key chain it was checked with.

    ``genesis()`` gives the ledger's genesis bytes (None: none to be had now); ``fallback()``
    the home's configured key for a genesis that pins none (PROTOCOL 10.7's version rule);
    ``witnesses()`` the cluster's witness keys now, whose cosignature a note the standby's key
    signed needs (10.9).
    """

    def __init__(
        self,
        ledger: str,
        genesis: Callable[[], bytes | None],
        fallback: Callable[[], VerifierKey | None],
        witnesses: Callable[[], Iterable[VerifierKey]] = tuple,
        failback_allowed: Callable[[str, int, str], bool] = lambda ledger, number, home: False,
    ) -> None:
        """``failback_allowed(ledger, number, home)``: whether the verifier's cluster file lets
        ``home`` open epoch ``number`` from 3 (:meth:`proven_epoch`)."""
        self.ledger = ledger
        self._genesis = genesis
        self._fallback = fallback
        self._witnesses = witnesses
        self._failback_allowed = failback_allowed
        self.keys: ReceiptKeys | None = None
        self.chain: KeyChain | None = None  # the key chain as far as rotations were proven
        self.rotatable = False  # its genesis pins a key and lists the rotation's kind
        self.chain_to = 0  # the size up to which the chain's rotations are known
        self.proven: Proven | None = None
        self.epoch: tuple[int, str | None] = (1, None)  # the only epoch whose notes are taken
        # The largest note Redis's latest checkpoint key held that verified (watch_latest): only
        # the ledger's home's users write that key, and they never step it back (PROTOCOL 10.5).
        self.latest: Proven | None = None
        self.latest_note = b""  # the note that verified as :attr:`latest`, its exact bytes
        # A ledger that may rotate its key: the largest latest note past :attr:`chain_to` Redis
        # held, unchecked, until the nodes are next asked for the rotations up to it.
        self.unconfirmed: bytes | None = None
        self.proven_note = b""  # the note that verified as :attr:`proven`, its exact bytes
        # Notes of a size held (proven or latest) with another root that verified: taken by the
        # verifier (:meth:`take_forks`), each (size, root) once.
        self.forks: list[SignedFork] = []
        self._forks_seen: set[tuple[int, bytes]] = set()

    def enter(self, epoch: tuple[int, str | None]) -> bool:
        """Take only notes of ``epoch`` from now on (the newest proven, 10.9); True when the
        checkpoint held was of another epoch and is dropped: an earlier home's largest note may
        lie past the handover (a tail acknowledged with ``w=0``, or signed while fenced), and
        no copy or home of the new epoch is to be held against it."""
        if epoch == self.epoch:
            return False
        self.epoch = epoch
        self.latest, self.latest_note = None, b""  # another epoch's home writes the latest from now on
        self.unconfirmed = None
        if self.proven is None or self.proven.epoch == epoch:
            return False
        self.proven, self.proven_note = None, b""
        return True

    def _of_epoch(self, verified: VerifiedCheckpoint, whence: str) -> tuple[int, str | None] | None:
        """``verified``'s epoch claim when it is the epoch notes are taken of, else None (logged)."""
        claim = epoch_claim(verified.checkpoint)
        if claim == self.epoch:
            return claim
        log.info(
            "%s checkpoint of %s at size %d states epoch %s, not the newest proven, %s: not taken",
            whence, self.ledger, verified.checkpoint.size, claim, self.epoch,
        )  # fmt: skip
        return None

    @property
    def size(self) -> int:
        """The size of the checkpoint held (0: none)."""
        return 0 if self.proven is None else self.proven.size

    def _known_keys(self) -> ReceiptKeys | None:
        if self.keys is None:
            data = self._genesis()
            if data is None:
                return None
            try:
                self.keys = keys_from_genesis(data, self.ledger)
                genesis = self.keys.genesis
                self.rotatable = genesis is not None and ROTATION_KIND in genesis.content.payload.get("kinds", ())
            except ReceiptError:  # the genesis pins no key: the home's configured one (10.7)
                key = self._fallback()
                self.keys = None if key is None else ReceiptKeys(key)
            except VledgerError as e:
                log.info("no checkpoint key of %s from its genesis yet: %s", self.ledger, e)
                return None
            if self.keys is not None:
                self.chain = self.keys.key_chain(self.ledger)
        if self.keys is None or self.keys.standby_key is None:
            return self.keys
        return replace(self.keys, witnesses=tuple(self._witnesses()))  # read each time: a witness key may rotate

    def may_hand_over(self) -> bool:
        """Whether the ledger's genesis (at hand) pins a standby key: only such a ledger has epochs past 1."""
        keys = self._known_keys()
        return keys is not None and keys.standby_key is not None

    def proven_epoch(self, notes: Iterable[bytes]) -> tuple[int, str] | None:
        """The newest epoch past the genesis home's that a note among ``notes`` (Redis's latest
        checkpoint and witnesses' notes of the ledger) proves, as (number, home): node/epoch.py's
        proven_epoch over the notes this verifier takes (:func:`verify_ledger_checkpoint`: one the
        standby's key signed only with a witness's verified cosignature). None when none does,
        the genesis is not at hand or pins no standby key. The verifier holds no records, so
        its history is the genesis' alone: epoch ``e`` is proven by a note the key of ``e``
        signed (the keys alternate: the standby's for an even one, the genesis home's for an
        odd one, a failback), whatever home it names; an epoch from 3 only when the cluster file
        allows it (node/epoch.py's may_open, as witnesses take its handover)."""
        keys = self._known_keys()
        if keys is None or keys.standby_key is None or keys.genesis is None:
            return None
        try:
            genesis = keys.genesis
            history = EpochHistory.from_genesis(genesis, LedgerRules.from_genesis(genesis.content, PROTOCOL_LIMITS))
        except VledgerError as e:
            log.info("no epochs of %s from its genesis: %s", self.ledger, e)
            return None
        taken = []
        for note in notes:
            try:
                verify_ledger_checkpoint(note, keys, self.chain)
            except VledgerError:
                continue
            taken.append(note)
        # The cluster's witnesses only: an outside one checks no handover record (PROTOCOL 10.9).
        # Whatever its home: a failback's epoch 3 is the genesis home's again.
        if history.checkpoint_key is None or history.standby_key is None:
            return None
        pinned = (history.checkpoint_key, history.standby_key)
        return newest_witnessed_epoch(
            taken,
            history.pinned(),
            keys.witnesses,
            pinned=pinned,
            allowed=lambda number, home: may_open(self.ledger, number, home, self._failback_allowed),
        )

    def offer(self, note: bytes, source: str = "redis") -> bool:
        """Keep ``note`` if it is a checkpoint larger than the one held and verifies with the
        key in force at its size along the chain known; True when it was kept. A ledger that may
        rotate its key takes it only up to the size its rotations are known to (:meth:`learn_from`):
        past it, a retired key could sign a tree without the rotation that retired it (13.8)."""
        size = size_of(note)
        if size <= self.size:
            if size == self.size:
                self._fork_of(note, source)
            return False
        keys = self._known_keys()
        if keys is None or (self.rotatable and size > self.chain_to):
            return False
        try:
            verified = verify_ledger_checkpoint(note, keys, self.chain)
            epoch = self._of_epoch(verified, "Redis's")
        except VledgerError as e:
            log.debug("checkpoint of %s not verified with the keys known: %s", self.ledger, e)
            return False
        if epoch is None:
            return False
        self.proven = Proven(verified.checkpoint.size, verified.checkpoint.root, epoch)
        self.proven_note = note
        return True

    def _fork_of(self, note: bytes, source: str) -> SignedFork | None:
        """The fork ``note`` makes with a checkpoint held (the largest proven, or Redis's latest)
        of its size: it states another root there and verifies as :meth:`offer` checks, of the
        epoch held. Recorded in :attr:`forks` (each size and root once) and returned; None
        otherwise. The stated root is compared before any signature is checked: a note equal to
        one held, or junk, costs no verification."""
        try:
            stated = parse_checkpoint(parse_note(note).text)
        except VledgerError:
            return None
        held = [
            (proven, kept)
            for proven, kept in ((self.proven, self.proven_note), (self.latest, self.latest_note))
            if proven is not None and proven.size == stated.size and proven.root != stated.root
        ]
        if not held or (stated.size, stated.root) in self._forks_seen:
            return None
        keys = self._known_keys()
        if keys is None or (self.rotatable and stated.size > self.chain_to):
            return None
        try:
            verified = verify_ledger_checkpoint(note, keys, self.chain)
        except VledgerError:
            return None  # junk: proves nothing
        claim = epoch_claim(verified.checkpoint)
        if claim != self.epoch:
            return None  # another epoch's note: a fenced home's, or one no handover proved (10.9)
        found = Proven(verified.checkpoint.size, verified.checkpoint.root, claim)
        fork = SignedFork(held[0][0], held[0][1], found, note, source)
        self._forks_seen.add((found.size, found.root))
        self.forks.append(fork)
        return fork

    def take_forks(self) -> list[SignedFork]:
        """The signed forks found since the last call."""
        found, self.forks = self.forks, []
        return found

    def watch_latest(self, note: bytes) -> tuple[Proven, Proven] | None:
        """Hold Redis's latest checkpoint note of the ledger against the largest one it held
        before (:attr:`latest`): when ``note`` verifies as :meth:`offer` checks (of the epoch
        taken) and is smaller, that one and this one (a rollback: its writers never step it
        back, so the key was set back, PROTOCOL 10.5); else None, ``note`` the largest when it
        is. A note that does not verify is :meth:`offer`'s to log, and changes nothing.

        A ledger that may rotate its key: a note past the size whose rotations are proven
        (:attr:`chain_to`) cannot be checked yet (the key in force there may be one a rotation
        past that size named, or retired), so the largest such is held apart
        (:attr:`unconfirmed`) until the verifier next asks the nodes for the rotations
        (:meth:`awaits_rotations`, :meth:`asked`): then it counts as the latest if it verifies
        along them. So the watch covers every size Redis held, not only those proven."""
        self._judge_unconfirmed(drop=False)
        size, latest = size_of(note), self.latest
        if latest is not None and note == self.latest_note:
            return None  # unchanged (the usual case: verified once)
        keys = self._known_keys()
        if keys is None:
            return None
        if self.rotatable and size > self.chain_to:
            if self.unconfirmed is None or size > size_of(self.unconfirmed):
                self.unconfirmed = note
            return None
        try:
            verified = verify_ledger_checkpoint(note, keys, self.chain)
            claim = epoch_claim(verified.checkpoint)
        except VledgerError:
            return None
        if claim != self.epoch:
            return None
        seen = Proven(verified.checkpoint.size, verified.checkpoint.root, claim)
        self._fork_of(note, "redis")  # of the size of the largest proven, or of the latest held
        if latest is not None and seen.size == latest.size and seen.root != latest.root:
            return None  # two signed trees of one size: the one verified first stays the latest
        if latest is not None and seen.size < latest.size:
            return latest, seen
        self.latest, self.latest_note = seen, note
        return None

    def awaits_rotations(self, note: bytes | None) -> bool:
        """Whether a latest note is held apart (or ``note`` would be) until the rotations up to
        its size are proven: the verifier then asks the nodes (:meth:`learn_from`, then :meth:`asked`)."""
        if self._known_keys() is None or not self.rotatable:
            return False
        return self.unconfirmed is not None or (note is not None and size_of(note) > self.chain_to)

    def asked(self) -> None:
        """The nodes were just asked for the rotations (:meth:`learn_from`): the note held apart
        is judged now, and dropped if no node proved the rotations up to its size (a size past
        every node's checkpoint, which the home signs before Redis gets it: junk, or a home
        away; not held for ever, where it would keep every later note out)."""
        self._judge_unconfirmed(drop=True)

    def _judge_unconfirmed(self, *, drop: bool) -> None:
        """The note held apart, once the rotations up to its size are proven: it is the latest if
        it verifies along them and is larger (one a retired key signed does not). Left held
        while they are not, unless ``drop``."""
        note = self.unconfirmed
        if note is None or (size_of(note) > self.chain_to and not drop):
            return
        self.unconfirmed = None
        keys = self._known_keys()
        if keys is None or size_of(note) > self.chain_to:
            log.info("Redis's checkpoint of %s at %d is past every rotation a node proved: not judged",
                     self.ledger, size_of(note))  # fmt: skip
            return
        try:
            verified = verify_ledger_checkpoint(note, keys, self.chain)
        except VledgerError as e:
            log.info("Redis's checkpoint of %s at %d does not verify along its rotations: %s",
                     self.ledger, size_of(note), e)  # fmt: skip
            return
        if epoch_claim(verified.checkpoint) != self.epoch:
            return
        seen = Proven(verified.checkpoint.size, verified.checkpoint.root, self.epoch)
        if self.latest is None or seen.size > self.latest.size:
            self.latest, self.latest_note = seen, note

    def learn_from(self, reader: CopyReader) -> bool:
        """``reader``'s latest checkpoint and the key rotations below its size (PROTOCOL 6.1
        ``checkpoint``), each rotation record a valid rotation (13.8) and included in the
        checkpoint's tree, the note signed by the key in force at its size: True when it was
        kept (a larger checkpoint than the one held). Raises NodeUnavailableError or
        RemoteError when the node does not answer as the protocol says."""
        keys = self._known_keys()
        if keys is None or self.chain is None:
            return False
        answer = reader.checkpoint(self.ledger)
        if answer is None:
            return False
        note, heights = answer
        size = size_of(note)
        if size <= self.size:
            if size == self.size:
                self._fork_of(note, reader.name)
            return False
        chain, rotations = self.chain, []
        try:
            last = chain.heights[-1] if chain.heights else 0
            for height in (h for h in heights if last < h < size):  # the rotations not proven yet
                data = reader.record(self.ledger, height)
                proof = reader.inclusion(self.ledger, height, size)
                if data is None or proof is None:
                    return False
                chain = chain.after(decode_record(data, PROTOCOL_LIMITS))
                rotations.append((height, data, proof))
            verified = verify_ledger_checkpoint(note, keys, chain)
            epoch = self._of_epoch(verified, f"{reader.name}'s")
            for height, data, proof in rotations:
                verify_inclusion(leaf_hash(data), height, size, proof, verified.checkpoint.root)
        except VledgerError as e:
            if isinstance(e, (NodeUnavailableError, RemoteError)):
                raise
            log.info("%s's checkpoint of %s not proven: %s", reader.name, self.ledger, e)
            return False
        if epoch is None:
            return False  # nor its rotations: its tree may be a fenced home's
        self.chain, self.chain_to = chain, size
        self.proven = Proven(verified.checkpoint.size, verified.checkpoint.root, epoch)
        self.proven_note = note
        return True


def copy_root(reader: CopyReader, ledger: str, size: int) -> bytes | None:
    """The root of ``reader``'s tree of ``size`` leaves, from its record at ``size - 1`` and that
    leaf's inclusion proof in its tree (PROTOCOL 12.4): None when the copy cannot answer (it
    lacks the height or the tree size, or serves a proof no tree of that size has). Raises
    NodeUnavailableError or RemoteError when it does not answer at all."""
    data = reader.record(ledger, size - 1)
    if data is None:
        return None
    proof = reader.inclusion(ledger, size - 1, size)
    if proof is None:
        return None
    try:
        return root_from_inclusion(leaf_hash(data), size - 1, size, proof)
    except ProofError as e:
        log.info("%s served a proof of %s at %d that no tree has: %s", reader.name, ledger, size, e)
        return None


def proof_hashes(reply: Any) -> list[bytes] | None:
    """The ``proof`` of a ``proof.inclusion`` answer, None when it is not a list of bytes."""
    proof = reply.get("proof") if isinstance(reply, dict) else None
    if not isinstance(proof, list) or not all(isinstance(p, bytes) for p in proof):
        return None
    return proof


def heights_of(value: Any) -> list[int] | None:
    """A ``checkpoint`` answer's ``rotations``, None when it is not a list of heights."""
    if not isinstance(value, list) or not all(type(h) is int and h >= 0 for h in value):
        return None
    return sorted(value)
