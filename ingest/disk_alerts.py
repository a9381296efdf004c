"""A home's ``disk_full`` alert (PROTOCOL 10.5): its puts were refused ``disk_full`` with no
alert of its own, while a follower on a full disk raised one (op33).

The store calls :class:`DiskFullAlerts` from its committer thread (ChainStore.on_full): for
each group commit that found the disk full, with the first height of each ledger it would have
written; and once when a commit succeeds again. One alert per ledger is raised, then all are
resolved together: the room is back for every ledger at once. Redis takes it even when the
node's alert journal, on the same full disk, cannot (ReplicationLedger.alert).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..broker.replication import REDIS_ERRORS, Alert, ReplicationLedger, raise_alert
from ..node.errors import DiskFullError
from ..node.storefile import MAX_HEIGHT
from .replica import resolve_alerts

log = logging.getLogger(__name__)


class DiskFullAlerts:
    """The ``disk_full`` alerts of node ``name``'s own writes: raised and resolved through ``replication``."""

    def __init__(self, name: str, replication: ReplicationLedger) -> None:
        self.name = name
        self.replication = replication
        # Keys raised and not resolved yet. Group commits run one at a time: no lock.
        self._open: set[str] = set()

    def __call__(self, error: DiskFullError | None, first: Mapping[str, int]) -> None:
        if error is None:
            self._resolve()
            return
        for ledger, height in sorted(first.items()):
            alert = Alert(self.name, ledger, height, error.code, error.message, source=self.name)
            if alert.key not in self._open:  # a retry says nothing the first did not
                self._open.add(alert.key)
                raise_alert(self.replication, alert)

    def adopt(self) -> bool:
        """Take the ``disk_full`` alerts of a ledger an earlier run of this node left open as
        this run's, to resolve at its first commit that succeeds (review r20 F6: kept only in
        memory, they stayed open for good after the usual cure, room made and a restart).
        Whether any was; Redis away and no journal: none taken (a later run takes them)."""
        try:
            held = self.replication.own_open_alerts()
        except REDIS_ERRORS as e:
            log.warning("%s: open disk_full alerts not read, Redis unavailable (%s)", self.name, e)
            return False
        self._open |= {
            key
            for key, alert in held.items()
            if alert.get("node") == self.name and alert.get("what") == DiskFullError.code and alert.get("ledger")
        }
        return bool(self._open)

    def _resolve(self) -> None:
        if not self._open:
            return
        keys = sorted(self._open)
        self._open.clear()
        log.info("%s: disk space back, resolved %s", self.name, ", ".join(keys))
        resolve_alerts(self.replication, keys, MAX_HEIGHT)
