"""Following a feed without losing a record, and without storing one the home node did not place.

**Nothing lost** (the ZeroMQ guide's Clone pattern, by chain height). A follower subscribes
first, then catches up: for each ledger it asks its sources (the Redis stream, then the
nodes it follows, over their ``range`` command) for every record above what it holds, in
order, up to the highest sealed height it has heard of. A live record at or below what it
holds is a duplicate (checked to be the same bytes, else an alert); one above reveals a gap,
which it fetches first. Seals arrive after each batch and every second, so a gap at the end
of a burst is seen too.

**Nothing forged.** Anyone can compute a checksum, a proof of work and a link, so a record
that verifies (docs/PROTOCOL.md section 4) proves nothing about who placed it. A record is
therefore stored only when the home node vouches for it:

* it came from the home node itself, over a CURVE request to that node's key (its
  ``range`` command); or
* a **seal** covers it: the home's Ed25519 signature on the link at some height at or above
  it (vledger.node.seal). A link commits to every record below it, so a verified chain from
  this node's head up to a sealed link proves every record in between.

Records from anywhere else (the feed, the stream, a relay) wait, verified as a chain, in a
pending run above the store's head until a seal reaches them; a pending run that does not
lead to the seal's link is dropped and reported, and fetched again. A record that fails
verification is never stored either: it is reported, naming the node it came from, and
fetched from the next source instead. Nothing here touches a socket: the replica process
(vledger.ingest.replica) feeds it, and the tests drive it directly.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..broker.feed import FeedHeads, FeedMessage, FeedRecord
from ..broker.replication import Alert
from ..broker.signing import SealKeys
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import ForkError, RecordConflictError, SignatureError, VledgerError
from ..node.record import Record, decode_record
from ..node.seal import Seal
from ..node.store import ChainStore
from ..node.verify import ChainVerifier

log = logging.getLogger(__name__)

NOT_RELAYED = 255  # the hop count given to what catch-up fetched: never republished
MAX_REMEMBERED_ALERTS = 10_000  # findings already reported, not reported again
MAX_SUSPECTS = 10_000  # dropped pending records kept per ledger, to name their source later
CHAIN_FAULTS = frozenset(("bad_link", "height_gap"))  # a row that does not follow the one before it
ANY_HEIGHT = 1 << 63
SEAL_FAULTS = ("fork", "bad_signature")  # resolved by a seal, not by a stored record
OK, RETRY, BAD = "ok", "retry", "bad"  # what offering rows to the pending run came to


@dataclass(frozen=True, slots=True)
class Page:
    """What a source answers: records by height, in order, and the seals it holds among them."""

    rows: list[tuple[int, bytes]]
    seals: list[Seal] = field(default_factory=list)  # signatures not checked yet


class Source(Protocol):
    """Somewhere to fetch a ledger's records from by height."""

    name: str  # a node's name (a request to it is authenticated by its CURVE key), or "redis"

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        """Up to ``count`` records from ``start`` on, in order; may begin above ``start`` (a
        trimmed stream) or be empty. Raises VledgerError or OSError when it cannot answer."""
        ...

    def seals(self) -> list[Seal]:
        """The latest seal of each ledger this source holds (signatures not checked yet)."""
        ...


@dataclass(slots=True)
class _Ledger:
    """A ledger as this follower sees it: the best seal heard of, and the run waiting for one."""

    seal: Seal | None = None  # the highest verified seal
    pending: list[Record] = field(default_factory=list)  # verified as a chain after the store's head
    sources: list[str] = field(default_factory=list)  # where each pending record came from
    hops: int = NOT_RELAYED  # the fewest hops among the pending records that came from a feed
    chain: ChainVerifier | None = None  # positioned after the last pending record
    # Pending records dropped because another chain contradicted them, by height: (link,
    # source, bytes). Once the true record at a height is stored, a suspect there that
    # differs is reported against its source.
    suspects: dict[int, tuple[bytes, str, bytes]] = field(default_factory=dict)


