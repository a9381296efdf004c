"""A home's start-up check: how far each ledger it homes went, asked of the cluster, not only of Redis.

A home put back from an older copy of its store (README's ``cp -a`` backup), while Redis lost
its data too, once signed a second tree of a size it had already signed (outsider 26 I6, I8:
a fork, and a revoked key writing again). Nothing trusted where the answer came from: the
cure is the transparency log's rule that a log never signs two trees. Before the node rebuilds
accounts or takes a write, :func:`start_check` asks every other node (replicas, standbys,
observers: the ``checkpoint`` command, PROTOCOL 6.1, over CURVE with this node's key) for its
newest checkpoint of each ledger this node homes, within one short overall deadline. A note
counts only when this home's key signed it (its store's key chain's, ``CheckpointKeys``, or any
of its checkpoint key files': a store older than a rotation knows only the key before it);
Redis's latest note and the witnesses' are read too.

- A note proves a larger tree than the store holds: the store is behind. :func:`heal` fetches
  the missing records from a node whose tree at that size has that root (its inclusion proof),
  checks their tree against the signed root before the store takes them (which checks each as
  the chain's next), and keeps a copy of the file as it was (``<store>.broken-<time>``). When it
  cannot, the ledger is refused with an alert naming ``vledger repair``; the admin ledger
  (whose accounts every node takes) stops the node with exit 65 instead.
- Redis's latest note contradicts a checkpoint this home signed and a quorum of the cluster's
  witnesses cosigned, which the store holds (a note of a fork, left in Redis by a home that was
  then repaired): that checkpoint replaces it and the note is kept as evidence (PROTOCOL 10.7).
- Nobody answers (a one-node cluster, or the whole cluster starting): the node starts on its
  store and Redis alone, with a warning; README's backup section says so.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..broker.client import Client, node_address
from ..broker.keys import KeyPair
from ..broker.replication import REDIS_ERRORS, ReplicationLedger
from ..broker.signing import witness_keys
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig
from ..node.checkpoint_log import EVIDENCE, SIGNED, KeptCheckpoint
from ..node.cosigning import GatheredCheckpoint, gather
from ..node.errors import (
    NodeUnavailableError,
    NoteError,
    RepairRefusedError,
    StoreContradictsCheckpointError,
    StoreDamagedError,
    VledgerError,
)
from ..node.note import VerifierKey, origin_for
from ..node.record import Record
from ..node.rules.admin import ADMIN_LEDGER
from ..node.store import ChainStore
from ..node.storefile import DB_NAME
from ..node.tree import Frontier, leaf_hash, verify_consistency
from ..node.witness import CheckpointKeys, SignedCheckpoint
from .store_sources import (
    Sources,
    default_quorum,
    epoch_log_keys,
    fetch,
    listening,
    log_keys_of,
    not_a_source,
    quorum_checkpoint,
)
from .witness import check_holds

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 10.0  # seconds a source may take per page once it proved the tree (it answered the check)


@dataclass(slots=True)
class StartCheck:
    """What the cluster said of the ledgers a home starts with."""

    asked: list[str]
    answered: list[str] = field(default_factory=list)
    notes: dict[str, list[bytes]] = field(default_factory=dict)  # ledger -> notes, the nodes' then Redis's
    redis_latest: dict[str, bytes] = field(default_factory=dict)  # ledger -> Redis's latest checkpoint note
    elapsed_ms: int = 0


def homed_ledgers(config: ClusterConfig, name: str, store: ChainStore, announced: Iterable[str]) -> list[str]:
    """The ledgers ``name`` homes by the cluster file: those its store holds or Redis announces,
    and the admin ledger if it is its home (a store put back from before the admin ledger)."""
    wanted = {*store.ledgers(), *announced}
    if config.home_of(ADMIN_LEDGER).name == name:
        wanted.add(ADMIN_LEDGER)
    return sorted(ledger for ledger in wanted if config.home_of(ledger).name == name)


def newest_notes(
    config: ClusterConfig, keys: KeyPair, node: str, ledgers: list[str], deadline: float
) -> list[bytes] | None:
    """``node``'s newest checkpoint note of each of ``ledgers`` it has one of; None when it did not answer."""
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        return None
    notes: list[bytes] = []
    # A port nobody holds refuses at once (a whole cluster starting: the others are not up yet),
    # where a CURVE request would wait out the deadline.
    if not listening(config.node(node).endpoint, min(timeout, 1.0)):
        return None
    try:
        address = node_address(config, node)
    except (OSError, VledgerError):  # no key file of it here: nobody to ask
        return None
    with Client(address, keys, timeout=timeout, max_message_bytes=config.ingest.max_message_bytes) as client:
        for ledger in ledgers:
            if time.monotonic() >= deadline:
                break
            try:
                answer = client.call("checkpoint", {"ledger": ledger})
            except NodeUnavailableError:
                return notes or None
            except VledgerError:  # not_found, or a refusal: it answered, with no note
                continue
            note = answer.get("checkpoint") if isinstance(answer, dict) else None
            if isinstance(note, bytes):
                notes.append(note)
    return notes


