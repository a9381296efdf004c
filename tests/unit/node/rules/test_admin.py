"""Grants (node/rules/admin.py): the admin ledger's rules, refusals for every kind, and the
accepted-time order that lets a replay judge grants exactly as the committer did."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node.epoch import EPOCH_KIND
from vledger.node.errors import (
    AlreadyGrantedError,
    BadPayloadError,
    NodeKeyInUseError,
    NoSuchGrantError,
    NotAdminAuthorError,
    NotGrantedError,
    NotIssuerError,
    NotOwnerError,
)
from vledger.node.key_rotation import ROTATION_KIND
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER, ENDS_GRANTS, AdminState, Grants, admin_genesis_rules
from vledger.node.rules.engine import RulesEngine
from vledger.node.sealed import new_seal_key, seal
from vledger.node.store import ChainStore

LIMITS = Limits()
DAY_MS = 86_400_000
SHA = "ab" * 32


class Writer:
    """Entries for a store, each with a fresh request id."""

    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self.serial = 0

    def entry(self, ledger: str, kind: str, payload: dict[str, Any], author: str) -> Entry:
        self.serial += 1
        content = Content(ledger, kind, payload, author, f"r{self.serial}", 0)
        return Entry.prepare(content, 0, LIMITS)

    def put(self, ledger: str, kind: str, payload: dict[str, Any], author: str) -> Any:
        return self.store.append(self.entry(ledger, kind, payload, author))

    def create(self, ledger: str, rules: LedgerRules, author: str = "root") -> None:
        self.serial += 1
        self.store.create_ledger(Entry.prepare(rules.genesis_content(ledger, author, f"g{self.serial}", 0), 0, LIMITS))
        if ledger == ADMIN_LEDGER:  # its creator, an admin, imported as the home does (16.3)
            payload = {"account": author, "op": "import", "role": "admin", "enabled": True, "keys": [], "via": ""}
            self.put(ADMIN_LEDGER, "account", payload, author)

    def grant(self, ledger: str, kind: str, account: str, *, revoke: bool = False) -> Any:
        payload = {"ledger": ledger, "kind": kind, "account": account, "via": ""}
        return self.put(ADMIN_LEDGER, "revoke" if revoke else "grant", payload, "root")


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    store = ChainStore(tmp_path / "store", origin="ingest-1", domain=RulesEngine())
    writer = Writer(store)
    writer.create(ADMIN_LEDGER, admin_genesis_rules())
    yield writer
    store.close()


def _smuggled(
    writer: Writer, tmp_path: Path, ledger: str, kind: str, payload: dict[str, Any], author: str
) -> list[Any]:
    """Close ``writer``'s store, append a record to ``ledger`` past the rules (a store without
    an engine, as a home that does not judge it would), and return the admin ledger's records
    and ``ledger``'s, in that order, as an observer's audit reads them."""
    writer.store.close()
    raw = ChainStore(tmp_path / "store", origin="ingest-1")
    raw.append(Writer(raw).entry(ledger, kind, payload, author))
    records = [*raw.range(ADMIN_LEDGER), *raw.range(ledger)]
    raw.close()
    return records


def now() -> int:
    return time.time_ns() // 1_000_000


def _ledgers(writer: Writer) -> dict[str, tuple[str, dict[str, Any]]]:
    """One ledger of each domain and, for each kind, a record its author may write by the domain rules."""
    t = now()
    writer.create(
        "vote",
        LedgerRules(
            ("cast", "register", "uncast", "withdraw"),
            0,
            {"type": "election", "choices": ["a", "b"], "opens": t - 60_000, "closes": t + DAY_MS},
        ),
    )
    writer.create("fund", LedgerRules(("disbursement", "donation"), 0, {"type": "charity", "currency": "EUR"}))
    writer.create("coins", LedgerRules(("issue", "transfer"), 0, {"type": "resources", "unit": "c", "issuers": ["x"]}))
    writer.create("docs", LedgerRules(("file",), 0, {"type": "files", "read": "public"}))
    writer.create("notes", LedgerRules(("note",), 0, {}))
    donor = seal(new_seal_key(), "Zoë", "fund")
    return {
        "register": ("vote", {"voter_id": "v-1"}),
        "donation": ("fund", {"donor": donor, "fund": "zakat", "amount": 100, "source": "cash", "purpose": "zakat"}),
        "disbursement": ("fund", {"fund": "zakat", "target": "mallory-offshore", "amount": 1, "purpose": "x"}),
        "issue": ("coins", {"account": "x", "amount": 10}),
        "transfer": ("coins", {"from": "x", "to": "y", "amount": 1}),
        "file": ("docs", {"name": "a.txt", "size": 3, "sha256": SHA}),
        "note": ("notes", {"text": "hello"}),
    }


def test_every_kind_is_refused_without_a_grant_once_it_is_granted(writer: Writer) -> None:
    """Open before any grant, refused to others after it, accepted for the grantee; a resources
    ledger's kinds aside (below)."""
    for kind, (ledger, payload) in _ledgers(writer).items():
        if ledger == "coins":
            continue
        other = "mallory"
        writer.grant(ledger, kind, "x")
        with pytest.raises(NotGrantedError) as refused:
            writer.put(ledger, kind, payload, other)
        assert refused.value.code == "not_granted" and refused.value.ledger == ledger
        assert writer.put(ledger, kind, payload, "x").height >= 1, kind


