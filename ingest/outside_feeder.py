"""A home feeds its checkpoints to the outside witnesses its ledgers' geneses list (PROTOCOL 13.9).

After each checkpoint the outbox signs, for each outside witness a ledger's genesis lists
(``rules.witnesses``) and the cluster file gives a URL for (``[outside_witnesses]``), one
thread POSTs a c2sp.org/tlog-witness add-checkpoint: ``old <size>`` (the size this home last
saw the witness cosign, 0 at first), the consistency proof from there, and the checkpoint.
A 409 names the witness's own size: the request is made again once from that size. A ledger
that stays quiet is fed its checkpoint again (``old <size>``, no proof) every
``recosign_interval_ms``, and the witness cosigns it at a fresh time. A 200's
cosignature is believed only when it verifies with the key the genesis lists; it is then
kept in the store (checkpoint log kind ``outside:<witness>``) and published like a cluster
witness's (``vledger:{<ledger>}:outside`` under the witness's key name, and the
``vledger:cosigned`` channel). Any other answer is a refusal (422: the witness saw a tree this checkpoint does not
extend, a fork fed to it or a rewritten tail here): an alert ``witness_refused`` names the
witness, once per ledger, witness and status. Failures wait before the next try, doubling
from one second up to ``witness_backoff_max_ms``; each request ends within
``witness_timeout_ms``, all of it. Each witness is fed by a thread of its own, so one that is
slow or silent holds back only its own cosignatures; two failures in a row at a ledger raise
``witness_unreachable``, which this home resolves once that witness cosigns that ledger again.

Cluster witnesses first (outsider o24 F5): what is fed is the largest checkpoint this home
signed that a majority of the cluster's witnesses cosigned, their lines read from Redis at that
moment (each witness's newest note and its recent ones, ``{L}:cosig:<w>:recent``: review r32 #5)
and kept (a bounded map per ledger); an outside witness's kept note, and so the quorum
note joined from them, carries those lines beside its own. Fed the newest signed instead, a
slower outside witness's size was one whose cluster lines were gone from Redis by the time it
answered, and every anchored reader refused the served checkpoint (no_quorum, and for an epoch
from 2 the epoch rule). When no newer checkpoint gathers a majority for ``witness_timeout_ms``
(witnesses down, slow, or skipping different sizes under load), the largest with the most
cluster lines past what the outside witness cosigned is fed, else the newest signed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..broker.replication import REDIS_ERRORS, Alert, ReplicationLedger
from ..broker.witness_http import post_add_checkpoint
from ..config.cluster import ReplicationSettings
from ..node.checkpoint_log import SIGNED
from ..node.cosigning import MAX_CLOCK_SKEW_MS, needed_witnesses
from ..node.errors import VledgerError, WitnessRefusedError, WitnessUnreachableError
from ..node.note import (
    Note,
    NoteSignature,
    VerifierKey,
    add_checkpoint_request,
    parse_checkpoint,
    parse_note,
    verify_signature,
    with_newest,
)
from ..node.outside import (
    QUORUM_NOTE,
    Conflict,
    Cosigned,
    OutsideWitnesses,
    Refused,
    WitnessReply,
    outside_kind,
    outside_witnesses,
    quorum_note,
    read_reply,
)
from ..node.store import ChainStore
from ..node.times import time_text
from ..node.witness import SignedCheckpoint

log = logging.getLogger(__name__)

Post = Callable[[str, bytes, float], WitnessReply]
FIRST_BACKOFF_SECONDS = 1.0
POLL_SECONDS = 0.2  # how often the thread looks for a newer signed checkpoint
LOST_CHECK_SECONDS = 5.0  # how often a thread looks whether Redis still holds the notes it set
MAX_TRIES = 2  # per checkpoint and witness: the request, and once more after a 409
UNREACHABLE_AFTER = 2  # failures in a row at a ledger before the alert: one blip is no news
CLUSTER_SIZES_KEPT = 32  # per ledger: the checkpoints whose cluster cosignature lines are kept to feed
UNREACHABLE = WitnessUnreachableError.code


@dataclass(slots=True)
class _WitnessState:
    size: int  # the size this home last saw the witness cosign (0: none; a 409 corrects it)
    retry_at: float = 0.0
    recosign_at: float = 0.0  # when to ask for that size again, if the ledger is still quiet (13.9)
    backoff: float = 0.0
    failures: int = 0  # failed requests in a row (unreachable, past the deadline, garbage)
    alerted: set[int] = field(default_factory=set)  # statuses already reported


FEEDER_METRICS = {  # FeederCounts field -> the help text of its metric (vledger_outside_witness_<field>)
    "cosigned": "outside witness cosignatures verified and kept since start",
    "conflicts": "409 answers (the witness named another old size) since start",
    "refused": "add-checkpoint refusals (422, 403, 404, ...) since start",
    "failed": "add-checkpoint requests that failed (unreachable, timeout, garbage) since start",
}


@dataclass(slots=True)
class FeederCounts:
    """What the feeder did since it started (read by the metrics)."""

    cosigned: int = 0
    conflicts: int = 0
    refused: int = 0
    failed: int = 0


class WitnessFeeder:
    """Feeds each ledger's latest signed checkpoint (``latest()``) to its outside witnesses."""

    def __init__(
        self,
        home: str,
        store: ChainStore,
        latest: Callable[[], Mapping[str, SignedCheckpoint]],
        urls: Mapping[str, str],
        replication: ReplicationLedger | None,
        settings: ReplicationSettings,
        on_alert: Callable[[Alert], None],
        *,
        cluster: str,
        post: Post = post_add_checkpoint,
        clock: Callable[[], float] = time.monotonic,
        witnesses: Callable[[], Iterable[VerifierKey]] = lambda: (),
    ) -> None:
        """``witnesses()``: the cluster's witness keys now (a rotated one's in force too, 16.6);
        none: the newest signed checkpoint is fed, as to a cluster with no witness."""
        self.home = home
        self.witnesses = witnesses
        self.cluster = cluster  # its witnesses' names are no outside witness's (13.9)
        self.store = store
        self.latest = latest
        self.urls = dict(urls)
        self.replication = replication
        self.timeout = settings.witness_timeout_ms / 1000
        self.max_backoff = settings.witness_backoff_max_ms / 1000
        self.recosign = settings.recosign_interval_ms / 1000
        self.on_alert = on_alert
        self.post = post
        self._clock = clock
        self.counts = FeederCounts()
        self._outside: dict[str, OutsideWitnesses | None] = {}
        self._state: dict[tuple[str, str], _WitnessState] = {}
        self._unpublished: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._unlisted: set[str] = set()  # witnesses with no URL, logged once
        self._ahead: set[str] = set()  # witnesses whose clock ran ahead, logged once until it is right
        # (ledger, witness) whose witness_unreachable this home raised and has not resolved:
        # the alert's key names no witness, so it stays open while any of a ledger's is down.
        self._unreachable: dict[tuple[str, str], Alert] = {}
        # Per ledger, the largest checkpoint a quorum of its outside witnesses cosigned (13.9): its
        # size, and its note while not yet in Redis. One thread at a time publishes them, each the
        # newest when it starts, so none sets back a larger one another thread published.
        self._quorum_size: dict[str, int] = {}
        self._quorum_unpublished: dict[str, tuple[int, bytes]] = {}
        self._quorum_lock = threading.Lock()  # the two above
        self._quorum_publishing = threading.Lock()
        # What this home last set in Redis, (ledger, field) -> (size, note), the quorum note's
        # field QUORUM_NOTE among them: put back when Redis is found to have lost it.
        self._published: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._checked_at: dict[tuple[str, ...] | None, float] = {}  # per thread: when it last looked
        # Per ledger, (size, root) -> (the home's signed note, witness name -> its first verified
        # cosignature line): the cluster's lines of the checkpoints to feed (CLUSTER_SIZES_KEPT
        # largest); and per ledger the (size, root) to feed by them and since when it stood
        # still with the home past it, to feed the newest signed once they stop cosigning.
        self._cluster: dict[str, dict[tuple[int, bytes], tuple[bytes, dict[str, NoteSignature]]]] = {}
        self._cluster_best: dict[str, tuple[tuple[int, bytes] | None, float]] = {}
        self._lock = threading.Lock()  # the state the witnesses' threads share: all but _state
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def count(self, what: str) -> int:
        """One of the counts (a FEEDER_METRICS name), for the metrics (any thread)."""
        return int(getattr(self.counts, what))

    def _add(self, what: str) -> None:
        with self._lock:
            setattr(self.counts, what, getattr(self.counts, what) + 1)

    def start(self) -> WitnessFeeder:
        """One thread per witness the cluster file gives a URL for (one to log unlisted ones when
        it gives none): a witness's slowness holds back its own cosignatures, never another's."""
        self._adopt_open_alerts()
        groups: list[tuple[str, ...]] = [(name,) for name in sorted(self.urls)]
        for names in groups or [()]:
            thread = threading.Thread(
                target=self._run, args=(names,), name=f"witness-feeder-{self.home}-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _run(self, names: tuple[str, ...]) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.turn(names)
            except Exception:  # the feeder must outlive any one failure; the next turn tries again
                log.exception("witness feeder: a turn failed")

    def turn(self, names: tuple[str, ...] | None = None) -> None:
        """Feed each ledger's latest checkpoint to each of its outside witnesses named in
        ``names`` (default: all, one after the other) not yet past it."""
        for ledger, checkpoint in sorted(self.latest().items()):
            if self._stop.is_set():
                return
            outside = self._witnesses(ledger)
            if outside is None:
                continue
            mine: list[tuple[VerifierKey, str]] = []
            for key in outside.keys:
                url = self.urls.get(key.name)
                if url is None:
                    self._note_unlisted(key.name)
                elif names is None or key.name in names:
                    mine.append((key, url))
            if not mine:
                continue  # none of this thread's witnesses serves it: nothing read for it (review r32 #4)
            fed = self._to_feed(checkpoint, [key.name for key, _ in mine])
            if fed is None:
                continue
            for key, url in mine:
                self._feed(fed, key, url)
        self._publish(names)

    def _to_feed(self, latest: SignedCheckpoint, witnesses: list[str]) -> SignedCheckpoint | None:
        """What to feed ``witnesses`` (outside ones, of this thread) of ``latest``'s ledger: the
        largest checkpoint this home signed, up to ``latest``, that a majority of the cluster's
        witnesses cosigned (their lines kept, so that the outside witnesses' notes of it carry
        them); ``latest`` when there are no cluster witnesses, no Redis, or each of
        ``witnesses`` cosigned it already (a quiet ledger's recosign: Redis is not read). When
        the cluster's witnesses cosigned nothing newer for ``witness_timeout_ms``: of the
        checkpoints past what ``witnesses`` cosigned, the largest with the most cluster lines
        (one line is what the epoch rule asks), else ``latest``. None to wait (they have not
        cosigned yet)."""
        keys = tuple(self.witnesses())
        if not keys or self.replication is None:
            return latest
        ledger = latest.ledger
        done = min(self._state_of(ledger, name).size for name in witnesses)
        if done >= latest.size:
            return latest
        needed = needed_witnesses(len({key.name for key in keys}))  # a majority of them
        self._hear_cluster(ledger, keys, latest.size, needed)
        now = self._clock()
        with self._lock:
            held = {at: entry for at, entry in self._cluster.get(ledger, {}).items() if at[0] <= latest.size}
            best = max((at for at, (_, lines) in held.items() if len(lines) >= needed), default=None)
            # Most lines first (a majority being as good as all), then the largest: ``best`` when past ``done``.
            most = max(((min(len(lines), needed), at) for at, (_, lines) in held.items() if at[0] > done), default=None)
            # Since when the cluster's checkpoint to feed stood still while the home signed past it.
            before, since = self._cluster_best.get(ledger, (best, now))
            if best != before or best == (latest.size, latest.root):
                since = now
            self._cluster_best[ledger] = (best, since)
        if best == (latest.size, latest.root):
            return latest
        if now - since >= self.timeout:
            # The cluster's witnesses cosign nothing newer: the outside ones are not held back,
            # but fed, under load too (witnesses at other sizes), a checkpoint with lines if any.
            if most is None:
                return latest
            return SignedCheckpoint(ledger, most[1][0], most[1][1], held[most[1]][0])
        if best is None:
            return None
        return SignedCheckpoint(ledger, best[0], best[1], held[best][0])

    def _hear_cluster(self, ledger: str, keys: tuple[VerifierKey, ...], largest: int, needed: int) -> None:
        """Keep the verified lines of the cluster witnesses' notes in Redis, each one's newest
        and its recent ones (RECENT_COSIGNATURES: one witness a checkpoint behind another is seen
        at the other's size there, review r32 #5), that are of a checkpoint this home signed, up
        to ``largest`` (its newest) and from the largest ``needed`` of them cosigned (a smaller
        one is never fed)."""
        assert self.replication is not None
        prefix = f"{self.cluster}/witness/"
        nodes = sorted({key.name[len(prefix) :] for key in keys if key.name.startswith(prefix)})
        try:
            found = self.replication.recent_cosignatures(ledger, nodes)
        except REDIS_ERRORS as e:
            log.debug("witness feeder: the cluster's cosignatures of %s unread (%s)", ledger, e)
            return
        with self._lock:
            held = self._cluster.get(ledger, {})
            floor = max((at[0] for at, (_, got) in held.items() if len(got) >= needed and at[0] <= largest), default=0)
        table = {(key.name, key.key_id): key for key in keys}
        for data in dict.fromkeys(data for notes in found.values() for data in notes):
            try:
                note = parse_note(data)
                checkpoint = parse_checkpoint(note.text)
            except VledgerError:
                continue  # nothing in Redis is believed: the witness's own report, not ours
            at = (checkpoint.size, checkpoint.root)
            if not floor <= at[0] <= largest:
                # Never fed; and a junk size from 2**63 is no SQLite integer: its OverflowError
                # failed every turn, every ledger after this one unfed (review r32).
                continue
            with self._lock:
                entry = self._cluster.get(ledger, {}).get(at)
            if entry is None:
                signed = [row for row in self.store.checkpoints.at(ledger, SIGNED, at[0]) if row.root == at[1]]
                if not signed or parse_note(signed[0].note).text != note.text:
                    continue
                entry = (signed[0].note, {})
            lines = {
                sig.name: sig
                for sig in note.signatures
                if sig.name not in entry[1]
                and (key := table.get((sig.name, sig.key_id))) is not None
                and verify_signature(note.text, sig, key)
            }
            if not lines:
                continue
            with self._lock:
                held = self._cluster.setdefault(ledger, {})
                kept = held.setdefault(at, entry)
                for name, sig in lines.items():
                    kept[1].setdefault(name, sig)
                for old in sorted(held)[:-CLUSTER_SIZES_KEPT]:
                    del held[old]

    def _cluster_lines(self, checkpoint: SignedCheckpoint) -> dict[str, NoteSignature]:
        """The cluster witnesses' lines held now of ``checkpoint`` (a copy), by witness name."""
        with self._lock:
            entry = self._cluster.get(checkpoint.ledger, {}).get((checkpoint.size, checkpoint.root))
            return dict(entry[1]) if entry is not None else {}

    def _with_cluster_lines(self, checkpoint: SignedCheckpoint, note: bytes, fed: Mapping[str, NoteSignature]) -> bytes:
        """``note`` (of ``checkpoint``) with the cluster witnesses' lines of it: those held when it
        was fed (``fed``: the other witnesses' threads may have evicted them while this one waited
        on a slow answer) and those held now, if any."""
        held = {**self._cluster_lines(checkpoint), **fed}
        lines = tuple(sig for _, sig in sorted(held.items()))
        if not lines:
            return note
        try:
            parsed = parse_note(note)
            return with_newest(Note(parsed.text, (parsed.signatures[0], *lines)).encode(), note)
        except VledgerError as e:  # one size and root hold one text: cannot happen but with a changed store
            log.error("witness feeder: the cluster's lines of %s at %d do not join: %s", checkpoint.ledger,
                      checkpoint.size, e)  # fmt: skip
            return note

    def _note_unlisted(self, witness: str) -> None:
        with self._lock:
            if witness in self._unlisted:
                return
            self._unlisted.add(witness)
        log.warning("witness feeder: no URL for outside witness %s in [outside_witnesses]", witness)

    def _witnesses(self, ledger: str) -> OutsideWitnesses | None:
        with self._lock:
            if ledger in self._outside:
                return self._outside[ledger]
        try:
            found = outside_witnesses(ledger, self.store.rules(ledger).rules, self.cluster)
        except VledgerError as e:  # the genesis was checked when stored: a ledger from before the rule
            log.error("witness feeder: %s lists no usable outside witnesses: %s", ledger, e)
            found = None
        with self._lock:
            return self._outside.setdefault(ledger, found)

    def _state_of(self, ledger: str, witness: str) -> _WitnessState:
        # Only the witness's own thread reads or writes its states (and turn() in tests).
        state = self._state.get((ledger, witness))
        if state is None:
            kept = self.store.checkpoints.latest(ledger, outside_kind(witness))
            state = self._state[(ledger, witness)] = _WitnessState(kept.size if kept is not None else 0)
        return state

    def _feed(self, checkpoint: SignedCheckpoint, key: VerifierKey, url: str) -> None:
        ledger, size = checkpoint.ledger, checkpoint.size
        state = self._state_of(ledger, key.name)
        if state.size > size or self._clock() < state.retry_at:
            return  # it is ahead (a newer checkpoint will come), or waiting
        if state.size == size and self._clock() < state.recosign_at:
            return  # cosigned already, and not long ago: a quiet ledger is asked again after recosign_interval
        old = state.size
        # The cluster's lines of what is fed, taken now: a slow answer may come after 32 larger
        # sizes the other threads heard pushed them out of _cluster (review r32).
        fed = self._cluster_lines(checkpoint)
        for _ in range(MAX_TRIES):
            if old > size:
                self._refused(checkpoint, key, state, 409, f"it cosigned size {old}, past the {size} signed here")
                return
            proof = self.store.consistency_proof(ledger, old, size) if 0 < old < size else []
            body = add_checkpoint_request(old, proof, checkpoint.note).encode()
            try:
                outcome = read_reply(self.post(url, body, self.timeout), checkpoint.note, key)
            except (OSError, VledgerError) as e:
                self._failed(checkpoint, key, url, state, e)
                return
            if isinstance(outcome, Conflict):
                self._add("conflicts")
                old = state.size = outcome.size
                continue
            if isinstance(outcome, Refused):
                self._refused(checkpoint, key, state, outcome.status, outcome.reason or "no reason given")
                return
            self._cosigned(checkpoint, key, state, outcome, fed)
            return
        self._back_off(state)  # two 409s in a row: the witness moves under us; later

    def _cosigned(
        self,
        checkpoint: SignedCheckpoint,
        key: VerifierKey,
        state: _WitnessState,
        got: Cosigned,
        fed: Mapping[str, NoteSignature],
    ) -> None:
        ledger = checkpoint.ledger
        kind = outside_kind(key.name)
        # The store keeps the witness's first cosignature of a checkpoint (a row per size and root);
        # the note published carries it beside the newest: since_ms and fresh_ms (11.4).
        first = self.store.checkpoints.latest(ledger, kind)
        note = got.note
        if first is not None and (first.size, first.root) == (checkpoint.size, checkpoint.root):
            note = with_newest(first.note, got.note)
        else:
            # Kept with the cluster witnesses' lines of that checkpoint: the quorum note joined from
            # these rows then carries them, whatever sizes the witnesses' newest notes moved to.
            note = self._with_cluster_lines(checkpoint, got.note, fed)
            self.store.checkpoints.keep(ledger, kind, checkpoint.size, checkpoint.root, note)
        state.size = checkpoint.size
        state.backoff = 0.0
        state.retry_at = 0.0
        state.failures = 0
        state.recosign_at = self._clock() + self.recosign
        with self._lock:
            self._unpublished[(ledger, key.name)] = (checkpoint.size, note)
        self._add("cosigned")
        log.info("witness feeder: %s cosigned %s at size %d", key.name, ledger, checkpoint.size)
        self._join_quorum(ledger)
        self._judge_clock(key.name, ledger, got.cosignature.timestamp)
        self._reachable(ledger, key.name)

    def _join_quorum(self, ledger: str) -> None:
        """The largest checkpoint of ``ledger`` a quorum of its outside witnesses cosigned, if it
        grew, from the store's rows: one witness lagging (or refusing, or down) while the others
        cosign newer sizes must leave the quorum's checkpoint readable, not hide it behind notes
        that each carry one line of a different size (outsider o20 F1)."""
        outside = self._witnesses(ledger)
        if outside is None:
            return
        kinds = [outside_kind(key.name) for key in outside.keys]
        with self._quorum_lock:
            above = self._quorum_size.get(ledger, -1)
        rows = self.store.checkpoints.shared(ledger, kinds, outside.quorum, above=above)
        if not rows:
            return
        try:
            note = quorum_note(row.note for row in rows)
        except VledgerError as e:  # rows of one size and root hold one text: the store was changed
            log.error("witness feeder: the cosignatures of %s at size %d do not join: %s", ledger, rows[0].size, e)
            return
        with self._quorum_lock:
            if rows[0].size <= self._quorum_size.get(ledger, -1):
                return  # another witness's thread found it (or a larger one) meanwhile
            self._quorum_size[ledger] = rows[0].size
            self._quorum_unpublished[ledger] = (rows[0].size, note)
        log.debug("witness feeder: %d outside witnesses cosigned %s at size %d", len(rows), ledger, rows[0].size)

    def _publish_quorum(self) -> None:
        """Set each ledger's quorum note not yet in Redis (QUORUM_NOTE of its outside hash)."""
        if not self._quorum_publishing.acquire(blocking=False):
            return  # another thread publishes; what it leaves, the next turn does
        try:
            with self._quorum_lock:
                waiting = sorted(self._quorum_unpublished.items())
                if self.replication is None:
                    self._quorum_unpublished.clear()
                    return
            for ledger, got in waiting:
                try:
                    self.replication.publish_outside_cosignature(ledger, QUORUM_NOTE, *got)
                except REDIS_ERRORS as e:
                    log.warning("witness feeder: the quorum's note of %s not published, Redis unavailable (%s)",
                                ledger, e)  # fmt: skip
                    return
                with self._quorum_lock:  # a larger one found meanwhile waits its turn
                    if self._quorum_unpublished.get(ledger) == got:
                        del self._quorum_unpublished[ledger]
                with self._lock:
                    self._published[(ledger, QUORUM_NOTE)] = got
        finally:
            self._quorum_publishing.release()

    def _judge_clock(self, witness: str, ledger: str, timestamp: int) -> None:
        """Log, once until it is right again, an outside witness whose cosignature is dated more
        than the clock skew past this host's clock: readers ignore its date (PROTOCOL 11.4) while
        its line counts toward the quorum, and the verifier reads only the cluster's witnesses'
        keys (10.5 ``witness_clock``), so this line is all that tells its operator's peer."""
        ahead_ms = timestamp * 1000 - time.time_ns() // 1_000_000
        with self._lock:
            if ahead_ms <= MAX_CLOCK_SKEW_MS:
                if witness in self._ahead:
                    self._ahead.discard(witness)
                    log.info("witness feeder: %s's cosignatures are dated within the clock skew again", witness)
                return
            if witness in self._ahead:
                return
            self._ahead.add(witness)
        log.warning("witness feeder: outside witness %s cosigned %s dated %s, %d s ahead of this host's clock"
                    " (%d s of skew allowed): its clock runs ahead; readers ignore that date when they judge"
                    " freshness", witness, ledger, time_text(timestamp * 1000), ahead_ms // 1000,
                    MAX_CLOCK_SKEW_MS // 1000)  # fmt: skip

    def _failed(self, checkpoint: SignedCheckpoint, key: VerifierKey, url: str, state: _WitnessState,
                error: OSError | VledgerError) -> None:  # fmt: skip
        ledger, size = checkpoint.ledger, checkpoint.size
        self._add("failed")
        self._back_off(state)
        state.failures += 1
        reason = error.message if isinstance(error, VledgerError) else f"{type(error).__name__}: {error}"
        log.warning("witness feeder: %s at %s, %s size %d: %s", key.name, url, ledger, size, reason)
        if state.failures != UNREACHABLE_AFTER:
            return
        problem = WitnessUnreachableError(
            f"outside witness {key.name} gave no cosignature of {ledger} at size {size} "
            f"({state.failures} tries in a row; the last: {reason[:200]})"
        )
        log.error("witness feeder: %s", problem.message)
        alert = Alert(self.home, ledger, checkpoint.height, problem.code, problem.message, key.name,
                      checkpoint.root.hex())  # fmt: skip
        with self._lock:
            self._unreachable[(ledger, key.name)] = alert
        self.on_alert(alert)

    def _reachable(self, ledger: str, witness: str) -> None:
        """``witness`` cosigned ``ledger``: its witness_unreachable is over. The alert's key is the
        ledger's, so it closes once no other witness of that ledger is still unreachable; until
        then the open one is raised again naming one that is (it may have named this one)."""
        with self._lock:
            if self._unreachable.pop((ledger, witness), None) is None:
                return
            still = [alert for (of, _), alert in sorted(self._unreachable.items()) if of == ledger]
        log.info("witness feeder: %s cosigns %s again", witness, ledger)
        if self.replication is None:
            return
        try:
            if still:
                self.replication.alert(still[0])
            else:
                self.replication.resolve([f"{self.home}|{ledger}|{UNREACHABLE}"])
        except REDIS_ERRORS as e:
            log.warning("witness feeder: %s of %s not resolved, Redis unavailable (%s)", UNREACHABLE, ledger, e)

    def _adopt_open_alerts(self) -> None:
        """A witness_unreachable an earlier run of this home left open is this run's to resolve."""
        if self.replication is None:
            return
        try:
            open_alerts = self.replication.own_open_alerts()
        except REDIS_ERRORS as e:
            log.warning("witness feeder: open alerts not read, Redis unavailable (%s)", e)
            return
        for fields in open_alerts.values():
            if fields.get("what") == UNREACHABLE and fields.get("node") == self.home and fields.get("source"):
                ledger, witness = str(fields.get("ledger", "")), str(fields["source"])
                self._unreachable[(ledger, witness)] = Alert(
                    self.home, ledger, int(fields.get("height", 0)), UNREACHABLE, str(fields.get("detail", "")),
                    witness, str(fields.get("expected", "")),
                )  # fmt: skip

    def _refused(self, checkpoint: SignedCheckpoint, key: VerifierKey, state: _WitnessState, status: int,
                 reason: str) -> None:  # fmt: skip
        self._add("refused")
        self._back_off(state)
        if status in state.alerted:
            return
        state.alerted.add(status)
        error = WitnessRefusedError(
            f"outside witness {key.name} refused {checkpoint.ledger} at size {checkpoint.size} "
            f"(HTTP {status}): {reason[:200]}"
        )
        log.error("witness feeder: %s", error.message)
        self.on_alert(
            Alert(
                node=self.home,
                ledger=checkpoint.ledger,
                height=checkpoint.height,
                what=error.code,
                detail=error.message,
                source=key.name,
                expected=checkpoint.root.hex(),
            )
        )

    def _back_off(self, state: _WitnessState) -> None:
        state.backoff = min(self.max_backoff, max(FIRST_BACKOFF_SECONDS, 2 * state.backoff))
        state.retry_at = self._clock() + state.backoff

    def _publish(self, names: tuple[str, ...] | None) -> None:
        """Publish the cosignatures of ``names`` (default: all) not published yet. A thread
        publishes only its own witnesses': each witness's notes then reach Redis in the order
        it cosigned them, where another thread's HSET of a note taken before could land after
        a newer one and set the witness back until it cosigns again."""
        self._put_back_lost(names)
        self._publish_notes(names)
        self._publish_quorum()

    def _put_back_lost(self, names: tuple[str, ...] | None) -> None:
        """At most every LOST_CHECK_SECONDS: the notes of ``names`` (and the quorum notes) this
        home set in Redis and Redis no longer holds (it lost its data, or someone deleted them)
        are set again from what it published, where waiting for the witnesses' next cosignature
        left a quiet ledger read as cosigned by no outside witness, stale, for up to a recosign
        interval (outsider o20 F3). Nothing is there to set back."""
        if self.replication is None or self._clock() < self._checked_at.get(names, 0.0) + LOST_CHECK_SECONDS:
            return
        self._checked_at[names] = self._clock()
        with self._lock:
            mine = {at: got for at, got in self._published.items() if names is None or at[1] in (*names, QUORUM_NOTE)}
        if not mine:
            return
        try:
            held = self.replication.outside_fields(sorted({ledger for ledger, _ in mine}))
        except REDIS_ERRORS as e:
            log.debug("witness feeder: the outside notes not read back, Redis unavailable (%s)", e)
            return
        lost = [at for at in mine if at[1] not in held.get(at[0], set())]
        for ledger, name in lost:
            log.info("witness feeder: the note of %s by %s is gone from Redis: set again", ledger, name)
            if name == QUORUM_NOTE:
                with self._quorum_lock:
                    self._quorum_unpublished.setdefault(ledger, mine[(ledger, name)])
            else:
                with self._lock:
                    self._unpublished.setdefault((ledger, name), mine[(ledger, name)])

    def _publish_notes(self, names: tuple[str, ...] | None) -> None:
        with self._lock:
            waiting = [(at, got) for at, got in self._unpublished.items() if names is None or at[1] in names]
            if self.replication is None:
                for at, _ in waiting:
                    del self._unpublished[at]
                return
        for (ledger, witness), (size, note) in waiting:
            try:
                self.replication.publish_outside_cosignature(ledger, witness, size, note)
            except REDIS_ERRORS as e:
                log.warning("witness feeder: cosignature of %s by %s not published, Redis unavailable (%s)",
                            ledger, witness, e)  # fmt: skip
                return
            with self._lock:  # a newer one of that witness and ledger, set meanwhile, waits its turn
                if self._unpublished.get((ledger, witness)) == (size, note):
                    del self._unpublished[(ledger, witness)]
                self._published[(ledger, witness)] = (size, note)