def ask_cluster(
    config: ClusterConfig,
    name: str,
    keys: KeyPair,
    ledgers: list[str],
    replication: ReplicationLedger,
    deadline_s: float,
) -> StartCheck:
    """Every other node's newest checkpoints of ``ledgers``, each node asked at once on a thread
    of its own, all within ``deadline_s`` seconds; then Redis's (a Redis down adds none)."""
    others = [n.name for n in config.nodes.values() if n.name != name and n.role != "verifier"]
    check = StartCheck(asked=others, notes={ledger: [] for ledger in ledgers})
    started = time.monotonic()
    if others and ledgers:
        deadline = started + deadline_s
        with ThreadPoolExecutor(max_workers=len(others), thread_name_prefix=f"{name}-start-check") as pool:
            answers = dict(
                zip(others, pool.map(lambda n: newest_notes(config, keys, n, ledgers, deadline), others), strict=True)
            )
        for node, notes in answers.items():
            if notes is None:
                continue
            check.answered.append(node)
            for note in notes:
                for ledger in ledgers:  # which ledger a note is of: its origin line says
                    if note.startswith(origin_for(config.name, ledger).encode() + b"\n"):
                        check.notes[ledger].append(note)
    try:
        # Of its own ledgers: {ledgers} may be of another type (PROTOCOL 10.5), and is no proof of any.
        check.redis_latest = replication.checkpoints(ledgers)
        for ledger in ledgers:
            check.notes[ledger].extend(replication.cosignatures(ledger).values())
    except REDIS_ERRORS as e:
        log.warning("start check: Redis unavailable (%s): only the other nodes' checkpoints count", e)
    for ledger, note in check.redis_latest.items():
        check.notes[ledger].append(note)
    check.elapsed_ms = int((time.monotonic() - started) * 1000)
    return check


def keep_evidence_copy(store: ChainStore, stamp: str) -> Path:
    """A copy of the store's file as it is now, beside it as ``<store>.broken-<stamp>`` (SQLite's
    online backup: the store is open), before a heal adds to it."""
    directory = store.directory
    kept = directory.with_name(f"{directory.name}.broken-{stamp}")
    kept.mkdir()
    with (
        contextlib.closing(sqlite3.connect(f"file:{directory / DB_NAME}?mode=ro", uri=True)) as source,
        contextlib.closing(sqlite3.connect(kept / DB_NAME)) as target,
    ):
        source.backup(target)
    return kept


