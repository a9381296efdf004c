"""The pure second-factor core: RFC 6238 codes at a fixed clock, replay order, recovery codes, sealing."""

from __future__ import annotations

import hashlib
import urllib.parse

import pytest

from vledger.node import totp
from vledger.node.sealed import new_seal_key

# RFC 6238 Appendix B: the SHA-1 test key, "12345678901234567890" in base32
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
SEAL = new_seal_key()
MAC = totp.mac_key(new_seal_key())
FIXED_RANDOMNESS = bytes(range(totp.SECRET_BYTES + totp.RECOVERY_CODES * totp.RECOVERY_BYTES))


@pytest.mark.parametrize(
    ("now", "code"),
    [(59, "287082"), (1111111109, "081804"), (1111111111, "050471"), (1234567890, "005924"), (2000000000, "279037")],
)
def test_codes_are_rfc_6238_s_at_a_fixed_clock(now: int, code: str) -> None:
    # Appendix B's 8-digit values, cut to the 6 digits authenticator apps show
    assert totp.code_at(RFC_SECRET, totp.step_at(now)) == code


def test_a_code_matches_its_step_and_one_step_either_side_only() -> None:
    now = 1_700_000_000.0
    step = totp.step_at(now)
    for offset in (-1, 0, 1):
        assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, step + offset), now) == step + offset
    for offset in (-2, 2):
        assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, step + offset), now) is None


def test_a_code_of_a_step_already_used_or_older_does_not_match() -> None:
    now = 1_700_000_000.0
    step = totp.step_at(now)
    code = totp.code_at(RFC_SECRET, step)
    assert totp.matching_step(RFC_SECRET, code, now, after=step - 1) == step
    assert totp.matching_step(RFC_SECRET, code, now, after=step) is None  # the replay
    assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, step - 1), now, after=step) is None


@pytest.mark.parametrize("text", ["", "12345", "1234567", "12345a", " 123456", "１２３４５６"])
def test_what_is_not_six_ascii_digits_is_not_a_code(text: str) -> None:
    assert not totp.is_code(text)
    assert totp.matching_step(RFC_SECRET, text, 1_700_000_000.0) is None


def test_an_enrollment_gives_an_otpauth_uri_and_ten_distinct_recovery_codes() -> None:
    enrollment, sealed = totp.new_enrollment("alice", "vledger prod", MAC, SEAL, randomness=FIXED_RANDOMNESS)
    uri = urllib.parse.urlsplit(enrollment.uri)
    query = urllib.parse.parse_qs(uri.query)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert urllib.parse.unquote(uri.path) == "/vledger prod:alice"
    assert query["secret"] == [enrollment.secret]
    assert query["issuer"] == ["vledger prod"]
    assert len(enrollment.secret) == 32  # 160 bits
    assert len(set(enrollment.recovery_codes)) == totp.RECOVERY_CODES
    for code, digest in zip(enrollment.recovery_codes, enrollment.recovery_digests, strict=True):
        assert len(code) == 19 and code.count("-") == 3
        assert totp.recovery_digest(MAC, "alice", code, sealed) == digest and totp.is_recovery_digest(digest)
        assert code not in digest


def test_fresh_enrollments_differ() -> None:
    first, second = totp.new_enrollment("alice", "x", MAC, SEAL)[0], totp.new_enrollment("alice", "x", MAC, SEAL)[0]
    assert first.secret != second.secret
    assert not set(first.recovery_codes) & set(second.recovery_codes)


def test_a_recovery_code_is_read_in_any_case_and_spacing_and_is_bound_to_its_account_and_key() -> None:
    enrollment, sealed = totp.new_enrollment("alice", "x", MAC, SEAL, randomness=FIXED_RANDOMNESS)
    code = enrollment.recovery_codes[0]
    digest = totp.recovery_digest(MAC, "alice", code, sealed)
    assert totp.recovery_digest(MAC, "alice", code, sealed + b"x") != digest  # another enrollment's
    assert totp.recovery_digest(MAC, "alice", code.upper().replace("-", " "), sealed) == digest
    assert totp.recovery_digest(MAC, "bob", code, sealed) != digest
    # Without the host's key no digest of a code of one's choosing can be made (outsider o16).
    assert totp.recovery_digest(totp.mac_key(new_seal_key()), "alice", code, sealed) != digest
    plain = code.replace("-", "")
    assert hashlib.sha256(b"vledger-recovery-code:alice\0" + plain.encode()).hexdigest() != digest
    for bad in ("", "123456", code[:-1], code + "a", code.replace(code[0], "1")):
        with pytest.raises(ValueError):
            totp.recovery_digest(MAC, "alice", bad, sealed)


def test_a_session_mac_binds_every_field() -> None:
    sealed = totp.seal_secret(new_seal_key(), "alice", "A" * 32)
    fields = ("d" * 64, "alice", "key-a", 1_000, sealed)
    mac = totp.session_mac(MAC, *fields)
    for i, other in enumerate(("e" * 64, "bob", "key-b", 1_001, sealed + b"x")):
        changed = list(fields)
        changed[i] = other
        assert totp.session_mac(MAC, *changed) != mac, i  # type: ignore[arg-type]
    assert totp.session_mac(totp.mac_key(new_seal_key()), *fields) != mac
    # Framed: moving a byte from one field to the next is another MAC.
    assert totp.session_mac(MAC, "d" * 64, "alicek", "ey-a", 1_000, sealed) != mac


def test_a_sealed_secret_opens_only_with_its_key_and_for_its_account() -> None:
    key = new_seal_key()
    sealed = totp.seal_secret(key, "alice", RFC_SECRET)
    assert RFC_SECRET.encode() not in sealed
    assert totp.open_secret(key, "alice", sealed) == RFC_SECRET
    with pytest.raises(ValueError):
        totp.open_secret(key, "bob", sealed)  # moved to another account
    with pytest.raises(ValueError):
        totp.open_secret(new_seal_key(), "alice", sealed)
    with pytest.raises(ValueError):
        totp.open_secret(key, "alice", sealed[:-1] + bytes([sealed[-1] ^ 1]))
