"""Grants through real nodes (docs/PROTOCOL.md 15): admin commands become admin ledger
records, a closed kind refuses other writers on its home and on the other ingest node, and
Redis rebuilds from the chain."""

from __future__ import annotations

import json
import re

from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.record import decode_record
from vledger.node.rules.admin import ADMIN_LEDGER, ENDS_GRANTS
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, remote_error

from .conftest import REMOTE_LEDGERS

CHARITY = {"type": "charity", "currency": "SAR"}
CHARITY_KINDS = ("donation", "disbursement")


def admin_records(cluster: LocalCluster) -> list[tuple[str, str, dict[str, object]]]:
    client = cluster.admin()
    return [
        (r.content.kind, r.content.author, r.content.payload)
        for r in (decode_record(data, PROTOCOL_LIMITS) for data in client.records(ADMIN_LEDGER))
    ]


def test_a_grant_closes_a_kind_on_either_ingest_node(cluster: LocalCluster) -> None:
    cluster.add_account("registrar", "writer")
    cluster.add_account("plain-writer", "writer")
    for ledger in ("office", REMOTE_LEDGERS[0]):  # homed on ingest-1, then on ingest-2
        cluster.admin().create_ledger(genesis(ledger, ADMIN, ["note", "register"]))
        result = cluster.admin().call("grant.add", {"ledger": ledger, "kind": "register", "account": "registrar"})
        assert result["pending"] == [] and result["height"] >= 1
        refused = remote_error(cluster.client("plain-writer").put, entry(ledger, "register", {"n": 1}, "plain-writer"))
        assert refused.code == "not_granted", ledger
        assert cluster.client("registrar").put(entry(ledger, "register", {"n": 2}, "registrar"))["height"] == 1
        # Other kinds stay open: only what was granted is closed.
        assert cluster.client("plain-writer").put(entry(ledger, "note", {"n": 3}, "plain-writer"))["height"] == 2
    revoked = cluster.admin().call("grant.revoke", {"ledger": "office", "kind": "register", "account": "registrar"})
    assert revoked["pending"] == []
    assert remote_error(cluster.client("registrar").put, entry("office", "register", {"n": 4}, "registrar")).code == (
        "not_granted"
    )
    again = remote_error(cluster.admin().call, "grant.revoke", {"ledger": "office", "kind": "register", "account": "x"})
    assert again.code == "no_such_account"
    twice = remote_error(
        cluster.admin().call, "grant.revoke", {"ledger": "office", "kind": "register", "account": "registrar"}
    )
    assert twice.code == "no_such_grant"


def test_every_admin_command_is_a_record_naming_its_admin_and_key(cluster: LocalCluster) -> None:
    cluster.add_account("clerk", "writer")
    cluster.admin().call("account.disable", {"account": "clerk"})
    records = admin_records(cluster)
    assert records[0][0] == "genesis"
    imported = [payload["account"] for kind, _, payload in records if payload.get("op") == "import"]
    assert ADMIN in imported  # the bootstrapped admin, imported when the ledger was made
    tail = [(kind, payload["op"]) for kind, _, payload in records[-3:]]
    assert tail == [("account", "add"), ("key", "add"), ("account", "disable")]
    assert all(author == ADMIN for _, author, _ in records[1:])
    assert {payload["via"] for _, _, payload in records[-3:]} == {cluster.keys[ADMIN].public}
    assert records[-1][2]["enabled"] is False


def test_admin_commands_sent_to_another_node_go_to_the_admin_ledger_home(cluster: LocalCluster) -> None:
    client = cluster.client(ADMIN, "ingest-2", follow=False)
    error = remote_error(client.call, "account.add", {"account": "elsewhere", "role": "writer"})
    assert error.code == "not_home"
    followed = cluster.client(ADMIN, "ingest-2").call("account.add", {"account": "elsewhere", "role": "writer"})
    assert followed["account"] == "elsewhere"


def test_nobody_writes_the_admin_ledger_directly(cluster: LocalCluster) -> None:
    forged = entry(ADMIN_LEDGER, "grant", {"ledger": "office", "kind": "note", "account": ADMIN, "via": ""}, ADMIN)
    assert remote_error(cluster.admin().put, forged).code == "forbidden"


