"""The readers' cap on a raiser's open hash counts fields (HLEN, 10,000), not bytes.
A node's own Redis user writes its open hash as it likes: 10,000 fields of 50 KB (500 MB in
Redis, nothing else bounds it: no maxmemory) passed the cap, and every reader (the gateway
each second, status, verify --cluster, the verifier) read it whole: open_by_raiser took 5.7-8.7 s
and 1.5 GB of the reader's memory per read (measured), r24 F5's stall again. A hash past a few
MB is no set of alerts a node raised (10,000 alerts are 2 MB): it is to be shown as
alert_keys_damaged, unread, as one past the field cap is."""

from __future__ import annotations

import json
from typing import Any

from vledger.broker.replication import OPEN_ALERTS_CAP, Alert, ReplicationLedger

FIELDS = 100  # far below OPEN_ALERTS_CAP
PAD = "x" * 200_000  # 20 MB in all


def test_an_open_hash_of_few_but_huge_fields_is_shown_damaged_unread(redis_client: Any) -> None:
    honest = ReplicationLedger(redis_client, node="verifier-1")
    alert = Alert("ingest-1", "ledger-a", 3, "signed_fork", "two roots", source="redis")
    honest.alert(alert)
    fat = honest.open_alerts_key_of("replica-1")
    for i in range(FIELDS):
        redis_client.hset(fat, f"replica-1|l{i}|lagging", json.dumps({"node": "replica-1", "detail": PAD}))
    assert redis_client.hlen(fat) < OPEN_ALERTS_CAP
    reader = ReplicationLedger(redis_client, raisers=["verifier-1", "replica-1"])
    by_raiser = dict(reader.open_by_raiser())
    assert by_raiser["replica-1"] == {}, f"{len(by_raiser['replica-1'])} alerts of {FIELDS * len(PAD)} bytes read"
    shown = reader.open_alerts()
    assert shown[alert.key]["raised_by"] == "verifier-1"
    assert "replica-1||alert_keys_damaged" in shown