def heal(
    store: ChainStore,
    sources: Sources,
    candidates: list[str],
    target: SignedCheckpoint,
    page: int,
    before_first: Callable[[], object] = lambda: None,
) -> str:
    """Bring ``target.ledger`` in ``store`` up to ``target`` (a checkpoint this home signed) from the
    first of ``candidates`` whose tree at its size has its root, the next one when a source fails
    on the way; the source's name. ``before_first`` runs once, before the store takes a record.

    Each page goes into the store as it comes, once it is proven part of the signed tree (the
    store's tree with it has the root a consistency proof from the source carries to the signed
    one; the last page makes that root itself), and the store takes each record only as the
    chain's next: the gap is never held in memory, and what a source that failed sent stays.
    ``sources.deadline`` bounds it all. Raises RepairRefusedError when there were candidates, each
    was asked and none's tree has the signed root (no node can supply it; the caller may take the
    note for a fork's), StoreContradictsCheckpointError when one had it but the store is still
    behind (its sources failed), time ran out first, or nobody answered the start check."""
    ledger = target.ledger
    reasons: list[str] = []
    maybe_held = not candidates  # some node may hold the tree: one proved it, or was not asked (in time)
    for node in candidates:
        try:
            sources.time_left(node, "get")
        except NodeUnavailableError as e:
            maybe_held = True
            reasons.append(e.message)
            continue
        not_one = not_a_source(sources, node, ledger, target.size, target.root)
        if not_one is not None:
            reasons.append(not_one)
            continue
        maybe_held = True
        try:
            before_first()
            _copy_proven(store, sources, node, target, page)
        except (VledgerError, OSError, sqlite3.Error) as e:
            reasons.append(f"{node}: {e.message if isinstance(e, VledgerError) else e}")
            continue
        return node
    why = "; ".join(reasons) or "no other node answered"
    if not maybe_held:
        raise RepairRefusedError(
            f"ledger {ledger!r}: no node holds the tree of the checkpoint of size {target.size} "
            f"(root {target.root.hex()[:16]}...): {why}"
        )
    raise StoreContradictsCheckpointError(
        f"healed to {store.size(ledger)} of the {target.size} records of the checkpoint this home signed: {why}",
        ledger=ledger,
        height=target.size - 1,
    )


def _copy_proven(store: ChainStore, sources: Sources, node: str, target: SignedCheckpoint, page: int) -> None:
    """``node``'s records from the store's size up to ``target``, page by page into the store, each
    page first proven part of ``target``'s tree (see :func:`heal`)."""
    ledger = target.ledger
    frontier = Frontier()
    with contextlib.suppress(VledgerError):  # a ledger the store does not hold yet starts empty
        frontier = store.frontier(ledger)
    records: list[Record] = []
    for data, record in fetch(sources, node, ledger, target.size, page, start=frontier.size):
        frontier.append(leaf_hash(data))
        records.append(record)
        if len(records) < page and frontier.size < target.size:
            continue
        if frontier.size == target.size:
            if frontier.root() != target.root:
                raise StoreContradictsCheckpointError(
                    f"the records it sent after this store's {frontier.size - len(records)} do not make the tree "
                    f"of the checkpoint of size {target.size} this home signed (its store's tail is not that tree's)",
                    ledger=ledger,
                    height=target.size - 1,
                )
        else:
            reply = sources.call(
                node, "proof.consistency", {"ledger": ledger, "old": frontier.size, "new": target.size}
            )
            proof = reply.get("proof")
            if not isinstance(proof, list) or not all(isinstance(h, bytes) for h in proof):
                raise RepairRefusedError(f"{node}: proof.consistency: no proof")
            verify_consistency(frontier.size, target.size, frontier.root(), target.root, proof)
        store.append_records(records)
        records = []


@dataclass(slots=True)
class StartOutcome:
    """What the start check did: ledgers healed (ledger -> source), refused (ledger -> why),
    Redis notes replaced (ledger -> the contradicted note), every note set aside as a fork's
    (ledger -> notes, Redis's replaced one among them), and the evidence copy if one was made."""

    healed: dict[str, str] = field(default_factory=dict)
    refused: dict[str, StoreContradictsCheckpointError] = field(default_factory=dict)
    replaced: dict[str, bytes] = field(default_factory=dict)
    set_aside: dict[str, list[bytes]] = field(default_factory=dict)
    kept: Path | None = None


def signed_above(keys: CheckpointKeys, ledger: str, notes: Iterable[bytes], held: int) -> list[SignedCheckpoint]:
    """The checkpoints among ``notes`` this home's key chain verifies of more than ``held`` records,
    one per tree, largest first."""
    found: dict[tuple[int, bytes], SignedCheckpoint] = {}
    for note in notes:
        try:
            checkpoint = keys.check(ledger, note)
        except NoteError:
            continue
        if checkpoint.size > held:
            found.setdefault((checkpoint.size, checkpoint.root), checkpoint)
    return sorted(found.values(), key=lambda c: c.size, reverse=True)


