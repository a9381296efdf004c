"""The verifier's own count of every ledger, held against each observer's signed tally (PROTOCOL 11.4).

Observers compared only with one another prove nothing when there is one of them, or when one
stolen key signs what the others have not signed yet: one broken-into observer host published
a tally with invented balances (an account that does not exist), and ``vledger tally``, the
gateway and the client said "agree" (outsider o21 F4). The verifier counts each ledger itself
with the observers' own code (verifier/tally.py's :class:`TallyKeeper`, the rules engine of
node/rules), from a copy a node serves, verified as a chain as it is read; a tally whose head is
the record the recount holds at its height but whose count differs is no count of the chain:
``tally_recount``, naming that observer (:func:`recount_alert`).

Bounded: each ledger is fed once, in height order, up to the height an observer's latest tally
states, at most RECORDS_PER_LOOK records a look (a first look of a long ledger goes on over many
looks); the count at the last KEPT_HEIGHTS heights asked is kept, so observers at those heights
are compared without a replay. The admin ledger is fed first as far as a copy serves (at most
once per ADMIN_EVERY_S): a grant is judged by the admin records accepted before its record
(16.2), and a record whose grant no admin record fed yet shows waits up to ``grant_wait_ms``, as
an observer's does. A copy whose records do not verify as the chain stops that ledger's recount
until another copy serves it (the verifier's other checks name the copy). Memory: each ledger's
domain state, as an observer holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..broker.replication import Alert
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import VledgerError
from ..node.record import Record, decode_record
from ..node.rules.admin import ADMIN_LEDGER
from ..node.tally_body import Snapshot
from ..node.verify import ChainVerifier
from .tally import TALLY_RECOUNT, TallyKeeper

log = logging.getLogger(__name__)

RECOUNT_FINDER = "vledger-verifier"  # ``source`` of the alert: the verifier's recount, not an observer
RECORDS_PER_LOOK = 20_000
KEPT_HEIGHTS = 8
ADMIN_EVERY_S = 1.0
PAGE = 1_000

# (ledger, start, limit) -> up to ``limit`` record bytes of a copy of ``ledger`` from ``start`` on.
Read = Callable[[str, int, int], list[bytes]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TallyRecount:
    """The verifier's count of each ledger at the heights the observers sign (one thread)."""

    def __init__(
        self,
        read: Read,
        grant_wait_ms: int,
        *,
        wall_ms: Callable[[], int] = _now_ms,
        clock: Callable[[], float] = time.monotonic,
        records_per_look: int = RECORDS_PER_LOOK,
    ) -> None:
        self.read = read
        self.grant_wait_ms = grant_wait_ms
        self.keeper = TallyKeeper()
        self._wall_ms = wall_ms
        self._clock = clock
        self.records_per_look = records_per_look
        self._chains: dict[str, ChainVerifier] = {}
        self._kept: dict[str, dict[int, Snapshot]] = {}
        self._waiting: dict[str, tuple[int, int]] = {}  # ledger -> (height, since when, wall ms)
        self._admin_at = -float("inf")
        self.fed = 0  # records counted, every ledger

    def at(self, ledger: str, height: int) -> Snapshot | None:
        """The count of ``ledger`` at ``height`` (its ``observer`` and ``at_ms`` empty), once the
        recount reached it; None while it has not (a later look goes on), or past it, not kept."""
        kept = self._kept.get(ledger, {}).get(height)
        if kept is not None or self.keeper.next_height(ledger) > height:
            return kept
        budget = self.records_per_look
        if ledger != ADMIN_LEDGER and self._clock() - self._admin_at >= ADMIN_EVERY_S:
            self._admin_at = self._clock()
            budget -= self._feed(ADMIN_LEDGER, None, budget)
        self._feed(ledger, height, budget)
        return self._kept.get(ledger, {}).get(height)

    def _feed(self, ledger: str, stop: int | None, budget: int) -> int:
        """Count ``ledger``'s next records, up to height ``stop`` (None: as far as a copy serves)
        and ``budget`` records; how many were counted. The count is kept at ``stop`` (None: at the
        last record counted): a snapshot costs the whole tally map, never taken at each record."""
        fed = 0
        while fed < budget:
            start = self.keeper.next_height(ledger)
            if stop is not None and start > stop:
                break
            want = min(PAGE, budget - fed, PAGE if stop is None else stop - start + 1)
            try:
                datas = self.read(ledger, start, want)
            except VledgerError as e:
                log.info("recount of %s: no copy serves height %d (%s)", ledger, start, e)
                break
            if not datas or not self._count_all(ledger, datas, stop):
                break
            fed += len(datas)
        self.fed += fed
        if fed and (stop is None or self.keeper.next_height(ledger) == stop + 1):
            self._keep(ledger)
        return fed

    def _count_all(self, ledger: str, datas: list[bytes], stop: int | None) -> bool:
        """Count ``datas`` in order, none past ``stop``; False when the recount stops short of them."""
        for data in datas:
            if stop is not None and self.keeper.next_height(ledger) > stop:
                return False
            if not self._count(ledger, data):
                return False
        return True

    def _keep(self, ledger: str) -> None:
        """Keep the count at the last height fed (the last KEPT_HEIGHTS such)."""
        head = self.keeper.head(ledger)
        if head is None:
            return
        kept = self._kept.setdefault(ledger, {})
        kept[head.height] = self.keeper.snapshot("", ledger, 0)
        while len(kept) > KEPT_HEIGHTS:
            del kept[min(kept)]

    def _count(self, ledger: str, data: bytes) -> bool:
        """Count one record, the ledger's next; False when the recount of it stops here (for now)."""
        chain = self._chains.setdefault(ledger, ChainVerifier(ledger, PROTOCOL_LIMITS))
        try:
            record = decode_record(data, PROTOCOL_LIMITS)
            rules = chain.check(record)
        except VledgerError as e:
            # The verifier's chain checks name the copy; another copy (or this one repaired) goes on.
            log.info("recount of %s: the copy read does not verify at height %d (%s)", ledger, chain.next_height, e)
            return False
        if self._grant_unproven(record):
            return False
        chain.advance(record, rules)
        self.keeper.feed(record)
        return True

    def _grant_unproven(self, record: Record) -> bool:
        """As an observer's wait (verifier/observer.py): a record its grant is not shown for by the
        admin records fed yet, accepted after the last of them, waits up to ``grant_wait_ms``."""
        if record.ledger == ADMIN_LEDGER or record.accepted <= self.keeper.admin_accepted:
            return False
        now = self._wall_ms()
        waiting = self._waiting.get(record.ledger)
        if waiting is None or waiting[0] != record.height:
            waiting = self._waiting[record.ledger] = (record.height, now)
        if now - min(record.accepted, waiting[1]) >= self.grant_wait_ms or not self.keeper.refuses_grant(record):
            self._waiting.pop(record.ledger, None)
            return False
        return True


def recount_differs(recount: Snapshot, tally: Snapshot) -> bool:
    """Whether ``tally`` counts the chain ``recount`` counted (the same head at the same height)
    otherwise. A tally of another head is of another chain: the heads and sweeps judge that."""
    if (recount.ledger, recount.height, recount.head) != (tally.ledger, tally.height, tally.head):
        return False
    return not recount.same_count(tally)


def recount_alert(observer: str, recount: Snapshot, tally: Snapshot) -> Alert:
    """The ``tally_recount`` alert of ``observer``'s ``tally``, which the verifier's ``recount``
    of the same chain contradicts: ``expected`` the recount's ``counted`` (hex), ``found`` the tally's."""
    return Alert(
        node=observer,
        ledger=tally.ledger,
        height=tally.height,
        what=TALLY_RECOUNT,
        detail=(
            f"its signed tally of {tally.ledger!r} at height {tally.height} is not the verifier's recount of the "
            "same records: not shown as agreed until an operator resolves this"
        ),
        source=RECOUNT_FINDER,
        expected=recount.counted.hex(),
        found=tally.counted.hex(),
    )
