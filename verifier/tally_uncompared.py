"""Observers whose counts are never compared (docs/PROTOCOL.md 10.6 step 4, 11.4): ``tally_uncompared``.

Snapshots are compared only at a height every observer signed at. A thief of one observer's key
need not sign a different count there: signing only at heights no other observer signs at
(honest ones sign at their store's head, a checkpoint's end; ``size - 2`` is enough) kept the
comparison "still counting" for ever, and the forged body the newest one shown. Heights and
times alone cannot tell that thief from an honest observer stuck at an older checkpoint, so the
alert says either, once it has lasted longer than any honest catching up: no common height for
``after_s`` while no observer's latest snapshot reached a height it had not reached before.

An observer catching up signs ever higher heights, and under steady writes every observer does
(the clock starts again at each), so neither alerts; once the ledger is quiet honest observers
meet at its head within a second. A height above the verifier's largest verified checkpoint is
no progress (a body may claim records that do not exist). The price: a thief is found only
``after_s`` after the writes pause, and an observer whose replay after a restart takes longer
(it signs nothing until it is done) is named too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..broker.replication import Alert
from ..node.errors import TallyUncomparedError
from .tally import MISMATCH_FINDER, TallyReport


@dataclass(slots=True)
class UncomparedClock:
    """How long one ledger's observers have had no common height without progress; pure, one thread."""

    after_s: float
    since: float | None = None  # when the observers were last compared, or one last progressed
    # observer -> the highest latest height seen within the verified checkpoint
    reached: dict[str, int] = field(default_factory=dict)

    def look(self, report: TallyReport, size: int | None, now: float) -> Alert | None:
        """The ``tally_uncompared`` alert of ``report`` (read at ``now``, seconds) when it is due, else None.

        ``size``: the ledger's largest verified checkpoint (None: none verified, no cap)."""
        latest = {t.observer: s for t in report.observers if t.checked is not None and (s := t.checked.snapshot)}
        marks = {name: s.height for name, s in latest.items() if size is None or s.height < size}
        progressed = any(height > self.reached.get(name, -1) for name, height in marks.items())
        for name, height in marks.items():
            self.reached[name] = max(height, self.reached.get(name, -1))
        if self.since is None or progressed or len(latest) < 2 or report.compared:
            self.since = now
            return None
        if now - self.since < self.after_s:
            return None
        names = list(latest)
        heights = ", ".join(f"{name} at {latest[name].height}" for name in names)
        return Alert(
            node=MISMATCH_FINDER,
            ledger=report.ledger,
            height=min(s.height for s in latest.values()),
            what=TallyUncomparedError.code,
            detail=(
                f"no height every observer signed at for {now - self.since:.0f} s, and none signed a new height "
                f"({heights}): one is stuck, or signs where no other does so that its count is never compared"
            ),
            source=", ".join(names),
            found=", ".join(latest[name].counted.hex() for name in names),
        )
