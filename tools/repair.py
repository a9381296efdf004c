"""``vledger repair NODE``: rebuild a node's store only from copies a quorum of witnesses vouches for.

Issue 11's attack: the old manual repair ("move the store aside, restart") let a replica copy
whatever its sources served, so a home whose tail was rewritten spread the forgery. This
command trusts no source and no Redis entry; it trusts the cluster's key directory:

1. **NODE is stopped.** A node that answers ``hello`` is refused: moving a store from under a
   running process loses what it writes next. There is no override (``--restart`` stops and
   starts it through supervisord instead).
2. **The checkpoint.** Per ledger NODE holds (a replica or observer: every ledger Redis names;
   an ingest node: those it is home to; and every ledger its old store holds), the notes are
   gathered from Redis (``vledger:{<ledger>}:checkpoint``, ``vledger:{<ledger>}:cosig``) and from every
   other node's ``checkpoint`` command; :func:`vledger.node.cosigning.gather` keeps the log
   signatures that verify with the home's ``<home>.sign.pub`` and the cosignatures that verify
   with the witnesses' ``<node>.sign.pub``. The largest checkpoint with at least ``quorum``
   cosignatures (default: a majority of the cluster's witnesses) is the target; none refuses.
3. **The source.** The first other node whose tree at that size has that root, proven by the
   inclusion proof of its record ``size - 1`` (``get`` and ``proof.inclusion``): a home whose
   tail was rewritten fails here and is never copied from.
   **The outside witnesses.** When the genesis (proven by its inclusion in that checkpoint's
   tree) lists outside witnesses (PROTOCOL 13.9), the largest checkpoint a quorum of them
   cosigned must be that checkpoint or be tied to it by a consistency proof from some node; else
   the repair refuses (tools/outside_quorum.py).
4. **The copy.** Records ``0 .. size - 1`` by ``range`` pages into a fresh store in a
   directory beside NODE's, each verified as the chain's next (section 4), their Merkle root
   checked against the checkpoint; the genesis must pin the home's key (or none). Any failure
   refuses and removes only that fresh directory. A repair holds ``<store>.repair.lock`` (a
   second repair of NODE is refused) and first removes the fresh directories an interrupted
   one left (a kill runs no cleanup), saying so.
5. **The swap.** Only then is the old store renamed ``<store>.broken-<UTC time>`` (kept as
   evidence, never deleted) and the new one put in its place. The old store's evidence rows,
   and its signed or cosigned checkpoints the new copy proves, are carried over; so are its
   blobs whose content matches their SHA-256 name.

NODE then catches up past the checkpoint as every follower does, checked against checkpoints.
A store that already holds every target checkpoint, and the latest checkpoint it keeps as
signed and as cosigned (a forged row its records contradict makes its node refuse the ledger
at start: that store is rebuilt), is left alone unless ``--force``, or unless its node refused
it at its last start (its ``store_damaged`` alert is open in its journal: a tree row, a right
edge, a head ... that the records alone do not show; with no journal that opens, an alert open
in Redis counts only if the node's start check refuses the store again now).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..broker.alert_journal import ALERT_JOURNAL, carry_journal, journal_open_alert
from ..broker.client import Client
from ..broker.keys import KeyPair, generation_name, key_paths, newest_generation
from ..broker.node_lock import node_lock
from ..broker.redis_server import connect
from ..broker.replication import REDIS_ERRORS, STORE_DAMAGED, ReplicationLedger, redis_failed
from ..broker.signing import witness_keys
from ..client.session import node_address
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, load_cluster
from ..config.settings import PROTOCOL_LIMITS
from ..ingest.runtime import start_refusal, store_options
from ..ingest.store_sources import (
    ANSWER_TIMEOUT,
    Sources,
    choose_source,
    default_quorum,
    epoch_log_keys,
    fetch,
    listening,
    log_key_of,
    quorum_checkpoint,
    stored_ledgers,
    verified_by_any,
)
from ..node.blobs import BlobStore
from ..node.checkpoint_log import COSIGNED, EVIDENCE, SIGNED
from ..node.cosigning import GatheredCheckpoint
from ..node.epoch import EpochHistory
from ..node.errors import (
    NodeRunningError,
    ProofError,
    RepairRefusedError,
    SettingsError,
    SupervisorError,
    VledgerError,
)
from ..node.json_values import error_json
from ..node.note import VerifierKey, origin_for
from ..node.record import Record
from ..node.store import ChainStore
from ..node.storefile import DB_NAME
from ..node.tree import Frontier, leaf_hash
from ..node.verify import ChainVerifier
from ..node.witness import cosignatures_in_force, pinned_key, witness_keys_in_force
from ..verifier.node_keys import witness_histories_now
from .args import config_file
from .client_output import print_json
from .client_session import load_client_keys
from .outside_quorum import outside_notes, prove_extends, proven_outside, witnessed
from .paths import input_file
from .progress import Progress
from .supervise import Supervisor, layout_for

REDIS_TIMEOUT = 2.0
APPEND_BATCH = 512  # records handed to the new store at once (they share group commits)


@dataclass(frozen=True, slots=True)
class LedgerRepair:
    """What one ledger was rebuilt from: the quorum checkpoint and the source that matched it."""

    ledger: str
    home: str
    size: int
    root: bytes
    witnesses: tuple[str, ...]
    source: str
    note: bytes
    # The outside witnesses the genesis lists (PROTOCOL 13.9): how many must cosign (0: it lists
    # none), and the largest checkpoint that many cosigned, proven consistent with this one.
    outside_quorum: int = 0
    outside: GatheredCheckpoint | None = None

    def outside_json(self) -> dict[str, Any] | None:
        if not self.outside_quorum:
            return None
        held = self.outside
        return {
            "quorum": self.outside_quorum,
            "size": None if held is None else held.checkpoint.size,
            "root": None if held is None else held.checkpoint.root.hex(),
            "witnesses": [] if held is None else list(held.witnesses),
        }


@dataclass(slots=True)
class RepairResult:
    node: str
    store: Path
    kept: Path | None  # where the old store went; None when there was none
    quorum: int
    ledgers: list[LedgerRepair] = field(default_factory=list)
    carried: int = 0  # checkpoint rows carried over from the old store
    blobs: int = 0  # blobs carried over
    restarted: bool = False
    cleared: list[Path] = field(default_factory=list)  # scratch copies interrupted repairs left, removed
    # Why a store that holds every checkpoint was rebuilt without --force: its node refused it at start.
    refused: str | None = None
    said: list[str] = field(default_factory=list)  # what Redis claimed that the repair did not take

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "node": self.node,
            "store": str(self.store),
            "kept": None if self.kept is None else str(self.kept),
            "quorum": self.quorum,
            "ledgers": [
                {
                    "ledger": r.ledger,
                    "home": r.home,
                    "size": r.size,
                    "root": r.root.hex(),
                    "witnesses": list(r.witnesses),
                    "source": r.source,
                    "outside": r.outside_json(),
                }
                for r in self.ledgers
            ],
            "checkpoints_carried": self.carried,
            "blobs_carried": self.blobs,
            "restarted": self.restarted,
            "cleared": [str(path) for path in self.cleared],
            "refused_at_start": self.refused,
            "notes": list(self.said),
        }


# --- is NODE stopped ----------------------------------------------------------------------------------


def answers(config: ClusterConfig, name: str, keys: KeyPair, timeout: float = ANSWER_TIMEOUT) -> bool:
    """Whether node ``name`` answers ``hello`` within ``timeout`` seconds."""
    with Client(node_address(config, name), keys, timeout=timeout) as client:
        try:
            client.hello()
        except VledgerError:  # no answer (node_unavailable), or a refusal: either way not serving us
            return False
    return True


# --- which ledgers, which checkpoint -------------------------------------------------------------------


def ledgers_of(
    config: ClusterConfig, name: str, announced: Mapping[str, str], stored: set[str], said: list[str] | None = None
) -> dict[str, str]:
    """ledger -> its home for every ledger NODE should hold: the configuration's, or its standby
    when Redis announces that one (after a handover, PROTOCOL 10.9; the checkpoint a quorum
    cosigned and the records under it decide the epoch: epoch_log_keys takes both keys). Any
    ingest node's Redis user may name any node there (outsider43 M1: re-homed to ingest-2, the
    repair checked the ledger's checkpoints with ingest-2's key and refused it, "no checkpoint
    cosigned by a quorum"): a home Redis names that is neither is not taken, and ``said`` gets
    a sentence saying so. An ingest node holds the ledgers it is home or standby of."""
    role = config.node(name).role
    homes: dict[str, str] = {}
    for ledger in sorted({*stored, *announced}):
        configured = config.home_of(ledger).name
        standby = config.standby_of(ledger)
        claimed = announced.get(ledger) or ""
        homes[ledger] = claimed if claimed and standby is not None and claimed == standby.name else configured
        if claimed and claimed not in (configured, standby and standby.name) and said is not None:
            said.append(
                f"{ledger}: Redis (vledger:{{ledgers}}) names {claimed} its home, which the cluster file makes "
                f"neither its home nor its standby: taken from the cluster file, {configured} (any ingest node's "
                "Redis password may write that hash; its home puts its field back and raises home_rewritten)"
            )
    wanted = set(stored)
    for ledger in announced:
        standby = config.standby_of(ledger)
        if role in FOLLOWER_ROLES or name in (config.home_of(ledger).name, standby and standby.name):
            wanted.add(ledger)
    return {ledger: homes[ledger] for ledger in sorted(wanted)}


# --- the source and the copy ----------------------------------------------------------------------------


def copy_ledger(
    store: ChainStore,
    records: Iterator[tuple[bytes, Record]],
    target: LedgerRepair,
    log_key: VerifierKey,
    cluster: str,
    progress: Progress,
) -> None:
    """Verify and append ``records`` to ``store``; RepairRefusedError (nothing kept) unless each is the
    chain's next, their tree root is the checkpoint's and the genesis pins the home's key (or none;
    for a ledger with a standby, as either pinned key, and the checkpoint must then be of its
    epoch by the records fetched: not a replaced home's past the handover, PROTOCOL 10.9)."""
    verifier = ChainVerifier(target.ledger, PROTOCOL_LIMITS)
    frontier = Frontier()
    batch: list[Record] = []
    epochs: EpochHistory | None = None
    for data, record in records:
        if record.ledger != target.ledger or record.height != verifier.next_height:
            raise RepairRefusedError(
                f"{target.source}: sent {record.ledger!r} height {record.height} where {target.ledger!r} "
                f"height {verifier.next_height} was due"
            )
        try:
            verifier.feed(record)
        except VledgerError as e:
            raise RepairRefusedError(
                f"{target.source}: record {record.height} of {target.ledger!r} does not verify: {e.code}: {e.message}"
            ) from None
        if record.height == 0 and verifier.rules is not None:
            with contextlib.suppress(VledgerError):  # keys of another cluster: the check below says so
                epochs = EpochHistory(cluster, record, verifier.rules)
            epochs = epochs if epochs is not None and epochs.standby_key is not None else None
        if epochs is not None:
            epochs.feed([record])
        elif record.height == 0:
            pinned = pinned_key(target.ledger, verifier.rules, cluster) if verifier.rules is not None else None
            if pinned is not None and pinned != log_key:
                raise RepairRefusedError(
                    f"{target.source}: the genesis of {target.ledger!r} pins another checkpoint key than "
                    f"{target.home}'s in the key directory"
                )
        frontier.append(leaf_hash(data))
        batch.append(record)
        if len(batch) >= APPEND_BATCH:
            store.append_records(batch)
            progress.advance(len(batch))
            batch = []
    if frontier.size != target.size or frontier.root() != target.root:
        raise RepairRefusedError(
            f"{target.source}: the records of {target.ledger!r} it sent do not make the checkpoint's tree "
            f"(size {frontier.size} of {target.size}, or another root)"
        )
    if epochs is not None:
        try:
            epochs.verify(target.note, holds=True)  # signed by its epoch's pinned key, not fenced, opened
        except VledgerError as e:
            raise RepairRefusedError(
                f"the checkpoint of {target.ledger!r} at {target.size} is not of its epoch by the records"
                f" {target.source} sent: {e.code}: {e.message}"
            ) from None
    store.append_records(batch)
    progress.advance(len(batch))
    if store.root(target.ledger, target.size) != target.root:
        raise RepairRefusedError(f"the new store's tree of {target.ledger!r} is not the checkpoint's")