def test_the_cli_grants_and_shows_the_admin_log(cluster: LocalCluster) -> None:
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    cluster.add_account("auditor", "observer")
    cluster.admin().create_ledger(genesis("books", ADMIN, ["note"]))
    done = cluster.cli("grant", "add", "books", "note", "auditor", *common)
    assert "auditor may now write 'note' records on books" in done.stdout
    assert re.search(r"^books +note +auditor$", cluster.cli("grant", "list", *common).stdout, re.MULTILINE)
    log = cluster.cli("admin", "log", *common).stdout
    assert "admin ledger created" in log and "auditor may now write 'note' on books" in log
    rows = json.loads(cluster.cli("admin", "log", "--json", *common).stdout)["records"]
    assert rows[-1]["kind"] == "grant" and rows[-1]["author"] == ADMIN
    assert rows[-1]["via"] == cluster.keys[ADMIN].public
    refused = cluster.cli("grant", "revoke", "books", "note", "nobody-here", *common, check=False)
    assert refused.returncode != 0 and "no_such_account" in refused.stderr + refused.stdout


def test_a_removed_account_s_grants_do_not_pass_to_a_new_account_of_its_name(cluster: LocalCluster) -> None:
    """The outsider's F2 through real nodes: w9 granted, removed, added again with another
    person's key; on either ingest node the new w9 is refused, and the CLI shows the grant ended."""
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    cluster.add_account("w9", "writer")
    ledgers = ("polls", REMOTE_LEDGERS[1])  # homed on ingest-1, then on ingest-2
    for ledger in ledgers:
        cluster.admin().create_ledger(genesis(ledger, ADMIN, ["note", "register"]))
        cluster.admin().call("grant.add", {"ledger": ledger, "kind": "register", "account": "w9"})
        assert cluster.client("w9").put(entry(ledger, "register", {"n": 1}, "w9"))["height"] == 1
    first = cluster.keys["w9"]
    assert cluster.admin().call("account.remove", {"account": "w9"})["pending"] == []
    # The record says the grants end: the rule is read off the chain, not off when it was written.
    *_, (kind, _, removal) = admin_records(cluster)
    assert kind == "account" and removal["op"] == "remove" and removal[ENDS_GRANTS] is True
    second = cluster.add_account("w9", "writer")
    assert second.public != first.public
    for ledger in ledgers:
        refused = remote_error(cluster.client("w9").put, entry(ledger, "register", {"n": 2}, "w9"))
        assert refused.code == "not_granted", ledger
    listed = cluster.cli("grant", "list", *common).stdout
    assert re.search(r"^polls +register +\(nobody\)$", listed, re.MULTILINE), listed
    assert "w9" not in listed
    log = cluster.cli("admin", "log", *common).stdout
    assert "account w9 removed; its grants end: 'register' on polls" in log, log
    twice = remote_error(cluster.admin().call, "grant.revoke", {"ledger": "polls", "kind": "register", "account": "w9"})
    assert twice.code == "no_such_grant"


