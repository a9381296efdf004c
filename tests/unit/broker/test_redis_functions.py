"""The functions library (broker/functions.lua) and its Python side (broker/redis_functions.py),
on a real redis-server whose default user may load it (the tests' Redis: no access control)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import redis

from vledger.broker import redis_functions


def test_the_library_and_every_function_carry_the_version_of_its_text() -> None:
    source = redis_functions.LIBRARY_FILE.read_text()
    assert redis_functions.LIBRARY.startswith(f"#!lua name={redis_functions.LIBRARY_NAME}\n")
    assert "@VERSION@" in source and "@VERSION@" not in redis_functions.LIBRARY
    assert len(redis_functions.VERSION) == 16 and f"vledger_{redis_functions.VERSION}" == redis_functions.LIBRARY_NAME
    assert redis_functions.function_name("append") == f"vledger_{redis_functions.VERSION}_append"
    with pytest.raises(KeyError):
        redis_functions.function_name("eval")
    reads = {name for name, read_only in redis_functions.FUNCTIONS.items() if read_only}
    assert reads == {"ping", "snapshot", "lookup", "admin_records_digest", "tally_read", "read_open"}
    assert redis_functions.command("snapshot", ["k"], ["a"])[0] == "FCALL_RO"
    assert redis_functions.command("append", ["k"], ["a"])[:3] == ("FCALL", redis_functions.function_name("append"), 1)


def test_a_read_only_function_is_flagged_no_writes_and_refused_a_write(redis_client: Any) -> None:
    redis_functions.load(redis_client)
    fcall_ro = ("FCALL_RO", redis_functions.function_name("advance"), 1, "vledger:{x}:held:n", "n", 1, "x", "ch")
    with pytest.raises(redis.exceptions.ResponseError, match=r"write flag using \*_ro"):
        redis_client.execute_command(*fcall_ro)
    assert redis_functions.RedisFunction(redis_client, "ping")() == redis_functions.VERSION.encode()


def test_the_loader_loads_the_library_again_whenever_redis_lost_it(redis_client: Any) -> None:
    redis_client.function_flush()
    assert not redis_functions.loaded(redis_client)
    stop = threading.Event()
    keeper = threading.Thread(target=redis_functions.keep_loaded, args=(redis_client, stop, 0.02), daemon=True)
    keeper.start()
    try:
        for _ in range(2):
            deadline = time.monotonic() + 10
            while not redis_functions.loaded(redis_client):
                assert time.monotonic() < deadline, "the loader did not load the library"
                time.sleep(0.01)
            redis_client.function_flush()  # lost again: an operator's FUNCTION FLUSH
    finally:
        stop.set()
        keeper.join(5)
    assert not keeper.is_alive()


def _tampered(marker: str = "-- tampered") -> str:
    """The library under this version's name, with other code: what a holder of the loader's
    password loads by FUNCTION LOAD REPLACE (outsider o22 F1)."""
    return redis_functions.LIBRARY + marker + "\n"


def test_the_loader_replaces_a_library_of_its_name_whose_code_is_not_its_own(
    redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """o22 F1: a library of this version's name but other code (a function that writes, then
    loops) was left in place, since the loader looked at its name alone; its ``ping`` still
    answers the version, so no node can tell. The loader compares the code and loads its own
    again, with an ERROR line that names the tampering."""
    redis_functions.load(redis_client)
    redis_client.execute_command("FUNCTION", "LOAD", "REPLACE", _tampered())
    assert redis_functions.RedisFunction(redis_client, "ping")() == redis_functions.VERSION.encode()
    assert redis_functions.LIBRARY_NAME in redis_functions.libraries(redis_client)
    assert not redis_functions.loaded(redis_client)  # there by name, not with this code
    stop = threading.Event()
    keeper = threading.Thread(target=redis_functions.keep_loaded, args=(redis_client, stop, 0.02), daemon=True)
    with caplog.at_level(logging.ERROR, logger="vledger.broker.redis_functions"):
        keeper.start()
        try:
            for marker in ("-- tampered", "-- tampered again"):
                redis_client.execute_command("FUNCTION", "LOAD", "REPLACE", _tampered(marker))
                deadline = time.monotonic() + 10
                while not redis_functions.loaded(redis_client):
                    assert time.monotonic() < deadline, "the loader left the tampered library in place"
                    time.sleep(0.01)
        finally:
            stop.set()
            keeper.join(5)
    assert not keeper.is_alive()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and all(redis_functions.LIBRARY_NAME in e and "tampered" in e for e in errors)
    assert redis_functions.loaded_code(redis_client) == redis_functions.LIBRARY


def test_ensure_says_whether_it_kept_loaded_or_replaced_the_library(redis_client: Any) -> None:
    """What `vledger redis-functions` (no --keep) runs: the same comparison of the code."""
    redis_client.function_flush()
    assert redis_functions.loaded_code(redis_client) is None
    assert redis_functions.ensure(redis_client) == "loaded"
    assert redis_functions.ensure(redis_client) == "kept"
    redis_client.execute_command("FUNCTION", "LOAD", "REPLACE", _tampered())
    assert redis_functions.ensure(redis_client) == "replaced"
    assert redis_functions.loaded_code(redis_client) == redis_functions.LIBRARY