# --- what the old store holds -------------------------------------------------------------------------


def already_holds(store: Path, targets: list[LedgerRepair]) -> bool:
    """Whether the store's records ``0 .. size - 1`` of every ledger make each target's root, and
    the latest checkpoint of each ledger it keeps as signed and as cosigned (the ones a node
    checks its store against when it starts, ingest/witness.py's self_check) too (read only).

    A store whose records are whole but which keeps a signed or cosigned row they contradict
    (a forged or corrupted row) makes its node refuse the ledger at start
    [store_contradicts_checkpoint]: it is no store to keep, and a rebuild carries over only the
    rows the new copy proves."""
    path = store / DB_NAME
    if not path.is_file():
        return False
    expected: dict[str, dict[int, bytes]] = {}  # ledger -> size -> the root the store must make there
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            wanted = [(t.ledger, t.size, t.root) for t in targets] + _latest_own_checkpoints(db)
            for ledger, size, root in wanted:
                if expected.setdefault(ledger, {}).setdefault(size, root) != root:
                    return False  # two roots at one size: the store makes at most one of them
            for ledger, roots in expected.items():
                if not _makes_roots(db, ledger, roots):
                    return False
    except sqlite3.Error:
        return False
    return True


def refused_at_start(store: Path, node: str, replication: ReplicationLedger, **options: Any) -> str | None:
    """Why ``node`` refused ``store`` at its last start, if it did and no start opened it since:
    the detail of its ``store_damaged`` alert (ingest/runtime.py open_node_store raises it, an
    open resolves it), held open by its journal beside the store (which outlives a Redis wipe).
    An open checks more than :func:`already_holds` reads (the tree's rows and right edge, the
    head, what lies past the edge, column types): a store its node refuses is damaged, whatever
    its records make (outsider o11: "nothing to repair" for a right edge the node had refused).

    A journal that reads and holds none open is the answer, whatever Redis holds: Redis keeps
    the alert open when it was away as the node started, and the node's Redis user may write
    it (review18 1: a sound home rebuilt, its records past the quorum checkpoint cut). With no
    journal that opens, Redis's alert only says to look again: the node's start check is run
    on the store now (with ``options``, its node's, :func:`store_options`), and its failure,
    if any, is the answer."""
    key = f"{node}||{STORE_DAMAGED}"
    alert = journal_open_alert(store / ALERT_JOURNAL, key)
    if alert is False:
        return None
    if alert is None:
        try:
            mine = ReplicationLedger(replication.client, replication.namespace, raisers=[node])
            found = mine.open_alerts().get(key)
        except REDIS_ERRORS:
            found = None
        if found is None or found.get("raised_by") != node:
            return None
        return start_refusal(node, store, **options)
    return str(alert.get("detail", "")) or STORE_DAMAGED


