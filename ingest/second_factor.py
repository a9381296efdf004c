"""The ingest node's check of an admin's second factor, and enrollment (docs/PROTOCOL.md 16.5).

:class:`SecondFactors` answers one question per admin command: may this account go on, given
the ``otp`` argument it sent? In production mode (``[cluster] production = true``) every
admin command needs a valid code; otherwise only accounts that enrolled need one. The
answers are deliberately few: ``second_factor_required`` (no code where one is needed) and
``bad_second_factor`` (a wrong, expired or used code, or a code from an account without a
second factor), the same sentence whatever the reason, so that neither tells a holder of a
stolen key whether the account is enrolled. The node's log says more, never the code.

A good code can also open a **session** (``totp.session``): a token good for two minutes, for
the account and the CURVE key that sent the code, that the client sends in place of a code
with the other admin commands of the same invocation (``vledger ledger create`` of an election
sends six). Only its SHA-256 is kept, in Redis, so every ingest node checks it; it is bound to
the key, so anyone else who saw it (a node) cannot send it as the admin without the admin's
key too, which a code guards against already; it opens no other session, so one code never
buys more than its two minutes; and a reset of the account's second factor ends it.

Any ingest node's Redis password writes the ``{totp}`` keys (outsider o16), so a node trusts
none of them on Redis's word: a session and a recovery code count only with an HMAC under a
key derived from the host's second-factor key (vledger.node.totp.mac_key), a sealed secret
only if it opens for its account and is the one the account's latest ``totp`` record on the
admin ledger names (its ``sealed_sha256``); and an account the admin ledger records as
enrolled but whose factor Redis lacks, or holds another one, is refused (and
``second_factor_missing`` raised), never let in as one without a factor or with an old one.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from redis.exceptions import ResponseError

from ..broker.seal_keys import read_seal_key
from ..broker.second_factor import REPLACE, SecondFactorStore
from ..config.cluster import ClusterConfig
from ..node import totp
from ..node.errors import BadRequestError, BadSecondFactorError, SecondFactorRequiredError, SettingsError

log = logging.getLogger(__name__)

REQUIRED = (
    "admin commands need a one-time code here: give --otp CODE (or set VLEDGER_OTP) with the code of your "
    "authenticator app or one of your recovery codes; an admin without a second factor is enrolled by another "
    "admin (vledger admin totp enroll ACCOUNT) or on a node's host (vledger admin bootstrap --totp)"
)
# One sentence for every refusal (PROTOCOL 16.5): it names the lockout too, since a locked-out
# admin told only to wait for the next code was refused again for up to 15 minutes (outsider45).
BAD = (
    "the one-time code is wrong, expired or already used, or too many wrong codes were sent (a code is good "
    "once: wait for the next one; after 5 wrong codes six-digit codes are refused for up to 15 minutes: use a "
    "recovery code meanwhile)"
)
# totp.reset of the caller's own account [forbidden]: refused before the code is read (16.5).
OWN_RESET = "an admin's second factor is reset by another admin, or on a node's host (vledger admin bootstrap --totp)"
# Said only to an admin whose key passed and whose account the admin ledger records enrolled
# (a caller learns nothing of any other account): no code can be right until it is enrolled again.
MISSING = (
    "your second factor, which the admin ledger records, is missing from Redis (it lost its data?) or is not the "
    "one recorded, so no code can be checked: enroll it again, on a node's host (vledger admin bootstrap --totp) "
    "or by another admin (vledger admin totp enroll ACCOUNT); `vledger alerts` shows second_factor_missing"
)


class SecondFactors:
    """Checks and enrolls admins' second factors; any thread (each step is atomic in Redis)."""

    def __init__(
        self,
        store: SecondFactorStore,
        key: bytes | None,
        *,
        production: bool,
        issuer: str,
        clock: Callable[[], float] = time.time,
        enrolled: Callable[[str], bool] = lambda account: False,
        recorded_seal: Callable[[str], str | None] = lambda account: None,
        on_missing: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.key = key  # None: this node holds no second-factor key and can check no code
        self._mac = totp.mac_key(key) if key is not None else None
        self.production = production
        self.issuer = issuer
        self.clock = clock
        # Whether the admin ledger (as this node proved it) records the account as enrolled: Redis
        # alone said so, and any ingest node's password deletes an account's factor there.
        self.enrolled = enrolled
        # The SHA-256 of the sealed secret the account's latest ``totp`` record names (None: no
        # record, or one made before records named it): the only one taken from Redis, where a
        # writer who copied an older one puts it back after a reset (review r24 F3).
        self.recorded_seal = recorded_seal
        # Told the accounts enrolled on the admin ledger whose factor Redis lacks (a node raises
        # second_factor_missing), and [] once each was seen there again.
        self.on_missing = on_missing
        self._missing: set[str] = set()
        self._missing_lock = threading.Lock()
        # What this node saw itself, which no Redis writer can take back: its own refused codes
        # (a DEL of the shared count lifted the guess limit), the latest step it accepted of each
        # sealed secret (HSET last -1 replayed a seen code), the recovery codes it used up (an
        # SADD put one back). Across nodes Redis's word still rules: N nodes, N times 5 guesses.
        self._seen_lock = threading.Lock()
        self._refused: dict[str, list[float]] = {}
        self._accepted: dict[tuple[str, bytes], int] = {}
        self._used: set[tuple[str, str]] = set()
        # The sealed secrets (their SHA-256) this node's enrollments replaced: never good again
        # here, whatever the ledger as proven here names yet (or a record of before the field).
        self._retired: set[tuple[str, str]] = set()

    def check(self, account: str, otp: str | None, key: str = "") -> None:
        """Let ``account``, sending with CURVE key ``key``, go on, or raise
        SecondFactorRequiredError (no code where one is needed) or BadSecondFactorError (any
        code that is not good now). A good code is used up: the same code, or an older one, is
        refused from then on, on every node. A session token is good until it expires, for
        the account and key that opened it."""
        try:
            self._check(account, otp, key)
        except (ValueError, ResponseError) as e:
            # A factor's keys spoiled in Redis (a step that is no number, a count of another
            # type): only a Redis writer's hand makes them; refused like any bad code, not a crash
            # (review r24 F6).
            log.error("second factor refused: account %s's keys in Redis are damaged (%s)", account, type(e).__name__)
            raise BadSecondFactorError(BAD) from None

    def _check(self, account: str, otp: str | None, key: str) -> None:
        state = self.store.state(account)
        if state is None and self.enrolled(account):
            self._refuse_missing(account, otp, " is enrolled on the admin ledger, not in Redis")
        if state is not None and not self._recorded(account, state[0]):
            # Not the factor the ledger's latest record enrolled: an older one put back, or
            # one a host enrolled that the home has not recorded yet (seconds, its next poll).
            self._refuse_missing(account, otp, "'s sealed secret in Redis is not the one the admin ledger records")
        if state is not None and self._missing:
            self._missing_now(account, False)
        if otp is None:
            if self.production or state is not None:
                raise SecondFactorRequiredError(REQUIRED)
            return
        if state is None:
            log.info("second factor refused: account %s has none", account)
            raise BadSecondFactorError(BAD)
        sealed, last = state
        if totp.is_session(otp):
            if not key or not self._session_holds(totp.session_digest(otp), account, key, sealed):
                log.info("second factor refused: account %s sent an unknown, expired or foreign session", account)
                raise BadSecondFactorError(BAD)
            return
        if totp.is_code(otp):
            now = self.clock()
            failures = max(self.store.failures(account, totp.FAILURE_WINDOW_SECONDS), self._refused_here(account, now))
            if failures >= totp.MAX_CODE_FAILURES:
                log.warning("second factor refused: account %s sent too many wrong codes; waiting", account)
                raise BadSecondFactorError(BAD)
            with self._seen_lock:
                after = max(last, self._accepted.get((account, sealed), -1))
            step = totp.matching_step(self._secret(account, sealed), otp, now, after=after)
            if step is None or not self.store.use_step(account, sealed, step):
                with self._seen_lock:
                    self._refused.setdefault(account, []).append(now)
                failures = self.store.failed(account, totp.FAILURE_WINDOW_SECONDS)
                log.info("second factor refused: account %s sent a wrong or used code (%d so far)", account, failures)
                raise BadSecondFactorError(BAD)
            with self._seen_lock:
                self._accepted[(account, sealed)] = step
                self._refused.pop(account, None)
            self.store.succeeded(account)
            return
        try:
            digest = totp.recovery_digest(self._mac_key(account), account, otp, sealed)
        except ValueError:
            raise BadSecondFactorError(BAD) from None
        with self._seen_lock:
            used_here = (account, digest) in self._used
        if used_here or not self.store.use_recovery(account, digest):
            log.info("second factor refused: account %s sent an unknown or used recovery code", account)
            raise BadSecondFactorError(BAD)
        with self._seen_lock:
            self._used.add((account, digest))
        log.warning("account %s used a recovery code (%d left)", account, self.store.recovery_left(account))

    def open_session(self, account: str, key: str, otp: str | None) -> dict[str, Any]:
        """A new session for ``account`` and ``key``, once :meth:`check` accepted ``otp``:
        ``{"session": token, "expires_ms"}``; ``{"session": None, ...}`` when the account
        went on without a code (nothing to reuse). A session token does not open another:
        a session would otherwise last as long as its holder kept renewing it."""
        if otp is None:
            return {"session": None, "expires_ms": 0}
        state = self.store.state(account)
        if totp.is_session(otp) or state is None or not self._recorded(account, state[0]):
            raise BadSecondFactorError(BAD)
        token, sealed = totp.new_session(), state[0]
        digest, expires = totp.session_digest(token), int(self.clock() * 1000) + totp.SESSION_SECONDS * 1000
        mac = totp.session_mac(self._mac_key(account), digest, account, key, expires, sealed)
        fields: dict[str, bytes | str] = {
            "account": account,
            "key": key,
            "secret": sealed,
            "expires": str(expires),
            "mac": mac,
        }
        self.store.open_session(digest, fields, totp.SESSION_SECONDS)
        log.info("account %s opened a second-factor session for %d s", account, totp.SESSION_SECONDS)
        return {"session": token, "expires_ms": totp.SESSION_SECONDS * 1000}

    def drop_old_recovery_codes(self, accounts: Iterable[str]) -> dict[str, int]:
        """Remove the recovery digests of the older form (a plain SHA-256) of ``accounts``, which
        no node accepts since any Redis writer could make one (outsider o16), saying so in the
        log: their owners get new codes with a reset. Account -> how many, where any."""
        dropped = {}
        for account in accounts:
            count = self.store.drop_recovery(account, totp.is_recovery_digest)
            if count:
                dropped[account] = count
                log.warning(
                    "account %s: %d recovery code(s) of an older form dropped; no node accepts them: "
                    "reset its second factor for new ones (vledger admin totp reset)",
                    account,
                    count,
                )
        return dropped

    def _recorded(self, account: str, sealed: bytes) -> bool:
        """Whether ``sealed`` is the secret the admin ledger last recorded for ``account``, or
        the ledger names none (no record yet, or one from before records named it)."""
        digest = totp.sealed_sha256(sealed)
        with self._seen_lock:
            if (account, digest) in self._retired:
                return False
        recorded = self.recorded_seal(account)
        return recorded is None or hmac.compare_digest(recorded, digest)

    def _refused_here(self, account: str, now: float) -> int:
        """How many six-digit codes of ``account`` this node refused in the window ending now."""
        with self._seen_lock:
            kept = [t for t in self._refused.get(account, []) if now - t < totp.FAILURE_WINDOW_SECONDS]
            self._refused[account] = kept
            return len(kept)

    def _session_holds(self, digest: str, account: str, key: str, sealed: bytes) -> bool:
        """Whether the session of ``digest`` is one a node opened for ``account`` and ``key``
        under the secret ``sealed`` (a reset since ends it), and has not expired: its MAC says
        so, whatever Redis's expiry (a Redis writer may lengthen that)."""
        fields = self.store.session(digest)
        if fields is None:
            return False
        self._secret(account, sealed)  # a secret moved here from another account does not open
        try:
            expires = int(fields["expires"])
        except ValueError:
            return False
        mac = totp.session_mac(self._mac_key(account), digest, account, key, expires, sealed)
        held = (fields["account"], fields["key"], fields["secret"]) == (account.encode(), key.encode(), sealed)
        return held and hmac.compare_digest(fields["mac"], mac.encode()) and self.clock() * 1000 < expires

    def _mac_key(self, account: str) -> bytes:
        if self._mac is None:
            log.error("account %s sent a second factor, but this node holds no second-factor key", account)
            raise BadSecondFactorError(BAD)
        return self._mac

    def _refuse_missing(self, account: str, otp: str | None, why: str) -> NoReturn:
        """Refuse ``account``, whose factor the admin ledger records is not in Redis (``why``), as
        the caller's own factor missing (outsider o18 F7: "wrong, expired or already used" sent the
        admin after its code), and report it missing (second_factor_missing)."""
        self._missing_now(account, True)
        log.error("second factor refused: account %s%s", account, why)
        raise SecondFactorRequiredError(MISSING) if otp is None else BadSecondFactorError(MISSING)

    def _missing_now(self, account: str, missing: bool) -> None:
        """Note whether ``account``'s factor is missing from Redis; tell ``on_missing`` of a change."""
        # Told under the lock: two threads' raise and resolve reach Redis in the order they happened.
        with self._missing_lock:
            before = set(self._missing)
            (self._missing.add if missing else self._missing.discard)(account)
            if self._missing != before and self.on_missing is not None:
                self.on_missing(sorted(self._missing))

    def _secret(self, account: str, sealed: bytes) -> str:
        if self.key is None:
            log.error("account %s has a second factor, but this node holds no second-factor key", account)
            raise BadSecondFactorError(BAD)
        try:
            return totp.open_secret(self.key, account, sealed)
        except ValueError:
            log.error("the sealed second-factor secret of account %s does not open with this node's key", account)
            raise BadSecondFactorError(BAD) from None

    def enroll(self, account: str, mode: str) -> totp.Enrollment:
        """A new second factor for ``account`` (mode: vledger.broker.second_factor's ENROLL,
        RESET or REPLACE), stored sealed; the Enrollment goes to the caller once. Raises
        AlreadyEnrolledError / NotEnrolledError, or BadRequestError without a key."""
        if self.key is None:
            raise BadRequestError("this node holds no second-factor key (vledger keygen --cluster makes one)")
        mac = self._mac_key(account)
        enrollment, sealed = totp.new_enrollment(account, self.issuer, mac, self.key)
        before = self.store.state(account)
        mark = totp.host_mark(mac, account, sealed, int(self.clock() * 1000)) if mode == REPLACE else ""
        self.store.enroll(account, sealed, enrollment.recovery_digests, mode, mark)
        if before is not None and before[0] != sealed:
            with self._seen_lock:
                self._retired.add((account, totp.sealed_sha256(before[0])))
        log.info("account %s: second factor %s", account, "enrolled" if mode != "reset" else "reset")
        return enrollment

    def host_marked(self, account: str, sealed: bytes, after_ms: int = -1) -> bool:
        """Whether a host holding the cluster's second-factor key marked ``sealed`` as its
        enrollment of ``account`` lately, at ``after_ms`` (the account's latest ``totp`` record)
        or later (vledger.node.totp.host_mark): only such an enrollment is the admin ledger's
        home's to record (review r25 F1; r26: one marked before that record is one it replaced)."""
        if self._mac is None:
            return False
        now_ms = int(self.clock() * 1000)
        marks = self.store.marks(account)
        return any(totp.host_mark_holds(self._mac, account, sealed, m, now_ms, after_ms) for m in marks)


def second_factor_issuer(config: ClusterConfig) -> str:
    """The issuer an authenticator app shows beside the account: ``vledger CLUSTER``."""
    return f"vledger {config.name}"


def cluster_second_factors(config: ClusterConfig, client: Any) -> SecondFactors:
    """The node's SecondFactors, with the cluster's key when the keys directory holds it.

    Raises SettingsError in production mode without the key (no code could be checked), or
    the key file's own errors (too open, not a key).
    """
    path = config.second_factor_key_path()
    key = read_seal_key(path) if path.exists() else None
    if key is None and config.production:
        raise SettingsError(
            f"{config.path}: cluster.production needs the second-factor key {path} (vledger keygen --cluster makes it)"
        )
    return SecondFactors(
        SecondFactorStore(client), key, production=config.production, issuer=second_factor_issuer(config)
    )
