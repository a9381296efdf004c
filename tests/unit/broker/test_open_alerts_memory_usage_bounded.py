"""r26's byte cap on a raiser's open hash asks Redis MEMORY USAGE with SAMPLES 0
(ReplicationLedger._past_bytes): every field of the hash walked, inside Redis's one thread, at
each read by each reader (the gateway's /api/cluster twice a second, its flagged-heights check,
the verifier's sweep, status, metrics). The hash is its raiser's Redis user's to fill: 2,000,000
one-byte fields (123 MB, a few seconds of HSETs) made each reader's check 1.2 s of Redis blocked
(measured), every node's Redis commands waiting behind it; 10M fields 6 s. Before the check the
read was HRANDFIELD 10001: 23 ms on that hash. SAMPLES OPEN_ALERTS_CAP + 1 is exact for every
hash the readers read (at most that many fields) and 10 ms on the 2M one."""

from __future__ import annotations

from typing import Any

from vledger.broker.replication import Alert, ReplicationLedger

FIELDS = 1_500_000
SLOW_US = 150_000  # a command past 0.15 s of Redis's thread: slowlog-log-slower-than


def test_reading_a_huge_open_hash_does_not_block_redis(redis_client: Any) -> None:
    honest = ReplicationLedger(redis_client, node="verifier-1")
    alert = Alert("ingest-1", "ledger-a", 3, "signed_fork", "two roots", source="redis")
    honest.alert(alert)
    huge = honest.open_alerts_key_of("replica-1")
    batch = 20_000
    for start in range(0, FIELDS, batch):
        redis_client.hset(huge, mapping={f"f{i}": "x" for i in range(start, start + batch)})
    redis_client.config_set("slowlog-log-slower-than", SLOW_US)
    redis_client.slowlog_reset()
    try:
        reader = ReplicationLedger(redis_client, raisers=["verifier-1", "replica-1"])
        shown = reader.open_alerts()
        slow = [(entry["command"], entry["duration"]) for entry in redis_client.slowlog_get(128)]
    finally:
        redis_client.config_set("slowlog-log-slower-than", 10_000)
    assert shown[alert.key]["raised_by"] == "verifier-1"
    assert "replica-1||alert_keys_damaged" in shown  # still shown damaged, unread
    assert slow == [], f"Redis blocked by a reader's read: {slow}"
