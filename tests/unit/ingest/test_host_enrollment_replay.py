"""A host's enrollment mark (review r25 F1) is good for an hour and binds the account,
the sealed secret and its time, but nothing says it is the account's latest enrollment. Two host
enrollments of an account before the home's poll (a bootstrap run twice, or while the home was
down) leave both marks in {totp}:unrecorded; the poll records the second and drops both. The
admin home's Redis password, which r25 F1 is about, copied the first sealed secret and its mark
beforehand: written back within the hour, the next poll records it, and every node then takes
the factor the admin replaced (the secret shown first, on a screen someone photographed)."""

from __future__ import annotations

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


def test_a_host_enrollment_replaced_before_the_home_s_poll_is_not_recorded_when_put_back(
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
        factors.enroll("root", REPLACE)  # the first bootstrap --totp on a host
        first = factors.store.state("root")
        assert first is not None
        (mark,) = factors.store.marks("root")  # what the home's Redis password reads and keeps
        factors.enroll("root", REPLACE)  # run again before the home's poll
        second = factors.store.state("root")
        assert second is not None and second[0] != first[0]
        admin.record_host_enrollments()
        cache.refresh()
        assert cache.second_factor_seal("root") == totp.sealed_sha256(second[0])
        # Within the hour, that password puts the first enrollment back, with its own host's mark.
        factors.store.enroll("root", first[0], (), REPLACE, mark)
        admin.record_host_enrollments()
        cache.refresh()
        assert cache.second_factor_seal("root") == totp.sealed_sha256(second[0]), "the replaced factor is back"
    finally:
        cache.stop()
        store.close()
