"""``vledger repl status``: how far each node holds each ledger, as the cluster's Redis records it.

Everything comes from the keys of vledger.broker.replication: the ledgers
(``vledger:{ledgers}``), each stream's last height, each node's held height, each
ledger's latest checkpoint and each witness's cosignature. No node is asked: the command
works while nodes are down, and says what Redis last heard from them. Held heights are
hints anyone who reaches Redis can write; the checkpoint and cosignatures are shown only
once they verify with the keys in the cluster's key directory (``<home>.sign.pub``, or a key
the ledger's rotation records in its Redis stream name from it, ``<witness>.sign.pub``) and
state the ledger's newest proven epoch (PROTOCOL 10.9: never a replaced home's), so the
COSIGNED column is what a ``put``'s ``w`` counts.

A ledger's **home** is the cluster file's, until a handover is proven: a witness's note in
Redis, cosigned by that witness's key file and signed by the standby's or the home's key file,
stating an epoch from 2 (node/epoch.py's newest_witnessed_epoch; this command reads no genesis,
so the key files stand for the keys it pins; the newest epoch names the home, a failback's
epoch 3 the genesis home again). The home and epoch that
``vledger:{ledgers}`` and its ``epochs`` hash name are claims every ingest node's Redis user
may write: one that differs from the proven home is shown as **claimed, unproven**, and
nothing is counted by it.

A ledger's **head** is what its home signed: the size - 1 of its largest checkpoint that
verifies with the home's key file (the latest in Redis, or one a witness verifiably
cosigned). Without one (no key file, no checkpoint yet), it is the home's held height or
the stream's last entry, whichever is higher. Never another node's held height: anyone who
reaches Redis can write one (HSET ``vledger:{L}:held replica-3 99999``), and a head taken
from it would show every honest node behind. A held height above the head is shown as
**unverified** (no lag, not lagging, not counted above the head); one above what the home
itself holds (its held height, the stream's last, the head) is **impossible**: no node holds a
record its home lacks, so only a write by hand put it there (outsider43 LOW 3: a down replica's
held key set to 999999), shown so whether the node is down or not, and counted nowhere. A name no
configuration knows is shown but counted nowhere. A node's **lag** is head - held.
Replicas and observers (the roles that follow the feeds and keep a store,
config.cluster.FOLLOWER_ROLES) hold every ledger: one **lags** when it holds less than the
head, including one that never reported; so does the ledger's **standby** (the cluster
file's, while it is neither the home nor fenced), whose promotion waits until it holds what a
witness cosigned. Another ingest node that is not the ledger's home is shown but never
expected to hold it; a verifier holds nothing and is shown only if Redis names it.

A held height is what Redis last heard, also of a node that has stopped since: a node whose
heartbeat in Redis (the accounts cache's ``seen``, every ``accounts_poll_ms``) is older than
:func:`~vledger.broker.accounts.heartbeat_window`, or ``0`` (it stopped cleanly), is shown
**down** (STATE column, ``"down"`` in JSON), never current; so is a ledger's home while the
verifier's ``home_unreachable`` alert of it is open (it answered none of the verifier's reads
for ``lag_alert_ms``: a home cut off from its clients but not from Redis sends heartbeats all
the same); ``vledger status`` marks down the nodes that do not answer its hello.

Exit codes: 0 every replica and observer (and standby) holds every ledger up to its head, and
every ledger's home is up; 1 Redis cannot be reached or answers with an error (``vledger: error:
redis_server: ...``), or the configuration is invalid; 2 usage; 3 some replica, observer or
standby lags or is down, or a ledger's home is down as Redis last heard of it (its heartbeat
stopped; the code `vledger supervise status` gives for a process that is not running), so that a
script can wait with ``until vledger repl status --config F >/dev/null; do sleep 1; done``; 4
(before 3) what Redis holds of a ledger is **unproven**: a home or epoch it names that no
witnessed note proves (claimed), an epoch a witness's note proves that this cluster file does
not allow (``refused``: state its ``epoch`` in the file, PROTOCOL 10.9), or a latest checkpoint
that no key verifies ("no checkpoint that verifies" while Redis holds one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis

from ..broker.accounts import AccountRegistry, heartbeat_window
from ..broker.redis_server import connect, shown_url
from ..broker.replication import LastRead, ReplicationLedger, count_distribution
from ..broker.signing import home_checkpoint_publics, load_verify_key, signing_key_paths, witness_keys
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, load_cluster
from ..ingest.key_chains import StreamedKeys
from ..node.epoch import epoch_claim, may_open, newest_witnessed_epoch
from ..node.errors import NoteError, RedisServerError, VledgerError
from ..node.node_key_rotation import KeyHistory
from ..node.note import VerifierKey, parse_checkpoint, parse_note
from ..node.witness import (
    CheckpointKeys,
    check_cosigned,
    check_cosigned_in_force,
    home_key,
    witness_key,
    witness_keys_in_force,
    witness_name,
)
from ..verifier.node_keys import ProvenRotations, witness_histories_of
from .args import config_file
from .client_output import table
from .watching import watch_rounds

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_LAGGING = 3
HOME_UNREACHABLE = "home_unreachable"  # the verifier's alert of a home that answers none of its reads
EXIT_UNPROVEN = 4  # what Redis holds of a ledger proves nothing this command can check (o24 F1)
REDIS_TIMEOUT = 2.0  # seconds: a Redis that does not answer fails the command, it does not hang it
UNKNOWN_ROLE = "unknown"  # a node Redis names that the configuration does not
SHOWN_ROLES = ("ingest", *FOLLOWER_ROLES)  # the configured nodes listed even if they never reported
_ROLE_ORDER = {"ingest": 1, **{role: 2 for role in FOLLOWER_ROLES}}


Epoch = tuple[int, str]  # a ledger's epoch: (number, home)


@dataclass(frozen=True, slots=True)
class NodeHeight:
    """One node's hold on one ledger."""

    node: str
    role: str  # the configuration's role, or "unknown" for a node only Redis names
    held: int | None  # None: never reported
    lag: int | None  # head - held; None when never reported
    lagging: bool  # a replica or observer that holds less than the head
    cosigned: int | None = None  # the size of this witness's cosignature that verifies
    unverified: bool = False  # it claims more than the head: nothing signed shows those records exist
    down: bool = False  # no sign of life: ``held`` is what it said before it stopped
    fenced: bool = False  # the home a proven handover replaced: its copy is no copy of the ledger (10.9)
    impossible: bool = False  # above all the home holds: a held key written by hand (never counted)


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    ledger: str
    home: str
    head: int  # -1: no record yet
    stream_head: int | None  # None: an empty (or missing) stream
    nodes: tuple[NodeHeight, ...]
    counts: dict[int, int]  # replication count -> how many records have it
    checkpoint: int | None = None  # the size of the latest checkpoint that verifies
    epoch: int = 1  # the newest epoch proven (10.9)
    claimed: Epoch | None = None  # the epoch and home Redis names, when not the proven ones
    # Redis holds a checkpoint of the newest epoch that no key of its home verifies (o21 F3).
    unverified_note: bool = False
    # Redis holds a checkpoint of the ledger (of any epoch): with none that verifies, nothing shown is proven.
    noted: bool = False
    # The newest epoch a witness's note proves that this cluster file does not allow (10.9: an
    # epoch from 3 whose home it does not name the standby of, nor states the epoch of).
    refused: Epoch | None = None

    @property
    def head_from(self) -> str:
        """Where the head comes from: "checkpoint" (signed by the home), else "home" (its claims)."""
        return "checkpoint" if self.checkpoint is not None or self.cosigned else "home"

    @property
    def home_held(self) -> int | None:
        return next((n.held for n in self.nodes if n.node == self.home), None)

    @property
    def lagging(self) -> list[str]:
        return [n.node for n in self.nodes if n.lagging]

    @property
    def down(self) -> list[str]:
        """The home, replicas and observers that are down: not current, whatever they last held.
        The home counts first: it is the one node whose loss stops the ledger's writes."""
        return [n.node for n in self.nodes if n.down and (n.role in FOLLOWER_ROLES or n.node == self.home)]

    @property
    def cosigned(self) -> dict[str, int]:
        return {n.node: n.cosigned for n in self.nodes if n.cosigned is not None}

    @property
    def unproven(self) -> bool:
        """Whether what Redis holds of the ledger is not what it shows: a home or epoch it names
        that no witnessed note proves, a witnessed epoch this file does not allow, or a checkpoint
        none of which verifies. Its heads and counts then prove nothing (o24 F1: exit 0 meanwhile)."""
        return self.claimed is not None or self.refused is not None or (self.noted and self.checkpoint is None)

    @property
    def fenced(self) -> bool:
        return any(n.fenced for n in self.nodes)


