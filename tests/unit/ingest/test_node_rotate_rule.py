"""node.rotate's rule for each role (docs/PROTOCOL.md 16.6): what is recorded, what is refused."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, cast

import pytest
import redis

from vledger.broker.accounts import Account, AccountCache, AccountRegistry, AccountsSnapshot, Role
from vledger.broker.keys import new_keypair
from vledger.broker.signing import new_signing_key
from vledger.ingest.accounts import RegistryAdmin
from vledger.ingest.admin_ledger import AdminLedger
from vledger.node.errors import BadRequestError, KeyInUseError, NodeUnavailableError
from vledger.node.node_key_rotation import KeyHistory, key_histories
from vledger.node.wire import Args

WRITER_KEY = new_keypair().public
KEYS = {
    name: (new_keypair().public, new_signing_key().public.public_hex)
    for name in ("ingest-1", "replica-1", "observer-1")
}


class FakeRegistry:
    pass


class FakeCache:
    """The accounts as the node enforces them (the admin ledger's), and its key rotations."""

    def __init__(self) -> None:
        self.key_rotations: tuple[dict[str, Any], ...] = ()
        accounts = {"w": Account("w", Role.WRITER, True, (WRITER_KEY,))}
        self.snapshot = AccountsSnapshot(1, MappingProxyType(accounts), MappingProxyType({WRITER_KEY: "w"}))


class Appended:
    def __init__(self, height: int) -> None:
        self.height = height


class FakeLedger:
    """The admin ledger: keeps each record's kind and payload."""

    def __init__(self, cache: FakeCache) -> None:
        self.cache = cache
        self.records: list[tuple[str, dict[str, Any]]] = []

    def append(self, kind: str, payload: dict[str, Any], author: str) -> Appended:
        self.records.append((kind, payload))
        return Appended(len(self.records))


def admin() -> tuple[RegistryAdmin, FakeLedger]:
    cache = FakeCache()
    ledger = FakeLedger(cache)

    def history_of(node: str) -> KeyHistory | None:
        return key_histories(KEYS, cache.key_rotations).get(node)

    made = RegistryAdmin(
        cast(AccountRegistry, FakeRegistry()),
        cast(AccountCache, cache),
        ["ingest-1"],
        1000,
        ledger=cast(AdminLedger, ledger),
        node_roles={"ingest-1": "ingest", "replica-1": "replica", "observer-1": "observer", "verifier-1": "verifier"},
        history_of=history_of,
        # What the replaced key cosigned, as the home reads it from Redis (ingest.cosignatures).
        cosigned_by=lambda node, sign: {"polls": 7, "sign": int(sign == KEYS[node][1])},
        # What an observer's replaced key tallied, as the home reads it (verifier.tally.tallied_heights).
        tallied_by=lambda node, sign: {"polls": 6, "sign": int(sign == KEYS[node][1])},
    )
    return made, ledger


def rotate(made: RegistryAdmin, **args: Any) -> dict[str, Any]:
    return made._rotate(Args({"window_ms": 5000} | args), "admin", "")


def test_a_replica_rotates_its_curve_and_ed25519_keys_in_one_record() -> None:
    made, ledger = admin()
    curve, sign = new_keypair().public, new_signing_key().public.public_hex
    result = rotate(made, node="replica-1", curve=curve, sign=sign)
    assert (result["curve"], result["sign"]) == (curve, sign)
    assert ledger.records[0][0] == "key_rotation" and ledger.records[0][1]["curve"] == curve
    # The record states what the replaced key (generation 0's) had cosigned: PROTOCOL 16.6.
    assert ledger.records[0][1]["cosigned"] == {"polls": 7, "sign": 1}


def test_a_witness_s_rotation_is_refused_when_what_its_key_cosigned_is_unreadable() -> None:
    made, ledger = admin()
    made.cosigned_by = None  # no Redis to read the witness's cosignatures from
    with pytest.raises(NodeUnavailableError):
        rotate(made, node="replica-1", curve=new_keypair().public, sign=new_signing_key().public.public_hex)
    assert ledger.records == []


def test_a_replica_may_keep_its_curve_key_and_rotate_its_ed25519_key_alone() -> None:
    made, ledger = admin()
    sign = new_signing_key().public.public_hex
    rotate(made, node="replica-1", curve=KEYS["replica-1"][0], sign=sign)
    assert ledger.records[0][1]["curve"] == KEYS["replica-1"][0]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"curve": WRITER_KEY}, KeyInUseError),  # an account's key
        ({"curve": KEYS["ingest-1"][0]}, KeyInUseError),  # another node's key
        ({"sign": KEYS["ingest-1"][1]}, KeyInUseError),  # another node's Ed25519 key: one host, two witnesses
        ({"sign": KEYS["replica-1"][1]}, BadRequestError),  # an Ed25519 key it had
        ({"node": "verifier-1"}, BadRequestError),  # a verifier with an Ed25519 key: it has none
        ({"node": "replica-9"}, BadRequestError),  # no such node
        ({"curve": "x" * 40 + "!"}, BadRequestError),
        ({"sign": "00" * 32}, BadRequestError),  # a point of small order: no signature verifies with it
        ({"sign": "01" + "00" * 31}, BadRequestError),  # the neutral point, of small order too
        ({"sign": "02" + "00" * 31}, BadRequestError),  # y = 2 is on no Ed25519 point
    ],
)
def test_what_a_replica_s_rotation_refuses(change: dict[str, Any], error: type[Exception]) -> None:
    made, ledger = admin()
    args = {"node": "replica-1", "curve": new_keypair().public, "sign": new_signing_key().public.public_hex}
    with pytest.raises(error):
        rotate(made, **(args | change))
    assert ledger.records == []


