"""Review r29: a reader sized each raiser's open hash with MEMORY USAGE in one round trip and
read it with HRANDFIELD CAP+1 WITHVALUES in the next; now one function does both (read_open).
The hash is its raiser's Redis user's to write: one absent or small at the first and large at
the second (an O(1) RENAME from its own other key, toggled in a loop; MEMORY USAGE of a missing
key is nil, never "past") was read whole, up to 10,001 fields of any size: 10,001 x 50 KB is
the 500 MB a read the byte cap was made for (review r26), by every reader (the gateway's
/api/cluster each second, status, the verifier) each time it won the race. Here the race is
made certain: the hash grows right after the reader's first round trip."""

from __future__ import annotations

from typing import Any

from vledger.broker.replication import OPEN_ALERTS_BYTES, Alert, ReplicationLedger

VALUE = "x" * 65_536
FIELDS = OPEN_ALERTS_BYTES // len(VALUE) + 40  # past the byte cap, far within the field cap


class GrowsAfterTheFirstRoundTrip:
    """``client`` whose first round trip (a pipeline's execute, or a command) is followed by
    ``grow``: what a raiser's loop does between a reader's two round trips."""

    def __init__(self, client: Any, grow: Any) -> None:
        self._client, self._grow, self._grown = client, grow, False

    def _after(self) -> None:
        if not self._grown:
            self._grown = True
            self._grow()

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._client.pipeline(*args, **kwargs)
        execute = pipe.execute

        def execute_then_grow(*a: Any, **k: Any) -> Any:
            try:
                return execute(*a, **k)
            finally:
                self._after()

        pipe.execute = execute_then_grow
        return pipe

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        if not callable(found) or name in ("register_script", "pipeline"):
            return found

        def command(*a: Any, **k: Any) -> Any:
            try:
                return found(*a, **k)
            finally:
                self._after()

        return command


def test_a_hash_grown_past_the_byte_cap_between_the_size_and_the_read_is_not_read(redis_client: Any) -> None:
    honest = ReplicationLedger(redis_client, node="verifier-1")
    alert = Alert("ingest-1", "ledger-a", 3, "signed_fork", "two roots", source="redis")
    honest.alert(alert)
    grown = honest.open_alerts_key_of("replica-1")
    redis_client.hset(grown, "small", "{}")  # small when sized

    def grow() -> None:
        pipe = redis_client.pipeline(transaction=False)
        for i in range(FIELDS):
            pipe.hset(grown, f"f{i}", VALUE)
        pipe.execute()

    reader = ReplicationLedger(GrowsAfterTheFirstRoundTrip(redis_client, grow), raisers=["verifier-1", "replica-1"])
    by_raiser = dict(reader.open_by_raiser())
    assert redis_client.memory_usage(grown, samples=0) > OPEN_ALERTS_BYTES  # it did grow past the cap
    assert alert.key in by_raiser["verifier-1"]  # another raiser's alert still shown
    read = by_raiser.get("replica-1", {})
    assert len(read) <= 1, f"{len(read)} fields of {len(VALUE)} bytes read: the byte cap was passed"
