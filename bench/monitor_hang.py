"""libzmq's socket monitor, read by nobody, blocks its Context's I/O thread: a reproducer.

Not a figure of `make bench`: ``.venv/bin/python -m bench.monitor_hang``. It needs pyzmq only (no
vledger code), and runs each case in a child process of its own, since a blocked Context cannot
be relied on to end. In each, a PUB socket is monitored (EVENT_ACCEPTED | EVENT_DISCONNECTED)
into a PAIR, as broker/curve_guard.py does; that PAIR is closed while the PUB is still open and
monitored ("reader closed first"), or after ``disable_monitor()`` ("monitor stopped first"); then
one TCP client connects to the PUB and leaves. Printed: whether a fresh PUB and SUB of the same
Context still deliver a message within 5 s.

With libzmq 4.3.5 (pyzmq 27.3) the first case delivers nothing, every run: the I/O thread emits
the accept event with a blocking ``zmq_msg_send`` into the monitor's own PAIR, which has no peer
any more, and waits there for good (gdb: thread ZMQbg/IO/0 in ``zmq_msg_send`` -> ``poll``,
timeout -1); no socket of the Context accepts, completes a handshake or delivers again. This is
what made half the runs of tests/unit/ingest/test_node_key_rotation.py fail when the feed's PUB
was first guarded: a guard stopped its reader before its socket closed, a subscriber closing
meanwhile sent the event, and the test after it (the outbox's feed proxy) found the process's
Context dead. The proxy and the rotation had nothing to do with it.
"""

from __future__ import annotations

import subprocess
import sys

CASE = """
import socket, sys, time
import zmq

ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.linger = 0
pub.monitor("inproc://monitor", zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
reader = ctx.socket(zmq.PAIR)
reader.linger = 0
reader.rcvhwm = 0
reader.connect("inproc://monitor")
port = pub.bind_to_random_port("tcp://127.0.0.1")
if sys.argv[1] == "stop-first":
    pub.disable_monitor()
reader.close()
with socket.create_connection(("127.0.0.1", port)):
    pass
other, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
other_port = other.bind_to_random_port("tcp://127.0.0.1")
sub.subscribe(b"")
sub.connect(f"tcp://127.0.0.1:{other_port}")
deadline = time.monotonic() + 5.0
delivered = False
while time.monotonic() < deadline and not delivered:
    other.send(b"beat")
    delivered = bool(sub.poll(50))
print("delivered" if delivered else "nothing delivered in 5 s: the I/O thread is blocked", flush=True)
import os
os._exit(0)
"""


def run(case: str) -> str:
    done = subprocess.run([sys.executable, "-c", CASE, case], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def main() -> None:
    import zmq  # noqa: PLC0415 - only to say which libzmq ran

    print(f"libzmq {zmq.zmq_version()}, pyzmq {zmq.pyzmq_version()}")
    for case, what in (("reader-first", "reader closed first"), ("stop-first", "monitor stopped first")):
        print(f"{what}: {run(case)}")


if __name__ == "__main__":
    main()
