"""Admins' second factor: RFC 6238 time-based one-time codes and one-time recovery codes.

Pure: every function takes the time and the secrets it needs; nothing here reads a clock, a
file or Redis (vledger.broker.second_factor keeps the sealed secrets and the used steps).
docs/PROTOCOL.md 16.5 states the rules; in short:

* a secret is 20 random bytes (160 bits, RFC 4226's recommended length), shown to its owner
  once as base32 inside an ``otpauth://totp/`` URI (SHA-1, 6 digits, 30 s, the defaults every
  authenticator app reads);
* a code is accepted at the time step it was made for, or one step either side (clocks
  drift, people type slowly), and only if that step is later than the last step the account
  used: a code, once accepted, is never accepted again (RFC 6238 section 5.2), nor is any
  older one;
* after :data:`MAX_CODE_FAILURES` wrong codes in :data:`FAILURE_WINDOW_SECONDS`, codes are
  refused unread until the window ends (recovery codes are not: they cannot be guessed);
* a recovery code is 80 random bits spelt ``xxxx-xxxx-xxxx-xxxx`` (lower-case base32), kept
  only as an HMAC-SHA256 under a key derived from the cluster's second-factor key
  (:func:`recovery_digest`, :func:`mac_key`), bound to its account, good once: any ingest
  node's Redis password writes the set, and a plain hash let it mint a code (outsider o16);
* the secret is stored sealed with AES-SIV (vledger.node.sealed) under a cluster key, bound
  to its account by the associated data, so a sealed secret moved to another account does
  not open;
* a second-factor session (``totp.session``) is 160 random bits spelt as 32 lower-case base32
  characters, kept only as a SHA-256 (:func:`session_digest`): a code traded for it lets one
  invocation of the client send several admin commands for one code. What Redis keeps of it
  (account, CURVE key, expiry, sealed secret) carries an HMAC under the same derived key
  (:func:`session_mac`), so a Redis writer cannot make one of a copied sealed secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

import pyotp
from pyotp.utils import strings_equal

from .sealed import siv_decrypt, siv_encrypt

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1  # steps either side of now that a code may have been made for
SECRET_BYTES = 20
RECOVERY_CODES = 10
RECOVERY_BYTES = 10  # 80 bits: 16 base32 characters
# RFC 4226 section 7.3's throttling: after this many wrong six-digit codes within the window,
# an account's codes are refused unread until the window (from the first of them) ends. A
# guess is right with odds 3 in a million (three steps), so 5 a quarter hour leave a thief
# of an admin's key about 20,000 hours of guessing; recovery codes (80 bits) stay usable.
MAX_CODE_FAILURES = 5
FAILURE_WINDOW_SECONDS = 900
MAX_CODE_LENGTH = 32  # the longest ``otp`` argument a node reads (a recovery code with spaces)
_CODE = re.compile(rf"[0-9]{{{DIGITS}}}")
_RECOVERY = re.compile(r"[a-z2-7]{16}")
SESSION_BYTES = 20  # 160 bits: 32 base32 characters, within MAX_CODE_LENGTH
SESSION_SECONDS = 120  # how long a session lasts from the code that opened it
_SESSION = re.compile(r"[a-z2-7]{32}")
_SESSION_CONTEXT = b"vledger-totp-session:"
_SEAL_CONTEXT = b"vledger-totp-secret:"
_RECOVERY_CONTEXT = b"vledger-recovery-code:"
_MAC_KEY_CONTEXT = b"vledger-totp-mac-key"
# What a recovery digest of this form starts with: the older form (a plain SHA-256, which
# anyone who wrote Redis could make) does not, so the admin home drops those at its start.
RECOVERY_FORM = "hmac-sha256:"
_SESSION_MAC_CONTEXT = b"vledger-totp-session-mac:"
_HOST_MARK_CONTEXT = b"vledger-totp-host-enrollment:"
# How long a host's enrollment mark is good for the admin ledger's home to record (its accounts
# poll runs every few seconds): an old mark a Redis writer kept cannot be played again later.
HOST_MARK_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What an enrollment hands its owner once (never stored, never logged): the secret's URI
    and the recovery codes; and what the cluster keeps of the codes (their digests)."""

    secret: str
    uri: str
    recovery_codes: tuple[str, ...]
    recovery_digests: tuple[str, ...]
    sealed_sha256: str  # what the admin ledger's ``totp`` record names (:func:`sealed_sha256`)