def marked_down(status: LedgerStatus, down: Collection[str]) -> LedgerStatus:
    """``status`` with its nodes in ``down`` (and only those) shown down."""
    nodes = tuple(replace(n, down=n.node in down) for n in status.nodes)
    return replace(status, nodes=nodes)


def marked_behind(status: LedgerStatus, behind: Collection[str]) -> LedgerStatus:
    """``status`` with its replicas and observers in ``behind`` shown lagging: each said itself
    (its ``hello``, read from its store: PROTOCOL 10.4) that it lacks records of the ledger, and
    what Redis last heard of it (a held key up to a heartbeat old) does not outweigh that."""
    nodes = tuple(
        replace(n, lagging=True) if n.node in behind and n.role in FOLLOWER_ROLES else n for n in status.nodes
    )
    return replace(status, nodes=nodes)


def ledger_status(
    ledger: str,
    home: str,
    stream_last: int,
    held: Mapping[str, int],
    roles: Mapping[str, str],
    checkpoint: int | None = None,
    cosigned: Mapping[str, int] | None = None,
    epoch: int = 1,
    claimed: Epoch | None = None,
    replaced: str | None = None,
    standby: str | None = None,
) -> LedgerStatus:
    """The status of one ledger from what Redis holds (pure: the tests feed it directly).

    ``stream_last`` is the stream's last height (-1: empty); ``held`` node -> held height;
    ``roles`` node -> role, for every node of the configuration; ``checkpoint`` the size of
    the latest verified checkpoint and ``cosigned`` witness -> the size it verifiably cosigned;
    ``epoch`` the newest proven epoch, ``claimed`` Redis's epoch and home when they are not it,
    ``replaced`` the home that epoch's handover fenced: shown, never counted (its records past the
    handover are not the ledger's, and this command cannot tell where that is); ``standby`` the
    ingest node that follows the ledger to take it over: it lags as a replica does (o24 F1: 150
    behind, shown with exit 0), since its promotion waits until it holds what a witness cosigned.
    The head is the largest of those checkpoints' size - 1, else the home's held height or the
    stream's last.
    """
    cosigned = cosigned or {}
    if checkpoint is not None or cosigned:
        # A verified cosignature is of a checkpoint the home's key signed too (10.3).
        head = max([checkpoint or 0, *cosigned.values()]) - 1
    else:
        head = max(stream_last, held.get(home, -1))
    names = {name for name, role in roles.items() if role in SHOWN_ROLES} | set(held) | {home} | set(cosigned)
    most = max(head, stream_last, held.get(home, -1))  # what the home holds, by anything it wrote

    def order(name: str) -> tuple[int, str]:
        return (0 if name == home else _ROLE_ORDER.get(roles.get(name, UNKNOWN_ROLE), 3), name)

    nodes = []
    for name in sorted(names, key=order):
        role = roles.get(name, UNKNOWN_ROLE)
        height = held.get(name)
        fenced = name == replaced
        unverified = height is not None and height > head and not fenced
        impossible = unverified and name != home and height is not None and height > most
        lag = None if height is None or unverified or fenced else head - height
        follows = role in FOLLOWER_ROLES or (name == standby and name != home and not fenced)
        lagging = follows and head >= 0 and (height is None or height < head)
        nodes.append(
            NodeHeight(
                name, role, height, lag, lagging, cosigned.get(name), unverified, fenced=fenced, impossible=impossible
            )
        )
    # Only the configuration's nodes that hold ledgers count: a name no node of it wrote holds nothing;
    # nor a follower's claim above the head (unverified: its own Redis user may write any number there),
    # nor a fenced home's (PROTOCOL 10.9: no copy of the ledger, as for the verifier).
    holders = {
        name: height
        for name, height in held.items()
        if name == home or (roles.get(name) in SHOWN_ROLES and height <= head and name != replaced)
    }
    return LedgerStatus(
        ledger=ledger,
        home=home,
        head=head,
        stream_head=stream_last if stream_last >= 0 else None,
        nodes=tuple(nodes),
        counts=count_distribution(holders, head + 1),
        checkpoint=checkpoint,
        epoch=epoch,
        claimed=claimed,
    )