def test_a_grant_before_the_ledger_exists_is_meant_and_ledger_create_names_every_holder(cluster: LocalCluster) -> None:
    """The outsider's o6 H3: a grant on a ledger that did not exist went through silently, and the
    charity created later under that name said "only admin may write donation" while another
    account held it. Now grant add refuses a missing ledger unless --before-create, and ledger
    create refuses another account's grant unless --keep-grants, then names every holder."""
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    charity = ["--rules", json.dumps({"type": "charity", "currency": "SAR"})]
    cluster.add_account("alice", "writer")
    typo = cluster.cli("grant", "add", "nosuchledger", "donation", "alice", *common, check=False)
    assert typo.returncode == 1 and "no_such_ledger" in typo.stderr and "--before-create" in typo.stderr, typo
    assert "nosuchledger" not in cluster.cli("grant", "list", *common).stdout  # nothing recorded

    cluster.cli("grant", "add", "fund", "donation", "alice", "--before-create", *common)
    refused = cluster.cli("ledger", "create", "fund", *charity, *common, check=False)
    assert refused.returncode == 1 and "already_granted" in refused.stderr, refused
    assert "alice holds 'donation' on fund" in refused.stderr and "--keep-grants" in refused.stderr
    assert remote_error(cluster.admin().call, "size", {"ledger": "fund"}).code == "no_such_ledger"  # nothing made

    created = json.loads(cluster.cli("ledger", "create", "fund", *charity, "--keep-grants", "--json", *common).stdout)
    assert created["holders"] == {"donation": [ADMIN, "alice"], "disbursement": [ADMIN]}
    # A `*` grant is a holder of every kind too, and the text names each holder, never "only admin".
    cluster.cli("grant", "add", "fund2", "*", "alice", "--before-create", *common)
    told = cluster.cli("ledger", "create", "fund2", *charity, "--keep-grants", *common).stdout
    assert "only" not in told and "donation: admin, alice" in told and "disbursement: admin, alice" in told, told

    alone = cluster.cli("ledger", "create", "fund3", *charity, *common).stdout
    assert "only admin may write donation, disbursement on fund3" in alone, alone


def test_units_and_issuer_rights_a_name_keeps_are_told_at_removal_and_guard_its_reuse(cluster: LocalCluster) -> None:
    """The outsider's o6 H6: units and a genesis's issuers are keyed by name, so a removed
    account's balance passed silently to a new account given its name. `user remove` now says
    what the name keeps, and `user add` of such a name (or one units were sent to before any
    account had it) is refused (name_holds_units) unless --reuse-name."""
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    cluster.add_account("holder", "writer")
    cluster.add_account("mint", "writer")
    rules = {"type": "resources", "unit": "credits", "issuers": [ADMIN, "mint"], "max_holders": 100}
    cluster.admin().create_ledger(genesis("lab", ADMIN, ["issue", "transfer"], rules))
    cluster.admin().put(entry("lab", "issue", {"account": "holder", "amount": 1234}, ADMIN))
    cluster.admin().put(entry("lab", "issue", {"account": "not-yet", "amount": 5}, ADMIN))

    removed = cluster.cli("user", "remove", "holder", *common).stdout
    assert "account holder: removed" in removed and "the name holder holds 1,234 credits on lab still" in removed, (
        removed
    )
    issuer = json.loads(cluster.cli("user", "remove", "mint", "--json", *common).stdout)
    assert issuer["holdings"] == [{"ledger": "lab", "unit": "credits", "units": 0, "issuer": True}]

    for name, held in (("holder", "1,234 credits on lab"), ("mint", "the right to issue on lab"), ("not-yet", "5 ")):
        refused = cluster.cli("user", "add", name, "--role", "writer", *common, check=False)
        assert refused.returncode == 1 and "name_holds_units" in refused.stderr, refused
        assert held in refused.stderr and "--reuse-name" in refused.stderr, refused.stderr
    accounts = {a["account"] for a in cluster.admin().call("account.list")["accounts"]}
    assert not accounts & {"holder", "mint", "not-yet"}  # nothing was added

    assert json.loads(cluster.cli("user", "add", "bob", "--role", "writer", "--json", *common).stdout)["holdings"] == []
    reused = cluster.cli("user", "add", "holder", "--role", "writer", "--reuse-name", *common).stdout
    assert "account holder: added as writer" in reused and "1,234 credits on lab" in reused, reused


