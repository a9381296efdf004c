"""The ZAP catch-up of a key the node does not know, with a Redis that stopped answering (r13 #5)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from vledger.broker import accounts as accounts_module
from vledger.broker.accounts import AccountCache, AccountRegistry
from vledger.broker.curve import AllowList
from vledger.broker.keys import new_keypair
from vledger.broker.redis_server import connect

REDIS_TIMEOUT = 2.0  # NODE_REDIS_TIMEOUT: what each call to the silent Redis waits


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A Redis whose host was cut off: it accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(100)
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


def test_a_stranger_s_key_does_not_hold_the_authenticator_on_a_redis_that_stopped_answering(
    silent_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catch-up called Redis on the authenticator's one thread: each stranger's key held it
    REDIS_TIMEOUT (2 s), every handshake (known keys too) queued behind, all of the time."""
    monkeypatch.setattr(accounts_module, "_CATCH_UP_INTERVAL", 0.0)  # every unknown key asks
    client = connect(silent_redis, timeout=REDIS_TIMEOUT)
    cache = AccountCache(AccountRegistry(client), "ingest-2")
    known = new_keypair().public
    allow = AllowList([known])
    allow.on_unknown(cache.catch_up)
    try:
        for _ in range(5):
            started = time.monotonic()
            assert not allow.callback("*", new_keypair().public.encode())
            assert time.monotonic() - started < REDIS_TIMEOUT / 2
        started = time.monotonic()
        assert allow.callback("*", known.encode())
        assert time.monotonic() - started < REDIS_TIMEOUT / 2
    finally:
        cache.stop()
        client.close()