HISTORIES_FOR_S = 1.0  # how long Checker keeps the witnesses' key histories it read


@dataclass(frozen=True, slots=True)
class Witnessed:
    """What Redis proves of a ledger, checked with the cluster's key files (:meth:`Checker.witnessed`)."""

    epoch: int  # the newest proven epoch (1 until a handover is)
    home: str  # its home: the cluster file's, or the standby a proven handover made home
    proven: Epoch | None  # the epoch past the first that a witness's note proves; None: none
    checkpoint: int | None  # the size of the latest checkpoint of that epoch that verifies
    cosigned: dict[str, int]  # witness -> the size of its cosignature of that epoch that verifies
    replaced: str | None  # the cluster file's home once a handover to another is proven: fenced
    refused: Epoch | None = None  # a newer epoch a witness's note proves, which the file does not allow
    standby: str | None = None  # the file's standby while it is not the home: it follows the ledger


class Checker:
    """Checks what Redis says of checkpoints and cosignatures with the cluster's key files.

    A ledger's checkpoints are checked with its home's ``<home>.sign.pub`` (the version rule
    of PROTOCOL 10.7: this command reads no genesis); a key file missing checks nothing. Given
    ``client``, a witness whose key rotated is checked by its keys in force (PROTOCOL 16.6),
    the rotations proven by the admin ledger's cache in that Redis: a ``--watch``'s rounds never
    fewer than an earlier round proved (ProvenRotations)."""

    def __init__(self, config: ClusterConfig, client: Any = None) -> None:
        self.config = config
        self.client = client
        self._raw: dict[str, bytes | None] = {}
        self._read: tuple[float, dict[str, KeyHistory]] | None = None  # (monotonic time, histories)
        self._rotations = ProvenRotations.of_redis(config, client)
        self._witness_files: tuple[VerifierKey, ...] | None = None  # the followers' key files' keys
        self._streamed = None if client is None else StreamedKeys(ReplicationLedger(client))

    def _histories(self) -> dict[str, KeyHistory]:
        """The key generations of the witnesses whose key rotated; {} when Redis cannot say.
        Read at most once a second: a status asks for every ledger in turn, and the admin
        ledger's cache (every record, a checkpoint checked) does not change between them."""
        if self.client is None:
            return {}
        if self._read is not None and time.monotonic() - self._read[0] < HISTORIES_FOR_S:
            return self._read[1]
        try:
            histories = witness_histories_of(witness_keys(self.config), self._rotations())
        except (redis.RedisError, OSError, VledgerError):
            return {}
        self._read = (time.monotonic(), histories)
        return histories

    def _public(self, node: str) -> bytes | None:
        if node not in self._raw:
            path = signing_key_paths(self.config.keys_dir, node)[1]
            try:
                self._raw[node] = load_verify_key(path).raw if path.is_file() else None
            except VledgerError:
                self._raw[node] = None
        return self._raw[node]

    def _home_keys(self, ledger: str, home: str) -> list[VerifierKey]:
        """Every checkpoint key ``home`` has (its node key, each rotated one: PROTOCOL 13.8): the
        key directory's, and those the ledger's rotation records in Redis name from one of them
        (a rotated key's file is on the home's host alone: o21 F3). A status counts what they
        signed; which of them was in force is the witnesses' check."""
        try:
            publics = home_checkpoint_publics(self.config.keys_dir, home)
        except VledgerError:
            return []
        keys = [home_key(self.config.name, ledger, public) for public in publics]
        if self._streamed is not None:
            keys += self._streamed.after(ledger, keys)
        return keys

    def witnessed(
        self, replication: ReplicationLedger, ledger: str, nodes: Sequence[str], note: bytes | None
    ) -> Witnessed:
        """``ledger``'s newest proven epoch and home, by the witnesses' notes of ``nodes`` (the
        configuration's: no SCAN) and the new home's kept proof, and what of ``note`` (its latest
        checkpoint in Redis) and the witnesses' notes counts in that epoch. Redis's errors pass through."""
        witnessed = replication.cosignatures(ledger, nodes)
        kept = replication.epoch_proof(ledger)  # the new home's copy, which no witness's user can delete (10.9)
        notes = {**witnessed, **({"": kept} if kept is not None else {})}
        proven = self.proven_epoch(ledger, notes)
        # The same notes judged without the file's word on failbacks: a newer epoch there is one
        # the witnesses took (their files allowed it) that this file does not (o24 F1).
        newest = self.proven_epoch(ledger, notes, judged=False)
        first = self.config.home_of(ledger).name
        epoch, home = proven or (1, first)
        standby = self.config.standby_of(ledger)
        replaced = first if home != first else None
        return Witnessed(
            epoch,
            home,
            proven,
            self.checkpoint(ledger, home, note, proven),
            self.cosigned(ledger, home, witnessed, proven),
            replaced,
            newest if newest is not None and newest[0] > epoch else None,
            standby.name if standby is not None and standby.name not in (home, replaced) else None,
        )

    def checkpoint(self, ledger: str, home: str, note: bytes | None, epoch: Epoch | None = None) -> int | None:
        """The size of ``note`` if ``home``'s key signed it and it is of the newest epoch
        (``epoch``, the proven one: see :func:`of_newest_epoch`), else None."""
        if note is None or not of_newest_epoch(note, epoch):
            return None
        for log_key in self._home_keys(ledger, home):
            keys = CheckpointKeys(self.config.name, lambda name, key=log_key: key)  # type: ignore[misc]
            try:
                return keys.check(ledger, note).size
            except NoteError:
                continue
        return None

    def cosigned(
        self, ledger: str, home: str, notes: Mapping[str, bytes], epoch: Epoch | None = None
    ) -> dict[str, int]:
        """Witness -> the size of its cosigned note that verifies and is of the newest epoch."""
        log_keys = self._home_keys(ledger, home)
        histories = self._histories() if notes else {}
        found: dict[str, int] = {}
        for witness, note in notes.items():
            if not of_newest_epoch(note, epoch):
                continue
            size = self._cosigned_size(ledger, witness, note, log_keys, histories)
            if size is not None:
                found[witness] = size
        return found

    def _cosigned_size(
        self, ledger: str, witness: str, note: bytes, log_keys: list[VerifierKey], histories: Mapping[str, KeyHistory]
    ) -> int | None:
        """The size of ``note`` when one of ``log_keys`` signed it and ``witness`` (a replica or
        observer of the configuration, by its key file or its keys in force) cosigned it."""
        node = self.config.nodes.get(witness)
        witness_public = self._public(witness) if node is not None and node.role in FOLLOWER_ROLES else None
        if witness_public is None:
            return None
        key = witness_key(witness_name(self.config.name, witness), witness_public)
        history = histories.get(witness)
        for log_key in log_keys:
            try:
                if history is None:
                    return check_cosigned(note, ledger, self.config.name, log_key, key).size
                return check_cosigned_in_force(note, ledger, self.config.name, log_key, witness, history).size
            except NoteError:
                continue
        return None

    def proven_epoch(self, ledger: str, notes: Mapping[str, bytes], *, judged: bool = True) -> Epoch | None:
        """The newest epoch past the first of ``ledger`` that a witness's note among ``notes``
        (witness -> note, Redis's ``cosig`` hash) proves, as (number, home): signed by the key
        file of the cluster file's standby or home of the ledger, stating an epoch from 2
        (node/epoch.py's newest_witnessed_epoch), and cosigned by a witness (PROTOCOL 10.9, 14.3
        step 7: an epoch counts only with a witness's cosignature); an epoch from 3 only when the
        cluster file allows it (node/epoch.py's may_open: a failback's, as the witnesses take its
        handover; the file is read at this command's start; not with ``judged`` false, which
        shows what the witnesses proved). None when none does, or the ledger has no standby or its
        key file is missing."""
        standby = self.config.standby_of(ledger)
        if standby is None or not notes:
            return None
        # Both key files: the standby's signs an even epoch, the home's an odd one from 3 (a
        # failback, the file then naming the two the other way round). Which key may sign which
        # epoch needs the genesis, which this command does not read: the witness checked it.
        keys = [*self._home_keys(ledger, standby.name), *self._home_keys(ledger, self.config.home_of(ledger).name)]
        if self._witness_files is None:
            self._witness_files = tuple(witness_keys(self.config).values())
        histories = self._histories()
        now_ms = time.time_ns() // 1_000_000
        witnesses = (*self._witness_files, *witness_keys_in_force(self.config.name, histories, histories, now_ms))
        return newest_witnessed_epoch(
            notes.values(),
            keys,
            witnesses,
            allowed=lambda number, home: not judged or may_open(ledger, number, home, self.config.allows_epoch),
        )


