"""The admin ledger as the nodes that hold it say it is (docs/PROTOCOL.md 16.4), for a node that
would otherwise read it from Redis alone.

Redis's copy and its checkpoint may be deleted by anyone who may write Redis, and a node that
took their absence for "no admin ledger yet" took Redis's accounts as they are, a forged admin's
too (outsider o9 K2). So a node other than the admin ledger's home asks the nodes that hold it,
its home and the followers of its home (directly or through a relay), with the commands anyone
may send (``checkpoint``, ``range``) and its own node key, each on a thread of its own within
one deadline. Nothing here is believed: broker/admin_copy.py proves each copy with the admin
ledger's checkpoint key, as it proves Redis's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..broker.admin_copy import PeerCopies, PeerCopy
from ..broker.keys import KeyPair
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import NoSuchLedgerError, NotHomeError, VledgerError
from ..node.note import VerifierKey, verify_checkpoint
from ..node.record import decode_record
from ..node.rules.admin import ADMIN_LEDGER
from .home_start import FETCH_TIMEOUT, newest_notes
from .store_sources import Sources

log = logging.getLogger(__name__)

# The most bytes of records a node takes from one peer at one asking: the admin ledger's records
# are small (accounts, keys, grants: under 1 KiB each), so an honest copy is far below it, while
# a lying peer could otherwise fill the node's memory at each start and every PEER_RETRY.
PEER_COPY_MAX_BYTES = 64 * 1024 * 1024


def admin_holders(config: ClusterConfig, name: str) -> list[str]:
    """The nodes other than ``name`` that hold the admin ledger by the cluster file: its home and
    every follower that follows it or a follower that does (a relay)."""
    home = config.home_of(ADMIN_LEDGER).name
    holders = {home}
    followers = [n for n in config.nodes.values() if n.role in FOLLOWER_ROLES]
    grown = True
    while grown:
        grown = False
        for node in followers:
            if node.name not in holders and holders.intersection(node.follow):
                holders.add(node.name)
                grown = True
    return sorted(holders - {name})


class AdminPeers:
    """Asks :func:`admin_holders` for their admin ledger (a ``SignedAdminSource``'s ``peers``):
    each node's newest checkpoint note within ``config.ingest.start_check_ms``, then the records
    it covers, page by page, each request within FETCH_TIMEOUT. ``keys``: the node's key pairs to
    try now, in order (it rotates; before it read its key history, its newest generation on disk
    and the one before: ClientKeys.candidates), the next only when nobody answered the one before."""

    def __init__(
        self, config: ClusterConfig, name: str, keys: Callable[[], Sequence[KeyPair]], admin_key: VerifierKey | None
    ) -> None:
        self.config = config
        self.name = name
        self.keys = keys
        self.admin_key = admin_key
        self.home = config.home_of(ADMIN_LEDGER).name
        self.holders = admin_holders(config, name)

    def __call__(self) -> PeerCopies:
        holders = self.holders
        if not holders or self.admin_key is None:  # nothing they send could be proven here
            return PeerCopies(tuple(holders), (), ())
        answers: list[PeerCopy | bool | None] = [None] * len(holders)
        for keys in self.keys():
            deadline = time.monotonic() + self.config.ingest.start_check_ms / 1000
            with ThreadPoolExecutor(max_workers=len(holders), thread_name_prefix=f"{self.name}-admin-peers") as pool:
                answers = list(pool.map(lambda node, k=keys, d=deadline: self._ask(node, k, d), holders))
            if any(answer is not None for answer in answers):
                break
        answered = tuple(node for node, answer in zip(holders, answers, strict=True) if answer is not None)
        copies = tuple(answer for answer in answers if isinstance(answer, PeerCopy))
        home_none = any(node == self.home and answer is True for node, answer in zip(holders, answers, strict=True))
        return PeerCopies(tuple(holders), answered, copies, home_none)

    def _ask(self, node: str, keys: KeyPair, deadline: float) -> PeerCopy | bool | None:
        """``node``'s copy; True when it is the home and holds no record of the admin ledger,
        False when it is a follower that holds none; None when it did not answer, or asking it
        failed in a way of its own (logged): whatever a node sends, the node asking starts, and
        admits no account on its word."""
        try:
            return self._asked(node, keys, deadline)
        except Exception:
            log.exception("asking node %s for the admin ledger failed unexpectedly: it counts as not answering", node)
            return None

    def _asked(self, node: str, keys: KeyPair, deadline: float) -> PeerCopy | bool | None:
        notes = newest_notes(self.config, keys, node, [ADMIN_LEDGER], deadline)
        if notes is None:
            return None
        sources = Sources(self.config, keys, FETCH_TIMEOUT)
        sources.deadline = time.monotonic() + FETCH_TIMEOUT
        try:
            assert self.admin_key is not None  # __call__ asks nobody without it
            return _copy(sources, node, notes, self.config.ingest.page_size, self.admin_key, home=node == self.home)
        finally:
            sources.close()


def _copy(
    sources: Sources, node: str, notes: list[bytes], page: int, admin_key: VerifierKey, *, home: bool
) -> PeerCopy | bool | None:
    """``node``'s records of the admin ledger from height 0, as many as came in time, with its
    newest note (``notes``) and each page's covering one: a follower that starts answers
    ``checkpoint`` only once its home's next note reached it, its pages' from its own store. True
    when it is the ledger's ``home`` and holds no record (``no_such_ledger``) and sent no note;
    False when another node holds none (``not_home``: a new, wiped or syncing follower, which
    settles nothing); None when it sent nothing.

    A peer may lie, so what it sends is bounded (review r16 #6): records up to the largest size a
    note of the admin key proves, and one page past it (where a page's own note may prove more:
    the follower's case), each page no longer than asked and of the heights asked, in all at most
    PEER_COPY_MAX_BYTES."""
    records: list[bytes] = []
    found = list(notes)
    proven = max((_size(note, admin_key) for note in notes), default=0)
    beyond = True  # one page past ``proven`` may be asked, for its note
    total = 0
    try:
        while True:
            start = len(records)
            if start < proven:
                limit = min(page, proven - start)
            elif beyond:
                limit, beyond = page, False
            else:
                break
            reply = sources.call(node, "range", {"ledger": ADMIN_LEDGER, "start": start, "limit": limit})
            note, page_records = reply.get("checkpoint"), reply.get("records")
            if isinstance(note, bytes):
                found.append(note)
                size = _size(note, admin_key)
                if size > proven:
                    proven, beyond = size, True
            if not isinstance(page_records, list) or not all(isinstance(data, bytes) for data in page_records):
                break
            total += sum(len(data) for data in page_records)
            why = _refused_page(page_records, start, limit, total)
            if why:
                log.warning("node %s's copy of the admin ledger ends at %d records: %s", node, start, why)
                break
            records.extend(page_records)
            # A hole in its store (the page ends past its records) ends the copy there.
            if not page_records or reply.get("next") != len(records):
                break
    except VledgerError as e:
        if not records and not found:
            if e.code == NoSuchLedgerError.code:
                return home  # only the home's word says none: a follower that says it is home lies
            return False if e.code == NotHomeError.code else None
        log.info("node %s sent %d records of the admin ledger, then: %s", node, len(records), e)
    return PeerCopy(node, records, tuple(found))


def _size(note: bytes, admin_key: VerifierKey) -> int:
    """The size ``note`` signs when the admin key signed it, else 0 (it proves nothing)."""
    try:
        return verify_checkpoint(note, admin_key).checkpoint.size
    except VledgerError:
        return 0


def _refused_page(page: list[bytes], start: int, limit: int, total: int) -> str:
    """Why a peer's ``range`` page from ``start`` is not taken ("" when it is): more records
    than ``limit``, a record not of the height asked, or the copy past PEER_COPY_MAX_BYTES."""
    if len(page) > limit:
        return f"a page of {len(page)} records, {limit} asked"
    if total > PEER_COPY_MAX_BYTES:
        return f"more than {PEER_COPY_MAX_BYTES} bytes"
    for height, data in enumerate(page, start):
        try:
            found = decode_record(data, PROTOCOL_LIMITS).height
        except VledgerError as e:
            return f"record {height}: {e.code}: {e.message}"
        if found != height:
            return f"record {found} where {height} was asked"
    return ""
