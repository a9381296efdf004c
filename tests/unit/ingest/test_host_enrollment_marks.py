"""A host's enrollment is recorded on the admin ledger only with a mark a host holding the
cluster's second-factor key made, and only while it is the account's latest (review r25 F1).
The admin home's Redis password writes the set the home polls: it must not be able to put a
factor back that the admin replaced, whether one from before ``sealed_sha256`` (its record names
none) or a host enrollment it copied, with its genuine mark, before the admin enrolled again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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


@dataclass(frozen=True)
class AdminHome:
    factors: SecondFactors
    ledger: AdminLedger
    admin: RegistryAdmin
    cache: AccountCache

    def poll(self) -> bytes | None:
        """The home's poll of host enrollments, then the factor every node now takes for root."""
        self.admin.record_host_enrollments()
        self.cache.refresh()
        return self.cache.second_factor_seal("root")


@pytest.fixture
def home(redis_client: Any, tmp_path: Path) -> Iterator[AdminHome]:
    registry = AccountRegistry(redis_client)
    registry.bootstrap_admin("root", new_keypair().public)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    cache = AccountCache(registry, "ingest-1", admin=StoreAdminSource(store)).start()
    factors = SecondFactors(SecondFactorStore(redis_client), bytes(64), production=False, issuer="vledger test")
    ledger = AdminLedger(store, registry)
    admin = RegistryAdmin(registry, cache, ["ingest-1"], 2000, ledger, factors)
    try:
        admin.apply("account.add", Args({"account": "clerk", "role": "writer"}), ROOT)
        yield AdminHome(factors, ledger, admin, cache)
    finally:
        cache.stop()
        store.close()


def test_a_factor_recorded_before_sealed_sha256_is_not_recorded_again_as_a_host_s(home: AdminHome) -> None:
    # Before the upgrade: root's factor sealed-0, its record naming no sealed secret.
    home.factors.store.enroll("root", b"sealed-0", (), REPLACE)
    home.factors.store.recorded("root")
    home.ledger.append("totp", {"account": "root", "op": "enroll", "via": ""}, "root")
    # After it: the phone holding sealed-0's secret is lost; root enrolls anew on a host.
    home.factors.enroll("root", REPLACE)
    state = home.factors.store.state("root")
    assert state is not None
    host_made = totp.sealed_sha256(state[0])
    assert home.poll() == host_made
    # A Redis password puts sealed-0 back, marked as a host's enrollment: with no mark, then
    # with a mark it cannot make.
    for mark in ("", f"{int(time.time() * 1000)} {'0' * 64}"):
        home.factors.store.enroll("root", b"sealed-0", (), REPLACE, mark)
        assert home.poll() == host_made, "the lost factor is back"
        assert home.factors.store.unrecorded() == []  # looked at, and dropped


def test_a_host_enrollment_replaced_before_the_home_s_poll_is_not_recorded_when_put_back(home: AdminHome) -> None:
    """Two host enrollments before the home's poll (a bootstrap run twice, or while the home was
    down) leave both marks unrecorded; the poll records the second and drops both. A password
    that copied the first sealed secret and its mark writes them back within the hour."""
    home.factors.enroll("root", REPLACE)  # the first bootstrap --totp on a host
    first = home.factors.store.state("root")
    assert first is not None
    (mark,) = home.factors.store.marks("root")  # what the home's Redis password reads and keeps
    home.factors.enroll("root", REPLACE)  # run again before the home's poll
    second = home.factors.store.state("root")
    assert second is not None and second[0] != first[0]
    assert home.poll() == totp.sealed_sha256(second[0])
    home.factors.store.enroll("root", first[0], (), REPLACE, mark)
    assert home.poll() == totp.sealed_sha256(second[0]), "the replaced factor is back"