def _latest_own_checkpoints(db: sqlite3.Connection) -> list[tuple[str, int, bytes]]:
    """(ledger, size, root) of the largest signed and the largest cosigned row of each ledger
    (none in a store from before checkpoints)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'").fetchone() is None:
        return []
    rows = db.execute(
        "SELECT ledger, kind, size, root FROM checkpoints WHERE kind IN (?, ?) ORDER BY size DESC, at_ms DESC",
        (SIGNED, COSIGNED),
    )
    latest: dict[tuple[str, str], tuple[str, int, bytes]] = {}
    for ledger, kind, size, root in rows:
        latest.setdefault((ledger, kind), (ledger, int(size), bytes(root)))
    return list(latest.values())


def _makes_roots(db: sqlite3.Connection, ledger: str, roots: Mapping[int, bytes]) -> bool:
    """Whether ``ledger``'s records in the store, from height 0 without a gap, make each root of
    ``roots`` (size -> root) at its size."""
    frontier = Frontier()
    rows = db.execute(
        "SELECT height, data FROM records WHERE ledger = ? AND height < ? ORDER BY height", (ledger, max(roots))
    )
    for height, data in rows:
        if height != frontier.size:
            return False
        frontier.append(leaf_hash(bytes(data)))
        if frontier.size in roots and frontier.root() != roots[frontier.size]:
            return False
    return frontier.size >= max(roots)


def carry_checkpoints(old: Path, new: ChainStore, keys: Mapping[str, Sequence[VerifierKey]], cluster: str) -> int:
    """Copy the old store's evidence rows, and its signed or cosigned rows the new copy proves, into
    ``new``: each note must verify with one of its ledger's checkpoint keys (after a handover,
    10.9, those of every epoch: a witness's newest cosignature is of the new home's checkpoint,
    and one left behind had it republish on start an older epoch's, which the new home took for
    a forgery, outsider 21 F5). Returns how many were carried."""
    path = old / DB_NAME
    if not path.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT ledger, kind, size, root, note FROM checkpoints").fetchall()
    except sqlite3.Error:
        return 0  # a store from before checkpoints, or too damaged: it stays aside as it is
    carried = 0
    for ledger, kind, size, root, note in rows:
        checkpoint = verified_by_any(bytes(note), keys.get(ledger, ()), origin_for(cluster, ledger))
        if checkpoint is None:
            continue
        if (checkpoint.size, checkpoint.root) != (size, bytes(root)):
            continue
        if kind in (SIGNED, COSIGNED):
            # A row the new copy does not prove would make the node refuse (a home) or stop cosigning
            # (a witness) at once: it stays in the old store, aside.
            if size > new.tree_size(ledger) or new.root(ledger, size) != checkpoint.root:
                continue
        elif kind != EVIDENCE:
            continue
        new.checkpoints.keep(ledger, kind, size, checkpoint.root, bytes(note))
        carried += 1
    return carried


def carry_blobs(old: Path, new: Path) -> int:
    """Copy the old store's blobs whose content is their SHA-256 name (others stay aside)."""
    source = old / "blobs"
    if not source.is_dir():
        return 0
    blobs = BlobStore(new / "blobs")
    carried = 0
    for path in sorted(source.glob("??/*")):
        digest = path.name
        if not path.is_file() or path.parent.name != digest[:2]:
            continue
        try:
            with path.open("rb") as f:
                blobs.put(iter(lambda: f.read(1 << 20), b""), expected=digest)
        except (VledgerError, OSError):
            continue
        carried += 1
    return carried


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap(store: Path, fresh: Path, stamp: str) -> Path | None:
    """Rename ``store`` to ``<store>.broken-<stamp>`` (if it exists) and ``fresh`` to ``store``.

    Raises RepairRefusedError, saying how to finish, when the second rename fails: ``fresh`` is
    then the only whole copy (a node started between the two made ``store`` anew, review r19 6)."""
    kept = None
    if store.exists():
        kept = _set_aside(store, stamp)
        os.rename(store, kept)
    try:
        os.rename(fresh, store)
    except OSError as e:
        raise RepairRefusedError(f"{cut_short(store, fresh, stamp)} ({e})") from e
    _fsync_dir(store.parent)
    return kept


