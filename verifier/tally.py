"""What an observer counts and signs: pure functions over records, snapshots and signatures.

An observer never trusts an ingest node's decisions. :class:`TallyKeeper` feeds each
ledger's records, in height order, to a RulesEngine of its own: a record that breaks a
rule is flagged and not counted (its height still passes), exactly as docs/PROTOCOL.md
section 7 says. At any height the keeper can state its count as a :class:`Snapshot`, whose
canonical msgpack ``body`` is what the observer signs (section 11):

    {"v": 1, "observer": str, "ledger": str, "height": int, "head": bin (32),
     "tally": map, "counted": bin (32), "at_ms": int}

``tally`` is the ledger's domain tally as a plain map (:func:`tally_map`) and ``counted``
is SHA-256 over the concatenated hashes of the records counted, in height order: for an
election, the casts that count (each voter's active vote, not withdrawn); for every other
ledger, every record that passed the rules, its genesis included.

Reading snapshots back (``vledger tally``): :func:`check_published` verifies one signed
entry against the key of the observer whose Redis keys hold it (broker/tallies.py),
:func:`common_height` finds the newest height every observer published, and :func:`judge`
compares the snapshots at one height.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from ..broker.replication import Alert, ReplicationLedger, wrong_type
from ..broker.signing import VerifyKey, load_verify_key, signing_key_paths
from ..broker.tallies import HISTORY_PAGE, MAX_READ_BYTES, Published, TallyBoard
from ..config.cluster import ClusterConfig, ReplicationSettings
from ..node.cosigning import MAX_CLOCK_SKEW_MS, stale_since
from ..node.errors import (
    FieldError,
    KeyMaterialError,
    NotAdminAuthorError,
    NotGrantedError,
    SignatureError,
    TallyMismatchError,
    VledgerError,
)
from ..node.json_values import jsonable
from ..node.node_key_rotation import KeyHistory, key_histories
from ..node.note import ALG_ED25519, VerifierKey
from ..node.record import Record
from ..node.rules import Domain, Ref
from ..node.rules.admin import ADMIN_LEDGER
from ..node.rules.charity import CharityState
from ..node.rules.engine import RulesEngine, Violation, check_grant
from ..node.rules.files import FilesState
from ..node.rules.resources import ResourcesState
from ..node.rules.votes import ElectionState
from ..node.tally_body import STALE_AFTER_MS, Snapshot

RECOSIGN_MS = ReplicationSettings().recosign_interval_ms  # the default recosign_interval_ms (PROTOCOL 10.7)

AGREE, MISMATCH, STILL_COUNTING = "agree", "mismatch", "still_counting"
TALLY_RECOUNT = "tally_recount"  # the verifier's alert of a tally its own count contradicts (11.4)
# A report's outcome as a process's exit code (``vledger tally``): agree, a problem, still counting,
# an observer stale (behind the ledger's signed checkpoint and silent for longer than the grace).
EXIT_OK, EXIT_FAILED, EXIT_COUNTING, EXIT_STALE = 0, 1, 3, 4


def counted_hash(hashes: Iterable[bytes]) -> bytes:
    """SHA-256 over the concatenated record hashes, in the order given (height order)."""
    digest = hashlib.sha256()
    for record_hash in hashes:
        digest.update(record_hash)
    return digest.digest()


def tally_map(domain: Domain) -> tuple[dict[str, Any], tuple[Ref, ...] | None]:
    """A ledger's domain tally as a plain map, and for an election the casts it counts.

    Every map has ``"type"`` (the domain, ``plain`` without rules, ``unusable`` when the
    genesis rules are invalid); the other keys are the domain's own (docs/PROTOCOL.md 11.2).
    """
    values: dict[str, Any] = {"type": domain.type_name}
    counted: tuple[Ref, ...] | None = None
    if isinstance(domain, ElectionState):
        election = domain.tally()
        counted = election.counted
        values |= {
            "counts": dict(election.counts),
            "registered": election.registered,
            "cast": election.cast,
            "withdrawn": election.withdrawn,
        }
    elif isinstance(domain, CharityState):
        charity = domain.tally()
        funds = {
            name: {
                "donated": fund.donated,
                "disbursed": fund.disbursed,
                "donations": fund.donations,
                "disbursements": fund.disbursements,
                "balance": fund.balance,
            }
            for name, fund in charity.funds.items()
        }
        values |= {
            "currency": charity.currency,
            "funds": funds,
            "donated": charity.donated,
            "disbursed": charity.disbursed,
            "balance": charity.balance,
        }
    elif isinstance(domain, ResourcesState):
        resources = domain.tally()
        values |= {
            "unit": resources.unit,
            "balances": dict(resources.balances),
            "issued": resources.issued,
            "issues": resources.issues,
            "transfers": resources.transfers,
        }
    elif isinstance(domain, FilesState):
        files = domain.tally()
        values |= {"files": files.files, "bytes": files.bytes, "uploads": files.uploads, "authors": files.authors}
    return values, counted


# --- snapshots ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _LedgerCount:
    head: Ref
    records: int = 0  # records that passed the rules
    flagged: int = 0  # records that broke them
    passed: Any = field(default_factory=hashlib.sha256)  # over the hashes of the records that passed


class TallyKeeper:
    """An observer's own count of every ledger it holds, fed each ledger's records in height order.

    Pure, one thread. Memory: the engine's domain states and one running hash per ledger.
    """

    def __init__(self) -> None:
        # Grants are judged like domain rules (docs/PROTOCOL.md 16.2): a record written without
        # one is flagged and not counted.
        self.engine = RulesEngine(audit_grants=True)
        self._counts: dict[str, _LedgerCount] = {}
        # The accepted time of the last admin record fed (-1: none): the home accepts admin records
        # in time order, so every admin record accepted before it has been fed too.
        self.admin_accepted = -1

    def ledgers(self) -> list[str]:
        return sorted(self._counts)

    def next_height(self, ledger: str) -> int:
        """The height this keeper expects next for ``ledger`` (0 before its genesis)."""
        count = self._counts.get(ledger)
        return 0 if count is None else count.head.height + 1

    def head(self, ledger: str) -> Ref | None:
        count = self._counts.get(ledger)
        return None if count is None else count.head

    def refuses_grant(self, record: Record) -> bool:
        """Whether the grant rule (or 16.7's, for a handover or key rotation) refuses ``record``,
        the ledger's next, by the admin records fed so far."""
        state = self.engine.state(record.content.ledger)
        if state is None:
            return False
        try:
            check_grant(self.engine.grants(), record, state.rules)
        except (NotGrantedError, NotAdminAuthorError):
            return True
        return False

    def feed(self, record: Record) -> Violation | None:
        """Judge the ledger's next record by the rules; the rule it breaks (it is then not counted), or None.

        The chain is assumed verified (the observer's store only holds verified records).
        """
        violations = self.engine.replay([record])
        count = self._counts.get(record.ledger)
        if count is None:
            count = self._counts[record.ledger] = _LedgerCount(Ref.of(record))
        count.head = Ref.of(record)
        if record.ledger == ADMIN_LEDGER:
            self.admin_accepted = max(self.admin_accepted, record.accepted)
        if violations:
            count.flagged += 1
            return violations[0]
        count.records += 1
        count.passed.update(record.link)
        return None

    def snapshot(self, observer: str, ledger: str, at_ms: int) -> Snapshot:
        """The count of ``ledger`` at the last height fed."""
        count = self._counts[ledger]
        state = self.engine.state(ledger)
        assert state is not None  # a ledger fed its genesis has a state, usable or not
        tally, counted = tally_map(state.domain)
        tally |= {"records": count.records, "flagged": count.flagged}
        digest = counted_hash(ref.hash for ref in counted) if counted is not None else count.passed.copy().digest()
        return Snapshot(observer, ledger, count.head.height, count.head.hash, tally, digest, at_ms)


# --- reading signed snapshots back ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    """A published entry after its checks: its snapshot if the signature and body hold, else the problem."""

    published: Published
    snapshot: Snapshot | None
    problem: VledgerError | None

    @property
    def ok(self) -> bool:
        return self.snapshot is not None


def check_published(
    published: Published, key: VerifyKey | None, ledger: str, history: KeyHistory | None = None
) -> Checked:
    """Verify the signature with the observer's key (None: no key file), then the body's fields.

    With ``history`` (the observer's Ed25519 key generations, proven on the admin ledger,
    docs/PROTOCOL.md 16.6), any of its keys may have signed, and the key must have been in
    force for the body: the newest always; a replaced one only for an ``at_ms`` before the
    ``until`` of the rotation that replaced it and, when that rotation states what the key had
    ``tallied``, only at a height no larger than the one it lists for the ledger (``at_ms`` is
    the signer's claim: the height bound is what keeps a thief of the replaced key from signing
    a later count). The problem is a SignatureError [bad_signature] for a signature by none of
    the keys or by one out of force, a FieldError [bad_field] (or the body's encoding error) for
    a body that is not one or states another observer, ledger or height.
    """
    try:
        if published.oversized:
            raise FieldError(
                f"the tally entry {published.entry_id} of {published.observer!r} is over {MAX_READ_BYTES} bytes: "
                "not read"
            )
        signer = _signer(published, key, history)
        snapshot = Snapshot.decode(published.body).stating(published.observer, ledger, published.height)
        if history is not None and not history.signs_at(signer, snapshot.at_ms):
            raise SignatureError(
                f"the tally of {published.observer!r} is signed by its key {signer[:16]}..., replaced before "
                f"its at_ms {snapshot.at_ms}"
            )
        if history is not None and not history.tallies(signer, snapshot.at_ms, ledger, snapshot.height):
            raise SignatureError(
                f"the tally of {published.observer!r} at height {snapshot.height} is signed by its replaced key "
                f"{signer[:16]}..., past the heights its rotation says that key had tallied"
            )
    except VledgerError as e:
        return Checked(published, None, e)
    return Checked(published, snapshot, None)


def _signer(published: Published, key: VerifyKey | None, history: KeyHistory | None) -> str:
    """The key (hex) whose signature ``published`` carries; raises SignatureError for none."""
    if history is None:
        if key is None:
            raise SignatureError(f"no public signing key for observer {published.observer!r}")
        key.verify(published.body, published.signature)
        return key.public_hex
    for sign in history.sign_keys():
        if VerifierKey("tally", ALG_ED25519, bytes.fromhex(sign)).verify_raw(published.body, published.signature):
            return sign
    raise SignatureError(f"the signature does not verify with any key of observer {published.observer!r}")


def observer_histories(
    keys: Mapping[str, VerifyKey | None], rotations: Iterable[Mapping[str, Any]]
) -> dict[str, KeyHistory]:
    """The key histories of the observers of ``keys`` whose Ed25519 key ``rotations`` (proven
    on the admin ledger, verifier/node_keys.py) rotated: generation 0 is the key file's."""
    original = {name: ("", key.public_hex) for name, key in keys.items() if key is not None}
    histories = key_histories(original, [r for r in rotations if r.get("node") in original])
    return {name: h for name, h in histories.items() if len(h.generations) > 1}


def common_height(heights: Mapping[str, Iterable[int]]) -> int | None:
    """The newest height every observer published a snapshot at, or None."""
    sets = [set(h) for h in heights.values()]
    if not sets:
        return None
    common = set.intersection(*sets)
    return max(common) if common else None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the observers agree: at which height, and who is outside the largest agreeing group.

    No observer is the reference: with a mismatch, ``differing`` names every observer compared
    that is not in the one largest group of agreeing snapshots, and every one compared when no
    group is larger than all others (two observers that disagree are both named)."""

    status: str  # AGREE, MISMATCH or STILL_COUNTING
    height: int | None = None
    differing: tuple[str, ...] = ()
    # The observers a verifier's open ``tally_recount`` alert names (:func:`with_recounts`): their
    # tally is not its count of the same records, and the verdict is a mismatch while it is open.
    recount: tuple[str, ...] = ()

    def json(self) -> dict[str, Any]:
        """As `vledger tally --json` and the gateway's tally and funds answers show it."""
        return {
            "status": self.status,
            "height": self.height,
            "differing": list(self.differing),
            "recount": list(self.recount),
        }


def agreeing_groups(snapshots: Mapping[str, Snapshot], observers: Iterable[str]) -> list[tuple[str, ...]]:
    """The observers of ``snapshots`` (in ``observers``' order) grouped by the count they signed,
    largest group first (ties in the order of each group's first observer)."""
    groups: list[list[str]] = []
    for name in observers:
        snapshot = snapshots.get(name)
        if snapshot is None:
            continue
        group = next((g for g in groups if snapshots[g[0]].same_count(snapshot)), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    return [tuple(g) for g in sorted(groups, key=len, reverse=True)]


def majority(groups: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The one largest group of ``groups`` (agreeing_groups), or () when none is larger than every other."""
    if not groups or (len(groups) > 1 and len(groups[1]) == len(groups[0])):
        return ()
    return groups[0]


def judge(snapshots: Mapping[str, Snapshot], observers: Iterable[str]) -> Verdict:
    """Compare ``snapshots`` (by observer, all at one height) of the configured ``observers``.

    A mismatch when the snapshots are not all one count (``differing``: see Verdict); else
    still counting when some observer has no snapshot at that height; else they agree.
    """
    names = list(observers)
    groups = agreeing_groups(snapshots, names)
    if not groups:
        return Verdict(STILL_COUNTING)
    height = snapshots[groups[0][0]].height
    if len(groups) > 1:
        kept = set(majority(groups))
        return Verdict(MISMATCH, height, tuple(n for n in names if n in snapshots and n not in kept))
    return Verdict(STILL_COUNTING if len(groups[0]) < len(names) else AGREE, height)


# Whom a tally_mismatch alert is about (its ``node``): the observers' count, found by ``vledger tally``
# or the verifier; the observers are in its ``source`` (docs/PROTOCOL.md 11.4).
MISMATCH_FINDER = "vledger-tally"


def mismatch_alert(ledger: str, verdict: Verdict, compared: Mapping[str, Snapshot]) -> Alert:
    """The ``tally_mismatch`` alert of a mismatch (PROTOCOL 11.4): ``source`` the observers
    compared, ``expected`` the count (``counted``, hex) of the largest agreeing group, empty when
    none is larger than every other, and ``found`` the counts of the observers ``differing``."""
    names = list(compared)
    agreeing = majority(agreeing_groups(compared, names))
    differing = ", ".join(verdict.differing)
    if agreeing:
        detail = f"at height {verdict.height}, {differing} signed another tally than {', '.join(agreeing)}"
    else:
        detail = f"at height {verdict.height}, {differing} signed different tallies, none agreed by more observers"
    return Alert(
        node=MISMATCH_FINDER,
        ledger=ledger,
        height=verdict.height if verdict.height is not None else -1,
        what=TallyMismatchError.code,
        detail=detail,
        source=", ".join(names),
        expected=compared[agreeing[0]].counted.hex() if agreeing else "",
        found=", ".join(compared[name].counted.hex() for name in verdict.differing),
    )


def open_recounts(client: Any, config: ClusterConfig, ledger: str) -> dict[str, int]:
    """Observer -> the height of the open ``tally_recount`` alert (PROTOCOL 11.4) a verifier of
    ``config`` raised about its tally of ``ledger`` (verifier/tally_recount.py). Only a verifier's
    own hash counts: any node's Redis user writes its own as it likes, and a replica's claim would
    stop every verdict. A hash of another type, or a field that is no alert, counts nothing;
    Redis's other errors pass. One HGET per observer and verifier (the gateway's user has no HMGET)."""
    observers = [node.name for node in config.nodes_of("observer")]
    replication = ReplicationLedger(client)
    found: dict[str, int] = {}
    for verifier in (node.name for node in config.nodes_of("verifier")):
        key = replication.open_alerts_key_of(verifier)
        for observer in observers:
            try:
                raw = client.hget(key, f"{observer}|{ledger}|{TALLY_RECOUNT}")
            except redis.exceptions.ResponseError as e:
                if not wrong_type(e):
                    raise
                break
            if raw is None:
                continue
            try:
                height = json.loads(raw).get("height")
            except (ValueError, AttributeError, UnicodeDecodeError):
                continue
            # Text in the hash, as every alert field (10.5); one that is no height counts the alert all the same.
            at = (
                int(height)
                if isinstance(height, str) and height.isascii() and height.isdigit() and len(height) < 20
                else -1
            )
            found[observer] = max(found.get(observer, -1), at)
    return found


def with_recounts(report: TallyReport, recounts: Mapping[str, int]) -> TallyReport:
    """``report`` with the observers of ``recounts`` (:func:`open_recounts`) named: its verdict a
    mismatch while a verifier's ``tally_recount`` alert of one is open, however the observers
    compare among themselves (one observer alone agrees with itself: o21 F4)."""
    if not recounts:
        return report
    named = tuple(sorted(recounts))
    verdict = report.verdict
    height = verdict.height if verdict.height is not None else max(recounts.values())
    differing = tuple(sorted({*verdict.differing, *named}))
    return replace(report, verdict=Verdict(MISMATCH, height, differing, named))


def signature_failures(report: TallyReport) -> list[Checked]:
    """The entries ``report`` read (the latest and the older ones read for a common height) whose
    signature verifies with none of their observer's keys, or with one out of force for it (16.6)."""
    return [checked for checked in report.problems if isinstance(checked.problem, SignatureError)]


def bad_signature_alerts(report: TallyReport) -> list[Alert]:
    """The ``bad_signature`` alert (PROTOCOL 11.4) of each entry ``report`` read (the latest and
    the older ones read for a common height) whose signature verifies with none of its
    observer's keys, or with one out of force for it (16.6): ``node`` and ``source`` that
    observer, ``height`` the height the entry is filed under, ``found`` ``sha256:<hex>`` of its
    body. An entry that fails only its body's checks is no forgery of a signed count: not raised."""
    return [
        Alert(
            node=checked.published.observer,
            ledger=report.ledger,
            height=checked.published.height,
            what=SignatureError.code,
            detail=f"its tally stream's entry {checked.published.entry_id} does not verify: {checked.problem}",
            source=checked.published.observer,
            found=f"sha256:{hashlib.sha256(checked.published.body).hexdigest()}",
        )
        for checked in signature_failures(report)
    ]


def snapshot_fields(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as JSON values (bytes as lower-case hex); amounts stay as signed (minor units)."""
    return {
        "observer": snapshot.observer,
        "ledger": snapshot.ledger,
        "height": snapshot.height,
        "head": snapshot.head.hex(),
        "tally": jsonable(snapshot.tally),
        "counted": snapshot.counted.hex(),
        "at_ms": snapshot.at_ms,
    }


# --- the observers' latest tallies of one ledger, read from Redis and checked ---------------------


@dataclass(frozen=True, slots=True)
class ObserverTally:
    """One observer's latest snapshot of the ledger, checked; ``checked`` None: it published none."""

    observer: str
    checked: Checked | None


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """How far the ledger got, as a checkpoint its home signed says it: ``size`` records (heights
    0 to size - 1), the note's signature verified with ``signer``'s key; ``size`` None when no
    checkpoint verified (``problem`` says why): then no observer is judged stale, and an
    agreement is not "ok" (exit 4), since none can be shown current."""

    size: int | None
    signer: str | None = None
    problem: str | None = None
    # A note in Redis of a larger size that did not verify with the keys the reader holds (a
    # rekeyed ledger's newer checkpoints, or junk): nobody is judged ahead of this head then.
    larger_unverified: bool = False
    # When a majority of the witnesses that cosigned a tree of ``size`` had (node/cosigning.py's
    # quorum_since_ms, ms; None: none did): a count behind it for longer than the grace is old
    # whatever at_ms it claims, since at_ms is the observer's word only.
    since_ms: int | None = None
    # Since when a majority of the trusted witnesses have vouched for it (quorum_fresh_ms of each
    # one's newest cosignature, ms): witnesses cosign a quiet ledger's checkpoint again every
    # recosign_interval_ms (PROTOCOL 10.7), so a view older than that is frozen (head_stale).
    fresh_ms: int | None = None
    # How many trusted witnesses those times are over (needed_witnesses); 0: none is trusted,
    # the head is not judged. With some trusted, a fresh_ms of None (fewer vouched) is stale.
    needed: int = 0


@dataclass(frozen=True, slots=True)
class TallyReport:
    ledger: str
    observers: tuple[ObserverTally, ...]
    verdict: Verdict
    compared: dict[str, Snapshot]  # the snapshots compared, all at the verdict's height
    older: tuple[Checked, ...] = ()  # older entries read to compare at a common height
    alert: str | None = None  # the stream id of the mismatch alert this run added
    head: LedgerHead | None = None  # None: not asked
    stale: tuple[str, ...] = ()  # observers behind ``head`` for longer than the grace (stale_observers)
    ahead: tuple[str, ...] = ()  # observers claiming records ``head`` does not hold (ahead_observers)
    behind: bool = False  # the agreement is at a height ``head`` left behind, and old (agreement_behind)
    head_stale: bool = False  # no majority of witnesses vouched for ``head`` lately (head_stale)
    judged_at_ms: int | None = None  # the clock ``head`` was judged by (None: not judged)

    @property
    def problems(self) -> list[Checked]:
        """Every entry read that failed its checks."""
        latest = [t.checked for t in self.observers if t.checked is not None]
        return [c for c in [*latest, *self.older] if not c.ok]

    @property
    def exit_code(self) -> int:
        if self.problems or self.verdict.status == MISMATCH:
            return EXIT_FAILED
        # An agreement at a height the ledger left behind is no answer, nor one on a view no
        # majority of witnesses vouched for lately: a frozen gateway or Redis shows an old head.
        if self.stale or self.ahead or self.behind or self.head_stale:
            return EXIT_STALE
        if self.verdict.status == AGREE and self.head is not None and self.head.size is None:
            # Nor one whose currency nobody could judge: junk at the checkpoint key must not pass a stuck observer.
            return EXIT_STALE
        return EXIT_OK if self.verdict.status == AGREE else EXIT_COUNTING


def _silent_too_long(at_ms: int, height: int, head: LedgerHead, now_ms: int, after_ms: int) -> bool:
    """Whether a snapshot at ``height`` signed at ``at_ms`` is behind ``head`` for longer than
    ``after_ms``: by its own date, by a date too far ahead of ``now_ms`` to be one (an observer
    cannot shield an old count with a date to come), or by a majority of the witnesses'
    (``head.since_ms``)."""
    if head.size is None or height + 1 >= head.size:
        return False
    if now_ms - at_ms > after_ms or at_ms - now_ms > MAX_CLOCK_SKEW_MS:
        return True
    return head.since_ms is not None and now_ms - head.since_ms > after_ms


def head_stale(head: LedgerHead, now_ms: int, after_ms: int = STALE_AFTER_MS, recosign_ms: int = RECOSIGN_MS) -> bool:
    """Whether ``head`` is **stale** (PROTOCOL 11.4): a majority of the witnesses that cosigned it
    last vouched for it (``head.fresh_ms``) more than ``recosign_ms`` (the cluster's
    recosign_interval_ms, how often they cosign a quiet ledger again) plus ``after_ms`` before
    ``now_ms``. Witnesses cosign a growing ledger's new checkpoints and a quiet one's again, so on
    a live view that time is never older; a frozen view (a gateway or Redis copy no longer
    updated, or one lying by omission) keeps serving it, and it ages. A head fewer than
    ``head.needed`` trusted witnesses vouched for is stale too; with none trusted, none is judged."""
    return head.size is not None and stale_since(head.fresh_ms, now_ms, recosign_ms, after_ms, head.needed)


def stale_observers(
    observers: Iterable[ObserverTally], head: LedgerHead, now_ms: int, after_ms: int = STALE_AFTER_MS
) -> tuple[str, ...]:
    """The observers whose latest valid snapshot counted fewer records than ``head``'s checkpoint
    holds and was made more than ``after_ms`` before ``now_ms`` (or dated more than
    MAX_CLOCK_SKEW_MS after it, or behind a checkpoint witnesses cosigned longer ago): stuck, or
    far behind. One that published nothing is still counting, not stale; with no verified head
    nobody is judged."""
    return tuple(
        t.observer
        for t in observers
        if t.checked is not None
        and (snapshot := t.checked.snapshot) is not None
        and _silent_too_long(snapshot.at_ms, snapshot.height, head, now_ms, after_ms)
    )


def ahead_observers(observers: Iterable[ObserverTally], head: LedgerHead) -> tuple[str, ...]:
    """The observers whose latest valid snapshot counts records that ``head``'s checkpoint does not
    hold (``height + 1 > size``). An observer stores only records a signed checkpoint covers
    (PROTOCOL 10.7), so an honest one is ahead only while the home's newest checkpoint has not
    reached Redis yet; a body claiming a height no record has must not make the others' older
    agreement pass, nor pass for the ledger's figures. With no verified head nobody is judged."""
    if head.size is None or head.larger_unverified:
        return ()
    return tuple(
        t.observer
        for t in observers
        if t.checked is not None and (snapshot := t.checked.snapshot) is not None and snapshot.height + 1 > head.size
    )


def agreement_behind(
    verdict: Verdict,
    compared: Mapping[str, Snapshot],
    observers: Iterable[ObserverTally],
    head: LedgerHead,
    now_ms: int,
    after_ms: int = STALE_AFTER_MS,
) -> bool:
    """Whether the observers agree only at a height older than ``head``, on snapshots all signed
    more than ``after_ms`` before ``now_ms``, while one of them has reached the head: their
    latest snapshots are at other heights (else each would be judged by stale_observers), so
    one may have chosen heights no other signs at to keep the comparison on an old count.
    Under steady writes no observer's latest is at the head (each signs on its own timer, at
    its own height): the common height is old then too, and that is counting, not a lie."""
    if verdict.status != AGREE or verdict.height is None or head.size is None or not compared:
        return False
    latest = [t.checked.snapshot.height for t in observers if t.checked is not None and t.checked.snapshot is not None]
    if not latest or max(latest) + 1 < head.size:
        return False
    return all(_silent_too_long(s.at_ms, verdict.height, head, now_ms, after_ms) for s in compared.values())


def observer_keys(config: ClusterConfig) -> dict[str, VerifyKey | None]:
    """Each observer's public signing key from the key directory (None: missing or unreadable)."""
    keys: dict[str, VerifyKey | None] = {}
    for node in sorted(config.nodes_of("observer"), key=lambda n: n.name):
        try:
            keys[node.name] = load_verify_key(signing_key_paths(config.keys_dir, node.name)[1])
        except KeyMaterialError:
            keys[node.name] = None
    return keys


# Pages (LOOK_PAGE entries) of each observer's stream read back for a common height by a reader
# that must not read a stream whole (the verifier's look, the gateway's anonymous /tally): honest
# observers meet within seconds once a ledger is quiet, inside one page signed once a second. A
# page is small: its entries' sizes are an observer's Redis user's to choose.
LOOK_PAGES = 2
LOOK_PAGE = 32


def read_tallies(
    board: TallyBoard,
    ledger: str,
    keys: dict[str, VerifyKey | None],
    histories: Mapping[str, KeyHistory] | None = None,
    pages: int | None = None,
    page: int = HISTORY_PAGE,
) -> TallyReport:
    """The latest snapshots of ``ledger`` of the observers of ``keys``, each read from that
    observer's own keys, checked (with ``histories`` for those whose key rotated), and whether
    they agree (Redis errors pass). With ``pages``, each observer's stream is read back at most
    that many pages (of ``page`` entries) for a common height: none found within is still counting."""
    histories = histories or {}
    latest = board.latest(ledger, keys)
    tallies = tuple(
        ObserverTally(
            name,
            None
            if (published := latest.get(name)) is None
            else check_published(published, key, ledger, histories.get(name)),
        )
        for name, key in keys.items()
    )
    valid = {t.observer: t.checked.snapshot for t in tallies if t.checked is not None and t.checked.snapshot}
    if len({snapshot.height for snapshot in valid.values()}) <= 1:
        return TallyReport(ledger, tallies, judge(valid, keys), valid)
    # Read back from the entries just read, never from the streams' newest: an observer may have
    # published since, and a verdict on that newer entry was shown beside the older body as its count.
    named = {t.observer: t.checked.published.entry_id for t in tallies if t.checked is not None}
    compared, older = _at_common_height(board, ledger, valid, named, keys, histories, pages, page)
    return TallyReport(ledger, tallies, judge(compared, keys), compared, older)


def _at_common_height(
    board: TallyBoard,
    ledger: str,
    latest: dict[str, Snapshot],
    named: Mapping[str, str],
    keys: dict[str, VerifyKey | None],
    histories: Mapping[str, KeyHistory],
    pages: int | None = None,
    page_size: int = HISTORY_PAGE,
) -> tuple[dict[str, Snapshot], tuple[Checked, ...]]:
    """The snapshots at the newest height every observer in ``latest`` published, read back from
    their streams a page of each at a time, newest first, from the entry ``named`` gives (the one
    ``latest`` holds), at most ``pages`` pages of each: an honest observer's heights only grow
    along its stream, so the first common height found is the newest."""
    seen: dict[str, dict[int, Published | Snapshot]] = {name: {s.height: s} for name, s in latest.items()}
    before: dict[str, str | None] = {name: named[name] for name in latest}
    reading = list(latest)
    height = None
    read = 0
    while height is None and reading and (pages is None or read < pages):
        read += 1
        for name in list(reading):
            page = board.history(ledger, name, before[name], page_size)
            if not page:
                reading.remove(name)
                continue
            for published in page:
                if not published.oversized:  # never a count: passed over, as an entry of another shape is
                    seen[name].setdefault(published.height, published)
            before[name] = page[-1].entry_id
        height = common_height({name: heights.keys() for name, heights in seen.items()})
    if height is None:
        return {}, ()
    compared: dict[str, Snapshot] = {}
    older: list[Checked] = []
    for name, heights in seen.items():
        found = heights[height]
        if isinstance(found, Published):
            checked = check_published(found, keys[name], ledger, histories.get(name))
            older.append(checked)
            if checked.snapshot is None:
                continue
            found = checked.snapshot
        compared[name] = found
    return compared, tuple(older)
