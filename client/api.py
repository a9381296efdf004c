"""The public client: :class:`Client`, reading a vledger cluster over CURVE or its gateway's HTTP.

Every record and proof is verified before it is returned, with keys the caller trusts, never
with keys the server sends: a checkpoint by its log signature and its witnesses'
cosignatures (docs/PROTOCOL.md 13.5) and by a consistency proof from the largest checkpoint
this client verified before (:mod:`vledger.client.state`); a record by its own checks
(section 4) and its inclusion proof in such a checkpoint (12.3); a run of records as a chain,
each page tied to the checkpoint by the inclusion proof of its last record; an observer's
tally by its Ed25519 signature (section 11). A failed check raises its error of
:mod:`vledger.node.errors` (the codes of PROTOCOL.md's table); a server that does not answer
raises NodeUnavailableError, a server's refusal RemoteError with its code.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..broker.keys import load_secret
from ..broker.signing import VerifyKey
from ..broker.tallies import Published
from ..config.cluster import load_cluster
from ..node.anchors import Anchors
from ..node.cosigning import distinct_witnesses, needed_witnesses, quorum_fresh_ms, stale_since, vouched_by
from ..node.epoch import EpochHistory, epoch_claim
from ..node.errors import (
    BadEpochError,
    BadGenesisError,
    BadPayloadError,
    FencedError,
    KeyMaterialError,
    NodeUnavailableError,
    NoteKeyError,
    NotFoundError,
    ProofError,
    RemoteError,
    RollbackError,
    SettingsError,
    StaleCheckpointError,
    UsageError,
    VledgerError,
)
from ..node.node_key_rotation import KeyHistory
from ..node.node_keys import parse_node_keys, proven_rotations
from ..node.note import VerifiedCheckpoint, VerifierKey, parse_verifier_key
from ..node.receipt import Receipt, ReceiptKeys, keys_from_genesis, verify_receipt, verify_witnessed
from ..node.record import Record
from ..node.rules.votes import check_electronic_id
from ..node.tally_body import STALE_AFTER_MS, Snapshot
from ..verifier.tally import (
    AGREE,
    MISMATCH,
    RECOSIGN_MS,
    STILL_COUNTING,
    Verdict,
    check_published,
    judge,
    observer_histories,
)
from .anchors_file import read_anchors
from .http import GatewayConnection
from .session import Reader, Session, open_session
from .state import Seen, TrustedState
from .voters import VoterCheck, names_voter
from .write import Write

log = logging.getLogger(__name__)
CHUNK = 256  # records yielded per inclusion proof by records(): one proof ties the chunk's chain
DEFAULT_TIMEOUT = 10.0
FOLLOW_POLL_SECONDS = (
    1.0  # over CURVE, how often follow() asks for a new checkpoint (one is signed at most each second)
)
ELECTION = "election"
STALE_AFTER = STALE_AFTER_MS / 1000  # seconds: `vledger tally --stale-after`'s default (PROTOCOL 11.4)


@dataclass(frozen=True, slots=True)
class ProvenRecord:
    """A record that passed its own checks and whose inclusion proof leads to ``checkpoint``."""

    record: Record
    checkpoint: VerifiedCheckpoint
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class WriteReceipt:
    """A write's receipt from the ledger's home: where the record stands (checked to be the
    record sent: same ledger and checksum)."""

    ledger: str
    height: int
    hash: bytes
    checksum: bytes
    duplicate: bool  # the same request was written before: this is that record


@dataclass(frozen=True, slots=True)
class ObserverCount:
    """One trusted observer's latest tally: its snapshot if the signature and body verified,
    else the failed check's error; neither when it published none."""

    observer: str
    snapshot: Snapshot | None
    problem: VledgerError | None


@dataclass(frozen=True, slots=True)
class TallyCheck:
    """Every trusted observer's latest signed tally of an election, checked, and the verdict.

    ``size`` is the verified checkpoint's (None: no checkpoint could be verified, then nobody
    is judged ahead). An observer whose body counts records that checkpoint does not hold is
    ``ahead`` (PROTOCOL 11.4): its figures cannot be checked, and the verdict is the others'
    among themselves: a mismatch, or still counting, never an agreement (``agreed`` None). Which
    observer is ahead depends on the checkpoint served: an older one validly signed makes an
    honest observer ahead, and the others' "agreement" was then one stolen key's alone."""

    ledger: str
    observers: tuple[ObserverCount, ...]
    verdict: Verdict  # agree (none ahead), mismatch or still_counting (verifier/tally.py), of the observers not ahead
    ahead: tuple[str, ...] = ()
    size: int | None = None

    @property
    def agreed(self) -> Snapshot | None:
        """The snapshot every observer signed alike, when they agree (none is ahead); else None."""
        if self.verdict.status != "agree":
            return None
        return next(o.snapshot for o in self.observers if o.snapshot is not None and o.observer not in self.ahead)

    @property
    def full(self) -> bool:
        """Whether every trusted observer signed the agreed snapshot (none is ahead)."""
        return self.verdict.status == "agree" and not self.ahead


