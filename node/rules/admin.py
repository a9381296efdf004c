"""The admin ledger: accounts, keys, grants and key rotations, as a witnessed chain.

One ledger per cluster, named ``admin`` (:data:`ADMIN_LEDGER`), genesis rules
``{"type": "admin"}`` or ``{"type": "admin", "grants": [[ledger, kind, account], ...]}``
(grants in force from the genesis on). Every admin command appends one record here, the
admin's account as its author and the CURVE key the command came through as ``via``, so
every change of an account, a key or a grant is public, ordered and signed off by the
chain. Records (docs/PROTOCOL.md section 16), payloads with exactly these fields:

* ``account`` ``{"account", "op", "role", "enabled", "keys", "via"}``: ``op`` one of
  ``add``, ``remove``, ``enable``, ``disable``, ``import``; the other fields state the
  account **after** the change (a removed account: role ``""``, not enabled, no keys), so the
  last such record of an account is its state. A ``remove`` may carry one more field,
  ``"ends_grants": true`` (:data:`ENDS_GRANTS`; on no other op, never another value): it then
  ends every grant the account holds, at the record's accepted time, as a revoke of each
  would, so a later account of the same name starts with no grant. Nodes write it on every
  removal; a removal without it (written before the rule) ends nothing, so every admin
  ledger valid before replays as it was.
* ``key`` ``{"account", "op", "key", "keys", "via"}``: ``op`` ``add`` or ``revoke``; ``keys``
  the account's keys after it.
* ``grant`` / ``revoke`` ``{"ledger", "kind", "account", "via"}``: ``account`` may write
  records of ``kind`` (``*``: every kind) on ``ledger`` from this record on / no longer.
  A grant already held is ``already_granted``, a revoke of one not held (or ended by an
  ``ends_grants`` removal) ``no_such_grant``.
* ``key_rotation`` ``{"node", "curve", "sign", "until", "via"}``: node ``node`` now has
  these public keys (Z85 CURVE key, hex Ed25519 key or ``""`` for a node that has no
  Ed25519 key, the verifier); its previous keys work until ``until`` (milliseconds since 1970).
  An optional ``cosigned`` (an object: ledger -> size, a positive integer) states the largest
  checkpoint of each ledger the replaced Ed25519 key had cosigned: a cosignature by that key
  counts only on a checkpoint no larger, of a ledger listed (PROTOCOL 16.6). An optional
  ``tallied`` (an object: ledger -> height, an integer >= 0) states the largest tally height
  of each ledger the replaced key had signed (an observer's): a tally signed by that key counts
  only at a height no larger, of a ledger listed (PROTOCOL 11.3, 16.6).
* ``totp`` ``{"account", "op", "via"}``: ``op`` ``enroll`` or ``reset``: that account's
  second factor changed (never the secret). An optional ``sealed_sha256`` (64 lower-case hex
  digits) is the SHA-256 of the new sealed secret as Redis keeps it (PROTOCOL 16.5).

**The grant rule** (:meth:`Grants.allows`). A kind of a ledger is *open* (any account may
write it, as before grants existed) until the admin ledger grants it, or ``*`` of that
ledger, to a first account; from then on it is *closed* for good, and only an account
holding a grant for that kind (or ``*``) may write it; the kinds a ledger's domain binds to
their authors already (``Domain.bound_kinds``: a resources ledger's ``issue`` and ``transfer``)
are never closed, which the engine judges, since only it reads the ledger's genesis
(engine.grant_closes). A record accepted at time ``a`` is
judged by the admin records accepted strictly before ``a``: the node that orders the admin
ledger gives each admin record an ``accepted`` time at least that of every record it placed
before, and every record it places after one at least a millisecond later
(vledger.node.store), so anyone replaying the chains finds the same answer as the
committer. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...config.settings import PROTOCOL_LIMITS
from ..epoch import EPOCH_KIND
from ..errors import AlreadyGrantedError, NodeKeyInUseError, NoSuchGrantError
from ..key_rotation import ROTATION_KIND
from ..ledger import LedgerRules
from ..node_key_rotation import curve_key_problem, rotation_sign_problem
from ..record import ACCOUNT_PATTERN, GENESIS_KIND, NAME_PATTERN, Record
from ..times import ms_text
from . import Domain, Fields, GenesisReader, Plan, refuse

ADMIN_LEDGER = "admin"
ADMIN_TYPE = "admin"
ADMIN_KINDS = ("account", "grant", "key", "key_rotation", "revoke", "totp")
ANY_KIND = "*"
# The kinds a node places only for an admin's command on a ledger's machinery (a handover for
# ledger.promote, a checkpoint key rotation for ledger.rekey), never for a client's put: no
# grant closes them, ``*`` included, so a grant of a ledger's data never locks its admin out
# of the remedies for a lost home or a stolen key (PROTOCOL 16.2).
MACHINERY_KINDS = frozenset((EPOCH_KIND, ROTATION_KIND))
# The optional fields of a ``key_rotation`` (PROTOCOL 16.1): what the replaced Ed25519 key had
# cosigned (ledger -> size) and, an observer's, tallied (ledger -> height), in payload order.
ROTATION_STATES = ("cosigned", "tallied")
# The optional field of an ``account`` ``remove`` that ends the account's grants (PROTOCOL 16.1):
# keyed on what the record says, so removals written before the rule keep their meaning.
ENDS_GRANTS = "ends_grants"
ACCOUNT_OPS = frozenset(("add", "remove", "enable", "disable", "import"))
KEY_OPS = frozenset(("add", "revoke"))
TOTP_OPS = frozenset(("enroll", "reset"))
# The optional field of a ``totp`` record (PROTOCOL 16.1): the SHA-256 (hex) of the sealed secret
# it enrolled, as Redis keeps it. A node takes from Redis only the sealed secret the account's
# latest ``totp`` record names: a Redis writer who copied an older one cannot put it back after a
# reset (review r24 F3). Records made before the field name none: Redis's word, as before.
SEALED_SHA256 = "sealed_sha256"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= PROTOCOL_LIMITS.max_name_length
        and NAME_PATTERN.fullmatch(value) is not None
    )


def cosigned_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a ``key_rotation``'s ``cosigned`` (ledger -> size), or None."""
    return _stated_problem("cosigned", "size", 1, value)


