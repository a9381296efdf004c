"""The cosignatures a node knows of a ledger's checkpoints, for the ``checkpoint`` command.

They come from Redis (``vledger:{<ledger>}:cosig``: each witness's latest cosigned note, open to
whoever reaches Redis) and, on a witness, from its own store (the latest checkpoint it
cosigned). Nothing there is believed: vledger.node.cosigning checks every line on its own
with the ledger's checkpoint key and the cluster's witness keys, and drops what fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from ..broker.replication import REDIS_ERRORS, ReplicationLedger
from ..node.checkpoint_log import COSIGNED
from ..node.cosigning import GatheredCheckpoint, gather
from ..node.note import VerifierKey, origin_for
from ..node.store import ChainStore

log = logging.getLogger(__name__)


class KnownCosignatures:
    """Gathers a ledger's cosigned checkpoints from Redis and this node's store.

    ``key_of(ledger)`` is the ledger's checkpoint key (None: unknown, nothing is gathered
    beside the latest note as it is), ``witnesses`` the cluster's witness keys by node name.
    """

    def __init__(
        self,
        cluster: str,
        store: ChainStore,
        replication: ReplicationLedger | None,
        witnesses: Mapping[str, VerifierKey],
        key_of: Callable[[str], VerifierKey | None],
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.replication = replication
        self.witnesses = tuple(witnesses.values())
        self.key_of = key_of

    def gathered(self, ledger: str, latest: bytes) -> list[GatheredCheckpoint]:
        """Each checkpoint of ``ledger`` among ``latest``, Redis's and this store's cosigned notes,
        with the cosignatures that verified; largest first. Without Redis, what the store has."""
        log_key = self.key_of(ledger)
        if log_key is None:
            return []
        notes = [latest]
        kept = self.store.checkpoints.latest(ledger, COSIGNED)
        if kept is not None:
            notes.append(kept.note)
        if self.replication is not None:
            try:
                notes.extend(self.replication.cosignatures(ledger).values())
            except REDIS_ERRORS as e:
                log.warning("checkpoint of %s: Redis unavailable (%s); serving the cosignatures kept here", ledger, e)
        return gather(notes, log_key, origin_for(self.cluster, ledger), self.witnesses)
