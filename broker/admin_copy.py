"""Where a node reads the admin ledger it enforces accounts from (docs/PROTOCOL.md 16.4).

An :class:`AdminCopy` is what a node believes of the admin ledger: its records from height 0,
or None while the node knows of no admin ledger at all (the first run: ``vledger admin
bootstrap``'s admin is then only in Redis, 16.3). The home of ``admin`` reads its own store
(ingest/admin_ledger.py ``StoreAdminSource``); every other node reads Redis's copy through a
:class:`SignedAdminSource`, which takes of it only what the admin ledger's signed checkpoint
proves (node/admin_copy.py) and never goes back: a shorter or different copy in Redis later
(rolled back, flushed, rewritten) is logged and the records proven before are kept.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Protocol

from ..config.settings import PROTOCOL_LIMITS
from ..node.admin_copy import proven_admin_records
from ..node.errors import VledgerError
from ..node.note import VerifierKey
from ..node.record import Record, decode_record
from ..node.rules.admin import ADMIN_LEDGER
from .redis_keys import ledger_key

logger = logging.getLogger(__name__)


class AdminCopy(NamedTuple):
    records: tuple[Record, ...] | None  # None: no admin ledger is known here (the bootstrap)
    unproven: bool  # Redis's copy holds records this node cannot prove yet (their checkpoint is on its way)
    # While no admin ledger is known: Redis's copy as it is, of which the grants alone are taken
    # (as the bootstrap's accounts are), until the home's first checkpoint of it.
    unchecked: tuple[Record, ...] = ()


NO_ADMIN_LEDGER = AdminCopy(None, False)


class AdminSource(Protocol):
    def load(self) -> AdminCopy:
        """The admin ledger as this node believes it now; raises Redis errors."""
        ...


class SignedAdminSource:
    """Redis's copy of the admin ledger, as far as its home's latest checkpoint there proves it.

    ``admin_key`` is the admin ledger's checkpoint key (broker/signing.py
    ``admin_checkpoint_key``); without one nothing can be proven, and a copy found is then
    never believed (logged). One thread (the accounts cache's).
    """

    def __init__(self, client: Any, admin_key: VerifierKey | None, namespace: str = "vledger") -> None:
        # Imported here: broker/accounts.py imports this module for its AdminCopy.
        from .accounts import AccountRegistry  # noqa: PLC0415

        self.registry = AccountRegistry(client, namespace)
        self.client = client
        self.admin_key = admin_key
        self.note_key = ledger_key(namespace, ADMIN_LEDGER, "checkpoint")
        self._held: tuple[Record, ...] = ()
        self._seen: tuple[int, bytes | None] | None = None  # (cache size, note) of the last load
        self._last = NO_ADMIN_LEDGER
        self._warned: str | None = None

    def load(self) -> AdminCopy:
        size = self.registry.admin_size()
        note = self.client.get(self.note_key)
        if (size, note) == self._seen:
            return self._last
        self._seen = (size, note)
        if note is None and not self._held:
            # No checkpoint of admin yet (the first admin command made the ledger a moment ago:
            # a new ledger's first checkpoint takes its home's outbox a heartbeat, or there is no
            # ledger): the bootstrap's accounts, until its home signs one.
            unchecked = tuple(decode_record(data, PROTOCOL_LIMITS) for data in self.registry.admin_records())
            self._last = AdminCopy(None, size > 0, unchecked)
            return self._last
        if self.admin_key is None:
            self._warn("the admin ledger's checkpoint key is unknown here: no record of it counts")
        elif note is not None:
            self._take(self.registry.admin_records(), note, self.admin_key)
        self._last = AdminCopy(self._held, size > len(self._held))
        return self._last

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