def of_newest_epoch(note: bytes, epoch: Epoch | None) -> bool:
    """Whether checkpoint ``note`` states the newest epoch of its ledger, ``epoch`` (the number
    and home proven: :meth:`Checker.proven_epoch`; None: none past the first). PROTOCOL 10.9
    refuses a checkpoint of an earlier epoch past the next handover (a fenced home's); this
    command reads no record, so it cannot tell one from an earlier epoch's below its handover,
    and counts neither: the latest checkpoint and cosignatures of a ledger are its newest
    epoch's."""
    try:
        claim = epoch_claim(parse_checkpoint(parse_note(note).text))
    except NoteError:
        return False
    return claim == ((1, None) if epoch is None else epoch)


def read_status(
    replication: ReplicationLedger,
    roles: Mapping[str, str],
    checker: Checker | None = None,
    *,
    silent_after: float | None = None,
) -> list[LedgerStatus]:
    """Every ledger Redis knows of, by name (Redis's errors pass through), but one only the
    ledgers hash names (no stream entry, held height nor checkpoint backs it). With ``checker``,
    each ledger's home is the cluster file's or a proven epoch's (:meth:`Checker.proven_epoch`),
    and the home and epoch Redis names are a claim when they differ; without one (no keys to
    check with), the home is the one Redis names. With ``silent_after``, a node of ``roles``
    whose heartbeat in Redis is older than that many seconds is shown down (one that never
    sent one is not: Redis cannot tell), and a name ``roles`` lacks whose heartbeat is so is
    left out: a node removed from the cluster file and stopped (o13 F7: its rows stayed, their
    lag growing for good), whose held keys nobody writes or reads any more."""
    down: set[str] = set()
    gone: set[str] = set()
    judged: set[str] = set()  # the names roles lacks whose heartbeat was read
    if silent_after is not None:
        silence = AccountRegistry(replication.client).silence(sorted(roles))
        down = {name for name, age in silence.items() if age is not None and age > silent_after}
    # A home the verifier found answering none of its reads (home_unreachable, PROTOCOL 10.6):
    # down, though its heartbeat in Redis goes on (cut off from its clients, not from Redis: o24 F3).
    # Only the configuration's verifiers' (no SCAN; another node's user may write its own hash).
    verifiers = sorted(name for name, role in roles.items() if role == "verifier")
    alerts = ReplicationLedger(replication.client, raisers=verifiers).open_alerts() if verifiers else {}
    unreachable = {tuple(key.split("|")[:2]) for key in alerts if key.endswith(f"|{HOME_UNREACHABLE}")}
    homes = replication.ledgers_or_streams()  # "": none named (the hash of another type)
    names = sorted(homes)
    lasts = replication.last_heights(names)
    notes = replication.checkpoints(names) if checker is not None else {}
    # Of another type (review17 2), no claims: the notes prove each epoch shown all the same.
    epochs = LastRead(replication.epochs_key, replication.epochs)() if checker is not None else {}
    statuses = []
    for name in names:
        held = replication.held(name)
        if lasts[name] < 0 and not held and name not in notes:
            # Named by the hash alone, which any ingest node's Redis user may add to: no record in
            # its stream (a genesis is a ledger's first), no node holding it, no checkpoint:
            # ``ghost`` was listed as a ledger (outsider43 M1).
            continue
        if checker is None:
            seen = Witnessed(1, homes[name], None, None, {}, None, None, None)
        else:
            seen = checker.witnessed(replication, name, sorted(roles), notes.get(name))
        named = epochs.get(name) or (1, homes[name] or seen.home)
        claimed = None if named == (seen.epoch, seen.home) or (named[0] == 1 and named[1] == seen.home) else named
        strangers = set(held) - set(roles) - judged
        if silent_after is not None and strangers:
            ages = AccountRegistry(replication.client).silence(sorted(strangers))
            gone |= {node for node, age in ages.items() if age is not None and age > silent_after}
            judged |= strangers
        held = {node: height for node, height in held.items() if node not in gone}
        status = ledger_status(
            name,
            seen.home,
            lasts[name],
            held,
            roles,
            seen.checkpoint,
            seen.cosigned,
            seen.epoch,
            claimed,
            seen.replaced,
            seen.standby,
        )
        note = notes.get(name)
        status = replace(status, noted=note is not None, refused=seen.refused)
        if note is not None and seen.checkpoint is None and of_newest_epoch(note, seen.proven):
            status = replace(status, unverified_note=True)
        statuses.append(marked_down(status, down | ({status.home} if (status.home, name) in unreachable else set())))
    return statuses


