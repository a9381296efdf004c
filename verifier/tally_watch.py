"""The verifier's look at the observers' signed tallies (docs/PROTOCOL.md 10.6 step 4, 11.4).

A forged tally (an observer's key and Redis password stolen) used to be noticed only by whoever
ran ``vledger tally``. The verifier reads every configured observer's latest snapshot of each
ledger it checks, as ``vledger tally`` does (verifier/tally.py: signatures with the key files
and the rotations the admin ledger proves, compared at the newest common height), and a
disagreement becomes the same ``tally_mismatch`` alert, naming no observer the reference; an
entry read whose signature fails becomes ``bad_signature``, naming its observer.
Observers that are never compared become ``tally_uncompared`` (verifier/tally_uncompared.py).

A look costs one read of the latest ids while none changed; else at most LOOK_PAGES pages of
LOOK_PAGE entries of each observer's stream, each read at most MAX_READ_BYTES (broker/tallies.py):
a look once read every stream whole (tally_stream_max_len full bodies) per ledger every 5 s on
the verifier's one check thread when no common height was in it, then 2 x 500 bodies of any
size each time a latest id changed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from ..broker.replication import REDIS_ERRORS, Alert, stream_order
from ..broker.signing import VerifyKey
from ..broker.tallies import Published, TallyBoard
from ..config.cluster import ClusterConfig
from ..node.errors import SignatureError, VledgerError
from ..node.node_key_rotation import KeyHistory
from .node_keys import ProvenRotations
from .tally import (
    LOOK_PAGE,
    LOOK_PAGES,
    MISMATCH,
    TallyReport,
    bad_signature_alerts,
    check_published,
    mismatch_alert,
    observer_histories,
    observer_keys,
    read_tallies,
    signature_failures,
)
from .tally_recount import TallyRecount, recount_alert, recount_differs
from .tally_uncompared import UncomparedClock

log = logging.getLogger(__name__)

KEYS_FOR_S = 60.0  # how long the observers' keys (files and proven rotations) are kept
# A rotated observer signs with its new key within a second of the rotation record, before the
# admin ledger's checkpoint proving it may be in Redis (outsider24 G4: an honest `key rotate`
# raised bad_signature, operator-only, on every ledger). An entry whose signature fails is raised
# only once keys read at least this long after its observer's entries were first seen failing
# still reject it: a look (TALLY_LOOK_SECONDS) later, with the keys re-read meanwhile; and as much
# longer as a home may hold the admin ledger's checkpoint that proves it back ([replication]
# checkpoint_interval_ms: key_lag_s). The time is the observer's, not the entry's: a Redis user
# adding a new junk entry before each look restarted an entry's time at each, and was never
# raised (reviewer r10 #3). It starts anew only for an entry failing past one of that observer
# that verified at or past its newest failing one (_Failing): that user pointing its latest at an
# older valid entry on every other look, or back at an old junk entry after the observer's next
# honest one, restarted it too (review 11 G).
KEY_LAG_S = 5.0
RECHECK_S = 1.0  # a failing signature re-reads the keys at most this often
_ENTRY_ID = re.compile(r"entry (\d{1,20}-\d{1,20}) ")  # in a bad_signature alert's detail (tally.py)


@dataclass(slots=True)
class _Failing:
    """Since when an observer's entries of a ledger were first seen failing their signature."""

    since: float
    newest: tuple[int, int]  # the stream id of the newest entry of it seen failing
    # The stream id of an entry of it read verifying at or past ``newest`` since (None: none):
    # the observer is honest again, and an entry failing past this one waits anew (a rotation
    # its keys do not show yet); an older one re-shown (its latest set back) does not.
    cleared: tuple[int, int] | None = None


def key_lag_s(config: ClusterConfig) -> float:
    """How long after an observer's entries were first seen failing keys read still rejecting
    one raise it (see KEY_LAG_S): a fixed 5 s raised an honest rotation whenever the admin
    ledger's checkpoint proving it came later than that (reviewer r10 #6)."""
    return KEY_LAG_S + config.replication.checkpoint_interval_ms / 1000


