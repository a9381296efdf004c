"""A node container's main process: run the node; after EXIT_STORE_DAMAGED, stay up, idle.

It is not PID 1: docker-compose.yml gives every service ``init: true``, so Docker's init runs
first, hands it ``docker stop``'s signal and reaps whatever is orphaned in the container (this
process waits for the node alone, and a process orphaned by a node's worker would otherwise
stay a zombie, as PID 1's child, for the container's life).

``python -m vledger.tools.container_entry vledger --log-level info replica ...`` (docker-compose.yml's
node services) runs the command after it as its child, hands SIGTERM and SIGINT on to it, and
ends with its status, except one: a node whose store is damaged exits EXIT_STORE_DAMAGED (65)
so that it is not started again on the same store. supervisord honours that (``exitcodes``,
config/supervisor.py), but Docker's restart policies tell no status from another:
``unless-stopped`` starts such a node again at once, for ever, each start raising its alert
again, and ``on-failure:N`` would as well give up on a node that failed N times for a passing
reason (Redis away, a port still held). So after a 65 this process logs why it stays and waits
for ``docker stop``: the container keeps running, nothing restarts it, its health check fails
(``unhealthy`` in ``docker compose ps``), and once the store is repaired (``vledger repair``)
``docker compose restart NODE`` runs the node again. It then ends with 65, which ``docker ps -a``
shows. Any other status ends the container with it, and its restart policy acts as before.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ..broker.logs import configure_logging
from ..config.supervisor import EXIT_STORE_DAMAGED

log = logging.getLogger("vledger.container")

EXIT_USAGE = 2
FORWARDED = (signal.SIGTERM, signal.SIGINT)
IDLE_POLL_S = 1.0  # how often the idle wait looks at its event; a signal ends it sooner


def run(command: Sequence[str]) -> int:
    """Run ``command`` to its end; stay idle after an EXIT_STORE_DAMAGED until SIGTERM or SIGINT."""
    stopping = threading.Event()
    received: list[int] = []
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    # The handlers before the child: a stop that comes as it starts reaches it, or keeps it from
    # idling after a 65.
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        if received:
            return 128 + received[0]
        child = subprocess.Popen(list(command))
        children.append(child)
        if received:  # came while it started, before forward could see it
            child.send_signal(received[0])
        status = child.wait()
        if status < 0:  # killed by a signal: the status a shell reports
            return 128 - status
        if status != EXIT_STORE_DAMAGED or stopping.is_set():
            return status
        log.error(
            "the node exited %d: its store is damaged (its store_damaged alert says where). This container "
            "stays up, idle, so that Docker does not start the node again on the same store; repair the "
            "store (vledger repair NODE), then run `docker compose restart` on this service",
            status,
        )
        while not stopping.wait(IDLE_POLL_S):
            pass
        return EXIT_STORE_DAMAGED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m vledger.tools.container_entry COMMAND [ARGUMENT ...]", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("info")
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
