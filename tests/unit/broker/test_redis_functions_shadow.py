"""review31 #1: a library of ANOTHER name that registers this version's function names takes
them over; the loader's compare-and-replace (redis_functions.ensure) only looks at the library of
its own name, so it never logs the tampering (o22 F1), cannot load ours again (Redis refuses a
function name another library holds, and the loader user has no FUNCTION DELETE), and every
node calls the foreign code, which `present` reports as our library."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from vledger.broker import redis_functions


def _shadow(client: Any) -> None:
    name = redis_functions.function_name("ping")
    code = (
        "#!lua name=not_vledger\n"
        f"redis.register_function{{function_name='{name}', callback=function(k, a) return 'foreign' end,"
        " flags={'no-writes'}}\n"
    )
    client.execute_command("FUNCTION", "LOAD", code)


def test_a_foreign_library_holding_our_function_names_is_reported_as_tampering(
    redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.function_flush()
    _shadow(redis_client)  # e.g. loaded with the loader's password right after Redis restarted empty
    with caplog.at_level(logging.ERROR, logger=redis_functions.__name__):
        try:
            outcome = redis_functions.ensure(redis_client)
        except Exception:  # today: "Function ... already exists", a mere retry warning in keep_loaded
            outcome = "raised"
    # Either the loader takes our names back, or it at least says, as an ERROR, that someone did this.
    taken_back = redis_client.execute_command("FCALL_RO", redis_functions.function_name("ping"), 0)
    assert taken_back == redis_functions.VERSION.encode() or any(r.levelno >= logging.ERROR for r in caplog.records), (
        f"ensure -> {outcome!r}; ping answers {taken_back!r}: foreign code runs for every node, unreported"
    )