class Follower:
    """Brings ``store`` up to every ledger's sealed head and keeps it there.

    ``on_stored(records, hops)`` hears of every record stored (to relay it and report it
    held); ``on_alert`` of every finding. ``home_of`` names each ledger's home node, whose
    seals ``seal_keys`` checks. One thread.
    """

    def __init__(
        self,
        name: str,
        store: ChainStore,
        sources: Iterable[Source],
        *,
        seal_keys: SealKeys,
        on_stored: Callable[[list[Record], int], None],
        on_alert: Callable[[Alert], None],
        on_resolve: Callable[[list[str]], None] = lambda keys: None,
        batch: int = 1000,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.name = name
        self.store = store
        self.sources = list(sources)
        self.seal_keys = seal_keys
        self.on_stored = on_stored
        self.on_alert = on_alert
        self.on_resolve = on_resolve  # closes open alerts (their keys) whose cause is gone (PROTOCOL 10.5)
        self._open: dict[str, int] = {}  # the alerts this run raised and left open: key -> highest height
        self.batch = batch
        self.stopping = stopping  # a long catch-up ends early once this says so
        self.ledgers: dict[str, _Ledger] = {}
        self.caught_up = False  # the start-up catch-up reached every sealed height
        self._alerted: set[tuple[str, int, str, str]] = set()
        self.stored = 0
        self.duplicates = 0

    # --- status ---------------------------------------------------------------------

    def target(self, ledger: str) -> int:
        """The highest height this follower knows the home placed (sealed, or held here)."""
        state = self.ledgers.get(ledger)
        sealed = state.seal.height if state is not None and state.seal is not None else -1
        return max(sealed, self._head(ledger))

    def behind(self) -> dict[str, int]:
        """Per ledger, how many records this node lacks of the highest sealed height, counted
        from what its store's file holds: a copy cut short behind the store's back is behind."""
        behind = {}
        for ledger in sorted(self.ledgers):
            lacks = self.target(ledger) + 1 - self.store.stored_size(ledger)
            if lacks > 0:
                behind[ledger] = lacks
        return behind

    def status(self) -> dict[str, object]:
        """What ``hello`` says of this follower (PROTOCOL 10.4): never current while behind."""
        behind = self.behind()
        return {"current": self.caught_up and not behind, "behind": behind}

    def seals(self) -> list[Seal]:
        """The best verified seal of each ledger: what a relay forwards, and what ``range`` offers."""
        return [state.seal for _, state in sorted(self.ledgers.items()) if state.seal is not None]

    def seal_of(self, ledger: str) -> Seal | None:
        state = self.ledgers.get(ledger)
        return state.seal if state is not None else None

    # --- catching up ----------------------------------------------------------------

    def start(self) -> None:
        """The start-up catch-up: the seals the sources hold, then every record up to them."""
        for ledger in self.store.ledgers():
            self._state(ledger)
        for source in self.sources:
            try:
                for seal in source.seals():
                    self.take_seal(seal, source.name, catch_up=False)
            except (VledgerError, OSError) as e:
                log.warning("%s: cannot ask %s for its seals: %s", self.name, source.name, e)
        self.catch_up_all()
        self.caught_up = True
        log.info("%s: caught up: %s", self.name, self._summary())

    def catch_up_all(self) -> None:
        for ledger in sorted(self.ledgers):
            if self._head(ledger) < self.target(ledger):
                self.catch_up(ledger, self.target(ledger) + 1)

    def catch_up(self, ledger: str, stop: int) -> bool:
        """Fetch ``ledger`` from the sources in turn until it holds every height below ``stop``."""
        state = self._state(ledger)
        for source in self.sources:
            trusted = source.name == self.seal_keys.home_of(ledger)
            while (start := self._head(ledger) + 1 + len(state.pending)) < stop and not self.stopping():
                try:
                    page = source.fetch(ledger, start, min(self.batch, stop - start))
                except (VledgerError, OSError) as e:
                    log.info("%s: %s cannot serve %s from %d: %s", self.name, source.name, ledger, start, e)
                    break
                for seal in page.seals:
                    self.take_seal(seal, source.name, catch_up=False)
                if not page.rows or page.rows[0][0] != start:
                    break  # this source lacks them (or was trimmed past them): ask the next
                outcome = self._offer(ledger, page.rows, source.name, NOT_RELAYED, trusted)
                if outcome == BAD:
                    self._drop_pending(state)  # what this source gave cannot be trusted: ask the next
                    break
                # RETRY: the pending run was dropped, this source is asked again from the head
            if self._head(ledger) + 1 >= stop:
                return True
        if self._head(ledger) + 1 < stop:
            log.info(
                "%s: %s stays at %d: no source vouches for height %d",
                self.name,
                ledger,
                self._head(ledger),
                self._head(ledger) + 1,
            )
        return False

    # --- the live feed ------------------------------------------------------------------

    def receive(self, messages: Iterable[FeedMessage]) -> None:
        """Apply a batch of feed messages: records ledger by ledger, then the seals that cover them."""
        live: dict[str, dict[int, FeedRecord]] = {}
        seals: list[tuple[Seal, str]] = []
        for message in messages:
            if isinstance(message, FeedHeads):
                seals.extend((seal, message.sender) for seal in message.seals.values())
            else:
                live.setdefault(message.ledger, {}).setdefault(message.height, message)
        for ledger, records in live.items():
            self._apply(ledger, [records[h] for h in sorted(records)])
        # One seal per ledger and batch is enough (the highest vouches for all below it), and each
        # costs a signature check and a commit: the highest that verifies, tried from the top.
        by_ledger: dict[str, list[tuple[Seal, str]]] = {}
        for seal, sender in seals:
            by_ledger.setdefault(seal.ledger, []).append((seal, sender))
        for candidates in by_ledger.values():
            for seal, sender in sorted(candidates, key=lambda item: item[0].height, reverse=True):
                if self.take_seal(seal, sender):
                    break

    def _apply(self, ledger: str, records: list[FeedRecord]) -> None:
        state = self._state(ledger)
        for record in records:
            top = self._head(ledger) + len(state.pending)
            if record.height <= self._head(ledger):
                self._check_duplicate(record)
            elif record.height <= top:
                self.duplicates += 1  # already pending: the seal decides which copy is true
            elif record.height == top + 1:
                self._offer(ledger, [(record.height, record.data)], record.sender, record.hops, False)
            # above top + 1: a gap, fetched once a seal says how far the chain goes
        if self._head(ledger) < self.target(ledger) and not state.pending:
            self.catch_up(ledger, self.target(ledger) + 1)

    def take_seal(self, seal: Seal, source: str, *, catch_up: bool = True) -> bool:
        """A seal from ``source``: checked, kept if it is the highest, then what it covers is stored.
        False if its signature does not verify (reported)."""
        state = self._state(seal.ledger)
        if seal != state.seal:  # the best seal comes again with every heartbeat: checked once
            try:
                self.seal_keys.check(seal)
            except SignatureError as e:
                self._alert(seal.ledger, seal.height, e, source, b"")
                return False
            self._resolve(seal.ledger, ("bad_signature",), ANY_HEIGHT)  # the home's seals get through again
        if state.seal is None or seal.height > state.seal.height:
            state.seal = seal
        if seal.height <= self._head(seal.ledger):
            held = self.store.get(seal.ledger, seal.height)
            if held is not None and held.hash != seal.hash:  # this copy is not the home's chain
                self._alert(seal.ledger, seal.height, ForkError("the home's seal is of another record"), source, b"")
            elif held is not None:  # the home vouches for this copy up to here
                self._resolve(seal.ledger, ("fork",), seal.height)
            return True
        # A seal below the best one still vouches for the run up to it.
        base = self._head(seal.ledger) + 1
        covered = seal.height < base + len(state.pending) and state.pending[seal.height - base].link == seal.hash
        self._flush(seal.ledger, seal.height if covered else -1)
        if catch_up and self._head(seal.ledger) < seal.height:
            self.catch_up(seal.ledger, seal.height + 1)
        return True

    def _check_duplicate(self, record: FeedRecord) -> None:
        self.duplicates += 1
        held = self.store.get(record.ledger, record.height)
        if held is not None and held.encode() != record.data:
            self._alert(
                record.ledger,
                record.height,
                RecordConflictError("a different record is already stored at this height"),
                record.sender,
                record.data,
            )

    # --- verifying and storing -------------------------------------------------------------

    def _offer(self, ledger: str, rows: list[tuple[int, bytes]], source: str, hops: int, trusted: bool) -> str:
        """Take ``rows`` (which start right above what is held or pending) into the pending run,
        each verified as the chain's next; store what a seal or a trusted source vouches for.

        OK if every row was taken. A row that does not follow the pending run may be the true
        one: the run is dropped (kept as suspects) and RETRY says to fetch again from the head.
        BAD at a row that fails on its own, or that does not follow the stored head: reported."""
        state = self._state(ledger)
        vouched = -1
        for height, data in rows:
            top = self._head(ledger) + len(state.pending)
            if height <= top:
                continue
            record = None
            try:
                record = decode_record(data, PROTOCOL_LIMITS)
                if record.height != height:
                    raise RecordConflictError(f"the record says height {record.height}, it was sent as {height}")
                chain = state.chain or self._chain_after_head(ledger)
                chain.feed(record)
            except VledgerError as e:
                state.chain = None
                self._flush(ledger, vouched)
                # A row that does not follow a run another source gave: the run or the row is
                # wrong, a seal will tell. One that breaks its own source's run is just wrong.
                if state.pending and state.sources[-1] != source and e.code in CHAIN_FAULTS and record is not None:
                    self._drop_pending(state, suspect=True)  # the run or this row: a seal will tell
                    if len(state.suspects) < MAX_SUSPECTS:
                        state.suspects.setdefault(height, (record.link, source, data))
                    return RETRY
                self._alert(ledger, height, e, source, data)
                return BAD
            state.chain = chain
            state.pending.append(record)
            state.sources.append(source)
            state.hops = min(state.hops, hops)
            if trusted:
                vouched = height
        dropped = self._flush(ledger, vouched)
        if source in dropped:
            return BAD  # the home's seal contradicts what this source gave: ask the next one
        return RETRY if dropped else OK

    def _chain_after_head(self, ledger: str) -> ChainVerifier:
        """A verifier that expects the record after the store's head (or a genesis)."""
        head = self.store.head(ledger)
        if head is None:
            return ChainVerifier(ledger, PROTOCOL_LIMITS)
        return ChainVerifier.after(ledger, head.height, head.link, self.store.rules(ledger), PROTOCOL_LIMITS)

    def _flush(self, ledger: str, vouched: int = -1) -> set[str]:
        """Store the pending records up to the highest height a seal or a trusted source vouches for.

        Returns the sources of a run the best seal contradicts (dropped), else an empty set."""
        state = self._state(ledger)
        if not state.pending:
            return set()
        base = self._head(ledger) + 1
        top = base + len(state.pending) - 1
        upto = vouched
        seal = state.seal
        if seal is not None and base <= seal.height <= top:
            if state.pending[seal.height - base].link != seal.hash:
                dropped = set(state.sources)
                self._drop_pending(state, suspect=True)  # not the home's chain; told once the true one is in
                return dropped
            upto = max(upto, seal.height)
        if upto < base:  # no seal reaches the pending run yet: it waits
            return set()
        count = upto - base + 1
        records, state.pending = state.pending[:count], state.pending[count:]
        sources, state.sources = state.sources[:count], state.sources[count:]
        hops = state.hops
        if not state.pending:
            state.hops = NOT_RELAYED
        self._store(ledger, records, sources, hops)
        return set()

    def _store(self, ledger: str, records: list[Record], sources: list[str], hops: int) -> None:
        futures = [self.store.submit_record(r) for r in records]
        stored: list[Record] = []
        for record, source, future in zip(records, sources, futures, strict=True):
            try:
                receipt = future.result()
            except VledgerError as e:  # verified already: only a store failure gets here
                self._alert(ledger, record.height, e, source, record.encode())
                self._drop_pending(self._state(ledger))
                break
            if not receipt.duplicate:
                stored.append(record)
        if stored:
            self.stored += len(stored)
            self._expose(ledger, stored)
            self.on_stored(stored, hops)
            # What was refused at these heights is moot now that the home's records are stored there.
            self._resolve(ledger, None, stored[-1].height)

    def _expose(self, ledger: str, stored: list[Record]) -> None:
        """Report the suspects that differ from the true records now stored at their heights."""
        suspects = self._state(ledger).suspects
        for record in stored:
            suspect = suspects.pop(record.height, None)
            if suspect is not None and suspect[0] != record.link:
                _, source, data = suspect
                error = RecordConflictError("a record that is not the one its home placed at this height")
                self._alert(ledger, record.height, error, source, data)

    def _drop_pending(self, state: _Ledger, *, suspect: bool = False) -> None:
        if suspect:
            for record, source in zip(state.pending, state.sources, strict=True):
                if len(state.suspects) < MAX_SUSPECTS:
                    state.suspects[record.height] = (record.link, source, record.encode())
        state.pending, state.sources, state.chain, state.hops = [], [], None, NOT_RELAYED

    # --- helpers ----------------------------------------------------------------------

    def _state(self, ledger: str) -> _Ledger:
        state = self.ledgers.get(ledger)
        if state is None:
            state = self.ledgers[ledger] = _Ledger()
        return state

    def _head(self, ledger: str) -> int:
        return self.store.size(ledger) - 1

    def _alert(self, ledger: str, height: int, error: VledgerError, source: str, offered: bytes) -> None:
        key = (ledger, height, error.code, source)
        if key in self._alerted:
            return
        if len(self._alerted) >= MAX_REMEMBERED_ALERTS:
            self._alerted.clear()
        self._alerted.add(key)
        open_key = f"{self.name}|{ledger}|{error.code}"
        self._open[open_key] = max(height, self._open.get(open_key, -1))
        log.warning("%s: refused %s height %d from %s: %s: %s", self.name, ledger, height, source, error.code, error)
        held = self.store.get(ledger, height)
        self.on_alert(
            Alert(
                node=self.name,
                ledger=ledger,
                height=height,
                what=error.code,
                detail=str(error),
                source=source,
                expected=held.hash.hex() if held is not None else "",
                found=hash_of(offered) if offered else "",
            )
        )

    def _resolve(self, ledger: str, kinds: tuple[str, ...] | None, upto: int) -> None:
        """Close this run's open alerts of ``ledger`` of these kinds (None: every kind but the
        seal's own, ``fork`` and ``bad_signature``) raised at heights up to ``upto``."""
        prefix = f"{self.name}|{ledger}|"
        keys = [
            key
            for key, height in self._open.items()
            if key.startswith(prefix)
            and height <= upto
            and (key[len(prefix) :] in kinds if kinds is not None else key[len(prefix) :] not in SEAL_FAULTS)
        ]
        if keys:
            for key in keys:
                del self._open[key]
            log.info("%s: resolved %s", self.name, ", ".join(keys))
            self.on_resolve(keys)

    def _summary(self) -> str:
        return ", ".join(f"{ledger} at {self._head(ledger)}" for ledger in sorted(self.ledgers)) or "no ledgers"


def hash_of(data: bytes) -> str:
    """The hash (link) a refused record claims, hex; for bytes that are no record, their SHA-256."""
    try:
        return decode_record(data, PROTOCOL_LIMITS).hash.hex()
    except VledgerError:
        return "sha256:" + hashlib.sha256(data).hexdigest()