def new_enrollment(
    account: str, issuer: str, mac: bytes, seal_key: bytes, *, randomness: bytes | None = None
) -> tuple[Enrollment, bytes]:
    """A fresh secret and recovery codes for ``account``, their digests under ``mac`` (see
    :func:`mac_key`) bound to the secret sealed under ``seal_key`` (also returned): a reset
    ends the old codes even where a Redis writer puts their digests back. ``randomness``
    (tests only) replaces the OS's: ``SECRET_BYTES + RECOVERY_CODES * RECOVERY_BYTES`` bytes."""
    size = SECRET_BYTES + RECOVERY_CODES * RECOVERY_BYTES
    data = os.urandom(size) if randomness is None else randomness
    if len(data) != size:
        raise ValueError(f"an enrollment takes {size} random bytes")
    secret = base64.b32encode(data[:SECRET_BYTES]).decode("ascii")
    codes = []
    for i in range(RECOVERY_CODES):
        chunk = data[SECRET_BYTES + i * RECOVERY_BYTES : SECRET_BYTES + (i + 1) * RECOVERY_BYTES]
        text = base64.b32encode(chunk).decode("ascii").lower()
        codes.append("-".join(text[j : j + 4] for j in range(0, 16, 4)))
    sealed = seal_secret(seal_key, account, secret)
    return Enrollment(
        secret,
        provisioning_uri(secret, account, issuer),
        tuple(codes),
        tuple(recovery_digest(mac, account, code, sealed) for code in codes),
        sealed_sha256(sealed),
    ), sealed


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER`` URI an authenticator app reads."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=account, issuer_name=issuer)