def _set_aside(store: Path, stamp: str) -> Path:
    """Where the repair of ``stamp`` moves the old ``store``."""
    return store.with_name(f"{store.name}.broken-{stamp}")


def cut_short(store: Path, copy: Path, stamp: str) -> str:
    """What to do with ``copy``, a repair's verified copy left when its swap was cut short
    (``store`` already moved to ``.broken-<stamp>``): the only whole copy."""
    said = (
        f"{copy} is an interrupted repair's verified copy, cut short as it replaced {store} (the old "
        f"store is at {_set_aside(store, stamp).name})"
    )
    if store.exists():  # made anew meanwhile: a node started on an empty store
        return f"{said}; {store} was made since: stop its node, move it away, then finish it with `mv {copy} {store}`"
    return f"{said}: finish it with `mv {copy} {store}`, or move it away to rebuild"


# --- the whole repair --------------------------------------------------------------------------------------


@dataclass
class Repair:
    """Repairs one node's store (see the module's docstring for the steps and what each refuses)."""

    config: ClusterConfig
    node: str
    keys: KeyPair
    quorum: int | None = None
    force: bool = False
    timeout: float = 10.0
    show_progress: bool | None = None  # None: on a terminal
    clock: Callable[[], float] = time.time
    # What the repair found Redis claiming and did not take (outsider43 M1), printed with its result.
    said: list[str] = field(default_factory=list)

    def plan(self, sources: Sources, replication: ReplicationLedger) -> list[LedgerRepair]:
        config, name = self.config, self.node
        store = config.store_dir(name)
        witnesses = witness_keys(config)
        quorum = self.quorum if self.quorum is not None else default_quorum(len(witnesses))
        if quorum > len(witnesses):
            raise RepairRefusedError(f"a quorum of {quorum} needs as many witnesses; the cluster has {len(witnesses)}")
        self.quorum = quorum
        stored = stored_ledgers(store)
        ledgers = ledgers_of(config, name, replication.ledgers_or_streams(), stored, self.said)
        if not ledgers:
            raise RepairRefusedError(f"{name} holds no ledger the cluster knows of: nothing to rebuild")
        others = [n.name for n in config.nodes.values() if n.name != name and n.role != "verifier"]
        published = replication.checkpoints(ledgers)
        # A witness whose key rotated counts by its keys in force now, proven on the admin ledger (16.6).
        histories = witness_histories_now(config, replication.client)
        rotated = witness_keys_in_force(config.name, histories, histories, int(self.clock() * 1000))
        counts = cosignatures_in_force(config.name, histories)  # a replaced key only as 16.6 allows
        targets = []
        for ledger, home in ledgers.items():
            log_key = epoch_log_keys(config, ledger, home)
            notes = [*replication.cosignatures(ledger, sorted(config.nodes)).values()]
            if ledger in published:
                notes.append(published[ledger])
            for other in others:
                with contextlib.suppress(VledgerError):
                    note = sources.call(other, "checkpoint", {"ledger": ledger}).get("checkpoint")
                    if isinstance(note, bytes):
                        notes.append(note)
            try:
                chosen = quorum_checkpoint(
                    ledger, notes, log_key, origin_for(config.name, ledger), witnesses, quorum, rotated, counts
                )
            except RepairRefusedError:
                if ledger in stored or ledger in config.homes:
                    raise
                # Only Redis names it (any ingest password may add a name there: outsider43 M1), the
                # node holds none of it, and no checkpoint backs it: nothing to rebuild; a ledger
                # made since is fetched by the node itself once it runs.
                self.said.append(
                    f"{ledger}: named in Redis only, held by no store of {name} and backed by no checkpoint a "
                    "quorum cosigned: skipped"
                )
                continue
            size, root = chosen.checkpoint.size, chosen.checkpoint.root
            # Followers first: the home is the one node whose copy nothing else checked before it served.
            candidates = sorted(others, key=lambda n: (n == home, others.index(n)))
            source = choose_source(sources, candidates, ledger, size, root)
            cosigners = tuple(sorted(node for node, key in witnesses.items() if key.name in chosen.witnesses))
            target = LedgerRepair(ledger, home, size, root, cosigners, source, chosen.note)
            targets.append(self._held_to_outside(sources, replication, target, log_key, others))
        return targets

    def _held_to_outside(
        self,
        sources: Sources,
        replication: ReplicationLedger,
        target: LedgerRepair,
        log_key: Sequence[VerifierKey],
        others: Sequence[str],
    ) -> LedgerRepair:
        """``target`` with what the outside witnesses its genesis lists cosigned (13.9): the
        largest checkpoint a quorum of them cosigned must be consistent with it (a consistency
        proof between the two, from any node); else RepairRefusedError. A copy the cluster's
        witnesses vouch for is not enough when witnesses run by others vouched for another tree:
        the cluster's could be the operator's own, whom they are there to check."""
        ledger, size, root = target.ledger, target.size, target.root
        try:
            listed = proven_outside(sources, target.source, ledger, size, root, self.config.name)
        except VledgerError as e:
            raise RepairRefusedError(
                f"ledger {ledger!r}: the genesis {target.source} sent is not the quorum checkpoint's "
                f"(size {size}): {e.code}: {e.message}"
            ) from None
        if listed is None:
            return target
        origin = origin_for(self.config.name, ledger)
        notes = [*replication.outside_cosignatures(ledger).values()]
        notes.extend(outside_notes(sources, others, ledger, listed.quorum))
        held = witnessed(notes, log_key, origin, listed).checkpoint
        target = replace(target, outside_quorum=listed.quorum)
        if held is None:
            return target  # nothing they cosigned to contradict (yet)
        theirs = (held.checkpoint.size, held.checkpoint.root)
        if theirs == (size, root):
            return replace(target, outside=held)
        older, newer = sorted([(size, root), theirs])
        try:
            if older[0] == newer[0]:
                raise ProofError("two roots at one size")
            prove_extends(sources, [target.source, *others], ledger, older, newer)
        except ProofError as e:
            raise RepairRefusedError(
                f"ledger {ledger!r}: the checkpoint a quorum of the cluster's witnesses cosigned (size {size}, "
                f"root {root.hex()[:16]}...) is not proven consistent with the one {len(held.witnesses)} of its "
                f"outside witnesses cosigned (size {theirs[0]}, root {theirs[1].hex()[:16]}..., "
                f"{', '.join(held.witnesses)}; the genesis asks {listed.quorum}): {e.message}. A copy of it could "
                "contradict what witnesses outside the cluster vouched for: nothing copied (a fork between "
                "them is an operator's to resolve; `vledger verify --cluster` names the copies that disagree)"
            ) from None
        return replace(target, outside=held)

    def run(self) -> RepairResult:
        """The repair, under the node's repair lock (see :func:`repair_lock`)."""
        with repair_lock(self.config.store_dir(self.node)) as cleared:
            result = self.run_locked()
        result.cleared = cleared
        return result

    def run_locked(self) -> RepairResult:
        """The repair, its caller holding :func:`repair_lock` (the command holds it through its
        --restart's stop and start: a refused second repair must not start the node under the first)."""
        config, name = self.config, self.node
        node = config.node(name)
        if node.role == "verifier":
            raise RepairRefusedError(f"{name} is a verifier: it keeps no store to repair")
        if answers(config, name, self.keys) or listening(node.endpoint):
            raise RepairRefusedError(
                f"{name} still answers at {node.endpoint}: stop it first (its store cannot be swapped "
                "under a running node), or give --restart when supervisord runs it"
            )
        store = config.store_dir(name)
        # A node started meanwhile (or one that answers nothing yet) would run on the store swapped under it.
        with contextlib.ExitStack() as held:
            if store.is_dir():
                try:
                    held.enter_context(node_lock(store, f"repair of {name}"))
                except NodeRunningError as e:
                    raise RepairRefusedError(f"{name} runs on its store: {e.message}") from None
            return self._planned(store)

    def _planned(self, store: Path) -> RepairResult:
        config, name = self.config, self.node
        sources = Sources(config, self.keys, self.timeout)
        access = config.redis_access("admin")
        try:
            redis = connect(access, timeout=REDIS_TIMEOUT)
        except SettingsError as e:
            # Outsider o21 F8: it must run on the node's host, whose folder lacks that password.
            raise SettingsError(
                f"{e.message}: `vledger repair` reads Redis as vledger-admin, whose password stays with the"
                f" operator: run it on {name}'s host with a cluster file whose [redis] passwords names a folder"
                " holding vledger-admin.redis_password (brought for the repair, taken away after)"
            ) from None
        try:
            replication = ReplicationLedger(redis)
            try:
                targets = self.plan(sources, replication)
            except REDIS_ERRORS as e:
                raise redis_failed(access.url, e) from None
            except RepairRefusedError as e:
                if not self.said:
                    raise
                raise RepairRefusedError(f"{e.message}; note: {'; '.join(self.said)}") from None
            refused = None
            if not self.force and already_holds(store, targets):
                refused = refused_at_start(store, name, replication, **store_options(config, name))
                if refused is None:
                    raise RepairRefusedError(
                        f"{name}'s store already holds every quorum-cosigned checkpoint "
                        f"({', '.join(f'{t.ledger} at {t.size}' for t in targets)}), and {name} did not "
                        f"refuse it at its last start (no open {STORE_DAMAGED} alert in its journal; or, with "
                        "none, the store opens now): nothing to repair "
                        "(--force rebuilds it anyway)"
                    )
            result = self._rebuild(store, targets, sources)
            result.refused = refused
            result.said = list(self.said)
            return result
        finally:
            sources.close()
            redis.close()

    def _rebuild(self, store: Path, targets: list[LedgerRepair], sources: Sources) -> RepairResult:
        config = self.config
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        fresh = store.with_name(f"{store.name}.repair-{stamp}")
        for taken in (fresh, _set_aside(store, stamp)):
            if taken.exists():
                raise RepairRefusedError(f"{taken} exists: another repair is under way, or left it (look, then remove)")
        keys = {t.ledger: log_key_of(config, t.ledger, t.home) for t in targets}
        result = RepairResult(self.node, store, None, self.quorum or 0, list(targets))
        total = sum(t.size for t in targets)
        try:
            with (
                ChainStore(fresh, origin=self.node, limits=config.settings.limits) as new,
                contextlib.closing(Progress("copying", total, enabled=self.show_progress)) as progress,
            ):
                for target in targets:
                    records = fetch(sources, target.source, target.ledger, target.size, config.ingest.page_size)
                    copy_ledger(new, records, target, keys[target.ledger], config.name, progress)
                epoch_keys = {t.ledger: epoch_log_keys(config, t.ledger, t.home) for t in targets}
                result.carried = carry_checkpoints(store, new, epoch_keys, config.name)
            result.blobs = carry_blobs(store, fresh)
            carry_journal(store, fresh)
            result.kept = swap(store, fresh, stamp)
        except BaseException:
            # Only what this repair made, while the old store is untouched: once it is moved
            # aside, ``fresh`` is the one verified copy, left for the operator (swap says how).
            if not _set_aside(store, stamp).exists():
                shutil.rmtree(fresh, ignore_errors=True)
            raise
        return result


