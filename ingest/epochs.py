"""Each ledger's epochs as a node's own store holds them (PROTOCOL 10.9), for its checks.

A follower checks a checkpoint of a ledger that may hand over by the epochs of the records
it stored (node/epoch.py); a home signs with its epoch's line and refuses writes once its
store names another home. This book builds a ledger's history from its store on first use
(only a ledger whose genesis pins a standby key is scanned, and only its records that can
be handover records are decoded) and is told of every record stored after that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from ..config.settings import PROTOCOL_LIMITS
from ..node.epoch import EPOCH_KIND, EpochHistory
from ..node.errors import BadGenesisError
from ..node.record import Record, decode_record
from ..node.store import ChainStore

log = logging.getLogger(__name__)

# The kind's msgpack string (fixstr of 5 bytes): a record without these bytes is no handover.
_EPOCH_MARK = b"\xa5" + EPOCH_KIND.encode()


class EpochBook:
    """The epochs of every ledger ``store`` holds. Thread-safe (the follow thread feeds it,
    the request loop and the outbox read it)."""

    def __init__(self, cluster: str, store: ChainStore) -> None:
        self.cluster = cluster
        self.store = store
        self._lock = threading.Lock()
        self._histories: dict[str, EpochHistory | None] = {}

    def history(self, ledger: str) -> EpochHistory | None:
        """The ledger's epochs up to the store's head; None while it holds no genesis, or when
        the genesis pins keys that are not this cluster's (then only the pinned key checks)."""
        with self._lock:
            if ledger in self._histories:
                return self._histories[ledger]
            genesis = self.store.get(ledger, 0)
            if genesis is None:
                return None
            try:
                history: EpochHistory | None = EpochHistory(self.cluster, genesis, self.store.rules(ledger))
            except BadGenesisError as e:
                log.warning("no epochs of %s: %s", ledger, e.message)
                history = None
            if history is not None and history.standby_key is not None:
                for error in history.feed(self._handovers(ledger)):
                    log.warning("%s", error.message)
            self._histories[ledger] = history
            return history

    def stored(self, records: Iterable[Record]) -> None:
        """Records just stored (each ledger's in height order): the handovers among them open epochs."""
        with self._lock:
            for record in records:
                if record.height == 0:
                    self._histories.pop(record.ledger, None)  # built from the genesis when asked
                    continue
                history = self._histories.get(record.ledger)
                # Already read, when the history was built from the store after it was stored.
                if history is not None and record.content.kind == EPOCH_KIND and record.height > history.current.height:
                    for error in history.feed([record]):
                        log.warning("%s", error.message)

    def _handovers(self, ledger: str) -> Iterable[Record]:
        for _, data in self.store.range_raw(ledger, 1):
            if _EPOCH_MARK in data:
                yield decode_record(data, PROTOCOL_LIMITS)
