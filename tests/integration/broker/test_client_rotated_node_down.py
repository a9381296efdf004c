"""Review r29 (178e29c2, outsider o17): "a node nothing listens for is said to be down after a
second, whatever --timeout" (README). Not once the node's keys rotated: node_address then gives
its rotation endpoint too (``also``; config/cluster.toml names a rotation_port for every node),
the socket is ``immediate``, a send finds no way to a node that is down, and the client waits
in _send_when_possible to its full timeout before it looks whether anything listens."""

from __future__ import annotations

import time

import pytest

from vledger.broker.client import Client, NodeAddress
from vledger.broker.keys import new_keypair
from vledger.broker.redis_server import free_port
from vledger.node.errors import NodeUnavailableError


def test_a_rotated_node_nothing_listens_for_is_told_before_the_timeout() -> None:
    node = NodeAddress(f"tcp://127.0.0.1:{free_port()}", new_keypair().public, also=(f"tcp://127.0.0.1:{free_port()}",))
    patience = 12.0
    with Client(node, new_keypair(), timeout=patience) as client:
        started = time.monotonic()
        with pytest.raises(NodeUnavailableError, match="nothing accepts a connection") as down:
            client.call("hello")
        took = time.monotonic() - started
        assert down.value.listening is False
        assert took < patience / 2, f"{took:.1f} s to learn that nothing listens (the timeout: {patience:g} s)"
        assert client._connections == {}  # the next call connects afresh
