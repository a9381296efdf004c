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
ledger's only once a checkpoint proves every record it saw, or FIRST_PROOF_WAIT after the first
one came. The home's outbox sets a checkpoint in Redis a pass after the records it covers, or
before the home has copied them there: its first one proved a prefix, or nothing, and a writer
the admin had just added was refused until the next (the e2e fault drill's "writer of notes
stopped: forbidden").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from ..config.settings import PROTOCOL_LIMITS
from ..node.admin_copy import proven_admin_records
from ..node.errors import VledgerError
from ..node.note import VerifierKey
from ..node.record import Record, decode_record
from ..node.rules.admin import ADMIN_LEDGER
from .redis_keys import ledger_key

logger = logging.getLogger(__name__)

# How long after the first checkpoint of the admin ledger a node that took the bootstrap's
# accounts waits for one that proves the whole copy it saw: a copy made longer in Redis by hand
# keeps a node on Redis's accounts no longer than that.
FIRST_PROOF_WAIT = 10.0


class AdminCopy(NamedTuple):
    records: tuple[Record, ...] | None  # None: no admin ledger is known here (the bootstrap)
    unproven: bool  # Redis's copy holds records this node cannot prove yet (their checkpoint is on its way)
    # While no admin ledger is known: Redis's copy as it is, of which the grants alone are taken
    # (as the bootstrap's accounts are), until the home's first checkpoint of it.
    unchecked: tuple[Record, ...] = ()


NO_ADMIN_LEDGER = AdminCopy(None, False)
# Redis's copy holds records and nothing proves any of them: no account is enforced meanwhile.
UNPROVEN_ADMIN_LEDGER = AdminCopy((), True)


class AdminSource(Protocol):
    def load(self) -> AdminCopy:
        """The admin ledger as this node believes it now; raises Redis errors."""
        ...

    def moved(self) -> bool:
        """Whether :meth:`load` may now give more than it last did (cheap: asked for a key the
        node does not know); raises Redis errors."""
        ...


class SignedAdminSource:
    """Redis's copy of the admin ledger, as far as its home's latest checkpoint there proves it.

    ``admin_key`` is the admin ledger's checkpoint key (broker/signing.py
    ``admin_checkpoint_key``); without one nothing can be proven, and a copy found is then
    never believed (logged). One thread (the accounts cache's).
    """

    def __init__(
        self,
        client: Any,
        admin_key: VerifierKey | None,
        namespace: str = "vledger",
        *,
        clock: Callable[[], float] = time.monotonic,
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
        # Since when a checkpoint is there that does not prove all of the copy a node on the
        # bootstrap's accounts saw (None: no such wait).
        self._first_proof_since: float | None = None

    def moved(self) -> bool:
        # One GET: only a new checkpoint proves more (the copy growing alone proves nothing).
        return self._seen is None or self.client.get(self.note_key) != self._seen[1]

    def load(self) -> AdminCopy:
        size = self.registry.admin_size()
        note = self.client.get(self.note_key)
        if (size, note) == self._seen and self._first_proof_since is None:
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
            if size == 0 or bootstrap:
                return self._bootstrap(size)
            self._last = UNPROVEN_ADMIN_LEDGER
            return self._last
        if self.admin_key is None:
            self._warn("the admin ledger's checkpoint key is unknown here: no record of it counts")
        elif note is not None:
            records = self.registry.admin_records()
            if bootstrap and not self._proves_all(records, note, self.admin_key):
                return self._bootstrap(size)
            self._take(records, note, self.admin_key)
        self._first_proof_since = None
        self._last = AdminCopy(self._held, size > len(self._held))
        return self._last

    def _bootstrap(self, size: int) -> AdminCopy:
        """Redis's accounts, and Redis's copy unchecked (its grants alone are taken)."""
        unchecked = tuple(decode_record(data, PROTOCOL_LIMITS) for data in self.registry.admin_records())
        self._last = AdminCopy(None, size > 0, unchecked)
        return self._last

    def _proves_all(self, records: list[bytes], note: bytes, admin_key: VerifierKey) -> bool:
        """Whether a node on the bootstrap's accounts leaves them now: ``note`` proves every one
        of ``records``, or FIRST_PROOF_WAIT passed since a checkpoint first came (then logged)."""
        try:
            if len(proven_admin_records(records, note, admin_key)) == len(records):
                return True
        except VledgerError:
            pass  # judged, and logged, by _take once the wait is over
        now = self._clock()
        if self._first_proof_since is None:
            self._first_proof_since = now
        if now - self._first_proof_since < FIRST_PROOF_WAIT:
            return False
        logger.warning(
            "no checkpoint of the admin ledger proved all of Redis's copy of it (%d records) within %g s:"
            " the accounts are the ones its checkpoint proves from now on",
            len(records),
            FIRST_PROOF_WAIT,
        )
        return True

    def _take(self, records: list[bytes], note: bytes, admin_key: VerifierKey) -> None:
        try:
            proven = proven_admin_records(records, note, admin_key)
        except VledgerError as e:
            self._warn(f"Redis's copy of the admin ledger is not proven by its checkpoint ({e.code}: {e.message})")
            return
        held = self._held
        common = min(len(proven), len(held))
        if common and proven[common - 1].link != held[common - 1].link:
            self._warn(f"Redis's copy of the admin ledger differs from the one proven before at height {common - 1}")
        elif len(proven) < len(held):
            self._warn(f"Redis's copy of the admin ledger is proven to {len(proven)} records, {len(held)} were before")
        elif len(proven) > len(held):
            self._held = proven
            self._warned = None

    def _warn(self, problem: str) -> None:
        """Log ``problem`` once (each poll would find it again): the proven records are kept."""
        if problem != self._warned:
            logger.warning("%s; the %d records proven before stay in force", problem, len(self._held))
            self._warned = problem
