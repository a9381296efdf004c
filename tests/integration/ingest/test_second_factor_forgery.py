"""What any ingest node's Redis password does to an admin's second factor (outsider o16 finding 1).

The thief signs in to Redis as ingest-2 (not the admin ledger's home), through the real ACL,
with no host file: it holds no ``second-factor.seal``. Each attack of o16 is played against
real nodes: a minted recovery code, a forged session, a lockout without end, and a factor
deleted from Redis, which let an enrolled admin in with no code at all outside production.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
import redis

from vledger.broker import redis_acl
from vledger.broker.redis_server import RedisServer, connect
from vledger.config.cluster import RedisAccess
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node import totp
from vledger.node.errors import RemoteError
from vledger.node.record import decode_record
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import ADMIN, LocalCluster, remote_error, wait_until

DEADLINE = 30.0
ACCOUNT_KEY = "vledger:{totp}:account:" + ADMIN


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    # Outside production: there a factor deleted from Redis let an enrolled admin in without a code.
    with LocalCluster(redis_server.url, accounts={}) as running:
        yield running


@pytest.fixture(scope="module")
def enrollment(cluster: LocalCluster) -> dict[str, Any]:
    # A second admin, never enrolled (outside production it needs no code): the one who resets.
    cluster.add_account("deputy", "admin")
    enrolled: dict[str, Any] = cluster.admin().call("totp.enroll", {})
    return enrolled


@pytest.fixture(scope="module")
def recovery(enrollment: dict[str, Any]) -> Iterator[str]:
    return iter(enrollment["recovery_codes"])


@pytest.fixture(scope="module")
def thief(cluster: LocalCluster) -> Iterator[Any]:
    """A Redis client signed in as ingest-2's user, as a node broken into holds it."""
    node = cluster.node_names[1]
    user = redis_acl.user_name("ingest", node)
    password = redis_acl.password_path(cluster.directory / "keys" / "redis", user)
    client = connect(RedisAccess(cluster.cluster_redis_url, user, password), timeout=5.0)
    yield client
    client.close()


def test_a_recovery_code_minted_through_an_ingest_node_s_password_is_refused(
    cluster: LocalCluster, enrollment: dict[str, Any], recovery: Iterator[str], thief: Any
) -> None:
    minted = "aaaa-bbbb-cccc-dddd"
    # o16's digest: the plain salted SHA-256 the nodes compared with.
    digest = hashlib.sha256(b"vledger-recovery-code:" + ADMIN.encode() + b"\0aaaabbbbccccdddd").hexdigest()
    assert thief.sadd(f"vledger:{{totp}}:recovery:{ADMIN}", digest) == 1
    for node in cluster.node_names:
        refused = remote_error(cluster.client(ADMIN, node).call, "account.list", {"otp": minted})
        assert refused.code == "bad_second_factor", node
    assert cluster.client(ADMIN, cluster.node_names[1]).call("account.list", {"otp": next(recovery)})["accounts"]


def test_a_session_forged_from_the_sealed_secret_or_a_true_session_is_refused(
    cluster: LocalCluster, enrollment: dict[str, Any], recovery: Iterator[str], thief: Any
) -> None:
    admin_key = cluster.keys[ADMIN].public
    token = totp.new_session()
    forged = f"vledger:{{totp}}:session:{totp.session_digest(token)}"
    # o16's one EVAL: the sealed secret copied into a session of the thief's making.
    copy = (
        "local s = redis.call('HGET', KEYS[1], 'secret') "
        "redis.call('HSET', KEYS[2], 'account', ARGV[1], 'key', ARGV[2], 'secret', s) "
        "return redis.call('EXPIRE', KEYS[2], 120)"
    )
    with pytest.raises(redis.exceptions.NoPermissionError):  # no node's user sends a script (o18 F2)
        thief.eval(copy, 2, ACCOUNT_KEY, forged, ADMIN, admin_key)
    # The same by plain commands, which its user may run: copied, not made atomic, and as refused.
    secret = thief.hget(ACCOUNT_KEY, "secret")
    thief.hset(forged, mapping={"account": ADMIN, "key": admin_key, "secret": secret})
    assert thief.expire(forged, 120)
    refused = remote_error(cluster.client(ADMIN, cluster.node_names[1]).call, "account.list", {"otp": token})
    assert refused.code == "bad_second_factor"
    # A true session's fields (its MAC too) copied under another token: the MAC names its token.
    opened = cluster.client(ADMIN, cluster.node_names[1]).call("totp.session", {"otp": next(recovery)})
    true = f"vledger:{{totp}}:session:{totp.session_digest(opened['session'])}"
    fields = thief.hgetall(true)
    assert b"mac" in fields
    thief.hset(forged, mapping=fields)
    refused = remote_error(cluster.client(ADMIN, cluster.node_names[1]).call, "account.list", {"otp": token})
    assert refused.code == "bad_second_factor"
    assert cluster.client(ADMIN, cluster.node_names[1]).call("account.list", {"otp": opened["session"]})["accounts"]