def test_cast_uncast_and_withdraw_are_refused_without_a_grant(writer: Writer) -> None:
    _ledgers(writer)
    registration = writer.entry("vote", "register", {"voter_id": "v-9"}, "clerk")
    writer.store.append(registration)
    eid = "E-" + registration.checksum[:8].hex()
    writer.grant("vote", "*", "booth")  # every data kind of the ledger, for one account
    for kind, payload in (
        ("cast", {"electronic_id": eid, "choice": "a"}),
        ("uncast", {"electronic_id": eid}),
        ("withdraw", {"electronic_id": eid}),
    ):
        with pytest.raises(NotGrantedError):
            writer.put("vote", kind, payload, "clerk")
        writer.put("vote", kind, payload, "booth")


def test_a_kind_stays_open_until_granted_and_other_kinds_stay_open(writer: Writer) -> None:
    payloads = _ledgers(writer)
    writer.put("notes", "note", {"text": "open"}, "y")
    writer.grant("fund", "disbursement", "x")
    writer.put("fund", "donation", payloads["donation"][1], "y")  # donation still open
    writer.put("notes", "note", {"text": "still open"}, "y")  # another ledger's grant closes nothing here
    with pytest.raises(NotGrantedError):
        writer.put("fund", "disbursement", {"fund": "zakat", "target": "t", "amount": 1, "purpose": "p"}, "y")


def test_no_grant_closes_a_resources_ledger_s_issue_or_transfer(writer: Writer) -> None:
    """7.3 binds each unit to an account without a grant: a grant of ``transfer``, ``issue`` or ``*``
    to one account, then its revoke, leaves every holder moving its own units and the issuers
    issuing (outsider o12 R2: a first grant froze every other holder's units, a revoke everyone's);
    an observer's audit flags none of them, and the domain rules still hold."""
    _ledgers(writer)
    writer.put("coins", "issue", {"account": "alice", "amount": 10}, "x")
    for kind in ("transfer", "issue", "*"):
        writer.grant("coins", kind, "admin")
    writer.put("coins", "transfer", {"from": "alice", "to": "bob", "amount": 3}, "alice")
    writer.put("coins", "issue", {"account": "bob", "amount": 1}, "x")
    for kind in ("transfer", "issue", "*"):
        writer.grant("coins", kind, "admin", revoke=True)
    writer.put("coins", "transfer", {"from": "bob", "to": "alice", "amount": 4}, "bob")
    writer.put("coins", "issue", {"account": "carol", "amount": 2}, "x")
    with pytest.raises(NotOwnerError):  # the rules that bind them still do
        writer.put("coins", "transfer", {"from": "alice", "to": "admin", "amount": 1}, "admin")
    with pytest.raises(NotIssuerError):
        writer.put("coins", "issue", {"account": "admin", "amount": 1}, "admin")
    store = writer.store
    records = [*store.range(ADMIN_LEDGER), *store.range("coins")]
    assert RulesEngine(audit_grants=True).replay(records) == []