# --- what it prints --------------------------------------------------------------------------------


def status_json(statuses: list[LedgerStatus], url: str) -> dict[str, Any]:
    return {
        "redis": shown_url(url),
        "current": current(statuses),
        "ledgers": [
            {
                "ledger": s.ledger,
                "home": s.home,
                "epoch": s.epoch,
                "claimed": None if s.claimed is None else {"epoch": s.claimed[0], "home": s.claimed[1]},
                "refused": None if s.refused is None else {"epoch": s.refused[0], "home": s.refused[1]},
                "unproven": s.unproven,
                "head": s.head,
                "head_from": s.head_from,
                "stream_head": s.stream_head,
                "home_held": s.home_held,
                "nodes": [
                    {
                        "node": n.node,
                        "role": n.role,
                        "held": n.held,
                        "lag": n.lag,
                        "lagging": n.lagging,
                        "cosigned": n.cosigned,
                        "unverified": n.unverified,
                        "impossible": n.impossible,
                        "down": n.down,
                        "fenced": n.fenced,
                    }
                    for n in s.nodes
                ],
                "counts": [{"holders": holders, "records": records} for holders, records in s.counts.items()],
                "lagging": s.lagging,
                "checkpoint": s.checkpoint,
                "cosigned": s.cosigned,
            }
            for s in statuses
        ],
    }


