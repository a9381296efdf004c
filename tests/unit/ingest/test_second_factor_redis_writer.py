"""What a Redis writer (any ingest node's password, no second-factor.seal) must not do to an
admin's second factor, beyond denying service (PROTOCOL 16.5; review r24 F1-F3): lift the guess
limit, make a used code or recovery code good again, bring back recovery codes a reset ended."""

from __future__ import annotations

from typing import Any

import pytest

from vledger.broker.second_factor import ENROLL, RESET, SecondFactorStore
from vledger.ingest.second_factor import SecondFactors
from vledger.node import totp
from vledger.node.errors import BadSecondFactorError, SecondFactorRequiredError
from vledger.node.sealed import new_seal_key

NOW = 1_800_000_000.0
KEY = new_seal_key()
ACCOUNT = "vledger:{totp}:account:alice"
RECOVERY = "vledger:{totp}:recovery:alice"
FAILURES = "vledger:{totp}:failures:alice"


def gate(client: Any, **ledger: Any) -> SecondFactors:
    """A node's check; ``ledger``: what it asks of the admin ledger (enrolled, recorded_seal) and on_missing."""
    return SecondFactors(SecondFactorStore(client), KEY, production=True, issuer="t", clock=lambda: NOW, **ledger)


def code(enrollment: totp.Enrollment, offset: int = 0) -> str:
    return totp.code_at(enrollment.secret, totp.step_at(NOW) + offset)


def test_a_redis_writer_deleting_the_failure_count_does_not_lift_the_guess_limit(redis_client: Any) -> None:
    # 16.5: "After 5 six-digit codes refused within 15 minutes ... refused unread". The count is
    # a Redis key every ingest user may DEL: a holder of an admin's CURVE key and a node's Redis
    # password guesses without limit (3 in a million a guess: ~333k guesses, minutes to hours).
    factors = gate(redis_client)
    enrollment = factors.enroll("alice", ENROLL)
    right = code(enrollment)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    for _ in range(totp.MAX_CODE_FAILURES):
        with pytest.raises(BadSecondFactorError):
            factors.check("alice", wrong)
        redis_client.delete(FAILURES)  # the writer, between guesses
    with pytest.raises(BadSecondFactorError):
        factors.check("alice", right)  # the 6th guess of the window: must be refused unread


def test_a_code_once_accepted_is_refused_again_even_when_redis_last_moves_back(redis_client: Any) -> None:
    # 16.5: "A code is thus good once". `last` is Redis's word alone: HSET last -1 replays a seen
    # code (a code typed on a shared screen, logged by a proxy...) for its 90 s.
    factors = gate(redis_client)
    enrollment = factors.enroll("alice", ENROLL)
    seen = code(enrollment)
    factors.check("alice", seen)
    redis_client.hset(ACCOUNT, "last", -1)  # the writer
    with pytest.raises(BadSecondFactorError):
        factors.check("alice", seen)


def test_a_used_recovery_code_is_refused_again_even_when_its_digest_is_put_back(redis_client: Any) -> None:
    factors = gate(redis_client)
    enrollment = factors.enroll("alice", ENROLL)
    digests = [bytes(m) for m in redis_client.smembers(RECOVERY)]
    factors.check("alice", enrollment.recovery_codes[0])
    redis_client.sadd(RECOVERY, *digests)  # the writer copied the set before (it is readable)
    with pytest.raises(BadSecondFactorError):
        factors.check("alice", enrollment.recovery_codes[0])


def test_old_recovery_codes_stay_dead_after_a_reset_even_when_put_back(redis_client: Any) -> None:
    # Weaker writer: only the recovery set (no secret rollback), the reset's new secret kept.
    factors = gate(redis_client)
    lost = factors.enroll("alice", ENROLL)
    old_digests = [bytes(m) for m in redis_client.smembers(RECOVERY)]
    factors.enroll("alice", RESET)
    redis_client.sadd(RECOVERY, *old_digests)
    with pytest.raises(BadSecondFactorError):
        factors.check("alice", lost.recovery_codes[2])


def test_a_reset_after_a_lost_factor_is_not_undone_by_writing_the_old_factor_back(redis_client: Any) -> None:
    # 16.5: after a reset "the old secret, its used steps and its recovery codes are gone". The
    # AD binds the sealed secret to its account, not to its enrollment: an old sealed secret (and
    # old recovery digests) of the same account, read from Redis before the reset, opened again.
    # The admin ledger's `totp` records name the sealed secret each enrolled (`recorded` stands
    # for the home's record here; tests/unit/node/rules/test_admin.py folds the real records).
    recorded: dict[str, str] = {}
    missing: list[list[str]] = []
    # Another node than the home that enrolls: it knows of the reset by the ledger alone.
    factors = gate(
        redis_client,
        enrolled=lambda account: account in recorded,
        recorded_seal=recorded.get,
        on_missing=missing.append,
    )
    home = gate(redis_client)
    lost = home.enroll("alice", ENROLL)  # the phone / paper the thief now holds
    recorded["alice"] = lost.sealed_sha256
    old_sealed = redis_client.hget(ACCOUNT, "secret")
    old_digests = [bytes(m) for m in redis_client.smembers(RECOVERY)]
    new = home.enroll("alice", RESET)  # another admin resets alice's lost factor
    recorded["alice"] = new.sealed_sha256
    redis_client.hset(ACCOUNT, mapping={"secret": old_sealed, "last": -1})  # the writer
    redis_client.sadd(RECOVERY, *old_digests)
    for otp in (code(lost), lost.recovery_codes[1]):
        with pytest.raises(BadSecondFactorError):
            factors.check("alice", otp)
    with pytest.raises(SecondFactorRequiredError):
        factors.check("alice", None)
    with pytest.raises(BadSecondFactorError):
        factors.open_session("alice", "k" * 40, code(lost))
    assert missing == [["alice"]]  # second_factor_missing: the ledger's factor is not Redis's
    again = home.enroll("alice", RESET)  # put right by a reset: its factor works, the alert ends
    recorded["alice"] = again.sealed_sha256
    factors.check("alice", code(again))
    assert missing == [["alice"], []]


def test_the_node_that_reset_a_factor_never_takes_the_old_one_back_even_before_the_ledger_names_it(
    redis_client: Any,
) -> None:
    # Review r24's case as written: no ledger behind the node (or its records of before
    # sealed_sha256). The node that made the reset remembers the sealed secret it replaced.
    factors = gate(redis_client)
    lost = factors.enroll("alice", ENROLL)  # the phone / paper the thief now holds
    old_sealed = redis_client.hget(ACCOUNT, "secret")
    old_digests = [bytes(m) for m in redis_client.smembers(RECOVERY)]
    factors.enroll("alice", RESET)  # another admin resets alice's lost factor
    redis_client.hset(ACCOUNT, mapping={"secret": old_sealed, "last": -1})  # the writer
    redis_client.sadd(RECOVERY, *old_digests)
    for otp in (code(lost), lost.recovery_codes[1]):
        with pytest.raises(BadSecondFactorError):
            factors.check("alice", otp)


def test_a_factor_recorded_before_records_named_their_sealed_secret_is_taken_on_redis_word(redis_client: Any) -> None:
    # Upgrading (16.5): a `totp` record of before `sealed_sha256` names none, so the factor
    # Redis holds is checked as before (until the account's next reset records one).
    factors = gate(redis_client, enrolled=lambda account: True, recorded_seal=lambda account: None)
    enrollment = factors.enroll("alice", ENROLL)
    factors.check("alice", code(enrollment))