class TallyWatch:
    """Called with a ledger and the size of its largest checkpoint verified (None: none): the
    ``bad_signature`` alert of each observer's entry read whose signature fails, then the
    ``tally_mismatch`` alert of its observers' latest tallies or their ``tally_uncompared``
    alert (none: they agree, are still counting, or there are no observers). Raises Redis errors."""

    def __init__(
        self,
        config: ClusterConfig,
        client: Any,
        clock: Callable[[], float] = time.monotonic,
        rotations: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        # The observers' key rotations the admin ledger proves: the verifier passes those of its own
        # proven copy (Redis's copies by default), which a checkpoint set back in Redis never takes
        # back (outsider o8 J5, o9 J5).
        self._rotations = ProvenRotations.of(config, client, rotations)
        # (ledger, observer) -> when an entry of it was first seen failing its signature, until
        # one at or past it verifies (see KEY_LAG_S)
        self._failing: dict[tuple[str, str], _Failing] = {}
        self._key_lag_s = key_lag_s(config)
        self.board = TallyBoard(client, stream_max_len=config.observers.tally_stream_max_len)
        self._clock = clock
        self._keys: tuple[float, dict[str, VerifyKey | None], Mapping[str, KeyHistory]] | None = None
        # (ledger, observer) -> entry id -> the entry raised as bad_signature: resolved once each
        # verifies with the keys proven now (see cleared)
        self._raised: dict[tuple[str, str], dict[str, Published]] = {}
        self._key_set = 0  # counts the key sets read that differ from the one before
        self._refused = False  # a redis.acl written before the verifier read tallies: said once
        self._uncompared_s = config.verifier.tally_uncompared_ms / 1000
        self._clocks: dict[str, UncomparedClock] = {}
        # ledger -> (the latest ids and key set it was read with, the report): read again once either changes
        self._reports: dict[str, tuple[tuple[object, ...], TallyReport]] = {}
        # The verifier's own count, each observer's latest tally held against it (o21 F4); the
        # verifier process sets it once its node readers exist.
        self.recount: TallyRecount | None = None
        self._keyless: set[str] = set()  # the observers without a key file, as last said

    def keys(self, max_age_s: float = KEYS_FOR_S) -> tuple[dict[str, VerifyKey | None], Mapping[str, KeyHistory]]:
        """The observers' key files and, for those whose key rotated, their proven generations,
        read anew when older than ``max_age_s``."""
        now = self._clock()
        if self._keys is None or now - self._keys[0] >= max_age_s:
            keys = observer_keys(self.config)
            try:
                histories: Mapping[str, KeyHistory] = observer_histories(keys, self._rotations())
            except (*REDIS_ERRORS, VledgerError) as e:
                log.info("the observers' rotated keys cannot be read (%s): their key files alone", e)
                histories = {} if self._keys is None else self._keys[2]
            keys = self._without_key_files(keys, histories)
            if self._keys is not None and (keys, histories) != self._keys[1:]:
                self._key_set += 1
            self._keys = (now, keys, histories)
        return self._keys[1], self._keys[2]

    def _without_key_files(
        self, keys: dict[str, VerifyKey | None], histories: Mapping[str, KeyHistory]
    ) -> dict[str, VerifyKey | None]:
        """``keys`` less the observers with no key file (and no proven rotation): one being removed
        from the cluster (README: its key files deleted from every host) signs nothing anyone may
        check, which is no forgery: each of its entries was raised ``bad_signature`` until `vledger
        repl forget` (o21 F10), and it was waited for at every comparison. Said once a name."""
        kept = {}
        for name, key in keys.items():
            if key is None and name not in histories:
                if name not in self._keyless:
                    self._keyless.add(name)
                    log.warning(
                        "observer %s has no key file in %s: its tallies are neither checked nor compared "
                        "(a node being removed: `vledger repl forget` it once the cluster file no longer names it)",
                        name,
                        self.config.keys_dir,
                    )
                continue
            self._keyless.discard(name)
            kept[name] = key
        return kept

    def cleared(self, ledger: str, open_alerts: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """The observers of ``ledger`` whose entries raised as ``bad_signature`` all verify with the
        keys proven now: their alert is resolved (outsider o8 J5: entries checked with a key view
        set back stayed forged in the alerts, restarts included). ``open_alerts``: this verifier's
        open ``bad_signature`` alerts of ``ledger`` by observer, as Redis holds them; one this run
        did not raise is judged by the entry its detail names, when that entry is still there with
        the body its ``found`` names. An entry gone from the stream stays raised (an operator's)."""
        for observer, alert in open_alerts.items():
            if (ledger, observer) not in self._raised:
                self._adopt(ledger, observer, alert)
        keys, histories = self.keys()
        cleared = []
        for (raised_ledger, observer), entries in list(self._raised.items()):
            if raised_ledger != ledger:
                continue
            for entry_id, published in list(entries.items()):
                checked = check_published(published, keys.get(observer), ledger, histories.get(observer))
                if not isinstance(checked.problem, SignatureError):
                    del entries[entry_id]
            if not entries:
                del self._raised[(ledger, observer)]
                cleared.append(observer)
        return sorted(cleared)

    def _adopt(self, ledger: str, observer: str, alert: Mapping[str, Any]) -> None:
        match = _ENTRY_ID.search(str(alert.get("detail", "")))
        if match is None:
            return
        try:
            published = self.board.entry(ledger, observer, match.group(1))
        except REDIS_ERRORS as e:
            log.info("the tally entry of %s's open bad_signature alert cannot be read (%s)", observer, e)
            return
        if published is not None and alert.get("found") == f"sha256:{hashlib.sha256(published.body).hexdigest()}":
            self._raised[(ledger, observer)] = {published.entry_id: published}

    def __call__(self, ledger: str, size: int | None = None) -> list[Alert]:
        keys, histories = self.keys()
        if not keys:
            return []
        try:
            report = self._report(ledger, keys, histories)
        except redis.exceptions.NoPermissionError as e:
            # Not the other checks' Redis outage: those go on; the file written anew lets it read.
            if not self._refused:
                log.warning(
                    "the observers' tallies cannot be read (%s): write redis.acl anew (vledger keygen --cluster) "
                    "for the verifier to compare them",
                    e,
                )
                self._refused = True
            return []
        self._refused = False
        report, bad = self._confirmed_bad_signatures(ledger, report)
        # The uncompared clock looks at every report, a mismatch's too: it measures since when.
        verdict = self._clocks.setdefault(ledger, UncomparedClock(self._uncompared_s)).look(report, size, self._clock())
        if report.verdict.status == MISMATCH:
            verdict = mismatch_alert(ledger, report.verdict, report.compared)
        return [*bad, *([verdict] if verdict is not None else []), *self._recounted(ledger, report)]

    def _recounted(self, ledger: str, report: TallyReport) -> list[Alert]:
        """The ``tally_recount`` alert of each observer whose latest tally the verifier's own count
        of the same records contradicts (verifier/tally_recount.py; none without a recount)."""
        if self.recount is None:
            return []
        alerts = []
        for tally in report.observers:
            snapshot = tally.checked.snapshot if tally.checked is not None else None
            if snapshot is None:
                continue
            recount = self.recount.at(ledger, snapshot.height)
            if recount is not None and recount_differs(recount, snapshot):
                alerts.append(recount_alert(tally.observer, recount, snapshot))
        return alerts

    def _confirmed_bad_signatures(self, ledger: str, report: TallyReport) -> tuple[TallyReport, list[Alert]]:
        """``report``, read again if the keys were, and its ``bad_signature`` alerts whose
        observer's entries keys read key_lag_s or more after they were first seen failing still
        reject: the keys are re-read (at most every RECHECK_S) while one is unconfirmed, so an
        honest rotation's first tallies are checked with its new key before anything is raised."""
        now = self._clock()
        alerts = self._note_failing(ledger, report, now)
        if any(self._keys_read() < self._failing[(ledger, a.node)].since + self._key_lag_s for a in alerts):
            keys, histories = self.keys(max_age_s=RECHECK_S)
            report = self._report(ledger, keys, histories)
            alerts = self._note_failing(ledger, report, now)
        read = self._keys_read()
        confirmed = [a for a in alerts if read >= self._failing[(ledger, a.node)].since + self._key_lag_s]
        raised = {a.node for a in confirmed}
        for checked in signature_failures(report):
            published = checked.published
            if published.observer in raised:
                self._raised.setdefault((ledger, published.observer), {})[published.entry_id] = published
        return report, confirmed

    def _note_failing(self, ledger: str, report: TallyReport, now: float) -> list[Alert]:
        """``report``'s ``bad_signature`` alerts, having started the time of each observer they
        name (unless running, see _Failing) and noted, of each whose entries read all verify,
        its latest when it is at or past the newest seen failing (an older valid one, or an
        observer nothing was read of, has shown nothing honest since)."""
        newest: dict[str, tuple[int, int]] = {}
        for checked in signature_failures(report):
            name, at = checked.published.observer, stream_order(checked.published.entry_id)
            newest[name] = max(at, newest.get(name, at))
        for tally in report.observers:
            key = (ledger, tally.observer)
            failing = self._failing.get(key)
            failed = newest.get(tally.observer)
            if failed is not None:
                if failing is None or (failing.cleared is not None and failed > failing.cleared):
                    self._failing[key] = _Failing(now, failed)
                else:
                    failing.newest, failing.cleared = max(failing.newest, failed), None
            elif tally.checked is not None and failing is not None:
                verified = stream_order(tally.checked.published.entry_id)
                if verified >= failing.newest:
                    failing.cleared = max(verified, failing.cleared or verified)
        return bad_signature_alerts(report)

    def _keys_read(self) -> float:
        return self._keys[0] if self._keys is not None else float("-inf")

    def _report(
        self, ledger: str, keys: dict[str, VerifyKey | None], histories: Mapping[str, KeyHistory]
    ) -> TallyReport:
        """The observers' tallies of ``ledger``, read again only when a latest id or a key changed."""
        ids = self.board.latest_ids([ledger], keys)[ledger]
        # Other keys: entries checked anew. The same keys read again change nothing: every ledger's
        # report was read again each time a failing entry re-read them (reviewer r10 #3).
        mark = (tuple(sorted(ids.items())), self._key_set)
        cached = self._reports.get(ledger)
        if cached is not None and cached[0] == mark:
            return cached[1]
        report = read_tallies(self.board, ledger, keys, histories, pages=LOOK_PAGES, page=LOOK_PAGE)
        self._reports[ledger] = (mark, report)
        return report