def tallied_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a ``key_rotation``'s ``tallied`` (ledger -> height), or None."""
    return _stated_problem("tallied", "height", 0, value)


def _stated_problem(field: str, what: str, least: int, value: object) -> str | None:
    if not isinstance(value, dict):
        return f"{field} must be an object: ledger -> {what}"
    for ledger, number in value.items():
        if not is_name(ledger):
            return f"{field}: {ledger!r} is not a ledger name"
        if isinstance(number, bool) or not isinstance(number, int) or not least <= number < 2**64:
            kind = "a positive integer" if least == 1 else "an integer >= 0"
            return f"{field}: the {what} of {ledger!r} must be {kind}"
    return None


def is_account(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= PROTOCOL_LIMITS.max_name_length
        and ACCOUNT_PATTERN.fullmatch(value) is not None
    )


def grant_problem(ledger: object, kind: object, account: object) -> str | None:
    """What is wrong with a grant's three names, or None (shared by the rules and the node)."""
    if not is_name(ledger) or ledger == ADMIN_LEDGER:
        return f"ledger {ledger!r} is not a ledger that takes grants (a name other than {ADMIN_LEDGER!r})"
    if kind != ANY_KIND and (not is_name(kind) or kind == GENESIS_KIND):
        return f"kind {kind!r} is not a record kind (a name other than {GENESIS_KIND!r}, or {ANY_KIND!r})"
    if not is_account(account):
        return f"account {account!r} is not an account name"
    return None