def _number(value: int | None) -> str:
    return "-" if value is None or value < 0 else str(value)


def current(statuses: list[LedgerStatus]) -> bool:
    """Whether every replica and observer (and each standby) holds every ledger up to its head,
    and they and each ledger's home are up."""
    return not any(s.lagging or s.down for s in statuses)


def exit_code(statuses: list[LedgerStatus]) -> int:
    """4 when a ledger's state is unproven (:attr:`LedgerStatus.unproven`: its heads prove
    nothing), else 3 when a copy lags or a node is down, else 0."""
    if any(s.unproven for s in statuses):
        return EXIT_UNPROVEN
    return EXIT_OK if current(statuses) else EXIT_LAGGING


def _state(node: NodeHeight) -> str:
    if node.fenced:  # what it holds past the handover is not the ledger's, whatever the height
        return "fenced"
    if node.impossible:  # written by hand, down or not: what it "last said" never was
        return "impossible"
    if node.down:  # what it held when it stopped is no longer current, whatever it was
        return "down"
    if node.unverified:
        return "unverified"
    if node.lagging:
        return "behind"
    return "current" if node.role in FOLLOWER_ROLES else ""


def _counts(counts: dict[int, int]) -> str:
    if not counts:
        return "no records"
    return ", ".join(
        f"{records:,} on {holders} node{'s' if holders != 1 else ''}" for holders, records in counts.items()
    )


