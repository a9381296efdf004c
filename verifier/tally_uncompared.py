"""Observers whose counts are never compared (docs/PROTOCOL.md 10.6 step 4, 11.4): ``tally_uncompared``.

Snapshots are compared only at a height every observer signed at. A thief of one observer's key
need not sign a different count there: signing only at heights no other observer signs at
(honest ones sign at their store's head, a checkpoint's end; ``size - 2`` is enough) kept the
comparison "still counting" for ever, and the forged body the newest one shown. Heights and
times alone cannot tell that thief from an honest observer stuck at an older checkpoint, so the
alert says either, once it has lasted longer than any honest catching up: for ``after_s`` the
observers' latest snapshots were never all at one height while neither the verified checkpoint
nor the highest latest height within it grew.

Only the latest snapshots count as met, never a common height in the streams' history: a thief
signed the honest count once at the head, then a forged one lower as its latest, and the history
"compared" them at every look (review r9). Progress is the ledger's, not one observer's: any
observer's new height restarted the clock, so a thief climbing one height per bound below the
honest head was never named. Under steady writes the verified checkpoint grows (the clock starts
again at each), so no observer alerts; once the ledger is quiet honest observers meet at its
head within a second. A height at or past the verified checkpoint is no progress (a body may
claim records that do not exist), and none is while no checkpoint verified. The price: a thief
is found only ``after_s`` after the writes pause, and an honest observer still catching up (or
replaying after a restart: it signs nothing until it is done) ``after_s`` after the writes pause
is named too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..broker.replication import Alert
from ..node.errors import TallyUncomparedError
from .tally import MISMATCH_FINDER, TallyReport


@dataclass(slots=True)
class UncomparedClock:
    """How long one ledger's observers have had no common height without progress; pure, one thread."""

    after_s: float
    since: float | None = None  # when the observers last met, or the ledger or the highest latest grew
    top: int = -1  # the highest latest height seen within the verified checkpoint
    size: int = 0  # the largest verified checkpoint seen

    def look(self, report: TallyReport, size: int | None, now: float) -> Alert | None:
        """The ``tally_uncompared`` alert of ``report`` (read at ``now``, seconds) when it is due, else None.

        ``size``: the ledger's largest verified checkpoint (None: none verified, no height counts
        as progress)."""
        latest = {t.observer: s for t in report.observers if t.checked is not None and (s := t.checked.snapshot)}
        top = max((s.height for s in latest.values() if size is not None and s.height < size), default=-1)
        progressed = top > self.top or (size is not None and size > self.size)
        self.top, self.size = max(top, self.top), max(size or 0, self.size)
        # Met: every configured observer's latest at one height, so the verdict compared them all.
        # A common height in their histories is not enough: a thief signs the honest count once,
        # then a forged one lower as its latest, and "compared" held at every look (review r9).
        met = len(latest) == len(report.observers) and len({s.height for s in latest.values()}) == 1
        if self.since is None or progressed or met:
            self.since = now
            return None
        # Fewer than two valid latest bodies pause the clock, never restart it: a thief naming no
        # entry for one look restarted it at will (review r9).
        if len(latest) < 2 or now - self.since < self.after_s:
            return None
        names = list(latest)
        heights = ", ".join(
            [f"{name} at {latest[name].height}" for name in names]
            + [f"{t.observer} with no valid latest" for t in report.observers if t.observer not in latest]
        )
        return Alert(
            node=MISMATCH_FINDER,
            ledger=report.ledger,
            height=min(s.height for s in latest.values()),
            what=TallyUncomparedError.code,
            detail=(
                f"the observers' latest tallies not all at one height for {now - self.since:.0f} s while the ledger "
                f"stood still ({heights}): one is stuck, or signs where no other does so that its count is never "
                "compared"
            ),
            source=", ".join(names),
            found=", ".join(latest[name].counted.hex() for name in names),
        )
