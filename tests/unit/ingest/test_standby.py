"""The standby's targets from Redis (ingest/standby.py): what a promotion counts as acknowledged."""

from __future__ import annotations

from vledger.ingest.standby import redis_checkpoints


class _Redis:
    def __init__(self, latest: dict[str, bytes], cosigned: dict[str, dict[str, bytes]]) -> None:
        self.latest = latest
        self.cosigned = cosigned
        self.asked: list[str] = []

    def checkpoints(self) -> dict[str, bytes]:
        return self.latest

    def cosignatures(self, ledger: str) -> dict[str, bytes]:
        self.asked.append(ledger)
        return self.cosigned.get(ledger, {})


def test_the_home_s_latest_and_each_witness_s_cosigned_note_of_the_followed_ledgers() -> None:
    redis = _Redis(
        {"votes": b"home votes", "other": b"home other"},
        {"votes": {"replica-2": b"cosigned by 2", "replica-1": b"cosigned by 1"}, "other": {"replica-1": b"x"}},
    )
    notes = redis_checkpoints(redis, redis, {"votes"})
    assert notes == [
        ("votes", b"home votes", "redis"),
        ("votes", b"cosigned by 1", "redis:cosigned:replica-1"),
        ("votes", b"cosigned by 2", "redis:cosigned:replica-2"),
    ]
    assert redis.asked == ["votes"]  # the ledgers it does not follow are not even asked for


def test_nothing_followed_nothing_asked() -> None:
    redis = _Redis({"votes": b"home votes"}, {"votes": {"replica-1": b"n"}})
    assert redis_checkpoints(redis, redis, set()) == []
    assert redis.asked == []