def start_check(
    config: ClusterConfig,
    name: str,
    keys: KeyPair | Sequence[KeyPair],
    store: ChainStore,
    own: CheckpointKeys,
    replication: ReplicationLedger,
    clock: float | None = None,
) -> tuple[StartCheck, StartOutcome]:
    """The home's start-up check (see the module's docstring), asked with ``keys`` (the node's
    CURVE key pairs, its newest generation first: :func:`~.node_key_rotation.start_keys`). Raises
    StoreDamagedError when the admin ledger is behind a checkpoint this home signed and cannot be
    healed."""
    try:
        announced = replication.ledgers()
    except REDIS_ERRORS:
        announced = {}
    ledgers = homed_ledgers(config, name, store, announced)
    # Its newest key generation first: before its key history is read, the node does not know
    # which one the others admit (PROTOCOL 16.6); the one before it only when nobody answered.
    candidates = [keys] if isinstance(keys, KeyPair) else list(keys)
    check = ask_cluster(config, name, candidates[0], ledgers, replication, config.ingest.start_check_ms / 1000)
    used = candidates[0]
    for older in candidates[1:]:
        if not ledgers or check.answered or not check.asked:
            break
        log.info("ingest node %s: no node answered its newest key %s: asked again with %s", name,
                 used.fingerprint, older.fingerprint)  # fmt: skip
        check = ask_cluster(config, name, older, ledgers, replication, config.ingest.start_check_ms / 1000)
        used = older
    if ledgers and check.asked and not check.answered:
        log.warning(
            "ingest node %s: no other node answered within %d ms: it starts on its store and Redis alone "
            "(a store put back from a backup is not checked against the cluster)",
            name,
            check.elapsed_ms,
        )
    elif ledgers:
        log.info(
            "ingest node %s: start check of %d ledgers: %d of %d nodes answered in %d ms",
            name,
            len(ledgers),
            len(check.answered),
            len(check.asked),
            check.elapsed_ms,
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock if clock is not None else time.time()))
    starting = _Starting(config, name, store, own, replication, check, StartOutcome(), stamp)
    sources = Sources(config, used, FETCH_TIMEOUT)
    # One budget for every heal of this start: a slow source (a page of one record each
    # FETCH_TIMEOUT) must not hold the node's start for ever; what came in time stays.
    sources.deadline = time.monotonic() + config.ingest.start_heal_ms / 1000
    try:
        for ledger in ledgers:
            starting.heal_ledger(ledger, sources)
    finally:
        sources.close()
    outcome = starting.outcome
    if ADMIN_LEDGER in outcome.refused:
        raise StoreDamagedError(f"{name}: {outcome.refused[ADMIN_LEDGER].message}")
    starting.replace_forked_notes()
    return check, outcome


def _only(key: VerifierKey) -> Callable[[str], VerifierKey | None]:
    """``key`` as every ledger's checkpoint key (CheckpointKeys' ``key_of``)."""
    return lambda _ledger: key


