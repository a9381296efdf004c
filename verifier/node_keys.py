"""The nodes' rotated Ed25519 keys, for checkers that hold only the key directory (PROTOCOL 16.6).

A checker outside the nodes (``vledger tally``, the gateway) reads a copy of the admin ledger
(the Redis cache ``{accounts}:admin:records``, or a store) and checkpoint notes of it, and
believes neither: the largest note that verifies with the admin ledger's checkpoint key (its
home's ``<home>.sign.pub`` of the key directory, named ``<cluster>/admin``; the admin genesis pins
none, 16.1) is the one the rotations are proven in (node/node_keys.py), each record by its
inclusion proof. A copy that disagrees with the note proves nothing and is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from ..broker.signing import admin_checkpoint_key, witness_keys
from ..config.cluster import ClusterConfig
from ..node.admin_copy import proven_admin_records
from ..node.errors import VledgerError
from ..node.node_key_rotation import KeyHistory, key_histories
from ..node.node_keys import NodeKeys, node_keys_of, proven_rotations
from ..node.note import VerifierKey, verify_checkpoint
from ..node.rules.admin import ADMIN_LEDGER
from ..node.witness import witness_keys_in_force

log = logging.getLogger(__name__)

STREAM_PAGE = 1000  # records of the admin ledger's Redis stream read per call


def follow_copy(
    records: Sequence[bytes], notes: Iterable[bytes], admin_key: VerifierKey, nodes: Collection[str] | None = None
) -> tuple[NodeKeys | None, tuple[dict[str, Any], ...]]:
    """The evidence of the rotations of ``nodes`` (all when None) in the copy ``records`` (from
    height 0) under the largest of ``notes`` that verifies with ``admin_key`` and that the copy
    reaches, and the rotations it proves; (None, ()) when there is none. A note that does not
    verify is skipped; evidence that does not prove (a copy that is not the signed tree) is
    logged and gives none."""
    return _follow(records, list(notes), admin_key, nodes)[1:]


def follow_copies(
    copies: Iterable[Sequence[bytes]],
    notes: Iterable[bytes],
    admin_key: VerifierKey,
    nodes: Collection[str] | None = None,
) -> tuple[NodeKeys | None, tuple[dict[str, Any], ...]]:
    """:func:`follow_copy` of whichever of ``copies`` one of ``notes`` proves the most records
    of: the admin ledger only grows, so a copy proven shorter is an older view (an insider's
    set-back checkpoint and list, outsider o9 J5), never a reason to drop a rotation another
    copy proves."""
    notes = list(notes)
    best: tuple[int, NodeKeys | None, tuple[dict[str, Any], ...]] = (-1, None, ())
    for records in copies:
        found = _follow(records, notes, admin_key, nodes)
        if found[0] > best[0]:
            best = found
    return best[1:]


def _follow(
    records: Sequence[bytes], notes: Sequence[bytes], admin_key: VerifierKey, nodes: Collection[str] | None
) -> tuple[int, NodeKeys | None, tuple[dict[str, Any], ...]]:
    """:func:`follow_copy`'s answer after the size of the checkpoint that proves it (-1: none)."""
    best: tuple[int, bytes] | None = None
    for note in notes:
        try:
            size = verify_checkpoint(note, admin_key).checkpoint.size
        except VledgerError:
            continue
        if size <= len(records) and (best is None or size > best[0]):
            best = (size, note)
    if best is None:
        return -1, None, ()
    try:
        evidence = node_keys_of(records, best[1], nodes)
        if evidence is None:
            proven_admin_records(records, best[1], admin_key)  # no rotation: the copy is still judged
            return best[0], None, ()
        return best[0], evidence, proven_rotations(evidence, admin_key)
    except VledgerError as e:
        log.warning("the admin ledger's copy does not prove its key rotations (%s: %s)", e.code, e.message)
        return -1, None, ()


def witness_histories_of(
    witnesses: Mapping[str, VerifierKey], rotations: Iterable[Mapping[str, Any]]
) -> dict[str, KeyHistory]:
    """The key histories of the witness nodes of ``witnesses`` (node -> its generation-0 key)
    whose key ``rotations`` rotated, by node."""
    original = {node: ("", key.public_key.hex()) for node, key in witnesses.items()}
    histories = key_histories(original, [r for r in rotations if r.get("node") in original])
    return {node: h for node, h in histories.items() if len(h.generations) > 1}


