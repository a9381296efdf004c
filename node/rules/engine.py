"""The rules engine: one domain state per ledger, fed that ledger's records in height order.

A ledger's genesis ``rules`` map selects its domain with ``"type"``: ``"election"``
(votes.py), ``"charity"`` (charity.py), ``"resources"`` (resources.py), ``"files"``
(files.py), or ``"plain"`` / no ``"type"``, a ledger without domain rules (its other rule
keys, if any, are not read). Any other type is refused.

Ingest checks a placed record with :meth:`RulesEngine.check_and_apply` before it stores it:
a rule error refuses the record and leaves the state as it was. Observers call
:meth:`RulesEngine.replay` on the chain as it is: a record that breaks a rule is skipped
(its height still passes, it is not counted) and reported with its height.

**Genesis.** The genesis record is applied like any other: it builds the domain state and
validates the domain rules. Invalid domain rules raise
:class:`~vledger.node.errors.BadDomainRulesError` (code ``bad_rules``), which is both a
``BadGenesisError`` (ingest refuses to create the ledger) and a ``RuleError`` (replay
reports it at height 0, then every later record of that ledger with it, since nothing on
the ledger can be judged).

**Sync.** The engine holds, per ledger, the height it expects next and the rules read
from the genesis. A record at another height, a first record that is not a genesis, or
rules that differ from the genesis' raise :class:`~vledger.node.errors.RulesOutOfSyncError`:
the caller's state is stale (after :meth:`RulesEngine.forget`, replay from the genesis).

Memory: per ledger, the domain state (one entry per voter, fund, account or file) and the
rules; never anything per record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ...config.settings import PROTOCOL_LIMITS, Limits
from .. import identifiers
from ..epoch import EPOCH_KIND, EpochHistory
from ..errors import (
    BadDomainRulesError,
    BadEpochError,
    BadGenesisError,
    NotAdminAuthorError,
    NotGrantedError,
    RuleError,
    RulesOutOfSyncError,
)
from ..key_rotation import ROTATION_KIND, hands_over, refuse_standby_rotation
from ..ledger import LedgerRules
from ..record import Record
from . import Domain, Plan, Ref, refuse, where
from .admin import ADMIN_LEDGER, MACHINERY_KINDS, AdminState, Grants
from .charity import CharityState
from .files import FilesState
from .resources import ResourcesState
from .votes import ElectionState

PLAIN = "plain"
# Kinds the protocol judges on any ledger (a handover, a checkpoint key rotation), whatever its domain.
_PROTOCOL_KINDS = MACHINERY_KINDS


def _took_plain_next(held: LedgerState, record: Record) -> bool:
    """Take ``record`` as a plain ledger's next record, if it is one (what _plan comes to for
    it, without a Plan and its closure per record); whether it was taken."""
    if (
        type(held.domain) is PlainState
        and record.height == held.head.height + 1
        and record.content.kind not in _PROTOCOL_KINDS
    ):
        held.head = Ref(record.height, record.link)
        return True
    return False


def _took_plain_run(ledgers: dict[str, LedgerState], records: list[Record]) -> bool:
    """Take ``records`` whole as a plain ledger's next records, if they are (each what
    :func:`_took_plain_next` takes, one after another): whether they were taken. A replica
    replays every stored run (a catch-up page's), and a Ref a record cost it ~0.4 us more
    than this one loop; the head moves once, to the last record. Anything else (another
    ledger, a gap, a handover or a rotation among them) changes nothing: the caller takes
    them one by one."""
    if not records:
        return True
    first = records[0]
    ledger = first.content.ledger
    held = ledgers.get(ledger)
    if held is None or type(held.domain) is not PlainState:
        return False
    height = held.head.height
    for record in records:
        content = record.content
        height += 1
        if record.height != height or content.ledger != ledger or content.kind in _PROTOCOL_KINDS:
            return False
    held.head = Ref(height, records[-1].link)
    return True


class PlainState(Domain):
    """A ledger without domain rules: every record that the protocol accepts is fine."""

    type_name = PLAIN

    def __init__(self, genesis: Record, rules: LedgerRules) -> None:
        pass

    def plan(self, record: Record) -> Plan:
        return Plan()


class UnusableState(Domain):
    """A ledger whose genesis rules are invalid (seen in a replay): no record can be judged."""

    type_name = "unusable"

    def __init__(self, error: RuleError) -> None:
        self.error = error

    def plan(self, record: Record) -> Plan:
        refuse(BadDomainRulesError, record, f"the ledger's genesis rules are invalid ({self.error.reason})")


DOMAINS: dict[str, type[Domain]] = {
    cls.type_name: cls for cls in (ElectionState, CharityState, ResourcesState, FilesState, PlainState, AdminState)
}


def domain_type(rules: LedgerRules) -> type[Domain] | None:
    """The domain a ledger's genesis rules name (no ``"type"``: plain), or None if it names none."""
    name = rules.rules.get("type", PLAIN)
    return DOMAINS.get(name) if isinstance(name, str) else None


def grant_closes(rules: LedgerRules, kind: str) -> bool:
    """Whether a grant closes ``kind`` on a ledger of these genesis rules (PROTOCOL 16.2): every
    kind but those its domain binds to their authors already (7.3's ``issue`` and ``transfer``)."""
    domain = domain_type(rules)
    return domain is None or kind not in domain.bound_kinds


def domain_defaults(rules: Mapping[str, Any]) -> dict[str, Any]:
    """``rules`` with the defaults of the domain they name written out (:meth:`Domain.new_rules`);
    a type no domain has is left for the genesis check to refuse."""
    named = rules.get("type", PLAIN)
    domain = DOMAINS.get(named) if isinstance(named, str) else None
    return dict(rules) if domain is None else domain.new_rules(rules)


def new_ledger_rules(rules: Mapping[str, Any]) -> dict[str, Any]:
    """``rules`` for a new ledger: the identifier rule (7.5) and its domain's defaults written out."""
    return domain_defaults(identifiers.with_rule(rules))


def check_new_rules(ledger: str, rules: Mapping[str, Any]) -> None:
    """A home's check of the rules of a genesis it is asked to start a ledger with: each default
    of their domain written out (a resources ledger's ``max_holders``, 7.3). Never a replay rule:
    a ledger created before a default existed is read without it, as acknowledged then.

    Raises BadGenesisError [bad_genesis] naming each field left out and its default.
    """
    defaults = domain_defaults(rules)
    unwritten = sorted(defaults.keys() - rules.keys())
    if unwritten:
        fields = ", ".join(f"rules.{key} ({defaults[key]!r} by default)" for key in unwritten)
        raise BadGenesisError(
            f"a new {rules['type']} ledger's genesis sets {fields}, as `vledger ledger create` and the Python "
            "client write it: only ledgers created before it existed go without",
            ledger=ledger,
            height=0,
        )


@dataclass(slots=True)
class LedgerState:
    """What the engine holds for one ledger: its rules, its domain state, how far it has read."""

    rules: LedgerRules
    domain: Domain
    head: Ref  # the last record applied (or skipped by a replay)
    epochs: EpochHistory | None = None  # its homes' terms (10.9); None: keys the genesis cannot pin

    @property
    def next_height(self) -> int:
        return self.head.height + 1


class Violation(NamedTuple):
    """A record on a chain that breaks its ledger's rules, as a replay reports it."""

    height: int
    error: RuleError

    @property
    def ledger(self) -> str | None:
        return self.error.ledger


def check_grant(grants: Grants | None, record: Record, rules: LedgerRules | None = None) -> None:
    """Raise NotGrantedError when the grant rule (node/rules/admin.py) refuses ``record`` by
    ``grants`` (None: no grant table, nothing refused), of a kind a grant closes on a ledger of
    ``rules`` (:func:`grant_closes`; None: every kind a grant may close); NotAdminAuthorError
    for a handover or key rotation (MACHINERY_KINDS) whose author was no enabled admin then."""
    if record.height == 0 or grants is None:
        return
    content = record.content
    # A handover or a key rotation only an admin's command places (16.7); on the admin ledger
    # every record's author is judged already (_check_admin_author).
    if (
        content.kind in MACHINERY_KINDS
        and content.ledger != ADMIN_LEDGER
        and not grants.places_machinery(content.author, record.accepted)
    ):
        refuse(
            NotAdminAuthorError,
            record,
            f"a {content.kind!r} record by {content.author!r}, no enabled admin by the admin records before it",
        )
    if not grants.allows(content.ledger, content.kind, content.author, record.accepted) and (
        rules is None or grant_closes(rules, content.kind)
    ):
        refuse(
            NotGrantedError,
            record,
            f"{content.author!r} holds no grant to write {content.kind!r} records on {content.ledger!r}",
        )


class RulesEngine:
    """Checks records against their ledger's domain rules; holds one state per ledger.

    Pure: no I/O, no clock (times are the records' ``accepted``). Not thread-safe: one
    engine per writer, or a lock around it.
    """

    def __init__(self, *, grants: Callable[[], Grants | None] | None = None, audit_grants: bool = False) -> None:
        """``grants``: where the grant table comes from when this engine does not hold the
        admin ledger itself (an ingest node that is not its home reads it from Redis).
        ``audit_grants``: a replay judges grants too (observers); an ingest node's replay of
        its own store does not, since the records it holds were judged when placed."""
        self._ledgers: dict[str, LedgerState] = {}
        self._grant_source = grants
        self.audit_grants = audit_grants

    def grants(self) -> Grants | None:
        """The grant table this engine judges by: its own admin ledger's, else the source's."""
        held = self._ledgers.get(ADMIN_LEDGER)
        if held is not None and isinstance(held.domain, AdminState):
            return held.domain.grants
        return self._grant_source() if self._grant_source is not None else None

    def key_rotations(self) -> list[dict[str, Any]]:
        """The ``key_rotation`` payloads of this engine's admin ledger, each with its record's
        ``accepted``, in ledger order per node (none without an admin ledger)."""
        held = self._ledgers.get(ADMIN_LEDGER)
        if held is None or not isinstance(held.domain, AdminState):
            return []
        return [dict(r) for rotations in held.domain.rotations.values() for r in rotations]

    def admin_accounts(self) -> dict[str, dict[str, Any]] | None:
        """The accounts this engine's admin ledger states (name -> its ``role``, ``enabled`` and
        ``keys`` after the last ``account`` or ``key`` record of it, PROTOCOL 16.1), or None
        without an admin ledger."""
        held = self._ledgers.get(ADMIN_LEDGER)
        if held is None or not isinstance(held.domain, AdminState):
            return None
        return {name: dict(state, keys=list(state["keys"])) for name, state in held.domain.accounts.items()}

    def admin_second_factors(self) -> dict[str, str | None] | None:
        """The accounts this engine's admin ledger records as enrolled in a second factor (a
        ``totp`` record since the account was last added), each with the ``sealed_sha256`` of
        its latest ``totp`` record (None: a record without it), or None without an admin ledger."""
        held = self._ledgers.get(ADMIN_LEDGER)
        if held is None or not isinstance(held.domain, AdminState):
            return None
        return dict(held.domain.second_factors)

    def admin_factor_times(self) -> dict[str, int]:
        """The accepted time of each account's latest ``totp`` record of this engine's admin
        ledger (none without an admin ledger)."""
        held = self._ledgers.get(ADMIN_LEDGER)
        if held is None or not isinstance(held.domain, AdminState):
            return {}
        return dict(held.domain.factor_times)

    def admin_recorded_seals(self) -> frozenset[str]:
        """Every ``sealed_sha256`` a ``totp`` record of this engine's admin ledger named (none
        without an admin ledger)."""
        held = self._ledgers.get(ADMIN_LEDGER)
        if held is None or not isinstance(held.domain, AdminState):
            return frozenset()
        return frozenset(held.domain.seals)

    def check(self, record: Record, rules: LedgerRules) -> dict[str, Any]:
        """Raise the first rule ``record`` breaks as the ledger's next record; change nothing.

        Returns the values its receipt would carry (``{"electronic_id": ...}`` for a
        registration, usually ``{}``). The grant rule comes first: NotGrantedError; on the
        admin ledger, its author's: NotAdminAuthorError (16.7, which observers judge in their
        replay: the home refuses to write what they would flag).
        """
        self._check_grant(record, rules)
        self._check_admin_author(record)
        return dict(self._plan(record, rules).values)

    def check_and_apply(self, record: Record, rules: LedgerRules) -> dict[str, Any]:
        """:meth:`check`, then apply ``record``: the next call expects the height after it."""
        self._check_grant(record, rules)
        self._check_admin_author(record)
        held = self._ledgers.get(record.content.ledger)
        # Most puts are of plain ledgers, and the committer runs this once a put. A rules object
        # other than the held one takes the full way.
        if held is not None and rules is held.rules and _took_plain_next(held, record):
            return {}
        plan = self._plan(record, rules)
        plan.commit()
        return dict(plan.values)

    def _check_grant(self, record: Record, rules: LedgerRules) -> None:
        check_grant(self.grants(), record, rules)

    def _check_admin_author(self, record: Record) -> None:
        """Raise NotAdminAuthorError when an admin-ledger record's author was no enabled admin by
        the records before it (PROTOCOL 16.7): what a node that took accounts from elsewhere
        than the admin ledger would have let happen."""
        held = self._ledgers.get(record.content.ledger) if record.height > 0 else None
        # A plain ledger's record (most puts) by its type first: isinstance against the Domain
        # ABC cost the committer 0.1 us a put more (p39).
        if held is None or type(held.domain) is PlainState or not isinstance(held.domain, AdminState):
            return
        problem = held.domain.author_problem(record)
        if problem is not None:
            refuse(NotAdminAuthorError, record, problem)

    def values_of(self, record: Record, rules: LedgerRules) -> dict[str, Any]:
        """The receipt values of a record already on the chain (a retried request), unchecked.

        The same values :meth:`check_and_apply` returned for it, derived from the record
        and the ledger's rules alone, whatever state the engine holds.
        """
        domain_class = domain_type(rules)
        if domain_class is None or record.height == 0:
            return {}
        return domain_class.receipt_values(record)

    def replay(self, records: Iterable[Record], limits: Limits = PROTOCOL_LIMITS) -> list[Violation]:
        """Apply records of one or more ledgers, each ledger's in height order; report rule breakers.

        A ledger's first record must be its genesis unless the engine already holds its
        state, so a replay can also continue one. The rules come from each genesis record
        (read with ``limits``, the protocol's by default). A record that breaks a rule is
        skipped; each is reported, in order, as a :class:`Violation`. The chain is assumed
        verified (node/verify.py): an invalid genesis raises its BadGenesisError, a height
        out of order RulesOutOfSyncError.
        """
        violations: list[Violation] = []
        audit = self.audit_grants
        if not audit and isinstance(records, list) and _took_plain_run(self._ledgers, records):
            return violations
        for record in records:
            held = self._ledgers.get(record.content.ledger)
            # A replica replays each stored run: the full way was a tenth of its catch-up.
            if not audit and held is not None and _took_plain_next(held, record):
                continue
            if held is None and record.height == 0:
                rules = LedgerRules.from_genesis(record.content, limits)
            else:
                rules = self._held(record).rules
            try:
                if self.audit_grants:
                    self._check_grant(record, rules)
                    self._check_admin_author(record)
                plan = self._plan(record, rules)
            except RuleError as e:
                violations.append(Violation(record.height, e))
                self._skip(record, rules, e)
            else:
                plan.commit()
        return violations

    def forget(self, ledger: str) -> None:
        """Drop a ledger's state; it is rebuilt by replaying the ledger from its genesis."""
        self._ledgers.pop(ledger, None)

    def state(self, ledger: str) -> LedgerState | None:
        """The state held for ``ledger`` (its domain's ``tally()``, lookups), or None."""
        return self._ledgers.get(ledger)

    def _plan(self, record: Record, rules: LedgerRules) -> Plan:
        if record.height == 0 and record.content.ledger not in self._ledgers:
            return self._plan_genesis(record, rules)
        held = self._held(record)
        if rules is not held.rules and rules != held.rules:
            raise RulesOutOfSyncError("the rules given are not those of the ledger's genesis", **where(record))
        # A handover record (10.9) is the protocol's, whatever the domain: the next epoch or refused.
        epoch = None
        if record.content.kind == EPOCH_KIND and record.height > 0:
            if held.epochs is None:
                refuse(BadEpochError, record, "a handover needs a genesis that pins checkpoint_key and standby_key")
            epoch = held.epochs.next_epoch(record)
        # A checkpoint key rotation (PROTOCOL 13.8) is the log's, not the domain's: the key
        # chain checks it, and it changes no tally. On a ledger that hands over it is no
        # rotation at all (10.9), which needs no key chain to see: a rule breaker.
        if record.content.kind == ROTATION_KIND and hands_over(held.rules):
            raise refuse_standby_rotation(record)
        plan = Plan(lambda: None) if record.content.kind == ROTATION_KIND else held.domain.plan(record)
        head = Ref.of(record)
        epochs = held.epochs

        def commit() -> None:
            plan.commit()
            held.head = head
            if epoch is not None and epochs is not None:
                epochs.epochs.append(epoch)

        return Plan(commit, plan.values)

    def _plan_genesis(self, record: Record, rules: LedgerRules) -> Plan:
        if rules.genesis_payload() != record.content.payload:
            raise RulesOutOfSyncError("the rules given are not those the genesis record states", **where(record))
        domain_class = domain_type(rules)
        if domain_class is None:
            kind = rules.rules.get("type")
            refuse(BadDomainRulesError, record, f"rules type {kind!r} is not one of {sorted(DOMAINS)}")
        domain = domain_class(record, rules)
        return Plan(lambda: self._install(record, rules, domain))

    def _install(self, record: Record, rules: LedgerRules, domain: Domain) -> None:
        try:
            epochs: EpochHistory | None = EpochHistory.from_genesis(record, rules)
        except BadGenesisError:
            epochs = None  # keys the home refuses at ledger.create; no handover can be judged
        self._ledgers[record.content.ledger] = LedgerState(rules, domain, Ref.of(record), epochs)

    def epochs(self, ledger: str) -> EpochHistory | None:
        """The epochs of ``ledger`` as far as the engine read it, or None."""
        held = self._ledgers.get(ledger)
        return None if held is None else held.epochs

    def _held(self, record: Record) -> LedgerState:
        held = self._ledgers.get(record.content.ledger)
        expected = 0 if held is None else held.next_height
        if held is None or record.height != expected:
            raise RulesOutOfSyncError(
                f"the rules engine expects height {expected} of this ledger, not {record.height}", **where(record)
            )
        return held

    def _skip(self, record: Record, rules: LedgerRules, error: RuleError) -> None:
        """Pass over a rule breaker in a replay: its height is taken, nothing else changes."""
        held = self._ledgers.get(record.content.ledger)
        if held is None:  # a genesis refused (for its domain rules): nothing after it can be judged
            self._install(record, rules, UnusableState(error))
        else:
            held.head = Ref.of(record)