_SCRATCH = re.compile(r"\.repair-(\d{8}T\d{6}Z)")  # the fresh directory's suffix: _rebuild's stamp


@contextlib.contextmanager
def repair_lock(store: Path) -> Iterator[list[Path]]:
    """Held while ``store`` is rebuilt (RepairRefusedError if another repair holds it); under it,
    the fresh directories an interrupted repair left beside it (a kill -9 runs no cleanup: a full
    copy each time, outsider 21 F8) are removed, and yielded for the command to name. Only names
    of that exact form, which no node or operator makes, are touched; ``<store>.broken-*`` stay.
    One whose swap was cut short (the store moved to ``.broken-<stamp>``, the verified copy not
    yet in its place: no store) is the only whole copy: refused, never removed."""
    store.parent.mkdir(parents=True, exist_ok=True)
    lock_path = store.with_name(f"{store.name}.repair.lock")
    lock = _locked(lock_path, store.name)
    try:
        left = []
        for path in sorted(store.parent.iterdir()):
            match = _SCRATCH.fullmatch(path.name[len(store.name) :]) if path.name.startswith(store.name) else None
            if match is None:
                continue
            if not store.exists() and _set_aside(store, match[1]).exists():
                raise RepairRefusedError(cut_short(store, path, match[1]))
            left.append(path)
        for path in left:
            shutil.rmtree(path)
        yield left
    finally:
        os.unlink(lock_path)  # before the descriptor goes: a repair that opened it meanwhile sees it gone (_locked)
        os.close(lock)


