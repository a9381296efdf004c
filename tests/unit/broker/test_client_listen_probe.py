"""(review r23 F4) the listen probe takes a connect that times out for
'nothing accepts a connection: the node is down'. A node that listens but whose accept queue
is full (a loaded node, a flood the connection guard is cutting) drops SYNs: the probe times
out within min(1 s, the client's timeout) and the CLI sends the user to `vledger status` for a
node that is up."""

from __future__ import annotations

import socket

from vledger.broker.client import NodeAddress, _silent


def test_a_listening_node_whose_accept_queue_is_full_is_not_called_down() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)  # never accepted: the queue fills with the first connection or two
    port = server.getsockname()[1]
    held = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            held.append(c)
        error = _silent(NodeAddress(f"tcp://127.0.0.1:{port}", "k" * 40), "no answer within 0.3 s", 0.3)
        assert error.listening is not False, error
    finally:
        for c in held:
            c.close()
        server.close()