def test_a_lockout_written_through_an_ingest_node_s_password_lasts_one_window_at_most(
    cluster: LocalCluster, enrollment: dict[str, Any], recovery: Iterator[str], thief: Any
) -> None:
    failures = f"vledger:{{totp}}:failures:{ADMIN}"
    thief.set(failures, 99)  # no expiry: the admin's codes were refused for good
    code = totp.code_at(pyotp.parse_uri(enrollment["uri"]).secret, totp.step_at(time.time()))
    refused = remote_error(cluster.client(ADMIN, cluster.node_names[1]).call, "account.list", {"otp": code})
    assert refused.code == "bad_second_factor"  # denied for the window: PROTOCOL 16.5 says so
    plain = connect(cluster.cluster_redis_url)  # TTL is no ingest node's command
    try:
        assert 0 < plain.ttl(failures) <= totp.FAILURE_WINDOW_SECONDS
    finally:
        plain.close()
    # Recovery codes are not locked out: the admin's way on meanwhile.
    assert cluster.client(ADMIN, cluster.node_names[1]).call("account.list", {"otp": next(recovery)})["accounts"]
    thief.delete(failures)


def test_the_admin_home_drops_recovery_digests_of_the_older_form_at_its_start(
    cluster: LocalCluster, enrollment: dict[str, Any], recovery: Iterator[str], thief: Any
) -> None:
    # What a cluster before the MAC kept (or a thief wrote since): never accepted, so not kept.
    older = hashlib.sha256(b"vledger-recovery-code:" + ADMIN.encode() + b"\0eeeeffffgggghhhh").hexdigest()
    recovery_key = f"vledger:{{totp}}:recovery:{ADMIN}"
    thief.sadd(recovery_key, older)
    home = cluster.node_names[0]
    assert cluster.restart_node(home) == 0
    members = thief.smembers(recovery_key)
    assert older.encode() not in members and members and all(m.startswith(b"hmac-sha256:") for m in members)
    # One, or two with the first test's minted digest, which no node took either.
    assert re.search(rf"account {ADMIN}: [12] recovery code\(s\) of an older form dropped", cluster.log_text(home))
    assert cluster.client(ADMIN, home).call("account.list", {"otp": next(recovery)})["accounts"]


def test_a_factor_deleted_through_an_ingest_node_s_password_is_refused_and_raised(
    cluster: LocalCluster, enrollment: dict[str, Any], recovery: Iterator[str], thief: Any
) -> None:
    assert thief.delete(ACCOUNT_KEY) == 1
    home, other = cluster.node_names
    refused = remote_error(cluster.client(ADMIN, home).call, "account.list")
    assert refused.code == "second_factor_required"  # the admin home reads its own store
    deadline = time.monotonic() + DEADLINE
    while True:  # the other node proves the enrollment's record from the home's checkpoint
        try:
            cluster.client(ADMIN, other).call("account.list")
        except RemoteError as e:
            assert e.code == "second_factor_required", e
            break
        assert time.monotonic() < deadline, "an enrolled admin whose factor Redis lost was let in without a code"
        time.sleep(0.2)
    guessed = remote_error(cluster.client(ADMIN, other).call, "account.list", {"otp": next(recovery)})
    assert guessed.code == "bad_second_factor"  # its recovery codes went with it: the same answer
    # Nor may it enroll itself afresh, as o16 did (the ledger then showed two enrollments, no reset).
    again = remote_error(cluster.admin().call, "totp.enroll", {})
    assert again.code == "second_factor_required"
    missing = missing_alerts(cluster)
    assert missing and all(ADMIN in a["detail"] for a in missing)

    # The way back: another admin resets it (a first enrollment is refused: the ledger has one).
    deputy = cluster.client("deputy")
    assert remote_error(deputy.call, "totp.enroll", {"account": ADMIN}).code == "already_enrolled"
    reset = deputy.call("totp.reset", {"account": ADMIN})
    records = [decode_record(data, PROTOCOL_LIMITS) for data in cluster.admin().records(ADMIN_LEDGER)]
    ops = [r.content.payload["op"] for r in records if r.content.kind == "totp"]
    assert ops == ["enroll", "reset"]
    for node, code in zip(cluster.node_names, reset["recovery_codes"], strict=False):
        # A node takes the new factor once it has proven the reset's record from the home's
        # checkpoint (seconds under load); until then it refuses without counting a guess.
        wait_until(
            lambda node=node, code=code: accepted(cluster, node, code), DEADLINE, f"{node} took the reset's code"
        )
    assert missing_alerts(cluster) == []  # found again: resolved


def accepted(cluster: LocalCluster, node: str, code: str) -> bool:
    """Whether ``node`` let the admin list accounts with ``code``; False on bad_second_factor."""
    try:
        return bool(cluster.client(ADMIN, node).call("account.list", {"otp": code})["accounts"])
    except RemoteError as e:
        assert e.code == "bad_second_factor", e
        return False


def missing_alerts(cluster: LocalCluster) -> list[dict[str, Any]]:
    """The open ``second_factor_missing`` alerts of every ingest node."""
    plain = connect(cluster.cluster_redis_url)
    try:
        raised = [
            json.loads(value)
            for node in cluster.node_names
            for value in plain.hgetall(f"vledger:{{alerts}}:open:{node}").values()
        ]
    finally:
        plain.close()
    return [a for a in raised if a.get("what") == "second_factor_missing"]


