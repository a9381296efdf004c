"""The cosignatures a node knows of a ledger's checkpoints, for the ``checkpoint`` command.

They come from Redis (``vledger:{<ledger>}:cosig``: each witness's latest cosigned note, and
``vledger:{<ledger>}:outside``: each outside witness's, as its home got it; open to whoever
reaches Redis) and, on a witness, from its own store (the latest checkpoint it
cosigned) and, on a home, the outside witnesses' cosignatures its feeder verified (13.9).
Nothing there is believed: vledger.node.cosigning checks every line on its own
with the ledger's checkpoint key, the cluster's witness keys and the outside witness keys
the ledger's genesis lists, and drops what fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from ..broker.redis_keys import is_ledger_name
from ..broker.replication import REDIS_ERRORS, ReplicationLedger
from ..broker.tallies import TallyBoard
from ..node.checkpoint_log import COSIGNED
from ..node.cosigning import GatheredCheckpoint, cosigned_by_witness, distinct_witnesses, gather, needed_witnesses
from ..node.epoch import EpochHistory, gather_in_epochs
from ..node.errors import QuorumError, SignatureError, VledgerError
from ..node.node_key_rotation import KeyHistory
from ..node.note import ALG_ED25519, VerifierKey, origin_for
from ..node.outside import OutsideWitnesses, outside_kind, outside_witnesses, quorum_note
from ..node.store import ChainStore
from ..node.tally_body import Snapshot
from ..node.witness import CheckpointKeys, cosignatures_in_force, witness_key, witness_name

log = logging.getLogger(__name__)


class KnownCosignatures:
    """Gathers a ledger's cosigned checkpoints from Redis and this node's store.

    ``key_of(ledger)`` is the ledger's checkpoint key (None: unknown, nothing is gathered
    beside the latest note as it is), ``witnesses`` the cluster's witness keys by node name,
    ``rotated()`` the keys in force now of those whose key rotated (node.witness.witness_keys_in_force),
    ``histories()`` the nodes' key histories (a rotated witness's replaced keys count only as
    16.6 says, node.witness.cosignatures_in_force), ``epochs_of(ledger)`` the epochs of the
    records this node stored (PROTOCOL 10.9): a ledger whose genesis pins a standby key is
    gathered by them, so that a promoted standby's checkpoints count and a fenced home's do not.
    """

    def __init__(
        self,
        cluster: str,
        store: ChainStore,
        replication: ReplicationLedger | None,
        witnesses: Mapping[str, VerifierKey],
        key_of: Callable[[str], VerifierKey | None],
        rotated: Callable[[], Iterable[VerifierKey]] | None = None,
        epochs_of: Callable[[str], EpochHistory | None] = lambda ledger: None,
        histories: Callable[[], Mapping[str, KeyHistory]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.histories = histories
        self.epochs_of = epochs_of
        self.rotated = rotated
        self.store = store
        self.replication = replication
        self.witnesses = tuple(witnesses.values())
        self.key_of = key_of
        self._outside_keys: dict[str, OutsideWitnesses | None] = {}
        # Per ledger, the largest checkpoint a quorum of its outside witnesses cosigned, joined
        # from this store's rows (a home's): (size, note); rows only grow, so only larger are read.
        self._quorum: dict[str, tuple[int, bytes | None]] = {}

    def gathered(self, ledger: str, latest: bytes) -> list[GatheredCheckpoint]:
        """Each checkpoint of ``ledger`` among ``latest``, Redis's and this store's cosigned notes,
        with the cosignatures that verified; largest first. Without Redis, what the store has."""
        log_key = self.key_of(ledger)
        if log_key is None:
            return []
        notes = [latest]
        listed = self._listed(ledger)
        outside = listed.keys if listed is not None else ()
        for kind in (COSIGNED, *(outside_kind(key.name) for key in outside)):
            kept = self.store.checkpoints.latest(ledger, kind)
            if kept is not None:
                notes.append(kept.note)
        if listed is not None:
            joined = self._joined(ledger, listed)
            if joined is not None:
                notes.append(joined)
        if self.replication is not None:
            try:
                notes.extend(self.replication.cosignatures(ledger).values())
                if outside:
                    notes.extend(self.replication.outside_cosignatures(ledger).values())
            except REDIS_ERRORS as e:
                log.warning("checkpoint of %s: Redis unavailable (%s); serving the cosignatures kept here", ledger, e)
        # A witness whose key rotated (PROTOCOL 16.6): its keys in force now, beside its key file's.
        rotated = tuple(self.rotated()) if self.rotated is not None else ()
        trusted = (*self.witnesses, *rotated, *outside)
        # Its replaced keys only as their rotation allows, the key file's among them (16.6).
        counts = cosignatures_in_force(self.cluster, self.histories()) if self.histories is not None else None
        history = self.epochs_of(ledger)
        if history is not None and history.standby_key is not None:
            return gather_in_epochs(notes, history, trusted, counts)
        return gather(notes, log_key, origin_for(self.cluster, ledger), trusted, counts)

    def cluster_names(self) -> frozenset[str]:
        """The names of the cluster's witnesses' keys (a rotated one's in force too, 16.6): the
        cosigners the epoch rule counts (PROTOCOL 13.5 step 3), never an outside witness."""
        rotated = tuple(self.rotated()) if self.rotated is not None else ()
        return frozenset(key.name for key in (*self.witnesses, *rotated))

    def outside_names(self, ledger: str) -> frozenset[str]:
        """The names of the outside witnesses ``ledger``'s genesis lists (none when it lists none)."""
        return frozenset(key.name for key in self._outside(ledger))

    def _outside(self, ledger: str) -> tuple[VerifierKey, ...]:
        """The outside witness keys ``ledger``'s genesis lists (none when it lists none)."""
        listed = self._listed(ledger)
        return listed.keys if listed is not None else ()

    def _listed(self, ledger: str) -> OutsideWitnesses | None:
        """The outside witnesses ``ledger``'s genesis lists and their quorum (None: it lists none)."""
        if ledger in self._outside_keys:
            return self._outside_keys[ledger]
        try:
            rules = self.store.rules(ledger).rules
        except VledgerError:
            return None  # no genesis here yet: asked again next time
        try:
            listed = outside_witnesses(ledger, rules, self.cluster)
        except VledgerError as e:  # a chain may hold one (section 4 does not check it): none counts
            log.warning("the genesis of %s lists outside witnesses that cannot be used: %s", ledger, e)
            listed = None
        self._outside_keys[ledger] = listed
        return listed

    def _joined(self, ledger: str, listed: OutsideWitnesses) -> bytes | None:
        """The note of the largest checkpoint a quorum of ``listed`` cosigned, their lines joined
        from this store's rows (a home keeps each witness's, 13.9), or None. Each witness's newest
        note alone may carry a size none other cosigned (one lags): the quorum's stays found."""
        size, note = self._quorum.get(ledger, (-1, None))
        kinds = [outside_kind(key.name) for key in listed.keys]
        rows = self.store.checkpoints.shared(ledger, kinds, listed.quorum, above=size)
        if rows:
            try:
                note = quorum_note(row.note for row in rows)
            except VledgerError as e:  # one size and root hold one text: the rows were changed
                log.warning("the outside cosignatures of %s at size %d do not join: %s", ledger, rows[0].size, e)
                return note
            self._quorum[ledger] = (rows[0].size, note)
        return note


class WitnessedNotes:
    """For a follower (PROTOCOL 10.7, ``Follower.refresh_witnessed``): what the cluster's
    witnesses say they cosigned last of some ledgers, each one's note in Redis whose cosignature
    line by that witness verifies (its log signature not checked: the follower's key chain may
    lack the rotation that names its key), and how many witnesses make a quorum: a majority
    of those whose keys this node holds. None while Redis does not answer.

    ``witnesses`` are the cluster's witness keys by node name but the follower's own (``own``):
    its note says what its store held, and a store put back republishes its old one at start
    (10.7), so it would never count toward the quorum that holds it back; ``rotated()`` and
    ``histories()`` as :class:`KnownCosignatures` (a rotated witness's keys in force, its
    replaced keys' lines only as 16.6 allows)."""

    def __init__(
        self,
        cluster: str,
        replication: ReplicationLedger,
        witnesses: Mapping[str, VerifierKey],
        own: str,
        rotated: Callable[[], Iterable[VerifierKey]] | None = None,
        histories: Callable[[], Mapping[str, KeyHistory]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.replication = replication
        self.names = tuple(name for name in witnesses if name != own)
        self.witnesses = tuple(witnesses[name] for name in self.names)
        self.own = witness_name(cluster, own)  # its keys' name: a rotated key of its own is left out too
        self.rotated = rotated
        self.histories = histories

    def __call__(self, above: Mapping[str, int]) -> dict[str, tuple[dict[str, bytes], int]] | None:
        """Per ledger of ``above`` (ledger -> the size the follower holds), the witnesses' notes of
        larger sizes (witness -> note) and the quorum; one Redis round trip for them all."""
        try:
            read = self.replication.cosignatures_of(above, self.names)
        except REDIS_ERRORS as e:
            log.debug("the witnesses' notes: Redis unavailable (%s)", e)
            return None
        rotated = [key for key in self.rotated() if key.name != self.own] if self.rotated is not None else []
        keys = (*self.witnesses, *rotated)
        counts = cosignatures_in_force(self.cluster, self.histories()) if self.histories is not None else None
        needed = needed_witnesses(distinct_witnesses(keys))
        return {
            ledger: (
                cosigned_by_witness(notes.values(), origin_for(self.cluster, ledger), keys, counts, above[ledger]),
                needed,
            )
            for ledger, notes in read.items()
        }


def largest_cosigned(
    replication: ReplicationLedger,
    cluster: str,
    keys: CheckpointKeys,
    node: str,
    sign_hex: str,
) -> dict[str, int]:
    """Ledger -> the size of the checkpoint witness ``node`` cosigned last with its Ed25519 key
    ``sign_hex`` (hex), from Redis's ``vledger:{<ledger>}:cosig:<node>`` of every ledger a home
    announced: what a ``key_rotation`` of that key states as ``cosigned`` (PROTOCOL 16.6).

    Each note's log signature must verify with that ledger's own checkpoint key in force at its
    size or epoch (``keys``: the key chain its genesis pins, 13.8, and its epochs, 10.9; whatever
    node homes it, not this node's key) and the note must carry that key's cosignature line;
    one that does not (or none) leaves its ledger out, and the replaced key's cosignatures of that
    ledger then count nowhere: the bound errs toward counting too little, never more than the
    witness showed it cosigned on a checkpoint its home signed. Raises the Redis errors (REDIS_ERRORS).
    """
    witness = witness_key(witness_name(cluster, node), bytes.fromhex(sign_hex))
    sizes: dict[str, int] = {}
    for ledger in sorted(replication.ledgers()):
        note = replication.cosignatures(ledger, [node]).get(node)
        if note is None:
            continue
        try:
            checkpoint = keys.check(ledger, note)
            if not cosigned_by_witness([note], origin_for(cluster, ledger), [witness]):
                raise QuorumError(f"its note of {ledger} carries no line by {witness.name}+{witness.key_id:08x}")
        except VledgerError as e:
            log.warning("rotation of %s: its cosignature of %s is not counted (%s: %s)", node, ledger, e.code, e)
            continue
        sizes[ledger] = checkpoint.size
    return sizes


MAX_TALLIED_LEDGERS = 1024  # ledgers read for one rotation: a left-out one only counts the old key less


def _ledger_names(ledgers: Iterable[str]) -> list[str]:
    """``ledgers`` that are ledger names, each once, in the order given, at most
    MAX_TALLIED_LEDGERS: every ingest node's Redis user may HSET any name into ``{ledgers}``,
    and a rotation read each one by one, past its client's timeout."""
    names: dict[str, None] = {}
    for ledger in ledgers:
        if len(names) == MAX_TALLIED_LEDGERS:
            break
        if is_ledger_name(ledger):
            names[ledger] = None
    return list(names)


def tallied_heights(board: TallyBoard, ledgers: Iterable[str], observer: str, sign_hex: str) -> dict[str, int]:
    """Ledger -> the height of ``observer``'s latest tally of it (the entry its ``tally:latest``
    key names, PROTOCOL 11.1) whose signature verifies with its Ed25519 key ``sign_hex`` (hex)
    and whose body is one stating that observer, that ledger and the entry's height (11.3):
    what a ``key_rotation`` of that key states as ``tallied`` (16.6). A ledger with no such
    entry is left out, and the replaced key's tallies of it then count nowhere: the bound errs
    toward counting too little, never more than the observer showed it signed. Raises the
    Redis errors, a NOPERM included (REDIS_ERRORS).
    """
    key = VerifierKey("tally", ALG_ED25519, bytes.fromhex(sign_hex))
    heights: dict[str, int] = {}
    for ledger in _ledger_names(ledgers):
        published = board.latest_entry(ledger, observer)
        if published is None:
            continue
        try:
            if not key.verify_raw(published.body, published.signature):
                raise SignatureError(f"its latest tally of {ledger} is not signed by {sign_hex[:16]}...")
            heights[ledger] = Snapshot.decode(published.body).stating(observer, ledger, published.height).height
        except VledgerError as e:
            log.warning("rotation of %s: its tally of %s is not counted (%s: %s)", observer, ledger, e.code, e)
    return heights