@dataclass(slots=True)
class _Starting:
    """What one start check works with, and what it did (``outcome``)."""

    config: ClusterConfig
    name: str
    store: ChainStore
    own: CheckpointKeys
    replication: ReplicationLedger
    check: StartCheck
    outcome: StartOutcome
    stamp: str  # the evidence copy's name's time

    def keep_copy(self) -> None:
        if self.outcome.kept is None:
            self.outcome.kept = keep_evidence_copy(self.store, self.stamp)

    def heal_ledger(self, ledger: str, sources: Sources) -> None:
        """Heal ``ledger`` up to the largest checkpoint its home signed that is not a fork's (set
        aside: :meth:`set_aside_fork`), from the nodes that answered (followers first), or refuse it.
        Again once healed: a rotation among the records it took names the key of larger notes."""
        while ledger not in self.outcome.refused:
            held = self.store.size(ledger)
            self.heal_once(ledger, sources)
            if self.store.size(ledger) <= held:
                return

    def targets(self, ledger: str) -> list[SignedCheckpoint]:
        """The checkpoints above the store the start check heals toward, one per tree, largest
        first: those its key chain verifies and those any of this home's checkpoint key files (its
        node key's, each rotated key's) verifies; not a standby's (10.9: a home replaced past a
        handover its store lacks does not heal toward the new epoch). A store put back from
        before a rotation knows only the key before it, while the cluster went on under the new
        one (13.8): with its chain's keys alone, the home took the cluster's newer checkpoints for
        no proof and forked."""
        held = self.store.size(ledger)
        notes = self.check.notes[ledger]
        found = signed_above(self.own, ledger, notes, held)
        with contextlib.suppress(RepairRefusedError):  # no key file of it here: its chain's keys only
            for key in log_keys_of(self.config, ledger, self.name):
                found += signed_above(CheckpointKeys(self.config.name, _only(key)), ledger, notes, held)
        trees: dict[tuple[int, bytes], SignedCheckpoint] = {}
        for target in found:
            trees.setdefault((target.size, target.root), target)
        return sorted(trees.values(), key=lambda c: c.size, reverse=True)

    def heal_once(self, ledger: str, sources: Sources) -> None:
        candidates = sorted(self.check.answered, key=lambda n: self.config.node(n).role not in FOLLOWER_ROLES)
        for target in self.targets(ledger):
            held = self.store.size(ledger)
            if target.size <= held:
                return
            log.warning(
                "ingest node %s: its store holds %d records of %s, but a checkpoint of size %d signed with its "
                "key is in the cluster: its store is behind (put back from a copy?), healed before it serves",
                self.name,
                held,
                ledger,
                target.size,
            )
            try:
                source = heal(self.store, sources, candidates, target, self.config.ingest.page_size, self.keep_copy)
            except RepairRefusedError as e:
                if self.set_aside_fork(target):
                    continue  # a fork's note: heal toward the next one, if any
                self.refuse(target, held, e)
                return
            except (VledgerError, OSError, sqlite3.Error) as e:
                self.refuse(target, held, e)
                return
            self.outcome.healed[ledger] = source
            log.warning(
                "ingest node %s: %s healed to %d records from %s (its store as it was is kept at %s)",
                self.name,
                ledger,
                target.size,
                source,
                self.outcome.kept,
            )
            return

    def refuse(self, target: SignedCheckpoint, held: int, error: VledgerError | OSError | sqlite3.Error) -> None:
        why = error.message if isinstance(error, VledgerError) else str(error)
        self.outcome.refused[target.ledger] = StoreContradictsCheckpointError(
            f"the store held {held} records, but a checkpoint of size {target.size} signed with this "
            f"home's key is in the cluster, and it could not be healed ({why}): rebuild it with "
            f"`vledger repair {self.name} --restart`",
            ledger=target.ledger,
            height=target.size - 1,
        )

    def held_quorum_checkpoint(self, ledger: str) -> GatheredCheckpoint | None:
        """The largest checkpoint of ``ledger`` this home signed that a majority of the cluster's
        witnesses cosigned, when the store holds it (its tree at that size has that root); else None."""
        witnesses = witness_keys(self.config)
        if not witnesses:
            return None
        try:
            proven = quorum_checkpoint(
                ledger,
                self.check.notes[ledger],
                epoch_log_keys(self.config, ledger, self.name),
                origin_for(self.config.name, ledger),
                witnesses,
                default_quorum(len(witnesses)),
            )
            kept = KeptCheckpoint(ledger, SIGNED, proven.checkpoint.size, proven.checkpoint.root, b"", 0)
            check_holds(self.store, kept)
        except VledgerError:
            return None
        return proven

    def cosigned_by_any(self, target: SignedCheckpoint) -> bool:
        """Whether any of the cluster's witnesses cosigned ``target`` in the notes the start gathered."""
        ledger = target.ledger
        origin = origin_for(self.config.name, ledger)
        witnesses = witness_keys(self.config).values()
        with contextlib.suppress(VledgerError):
            for key in epoch_log_keys(self.config, ledger, self.name):
                for g in gather(self.check.notes[ledger], key, origin, witnesses):
                    if g.witnesses and (g.checkpoint.size, g.checkpoint.root) == (target.size, target.root):
                        return True
        return False

    def set_aside_fork(self, target: SignedCheckpoint) -> bool:
        """Whether ``target``, a checkpoint this home signed that no node's tree has, is a fork's
        note (r13 #6): no witness cosigned it and the store holds a smaller checkpoint a quorum did,
        as a home repaired after it signed a fork further than the cluster went finds. It is then
        kept as evidence, and replaced by that checkpoint when it is Redis's latest note; else
        (False) nothing is done."""
        ledger = target.ledger
        proven = self.held_quorum_checkpoint(ledger)
        if proven is None or proven.checkpoint.size >= target.size or self.cosigned_by_any(target):
            return False
        self.store.checkpoints.keep(ledger, EVIDENCE, target.size, target.root, target.note)
        self.outcome.set_aside.setdefault(ledger, []).append(target.note)
        if self.check.redis_latest.get(ledger) == target.note:
            self.put_in_redis(ledger, target.note, proven)
        log.warning(
            "ingest node %s: the checkpoint of %s of size %d signed with its key is a fork's (no node holds its "
            "tree, no witness cosigned it, and its store holds the checkpoint of size %d %d witnesses cosigned): "
            "kept as evidence",
            self.name,
            ledger,
            target.size,
            proven.checkpoint.size,
            len(proven.witnesses),
        )
        return True

    def put_in_redis(self, ledger: str, forked: bytes, proven: GatheredCheckpoint) -> bool:
        """Set ``proven``'s note as Redis's latest of ``ledger`` in place of the fork's ``forked``;
        False when Redis is unavailable (logged)."""
        try:
            self.replication.set_checkpoints({ledger: proven.note})
        except REDIS_ERRORS as e:
            log.warning(
                "ingest node %s: Redis unavailable (%s): its forked note of %s stays there", self.name, e, ledger
            )
            return False
        self.outcome.replaced[ledger] = forked
        if forked not in self.outcome.set_aside.setdefault(ledger, []):
            self.outcome.set_aside[ledger].append(forked)
        return True

    def replace_forked_notes(self) -> None:
        """Replace Redis's latest note of a ledger when a checkpoint this home signed and a quorum of
        the cluster's witnesses cosigned, held by the store, contradicts it (PROTOCOL 10.7): a note
        of a fork, which else would keep the repaired home refusing the ledger for ever (outsider 26 I6)."""
        for ledger, note in self.check.redis_latest.items():
            if ledger in self.outcome.refused or ledger in self.outcome.replaced:
                continue
            try:
                latest = self.own.check(ledger, note)
            except NoteError:
                continue  # proves nothing: the outbox's next checkpoint overwrites it
            try:
                check_holds(self.store, KeptCheckpoint(ledger, SIGNED, latest.size, latest.root, note, 0))
                continue  # the store holds it: no contradiction
            except StoreContradictsCheckpointError:
                pass
            proven = self.held_quorum_checkpoint(ledger)
            if proven is None:
                continue  # no proof the note is the fork's: the store stays refused
            if proven.checkpoint.size < latest.size:
                continue  # a larger note than the proven one: the store is behind it, not past a fork
            self.store.checkpoints.keep(ledger, EVIDENCE, latest.size, latest.root, note)
            if not self.put_in_redis(ledger, note, proven):
                continue
            log.warning(
                "ingest node %s: Redis's latest checkpoint of %s (size %d) contradicts the checkpoint of size %d "
                "%d witnesses cosigned, which its store holds: replaced by it, the other note kept as evidence",
                self.name,
                ledger,
                latest.size,
                proven.checkpoint.size,
                len(proven.witnesses),
            )


def published_without(notes: Mapping[str, list[bytes]], set_aside: Mapping[str, list[bytes]]) -> dict[str, list[bytes]]:
    """``notes`` without each ledger's notes the start check set aside as a fork's."""
    return {ledger: [n for n in published if n not in set_aside.get(ledger, ())] for ledger, published in notes.items()}