def test_a_reset_is_not_undone_by_writing_the_old_factor_back_through_an_ingest_node_s_password(
    cluster: LocalCluster, enrollment: dict[str, Any], thief: Any
) -> None:
    # 16.5: a reset ends the old factor. The thief of the lost phone and paper, holding a node's
    # Redis password, copied the sealed secret and recovery digests before the reset, and puts
    # them back after it: the latest totp record names another sealed secret, so no node opens it.
    deputy = cluster.client("deputy")
    recovery_key = "vledger:{totp}:recovery:" + ADMIN
    lost = deputy.call("totp.reset", {"account": ADMIN})
    old_sealed, old_digests = thief.hget(ACCOUNT_KEY, "secret"), list(thief.smembers(recovery_key))
    fresh = deputy.call("totp.reset", {"account": ADMIN})
    fresh_sealed = thief.hget(ACCOUNT_KEY, "secret")
    records = [decode_record(data, PROTOCOL_LIMITS) for data in cluster.admin().records(ADMIN_LEDGER)]
    assert records[-1].content.payload["sealed_sha256"] == hashlib.sha256(fresh_sealed).hexdigest()
    thief.hset(ACCOUNT_KEY, mapping={"secret": old_sealed, "last": -1})
    thief.sadd(recovery_key, *old_digests)
    stolen = iter(lost["recovery_codes"])
    for node in cluster.node_names:
        deadline = time.monotonic() + DEADLINE
        while True:  # the other node proves the reset's record from the home's checkpoint
            try:
                cluster.client(ADMIN, node).call("account.list", {"otp": next(stolen)})
            except RemoteError as e:
                assert e.code == "bad_second_factor", e
                break
            assert time.monotonic() < deadline, f"{node}: the old factor written back after a reset was let in"
            time.sleep(0.2)
        phone = totp.code_at(secret_of(lost["uri"]), totp.step_at(time.time()))
        refused = remote_error(cluster.client(ADMIN, node).call, "account.list", {"otp": phone})
        assert refused.code == "bad_second_factor", node
    missing = missing_alerts(cluster)
    assert {a["node"] for a in missing} == set(cluster.node_names), missing
    assert all(ADMIN in a["detail"] for a in missing)

    thief.hset(ACCOUNT_KEY, mapping={"secret": fresh_sealed, "last": -1})  # the reset's own factor again
    for node, code in zip(cluster.node_names, fresh["recovery_codes"], strict=False):
        assert cluster.client(ADMIN, node).call("account.list", {"otp": code})["accounts"], node
    assert missing_alerts(cluster) == []


def test_an_old_factor_written_back_as_a_host_s_enrollment_is_not_recorded(
    cluster: LocalCluster, enrollment: dict[str, Any], thief: Any
) -> None:
    # With the home's or the admin's Redis password too, which write `:unrecorded`: the old
    # factor marked as a host's bootstrap --totp. The home records none whose sealed secret a
    # record named before (a host seals a new random secret), so it stays refused.
    deputy = cluster.client("deputy")
    lost = deputy.call("totp.reset", {"account": ADMIN})
    old_sealed = thief.hget(ACCOUNT_KEY, "secret")
    deputy.call("totp.reset", {"account": ADMIN})
    plain = connect(cluster.cluster_redis_url)
    try:
        before = len(list(cluster.admin().records(ADMIN_LEDGER)))
        plain.hset(ACCOUNT_KEY, mapping={"secret": old_sealed, "last": -1})
        plain.sadd("vledger:{totp}:unrecorded", ADMIN)
        deadline = time.monotonic() + DEADLINE
        while plain.smembers("vledger:{totp}:unrecorded"):  # the home's poll looked at it
            assert time.monotonic() < deadline, "the home never looked at the host's enrollment"
            time.sleep(0.2)
    finally:
        plain.close()
    assert len(list(cluster.admin().records(ADMIN_LEDGER))) == before
    # Refused before it is compared with the records: a Redis password makes no host's mark (r25 F1).
    assert "no mark of a host" in cluster.log_text(cluster.node_names[0])
    refused = remote_error(cluster.client(ADMIN).call, "account.list", {"otp": lost["recovery_codes"][0]})
    assert refused.code == "bad_second_factor"


def secret_of(uri: str) -> str:
    return pyotp.parse_uri(uri).secret


def test_vledger_verify_accepts_the_admin_ledger_s_totp_records_naming_their_sealed_secret(
    cluster: LocalCluster, enrollment: dict[str, Any]
) -> None:
    # The rules an outsider replays (vledger verify, observers): a `totp` record's sealed_sha256 (16.1).
    records = [decode_record(data, PROTOCOL_LIMITS) for data in cluster.admin().records(ADMIN_LEDGER)]
    assert all("sealed_sha256" in r.content.payload for r in records if r.content.kind == "totp")
    home = cluster.node_names[0]
    assert cluster.stop_node(home) == 0
    try:
        verified = cluster.verify_store(home)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        cluster.start_node(home)