def _locked(path: Path, name: str) -> int:
    """A descriptor of ``path`` holding its exclusive flock. The file is removed when the lock is
    let go, so one opened meanwhile may no longer be ``path``: locked, it is checked to still be."""
    while True:
        lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise RepairRefusedError(f"another repair of {name} is under way") from None
        try:
            if os.stat(path).st_ino == os.fstat(lock).st_ino:
                return lock
        except FileNotFoundError:
            pass
        os.close(lock)  # the file a repair that just ended removed: take the next one


# --- the command -----------------------------------------------------------------------------------------

RESTART_TIMEOUT = 60.0


def _restart_stop(config: ClusterConfig, name: str, run_dir: Path | None) -> Supervisor:
    layout = layout_for(config, run_dir, find_redis=False)
    supervisor = Supervisor(layout.socket_path)
    if not supervisor.running():
        raise RepairRefusedError(
            f"--restart: no supervisord answers on {layout.socket_path}; stop {name} yourself and repair without it"
        )
    if name not in supervisor.processes():
        raise RepairRefusedError(f"--restart: supervisord runs no program {name!r}")
    supervisor.stop_process(name)
    return supervisor


def _restart_start(config: ClusterConfig, supervisor: Supervisor, name: str, keys: KeyPair) -> None:
    supervisor.start_process(name)
    deadline = time.monotonic() + RESTART_TIMEOUT
    while not answers(config, name, keys, ANSWER_TIMEOUT):
        if time.monotonic() > deadline:
            raise SupervisorError(f"{name} was restarted on its repaired store but does not answer hello")