@dataclass(slots=True)
class Grants:
    """Who may write which kind of which ledger, with the time each grant began and ended.

    Built from the admin ledger's records in height order; only grows. Memory: one entry
    per grant or revoke record.
    """

    # (ledger, kind, account) -> accepted times of its grant/revoke records, and what each did
    _events: dict[tuple[str, str, str], tuple[list[int], list[bool]]] = field(default_factory=dict)
    # (ledger, kind) -> the accepted time of its first grant: closed from then on
    _closed: dict[tuple[str, str], int] = field(default_factory=dict)
    last_accepted: int = -1  # the latest admin record applied (any kind)
    # account -> accepted times of the account records that made it an enabled admin or not, and which
    _admins: dict[str, tuple[list[int], list[bool]]] = field(default_factory=dict)
    opened: int | None = None  # the admin ledger's genesis' accepted time (None: no genesis read)

    def add(self, ledger: str, kind: str, account: str, granted: bool, accepted: int) -> None:
        times, states = self._events.setdefault((ledger, kind, account), ([], []))
        times.append(accepted)
        states.append(granted)
        if granted:
            self._closed.setdefault((ledger, kind), accepted)
        self.last_accepted = max(self.last_accepted, accepted)

    def holds(self, ledger: str, kind: str, account: str, before: int | None = None) -> bool:
        """Whether ``account`` holds exactly this grant, from records accepted before ``before``
        (None: every record applied)."""
        events = self._events.get((ledger, kind, account))
        if events is None:
            return False
        times, states = events
        index = len(times) if before is None else bisect.bisect_left(times, before)
        return index > 0 and states[index - 1]

    def set_admin(self, account: str, admin: bool, accepted: int) -> None:
        """``account`` is an enabled admin (``admin``) or not from its record accepted at ``accepted``."""
        times, states = self._admins.setdefault(account, ([], []))
        times.append(accepted)
        states.append(admin)

    def places_machinery(self, author: str, accepted: int) -> bool:
        """Whether ``author`` may be the author of a record of MACHINERY_KINDS accepted at
        ``accepted`` (PROTOCOL 16.7): an enabled admin by the admin records accepted before it,
        or any author before the admin ledger's genesis (no record said who was an admin then)."""
        if self.opened is None or accepted <= self.opened:
            return True
        events = self._admins.get(author)
        if events is None:
            return False
        times, states = events
        index = bisect.bisect_left(times, accepted)
        return index > 0 and states[index - 1]

    def held_by(self, account: str) -> list[tuple[str, str]]:
        """The (ledger, kind) grants ``account`` holds after every record applied, sorted."""
        return sorted(
            (ledger, kind)
            for (ledger, kind, holder), (_, states) in self._events.items()
            if holder == account and states[-1]
        )

    def end_all(self, account: str, accepted: int) -> list[tuple[str, str]]:
        """End every grant ``account`` holds at ``accepted`` (its removal, PROTOCOL 16.2), as a
        revoke of each would; the (ledger, kind) grants it ended."""
        ended = self.held_by(account)
        for ledger, kind in ended:
            self.add(ledger, kind, account, False, accepted)
        return ended

    def closed(self, ledger: str, kind: str, before: int | None = None) -> bool:
        """Whether ``kind`` of ``ledger`` is closed (granted to someone) before ``before``; a
        kind of MACHINERY_KINDS never is."""
        # No kind granted anywhere (most clusters, most of the time): no key tuples to make and
        # look up, once a put on the committer (p39).
        if not self._closed or kind in MACHINERY_KINDS:
            return False
        for key in ((ledger, kind), (ledger, ANY_KIND)):
            since = self._closed.get(key)
            if since is not None and (before is None or since < before):
                return True
        return False

    def allows(self, ledger: str, kind: str, author: str, accepted: int | None = None) -> bool:
        """The grant rule: ``author`` may write ``kind`` on ``ledger`` at ``accepted``."""
        if ledger == ADMIN_LEDGER or not self.closed(ledger, kind, accepted):
            return True
        return self.holds(ledger, kind, author, accepted) or self.holds(ledger, ANY_KIND, author, accepted)

    def table(self) -> list[tuple[str, str, list[str]]]:
        """The grants in force now: (ledger, kind, [accounts]) sorted; closed kinds with no
        holder left are listed with no accounts."""
        rows: dict[tuple[str, str], list[str]] = {key: [] for key in self._closed}
        for (ledger, kind, account), (_, states) in self._events.items():
            if states[-1]:
                rows.setdefault((ledger, kind), []).append(account)
        return [(ledger, kind, sorted(accounts)) for (ledger, kind), accounts in sorted(rows.items())]