def recounted(verdict: Verdict, served: object, trusted: Collection[str]) -> Verdict:
    """``verdict`` with the gateway's word (its verdict's ``recount``, PROTOCOL 11.4, 15.2) that a
    verifier's recount contradicts a ``trusted`` observer's tally: a mismatch naming them. That word
    is not signed: it can only take an agreement away, never make one (o21 F4: one observer alone
    agreed with itself on invented balances)."""
    said = served.get("recount") if isinstance(served, dict) else None
    if not isinstance(said, list):
        return verdict
    named = tuple(sorted({n for n in said if isinstance(n, str) and n in trusted}))
    if not named:
        return verdict
    return Verdict(MISMATCH, verdict.height, tuple(sorted({*verdict.differing, *named})), named)


@dataclass(frozen=True, slots=True)
class FollowEvent:
    """A newly verified checkpoint of the followed ledger, consistent with the one before, and
    the records it adds (each checked as the next of the chain, proven in it)."""

    checkpoint: VerifiedCheckpoint
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Trust:
    """What an HTTP client trusts: per ledger its genesis record's bytes (whose pinned
    checkpoint key is used, and which the gateway's genesis must equal), the link its genesis
    must hash to (trust anchors, 15.5: then the gateway's genesis bytes are used) or its checkpoint key;
    the witnesses' keys and how many must have cosigned; the observers' signing keys."""

    genesis: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    log_keys: Mapping[str, VerifierKey] = dataclasses.field(default_factory=dict)
    witnesses: tuple[VerifierKey, ...] = ()
    quorum: int = 0
    observers: Mapping[str, VerifyKey] = dataclasses.field(default_factory=dict)
    admin_key: VerifierKey | None = None  # the admin ledger's checkpoint key: follows rotated keys (16.6)
    # Per ledger the link of its genesis (trust anchors, 15.5): the server's genesis must hash to it.
    anchored: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    # The cluster's recosign_interval_ms (10.7): a head older than it (plus a grace) is stale (11.4).
    recosign_ms: int = RECOSIGN_MS


def observer_key(raw: bytes | str) -> VerifyKey:
    """An observer's Ed25519 public key from its 32 raw bytes or their hex (what ``keygen``
    prints and the gateway shows). Raises KeyMaterialError for anything else."""
    try:
        data = bytes.fromhex(raw) if isinstance(raw, str) else raw
        if len(data) != 32:
            raise ValueError(f"{len(data)} bytes, not 32")
        return VerifyKey(data)
    except (ValueError, KeyMaterialError) as e:
        raise KeyMaterialError(f"not an observer's Ed25519 public key: {e}") from None


def _verifier_key(key: VerifierKey | str) -> VerifierKey:
    return key if isinstance(key, VerifierKey) else parse_verifier_key(key)