def test_a_home_refuses_a_raw_create_over_another_account_s_grant_unless_told_to_keep_it(cluster: LocalCluster) -> None:
    """adm25's refusal was the command's alone: a genesis sent without `vledger ledger create` (a
    script on the client library, a raw request) started a fund whose `disbursement` an account
    granted it before it existed could pay out beside its creator. The home now refuses it too."""
    cluster.add_account("mallory", "writer")
    for ledger in ("raw-fund", REMOTE_LEDGERS[3]):  # homed on ingest-1, then on ingest-2
        cluster.admin().call("grant.add", {"ledger": ledger, "kind": "disbursement", "account": "mallory"})
        raw = genesis(ledger, ADMIN, CHARITY_KINDS, CHARITY)
        refused = remote_error(cluster.admin().create_ledger, raw)
        assert refused.code == "already_granted", ledger
        assert "mallory holds 'disbursement' on " + ledger in refused.message and "keep_grants" in refused.message
        assert remote_error(cluster.admin().call, "size", {"ledger": ledger}).code == "no_such_ledger"
        # Said meant: created, with the grant as it stands (its genesis an ordinary one).
        assert cluster.admin().create_ledger(raw, keep_grants=True)["height"] == 0
    # A ledger that moves no votes nor money, and one whose holders are its creator alone: no word needed.
    cluster.admin().call("grant.add", {"ledger": "raw-notes", "kind": "note", "account": "mallory"})
    assert cluster.admin().create_ledger(genesis("raw-notes", ADMIN, ["note"]))["height"] == 0
    cluster.admin().call("grant.add", {"ledger": "raw-fund2", "kind": "*", "account": ADMIN})
    own = genesis("raw-fund2", ADMIN, CHARITY_KINDS, CHARITY)
    assert cluster.admin().create_ledger(own)["height"] == 0
    # A `*` grant to another is a holder of every kind; a revoked grant is none.
    cluster.admin().call("grant.add", {"ledger": "raw-fund3", "kind": "*", "account": "mallory"})
    star = genesis("raw-fund3", ADMIN, CHARITY_KINDS, CHARITY)
    assert "mallory holds 'donation'" in remote_error(cluster.admin().create_ledger, star).message
    cluster.admin().call("grant.revoke", {"ledger": "raw-fund3", "kind": "*", "account": "mallory"})
    assert cluster.admin().create_ledger(star)["height"] == 0
    args = {"content": own.content_bytes, "nonce": own.nonce, "keep_grants": 1}
    assert remote_error(cluster.admin().call, "ledger.create", args).code == "bad_request"


def test_no_grant_freezes_the_units_of_a_resources_ledger(cluster: LocalCluster) -> None:
    """Outsider o12 R2 through a real node: a grant of `transfer` (made by a raw client; the CLI
    now refuses it, not_grantable) refused a holder's transfer of her own units, and its revoke every
    transfer, the admin's included. 7.3 binds each unit to its holder: no grant closes the kind."""
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    cluster.add_account("r2-holder", "writer")  # a name no other test here takes
    rules = {"type": "resources", "unit": "credits", "issuers": [ADMIN], "max_holders": 100}
    cluster.admin().create_ledger(genesis("lab-credits", ADMIN, ["issue", "transfer", "note"], rules))
    cluster.admin().put(entry("lab-credits", "issue", {"account": "r2-holder", "amount": 10}, ADMIN))
    cluster.admin().put(entry("lab-credits", "issue", {"account": ADMIN, "amount": 10}, ADMIN))
    refused = cluster.cli("grant", "add", "lab-credits", "transfer", ADMIN, *common, check=False)
    assert refused.returncode == 1 and "not_grantable" in refused.stderr, refused
    cluster.admin().call("grant.add", {"ledger": "lab-credits", "kind": "transfer", "account": ADMIN})
    cluster.admin().call("grant.add", {"ledger": "lab-credits", "kind": "*", "account": ADMIN})
    mine = {"from": "r2-holder", "to": ADMIN, "amount": 1}
    assert cluster.client("r2-holder").put(entry("lab-credits", "transfer", mine, "r2-holder"))["height"] >= 3
    # `*` still closes the ledger's other kinds.
    assert (
        remote_error(cluster.client("r2-holder").put, entry("lab-credits", "note", {}, "r2-holder")).code
        == "not_granted"
    )
    for kind in ("transfer", "*"):
        cluster.admin().call("grant.revoke", {"ledger": "lab-credits", "kind": kind, "account": ADMIN})
    back = {"from": ADMIN, "to": "r2-holder", "amount": 2}
    assert cluster.admin().put(entry("lab-credits", "transfer", back, ADMIN))["height"] >= 4
    assert cluster.client("r2-holder").put(entry("lab-credits", "transfer", mine, "r2-holder"))["height"] >= 5