def test_a_revoked_grant_refuses_the_next_write(writer: Writer) -> None:
    _ledgers(writer)
    writer.grant("notes", "note", "x")
    writer.put("notes", "note", {"text": "one"}, "x")
    writer.grant("notes", "note", "x", revoke=True)
    with pytest.raises(NotGrantedError):
        writer.put("notes", "note", {"text": "two"}, "x")


def test_grant_records_are_checked(writer: Writer) -> None:
    writer.grant("notes", "note", "x")
    with pytest.raises(AlreadyGrantedError):
        writer.grant("notes", "note", "x")
    with pytest.raises(NoSuchGrantError):
        writer.grant("notes", "note", "y", revoke=True)
    for bad in ({"ledger": "admin", "kind": "grant"}, {"kind": "genesis"}, {"ledger": "Bad Name"}):
        payload = {"ledger": "notes", "kind": "note", "account": "x", "via": ""} | bad
        with pytest.raises(BadPayloadError):
            writer.put(ADMIN_LEDGER, "grant", payload, "root")
    with pytest.raises(BadPayloadError):
        writer.put(ADMIN_LEDGER, "grant", {"ledger": "notes", "kind": "note"}, "root")


def test_records_after_an_admin_record_are_accepted_later(tmp_path: Path) -> None:
    """With a clock that stands still, the store still orders admin and other records apart."""
    store = ChainStore(tmp_path / "s", origin="ingest-1", domain=RulesEngine(), clock=lambda: 1000)
    writer = Writer(store)
    writer.create(ADMIN_LEDGER, admin_genesis_rules())
    writer.create("notes", LedgerRules(("note",), 0, {}))
    before = writer.put("notes", "note", {"text": "a"}, "x")
    grant = writer.grant("notes", "note", "x")
    after = writer.put("notes", "note", {"text": "b"}, "x")
    records = {r.hash: r for ledger in ("notes", ADMIN_LEDGER) for r in store.range(ledger)}
    assert records[before.hash].accepted <= records[grant.hash].accepted < records[after.hash].accepted
    store.close()


def test_a_replay_that_audits_grants_agrees_with_the_committer_and_flags_an_injected_record(
    writer: Writer, tmp_path: Path
) -> None:
    """Records the committer accepted pass an audit; one written past ingest is flagged."""
    _ledgers(writer)
    writer.put("notes", "note", {"text": "before any grant"}, "mallory")
    writer.grant("notes", "note", "x")
    writer.put("notes", "note", {"text": "granted"}, "x")
    writer.grant("notes", "note", "x", revoke=True)
    writer.grant("notes", "note", "y")
    writer.put("notes", "note", {"text": "granted too"}, "y")
    # Inject a record by an author without a grant, past the rules (a store without an engine).
    records = _smuggled(writer, tmp_path, "notes", "note", {"text": "smuggled"}, "x")
    violations = RulesEngine(audit_grants=True).replay(records)
    assert [(v.ledger, v.height, v.error.code) for v in violations] == [("notes", 4, "not_granted")]
    assert RulesEngine().replay(records) == []  # without auditing, the same chain passes


def test_the_grant_table_judges_by_time() -> None:
    grants = Grants()
    grants.add("vote", "register", "reg", True, 10)
    grants.add("vote", "*", "boss", True, 20)
    grants.add("vote", "register", "reg", False, 30)
    assert grants.allows("vote", "register", "other", 10)  # open until a record accepted before it
    assert grants.allows("vote", "register", "reg", 11) and not grants.allows("vote", "register", "other", 11)
    assert not grants.allows("vote", "register", "reg", 31)
    assert grants.allows("vote", "cast", "anyone", 20) and not grants.allows("vote", "cast", "anyone", 21)
    assert grants.allows("vote", "cast", "boss", 21)
    assert grants.table() == [("vote", "*", ["boss"]), ("vote", "register", [])]


def test_no_grant_closes_the_kinds_a_node_places_for_an_admin_s_command() -> None:
    """Outsider 32 R3: a ``*`` grant of a ledger's data closed ``epoch`` and ``checkpoint_key``
    too, so the admin's promotion and key rotation (the remedies for a lost home and a stolen
    key) were refused not_granted. A grant of either, written before, closes nothing either."""
    grants = Grants()
    grants.add("vote", "*", "registrar", True, 10)
    grants.add("vote", "checkpoint_key", "someone", True, 10)
    for kind in (EPOCH_KIND, ROTATION_KIND):
        assert not grants.closed("vote", kind, 11) and grants.allows("vote", kind, "admin", 11), kind
    assert not grants.allows("vote", "register", "admin", 11)  # the ledger's data stays granted
    assert grants.table() == [("vote", "*", ["registrar"]), ("vote", "checkpoint_key", ["someone"])]