def rotated_witness_keys_now(
    config: ClusterConfig, rotations: Iterable[Mapping[str, Any]], now_ms: int
) -> list[VerifierKey]:
    """The cosignature keys in force at ``now_ms`` of the cluster's witnesses whose key rotated,
    as ``rotations`` (proven: a :class:`ProvenRotations`' list) say."""
    histories = witness_histories_of(witness_keys(config), rotations)
    return witness_keys_in_force(config.name, histories, histories, now_ms)


def witness_histories_now(config: ClusterConfig, client: Any) -> dict[str, KeyHistory]:
    """The key histories, by node, of the cluster's witnesses whose key rotated, as the admin
    ledger's cache in Redis proves them (:func:`follow_redis`). Raises Redis errors."""
    return witness_histories_of(witness_keys(config), follow_redis(config, client))


def follow_redis(config: ClusterConfig, client: Any) -> tuple[dict[str, Any], ...]:
    """The key rotations proven by the admin ledger's copies in Redis (the accounts' cache
    ``{accounts}:admin:records`` and the ledger's stream) under its home's latest checkpoint
    there (``vledger:{admin}:checkpoint``) or a witness's latest cosigned one, whichever proves
    the most records (:func:`follow_copies`); () when there is none or no key to check them with.
    A reader with no memory of its own (a command) has only Redis: one who sets an older
    checkpoint back there must set back every one of these. Raises Redis errors."""
    # Redis's modules are imported by what reads Redis: the client (client/session.py) checks
    # keys with this module's other functions and needs no Redis.
    from ..broker.accounts import AccountRegistry  # noqa: PLC0415
    from ..broker.replication import ReplicationLedger  # noqa: PLC0415

    admin_key = admin_checkpoint_key(config)
    if admin_key is None:
        return ()
    replication = ReplicationLedger(client)
    note = client.get(replication.checkpoint_key(ADMIN_LEDGER))
    witnesses = replication.cosignatures(ADMIN_LEDGER, witness_keys(config))
    notes = [*([note] if note else []), *witnesses.values()]
    copies = (AccountRegistry(client).admin_records(), _stream_copy(replication))
    return follow_copies(copies, notes, admin_key)[1]


def _stream_copy(replication: Any) -> list[bytes]:
    """The admin ledger's records in its Redis stream from height 0 on, as far as they follow one
    another (a trimmed or broken stream gives fewer, maybe none)."""
    records: list[bytes] = []
    while True:
        page = replication.read(ADMIN_LEDGER, len(records), STREAM_PAGE)
        for record in page:
            if record.height != len(records):
                return records
            records.append(record.data)
        if len(page) < STREAM_PAGE:
            return records


class ProvenRotations:
    """The key rotations ``read`` proves now (:meth:`of_redis`: Redis's copies), unless they lack
    the newest one this reader proved before: a key view never goes back (PROTOCOL 16.4, "a node
    keeps what it proved"). The admin ledger only grows, so a list without it is an older,
    genuinely signed checkpoint set back in Redis (by an insider, or a restored dump): taken, it
    checked an observer's tallies signed with its new key against its replaced one (outsider o8
    J5), and left a rotated witness's cosignatures by its new key uncounted. Not their number: a
    copy's evidence holds the last MAX_NODE_ROTATIONS, so past that a set-back list was as long.
    Raises what ``read`` raises."""

    def __init__(self, read: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self._read = read
        self._proven: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(
        cls, config: ClusterConfig, client: Any, read: Callable[[], Iterable[Mapping[str, Any]]] | None = None
    ) -> ProvenRotations:
        """Those ``read`` gives (a process's own proven copy), else :meth:`of_redis`'s."""
        return cls(read) if read is not None else cls.of_redis(config, client)

    @classmethod
    def of_redis(cls, config: ClusterConfig, client: Any) -> ProvenRotations:
        """Those the admin ledger's copies in ``client``'s Redis prove (:func:`follow_redis`)."""
        return cls(lambda: follow_redis(config, client))

    def __call__(self) -> tuple[Mapping[str, Any], ...]:
        rotations = tuple(self._read())
        # Admin records are accepted in increasing time (16.2): the newest is the latest accepted.
        newest = max(self._proven, key=lambda r: int(r.get("accepted", 0)), default=None)
        if newest is not None and newest not in rotations:
            log.warning(
                "the admin ledger's copy in Redis proves %d key rotations, not the newest of the %d proven before"
                " (node %s): those stay in force",
                len(rotations),
                len(self._proven),
                newest.get("node"),
            )
            return self._proven
        self._proven = rotations
        return rotations
