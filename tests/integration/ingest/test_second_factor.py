"""Admins' second factor through real nodes in production mode (docs/PROTOCOL.md 16.5): an
admin without a good code is refused on every ingest node, a code is good once across nodes,
recovery codes are good once, and enrollments are recorded on the admin ledger without their
secret."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pyotp
import pytest

from vledger.broker.keys import generate, new_keypair
from vledger.broker.redis_server import RedisServer, connect
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node import totp
from vledger.node.errors import RemoteError
from vledger.node.record import decode_record
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import ADMIN, LocalCluster, genesis, remote_error


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    # election-2 lives on the second node: one code for commands on both (its grants go to the first).
    with LocalCluster(redis_server.url, accounts={}, production=True, homes={"election-2": "ingest-2"}) as running:
        yield running


@pytest.fixture(scope="module")
def recovery(cluster: LocalCluster) -> Iterator[str]:
    """The bootstrapped admin's recovery codes, one per admin command of the tests (time codes
    are good once per 30 s, and each test must not wait for the next)."""
    return iter(cluster.enrollment["recovery_codes"])


def secret_of(uri: str) -> str:
    return pyotp.parse_uri(uri).secret


def add_admin(cluster: LocalCluster, name: str, codes: Iterator[str]) -> None:
    pair = new_keypair()
    cluster.admin().call("account.add", {"account": name, "role": "admin", "otp": next(codes)})
    cluster.admin().call("key.add", {"account": name, "key": pair.public, "otp": next(codes)})
    cluster.keys[name] = pair


def test_a_host_s_enrollment_is_on_the_admin_ledger_within_a_poll_before_any_admin_command(
    cluster: LocalCluster,
) -> None:
    # r24 F7: it was recorded at the admin home's next admin command only; until then a node
    # takes the factor on Redis's word. The home's accounts poll records it now (first test here).
    deadline = time.monotonic() + 30.0
    while True:
        try:
            records = [decode_record(data, PROTOCOL_LIMITS) for data in cluster.admin().records(ADMIN_LEDGER)]
        except RemoteError as e:
            assert e.code == "no_such_ledger", e  # the record creates the admin ledger
            records = []
        enrolled = [r.content.payload for r in records if r.content.kind == "totp"]
        if enrolled:
            break
        assert time.monotonic() < deadline, "the host's enrollment is not on the admin ledger without an admin command"
        time.sleep(0.2)
    sealed = connect(cluster.cluster_redis_url).hget("vledger:{totp}:account:" + ADMIN, "secret")
    assert enrolled == [{"account": ADMIN, "op": "enroll", "via": "", "sealed_sha256": totp.sealed_sha256(sealed)}]


def test_an_admin_without_a_second_factor_is_refused_in_production(
    cluster: LocalCluster, recovery: Iterator[str]
) -> None:
    add_admin(cluster, "deputy", recovery)  # an admin, but enrolled nowhere
    answers = set()
    for node in cluster.node_names:  # the home of admin and the other ingest node alike
        for account in (ADMIN, "deputy"):
            refused = remote_error(cluster.client(account, node).call, "account.list")
            answers.add((refused.code, refused.reason))
    # One answer whether or not the account is enrolled: it says nothing about the account.
    assert len(answers) == 1
    assert next(iter(answers))[0] == "second_factor_required"
    guessed = remote_error(cluster.client("deputy").call, "account.list", {"otp": "123456"})
    assert guessed.code == "bad_second_factor"
    # Every admin-only command, not just the account ones; and nothing was done.
    refused = remote_error(cluster.client("deputy").call, "account.add", {"account": "sneaky", "role": "admin"})
    assert refused.code == "second_factor_required"
    created = remote_error(cluster.admin().create_ledger, genesis("books", ADMIN, ["note"]))
    assert created.code == "second_factor_required"
    names = [a["account"] for a in cluster.admin().call("account.list", {"otp": next(recovery)})["accounts"]]
    assert "sneaky" not in names and "deputy" in names


def test_a_code_is_good_once_across_nodes(cluster: LocalCluster, recovery: Iterator[str]) -> None:
    secret = secret_of(cluster.enrollment["uri"])
    code = totp.code_at(secret, totp.step_at(time.time()))
    first, second = cluster.node_names
    assert cluster.client(ADMIN, second).call("account.list", {"otp": code})["accounts"]
    for node in (first, second):
        replay = remote_error(cluster.client(ADMIN, node).call, "account.list", {"otp": code})
        assert replay.code == "bad_second_factor", node
    recovery_code = next(recovery)
    cluster.client(ADMIN, second).call("account.list", {"otp": recovery_code})
    again = remote_error(cluster.client(ADMIN, first).call, "account.list", {"otp": recovery_code})
    assert again.code == "bad_second_factor"


def test_enrollment_is_on_the_admin_ledger_without_its_secret(cluster: LocalCluster, recovery: Iterator[str]) -> None:
    add_admin(cluster, "clerk", recovery)
    enrolled = cluster.admin().call("totp.enroll", {"account": "clerk", "otp": next(recovery)})
    assert enrolled["account"] == "clerk" and len(enrolled["recovery_codes"]) == totp.RECOVERY_CODES
    clerk_secret = secret_of(enrolled["uri"])
    code = totp.code_at(clerk_secret, totp.step_at(time.time()))
    assert cluster.client("clerk", cluster.node_names[1]).call("account.list", {"otp": code})["accounts"]
    clerk_codes = iter(enrolled["recovery_codes"][1:])
    twice = remote_error(cluster.client("clerk").call, "totp.enroll", {"otp": next(clerk_codes)})
    assert twice.code == "already_enrolled"
    own_code = next(clerk_codes)
    own = remote_error(cluster.client("clerk").call, "totp.reset", {"account": "clerk", "otp": own_code})
    assert own.code == "forbidden"
    # Refused before its code is read, so the recovery code is not used up (outsider45).
    assert cluster.client("clerk").call("account.list", {"otp": own_code})["accounts"]
    reset = cluster.admin().call("totp.reset", {"account": "clerk", "otp": next(recovery)})
    assert secret_of(reset["uri"]) != clerk_secret
    stale = remote_error(cluster.client("clerk").call, "account.list", {"otp": enrolled["recovery_codes"][0]})
    assert stale.code == "bad_second_factor"  # the reset took the old recovery codes too
    assert cluster.client("clerk").call("account.list", {"otp": reset["recovery_codes"][0]})["accounts"]

    records = [decode_record(data, PROTOCOL_LIMITS) for data in cluster.admin().records(ADMIN_LEDGER)]
    changes = [(r.content.author, r.content.payload) for r in records if r.content.kind == "totp"]
    admin_key = cluster.keys[ADMIN].public
    sealed = [payload.pop("sealed_sha256") for _, payload in changes]
    assert changes == [
        (ADMIN, {"account": ADMIN, "op": "enroll", "via": ""}),  # the host's bootstrap --totp
        (ADMIN, {"account": "clerk", "op": "enroll", "via": admin_key}),
        (ADMIN, {"account": "clerk", "op": "reset", "via": admin_key}),
    ]
    # Each names the sealed secret it enrolled (16.5), the latest the one Redis holds.
    plain = connect(cluster.cluster_redis_url)
    assert sealed[2] == totp.sealed_sha256(plain.hget("vledger:{totp}:account:clerk", "secret"))
    assert len(set(sealed)) == 3
    chain = b"".join(r.encode() for r in records)
    for uri in (cluster.enrollment["uri"], enrolled["uri"], reset["uri"]):
        assert secret_of(uri).encode() not in chain
    for node in cluster.node_names:  # nor the logs
        log = cluster.log_text(node)
        assert clerk_secret not in log and reset["recovery_codes"][0] not in log


def test_a_request_sent_to_the_wrong_node_does_not_use_up_its_code(
    cluster: LocalCluster, recovery: Iterator[str]
) -> None:
    code = next(recovery)
    elsewhere = cluster.client(ADMIN, cluster.node_names[1], follow=False)
    moved = remote_error(elsewhere.call, "account.add", {"account": "temp", "role": "writer", "otp": code})
    assert moved.code == "not_home"  # the admin ledger's home runs account commands
    assert cluster.admin().call("account.add", {"account": "temp", "role": "writer", "otp": code})["account"] == "temp"


def test_the_command_line_sends_the_code(cluster: LocalCluster, recovery: Iterator[str]) -> None:
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    refused = cluster.cli("user", "list", *common, check=False)  # no terminal to ask on: refused
    assert refused.returncode != 0 and "second_factor_required" in refused.stderr
    listed = cluster.cli("user", "list", "--json", "--otp", next(recovery), *common)
    assert ADMIN in [a["account"] for a in json.loads(listed.stdout)["accounts"]]


def test_an_election_is_created_with_one_code_which_no_other_invocation_can_reuse(
    cluster: LocalCluster, recovery: Iterator[str]
) -> None:
    # The admin's recovery codes are used up: a time code (the next step's, as typed early)
    # opens a session, and that session alone makes and enrolls a registrar.
    secret = secret_of(cluster.enrollment["uri"])
    token = cluster.admin().call("totp.session", {"otp": totp.code_at(secret, totp.step_at(time.time()) + 1)})[
        "session"
    ]
    registrar = generate(cluster.directory / "registrar", "registrar")
    for cmd, args in (
        ("account.add", {"account": "registrar", "role": "admin"}),
        ("key.add", {"account": "registrar", "key": registrar.public}),
    ):
        cluster.admin().call(cmd, {**args, "otp": token})
    codes = iter(cluster.admin().call("totp.enroll", {"account": "registrar", "otp": token})["recovery_codes"])
    cluster.keys["registrar"] = registrar

    key = cluster.directory / "registrar" / "registrar.key_secret"
    common = ["--config", str(cluster.config_path), "--key", str(key)]
    now = int(time.time() * 1000)
    rules = json.dumps(
        {"type": "election", "choices": ["yes", "no"], "opens": now - 60_000, "closes": now + 86_400_000}
    )
    code = next(codes)  # good once: the session it opens carries the four grants and the genesis
    created = cluster.cli("ledger", "create", "election-2", "--rules", rules, "--json", "--otp", code, *common)
    assert json.loads(created.stdout)["granted"]["kinds"] == ["register", "cast", "uncast", "withdraw"]
    assert cluster.admin("ingest-2").call("size", {"ledger": "election-2"})["size"] == 1
    again = cluster.cli("ledger", "create", "election-3", "--rules", rules, "--otp", code, *common, check=False)
    assert again.returncode != 0 and "bad_second_factor" in again.stderr
    assert remote_error(cluster.admin().call, "size", {"ledger": "election-3"}).code == "no_such_ledger"

    # A session is the key's that opened it: another key of the same admin cannot send it,
    # on any node; and it opens no other session (one code buys its two minutes, no more).
    token = cluster.client("registrar").call("totp.session", {"otp": next(codes)})["session"]
    assert cluster.client("registrar", "ingest-2").call("account.list", {"otp": token})["accounts"]
    second = new_keypair()
    cluster.client("registrar").call("key.add", {"account": "registrar", "key": second.public, "otp": token})
    cluster.keys["registrar-2"] = second
    for node in cluster.node_names:
        foreign = remote_error(cluster.client("registrar-2", node).call, "account.list", {"otp": token})
        assert foreign.code == "bad_second_factor", node
    renewed = remote_error(cluster.client("registrar").call, "totp.session", {"otp": token})
    assert renewed.code == "bad_second_factor"
    # ... yet `ledger create --otp <session>` carries the session as it is (it asked the session
    # for a session, and was refused: bad_second_factor, where every other command took it).
    made = cluster.cli("ledger", "create", "election-4", "--rules", rules, "--json", "--otp", token, *common)
    assert json.loads(made.stdout)["granted"]["kinds"] == ["register", "cast", "uncast", "withdraw"]