def test_an_ingest_node_s_new_curve_key_must_be_unused_even_by_a_node_s_first_key() -> None:
    made, _ = admin()
    with pytest.raises(KeyInUseError):
        rotate(made, node="ingest-1", curve=KEYS["replica-1"][0], sign=KEYS["ingest-1"][1])
    with pytest.raises(KeyInUseError):  # its own key in force is no rotation either
        rotate(made, node="ingest-1", curve=KEYS["ingest-1"][0], sign=KEYS["ingest-1"][1])


def test_a_verifier_rotates_its_curve_key_with_an_empty_sign() -> None:
    # A verifier signs nothing: its record's sign is "" (PROTOCOL 16.1, 16.6).
    made, ledger = admin()
    curve = new_keypair().public
    result = rotate(made, node="verifier-1", curve=curve, sign="")
    assert (result["curve"], result["sign"]) == (curve, "")
    assert ledger.records == [
        ("key_rotation", {"node": "verifier-1", "curve": curve, "sign": "", "until": result["until"], "via": ""})
    ]
    # Without a sign argument too; and never with a key, nor another node's CURVE key.
    assert rotate(admin()[0], node="verifier-1", curve=new_keypair().public)["sign"] == ""
    for change, error in (
        ({"sign": new_signing_key().public.public_hex}, BadRequestError),
        ({"sign": None}, BadRequestError),
        ({"curve": KEYS["ingest-1"][0]}, KeyInUseError),
        ({"curve": WRITER_KEY}, KeyInUseError),
    ):
        fresh, untouched = admin()
        with pytest.raises(error):
            rotate(fresh, **({"node": "verifier-1", "curve": new_keypair().public, "sign": ""} | change))
        assert untouched.records == []


def test_a_replica_may_not_rotate_to_an_ed25519_key_another_node_was_rotated_to() -> None:
    made, ledger = admin()
    other_sign = new_signing_key().public.public_hex
    made.cache.key_rotations = (  # as the admin ledger's cache holds them
        {"node": "ingest-1", "curve": new_keypair().public, "sign": other_sign, "until": 0, "accepted": 0},
    )
    with pytest.raises(KeyInUseError, match="ingest-1's"):
        rotate(made, node="replica-1", curve=new_keypair().public, sign=other_sign)
    assert ledger.records == []


def test_only_a_witness_s_rotation_states_what_its_key_cosigned() -> None:
    made, ledger = admin()
    rotate(made, node="ingest-1", curve=new_keypair().public, sign=KEYS["ingest-1"][1])
    rotate(made, node="verifier-1", curve=new_keypair().public, sign="")
    assert [("cosigned" in payload) for _, payload in ledger.records] == [False, False]


def test_an_observer_s_rotation_states_what_its_key_tallied_and_a_replica_s_does_not() -> None:
    # PROTOCOL 16.6: the heights bound the replaced key's tallies as the sizes its cosignatures.
    made, ledger = admin()
    rotate(made, node="observer-1", curve=new_keypair().public, sign=new_signing_key().public.public_hex)
    rotate(made, node="replica-1", curve=new_keypair().public, sign=new_signing_key().public.public_hex)
    (_, observer), (_, replica) = ledger.records
    assert observer["tallied"] == {"polls": 6, "sign": 1} and observer["cosigned"] == {"polls": 7, "sign": 1}
    assert "tallied" not in replica and "cosigned" in replica


def test_an_observer_s_rotation_is_refused_when_what_its_key_tallied_is_unreadable() -> None:
    made, ledger = admin()
    made.tallied_by = None
    with pytest.raises(NodeUnavailableError):
        rotate(made, node="observer-1", curve=new_keypair().public, sign=new_signing_key().public.public_hex)

    def down(node: str, sign: str) -> dict[str, int]:
        raise redis.exceptions.ConnectionError("Redis is down")

    made.tallied_by = down
    with pytest.raises(NodeUnavailableError, match=r"tallied.*Redis unavailable"):
        rotate(made, node="observer-1", curve=new_keypair().public, sign=new_signing_key().public.public_hex)
    assert ledger.records == []


def test_an_observer_s_rotation_on_an_acl_that_hides_its_tallies_states_nothing_tallied() -> None:
    # A redis.acl made before the admin home read tallies (NOPERM): the rotation of a leaked key
    # must not wait for an ACL upgrade; stating nothing tallied counts the old key's tallies nowhere.
    made, ledger = admin()

    def hidden(node: str, sign: str) -> dict[str, int]:
        raise redis.exceptions.NoPermissionError("NOPERM this user has no permissions to access one of the keys")

    made.tallied_by = hidden
    rotate(made, node="observer-1", curve=new_keypair().public, sign=new_signing_key().public.public_hex)
    ((_, observer),) = ledger.records
    assert observer["tallied"] == {}
