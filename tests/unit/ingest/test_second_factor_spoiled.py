"""A second factor whose keys in Redis are spoiled is refused like any bad code, never a crash
(review r24 F6)."""

from typing import Any

import pytest

from vledger.broker.second_factor import ENROLL, SecondFactorStore
from vledger.ingest.second_factor import SecondFactors
from vledger.node import totp
from vledger.node.errors import BadSecondFactorError
from vledger.node.sealed import new_seal_key

KEY = new_seal_key()


@pytest.mark.parametrize("field,value", [("last", "x"), ("last", "1e999")])
def test_a_spoiled_factor_is_a_documented_refusal_not_a_crash(redis_client: Any, field: str, value: str) -> None:
    f = SecondFactors(SecondFactorStore(redis_client), KEY, production=True, issuer="t", clock=lambda: 1.8e9)
    e = f.enroll("alice", ENROLL)
    redis_client.hset("vledger:{totp}:account:alice", field, value)
    with pytest.raises(BadSecondFactorError):
        f.check("alice", totp.code_at(e.secret, totp.step_at(1.8e9)))


def test_a_failure_count_of_another_type_is_a_documented_refusal(redis_client: Any) -> None:
    f = SecondFactors(SecondFactorStore(redis_client), KEY, production=True, issuer="t", clock=lambda: 1.8e9)
    e = f.enroll("alice", ENROLL)
    redis_client.hset("vledger:{totp}:failures:alice", "a", "b")
    with pytest.raises(BadSecondFactorError):
        f.check("alice", totp.code_at(e.secret, totp.step_at(1.8e9)))