def _print(result: RepairResult) -> None:
    print(f"{result.node}: store rebuilt at {result.store}")
    for sentence in result.said:
        print(f"  note: {sentence}")
    if result.refused is not None:
        print(f"  its records held every checkpoint, but {result.node} refused the store at start: {result.refused}")
    for r in result.ledgers:
        print(
            f"  {r.ledger}: {r.size:,} records from {r.source}, tree root {r.root.hex()[:16]}..., the checkpoint "
            f"{len(r.witnesses)} witnesses cosigned ({', '.join(r.witnesses)})"
        )
        if r.outside_quorum and r.outside is None:
            print(f"    outside witnesses: none of their quorum of {r.outside_quorum} cosigned a checkpoint yet")
        elif r.outside is not None:
            print(
                f"    outside witnesses: consistent with the checkpoint at {r.outside.checkpoint.size:,} that "
                f"{len(r.outside.witnesses)} of them cosigned ({', '.join(r.outside.witnesses)}; the genesis asks "
                f"{r.outside_quorum})"
            )
    print(f"  carried over from the old store: {result.carried} checkpoints, {result.blobs} blobs")
    for path in result.cleared:
        print(f"  removed {path}: the unfinished copy of an interrupted repair")
    print(f"  the old store is kept at {result.kept}" if result.kept is not None else "  there was no old store")
    print(
        f"  {result.node} restarted: it catches up past the checkpoints from its sources"
        if result.restarted
        else f"  start {result.node} again: it catches up past the checkpoints from its sources"
    )


