"""Where a node reads the admin ledger it enforces accounts from (docs/PROTOCOL.md 16.4).

An :class:`AdminCopy` is what a node believes of the admin ledger: its records from height 0,
or None while the node knows of no admin ledger at all (the first run: ``vledger admin
bootstrap``'s admin is then only in Redis, 16.3). The home of ``admin`` reads its own store
(ingest/admin_ledger.py ``StoreAdminSource``); every other node reads Redis's copy through a
:class:`SignedAdminSource`, which takes of it only what the admin ledger's signed checkpoint
proves (node/admin_copy.py) and never goes back: a shorter or different copy in Redis later
(rolled back, flushed, rewritten) is logged and the records proven before are kept.

Nor does it go back from the bootstrap: a node that let in Redis's accounts while no checkpoint
of the admin ledger existed (and said so: the admin's commands answered) leaves them for the
ledger's only once a checkpoint proves every record it saw, or FIRST_PROOF_WAIT after it first
saw a checkpoint, or FIRST_CHECKPOINT_WAIT after it first saw records in the list (with no
checkpoint by then: no account, until one proves them). The
home's outbox sets a checkpoint in Redis a pass after the records it covers, or before the home
has copied them there: its first one proved a prefix, or nothing, and a writer
the admin had just added was refused until the next (the e2e fault drill's "writer of notes
stopped: forbidden"). "Every record it saw" is a whole command's: the home copies them in one
step (the ledger's genesis with its import records), so a checkpoint of the genesis alone never
proves all of a copy (it did of a one-record copy: the admin's own key was refused, fl28a).

Nor does it take the bootstrap's accounts because Redis holds no copy: whoever may write Redis
deletes the copy and its checkpoint in a loop and writes an admin of their own (outsider o9 K2).
A node in a cluster asks the nodes that hold the admin ledger (its home, the followers) for
theirs at its first load (:class:`PeerCopies`), proves each as it proves Redis's, and takes the
most proven; it takes the bootstrap's accounts only once the ledger's home answered that it
holds no record of it and no node sent one (an empty follower proves nothing: review r16 #5),
and meanwhile, while nothing it holds proves a record, admits no account.

What a node proved it also keeps in a file of its own (:class:`KeptAdminCopy`, the records and
the note that proved them), read again at its next start and proven again like Redis's copy:
a node restarted while Redis lost its data (a restart without its append-only file, a failover
to an empty replica, a FLUSHALL) and the admin home is down or has not refilled it yet enforces
the accounts it proved before, not none (outsider26 I5).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..config.settings import PROTOCOL_LIMITS
from ..node.admin_copy import proven_admin_records
from ..node.errors import VledgerError
from ..node.note import VerifierKey, verify_checkpoint
from ..node.record import Record, decode_record
from ..node.rules.admin import ADMIN_LEDGER
from .keys import install_file
from .redis_keys import ledger_key
from .replication import REDIS_ERRORS

logger = logging.getLogger(__name__)

# How long after the first checkpoint of the admin ledger a node that took the bootstrap's
# accounts waits for one that proves the whole copy it saw: a copy made longer in Redis by hand
# keeps a node on Redis's accounts no longer than that (nor than FIRST_CHECKPOINT_WAIT).
FIRST_PROOF_WAIT = 10.0
# The same wait while no checkpoint of the admin ledger exists at all: an honest new cluster's
# home signs its first only once its outbox process runs (1 to 5 s after the node serves, more on
# a loaded host), and 10 s from the first records left every node but the home with no account
# (review r15 F-F). Still a bound: a checkpoint deleted in a loop keeps no node on Redis's
# accounts longer (review r14 F5).
FIRST_CHECKPOINT_WAIT = 60.0


# How often a node that proved no record and heard no node that holds the admin ledger asks them again.
PEER_RETRY = 1.0


class AdminCopy(NamedTuple):
    records: tuple[Record, ...] | None  # None: no admin ledger is known here (the bootstrap)
    unproven: bool  # Redis's copy holds records this node cannot prove yet (their checkpoint is on its way)
    # While no admin ledger is known: Redis's copy as it is, of which the grants alone are taken
    # (as the bootstrap's accounts are), until the home's first checkpoint of it.
    unchecked: tuple[Record, ...] = ()
    waiting: str = ""  # what an unproven copy waits for, when it is not a checkpoint of Redis's copy


class PeerCopy(NamedTuple):
    """One node's answer: the records of the admin ledger from height 0 it sent and the
    checkpoint notes that came with them (unchecked: a note may be past the records that came)."""

    node: str
    records: list[bytes]
    notes: tuple[bytes, ...]


class PeerCopies(NamedTuple):
    """What the nodes that hold the admin ledger (``asked``) said of it: those that answered, the
    copies of those that sent records or a note (the others hold no record of it), and whether
    the ledger's home answered that it holds none (``home_none``): a follower's empty store is a
    new, wiped or syncing one, so only the home that writes the ledger can say it has no record
    yet (review r16 #5)."""

    asked: tuple[str, ...]
    answered: tuple[str, ...]
    copies: tuple[PeerCopy, ...]
    home_none: bool = False


NO_ADMIN_LEDGER = AdminCopy(None, False)
# Redis's copy holds records and nothing proves any of them: no account is enforced meanwhile.
UNPROVEN_ADMIN_LEDGER = AdminCopy((), True)


class AdminSource(Protocol):
    def load(self) -> AdminCopy:
        """The admin ledger as this node believes it now; raises Redis errors."""
        ...

    def keep(self) -> None:
        """Write down what the last load proved, once the node enforces it (a file's fsync, kept
        out of the way of the accounts it proves: a client's handshake is not retried)."""
        ...

    def moved(self) -> bool:
        """Whether :meth:`load` may now give more than it last did (cheap: asked for a key the
        node does not know); raises Redis errors."""
        ...


REDIS_COPY = "Redis's copy of the admin ledger"
# The file, in the node's data directory (run/data/<node>/), where it keeps what it proved.
KEPT_ADMIN_COPY = "admin_copy.json"


class KeptAdminCopy:
    """A node's own copy of the admin ledger records it proved, with the checkpoint note that
    proved them: ``{"note": base64, "records": [base64, ...]}`` in ``path`` (0600, replaced
    whole, fsynced). Proves nothing by itself: whoever reads it proves it again (a file edited
    by hand is then only logged, as a Redis copy would be)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[list[bytes], bytes] | None:
        """The records and note kept, or None when there is no file; raises ValueError for a file
        that is not one (not JSON, not base64) and OSError when it cannot be read."""
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        try:
            kept = json.loads(text)
            records = [base64.b64decode(item, validate=True) for item in kept["records"]]
            return records, base64.b64decode(kept["note"], validate=True)
        except (KeyError, TypeError, binascii.Error, json.JSONDecodeError) as e:
            raise ValueError(f"{self.path}: not a kept admin copy ({e})") from None

    def save(self, records: list[bytes], note: bytes) -> None:
        """Replace the file with ``records`` and ``note``; raises OSError."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        kept = {"note": _b64(note), "records": [_b64(data) for data in records]}
        install_file(self.path, json.dumps(kept, separators=(",", ":")), 0o600, overwrite=True)


def _verifies(note: bytes, admin_key: VerifierKey) -> bool:
    """Whether ``note`` is a checkpoint signed with ``admin_key`` (what it proves is another matter)."""
    try:
        verify_checkpoint(note, admin_key)
    except VledgerError:
        return False
    return True


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class SignedAdminSource:
    """Redis's copy of the admin ledger, as far as its home's latest checkpoint there proves it.

    ``admin_key`` is the admin ledger's checkpoint key (broker/signing.py
    ``admin_checkpoint_key``); without one nothing can be proven, and a copy found is then
    never believed (logged). ``kept``: where the node keeps what it proved, read at its first
    load (a restart while Redis lost its copy) and written each time the proven records grow.
    ``peers``: asks the nodes that hold the admin ledger for theirs (ingest/admin_peers.py), at
    the first load and then every PEER_RETRY while nothing proves a record here and the home
    did not say there is none; None (a test's or a tool's source outside a cluster) takes Redis's silence for "no
    admin ledger yet", as the bootstrap does. One thread (the accounts cache's).
    """

    def __init__(
        self,
        client: Any,
        admin_key: VerifierKey | None,
        namespace: str = "vledger",
        *,
        clock: Callable[[], float] = time.monotonic,
        kept: KeptAdminCopy | None = None,
        peers: Callable[[], PeerCopies] | None = None,
    ) -> None:
        # Imported here: broker/accounts.py imports this module for its AdminCopy.
        from .accounts import AccountRegistry  # noqa: PLC0415

        self.registry = AccountRegistry(client, namespace)
        self.client = client
        self.admin_key = admin_key
        self.note_key = ledger_key(namespace, ADMIN_LEDGER, "checkpoint")
        self._clock = clock
        self._held: tuple[Record, ...] = ()
        self._seen: tuple[int, bytes | None] | None = None  # (cache size, note) of the last load
        self._last = NO_ADMIN_LEDGER
        self._warned: str | None = None
        # Since when a node on the bootstrap's accounts has seen records in the list that no
        # checkpoint proves all of (None: no such wait).
        self._first_proof_since: float | None = None
        self._first_note_since: float | None = None  # and since when a checkpoint was there
        self.kept = kept
        self._unread = kept is not None  # the kept copy is read at the first load
        self._unkept: tuple[list[bytes], bytes] | None = None  # proven, not yet written to ``kept``
        self.peers = peers
        self._peers_next: float | None = None if peers is None else 0.0  # when they are asked next (None: no more)
        # Whether Redis holding no copy and no checkpoint may be taken for "no admin ledger yet":
        # only once the ledger's home said it holds none and no node sent one (or nobody can be asked).
        self._bootstrap_ok = peers is None
        self._peers_waiting = ""  # why no account is admitted while the nodes are asked again

    def moved(self) -> bool:
        # One GET: only a new checkpoint proves more (the copy growing alone proves nothing).
        if self._peers_next is not None and self._clock() >= self._peers_next:
            return True
        return self._seen is None or self.client.get(self.note_key) != self._seen[1]

    def load(self) -> AdminCopy:
        size = self.registry.admin_size()
        note = self.client.get(self.note_key)
        if self._unread:
            # Consumed only once judged: a Redis error in the judging leaves it for the next load.
            self._unread = not self._read_kept(note)
        asked = self._ask_peers()
        if (size, note) == self._seen and self._first_proof_since is None and not asked:
            return self._last
        # On the bootstrap's accounts: a load before this one let them in, even one that saw no
        # copy yet (the ledger's first records and checkpoint came between two loads). A node's
        # first load let nothing in: it takes what a checkpoint proves at once.
        bootstrap = self._seen is not None and not self._held and self._last.records is None
        self._seen = (size, note)
        if note is None and not self._held:
            # No checkpoint of admin: the bootstrap's accounts only while the list is empty (a
            # brand-new cluster), or for a node already on them when the first admin command's
            # records came before their checkpoint. A node that meets records and no checkpoint
            # first (restarted while an insider deletes the key in a loop: r13 #1) would take
            # Redis's accounts as they are, a forged admin's too: it enforces none until one proves.
            # Nor does an empty copy say the ledger does not exist (deleted in a loop: outsider o9
            # K2) until a node that would hold it says so too.
            if (size == 0 and self._bootstrap_ok) or (bootstrap and not self._waited(checkpoint=False)):
                return self._bootstrap(size)
            if bootstrap:
                logger.warning(
                    "no checkpoint of the admin ledger came within %g s of its first records (%d in Redis's copy):"
                    " no account is enforced until one proves them",
                    FIRST_CHECKPOINT_WAIT,
                    size,
                )
            self._last = AdminCopy((), True, waiting=self._peers_waiting)
            return self._last
        if self.admin_key is None:
            self._warn("the admin ledger's checkpoint key is unknown here: no record of it counts")
        elif note is not None:
            records = self.registry.admin_records()
            if bootstrap and not self._proves_all(records, note, self.admin_key):
                return self._bootstrap(size)
            self._take(records, note, self.admin_key)
        self._first_proof_since = self._first_note_since = None
        self._last = AdminCopy(self._held, size > len(self._held))
        return self._last

    def _bootstrap(self, size: int) -> AdminCopy:
        """Redis's accounts, and Redis's copy unchecked (its grants alone are taken)."""
        unchecked = tuple(decode_record(data, PROTOCOL_LIMITS) for data in self.registry.admin_records())
        self._last = AdminCopy(None, size > 0, unchecked)
        return self._last

    def _waited(self, *, checkpoint: bool) -> bool:
        """Whether a node on the bootstrap's accounts, seeing records in the list that no
        checkpoint proves all of, waited long enough: FIRST_CHECKPOINT_WAIT since it first saw
        them (that clock starts there, not at a first checkpoint: one deleted in a loop kept the
        node on Redis's accounts for good, review r14 F5), or, with a ``checkpoint`` there now,
        FIRST_PROOF_WAIT since it first saw one (an honest first one, late, may prove a prefix:
        the next pass of the home's outbox signs the rest)."""
        now = self._clock()
        if self._first_proof_since is None:
            self._first_proof_since = now
        if checkpoint and self._first_note_since is None:
            self._first_note_since = now
        if now - self._first_proof_since >= FIRST_CHECKPOINT_WAIT:
            return True
        return checkpoint and self._first_note_since is not None and now - self._first_note_since >= FIRST_PROOF_WAIT

    def _proves_all(self, records: list[bytes], note: bytes, admin_key: VerifierKey) -> bool:
        """Whether a node on the bootstrap's accounts leaves them now: ``note`` proves every one
        of ``records``, or the node waited long enough for one that does (:meth:`_waited`; then logged)."""
        try:
            if len(proven_admin_records(records, note, admin_key)) == len(records):
                return True
        except VledgerError:
            pass  # judged, and logged, by _take once the wait is over
        if not self._waited(checkpoint=True):
            return False
        logger.warning(
            "no checkpoint of the admin ledger proved all of Redis's copy of it (%d records) within %g s:"
            " the accounts are the ones its checkpoint proves from now on",
            len(records),
            FIRST_PROOF_WAIT,
        )
        return True

    def _read_kept(self, note: bytes | None) -> bool:
        """Take what the node kept of an earlier run, as far as its note proves it, unless Redis's
        checkpoint ``note`` (verified) is newer than it or contradicts it, or, with no checkpoint
        proving all of it, Redis's copy holds records the file lacks: a file kept before a
        revocation must not let the revoked key in; the node then waits for Redis's copy as one
        with no file would (logged either way). False when Redis's copy could not be read to
        judge it (not used now, judged again at the next load: review r15 F-G); else True."""
        assert self.kept is not None
        try:
            kept = self.kept.load()
        except (OSError, ValueError) as e:
            logger.warning("the admin ledger's copy this node kept is unreadable, not used: %s", e)
            return True
        if kept is None:
            return True
        if self.admin_key is None:
            self._warn("the admin ledger's checkpoint key is unknown here: no record of it counts")
            return True
        where = f"the copy of the admin ledger kept in {self.kept.path}"
        proven = 0
        if note is not None and _verifies(note, self.admin_key):
            try:
                proven = len(proven_admin_records(kept[0], note, self.admin_key))
            except VledgerError as e:
                # Info: a node restarted after an admin change finds this (Redis's copy is then
                # proven instead, or its failure is logged as one).
                logger.info(
                    "%s is not used: Redis's checkpoint of the admin ledger, newer or another, does not prove it"
                    " (%s: %s)",
                    where,
                    e.code,
                    e.message,
                )
                return True
        if proven < len(kept[0]):
            try:
                prefix = self._prefix_of(kept[0])
            except REDIS_ERRORS as e:
                # Unread (a key of another type, a dropped connection): not a prefix for now, the
                # safe side, and no crash of the node's start over it.
                logger.warning("%s is not used yet: Redis's copy of the admin ledger is unreadable (%s)", where, e)
                return False
            if not prefix:
                # No checkpoint vouches for the file (deleted, or an older one set back: review
                # r14 F1) and Redis's list holds records the file lacks, maybe a revocation made
                # while the node was down: the file would let the revoked key in again.
                logger.info("%s is not used: Redis's copy of the admin ledger holds records it lacks", where)
                return True
        self._take(*kept, self.admin_key, where=where, keep=False)
        if self._held:
            logger.info("%s: %d records proven", where, len(self._held))
        return True

    def _prefix_of(self, kept: list[bytes]) -> bool:
        """Whether Redis's copy is empty (Redis lost its data: the case the file is kept for) or
        byte for byte the first records of ``kept`` (nothing there the file does not hold)."""
        cached = self.registry.admin_records()
        return len(cached) <= len(kept) and cached == kept[: len(cached)]

    def _ask_peers(self) -> bool:
        """Ask the nodes that hold the admin ledger for theirs when it is due (see the class's
        docstring), and take the copy that proves the most records; whether what this node holds,
        or may take, changed. Their silence leaves the node with what it holds: none of Redis's
        accounts, when that is nothing."""
        due = self._peers_next
        if self.peers is None or due is None or self._clock() < due:
            return False
        key = self.admin_key
        if key is None or (due > 0 and self._held):  # nothing to prove with, or a checkpoint of Redis's copy did
            self._peers_next = None
            return False
        said = self.peers()
        held = len(self._held)
        best = self._most_proven(said.copies, key)
        if best is not None and best[0] > held:  # a peer behind this node's own copy is no news
            _, copy, note = best
            self._take(copy.records, note, key, where=f"node {copy.node}'s copy of the admin ledger")
            if len(self._held) > held:
                logger.info("node %s's copy of the admin ledger: %d records proven", copy.node, len(self._held))
        # A follower's empty store settles nothing (new, wiped, syncing: review r16 #5), nor does
        # the home's "none" while another node sent records (a ledger exists somewhere).
        none = said.home_none and not said.copies
        if self._held or none:
            self._peers_next, self._peers_waiting = None, ""
            if none and not self._held:
                self._bootstrap_ok = True
                logger.info(
                    "no admin ledger yet: its home holds none, nor do the other nodes that answered (%s)",
                    ", ".join(said.answered),
                )
            return True
        self._peers_next = self._clock() + PEER_RETRY
        if said.copies:
            waiting = f"no copy of the admin ledger the nodes {', '.join(said.answered)} sent proves a record"
        elif said.answered:
            waiting = (
                f"the nodes that answered ({', '.join(said.answered)}) hold no record of the admin ledger,"
                " and only its home's word says there is none"
            )
        else:
            waiting = f"none of the nodes that hold the admin ledger ({', '.join(said.asked)}) answered"
        if waiting == self._peers_waiting:
            return False
        logger.warning("%s: no account is admitted until one proves its records", waiting)
        self._peers_waiting = waiting
        return True  # what the node waits for, and its admin_unproven alert's detail, changed

    @staticmethod
    def _most_proven(copies: tuple[PeerCopy, ...], admin_key: VerifierKey) -> tuple[int, PeerCopy, bytes] | None:
        """The copy of ``copies`` one of whose notes proves the most records, their number and that
        note (None when none proves one); a copy none of whose notes proves it is logged."""
        best: tuple[int, PeerCopy, bytes] | None = None
        for copy in copies:
            failed: VledgerError | None = None
            for note in copy.notes:
                try:
                    size = len(proven_admin_records(copy.records, note, admin_key))
                except VledgerError as e:
                    failed = e
                    continue
                if size and (best is None or size > best[0]):
                    best = (size, copy, note)
            if failed is not None and (best is None or best[1] is not copy):  # asked again each PEER_RETRY
                logger.info(
                    "node %s's copy of the admin ledger is not proven (%s: %s)", copy.node, failed.code, failed.message
                )
        return best

    def _take(
        self, records: list[bytes], note: bytes, admin_key: VerifierKey, where: str = REDIS_COPY, *, keep: bool = True
    ) -> None:
        try:
            proven = proven_admin_records(records, note, admin_key)
        except VledgerError as e:
            self._warn(f"{where} is not proven by its checkpoint ({e.code}: {e.message})")
            return
        held = self._held
        common = min(len(proven), len(held))
        if common and proven[common - 1].link != held[common - 1].link:
            self._warn(f"{where} differs from the one proven before at height {common - 1}")
        elif len(proven) < len(held):
            self._warn(f"{where} is proven to {len(proven)} records, {len(held)} were before")
        elif len(proven) > len(held):
            self._held = proven
            self._warned = None
            if self.kept is not None and keep:
                self._unkept = (records[: len(proven)], note)

    def keep(self) -> None:
        """Write what was proven since the last keep to the kept copy; a failure only costs the
        next start's fallback (logged)."""
        unkept, self._unkept = self._unkept, None
        if unkept is None or self.kept is None:
            return
        try:
            self.kept.save(*unkept)
        except OSError as e:
            logger.warning("the proven admin ledger is not kept in %s: %s", self.kept.path, e)

    def _warn(self, problem: str) -> None:
        """Log ``problem`` once (each poll would find it again): the proven records are kept."""
        if problem != self._warned:
            logger.warning("%s; the %d records proven before stay in force", problem, len(self._held))
            self._warned = problem
