"""The gateway over a follower's store cut back past its last signed root and filled again
(review17 5). The newest tile's leaves, which no signed root proves, are kept by (tile, size)
and later reads are compared with them. A follower that cuts back past its last signed
checkpoint and fetches another tail (a handover: the old home's unwitnessed records are not the
new epoch's) reaches the same size again with other leaves: the gateway then refused a sound
store as store_damaged (503, ERROR, /readyz) for REFUSAL_SECONDS. A record changed in place
there is still refused (test_gateway_tampered)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vledger.broker.http import HttpThread
from vledger.config.cluster import ClusterConfig
from vledger.config.settings import PROTOCOL_LIMITS as LIMITS
from vledger.node.record import Content, Entry, decode_record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.tests.unit.verifier.fakes import NoRedis
from vledger.tests.unit.verifier.test_gateway_tampered import AMOUNT, LEDGER, get, refused_damaged, signed_ledger
from vledger.verifier.gateway import Gateway, build_app, readiness

RECORDS = 300
SIGNED_AT = 200  # the newest tile, 256..299, is past the signed root: no signature proves it
CUT = 260


def other_tail(config: ClusterConfig, directory: Path) -> Path:
    """A store holding the same records below CUT as replica-1's and another tail from there (the
    new home's), each record chained to the one before: its database file."""
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        below = [decode_record(data, LIMITS) for _, data in store.range_raw(LEDGER, 0, CUT)]
    with ChainStore(directory, origin="ingest-2") as other:
        other.append_records(below)
        for i in range(CUT, RECORDS):
            content = Content(LEDGER, "note", {"amount": AMOUNT + 7 * i}, "admin", f"s{i}", 1)
            other.append(Entry.prepare(content, 0, LIMITS))
    return directory / DB_NAME


def refill(config: ClusterConfig, source: Path, rows: str) -> None:
    """replica-1's store cut back to CUT and filled from ``source`` again, in place (its tree too)."""
    with sqlite3.connect(config.store_dir("replica-1") / DB_NAME) as db:
        db.execute("ATTACH ? AS b", (str(source),))
        db.execute("DELETE FROM records WHERE ledger = ? AND height >= ?", (LEDGER, CUT))
        db.execute(f"INSERT INTO records SELECT * FROM b.records WHERE ledger = ? AND {rows}", (LEDGER, CUT))
        db.execute("DELETE FROM tree WHERE ledger = ?", (LEDGER,))
        db.execute("INSERT INTO tree SELECT * FROM b.tree WHERE ledger = ?", (LEDGER,))
    db.close()


def test_another_tail_at_the_same_size_past_the_signed_root_is_served_not_store_damaged(tmp_path: Path) -> None:
    config = signed_ledger(tmp_path, RECORDS, SIGNED_AT)
    source = other_tail(config, tmp_path / "new-home")
    gateway = Gateway(config, "replica-1", redis_client=NoRedis())
    try:
        with HttpThread(build_app(gateway, readiness(gateway)), "127.0.0.1", 0) as server:
            api = f"http://127.0.0.1:{server.port}/api/ledgers/{LEDGER}"
            assert get(f"{api}/records/280")[0] == 200  # the newest tile's leaves are kept
            refill(config, source, "height >= ?")
            status, _, body = get(f"{api}/records/281")
            assert status == 200, body[:300]
            assert gateway.known_damage() is None
    finally:
        gateway.close()


def test_a_tail_that_does_not_chain_on_from_the_records_kept_is_still_store_damaged(tmp_path: Path) -> None:
    # Another chain's tail at the same size (its first record's prev is no link of this store's
    # record before it): no cut and refill makes that, a file written behind the node's back does.
    config = signed_ledger(tmp_path, RECORDS, SIGNED_AT)
    unrelated = signed_ledger(tmp_path / "b", CUT, SIGNED_AT)  # the same contents, accepted at other times
    source = other_tail(unrelated, tmp_path / "new-home")
    gateway = Gateway(config, "replica-1", redis_client=NoRedis())
    try:
        with HttpThread(build_app(gateway, readiness(gateway)), "127.0.0.1", 0) as server:
            api = f"http://127.0.0.1:{server.port}/api/ledgers/{LEDGER}"
            assert get(f"{api}/records/280")[0] == 200
            refill(config, source, "height >= ?")
            assert refused_damaged(f"{api}/records/281")
    finally:
        gateway.close()