def test_an_admin_ledger_by_another_name_is_refused(writer: Writer) -> None:
    from vledger.node.errors import BadDomainRulesError

    with pytest.raises(BadDomainRulesError):
        writer.create("shadow", admin_genesis_rules())


def test_grants_in_the_admin_genesis_are_in_force_after_it(tmp_path: Path) -> None:
    store = ChainStore(tmp_path / "s", origin="ingest-1", domain=RulesEngine())
    writer = Writer(store)
    writer.create(ADMIN_LEDGER, admin_genesis_rules([("notes", "note", "x")]))
    writer.create("notes", LedgerRules(("note",), 0, {}))
    with pytest.raises(NotGrantedError):
        writer.put("notes", "note", {"text": "a"}, "y")
    writer.put("notes", "note", {"text": "a"}, "x")
    state = RulesEngine()
    state.replay(store.range(ADMIN_LEDGER))
    held = state.state(ADMIN_LEDGER)
    assert held is not None and isinstance(held.domain, AdminState)
    assert held.domain.tally().grants == [("notes", "note", ["x"])]
    store.close()


def test_key_rotation_records_are_checked_and_kept(writer: Writer) -> None:
    curve = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    good = {"node": "ingest-1", "curve": curve, "sign": "0f" * 32, "until": now() + 60_000, "via": ""}
    for bad in (
        {"curve": "short"},
        {"curve": curve[:-1] + " "},
        {"sign": "0F" * 32},  # upper case: one key, one spelling
        {"sign": "0f" * 31},
        {"until": 1},  # a window that ended before the record
        {"node": "Bad Name"},
        {"cosigned": [["polls", 3]]},  # what the old key cosigned (16.6): an object ledger -> size
        {"cosigned": {"Bad Name": 3}},
        {"cosigned": {"polls": 0}},
        {"cosigned": {"polls": True}},
        {"cosigned": {"polls": "3"}},
        {"tallied": [["polls", 3]]},  # what the old key tallied (16.6): an object ledger -> height
        {"tallied": {"Bad Name": 3}},
        {"tallied": {"polls": -1}},
        {"tallied": {"polls": False}},
        {"tallied": None},
    ):
        with pytest.raises(BadPayloadError):
            writer.put(ADMIN_LEDGER, "key_rotation", good | bad, "root")
    writer.put(ADMIN_LEDGER, "key_rotation", good, "root")
    engine = RulesEngine()
    assert engine.replay(writer.store.range(ADMIN_LEDGER)) == []
    (kept,) = engine.key_rotations()
    assert {k: kept[k] for k in good} == good and kept["accepted"] >= 1
    stated = good | {"cosigned": {"polls": 3, "admin": 12}, "until": now() + 60_000}
    writer.put(ADMIN_LEDGER, "key_rotation", stated, "root")
    engine = RulesEngine()
    assert engine.replay(writer.store.range(ADMIN_LEDGER)) == []
    assert engine.key_rotations()[-1]["cosigned"] == {"polls": 3, "admin": 12}
    # An observer's rotation states what its replaced key had tallied too; height 0 (the genesis) is one.
    tallied = stated | {"tallied": {"polls": 0, "admin": 11}, "until": now() + 60_000, "sign": "1e" * 32}
    writer.put(ADMIN_LEDGER, "key_rotation", tallied, "root")
    engine = RulesEngine()
    assert engine.replay(writer.store.range(ADMIN_LEDGER)) == []
    assert engine.key_rotations()[-1]["tallied"] == {"polls": 0, "admin": 11}