def check_admin_payload(record: Record) -> Fields:
    """Check an admin record's payload fields (above); raises BadPayloadError."""
    kind = record.content.kind
    keys = {
        "account": ("account", "op", "role", "enabled", "keys", "via"),
        "key": ("account", "op", "key", "keys", "via"),
        "grant": ("ledger", "kind", "account", "via"),
        "revoke": ("ledger", "kind", "account", "via"),
        "key_rotation": ("node", "curve", "sign", "until", "via"),
        "totp": ("account", "op", "via"),
    }[kind]
    payload = record.content.payload
    if kind == "account" and ENDS_GRANTS in payload:
        keys = (*keys, ENDS_GRANTS)
    if kind == "key_rotation":
        keys = (*keys, *(stated for stated in ROTATION_STATES if stated in payload))
    if kind == "totp" and SEALED_SHA256 in payload:
        keys = (*keys, SEALED_SHA256)
    fields = Fields(record, *keys)
    fields.text("via", allow_empty=True)
    if kind in ("grant", "revoke"):
        problem = grant_problem(payload["ledger"], payload["kind"], payload["account"])
        if problem is not None:
            fields.fail(problem)
    elif kind == "key_rotation":
        if not is_name(payload["node"]):
            fields.fail(f"node {payload['node']!r} is not a node name")
        problem = curve_key_problem(payload["curve"]) or rotation_sign_problem(payload["sign"])
        if problem is not None:
            fields.fail(problem)
        # The old keys' window ends after the record, or the rotation would cut them at once.
        if fields.integer("until", 0) <= record.accepted:
            fields.fail(
                f"until {ms_text(payload['until'])} is not after the record's accepted time {ms_text(record.accepted)}"
            )
        for stated, problem_of in (("cosigned", cosigned_problem), ("tallied", tallied_problem)):
            problem = problem_of(payload[stated]) if stated in payload else None
            if problem is not None:
                fields.fail(problem)
    else:
        fields.account("account")
        ops = {"account": ACCOUNT_OPS, "key": KEY_OPS, "totp": TOTP_OPS}[kind]
        if payload["op"] not in ops:
            fields.fail(f"op {payload['op']!r} is not one of {sorted(ops)}")
        if kind == "account" and not isinstance(payload["enabled"], bool):
            fields.fail("enabled must be a boolean")
        if kind == "account":
            fields.text("role", allow_empty=True)
        if kind == "account" and ENDS_GRANTS in payload:
            if payload["op"] != "remove":
                fields.fail(f"{ENDS_GRANTS} is a field of a 'remove' only, not of {payload['op']!r}")
            if payload[ENDS_GRANTS] is not True:
                fields.fail(f"{ENDS_GRANTS} must be true (a removal that ends no grant omits it)")
        if kind == "key":
            fields.text("key")
        if kind == "totp" and SEALED_SHA256 in payload and not _is_sha256(payload[SEALED_SHA256]):
            fields.fail(f"{SEALED_SHA256} must be 64 lower-case hex digits")
        if kind in ("account", "key") and (
            not isinstance(payload["keys"], list) or not all(isinstance(k, str) for k in payload["keys"])
        ):
            fields.fail("keys must be a list of strings")
    return fields


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def is_import(record: Record) -> bool:
    """Whether ``record`` is an ``account`` ``import`` (an account Redis held when the admin ledger was made)."""
    payload = record.content.payload
    return record.content.kind == "account" and isinstance(payload, dict) and payload.get("op") == "import"