def _cosignatures(status: LedgerStatus) -> str:
    if status.checkpoint is None:
        return "no checkpoint that verifies"
    at = [w for w, size in status.cosigned.items() if size >= status.checkpoint]
    return f"size {status.checkpoint:,}: {len(at)} cosignature{'s' if len(at) != 1 else ''}" + (
        f" ({', '.join(sorted(at))})" if at else ""
    )


def print_status(statuses: list[LedgerStatus], url: str) -> None:
    print(f"Redis {shown_url(url)}: {len(statuses)} ledger{'s' if len(statuses) != 1 else ''}")
    if not statuses:
        return
    rows: list[tuple[str, ...]] = []
    for status in statuses:
        for index, node in enumerate(status.nodes):
            first = index == 0
            rows.append(
                (
                    status.ledger if first else "",
                    _number(status.head) if first else "",
                    _number(status.stream_head) if first else "",
                    node.node,
                    "home" if node.node == status.home else node.role,
                    _number(node.held),
                    _number(node.lag),
                    _number(node.cosigned),
                    _state(node),
                )
            )
    print()
    table(("LEDGER", "HEAD", "STREAM", "NODE", "ROLE", "HELD", "LAG", "COSIGNED", "STATE"), rows)
    print()
    print("Records by replication count (the home included):")
    width = max(len(s.ledger) for s in statuses)
    for status in statuses:
        print(f"  {status.ledger:<{width}}  {_counts(status.counts)}")
    print()
    print("Latest checkpoint and the witnesses whose cosignature of it (or a later one) verifies:")
    for status in statuses:
        print(f"  {status.ledger:<{width}}  {_cosignatures(status)}")
    refused = [s for s in statuses if s.refused is not None]
    if refused:
        print()
        print("Witnessed, but not allowed by this cluster file (PROTOCOL 10.9: a handover of epoch 3 or later")
        print("counts only where the file names its home the standby or states an epoch at least its number;")
        print("a node whose file is this one refuses it, failback_unconfigured):")
        for status in refused:
            assert status.refused is not None
            number, home = status.refused
            print(
                f"  {status.ledger:<{width}}  a witness cosigned epoch {number} at {home}: if you promoted it, "
                f"state `epoch = {number}` in [ledgers.{status.ledger}] on every host; shown meanwhile: the "
                f"cluster file's {status.home}, nothing counted by it"
            )
    # A claim that is the refused epoch is said above, with what to do.
    claims = [s for s in statuses if s.claimed is not None and s.claimed != s.refused]
    if claims:
        print()
        print("Claimed, unproven (Redis names another home than the one shown; no witness-cosigned")
        print("checkpoint signed by the standby's key proves it, so nothing above counts by it):")
        for status in claims:
            assert status.claimed is not None
            number, home = status.claimed
            # Not "(epoch 1)" with no handover proven: the file's home may never have been epoch 1's (o24 F1).
            shown = f"epoch {status.epoch}" if status.epoch > 1 else "the cluster file's home, no handover proven"
            print(
                f"  {status.ledger:<{width}}  Redis names {home} the home (epoch {number}); "
                f"shown: {status.home} ({shown})"
            )
    print()
    behind = [f"{s.ledger} ({', '.join(s.lagging)})" for s in statuses if s.lagging]
    claims_above = [
        f"{s.ledger} ({', '.join(n.node for n in s.nodes if n.unverified and not n.impossible)})"
        for s in statuses
        if any(n.unverified and not n.impossible for n in s.nodes)
    ]
    impossible = [
        f"{s.ledger} ({', '.join(n.node for n in s.nodes if n.impossible)})"
        for s in statuses
        if any(n.impossible for n in s.nodes)
    ]
    down = [f"{s.ledger} ({', '.join(s.down)})" for s in statuses if s.down]
    fenced = [f"{s.ledger} ({', '.join(n.node for n in s.nodes if n.fenced)})" for s in statuses if s.fenced]
    if impossible:
        print(f"Impossible (held heights past all the home holds, counted nowhere): {'; '.join(impossible)}")
    if fenced:
        print(f"Fenced (a proven handover replaced them as home; their copies are not counted): {'; '.join(fenced)}")
    if down:
        print(f"Down (their held heights are what they last said): {'; '.join(down)}")
    if behind:
        print(f"Behind: {'; '.join(behind)}")
    unproven = [s.ledger for s in statuses if s.unproven]
    if unproven:  # not "every replica holds": their heads and counts prove nothing
        print(f"Unproven (what Redis holds of them is not shown by a checkpoint that verifies): {', '.join(unproven)}")
    if behind or down or unproven:
        return
    if claims_above:
        # Not "every replica holds": a height above the head is a claim nothing signed shows.
        print(f"No replica or observer is behind; above the head, unverified: {'; '.join(claims_above)}")
    elif impossible:  # named above; not "every replica holds": one of them says what it cannot hold
        return
    else:
        print("Every replica and observer holds every ledger up to its head.")