def test_a_rotation_to_a_key_another_node_was_rotated_to_is_refused(writer: Writer) -> None:
    # One key for two nodes: its holder would cosign as both, and a write concern of 2 be met by one host.
    curve, other_curve = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", "Aq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    first = {"node": "replica-1", "curve": curve, "sign": "0f" * 32, "until": now() + 60_000, "via": ""}
    writer.put(ADMIN_LEDGER, "key_rotation", first, "root")
    for taken in ({"sign": "0f" * 32}, {"curve": curve, "sign": "1f" * 32}):
        with pytest.raises(NodeKeyInUseError) as refused:
            writer.put(
                ADMIN_LEDGER, "key_rotation", first | {"node": "replica-2", "curve": other_curve} | taken, "root"
            )
        assert refused.value.code == "node_key_in_use" and "replica-1's key" in refused.value.message
    # The node's own keys again (an ingest node's unchanged sign, a replica's kept curve) are its own.
    writer.put(ADMIN_LEDGER, "key_rotation", first | {"sign": "2f" * 32}, "root")
    writer.put(
        ADMIN_LEDGER, "key_rotation", first | {"node": "replica-2", "curve": other_curve, "sign": "3f" * 32}, "root"
    )
    engine = RulesEngine()
    assert engine.replay(writer.store.range(ADMIN_LEDGER)) == []
    assert len(engine.key_rotations()) == 3


def test_a_verifier_s_rotation_has_no_ed25519_key_and_a_malformed_sign_is_refused(writer: Writer) -> None:
    # A verifier signs nothing: its record's sign is "" (PROTOCOL 16.1); any other non-key is refused.
    curve = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    good = {"node": "verifier-1", "curve": curve, "sign": "", "until": now() + 60_000, "via": ""}
    for bad in ({"sign": None}, {"sign": " "}, {"sign": "0"}, {"sign": 0}, {"sign": b""}, {"sign": [""]}):
        with pytest.raises(BadPayloadError):
            writer.put(ADMIN_LEDGER, "key_rotation", good | bad, "root")
    without_sign = {k: v for k, v in good.items() if k != "sign"}
    with pytest.raises(BadPayloadError):
        writer.put(ADMIN_LEDGER, "key_rotation", without_sign, "root")
    with pytest.raises(BadPayloadError):
        writer.put(ADMIN_LEDGER, "key_rotation", good | {"curve": ""}, "root")  # the CURVE key is never empty
    writer.put(ADMIN_LEDGER, "key_rotation", good, "root")
    engine = RulesEngine()
    assert engine.replay(writer.store.range(ADMIN_LEDGER)) == []
    (kept,) = engine.key_rotations()
    assert kept["node"] == "verifier-1" and kept["sign"] == "" and kept["curve"] == curve


def _account_payload(name: str, op: str, key: str = "", *, ends_grants: bool = True) -> dict[str, Any]:
    """An ``account`` payload as a node writes it; ``ends_grants=False``: a removal as written
    before removals ended grants (no such field)."""
    removed = op == "remove"
    payload: dict[str, Any] = {
        "account": name,
        "op": op,
        "role": "" if removed else "writer",
        "enabled": not removed,
        "keys": [] if removed or not key else [key],
        "via": "",
    }
    if removed and ends_grants:
        payload[ENDS_GRANTS] = True
    return payload


def _account(writer: Writer, name: str, op: str, key: str = "", *, ends_grants: bool = True) -> Any:
    return writer.put(ADMIN_LEDGER, "account", _account_payload(name, op, key, ends_grants=ends_grants), "root")


def test_removing_an_account_ends_its_grants_so_a_new_account_of_that_name_holds_none(writer: Writer) -> None:
    """The outsider's F2: grant w9, remove w9, add w9 again (another person): the grant ended
    with the first w9, for the committer, for a replay and in the grant table."""
    _ledgers(writer)
    _account(writer, "w9", "add", "k1")
    writer.grant("vote", "register", "w9")
    writer.grant("notes", "*", "w9")
    writer.grant("notes", "note", "other")
    writer.put("vote", "register", {"voter_id": "v-1"}, "w9")
    _account(writer, "w9", "remove")
    _account(writer, "w9", "add", "k2")
    for ledger, kind, payload in (("vote", "register", {"voter_id": "v-2"}), ("notes", "note", {"text": "x"})):
        with pytest.raises(NotGrantedError):
            writer.put(ledger, kind, payload, "w9")
    assert writer.put("notes", "note", {"text": "y"}, "other").height >= 1  # others keep theirs
    with pytest.raises(NoSuchGrantError):  # nothing left to revoke
        writer.grant("vote", "register", "w9", revoke=True)
    records = [*writer.store.range(ADMIN_LEDGER)]
    table = RulesEngine()
    table.replay(records)
    held = table.state(ADMIN_LEDGER)
    assert held is not None and isinstance(held.domain, AdminState)
    assert held.domain.tally().grants == [("notes", "*", []), ("notes", "note", ["other"]), ("vote", "register", [])]
    writer.grant("vote", "register", "w9")  # a grant that names the new w9 is a new record
    assert writer.put("vote", "register", {"voter_id": "v-3"}, "w9").height >= 1