def removal_ends_grants(payload: Mapping[str, Any]) -> bool:
    """Whether an ``account`` payload is a removal that ends the account's grants (16.2)."""
    return payload.get("op") == "remove" and payload.get(ENDS_GRANTS) is True


@dataclass(frozen=True, slots=True)
class AdminTally:
    accounts: dict[str, dict[str, Any]]  # name -> {"role", "enabled", "keys"}: the last account/key record
    grants: list[tuple[str, str, list[str]]]
    rotations: int
    changes: int  # records after genesis


class AdminState(Domain):
    """The admin ledger's rules: payloads as above, grants that exist before they are revoked."""

    type_name = ADMIN_TYPE
    kinds = frozenset(ADMIN_KINDS)

    def __init__(self, genesis: Record, rules: LedgerRules) -> None:
        reader = GenesisReader(genesis, rules, type(self))
        if genesis.content.ledger != ADMIN_LEDGER:
            reader.fail(f"only the ledger {ADMIN_LEDGER!r} is an admin ledger")
        reader.keys((), ("grants",))
        self.grants = Grants()
        self.accounts: dict[str, dict[str, Any]] = {}
        self.rotations: dict[str, list[Mapping[str, Any]]] = {}
        # The accounts a ``totp`` record enrolled since their last ``account`` record that added
        # or removed them: what a node asks before taking Redis's word that one has no factor;
        # each with the sealed secret's SHA-256 its latest ``totp`` record names (None: a record
        # of before the field), the only one a node takes from Redis.
        self.second_factors: dict[str, str | None] = {}
        # Every ``sealed_sha256`` any ``totp`` record named: a host's enrollment holding one of
        # them is an old factor put back in Redis, which the home does not record (16.5).
        self.seals: set[str] = set()
        # The accepted time of each account's latest ``totp`` record: a host's enrollment marked
        # before it is one that record replaced or saw replaced, put back in Redis (review r26).
        self.factor_times: dict[str, int] = {}
        self.changes = 0
        self.creator = genesis.content.author
        self.importing = True  # only imports since the genesis (16.7)
        initial = reader.rules.get("grants", [])
        if not isinstance(initial, list):
            reader.fail("grants must be a list of [ledger, kind, account]")
        for row in initial:
            if not isinstance(row, list) or len(row) != 3:
                reader.fail(f"grant {row!r} is not [ledger, kind, account]")
            problem = grant_problem(*row)
            if problem is not None:
                reader.fail(problem)
            if not self.grants.holds(*row):
                # In force for every record accepted after the genesis.
                self.grants.add(row[0], row[1], row[2], True, genesis.accepted)
        self.grants.last_accepted = max(self.grants.last_accepted, genesis.accepted)
        self.grants.opened = genesis.accepted

    def plan(self, record: Record) -> Plan:
        fields = check_admin_payload(record)
        payload = record.content.payload
        kind = record.content.kind
        if kind in ("grant", "revoke"):
            ledger, granted_kind, account = payload["ledger"], payload["kind"], payload["account"]
            held = self.grants.holds(ledger, granted_kind, account)
            if kind == "grant" and held:
                refuse(AlreadyGrantedError, record, f"{account!r} already holds {granted_kind!r} on {ledger!r}")
            if kind == "revoke" and not held:
                refuse(NoSuchGrantError, record, f"{account!r} holds no {granted_kind!r} grant on {ledger!r}")
        if kind == "key_rotation":
            self._check_unbound(record, payload)

        def commit() -> None:
            self.changes += 1
            self.importing = self.importing and is_import(record)
            if kind in ("grant", "revoke"):
                self.grants.add(
                    payload["ledger"], payload["kind"], payload["account"], kind == "grant", record.accepted
                )
            else:
                self.grants.last_accepted = max(self.grants.last_accepted, record.accepted)
            if kind in ("account", "key"):
                name = fields.account("account")
                state = self.accounts.setdefault(name, {"role": "", "enabled": False, "keys": []})
                if kind == "account":
                    state["role"], state["enabled"] = payload["role"], payload["enabled"]
                    admin = payload["op"] != "remove" and payload["role"] == "admin" and payload["enabled"] is True
                    self.grants.set_admin(name, admin, record.accepted)
                state["keys"] = sorted(payload["keys"])
                if kind == "account" and payload["op"] in ("add", "import", "remove"):
                    self.second_factors.pop(name, None)  # a removal forgets the factor (16.5)
                if kind == "account" and payload["op"] == "remove":
                    del self.accounts[name]
                    # A name can be added again for another person: the removed account's
                    # grants must not pass to them, and the record itself says they end.
                    if removal_ends_grants(payload):
                        self.grants.end_all(name, record.accepted)
            elif kind == "key_rotation":
                self.rotations.setdefault(payload["node"], []).append(dict(payload, accepted=record.accepted))
            elif kind == "totp":
                self.second_factors[fields.account("account")] = payload.get(SEALED_SHA256)
                self.factor_times[fields.account("account")] = record.accepted
                if SEALED_SHA256 in payload:
                    self.seals.add(payload[SEALED_SHA256])

        return Plan(commit)

    def author_problem(self, record: Record) -> str | None:
        """Why ``record``'s author may not have written it by the admin records before it (16.7),
        or None: an enabled ``admin`` account by then; else one of the records the node writes
        on its own: an ``import`` in the run right after the genesis, by the genesis' author,
        or a host's ``totp`` ``enroll`` (``via`` empty), by the account it enrolled."""
        content = record.content
        author, payload = content.author, content.payload
        if is_import(record):
            if not self.importing:
                return "an import after the admin ledger's first records: imports follow the genesis only"
            if author != self.creator:
                return f"an import by {author!r}, not by the admin ledger's creator {self.creator!r}"
            return None
        state = self.accounts.get(author)
        if state is None or state["role"] != "admin" or state["enabled"] is not True:
            return f"{author!r} is not an enabled admin by the admin records before this one"
        if content.kind == "totp" and payload.get("via") == "" and payload.get("account") != author:
            return f"a host's enrollment of {payload.get('account')!r} authored by {author!r}"
        return None

    def _check_unbound(self, record: Record, payload: Mapping[str, Any]) -> None:
        """A node's new keys are bound to no other node by a rotation before (16.1): else the
        holder of one key signs, and counts as a witness, for two nodes."""
        node = payload["node"]
        for other, rotations in self.rotations.items():
            if other == node:
                continue
            for rotation in rotations:
                if payload["curve"] == rotation["curve"]:
                    refuse(NodeKeyInUseError, record, f"curve {payload['curve'][:8]}... is {other}'s key")
                if payload["sign"] and payload["sign"] == rotation["sign"]:
                    refuse(NodeKeyInUseError, record, f"sign {payload['sign'][:16]}... is {other}'s key")

    def tally(self) -> AdminTally:
        return AdminTally(
            {name: dict(state) for name, state in sorted(self.accounts.items())},
            self.grants.table(),
            sum(len(r) for r in self.rotations.values()),
            self.changes,
        )


def admin_genesis_rules(grants: Iterable[tuple[str, str, str]] = ()) -> LedgerRules:
    """The rules of a new admin ledger (difficulty 0: the node itself writes every record)."""
    rules: dict[str, Any] = {"type": ADMIN_TYPE}
    rows = [list(row) for row in grants]
    if rows:
        rules["grants"] = rows
    return LedgerRules(kinds=ADMIN_KINDS, difficulty=0, rules=rules)
