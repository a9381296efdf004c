"""A host's enrollment is recorded on the admin ledger only with a mark a host holding the
cluster's second-factor key made (review r25 F1): a factor of before ``sealed_sha256`` (its
record names none), written back and marked by a Redis password, was recorded again by the
home's poll, and every node then took the lost phone's codes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vledger.broker.accounts import AccountCache, AccountRegistry
from vledger.broker.keys import new_keypair
from vledger.broker.second_factor import REPLACE, SecondFactorStore
from vledger.ingest.accounts import RegistryAdmin
from vledger.ingest.admin_ledger import AdminLedger, StoreAdminSource
from vledger.ingest.second_factor import SecondFactors
from vledger.ingest.service import Caller
from vledger.node import totp
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore
from vledger.node.wire import Args

ROOT = Caller("root", "admin", new_keypair().public)


def test_a_factor_recorded_before_sealed_sha256_is_not_recorded_again_as_a_host_s(
    redis_client: Any, tmp_path: Path
) -> None:
    registry = AccountRegistry(redis_client)
    registry.bootstrap_admin("root", new_keypair().public)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    cache = AccountCache(registry, "ingest-1", admin=StoreAdminSource(store)).start()
    factors = SecondFactors(SecondFactorStore(redis_client), bytes(64), production=False, issuer="vledger test")
    ledger = AdminLedger(store, registry)
    admin = RegistryAdmin(registry, cache, ["ingest-1"], 2000, ledger, factors)
    try:
        admin.apply("account.add", Args({"account": "clerk", "role": "writer"}), ROOT)
        # Before the upgrade: root's factor sealed-0, its record naming no sealed secret.
        factors.store.enroll("root", b"sealed-0", (), REPLACE)
        factors.store.recorded("root")
        ledger.append("totp", {"account": "root", "op": "enroll", "via": ""}, "root")
        # After it: the phone holding sealed-0's secret is lost; root enrolls anew on a host.
        factors.enroll("root", REPLACE)
        state = factors.store.state("root")
        assert state is not None
        host_made = totp.sealed_sha256(state[0])
        admin.record_host_enrollments()
        cache.refresh()
        assert cache.second_factor_seal("root") == host_made
        # A Redis password (the home's writes the set) puts sealed-0 back, marked as a host's
        # enrollment: with no mark, then with a mark it cannot make.
        for mark in ("", f"{int(time.time() * 1000)} {'0' * 64}"):
            factors.store.enroll("root", b"sealed-0", (), REPLACE, mark)
            admin.record_host_enrollments()
            cache.refresh()
            assert cache.second_factor_seal("root") == host_made, "the lost factor is back"
            assert factors.store.unrecorded() == []  # looked at, and dropped
    finally:
        cache.stop()
        store.close()