def test_a_replay_flags_a_record_written_under_a_removed_account_s_grant(writer: Writer, tmp_path: Path) -> None:
    """Observers judge it from the chain: the removal alone ends the grant, no revoke record needed."""
    writer.create("notes", LedgerRules(("note",), 0, {}))
    _account(writer, "w9", "add", "k1")
    writer.grant("notes", "note", "w9")
    writer.put("notes", "note", {"text": "granted"}, "w9")
    _account(writer, "w9", "remove")
    _account(writer, "w9", "add", "k2")
    # A record by the new w9 written past the rules (a store without an engine), as a home
    # that still judged by the name alone would have placed it.
    records = _smuggled(writer, tmp_path, "notes", "note", {"text": "inherited"}, "w9")
    violations = RulesEngine(audit_grants=True).replay(records)
    assert [(v.ledger, v.height, v.error.code) for v in violations] == [("notes", 2, "not_granted")]


def test_removal_ends_the_grants_in_the_table_at_its_time() -> None:
    grants = Grants()
    grants.add("vote", "register", "w9", True, 10)
    assert grants.end_all("w9", 20) == [("vote", "register")]
    assert grants.allows("vote", "register", "w9", 20) and not grants.allows("vote", "register", "w9", 21)
    assert grants.held_by("w9") == [] and grants.end_all("w9", 30) == []


def test_a_genesis_grant_ends_when_its_account_is_removed(tmp_path: Path) -> None:
    store = ChainStore(tmp_path / "store", origin="ingest-1", domain=RulesEngine())
    writer = Writer(store)
    writer.create(ADMIN_LEDGER, admin_genesis_rules([("notes", "note", "w9")]))
    writer.create("notes", LedgerRules(("note",), 0, {}))
    writer.put("notes", "note", {"text": "a"}, "w9")
    _account(writer, "w9", "remove")
    with pytest.raises(NotGrantedError):
        writer.put("notes", "note", {"text": "b"}, "w9")
    store.close()


def test_a_removal_written_before_the_rule_ends_no_grant_so_old_admin_ledgers_replay_as_written(
    writer: Writer, tmp_path: Path
) -> None:
    """The reviewer's chain, as a node wrote it before removals ended grants: grant relief
    donation alice, remove alice (no ends_grants), add alice, a donation by her, revoke. Every
    record stays valid for the committer and for an audit from genesis; the revoke ends the grant."""
    donations = _ledgers(writer)
    writer.create("relief", LedgerRules(("disbursement", "donation"), 0, {"type": "charity", "currency": "EUR"}))
    _, donation = donations["donation"]
    _account(writer, "alice", "add", "k1")
    writer.grant("relief", "donation", "alice")
    _account(writer, "alice", "remove", ends_grants=False)
    _account(writer, "alice", "add", "k2")
    written = writer.put("relief", "donation", donation, "alice")  # under the grant the removal kept
    writer.grant("relief", "donation", "alice", revoke=True)  # valid when written, valid now
    with pytest.raises(NotGrantedError):
        writer.put("relief", "donation", donation, "alice")
    records = [*writer.store.range(ADMIN_LEDGER), *writer.store.range("relief")]
    assert RulesEngine(audit_grants=True).replay(records) == []
    assert [r.height for r in writer.store.range("relief")] == [0, written.height]


