"""review31 #2: read_open's byte cap is an estimate past the field cap, and HRANDFIELD then
answers CAP+1 fields WITH their values anyway. MEMORY USAGE ... SAMPLES n samples the FIRST n
fields in the hash's iteration order (which the raiser reads back with HKEYS, its own key) and
scales their average: a raiser whose last-iterated fields hold the big values passes the 8 MiB
check, and every reader (the public gateway, the verifier, `repl status`) is sent ~20 MB here,
as much as the raiser wants in general (the r25/r27/r29 "500 MB a read" again). Any node user
(a replica or observer too) writes its own open hash."""

from __future__ import annotations

from typing import Any

from vledger.broker import redis_functions
from vledger.broker.replication import OPEN_ALERTS_BYTES, OPEN_ALERTS_CAP


def test_read_open_never_sends_more_than_its_byte_budget(redis_client: Any) -> None:
    redis_client.function_flush()
    redis_functions.load(redis_client)
    key = "vledger:{alerts}:open:evil"
    pipe = redis_client.pipeline(transaction=False)
    for i in range(OPEN_ALERTS_CAP + 100):
        pipe.hset(key, f"f{i}", "x")
    pipe.execute()
    last = redis_client.hkeys(key)[-99:]  # the raiser's own key: it may read its order
    big = b"y" * 200_000
    pipe = redis_client.pipeline(transaction=False)
    for field in last:
        pipe.hset(key, field, big)
    pipe.execute()
    reply = redis_client.execute_command(
        "FCALL_RO", redis_functions.function_name("read_open"), 1, key, OPEN_ALERTS_CAP + 1, OPEN_ALERTS_BYTES
    )
    sent = reply if isinstance(reply, int) else sum(len(part) for part in reply)
    assert isinstance(reply, int), f"read_open sent {sent} bytes of the hash, past its {OPEN_ALERTS_BYTES} budget"