# --- the command -----------------------------------------------------------------------------------


def show_status(
    replication: ReplicationLedger,
    roles: Mapping[str, str],
    url: str,
    as_json: bool,
    checker: Checker | None = None,
    silent_after: float | None = None,
) -> int:
    """One round: read, print, and the exit code it makes (0, 3 or 4; RedisServerError if Redis
    fails); ``silent_after`` as :func:`read_status` takes it."""
    try:
        statuses = read_status(replication, roles, checker, silent_after=silent_after)
    except redis.exceptions.RedisError as e:
        raise RedisServerError(f"cannot read the replication state from Redis at {shown_url(url)}: {e}") from e
    if as_json:
        print(json.dumps(status_json(statuses, url)), flush=True)
    else:
        print_status(statuses, url)
        sys.stdout.flush()
    return exit_code(statuses)


def watch_status(
    replication: ReplicationLedger,
    roles: Mapping[str, str],
    url: str,
    *,
    as_json: bool,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
    checker: Checker | None = None,
    silent_after: float | None = None,
) -> int:
    """A round every ``interval`` seconds until interrupted; the last round's exit code.

    A round that cannot reach Redis says so on stderr and the watch goes on: what it
    watches may come back.
    """
    return watch_rounds(
        lambda: show_status(replication, roles, url, as_json, checker, silent_after),
        as_json=as_json,
        interval=interval,
        sleep=sleep,
    )


def cmd_repl_status(args: argparse.Namespace) -> int:
    config = load_cluster(config_file(args.config))
    access = config.redis_access("admin")
    url = access.url
    roles = {name: node.role for name, node in config.nodes.items()}
    client = connect(access, timeout=REDIS_TIMEOUT)
    try:
        replication = ReplicationLedger(client)
        checker = Checker(config, client)
        silent_after = heartbeat_window(config.settings.broker.accounts_poll_ms / 1000)
        if args.watch is None:
            return show_status(replication, roles, url, args.json, checker, silent_after)
        return watch_status(
            replication, roles, url, as_json=args.json, interval=args.watch, checker=checker, silent_after=silent_after
        )
    finally:
        client.close()


def unfollowed_standby(ledger: str, standby: str, hello: Mapping[str, Any] | None) -> str | None:
    """What ``vledger status`` and ``verify --cluster`` say of ``ledger``, whose cluster-file
    standby ``standby`` answered ``hello`` (None: it did not answer, said elsewhere): None when
    its hello lists the ledger among those it follows (PROTOCOL 10.9), else why not and what to
    run. A node reads its cluster file at its start only: a ledger named there since is not
    followed until it restarts, and a promotion then finds it holding nothing (outsider o21 F1).
    The caller skips a standby that became the ledger's home."""
    if hello is None:
        return None
    follows = hello.get("standby")
    listed = follows.get("ledgers") if isinstance(follows, Mapping) else None
    if isinstance(listed, list) and ledger in listed:
        return None
    return (
        f"{ledger}: its standby {standby} does not follow it ({standby} read its cluster file before the file"
        f" named it so): restart {standby}"
    )
