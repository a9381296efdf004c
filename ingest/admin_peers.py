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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..broker.admin_copy import PeerCopies, PeerCopy
from ..broker.keys import KeyPair
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig
from ..node.errors import NoSuchLedgerError, NotHomeError, VledgerError
from ..node.rules.admin import ADMIN_LEDGER
from .home_start import FETCH_TIMEOUT, newest_notes
from .store_sources import Sources

log = logging.getLogger(__name__)

# What ``size`` answers on a node that holds no record of a ledger (PROTOCOL 6.1): ``not_home`` on
# any other node, ``no_such_ledger`` on its home.
NO_LEDGER = (NotHomeError.code, NoSuchLedgerError.code)


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
    it covers, page by page, each request within FETCH_TIMEOUT. ``keys``: the node's key pair now
    (it rotates)."""

    def __init__(self, config: ClusterConfig, name: str, keys: Callable[[], KeyPair]) -> None:
        self.config = config
        self.name = name
        self.keys = keys
        self.holders = admin_holders(config, name)

    def __call__(self) -> PeerCopies:
        holders = self.holders
        if not holders:
            return PeerCopies((), (), ())
        keys = self.keys()
        deadline = time.monotonic() + self.config.ingest.start_check_ms / 1000
        with ThreadPoolExecutor(max_workers=len(holders), thread_name_prefix=f"{self.name}-admin-peers") as pool:
            answers = list(pool.map(lambda node: self._ask(node, keys, deadline), holders))
        answered = tuple(node for node, answer in zip(holders, answers, strict=True) if answer is not None)
        copies = tuple(answer for answer in answers if isinstance(answer, PeerCopy))
        return PeerCopies(tuple(holders), answered, copies)

    def _ask(self, node: str, keys: KeyPair, deadline: float) -> PeerCopy | bool | None:
        """``node``'s copy; True when it answered and holds no record of the admin ledger; None
        when it did not answer, or asking it failed in a way of its own (logged): whatever a node
        sends, the node asking starts, and admits no account on its word."""
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
            return _copy(sources, node, notes, self.config.ingest.page_size)
        finally:
            sources.close()


def _copy(sources: Sources, node: str, notes: list[bytes], page: int) -> PeerCopy | bool | None:
    """``node``'s records of the admin ledger from height 0, as many as came in time, with its
    newest note (``notes``) and each page's covering one: a follower that starts answers
    ``checkpoint`` only once its home's next note reached it, its pages' from its own store. True
    when it holds no record and sent no note; None when it sent nothing."""
    records: list[bytes] = []
    found = list(notes)
    try:
        while True:
            reply = sources.call(node, "range", {"ledger": ADMIN_LEDGER, "start": len(records), "limit": page})
            note, page_records = reply.get("checkpoint"), reply.get("records")
            if isinstance(note, bytes):
                found.append(note)
            if not isinstance(page_records, list) or not all(isinstance(data, bytes) for data in page_records):
                break
            records.extend(page_records)
            # A hole in its store (the page ends past its records) ends the copy there.
            if not page_records or reply.get("next") != len(records):
                break
    except VledgerError as e:
        if not records and not found:
            return True if e.code in NO_LEDGER else None
        log.info("node %s sent %d records of the admin ledger, then: %s", node, len(records), e)
    return PeerCopy(node, records, tuple(found))
