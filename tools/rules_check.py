"""The observers' verdict on a copy: `vledger verify` runs their rules over the records that verified.

Every observer (verifier/observer.py) counts the admin ledger first, then each other ledger in
height order, through its :class:`~vledger.verifier.tally.TallyKeeper`: a record that breaks a
rule (a domain's, the grant rule of PROTOCOL 16.2, 16.7's admin author of a handover or key
rotation) is flagged with the rule's error code and not counted. A forging home signs such
records into a chain whose checksums, links, trees and signatures all hold, so a copy checked
without the rules passed where every observer flags it. :func:`judge_rules` feeds the same
keeper the same records, in the same order, so the codes, the heights and the counts are the
observers' own.

Two of the observer's habits are kept because they change the verdict. A record the grant rule
refuses, accepted after the last admin record the copy holds and within ``grant_wait_ms`` of
now, is one the observers still wait on (a grant accepted before it may be on its way): its
ledger is judged up to it, and the rest is said to wait, never flagged. And a ledger whose
rules can refuse nothing (no domain rules, no handover or rotation kind, no grant closing a
kind of it) is not read again: every record of it passes, which keeps `vledger verify` of a
plain ledger as fast as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..node.ledger import LedgerRules
from ..node.record import Record
from ..node.rules.admin import ADMIN_LEDGER, MACHINERY_KINDS
from ..node.rules.engine import PlainState, Violation, domain_type
from .report import LISTED_VIOLATIONS

if TYPE_CHECKING:  # imported when a ledger is read again (judge_rules): it brings the Redis client
    from ..verifier.tally import TallyKeeper

# The flagged records a verdict keeps (their codes and sentences: `--json` lists as many, the text
# the first 20); the rest are counted (RulesVerdict.flagged). Each kept one held its raised error's
# traceback, the replay's frames and records: some 4 KB a record, 472 MB for 100,000 (review r26).
KEPT_VIOLATIONS = LISTED_VIOLATIONS

# The heights 0..n-1 of each ledger named, each ledger's in height order (ledgers may interleave).
ReadRecords = Callable[[Mapping[str, int]], Iterable[Record]]


@dataclass(slots=True)
class RulesVerdict:
    """What the rules found in one ledger, as its observers would."""

    judged: int = 0  # heights judged from the genesis (every record when none waits)
    violations: list[Violation] = field(default_factory=list)  # the first KEPT_VIOLATIONS flagged, in height order
    flagged: int = 0  # every record flagged
    waiting: int | None = None  # the height whose grant may be in flight: judged once grant_wait_ms passed
    tally: dict[str, Any] | None = None  # the observers' tally map (PROTOCOL 11.2), for a ledger read again
    counted: bytes | None = None  # with it, the snapshot's ``counted`` (11.2): the records it counts, hashed


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def judge_rules(
    counts: Mapping[str, int],
    rules_of: Callable[[str], LedgerRules | None],
    read: ReadRecords,
    *,
    admin_records: int = 0,
    now_ms: Callable[[], int] = _now_ms,
) -> tuple[dict[str, RulesVerdict], bool]:
    """Judge the first ``counts[ledger]`` records of each ledger (those that verified), read by
    ``read``, after the first ``admin_records`` of the admin ledger (which judge grants and
    admin authors; 0: the copy holds none). ``rules_of`` gives a ledger's genesis rules.
    Returns each ledger's verdict, and whether grants were judged (an admin ledger was read)."""
    verdicts: dict[str, RulesVerdict] = {}
    others = {ledger: count for ledger, count in counts.items() if ledger != ADMIN_LEDGER and count}
    judged: dict[str, int] = {}
    for ledger, count in others.items():
        rules = rules_of(ledger)
        if rules is not None and _may_refuse(rules, False):
            judged[ledger] = count
    if not admin_records and not judged:
        # Nothing a rule can refuse (a store of plain ledgers): not read again, every record passes.
        return {ledger: RulesVerdict(judged=count) for ledger, count in others.items()}, False
    # Their imports cost a tenth of a second at start-up (the Redis client, the cluster file's
    # settings): made only when a record is read again.
    from ..config.cluster import ObserverSettings  # noqa: PLC0415
    from ..verifier.tally import TallyKeeper  # noqa: PLC0415

    keeper = TallyKeeper()
    # As long as an observer waits for the admin records accepted before a record the grant rule refuses.
    wait = ObserverSettings().grant_wait_ms
    if admin_records:
        _feed(keeper, read({ADMIN_LEDGER: admin_records}), verdicts, now_ms(), wait)
    grants = keeper.engine.grants()
    closed = {ledger for ledger, _, _ in grants.table()} if grants is not None else set()
    for ledger, count in others.items():
        if ledger in closed:
            judged[ledger] = count
        elif ledger not in judged:
            verdicts[ledger] = RulesVerdict(judged=count)
    if judged:
        _feed(keeper, read(judged), verdicts, now_ms(), wait)
    for ledger, verdict in verdicts.items():
        state = keeper.engine.state(ledger)
        if state is not None and not isinstance(state.domain, PlainState):
            snapshot = keeper.snapshot("", ledger, 0)
            verdict.tally, verdict.counted = snapshot.tally, snapshot.counted
    if ADMIN_LEDGER not in counts:
        verdicts.pop(ADMIN_LEDGER, None)
    return verdicts, grants is not None


def _may_refuse(rules: LedgerRules, granted: bool) -> bool:
    """Whether a rule can refuse a record of a ledger of ``rules``: a domain's, a handover's or a
    rotation's, or a grant closing one of its kinds (``granted``)."""
    return granted or domain_type(rules) is not PlainState or not MACHINERY_KINDS.isdisjoint(rules.kinds)


def _feed(
    keeper: TallyKeeper, records: Iterable[Record], verdicts: dict[str, RulesVerdict], now: int, wait: int
) -> None:
    for record in records:
        verdict = verdicts.setdefault(record.ledger, RulesVerdict())
        if verdict.waiting is not None:
            continue
        if _grant_unproven(keeper, record, now, wait):
            verdict.waiting = record.height
            continue
        violation = keeper.feed(record)
        if violation is not None:
            verdict.flagged += 1
            if len(verdict.violations) < KEPT_VIOLATIONS:
                verdict.violations.append(violation._replace(error=violation.error.with_traceback(None)))
        verdict.judged = record.height + 1


def _grant_unproven(keeper: TallyKeeper, record: Record, now: int, wait: int) -> bool:
    """The observer's wait (Observer._grant_unproven) as a copy read once at ``now`` sees it: the
    grant rule refuses ``record`` by the admin records held, none of them accepted at or after
    it, and it was accepted within ``wait`` (grant_wait_ms) of now. One stamped further ahead is judged now,
    as an observer judges it grant_wait_ms after it first saw it."""
    return (
        record.ledger != ADMIN_LEDGER
        and record.accepted > keeper.admin_accepted
        and abs(now - record.accepted) < wait
        and keeper.refuses_grant(record)
    )