def step_at(now: float) -> int:
    """The RFC 6238 time step of ``now`` (seconds since 1970)."""
    return int(now // STEP_SECONDS)


def code_at(secret: str, step: int) -> str:
    """The code of ``secret`` for time step ``step`` (what the authenticator app shows)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def is_code(text: str) -> bool:
    """Whether ``text`` is spelt as a one-time code (six digits)."""
    return _CODE.fullmatch(text) is not None


def matching_step(secret: str, code: str, now: float, after: int = -1) -> int | None:
    """The time step within :data:`WINDOW` of ``now`` that ``code`` was made for, later than
    ``after`` (the account's last used step), or None. The earliest such step wins, so that a
    code for the next step stays usable once its own step comes."""
    if not is_code(code):
        return None
    found = None
    current = step_at(now)
    for step in range(current - WINDOW, current + WINDOW + 1):
        # Every candidate is compared, in constant time, so the answer's timing says nothing.
        if strings_equal(code_at(secret, step), code) and step > after and found is None:
            found = step
    return found


def normalize_recovery(text: str) -> str | None:
    """A recovery code as stored digests see it (lower case, no dashes or spaces), or None when
    ``text`` is not spelt as one."""
    plain = text.replace("-", "").replace(" ", "").lower()
    return plain if _RECOVERY.fullmatch(plain) else None


def new_session(randomness: bytes | None = None) -> str:
    """A new second-factor session token (from the OS's randomness unless given)."""
    data = os.urandom(SESSION_BYTES) if randomness is None else randomness
    if len(data) != SESSION_BYTES:
        raise ValueError(f"a session takes {SESSION_BYTES} random bytes")
    return base64.b32encode(data).decode("ascii").lower()


def is_session(text: str) -> bool:
    """Whether ``text`` is spelt as a session token (never as a code or a recovery code)."""
    return _SESSION.fullmatch(text) is not None


def session_digest(token: str) -> str:
    """The SHA-256 (hex) that stands for a session token where it is kept: 160 random bits
    need no salt nor a slow hash, and whoever reads the store cannot send the token."""
    return hashlib.sha256(_SESSION_CONTEXT + token.encode("ascii")).hexdigest()


def mac_key(seal_key: bytes) -> bytes:
    """The key of recovery digests and session MACs, derived from the cluster's second-factor
    key (a host file on the ingest nodes, never in Redis): whoever writes Redis without it
    can neither mint a recovery code nor make a session."""
    return hmac.new(seal_key, _MAC_KEY_CONTEXT, hashlib.sha256).digest()


def _framed(*parts: bytes) -> bytes:
    # Each part with its length first: no two tuples of parts give the same bytes.
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def recovery_digest(mac: bytes, account: str, code: str, sealed: bytes) -> str:
    """The HMAC-SHA256 (``hmac-sha256:`` and hex) under ``mac`` (:func:`mac_key`) that stands for a recovery code
    of ``account``; raises ValueError if ``code`` is not spelt as one. 80 random bits need no
    slow hash: the digest of a guess is as hard to find as the code."""
    plain = normalize_recovery(code)
    if plain is None:
        raise ValueError("not a recovery code")
    framed = _framed(account.encode(), plain.encode(), hashlib.sha256(sealed).digest())
    digest = hmac.new(mac, _RECOVERY_CONTEXT + framed, hashlib.sha256)
    return RECOVERY_FORM + digest.hexdigest()


def is_recovery_digest(text: str) -> bool:
    """Whether ``text`` is of the form :func:`recovery_digest` makes (not the older one)."""
    return text.startswith(RECOVERY_FORM)


def session_mac(mac: bytes, digest: str, account: str, key: str, expires_ms: int, sealed: bytes) -> str:
    """The HMAC-SHA256 (hex) under ``mac`` that vouches for the session of token digest
    ``digest``: good for ``account`` sending with CURVE ``key`` until ``expires_ms``, while
    its sealed secret is ``sealed`` (a reset ends it)."""
    parts = (digest.encode(), account.encode(), key.encode(), str(expires_ms).encode(), sealed)
    return hmac.new(mac, _SESSION_MAC_CONTEXT + _framed(*parts), hashlib.sha256).hexdigest()


def host_mark(mac: bytes, account: str, sealed: bytes, at_ms: int) -> str:
    """The mark ``<at_ms> <hex HMAC>`` a host's ``vledger admin bootstrap --totp`` leaves beside
    the account in ``{totp}:unrecorded``: under ``mac`` (:func:`mac_key`, which a Redis password
    does not give), it binds the account, the sealed secret it wrote and when, so the home records
    only an enrollment a host made (review r25 F1: a marked old secret was recorded again)."""
    parts = (account.encode(), sealed_sha256(sealed).encode(), str(at_ms).encode())
    return f"{at_ms} " + hmac.new(mac, _HOST_MARK_CONTEXT + _framed(*parts), hashlib.sha256).hexdigest()


def host_mark_holds(mac: bytes, account: str, sealed: bytes, mark: str, now_ms: int, after_ms: int = -1) -> bool:
    """Whether ``mark`` is :func:`host_mark` of these, made within HOST_MARK_SECONDS of ``now_ms``
    (and not dated past it beyond a minute), and not before ``after_ms`` (the account's latest
    record: an enrollment it replaced, or saw replaced, is no new one, review r26)."""
    at, _, _ = mark.partition(" ")
    if not at.isdigit() or len(at) > 16:
        return False
    at_ms = int(at)
    if at_ms < after_ms or not -60_000 <= now_ms - at_ms <= HOST_MARK_SECONDS * 1000:
        return False
    return hmac.compare_digest(host_mark(mac, account, sealed, at_ms), mark)


def seal_secret(key: bytes, account: str, secret: str) -> bytes:
    """The secret sealed (AES-SIV) under ``key``, bound to ``account``."""
    return siv_encrypt(key, secret.encode("ascii"), _SEAL_CONTEXT + account.encode())


def sealed_sha256(sealed: bytes) -> str:
    """The SHA-256 (hex) of a sealed secret, as the admin ledger's ``totp`` record names it: it
    tells which enrollment Redis holds and, without the key, nothing of the secret."""
    return hashlib.sha256(sealed).hexdigest()


def open_secret(key: bytes, account: str, sealed: bytes) -> str:
    """The inverse of :func:`seal_secret`; raises ValueError when ``sealed`` was not sealed by
    ``key`` for ``account`` (tampered, moved, or sealed with another cluster key)."""
    return siv_decrypt(key, sealed, _SEAL_CONTEXT + account.encode()).decode("ascii")