class Client:
    """A verifying client of one cluster. Make one with :meth:`curve` or :meth:`http`; use it
    as a context manager (or call :meth:`close`). Not for several threads at once."""

    def __init__(
        self,
        reader: Reader,
        *,
        trust: Trust | None = None,
        quorum: int = 0,
        state: TrustedState | None = None,
        gateway: GatewayConnection | None = None,
        recosign_ms: int = RECOSIGN_MS,
        stale_after: float | None = STALE_AFTER,
    ) -> None:
        self.reader = reader
        self.trust = trust  # None: a CURVE session, which finds keys in its cluster's configuration
        self.quorum = quorum if trust is None else trust.quorum
        self.state = state or TrustedState()
        self.gateway = gateway
        self._keys: dict[str, ReceiptKeys] = {}
        # A head is judged stale (11.4) past the interval plus this grace (ms); None: not judged.
        self.recosign_ms = recosign_ms if trust is None else trust.recosign_ms
        self.stale_after_ms = None if stale_after is None else round(stale_after * 1000)

    @classmethod
    def curve(
        cls,
        cluster_file: Path,
        key_file: Path,
        *,
        node: str | None = None,
        passphrase: str | None = None,
        quorum: int = 0,
        state_file: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        stale_after: float | None = STALE_AFTER,
    ) -> Client:
        """A client over CURVE, as the caller whose secret key is ``key_file`` (an account the
        cluster's admin created), to ``node`` (default: each ledger's home node).

        Checkpoint keys are the ones each ledger's genesis pins (else its home's ``hello``);
        witness keys are the cluster file's key directory's; ``quorum`` of them must have
        cosigned each checkpoint. ``state_file`` keeps the largest checkpoint verified per
        ledger across runs. A checkpoint no majority of its witnesses vouched for within the
        cluster file's ``recosign_interval_ms`` plus ``stale_after`` seconds is stale (see
        :meth:`checkpoint`; None: never judged). Raises SettingsError for a bad cluster file or
        node name, KeyMaterialError (PassphraseError) for a key that cannot be read.
        """
        config = load_cluster(cluster_file)
        session = open_session(config, load_secret(key_file, passphrase), node, timeout)
        return cls(
            session,
            quorum=quorum,
            state=TrustedState(state_file),
            recosign_ms=config.replication.recosign_interval_ms,
            stale_after=stale_after,
        )

    @classmethod
    def http(
        cls,
        gateway_url: str,
        *,
        genesis: Mapping[str, bytes] | None = None,
        log_keys: Mapping[str, VerifierKey | str] | None = None,
        witnesses: Iterable[VerifierKey | str] = (),
        quorum: int = 0,
        observers: Mapping[str, VerifyKey | bytes | str] | None = None,
        admin_key: VerifierKey | str | None = None,
        anchors: Path | None = None,
        state_file: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        recosign_interval_ms: int | None = None,
        stale_after: float | None = STALE_AFTER,
    ) -> Client:
        """A client of a public gateway (``http://host:port/``); it needs no account.

        For each ledger it reads, give its genesis record's bytes (``genesis``: the pinned
        checkpoint key is read from it, and the gateway's genesis must be these bytes) or its
        checkpoint verifier key (``log_keys``, a note vkey string). ``witnesses`` are the
        witnesses' vkeys, ``quorum`` how many must have cosigned; ``observers`` the observers'
        Ed25519 public keys (hex) for :meth:`tally`; ``admin_key`` the admin ledger's checkpoint
        vkey (``<cluster>/admin``, its home's key): with it, a witness's or an observer's rotated
        keys that the gateway proves on the admin ledger count as its own (PROTOCOL 16.6).

        ``anchors`` is a trust-anchors file, as ``vledger anchors`` prints it (PROTOCOL 15.5):
        each ledger it names is read only if the gateway's genesis record hashes to the anchored
        link (its pinned checkpoint key and outside witnesses are then taken from those bytes,
        never from what the gateway states), its witness keys join ``witnesses``, its observer
        keys ``observers`` and its admin key, when it has one, is ``admin_key``.

        A checkpoint no majority of its witnesses vouched for within the cluster's
        ``recosign_interval_ms`` (the anchors' line, else the argument, else the default 300000;
        never the gateway's word) plus ``stale_after`` seconds is stale (see :meth:`checkpoint`;
        None: never judged). Raises UsageError for a URL that is not http(s) or a ledger, an
        observer, the admin key or the interval given both in the anchors and by argument,
        NoteKeyError or KeyMaterialError for a key that is not one, SettingsError [bad_settings]
        for anchors that cannot be read or parsed, or an interval that is not positive.
        """
        if recosign_interval_ms is not None and recosign_interval_ms <= 0:
            raise SettingsError(f"recosign_interval_ms must be positive, not {recosign_interval_ms}")
        trust = Trust(
            genesis=dict(genesis or {}),
            log_keys={ledger: _verifier_key(key) for ledger, key in (log_keys or {}).items()},
            witnesses=tuple(_verifier_key(key) for key in witnesses),
            quorum=quorum,
            observers={
                name: key if isinstance(key, VerifyKey) else observer_key(key)
                for name, key in (observers or {}).items()
            },
            admin_key=None if admin_key is None else _verifier_key(admin_key),
            recosign_ms=RECOSIGN_MS if recosign_interval_ms is None else recosign_interval_ms,
        )
        if anchors is not None:
            anchored = read_anchors(anchors)
            if recosign_interval_ms is not None and anchored.recosign_ms is not None:
                raise UsageError("given both in the trust anchors and as arguments: recosign_interval_ms")
            trust = _anchored(trust, anchored)
            if trust.quorum == 0 and trust.witnesses:
                majority = len(trust.witnesses) // 2 + 1
                if stale_after is None:
                    # The pages ask a majority of these (15.5); a quorum of 0 takes a checkpoint the home's
                    # key alone signed, so one key shows a forked view as verified (outsider23 F6).
                    log.warning(
                        "Client.http with anchors of %d witnesses and quorum 0: a checkpoint no witness "
                        "cosigned is accepted; pass quorum=%d (a majority of them) to require cosignatures",
                        len(trust.witnesses),
                        majority,
                    )
                else:
                    # With stale_after the head's age is judged over a majority of them (11.4): one
                    # none of them vouched for is refused as stale, which the warning denied (o18 F6).
                    log.warning(
                        "Client.http with anchors of %d witnesses and quorum 0: a checkpoint is taken without "
                        "its own cosignatures only while %d of the %d trusted witnesses vouched for the ledger "
                        "within recosign_interval_ms plus stale_after (else StaleCheckpointError); pass "
                        "quorum=%d to require cosignatures on every checkpoint",
                        len(trust.witnesses),
                        majority,
                        len(trust.witnesses),
                        majority,
                    )
        gateway = GatewayConnection(gateway_url, timeout=timeout)
        return cls(
            Reader(gateway), trust=trust, state=TrustedState(state_file), gateway=gateway, stale_after=stale_after
        )

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- checkpoints ---------------------------------------------------------------------------

    def keys(self, ledger: str) -> ReceiptKeys:
        """The keys ``ledger``'s checkpoints and receipts are checked with (see :meth:`curve`
        and :meth:`http`). Raises NoteKeyError when none is known, BadGenesisError when the
        genesis the server holds is not the one given."""
        keys = self._keys.get(ledger)
        if keys is not None:
            return keys
        if self.trust is None:
            keys = self.reader.checkpoint_keys(ledger, self.quorum)
        elif ledger in self.trust.genesis or ledger in self.trust.anchored:
            pinned = self.trust.genesis.get(ledger) or self._anchored_genesis(ledger)
            # The admin ledger's genesis pins no key (16.1): the trusted admin key signs its checkpoints.
            keys = keys_from_genesis(pinned, ledger, self.trust.witnesses, self.trust.quorum, self.trust.admin_key)
            keys = dataclasses.replace(keys, admin_key=self.trust.admin_key)
            self.reader.trust_genesis(ledger, pinned)
        elif ledger in self.trust.log_keys:
            keys = ReceiptKeys(
                self.trust.log_keys[ledger], self.trust.witnesses, self.trust.quorum, admin_key=self.trust.admin_key
            )
        else:
            raise NoteKeyError(f"no trusted key for ledger {ledger!r}: give its genesis record or its checkpoint key")
        self._keys[ledger] = keys
        return keys

    def _anchored_genesis(self, ledger: str) -> bytes:
        """The server's genesis record of ``ledger``, checked as a genesis (section 4) and
        required to hash to the anchored link (15.5) [bad_genesis]."""
        assert self.trust is not None
        record = self.reader.record(ledger, 0)
        if record.link != self.trust.anchored[ledger]:
            raise BadGenesisError(
                f"the server's genesis of {ledger!r} (link {record.link.hex()}) is not the anchored one",
                ledger=ledger,
                height=0,
            )
        return record.encode()

    def checkpoint(self, ledger: str) -> VerifiedCheckpoint:
        """The server's latest checkpoint of ``ledger`` with this client's quorum of cosignatures,
        verified with the trusted keys and against the largest one verified before.

        A checkpoint whose witnesses' ``fresh_ms`` (PROTOCOL 11.4: since when a majority of
        those that cosigned it vouch for it, by their newest lines) is more than the cluster's
        recosign_interval_ms plus ``stale_after`` before this computer's clock is **stale**:
        witnesses cosign a quiet ledger's checkpoint again every interval (10.7), so a live
        server's never gets that old, while a frozen or lying one keeps serving an old view. It
        raises StaleCheckpointError [stale_checkpoint], here and in every read that checks the
        latest checkpoint (:meth:`record`, :meth:`records`, the voter checks, :meth:`tally`,
        :meth:`follow`; not :meth:`receipt`, a proof valid at any age). One no witness
        cosigned (quorum 0) is not judged.

        Raises the note's error (NoteSignatureError, UnverifiedNoteError for a note no trusted
        key signed, QuorumError, WrongOriginError, CheckpointError), RollbackError for a
        checkpoint smaller than one verified before, ProofError when it does not extend it,
        StaleCheckpointError, RemoteError ``not_found`` when the server has none yet.
        """
        keys = self.keys(ledger)
        return self._accept(ledger, self.reader.checkpoint(ledger, keys))

    def _not_behind(self, ledger: str, verified: VerifiedCheckpoint) -> None:
        """Raise unless ``verified`` may follow the largest checkpoint seen for ``ledger`` (no
        proof is asked: :meth:`_accept` does): RollbackError if smaller; FencedError [fenced] if
        of an earlier epoch (10.9) than that one; BadEpochError if of its epoch with another home;
        ProofError if of its size with another root.

        The fencing rule needs no record here: a checkpoint of epoch ``e`` holds its handover
        record, so one of an earlier epoch not smaller than it is past that handover (10.9 rule
        2), whatever node serves it. Every read of a checkpoint (:meth:`checkpoint`,
        :meth:`record`, :meth:`records`, :meth:`receipt`, the voter checks, :meth:`follow`)
        passes here: a client that saw epoch ``e`` takes no older epoch's checkpoint, nor the
        records and receipts it would prove."""
        new, seen = verified.checkpoint, self.state.get(ledger)
        if seen is None:
            return
        epoch, home = epoch_claim(new)
        if epoch == seen.epoch and home != seen.home:
            raise BadEpochError(
                f"a checkpoint of epoch {epoch} by home {home}, where one by {seen.home} was verified", ledger=ledger
            )
        if new.size < seen.size:
            behind = ""
            if epoch < seen.epoch:  # a copy from before the handover, or a replaced home's past it
                behind = f" (it is of epoch {epoch}, that one of epoch {seen.epoch}, home {seen.home})"
            raise RollbackError(
                f"ledger {ledger!r}: the server's checkpoint has {new.size} records, "
                f"one of {seen.size} was verified before{behind}"
            )
        if epoch < seen.epoch:
            raise FencedError(
                f"a checkpoint of epoch {epoch} of {new.size} records, past the handover to epoch {seen.epoch} "
                f"(home {seen.home}; one of {seen.size} records was verified): a replaced home's",
                ledger=ledger,
            )
        if new.size == seen.size and new.root != seen.root:
            raise ProofError(
                f"ledger {ledger!r}: two checkpoints of size {new.size} with different roots (a forked log)"
            )

    def _accept(self, ledger: str, verified: VerifiedCheckpoint, *, current: bool = True) -> VerifiedCheckpoint:
        """``verified`` once it extends the largest checkpoint seen for ``ledger`` (and is of its
        epoch or a later one); remembered. With ``current`` (the server's latest, not a
        receipt's), then refused if it is stale (:meth:`_fresh`)."""
        new = verified.checkpoint
        seen = self.state.get(ledger)
        self._not_behind(ledger, verified)
        if seen is not None and 0 < seen.size < new.size:
            self.reader.consistency_proof(ledger, seen.size, seen.root, verified)
        self.state.put(ledger, Seen(new.size, new.root, *epoch_claim(new)))
        return self._fresh(ledger, verified) if current else verified

    def _fresh(self, ledger: str, verified: VerifiedCheckpoint) -> VerifiedCheckpoint:
        """``verified`` unless it is stale (:meth:`checkpoint`): StaleCheckpointError. It is kept
        as the largest seen all the same (it is validly signed and extends the one before).

        The trusted witnesses are the caller's and the outside witnesses the genesis lists
        (:attr:`ReceiptKeys.trusted`), as the gateway and the pages count them (11.4): counting
        the caller's alone, a live head that 2 of 5 cluster witnesses and both outside ones had
        just cosigned was refused as "an old view" (outsider o8 J4)."""
        if self.stale_after_ms is None:
            return verified
        keys = self.keys(ledger)
        trusted = distinct_witnesses(keys.trusted)
        needed = needed_witnesses(trusted, keys.quorum)
        vouched = self._vouched(ledger, verified, keys, needed)
        now_ms = time.time_ns() // 1_000_000
        fresh_ms = quorum_fresh_ms(vouched.values(), needed)
        if not stale_since(fresh_ms, now_ms, self.recosign_ms, self.stale_after_ms, needed):
            return verified
        window_ms = self.recosign_ms + self.stale_after_ms
        lately = sum(1 for at_ms in vouched.values() if now_ms - at_ms <= window_ms)
        last = "" if fresh_ms is None else f" ({needed} of them last did {(now_ms - fresh_ms) / 1000:.0f} s ago)"
        raise StaleCheckpointError(
            f"ledger {ledger!r}: only {lately} of the {trusted} trusted witnesses ({needed} needed) vouched for "
            f"the checkpoint of {verified.checkpoint.size} records within {window_ms / 1000:g} s{last}: the "
            "server shows an old view, or too many witnesses are down (PROTOCOL 11.4)"
        )

    def _vouched(self, ledger: str, verified: VerifiedCheckpoint, keys: ReceiptKeys, needed: int) -> dict[str, int]:
        """Each trusted witness's newest verified line (ms) on the view (15.4 step 8): on
        ``verified`` and, when fewer than ``needed`` witnesses cosigned it (a checkpoint just
        signed carries fewer lines for a moment), on the server's largest checkpoint it says
        ``needed`` cosigned, verified here and proven to be of the same tree (a consistency proof
        either way: a newer one may have been cosigned meanwhile); per witness the newer of its
        two lines. The second note's lines need no quorum of their own: a witness's line on any
        checkpoint of the tree says it vouched then for that prefix. A server that gives no such
        note (or one that does not verify) leaves what ``verified`` proves."""
        outside = keys.outside.keys if keys.outside is not None else ()
        found = vouched_by(verified, keys.witnesses, outside)
        if len(found) >= needed:
            return found
        try:  # the outside witnesses' own quorum is not asked of it: only their lines are counted
            other = self.reader.checkpoint(ledger, dataclasses.replace(keys, outside=None), cosigned=needed)
        except VledgerError:  # none that many witnesses cosigned, or a server that will not say
            return found
        older, newer = sorted((other, verified), key=lambda v: v.checkpoint.size)
        if older.checkpoint.size == newer.checkpoint.size:
            if older.checkpoint.root != newer.checkpoint.root:
                raise ProofError(
                    f"ledger {ledger!r}: two checkpoints of size {older.checkpoint.size} with different roots"
                )
        else:
            self.reader.consistency_proof(ledger, older.checkpoint.size, older.checkpoint.root, newer)
        for witness, at_ms in vouched_by(other, keys.witnesses, outside).items():
            found[witness] = max(at_ms, found.get(witness, 0))
        return found

    # --- records ---------------------------------------------------------------------------------

    def record(self, ledger: str, height: int) -> ProvenRecord:
        """The record at ``height``, checked (section 4's own checks under its genesis rules)
        and proven by inclusion in the latest verified checkpoint.

        Raises NotFoundError when that checkpoint does not cover ``height`` yet, the record's
        error (a RecordError) or ProofError when it does not verify, and what
        :meth:`checkpoint` raises.
        """
        proven = self.checkpoint(ledger)
        return self._prove(ledger, height, proven)

    def prove_inclusion(self, ledger: str, height: int, checkpoint: VerifiedCheckpoint) -> ProvenRecord:
        """The record at ``height`` proven in ``checkpoint`` (one this client verified): what
        :meth:`record` does against a checkpoint of the caller's choice. Raises the same."""
        return self._prove(ledger, height, checkpoint)

    def _prove(self, ledger: str, height: int, proven: VerifiedCheckpoint) -> ProvenRecord:
        size = proven.checkpoint.size
        if height >= size:
            raise NotFoundError(f"record {height} of {ledger!r} is not in the latest verified checkpoint (size {size})")
        record = self.reader.record(ledger, height)
        return ProvenRecord(record, proven, tuple(self.reader.inclusion_proof(ledger, record, proven)))

    def records(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """Records ``start`` to ``stop`` (default and at most: the latest verified checkpoint's
        size), each checked as the next of its chain; a chunk is yielded only once the
        inclusion proof of its last record in that checkpoint verified (its chain of links
        ties every record before it). Raises what :meth:`record` raises, at the first failure.
        """
        return self._records(ledger, start, stop, self.checkpoint(ledger))

    def _records(self, ledger: str, start: int, stop: int | None, proven: VerifiedCheckpoint) -> Iterator[Record]:
        end = proven.checkpoint.size if stop is None else min(stop, proven.checkpoint.size)
        if start >= end:
            return
        chunk: list[Record] = []
        for record in self.reader.records(ledger, start):
            chunk.append(record)
            if len(chunk) == CHUNK or record.height == end - 1:
                self.reader.inclusion_proof(ledger, record, proven)
                yield from chunk
                chunk.clear()
            if record.height == end - 1:
                return
        raise NodeUnavailableError(f"ledger {ledger!r}: the server's records end before height {end - 1}")

    def receipt(self, ledger: str, height: int, wait: float = DEFAULT_TIMEOUT) -> Receipt:
        """The receipt (PROTOCOL 14) of the record at ``height``: the record, a checkpoint that
        covers it with this client's quorum (waited for up to ``wait`` seconds) and the
        inclusion proof, all verified; it is checked offline later by ``vledger receipt verify``.
        Raises NotFoundError when no such checkpoint came in time, and what :meth:`record` raises.
        """
        keys = self.keys(ledger)
        receipt = self.reader.receipt(ledger, height, keys, time.monotonic() + wait)
        self._accept(ledger, verify_receipt(receipt, keys).checkpoint, current=False)
        return receipt

    def voter_records(self, election: str, electronic_id: str) -> VoterCheck:
        """The records of ``electronic_id`` in ``election`` up to the latest verified checkpoint
        (its registration, casts, uncasts, withdrawal), each checked and proven by inclusion, and
        the voter's standing as the election's rules state it (the other records are replayed,
        not each proven). ``records`` is empty for an id the election does not hold. Raises
        BadRequestError (bad_request, as the gateway's voters route) for an id not spelt as one
        (E- and 16 lower-case hex), before reading anything; else what :meth:`record` raises."""
        check_electronic_id(electronic_id)
        return self.reader.proven_voter_check(election, electronic_id, self.checkpoint(election))

    def voter_receipts(self, election: str, electronic_id: str) -> tuple[ProvenRecord, ...]:
        """The records the gateway lists for ``electronic_id`` (``/api/ledgers/L/voters/E``),
        each checked on its own, naming that id, and proven by inclusion in the latest verified
        checkpoint: a few kilobytes however large the election, where :meth:`voter_records`
        reads it all. What this cannot prove is that the list is complete (a later uncast left
        out), nor the voter's standing: :meth:`voter_records` replays the election for both.
        Records the checkpoint does not cover yet are left out. Over the gateway only (UsageError
        over CURVE); raises what :meth:`record` raises, BadPayloadError for a listed record that
        does not name the id."""
        if self.gateway is None:
            raise UsageError("a voter's receipts are read over a gateway; over CURVE use voter_records()")
        check_electronic_id(electronic_id)
        proven = self.checkpoint(election)
        found = []
        for data in self.gateway.voter(election, electronic_id):
            record = self.reader.checked_bytes(election, data)
            if not names_voter(record, electronic_id):
                raise BadPayloadError(
                    f"the gateway listed a record that does not name {electronic_id}",
                    ledger=election,
                    height=record.height,
                )
            if record.height < proven.checkpoint.size:
                found.append(ProvenRecord(record, proven, tuple(self.reader.inclusion_proof(election, record, proven))))
        return tuple(found)

    # --- tallies -------------------------------------------------------------------------------

    def tally(self, election: str) -> TallyCheck:
        """Each trusted observer's latest signed tally of ``election`` (section 11), its
        signature checked with the key this client holds (not the one the gateway shows), and
        whether they agree, against the ledger's checkpoint read after them (an observer whose
        body counts records it does not hold is ``ahead``, judged apart: :class:`TallyCheck`).
        Over the gateway only: raises UsageError for a CURVE client (read tallies with
        ``vledger tally``), RemoteError or NodeUnavailableError from the gateway, and what
        :meth:`checkpoint` raises for a checkpoint that fails its checks.
        """
        if self.gateway is None or self.trust is None:
            raise UsageError("tallies are read over a gateway: Client.http(..., observers=...)")
        shown = self.gateway.tally(election)
        histories = self._observer_histories(election)
        entries = {e.get("observer"): e for e in shown.get("observers") or [] if isinstance(e, dict)}
        counts = []
        for name, key in sorted(self.trust.observers.items()):
            entry = entries.get(name)
            if entry is None or not isinstance(entry.get("body"), str) or not isinstance(entry.get("signature"), str):
                counts.append(ObserverCount(name, None, None))
                continue
            snapshot = entry.get("snapshot")
            stated = snapshot.get("height") if isinstance(snapshot, dict) else None
            try:
                body, signature = bytes.fromhex(entry["body"]), bytes.fromhex(entry["signature"])
            except ValueError:
                raise NodeUnavailableError(f"the gateway's tally of {name!r} is not hex") from None
            published = Published("", name, stated if isinstance(stated, int) else -1, body, signature)
            checked = check_published(published, key, election, histories.get(name))
            counts.append(ObserverCount(name, checked.snapshot, checked.problem))
        # The checkpoint is read after the tallies: an honest observer counts only records a
        # signed checkpoint covers (10.7), so a body past it claims records nobody can check,
        # and left in the comparison one observer's key kept the count still counting for ever.
        size = self._verified_size(election)
        ahead = tuple(
            c.observer for c in counts if c.snapshot is not None and size is not None and c.snapshot.height + 1 > size
        )
        valid = {c.observer: c.snapshot for c in counts if c.snapshot is not None and c.observer not in ahead}
        if len({s.height for s in valid.values()}) > 1:
            verdict = Verdict(STILL_COUNTING)  # only the latest are served: no common height to compare at
        else:
            verdict = judge(valid, [name for name in sorted(self.trust.observers) if name not in ahead])
            if ahead and verdict.status == AGREE:
                verdict = Verdict(STILL_COUNTING, verdict.height)
        verdict = recounted(verdict, shown.get("verdict"), self.trust.observers)
        return TallyCheck(election, tuple(counts), verdict, ahead, size)

    def _verified_size(self, ledger: str) -> int | None:
        """The size of ``ledger``'s latest checkpoint, verified as :meth:`checkpoint` does; None
        when this client holds no key of it or the gateway has none yet (its other failures raise)."""
        try:
            return self.checkpoint(ledger).checkpoint.size
        except NoteKeyError:
            return None
        except RemoteError as e:
            if e.code == "not_found":
                return None
            raise

    def _observer_histories(self, ledger: str) -> dict[str, KeyHistory]:
        """The trusted observers' rotated keys (16.6), from the evidence the gateway's checkpoint
        of ``ledger`` carries, verified with the trusted admin key; none without one, or when
        the gateway shows none. Raises the evidence's check errors (a forged rotation)."""
        assert self.trust is not None and self.gateway is not None
        if self.trust.admin_key is None:
            return {}
        try:
            carried = self.gateway.get_json(f"/api/ledgers/{ledger}/checkpoint").get("node_keys")
        except RemoteError:
            return {}  # no checkpoint yet: no rotation proven
        if carried is None:
            return {}
        rotations = proven_rotations(parse_node_keys(carried), self.trust.admin_key)
        return observer_histories(self.trust.observers, rotations)

    # --- writes (CURVE) ---------------------------------------------------------------------------

    def put(self, ledger: str, write: Write, *, replicas: int = 0) -> WriteReceipt:
        """Write one record on ``ledger``'s home node (its proof of work done here), as this
        client's account; answered once ``replicas`` replicas hold it (0: once the home does).

        Raises UsageError over HTTP (the gateway is read-only) or for a write of another
        ledger type's domain, UnknownKindError for a kind the ledger's rules do not allow,
        RemoteError with the node's code for a refusal (a rule broken, ``forbidden``),
        NodeUnavailableError when the home does not answer: the write may then have been done;
        repeating it with the same request is safe only through the CLI's ``--request-id``.
        """
        if not isinstance(self.reader, Session):
            raise UsageError("writes go over CURVE: make the client with Client.curve(...)")
        answer = self.reader.put(ledger, write, replicas=replicas)
        return WriteReceipt(
            ledger,
            answer["height"],
            answer["hash"],
            bytes(answer.get("checksum") or b""),
            bool(answer.get("duplicate")),
        )

    def vote_register(self, election: str, voter_id: str) -> WriteReceipt:
        """Register ``voter_id`` in ``election`` (a registrar's write); see :meth:`put`."""
        return self.put(election, Write("register", {"voter_id": voter_id}, ELECTION))

    def vote_cast(self, election: str, electronic_id: str, choice: str) -> WriteReceipt:
        """Cast the vote of ``electronic_id`` for ``choice`` in ``election``; see :meth:`put`."""
        return self.put(election, Write("cast", {"electronic_id": electronic_id, "choice": choice}, ELECTION))

    # --- following -----------------------------------------------------------------------------

    def follow(self, ledger: str) -> Iterator[FollowEvent]:
        """Verified checkpoints of ``ledger`` as they come: first the current one (with no
        records), then each larger one (or one with other cosignatures) with the records it
        adds, each consistent with the one before. Over HTTP it wakes on the gateway's
        ``checkpoint`` events (a silent or broken stream is reopened); over CURVE it asks once
        a second. Runs until the caller stops iterating; raises what :meth:`checkpoint` and
        :meth:`records` raise.

        A ledger whose genesis pins a standby key may hand over to it (PROTOCOL 10.9): its
        records up to the first checkpoint are read once (their tree must be its) to know its
        epochs, and each checkpoint is held to the epochs of the records below it, the ones it
        adds included, before it or they are taken: a replaced home's past the handover raises
        FencedError [fenced] (an announced one is only not taken), one not signed as its epoch
        signs BadEpochError [bad_epoch]."""
        events = self._wakeups(ledger)
        keys = self.keys(ledger)
        first = self.reader.checkpoint(ledger, keys)
        self._not_behind(ledger, first)  # an earlier epoch's is refused before its records are read
        epochs = self.reader.epochs_under(ledger, first)
        last = self._accept(ledger, first)
        yield FollowEvent(last, ())
        for note in events:
            current: VerifiedCheckpoint | None = None
            # With the admin key, a witness's replaced keys count only as the node keys the
            # checkpoint answer proves allow (16.6), which an event's note does not carry: the
            # server is asked instead.
            if note is not None and keys.admin_key is None:
                try:
                    current = _in_epochs(epochs, verify_witnessed(note, keys))
                    self._not_behind(ledger, current)  # a late or replayed event: not taken, the server is asked
                except VledgerError as e:
                    log.info("follow %s: the event's checkpoint is not taken (%s)", ledger, e)
                    current = None
            if current is None:
                try:
                    current = _in_epochs(epochs, self.reader.checkpoint(ledger, keys))
                except RemoteError as e:  # none with the quorum on this server now: wait for the next
                    if e.code != "not_found":
                        raise
                    continue
            a, b = last.checkpoint, current.checkpoint
            if (b.size, current.witnesses) == (a.size, last.witnesses):
                # The same checkpoint, cosigned again or not (a quiet ledger, 10.7): its age is judged.
                self._fresh(ledger, current)
                continue
            records = tuple(self._records(ledger, a.size, b.size, current))
            if epochs is not None:  # the handover records it adds count for it, and for the next
                epochs = self.reader.held_epochs(ledger, _in_epochs_of(epochs.extended(records), current))
            last = self._accept(ledger, current)
            yield FollowEvent(current, records)

    def _wakeups(self, ledger: str) -> Iterator[bytes | None]:
        """When to look again: a checkpoint note the gateway announced for ``ledger``, or None
        (look by asking). The event stream is opened before the first checkpoint is read, so
        that nothing signed in between is missed."""
        if self.gateway is None:
            return _ticks()
        return _gateway_wakeups(self.gateway, ledger)


def _anchored(trust: Trust, anchors: Anchors) -> Trust:
    """``trust`` with the anchors' ledgers, witness keys, observer keys, admin key and recosign
    interval (when they state one). Raises
    UsageError for a ledger, an observer or the admin key it names already (two sources of
    trust: which would be meant?)."""
    given = sorted((set(trust.genesis) | set(trust.log_keys)) & set(anchors.ledgers))
    given += sorted(set(trust.observers) & set(anchors.observers))
    given += ["the admin key"] if trust.admin_key is not None and anchors.admin is not None else []
    if given:
        raise UsageError(f"given both in the trust anchors and as arguments: {', '.join(given)}")
    witnesses = trust.witnesses + tuple(k for k in anchors.witnesses.values() if k not in trust.witnesses)
    observers = {**trust.observers, **{n: VerifyKey(k.public_key) for n, k in anchors.observers.items()}}
    admin_key = trust.admin_key if anchors.admin is None else anchors.admin
    recosign_ms = trust.recosign_ms if anchors.recosign_ms is None else anchors.recosign_ms
    return dataclasses.replace(
        trust,
        anchored=dict(anchors.ledgers),
        witnesses=witnesses,
        observers=observers,
        admin_key=admin_key,
        recosign_ms=recosign_ms,
    )


def _in_epochs(epochs: EpochHistory | None, verified: VerifiedCheckpoint) -> VerifiedCheckpoint:
    """``verified`` unless ``epochs`` (those of the records held) refuse it (10.9): FencedError
    for an earlier epoch's past the next handover, BadEpochError. One of an epoch whose
    handover is not held yet passes: it is held to the epochs of the records it adds."""
    if epochs is not None:
        epochs.verify(verified.note.encode())
    return verified


def _in_epochs_of(epochs: EpochHistory, verified: VerifiedCheckpoint) -> EpochHistory:
    """``epochs`` (up to ``verified``'s size) once ``verified`` is of one of them: raises as
    :func:`_in_epochs`, and BadEpochError for an epoch its own records do not open."""
    _in_epochs(epochs, verified)
    claim = epoch_claim(verified.checkpoint)[0]
    if claim > epochs.current.number:
        raise BadEpochError(
            f"a checkpoint of epoch {claim}, past epoch {epochs.current.number}, the last its records open",
            ledger=epochs.ledger,
        )
    return epochs


def _ticks() -> Iterator[bytes | None]:
    while True:
        time.sleep(FOLLOW_POLL_SECONDS)
        yield None


def _gateway_wakeups(gateway: GatewayConnection, ledger: str) -> Iterator[bytes | None]:
    """The gateway's checkpoint events for ``ledger``; the stream is opened now, not at the first ``next``."""
    try:
        stream: Iterator[tuple[str, Any]] | None = gateway.open_events(2 * gateway.timeout)
    except NodeUnavailableError as e:
        log.info("follow %s: the event stream cannot be opened (%s); asking instead", ledger, e)
        stream = None
    return _announced(gateway, ledger, stream)


def _announced(
    gateway: GatewayConnection, ledger: str, stream: Iterator[tuple[str, Any]] | None
) -> Iterator[bytes | None]:
    # A stream busy with other events still wakes the follower this often to ask: the followed
    # checkpoint's age is judged then (a frozen view announces nothing of it, 11.4).
    looked = time.monotonic()
    while True:
        if stream is None:
            try:
                stream = gateway.open_events(2 * gateway.timeout)
            except NodeUnavailableError as e:
                log.info("follow %s: the event stream cannot be opened (%s); asking instead", ledger, e)
                time.sleep(FOLLOW_POLL_SECONDS)
                yield None
                continue
            yield None  # reopened: what was signed meanwhile is read by asking
        try:
            kind, data = next(stream)
        except NodeUnavailableError:
            stream = None
            continue
        if kind == "checkpoint" and isinstance(data, dict) and data.get("ledger") == ledger:
            note = data.get("note")
            looked = time.monotonic()
            yield note.encode("utf-8") if isinstance(note, str) else None
        elif time.monotonic() - looked > 2 * gateway.timeout:
            looked = time.monotonic()
            yield None
