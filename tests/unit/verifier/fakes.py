"""Stand-ins the gateway tests share (imported as ``vledger.tests.unit.verifier.fakes``)."""

from __future__ import annotations


class FakeRedis:
    """Redis's witness notes, as ``hgetall`` of a ledger's cosignatures hash gives them."""

    def __init__(self, notes: dict[bytes, bytes]) -> None:
        self.notes = notes

    def register_script(self, script: str) -> None:
        return None

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return self.notes
