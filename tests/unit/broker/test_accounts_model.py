"""The pure parts of the accounts module: names, roles, and snapshots built from Redis replies."""

from __future__ import annotations

import pytest

from vledger.broker.accounts import (
    Account,
    AccountsSnapshot,
    KeyOwner,
    Role,
    check_account_name,
    check_role,
    ledger_snapshot,
    snapshot_from_reply,
    unbacked,
)
from vledger.broker.keys import fingerprint, new_keypair
from vledger.node.errors import AccountNameError, RoleError

K1, K2, K3 = sorted(new_keypair().public for _ in range(3))


def reply(as_bytes: bool) -> list[object]:
    def b(text: str) -> object:
        return text.encode() if as_bytes else text

    return [
        b("7"),
        [[b("alice"), b("writer"), b("1")], [b("bob"), b("observer"), b("0")], [b("ghost"), None, None]],
        [b(K1), b("alice"), b(K2), b("alice"), b(K3), b("bob")],
    ]


@pytest.mark.parametrize("as_bytes", [True, False])
def test_snapshot_from_reply(as_bytes: bool) -> None:
    snapshot = snapshot_from_reply(reply(as_bytes))
    assert snapshot.version == 7
    assert snapshot.accounts["alice"] == Account("alice", Role.WRITER, True, (K1, K2))
    assert snapshot.accounts["bob"] == Account("bob", Role.OBSERVER, False, (K3,))
    assert "ghost" not in snapshot.accounts  # a name without its hash is ignored
    assert snapshot.lookup(K1) == KeyOwner("alice", Role.WRITER, True)
    assert snapshot.lookup(K3) == KeyOwner("bob", Role.OBSERVER, False)
    assert snapshot.lookup(new_keypair().public) is None


def test_only_enabled_accounts_may_connect() -> None:
    assert snapshot_from_reply(reply(False)).allowed_keys() == {K1, K2}


def test_snapshots_compare_by_content() -> None:
    assert snapshot_from_reply(reply(True)) == snapshot_from_reply(reply(False))
    assert AccountsSnapshot.empty().version == 0 and not AccountsSnapshot.empty().allowed_keys()


def test_accounts_show_fingerprints_not_secrets() -> None:
    account = snapshot_from_reply(reply(False)).accounts["alice"]
    assert account.fingerprints == (fingerprint(K1), fingerprint(K2))


@pytest.mark.parametrize("name", ["alice", "Bob", "carol@example.org", "d.e_f-1", "x" * 64])
def test_valid_account_names(name: str) -> None:
    assert check_account_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "-alice", "a b", "a/b", "a:b", "ünï", ".x"])
def test_invalid_account_names(name: str) -> None:
    with pytest.raises(AccountNameError):
        check_account_name(name)


def test_roles() -> None:
    assert [check_role(r) for r in ("admin", "writer", "observer", "replica")] == list(Role)
    with pytest.raises(RoleError, match="not one of admin, writer, observer, replica"):
        check_role("root")


def _stated(role: str, enabled: bool, *keys: str) -> dict[str, object]:
    return {"role": role, "enabled": enabled, "keys": list(keys)}


def test_the_enforced_accounts_are_the_ones_the_admin_ledger_states() -> None:
    snapshot = ledger_snapshot(
        9,
        {
            "alice": _stated("writer", True, K2, K1),
            "bob": _stated("observer", False, K3),
            "odd": _stated("superuser", True),  # no role the protocol knows: grants nothing
        },
    )
    assert snapshot.version == 9 and sorted(snapshot.accounts) == ["alice", "bob"]
    assert snapshot.accounts["alice"] == Account("alice", Role.WRITER, True, (K1, K2))
    assert snapshot.lookup(K3) == KeyOwner("bob", Role.OBSERVER, False)
    assert snapshot.allowed_keys() == {K1, K2}


def test_a_key_two_accounts_state_is_neither_s() -> None:
    snapshot = ledger_snapshot(1, {"a": _stated("writer", True, K1), "b": _stated("admin", True, K1, K2)})
    assert snapshot.lookup(K1) is None and snapshot.allowed_keys() == {K2}


def test_redis_entries_the_admin_ledger_does_not_back_are_named_by_fingerprint() -> None:
    enforced = ledger_snapshot(3, {"alice": _stated("writer", True, K1), "bob": _stated("writer", False, K2)})
    cached = snapshot_from_reply(
        [
            "3",
            [["alice", "admin", "1"], ["bob", "writer", "1"], ["mallory", "admin", "1"]],
            [K1, "alice", K2, "bob", K3, "mallory"],
        ]
    )
    # alice's role raised, bob enabled, mallory made: each is a key Redis lets in that the ledger
    # does not, each with what the node does with it: alice's key is let in, as the writer it is.
    assert unbacked(cached, enforced) == sorted(
        [
            f"alice ({fingerprint(K1)}): let in as alice (writer)",
            f"bob ({fingerprint(K2)}): refused",
            f"mallory ({fingerprint(K3)}): refused",
        ]
    )
    assert unbacked(enforced, enforced) == []


def _malformed_reply(as_bytes: bool) -> list[object]:
    def b(text: str) -> object:
        return text.encode() if as_bytes else text

    # outsider o8 J6: one key that is none, bound to an account of its own, killed every node's accounts thread.
    return [
        b("8"),
        [
            [b("alice"), b("writer"), b("1")],
            [b("zz"), b("admin"), b("1")],
            [b("a b"), b("admin"), b("1")],
            [b("root"), b("superuser"), b("1")],
        ],
        [b(K1), b("alice"), b("notakey"), b("zz"), b(K2), b("a b"), b(K3), b("root")],
    ]


@pytest.mark.parametrize("as_bytes", [True, False])
def test_malformed_redis_entries_are_left_out_and_named(as_bytes: bool) -> None:
    snapshot = snapshot_from_reply(_malformed_reply(as_bytes))
    assert snapshot.version == 8
    assert sorted(snapshot.accounts) == ["alice", "zz"]  # zz is a valid account: only its key is none
    assert snapshot.allowed_keys() == {K1}
    assert snapshot.malformed == (
        "'a b' (not a valid account: role 'admin')",
        "'root' (not a valid account: role 'superuser')",
        "'zz' (not a public key: 'notakey')",
    )
    # The alert's list names them after the keys, and nothing in them raises (fingerprint did).
    assert unbacked(snapshot, ledger_snapshot(8, {"alice": _stated("writer", True, K1)}))[-3:] == [
        f"{entry}: malformed, ignored" for entry in snapshot.malformed
    ]


def test_a_value_that_is_no_utf8_is_malformed_not_an_error() -> None:
    snapshot = snapshot_from_reply([b"2", [[b"\xff\xfe", b"admin", b"1"]], [b"\xff" * 40, b"alice"]])
    assert snapshot.accounts == {} and len(snapshot.malformed) == 2
