"""The thread that keeps a node's open alerts in Redis (PROTOCOL 10.5).

Every ``alerts_recheck_ms`` (and once at start) it puts back what the node's alert journal
(broker/alert_journal.py) holds open and Redis lost: a ``FLUSHALL``, a Redis restarted
without its files, or an insider deleting the node's alert keys. One read of the journal a
pass, and one HMGET of the fields it holds open while it holds any (not the whole hash:
the node's own Redis user may fill it with a million others): nothing on a record's path.
"""

from __future__ import annotations

import logging

from ..broker.replication import REDIS_ERRORS, ReplicationLedger
from .worker import Worker

log = logging.getLogger(__name__)


class AlertKeeper(Worker):
    """Calls :meth:`ReplicationLedger.reassert` every ``interval`` seconds until stopped."""

    def __init__(self, replication: ReplicationLedger, interval: float) -> None:
        super().__init__("alert-keeper")
        self.replication = replication
        self.interval = interval

    def _run(self) -> None:
        while True:
            try:
                self.replication.reassert()  # each one put back is logged
            except REDIS_ERRORS as e:  # Redis away: the journal keeps them until it is back
                log.debug("open alerts not checked in Redis: %s", e)
            if self.stopping.wait(self.interval):
                return