def test_ends_grants_is_true_on_a_removal_only(writer: Writer) -> None:
    """The field has one form (PROTOCOL 16.1): a reader never guesses what another means."""
    _account(writer, "w9", "add", "k1")
    for payload in (
        _account_payload("w9", "disable") | {ENDS_GRANTS: True},
        _account_payload("w9", "remove") | {ENDS_GRANTS: False},
        _account_payload("w9", "remove") | {ENDS_GRANTS: 1},
        _account_payload("w9", "remove") | {ENDS_GRANTS: "true"},
    ):
        with pytest.raises(BadPayloadError):
            writer.put(ADMIN_LEDGER, "account", payload, "root")
    assert _account(writer, "w9", "remove").height >= 1


def test_a_replay_flags_admin_records_whose_author_the_admin_ledger_never_made_an_admin(
    writer: Writer, tmp_path: Path
) -> None:
    """PROTOCOL 16.7: every admin record but the creator's imports and a host's enrollment is by an
    enabled admin by the records before it. The home refuses the others (not_admin_author); a
    home that wrote them anyway (its store without rules here) has them flagged by an observer's
    replay."""

    def account(name: str, op: str, role: str = "admin", enabled: bool = True) -> dict[str, Any]:
        return {"account": name, "op": op, "role": role, "enabled": enabled, "keys": [], "via": ""}

    def totp(name: str) -> dict[str, Any]:
        return {"account": name, "op": "enroll", "via": ""}

    puts = [
        ("account", account("ops", "import"), "root", True),  # 2: the creator's import run
        ("account", account("clerk", "add", "writer"), "root", True),  # 3
        ("grant", {"ledger": "notes", "kind": "note", "account": "clerk", "via": ""}, "clerk", False),  # 4
        ("account", account("mallory", "add"), "mallory", False),  # 5: no account of that name
        ("account", account("late", "import"), "root", False),  # 6: an import after the run
        ("totp", totp("ops"), "root", False),  # 7: ops's host enrollment, authored by root
        ("totp", totp("ops"), "ops", True),  # 8: as the home writes it
        ("account", account("ops", "disable", enabled=False), "root", True),  # 9
        ("account", account("x", "add", "writer"), "ops", False),  # 10: ops is disabled now
    ]
    forged = Writer(ChainStore(tmp_path / "forged", origin="ingest-1"))
    forged.create(ADMIN_LEDGER, admin_genesis_rules())
    for kind, payload, author, honest in puts:
        forged.put(ADMIN_LEDGER, kind, payload, author)
        if honest:
            writer.put(ADMIN_LEDGER, kind, payload, author)
        else:
            size = writer.store.size(ADMIN_LEDGER)
            with pytest.raises(NotAdminAuthorError):
                writer.put(ADMIN_LEDGER, kind, payload, author)
            assert writer.store.size(ADMIN_LEDGER) == size
    records = list(forged.store.range(ADMIN_LEDGER))
    forged.store.close()
    violations = RulesEngine(audit_grants=True).replay(records)
    assert [(v.height, v.error.code) for v in violations] == [(h, "not_admin_author") for h in (4, 5, 6, 7, 10)]
    assert RulesEngine().replay(records) == []  # the committer's own replay judges no author


def _admin_payload(name: str, op: str, enabled: bool) -> dict[str, Any]:
    return {"account": name, "op": op, "role": "admin", "enabled": enabled, "keys": [f"{name}-key"], "via": ""}


def test_a_key_rotation_by_no_admin_is_refused_by_the_committer_and_flagged_by_an_audit(
    writer: Writer, tmp_path: Path
) -> None:
    """ho32: only ingest refused a ``checkpoint_key`` or ``epoch`` put by anyone; a home that
    wrote one by a writer (or an admin disabled by then) passed every checker. The rule is the
    engine's (PROTOCOL 16.7): judged by the admin records accepted before the record, so a
    rotation by an admin disabled later stays valid."""
    writer.create("keys", LedgerRules((ROTATION_KIND, "note"), 0, {}))
    _account(writer, "w9", "add", "k1")  # a writer, never an admin
    writer.put(ADMIN_LEDGER, "account", _admin_payload("boss", "add", True), "root")
    rotation = {"new": "a key"}  # the key chain judges the payload (13.8), not these rules
    writer.put("keys", ROTATION_KIND, rotation, "boss")
    with pytest.raises(NotAdminAuthorError) as refused:
        writer.put("keys", ROTATION_KIND, rotation, "w9")
    assert refused.value.ledger == "keys" and "'w9'" in refused.value.reason
    writer.put(ADMIN_LEDGER, "account", _admin_payload("boss", "disable", False), "root")
    with pytest.raises(NotAdminAuthorError):
        writer.put("keys", ROTATION_KIND, rotation, "boss")
    writer.put("keys", "note", {"text": "any writer"}, "w9")  # other kinds: the grant rule only
    # A rotation by the writer placed past the rules (a store without an engine), as a forging home would.
    records = _smuggled(writer, tmp_path, "keys", ROTATION_KIND, rotation, "w9")
    violations = RulesEngine(audit_grants=True).replay(records)
    assert [(v.ledger, v.height, v.error.code) for v in violations] == [("keys", 3, "not_admin_author")]