def _repair_restarting(config: ClusterConfig, name: str, keys: KeyPair, args: argparse.Namespace) -> RepairResult:
    """The repair, with --restart's stop and start around it (under the caller's repair lock)."""
    supervisor = _restart_stop(config, name, args.run_dir) if args.restart else None
    repair = Repair(config, name, keys, quorum=args.quorum, force=args.force, timeout=args.timeout)
    try:
        result = repair.run_locked()
    except BaseException:
        if supervisor is not None:
            supervisor.start_process(name)  # nothing was swapped: it runs on its store as before
        raise
    if supervisor is not None:
        _restart_start(config, supervisor, name, keys)
        result.restarted = True
    return result


def cmd_repair(args: argparse.Namespace) -> int:
    config = load_cluster(config_file(args.config))
    name = config.node(args.node).name
    # The node's newest key generation (PROTOCOL 16.6): after a rotation's window the others refuse the first.
    own = key_paths(config.keys_dir, generation_name(name, newest_generation(config.keys_dir, name)))[1]
    keys = load_client_keys(input_file(args.key, "--key") if args.key else own)
    try:
        with repair_lock(config.store_dir(name)) as cleared:
            result = _repair_restarting(config, name, keys, args)
    except VledgerError as e:
        if args.json:
            # README's failure object (a script reads ["error"]["code"]), beside the success's "ok" and "node".
            print_json({"ok": False, "node": name, **error_json(e.code, e.message)})
        raise
    result.cleared = cleared
    if args.json:
        print_json(result.as_json())
    else:
        _print(result)
    return 0
