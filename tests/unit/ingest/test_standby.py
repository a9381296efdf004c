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


def test_the_standby_s_follower_closes_in_redis_the_alerts_it_resolves() -> None:
    # A standby refuses a forked record a replica served during its catch-up (record_conflict,
    # PROTOCOL 10.5) and resolves that alert once the home's record is stored at its height:
    # the resolution must reach Redis, or the alert stays open for ever.
    from unittest import mock

    from vledger.ingest import standby

    resolved: list[list[str]] = []

    class Replication:
        def resolve(self, keys: list[str]) -> int:
            resolved.append(keys)
            return len(keys)

    runtime = mock.MagicMock()
    runtime.config.nodes_of.return_value = []
    with (
        mock.patch.object(standby, "Follower") as follower,
        mock.patch.object(standby, "Subscriber"),
        mock.patch.object(standby, "StreamSource"),
        mock.patch.object(standby, "checkpoint_keys"),
        mock.patch.object(standby, "ledger_checkpoint_keys"),
    ):
        standby.StandbyFollow(runtime, mock.MagicMock(), Replication(), mock.MagicMock(), mock.MagicMock(), ["votes"])  # type: ignore[arg-type]
    on_resolve = follower.call_args.kwargs["on_resolve"]
    on_resolve(["ingest-2|votes|record_conflict"])
    assert resolved == [["ingest-2|votes|record_conflict"]]
