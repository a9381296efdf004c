"""The accounts the admin ledger gives, checked, and what a cache of them may be believed of.

Redis holds the accounts as hashes (broker/accounts.py), a cache of the admin ledger
(docs/PROTOCOL.md 16.4). A node does not believe that cache because Redis holds it: it
checks it against the admin ledger's records (the Redis copy ``{accounts}:admin:records``),
verified as a chain (vledger.node.verify.ChainVerifier: genesis, checksums, links, the admin
rules) whose first ``size`` records are the tree of a checkpoint that the admin ledger's key
signed (node.note.verify_checkpoint, the root recomputed from the records). Of the cache it
then enforces only what both the signed records and the whole verified chain give:

* a key, a role or an enabled account only once a signed checkpoint covers the record that
  gave it (the home signs after each batch, and waits for that signature before it changes
  the cache: ingest/accounts.py), so a record appended behind a home's back is never enough;
* a revoke, a disable or a removal at once, from the chain's unsigned tail too: it only narrows;
* the accounts the genesis's import records carry over (what Redis held, and every node
  enforced, before the ledger existed) under any checkpoint that verifies, even one over the
  genesis alone.

While no checkpoint in Redis verifies (a home signs the admin ledger it just created at its
next pass; Redis lost the note; one not signed by the admin key, which any ingest node's Redis
user could put there) the verified chain alone is taken, whose records only the home's Redis
user writes: the Redis hashes are still never believed beyond the records.

Anything the cache gives that no verified record ever gave (a key never bound to that account,
a role it never had, an account that never was) is **forged**: it is not enforced, and the
node raises ``accounts_forged`` (PROTOCOL 10.5) naming it. What the signed records do not give
yet, but the tail does, is only pending. Before the admin ledger exists (a new cluster, whose
first admin ``vledger admin bootstrap`` wrote into Redis) the cache is all there is, and taken.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..config.settings import PROTOCOL_LIMITS
from .errors import ProofError, VledgerError
from .node_keys import hash_at_of
from .note import VerifierKey, verify_checkpoint
from .record import Record, decode_record
from .rules.admin import ADMIN_LEDGER
from .tree import leaf_hash, root_at
from .verify import ChainVerifier


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account as the admin ledger states it after a record (PROTOCOL 16.1)."""

    role: str
    enabled: bool
    keys: frozenset[str]


@dataclass(slots=True)
class AdminAccounts:
    """The accounts after some admin records, and every (account, key) and (account, role)
    any of those records ever gave: what tells a forged cache entry from one not yet current."""

    accounts: dict[str, AccountState] = field(default_factory=dict)
    ever_keys: set[tuple[str, str]] = field(default_factory=set)
    ever_roles: set[tuple[str, str]] = field(default_factory=set)
    ever_enabled: set[str] = field(default_factory=set)

    def take(self, record: Record) -> None:
        """Apply one verified admin record (only ``account`` and ``key`` records change accounts)."""
        kind, payload = record.content.kind, record.content.payload
        if kind not in ("account", "key") or not isinstance(payload, Mapping):
            return
        name = payload["account"]
        held = self.accounts.get(name)
        keys = frozenset(payload["keys"])
        if kind == "account":
            state = AccountState(payload["role"], bool(payload["enabled"]), keys)
        elif held is None:  # a key record of an account no record made: the rules refuse it
            return
        else:
            state = AccountState(held.role, held.enabled, keys)
        if not state.role:
            self.accounts.pop(name, None)  # removed
            return
        self.accounts[name] = state
        self.ever_keys.update((name, key) for key in keys)
        self.ever_roles.add((name, state.role))
        if state.enabled:
            self.ever_enabled.add(name)


def accounts_of(records: Iterable[Record]) -> AdminAccounts:
    accounts = AdminAccounts()
    for record in records:
        accounts.take(record)
    return accounts


@dataclass(frozen=True, slots=True)
class VerifiedAdmin:
    """A copy of the admin ledger as far as it verifies: ``records`` chain-verified from
    genesis, the first ``signed`` of them under a checkpoint the admin key signed;
    ``problem`` says why the copy (or its checkpoint) was not taken further, or is None."""

    records: tuple[Record, ...]
    signed: int
    problem: str | None

    @property
    def exists(self) -> bool:
        return bool(self.records)


