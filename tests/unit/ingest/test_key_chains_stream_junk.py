"""A witness's key_rotation reads the key chain of a ledger the admin home does not hold from its
Redis stream (ClusterChains, StreamRows; PROTOCOL 16.6). Every ingest node's Redis user may XADD
to any ledger's stream; one entry with no ``record`` field (one XADD) makes ReplicationLedger.read_rows
raise KeyError, which nothing catches: not ClusterChains.chain (VledgerError), not
largest_cosigned (VledgerError), not RegistryAdmin's rotation (REDIS_ERRORS). Every rotation of
every witness that has a note of that ledger then fails, for as long as the entry stays: one
ingest node's password blocks the rotation of a leaked witness key. A stream that cannot be read
is one that proves nothing: the configured key alone (the docstring's "errs toward trusting less")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.ingest.cosignatures import largest_cosigned
from vledger.ingest.key_chains import ClusterChains, StreamRows
from vledger.node.key_rotation import KeyChain
from vledger.node.store import ChainStore
from vledger.tests.unit.ingest.test_key_chains import CLUSTER, K0, K2, LEDGER, _home


def test_a_junk_entry_in_a_stream_leaves_the_configured_key_and_fails_no_rotation(
    tmp_path: Path, redis_client: Any
) -> None:
    repl = ReplicationLedger(redis_client)
    with _home(tmp_path / "home") as home, ChainStore(tmp_path / "admin-home") as here:
        stream = repl.stream_key(LEDGER)
        for height, data in home.range_raw(LEDGER):
            redis_client.xadd(stream, {"record": data, "origin": "home"}, id=f"{height}-1")
        redis_client.xadd(stream, {"by": "ingest-2"}, id=f"{home.size(LEDGER)}-1")  # one XADD, no record
        redis_client.hset(repl.ledgers_key, LEDGER, "home")
        redis_client.set(f"{repl.namespace}:{{{LEDGER}}}:cosig:replica-1", b"any note")
        chains = ClusterChains(here, StreamRows(repl), lambda ledger: K0.verifier())
        assert chains.chain(LEDGER) == KeyChain(LEDGER, (K0.verifier(),))
        # The rotation of replica-1's key: its note of this ledger is left out, the rotation goes on.
        assert largest_cosigned(repl, CLUSTER, chains.keys(CLUSTER), "replica-1", K2.public_key.hex()) == {}
