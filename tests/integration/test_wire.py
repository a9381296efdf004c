"""The tests' raw CURVE connection (cluster.Wire): a send that no peer takes fails the test."""

from __future__ import annotations

import time

import pytest
import zmq

from vledger.broker.client import NodeAddress
from vledger.broker.keys import new_keypair
from vledger.broker.redis_server import free_port
from vledger.tests.integration.cluster import Wire


def test_a_send_no_peer_takes_fails_with_a_clear_message_within_its_timeout() -> None:
    """A DEALER's blocking send to a node that refused its key hung a whole test run (shared/NOTES.md):
    nothing listens here, and with a one-message queue the second send has nowhere to go."""
    address = NodeAddress(f"tcp://127.0.0.1:{free_port()}", new_keypair().public)
    with Wire(address, new_keypair(), options={zmq.SNDHWM: 1}) as wire:
        wire.send(b"queued")
        started = time.monotonic()
        with pytest.raises(AssertionError, match=r"could not send within 0\.3 s"):
            wire.send([b"a", b"b"], timeout=0.3)
        assert time.monotonic() - started < 5