def verify_admin_copy(raw: Sequence[bytes], notes: Iterable[bytes | None], key: VerifierKey | None) -> VerifiedAdmin:
    """Check ``raw`` (the admin ledger's record bytes from height 0) as a chain, and how much of
    it the largest of ``notes`` that verifies with ``key`` and whose tree the copy is covers:
    the home's latest checkpoint from Redis, and the last one taken (the home may have put a
    newer note in Redis before the records it covers)."""
    chain = ChainVerifier(ADMIN_LEDGER, PROTOCOL_LIMITS)
    records: list[Record] = []
    problems = []
    for data in raw:
        try:
            record = decode_record(data, PROTOCOL_LIMITS)
            chain.feed(record)
        except VledgerError as e:
            problems.append(f"the admin ledger's copy fails at height {len(records)}: [{e.code}] {e.message}")
            break
        records.append(record)
    signed = 0
    candidates = [note for note in notes if note is not None]
    if records and key is None:
        problems.append("no admin checkpoint key")
    elif records and not candidates:
        problems.append("no checkpoint of the admin ledger to check")
    elif records:
        refusals = []
        for note in candidates:
            try:
                size = _signed_size(raw, len(records), note, key)
            except VledgerError as e:
                refusals.append(f"[{e.code}] {e.message}")
                continue
            signed = max(signed, size)
        if signed == 0 and refusals:
            problems.append(f"the admin ledger's checkpoint is not taken: {refusals[0]}")
    return VerifiedAdmin(tuple(records), signed, "; ".join(problems) or None)


def _signed_size(raw: Sequence[bytes], verified: int, note: bytes, key: VerifierKey | None) -> int:
    """The size of checkpoint ``note`` once it verifies and the first ``size`` of ``raw`` (of
    which ``verified`` verified as a chain) are its tree; raises why not."""
    assert key is not None
    checkpoint = verify_checkpoint(note, key).checkpoint
    if checkpoint.size > verified:
        raise ProofError(f"it covers {checkpoint.size} records, the copy verifies {verified}")
    if root_at(checkpoint.size, hash_at_of([leaf_hash(r) for r in raw[: checkpoint.size]])) != checkpoint.root:
        raise ProofError(f"the copy's first {checkpoint.size} records are not its tree")
    return checkpoint.size


def _carried_over(records: Sequence[Record]) -> int:
    """How many records the ledger begins with that carry over what Redis held before it: its
    genesis and the ``account`` records of op ``import`` right after it (ingest/admin_ledger.py)."""
    count = 0
    for record in records:
        kind, payload = record.content.kind, record.content.payload
        if count and not (kind == "account" and isinstance(payload, Mapping) and payload.get("op") == "import"):
            break
        count += 1
    return count


CachedAccount = tuple[str, bool, frozenset[str]]  # role, enabled, keys: as the cache states it


@dataclass(frozen=True, slots=True)
class Judgement:
    """What of the cache is enforced (name -> role, enabled, keys), and what in it is forged
    (one sentence each, sorted; empty when the cache holds nothing the records never gave)."""

    enforced: dict[str, CachedAccount]
    forged: tuple[str, ...]
    pending: int  # cache entries the unsigned tail gives but no checkpoint covers yet


def judge(cache: Mapping[str, CachedAccount], admin: VerifiedAdmin) -> Judgement:
    """The cache's accounts narrowed to what ``admin`` gives (see the module's docstring)."""
    if not admin.exists:
        return Judgement(dict(cache), (), 0)
    full = accounts_of(admin.records)
    # No checkpoint verifies (none in Redis yet: a home signs a ledger it just made at its next
    # pass; or one that is not the admin key's): the verified chain alone, whose records only the
    # home's Redis user writes (broker/redis_acl.py), rather than refusing every account.
    # The genesis and its import records, which carry over the accounts Redis held (and every
    # node enforced) before the ledger existed, count as signed: the home appends them one by
    # one, so its outbox may sign the genesis alone, and a new admin ledger would then take the
    # bootstrapped admin's key off every node until the next checkpoint.
    signed = accounts_of(admin.records[: max(admin.signed, _carried_over(admin.records))]) if admin.signed else full
    return judge_by(cache, full, signed)


def judge_by(cache: Mapping[str, CachedAccount], full: AdminAccounts, signed: AdminAccounts) -> Judgement:
    """The cache's accounts narrowed to what both ``full`` (the whole verified chain) and
    ``signed`` (its records a checkpoint covers) give; the home of ``admin`` judges its commands
    with its own store's records as both (ingest/admin_ledger.py)."""
    enforced: dict[str, CachedAccount] = {}
    forged: list[str] = []
    pending = 0
    for name, (role, enabled, keys) in sorted(cache.items()):
        now, was = full.accounts.get(name), signed.accounts.get(name)
        if (name, role) not in full.ever_roles:
            forged.append(f"account {name}: role {role or '(none)'}, which no admin record gave it")
            continue
        if enabled and name not in full.ever_enabled:
            forged.append(f"account {name}: enabled, which no admin record made it")
        for key in sorted(keys):
            if (name, key) not in full.ever_keys:
                forged.append(f"account {name}: key {key}, which no admin record bound to it")
        if now is None or was is None or not role == now.role == was.role:
            pending += now is not None and now.role == role
            continue
        kept = keys & now.keys & was.keys
        pending += len(keys & now.keys) - len(kept) + (enabled and now.enabled and not was.enabled)
        enforced[name] = (role, enabled and now.enabled and was.enabled, frozenset(kept))
    return Judgement(enforced, tuple(forged), pending)
