"""The admin ledger on its home node: every admin command becomes a record, Redis follows it.

:class:`AdminLedger` writes the admin ledger (docs/PROTOCOL.md section 16) through the
node's own store, so its records are checked and ordered by the committer like any other
(node/rules/admin.py), then copies each to the Redis cache (``vledger:{accounts}:admin:records``).
It creates the ledger on the first admin command, importing every account Redis already
holds (the first admin of ``vledger admin bootstrap`` included); on start it fills the
cache from the store and rebuilds the accounts when Redis lost them, and so again while it
runs, within a poll of the accounts cache (:meth:`AdminLedger.refill`): a Redis that lost its
data was otherwise an outage of every account until someone restarted this node (outsider26 I5).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..broker.accounts import (
    NOT_A_LIST,
    Account,
    AccountRegistry,
    Role,
    admin_record_digest,
    admin_records_digest,
)
from ..broker.admin_copy import NO_ADMIN_LEDGER, AdminCopy
from ..broker.redis_keys import ledger_key
from ..broker.replication import REDIS_ERRORS, Alert
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import AdminCacheConflictError, StoreDamagedError, VledgerError
from ..node.note import VerifierKey, parse_checkpoint, parse_note, verify_checkpoint
from ..node.record import Content, Entry, Record
from ..node.rules.admin import ADMIN_LEDGER, ENDS_GRANTS, admin_genesis_rules
from ..node.store import ChainStore

log = logging.getLogger(__name__)

_PROOF_POLL = 0.01  # how often the home looks for its outbox's checkpoint of an admin record
# How often, and in pages of how many entries, a poll compares the bytes of a list of the store's
# length with the store's (_check_bytes): minutes of detection latency are fine there (only the
# home's own Redis user can LSET it), a Redis blocked for the whole list is not.
BYTES_CHECK_SECONDS = 60.0
BYTES_CHECK_PAGE = 1000
ADMIN_CACHE_CONFLICT = "admin_cache_conflict"  # the alert of a cache that held what the store does not (10.5)


def _note_size(note: bytes | None) -> int:
    """The tree size a checkpoint note in Redis states (-1 without one or for one unreadable):
    only compared with what the home holds, never believed (its readers verify it)."""
    if note is None:
        return -1
    try:
        return parse_checkpoint(parse_note(note).text).size
    except VledgerError:
        return -1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def account_payload(op: str, account: Account | None, name: str, via: str) -> dict[str, Any]:
    """An ``account`` record's payload: the account's state after ``op`` (None: removed, and its
    grants end with it: ``ends_grants``, PROTOCOL 16.2)."""
    if account is None:
        return {"account": name, "op": op, "role": "", "enabled": False, "keys": [], "via": via, ENDS_GRANTS: True}
    return {
        "account": name,
        "op": op,
        "role": account.role.value,
        "enabled": account.enabled,
        "keys": sorted(account.keys),
        "via": via,
    }


_OTHERS_REFILL = "the homes refill their streams"


class AdminLedger:
    """The admin ledger of the node that homes it. Thread-safe: one command at a time.

    ``checkpoints``: its home's outbox sets Redis's ``{admin}:checkpoint`` (the node; not a
    test's bare store), so :meth:`wait_proven` waits for it. ``on_lost`` is told, in a sentence,
    what Redis had lost when :meth:`refill` put it back (the node raises its alert), and None
    once Redis holds it again and proven (the node resolves it). ``admin_key``: the admin
    ledger's checkpoint key, by which a cache longer than the store is told from one made longer
    by hand (:meth:`sync`). ``on_alert``: raises the alert of a cache rewritten from the store."""

    def __init__(
        self,
        store: ChainStore,
        registry: AccountRegistry,
        *,
        checkpoints: bool = False,
        on_lost: Callable[[str | None], None] | None = None,
        admin_key: VerifierKey | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.registry = registry
        self.checkpoints = checkpoints
        self.on_lost = on_lost
        self._refused: str | None = None  # why Redis's cache was last left as it is (logged once)
        # Whether a loss may be unresolved: also true at start, for an alert raised by an earlier run.
        self._lost = True
        self.admin_key = admin_key
        self.on_alert = on_alert
        # How many of the store's records Redis's cache is known to hold (pushed or checked
        # here): the next push starts there, not at the list's length, which a junk entry
        # pushed by hand makes look like the home's next record already there (r13 #3).
        self._known: int | None = None
        self._digests: list[str] = []  # admin_record_digest of the store's records, from height 0
        self._clock = clock
        self._check_at = 0.0  # when a poll next compares the list's bytes (_check_bytes)
        self.note_key = ledger_key(registry.namespace, ADMIN_LEDGER, "checkpoint")
        self._lock = threading.Lock()

    def wait_proven(self, deadline: float) -> bool:
        """Wait, until ``deadline`` (time.monotonic), for Redis's checkpoint of the admin ledger
        to cover every record the store holds now: only then can the other nodes prove them
        (broker/admin_copy.py). The home's outbox process sets it a pass after the commit, and
        later when it waits for the CPU (its niceness): an admin's command that answered before
        left a replica a rotation it could not take yet (test_node_key_rotation's new key
        served no answer within 5 s). True once covered (at once without ``checkpoints``)."""
        size = self.store.size(ADMIN_LEDGER)
        if not self.checkpoints or size == 0:
            return True
        while True:
            try:
                if _note_size(self.registry.client.get(self.note_key)) >= size:
                    return True
            except REDIS_ERRORS:
                return False  # the change is made: the nodes' wait that follows says who lacks it
            if time.monotonic() >= deadline:
                return False
            time.sleep(_PROOF_POLL)

    def append(self, kind: str, payload: dict[str, Any], author: str) -> Record:
        """Append one admin record (creating the ledger first if need be) and cache it.

        Raises the record's RuleError (already_granted, bad_payload, ...) when the admin
        ledger's rules refuse it; nothing is then written.
        """
        with self._lock:
            if self.store.size(ADMIN_LEDGER) == 0:
                self._create(author)
            record = self._write(kind, payload, author)
            try:
                self._repair_shapes()
                self._cache()
            except REDIS_ERRORS as e:
                # The record stands: the command must say so, not fail (a retry would then find
                # it done); the next poll of the accounts puts Redis's copy right (outsider o9 K1b;
                # a timeout or a dropped connection alike: review r15 F-D).
                log.error(
                    "admin record %d written; Redis's copy of it failed (%s): the next poll retries", record.height, e
                )
            return record

    def _write(self, kind: str, payload: dict[str, Any], author: str) -> Record:
        content = Content(ADMIN_LEDGER, kind, payload, author, f"{kind}-{uuid.uuid4().hex}", _now_ms())
        receipt = self.store.append(Entry.prepare(content, 0, PROTOCOL_LIMITS))
        record = self.store.get(ADMIN_LEDGER, receipt.height)
        assert record is not None  # just appended, durable
        return record

    def _create(self, author: str) -> None:
        """The genesis, then one ``import`` record per account Redis holds, so that the chain
        states every account from the start."""
        genesis = admin_genesis_rules().genesis_content(ADMIN_LEDGER, author, "admin-genesis", _now_ms())
        self.store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        for account in self.registry.list_accounts():
            self._write("account", account_payload("import", account, account.name, ""), author)
        log.info("admin ledger created by %s", author)

    def _cache(self) -> int:
        """Copy to Redis what its cache of the admin ledger lacks, in one step (a node never sees
        the genesis without its import records); the accounts version. A cache holding another
        record where the store's goes is rewritten from the store (alerted). Its callers repair
        the keys' shapes first (:meth:`_repair_shapes`), once."""
        start = self.registry.admin_size()
        if self._known is not None:
            start = min(start, self._known)
        missing = [data for _, data in self.store.range_raw(ADMIN_LEDGER, start)]
        if not missing:
            return self.registry.version()
        try:
            version = self.registry.push_admin_records(start, missing)
        except AdminCacheConflictError as e:
            return self._rewrite(e.height, e.message)
        self._known = start + len(missing)
        return version

    def _rewrite(self, height: int, problem: str) -> int:
        """Put the store's records in Redis's cache in place of what it holds, and raise the
        alert: an entry no home wrote there put every later record off its index, where no
        checkpoint proves it, and froze every other node's accounts (r13 #3)."""
        stored = [data for _, data in self.store.range_raw(ADMIN_LEDGER, 0)]
        version = self.registry.rewrite_admin_records(stored)
        self._known = len(stored)
        self._conflict(
            height,
            f"Redis's copy of the admin ledger held what this home's store does not from height {height} "
            f"({problem}): rewritten from the store",
        )
        return version

    def _conflict(self, height: int, detail: str) -> None:
        """Log and raise ``admin_cache_conflict`` at ``height``: Redis held what no home wrote."""
        log.error("%s", detail)
        if self.on_alert is not None:
            self.on_alert(Alert("redis", ADMIN_LEDGER, height, ADMIN_CACHE_CONFLICT, detail, source="redis"))

    def _repair_shapes(self) -> None:
        """Reset an accounts version that is no count, rewrite a cache key that is no list and
        rebuild the accounts' keys of another type, each with the alert: written by hand, any
        failed every admin command and stopped every node following the accounts until someone
        deleted it (outsider o9 K1, K1b; k29)."""
        version = self.registry.repair_version()
        if version is not None:
            self._conflict(
                self.store.size(ADMIN_LEDGER),
                f"Redis's accounts version was no count: reset to {version}, so every node reloads",
            )
        if self.registry.admin_size() == NOT_A_LIST:
            self._rewrite(0, "its key is no list")
        spoiled = self.registry.repair_account_types()
        if spoiled:
            # The snapshot of every node read them as empty (they failed its load before, k29).
            rebuilt = rebuild_accounts(self.registry, self.store.range(ADMIN_LEDGER))
            self._conflict(
                self.store.size(ADMIN_LEDGER),
                f"Redis's accounts keys {', '.join(spoiled)} were of another type: deleted, and "
                f"{rebuilt} accounts rebuilt from the store",
            )

    def _signed_past(self, size: int) -> bool:
        """Whether Redis's checkpoint of the admin ledger, verified with its key, is of more than
        ``size`` records: then records past the store's are genuine (the store is behind)."""
        if self.admin_key is None:
            return True  # nothing to tell them by: the store is taken to be behind, as before
        note = self.registry.client.get(self.note_key)
        try:
            return note is not None and verify_checkpoint(note, self.admin_key).checkpoint.size > size
        except VledgerError:
            return False

    def sync(self) -> None:
        """On start: fill the cache from the store, and rebuild every account from the chain
        when Redis holds none, or no record of the admin ledger (a new or flushed Redis: the
        accounts it holds were made since, by a bootstrap that found no admin ledger in it, and
        the ledger's word stands, PROTOCOL 16.3). Redis errors are the caller's."""
        with self._lock:
            if self.store.size(ADMIN_LEDGER) == 0:
                return
            self._repair_shapes()
            cached = self.registry.admin_records()
            stored = [data for _, data in self.store.range_raw(ADMIN_LEDGER, 0)]
            if len(cached) > len(stored) and self._signed_past(len(stored)):
                # Its store is behind (put back from a copy) and the start check could not heal it
                # (ingest/home_start.py): the node stops as one whose store fails its checks.
                raise StoreDamagedError(
                    f"Redis caches {len(cached)} records of the admin ledger, this node's store holds "
                    f"{len(stored)}: its store is behind; rebuild it with `vledger repair "
                    f"{self.store.origin} --restart`"
                )
            # Records no checkpoint of this home signs, or others than its own: written by hand.
            mismatch = _mismatch(cached, stored, len(cached), len(stored))
            # Compared: the next command pushes from there, and junk pushed before it is found
            # (left None, it started at the list's length, past the junk: review r14 F2).
            self._known = min(len(cached), len(stored))
            if mismatch is not None:
                self._rewrite(mismatch[0], "found at its start")
            self._fill(len(cached))

    def _fill(self, cached: int) -> int | None:
        """Append what Redis's cache lacks (it held ``cached`` records), then rebuild the accounts
        if it held no record or Redis holds no account; how many were rebuilt (None: none)."""
        self._cache()
        if cached and self.registry.list_accounts():
            return None
        rebuilt = rebuild_accounts(self.registry, self.store.range(ADMIN_LEDGER))
        log.warning("Redis held no admin ledger or no accounts: %d rebuilt from the admin ledger", rebuilt)
        return rebuilt

    def refill(self) -> None:
        """While the node runs (each poll of its accounts cache): put back what Redis lost of the
        admin ledger's cache or of the accounts (a restart without its append-only file, a
        failover to an empty replica, a FLUSHALL, a key deleted), as :meth:`sync` does at start,
        and tell ``on_lost`` what; tell it None once Redis holds them again, proven: the cache
        whole, the accounts, and a checkpoint of the store's every record (what every node needs
        to prove them; the home's outbox puts it back at its next heartbeat). Two cheap reads when
        nothing was lost. Only what the store backs is written: a cache longer than the store
        that Redis's verified admin checkpoint covers past it is left as it is (the store is
        behind: logged once, its next start stops the node); any other longer cache, or one whose
        records are not the store's, is rewritten from the store with the alert, as at a start
        (:meth:`_rewrite`): left, it froze the other nodes' accounts until the next admin command
        (acct28). Raises Redis errors; logs any other and leaves
        it to the next poll: its caller, the accounts cache's thread, survives only Redis errors,
        and a home whose thread died followed no account change again."""
        try:
            told = self._refill()
        except REDIS_ERRORS:
            raise  # the thread's loop connects again
        except Exception:  # a store found damaged, its file unreadable, a Redis flushed again mid-way
            log.exception("the admin ledger's cache is not refilled now; the next poll tries again")
            return
        if told is not None and self.on_lost is not None:
            self.on_lost(told[0])

    def _refill(self) -> tuple[str | None] | None:
        """:meth:`refill`'s work; what to tell ``on_lost`` (in a tuple), None: nothing."""
        with self._lock:
            size = self.store.size(ADMIN_LEDGER)
            if size == 0:
                return None
            self._repair_shapes()
            cached = self.registry.admin_size()
            if cached == size and self.registry.version() > 0:
                self._refused = None
                self._check_bytes(size)
                resolved = self._lost and _note_size(self.registry.client.get(self.note_key)) >= size
                if not resolved:
                    return None
                self._lost = False
                detail = None
            else:
                refused = self._refusal(cached, size)
                if refused is not None:
                    height, problem = refused
                    if cached > size and self._signed_past(size):  # the store is behind: its start stops
                        if problem != self._refused:
                            log.error("%s, signed past it: not refilled from this store", problem)
                            self._refused = problem
                        return None
                    # Junk no checkpoint of this home signs: rewritten now, as a start does (sync);
                    # left, it froze every other node's accounts until the next admin command.
                    self._rewrite(height, f"{problem}, found while the node ran")
                    cached = size
                self._refused = None
                accounts_lost = not self.registry.list_accounts()
                rebuilt = self._fill(cached)
                if cached == size and rebuilt is None:
                    return None  # a version key alone was missing: nothing to put back
                lost = " and ".join(
                    [f"{size - cached} of the admin ledger's {size} records"] * (cached < size)
                    + [f"the accounts ({rebuilt} rebuilt from the ledger)"] * accounts_lost
                )
                detail = f"Redis lost {lost} while the node ran: refilled from its store; {_OTHERS_REFILL}"
                log.warning("%s", detail)
                self._lost = True
        return (detail,)

    def _check_bytes(self, size: int) -> None:
        """Rewrite (alerted) a list of the store's length whose bytes are not the store's: an
        entry set there by hand (LSET) froze every other node's accounts until the home's next
        start, its length alone looking healthy (review r14 F2). At most once every
        BYTES_CHECK_SECONDS, by a digest call to Redis per BYTES_CHECK_PAGE entries: one call
        over the whole list at every poll blocked Redis O(N) (22 ms at 10k records, every 5 s:
        review r15 F-C), and only the home's Redis user can LSET there. The store's records are
        read once each, as they come."""
        now = self._clock()
        if now < self._check_at:
            return
        self._check_at = now + BYTES_CHECK_SECONDS
        if len(self._digests) > size:
            self._digests = []  # not met: an admin store never shrinks while its node runs
        fresh = self.store.range_raw(ADMIN_LEDGER, len(self._digests), size)
        self._digests += [admin_record_digest(data) for _, data in fresh]
        for first in range(0, size, BYTES_CHECK_PAGE):
            ours = self._digests[first : first + BYTES_CHECK_PAGE]
            if self.registry.admin_records_digest(first, first + len(ours) - 1) != admin_records_digest(ours):
                break
        else:
            self._known = size
            return
        refused = self._refusal(size, size)  # byte by byte before any rewrite
        if refused is None:  # the list changed again since: the next poll looks
            self._check_at = now
            return
        height, problem = refused
        self._rewrite(height, f"{problem}, found while the node ran")

    def _refusal(self, cached: int, size: int) -> tuple[int, str] | None:
        """Where and why Redis's cache of ``cached`` records is not the first records of this
        store (None: it is): appending to it would make a copy the store does not back."""
        theirs = self.registry.admin_records() if cached else []
        ours = (data for _, data in self.store.range_raw(ADMIN_LEDGER, 0, len(theirs)))
        return _mismatch(theirs, ours, cached, size)


def _mismatch(theirs: list[bytes], ours: Iterable[bytes], cached: int, size: int) -> tuple[int, str] | None:
    """Where and why Redis's cache ``theirs`` (of ``cached`` records when its length was read) is
    not the first records of a store of ``size`` whose records are ``ours`` (None: it is): the
    first height whose bytes differ, or ``size`` when the cache is longer."""
    differ = next((height for height, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b), None)
    if differ is not None:
        return differ, f"Redis's cache of the admin ledger is not this store's from height {differ}"
    if cached > size:
        return size, f"Redis caches a longer admin ledger ({cached} records) than this store ({size})"
    return None


class StoreAdminSource:
    """The admin ledger as its home holds it: its own store's records, checked as they were
    written and again when the store opened (an AdminSource, broker/admin_copy.py)."""

    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self._records: tuple[Record, ...] = ()

    def moved(self) -> bool:
        return self.store.size(ADMIN_LEDGER) != len(self._records)

    def load(self) -> AdminCopy:
        size = self.store.size(ADMIN_LEDGER)
        if size == 0:
            return NO_ADMIN_LEDGER
        if size != len(self._records):
            held = self._records
            self._records = held + tuple(self.store.range(ADMIN_LEDGER, len(held), size))
        return AdminCopy(self._records, False)

    def keep(self) -> None:
        """Nothing to write down: the store is the copy."""


def rebuild_accounts(registry: AccountRegistry, records: Any) -> int:
    """Set every account to its state in the last ``account`` / ``key`` record of it, having
    removed each account Redis holds otherwise (reviewer r10 #1: a bootstrap on a flushed Redis
    made an admin that the ledger disabled, or does not show, and it stayed); how many."""
    final: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.height == 0 or record.content.kind not in ("account", "key"):
            continue
        payload = record.content.payload
        state = final.setdefault(payload["account"], {"role": "", "enabled": False, "keys": []})
        if record.content.kind == "account":
            state.update(role=payload["role"], enabled=payload["enabled"])
        state["keys"] = list(payload["keys"])
    standing = {
        name: Account(name, Role(state["role"]), state["enabled"], tuple(sorted(state["keys"])))
        for name, state in final.items()
        if state["role"]  # else removed
    }
    held = {account.name: account for account in registry.list_accounts()}
    for name, account in held.items():
        if standing.get(name) != account:
            log.warning("account %s is not as the admin ledger states it: removed, then rebuilt from the ledger", name)
            registry.remove_account(name)
    count = 0
    for name, account in sorted(standing.items()):
        try:
            if held.get(name) != account:
                registry.add_account(name, account.role.value)
                for key in account.keys:
                    registry.add_key(name, key)
                if not account.enabled:
                    registry.disable(name)
            count += 1
        except VledgerError as e:
            log.error("account %s not rebuilt: %s", name, e)
    return count