def test_who_places_a_handover_or_rotation_is_judged_by_time() -> None:
    grants = Grants()
    assert grants.places_machinery("anyone", 5)  # no admin ledger read: nothing to judge by
    grants.opened = 10
    grants.set_admin("boss", True, 20)
    grants.set_admin("boss", False, 30)
    assert grants.places_machinery("anyone", 10)  # not after the admin ledger's genesis
    assert not grants.places_machinery("boss", 20) and grants.places_machinery("boss", 21)
    assert grants.places_machinery("boss", 30) and not grants.places_machinery("boss", 31)
    assert not grants.places_machinery("anyone", 11)


def test_the_admin_ledger_says_which_accounts_are_enrolled_in_a_second_factor(writer: Writer) -> None:
    """What a node asks before taking Redis's word that an admin has no factor (PROTOCOL 16.5):
    a ``totp`` record since the account was last added; a removal forgets it."""
    engine = RulesEngine()
    assert engine.admin_second_factors() is None  # no admin ledger: Redis is all there is
    _ledgers(writer)
    _account(writer, "w9", "add", "k1")
    writer.put(ADMIN_LEDGER, "totp", {"account": "w9", "op": "enroll", "via": "k"}, "root")
    writer.put(ADMIN_LEDGER, "totp", {"account": "w9", "op": "reset", "via": "k"}, "root")
    _account(writer, "w8", "add", "k2")
    assert engine.replay(writer.store.range(ADMIN_LEDGER)) == []
    assert engine.admin_second_factors() == {"w9": None}  # records of before sealed_sha256: Redis's word
    _account(writer, "w9", "remove")
    _account(writer, "w9", "add", "k3")  # another person: enrolled in nothing
    again = RulesEngine()
    again.replay(writer.store.range(ADMIN_LEDGER))
    assert again.admin_second_factors() == {}


def test_the_latest_totp_record_names_the_one_sealed_secret_a_node_takes(writer: Writer) -> None:
    """16.5: a node takes from Redis only the sealed secret the account's latest ``totp`` record
    names (``sealed_sha256``); every one ever named is known, so the home records no host
    enrollment that puts an old one back; a bad ``sealed_sha256`` is no record (bad_payload)."""
    _ledgers(writer)
    _account(writer, "w9", "add", "k1")
    first, second = "a" * 64, "0123456789abcdef" * 4
    writer.put(ADMIN_LEDGER, "totp", {"account": "w9", "op": "enroll", "via": "k", "sealed_sha256": first}, "root")
    writer.put(ADMIN_LEDGER, "totp", {"account": "w9", "op": "reset", "via": "k", "sealed_sha256": second}, "root")
    for bad in ("A" * 64, "a" * 63, 7, ""):
        with pytest.raises(BadPayloadError):
            payload = {"account": "w9", "op": "reset", "via": "k", "sealed_sha256": bad}
            writer.put(ADMIN_LEDGER, "totp", payload, "root")
    engine = RulesEngine()
    assert engine.replay(writer.store.range(ADMIN_LEDGER)) == []
    assert engine.admin_second_factors() == {"w9": second}
    assert engine.admin_recorded_seals() == frozenset({first, second})
    writer.put(ADMIN_LEDGER, "totp", {"account": "w9", "op": "reset", "via": "k"}, "root")  # an older node's
    again = RulesEngine()
    again.replay(writer.store.range(ADMIN_LEDGER))
    assert again.admin_second_factors() == {"w9": None}
