"""Redis access control on a real redis-server: each role's user may do its work and nothing more.

The server takes its users from the ACL file ``write_passwords`` makes (as ``vledger keygen
--cluster`` does); every client signs in the way the processes do (ClusterConfig.redis_access
-> connect). The refusals are Redis' own (NOPERM), raised by the same calls the nodes make.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import zmq

from vledger.broker import redis_acl, redis_functions
from vledger.broker.accounts import AccountRegistry
from vledger.broker.redis_server import RedisServer, connect, find_redis_server
from vledger.broker.replication import OPEN_ALERTS_CAP, RECENT_COSIGNATURES, REDIS_ERRORS, Alert, ReplicationLedger
from vledger.broker.second_factor import ENROLL, REPLACE, SecondFactorStore
from vledger.broker.tallies import TallyBoard
from vledger.config.cluster import RedisAccess
from vledger.node.errors import ApplyTimeoutError, SettingsError
from vledger.tools import cli

NOPERM = redis.exceptions.NoPermissionError
KEY_A, KEY_B = (zmq.curve_keypair()[0].decode() for _ in range(2))


# The cluster's nodes, each with a Redis user of its own; a test names a role for its first node.
NODES = {
    "ingest-1": "ingest",  # the admin ledger's home
    "ingest-2": "ingest",
    "replica-1": "replica",
    "replica-2": "replica",
    "observer-1": "observer",
    "observer-2": "observer",
    "verifier-1": "verifier",
}


# Who may home which ledger (PROTOCOL 10.9): ingest-1 is the default home (every ledger the
# file does not list); ``funds`` is ingest-2's and ``parish`` ingest-1's with ingest-2 its standby.
HOMES = {"funds": "ingest-2", "parish": "ingest-1"}
STANDBYS = {"parish": "ingest-2"}
WRITERS = redis_acl.checkpoint_writers("ingest-1", HOMES, STANDBYS)


def _node(role: str) -> str | None:
    return role if role in NODES else f"{role}-1" if role in redis_acl.NODE_ROLES else None


class AclServer:
    def __init__(self, server: RedisServer, passwords_dir: Path) -> None:
        self.server = server
        self.passwords_dir = passwords_dir
        self.clients: list[Any] = []

    def user(self, role: str) -> str:
        """The user of ``role``'s first node (``replica``: replica-1's), of a node named so, or of a service."""
        node = _node(role)
        return redis_acl.user_name(NODES[node], node) if node is not None else redis_acl.user_name(role)

    def access(self, role: str) -> RedisAccess:
        user = self.user(role)
        return RedisAccess(self.server.url, user, redis_acl.password_path(self.passwords_dir, user))

    def client(self, role: str) -> Any:
        client = connect(self.access(role), timeout=5.0)
        self.clients.append(client)
        return client

    def loader(self) -> Any:
        """A client of the loader user (redis_acl.LOADER_USER), as `vledger redis-functions` signs in."""
        path = redis_acl.password_path(self.passwords_dir, redis_acl.LOADER_USER)
        client = connect(RedisAccess(self.server.url, redis_acl.LOADER_USER, path), timeout=5.0)
        self.clients.append(client)
        return client

    def repl(self, role: str) -> ReplicationLedger:
        """A ReplicationLedger as that node's (or the service's) process makes it: alerts of its own name."""
        return ReplicationLedger(self.client(role), node=_node(role), raisers=sorted(NODES))


@pytest.fixture
def acl(short_tmp: Path, redis_server: RedisServer) -> Iterator[AclServer]:
    passwords = short_tmp / "keys" / "redis"
    written = redis_acl.write_passwords(passwords, NODES, admin_homes=("ingest-1",), checkpoints=WRITERS)
    admin = redis_acl.read_password(redis_acl.password_path(passwords, redis_acl.user_name("admin")))
    with RedisServer(
        short_tmp / "data", executable=find_redis_server(), acl_file=written["acl"], auth=("vledger-admin", admin)
    ) as server:
        served = AclServer(server, passwords)
        redis_functions.load(served.loader())  # as whatever starts the server loads it
        yield served
        for client in served.clients:
            client.close()


def test_password_files_and_the_acl_file_are_private_and_hold_no_password_twice(acl: AclServer) -> None:
    users = redis_acl.users(NODES)
    assert list(users) == [*(f"vledger-node-{node}" for node in sorted(NODES)), "vledger-gateway", "vledger-admin"]
    for user in users:
        path = redis_acl.password_path(acl.passwords_dir, user)
        assert os.stat(path).st_mode & 0o777 == 0o600
    acl_file = acl.passwords_dir / redis_acl.ACL_FILE
    assert os.stat(acl_file).st_mode & 0o777 == 0o600
    text = acl_file.read_text()
    passwords = set()
    for user in users:
        password = redis_acl.read_password(redis_acl.password_path(acl.passwords_dir, user))
        assert password not in text and redis_acl.password_digest(password) in text
        passwords.add(password)
    assert len(passwords) == len(users)  # one each: no node signs in as another


def test_without_a_password_or_with_a_wrong_one_nothing_is_served(acl: AclServer) -> None:
    anonymous = connect(acl.server.url, timeout=5.0)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get("vledger:{accounts}:version")
    anonymous.close()
    wrong = redis.Redis.from_url(acl.server.url, username="vledger-admin", password="guess", socket_timeout=5.0)
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
    wrong.close()


def test_what_scripts_wrote_outlives_a_restart(acl: AclServer) -> None:
    # Redis logs a script's writes as MULTI/EXEC in its append-only file and replays them as
    # the default user: one without rights would drop them all on the restart.
    AccountRegistry(acl.client("ingest")).add_account("alice", "writer")
    ReplicationLedger(acl.client("ingest")).append("votes", "ingest-1", 0, [b"r0", b"r1"])
    for client in acl.clients:
        client.close()
    acl.server.stop()
    acl.server.start()
    assert [a.name for a in AccountRegistry(acl.client("replica")).list_accounts()] == ["alice"]
    assert [r.data for r in ReplicationLedger(acl.client("replica")).read("votes", 0, 10)] == [b"r0", b"r1"]
    anonymous = connect(acl.server.url, timeout=5.0)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get("vledger:{accounts}:version")
    anonymous.close()


def test_a_password_file_readable_by_others_is_refused(acl: AclServer) -> None:
    path = redis_acl.password_path(acl.passwords_dir, acl.user("replica"))
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        connect(acl.access("replica"))


def test_a_replica_cannot_write_an_account_a_stream_a_home_or_a_checkpoint(acl: AclServer) -> None:
    AccountRegistry(acl.client("admin")).add_account("alice", "writer")
    replica = acl.client("replica")
    accounts = AccountRegistry(replica)
    assert [a.name for a in accounts.list_accounts()] == ["alice"]  # it reads them
    for change in (
        lambda: accounts.add_account("mallory", "admin"),
        lambda: accounts.set_role("alice", "admin"),
        lambda: accounts.add_key("alice", "R2+pIa[239DWD+Knx/=d1WCHVT{4rpdPc9]Ro4T?"),
    ):
        with pytest.raises(NOPERM):
            change()
    with pytest.raises(NOPERM):
        replica.hset("vledger:{accounts}:account:alice", "role", "admin")
    repl = ReplicationLedger(replica)
    with pytest.raises(NOPERM):
        repl.append("votes", "ingest-1", 0, [b"forged"])
    for write in (
        lambda: replica.hset("vledger:{ledgers}", "votes", "replica-1"),
        lambda: replica.hset("vledger:{votes}:checkpoint", "votes", b"x"),
        lambda: replica.xadd("vledger:{votes}:chain", {"record": b"x"}),
    ):
        with pytest.raises(NOPERM, match="key"):
            write()
    assert AccountRegistry(acl.client("admin")).list_accounts()[0].role == "writer"


def test_a_replica_cannot_write_an_account_or_a_grant_but_reads_both(acl: AclServer) -> None:
    # A grant reaches the nodes through the admin ledger's cache (PROTOCOL 16.4): its home
    # (an ingest node) appends the record there; no follower may add, change or drop one.
    home = AccountRegistry(acl.client("ingest"))
    home.add_account("alice", "writer")
    home.push_admin_record(0, b"admin genesis")
    home.push_admin_record(1, b"grant: alice may write votes")
    replica = acl.client("replica")
    accounts = AccountRegistry(replica)
    for change in (
        lambda: accounts.add_account("mallory", "writer"),
        lambda: accounts.remove_account("alice"),
        lambda: accounts.push_admin_record(2, b"grant: mallory may write votes"),
        lambda: replica.rpush("vledger:{accounts}:admin:records", b"grant: mallory"),
        lambda: replica.lset("vledger:{accounts}:admin:records", 1, b"grant: mallory"),
        lambda: replica.delete("vledger:{accounts}:admin:records"),
        lambda: replica.hset("vledger:{accounts}:account:mallory", "role", "writer"),
    ):
        with pytest.raises(NOPERM):
            change()
    assert accounts.admin_records() == [b"admin genesis", b"grant: alice may write votes"]
    assert [a.name for a in accounts.list_accounts()] == ["alice"]
    for role in ("observer", "verifier"):
        with pytest.raises(NOPERM):
            AccountRegistry(acl.client(role)).push_admin_record(2, b"grant: mallory may write votes")
        assert AccountRegistry(acl.client(role)).admin_size() == 2


def test_only_the_admin_ledger_s_home_writes_the_accounts(acl: AclServer) -> None:
    # F1 of outsider17: ingest-2's user bound its own key to the admin account in the key
    # owners' hash, and the admin ledger's home took it. Only that home carries out account
    # commands (PROTOCOL 16.3), so another ingest node's user reads the accounts, no more.
    home = AccountRegistry(acl.client("ingest-1"))
    home.bootstrap_admin("admin", KEY_A)
    home.push_admin_record(0, b"admin genesis")
    other_client = acl.client("ingest-2")
    other = AccountRegistry(other_client)
    for change in (
        lambda: other_client.hset("vledger:{accounts}:keys", KEY_B, "admin"),
        lambda: other_client.incr("vledger:{accounts}:version"),
        lambda: other_client.hset("vledger:{accounts}:account:admin", "enabled", "1"),
        lambda: other_client.sadd("vledger:{accounts}:names", "mallory"),
        lambda: other_client.delete("vledger:{accounts}:keys"),
        lambda: other_client.rpush("vledger:{accounts}:admin:records", b"grant: mallory"),
        lambda: other.add_key("admin", KEY_B),
        lambda: other.add_account("mallory", "admin"),
        lambda: other.revoke_key(KEY_A),
        lambda: other.push_admin_record(1, b"grant: mallory"),
        lambda: SecondFactorStore(other_client).recorded("admin"),
    ):
        with pytest.raises(NOPERM):
            change()
    assert other.lookup(KEY_B) is None and other.lookup(KEY_A) == ("admin", "admin", True)
    assert other.admin_records() == [b"admin genesis"]
    other.record_applied("ingest-2", other.version())  # its own report it writes
    # It still checks admins' codes, as any ingest node does (ledger.create goes to a ledger's home).
    SecondFactorStore(acl.client("admin")).enroll("admin", b"sealed secret", ("digest-1",), REPLACE)
    factors = SecondFactorStore(other_client)
    assert factors.use_step("admin", b"sealed secret", 7)
    assert factors.failed("admin", 900) == 1
    factors.succeeded("admin")
    assert factors.use_recovery("admin", "digest-1")


def test_the_admin_home_s_user_may_repair_a_garbage_version_and_records_key(acl: AclServer) -> None:
    """o9 K1/K1b: the repair resets the version (TIME, DEL, SET) and rewrites the list in
    scripts the home's user runs: a command its ACL lacks would leave the garbage in place."""
    home = AccountRegistry(acl.client("ingest-1"))
    home.bootstrap_admin("admin", KEY_A)
    insider = acl.client("admin")
    insider.set("vledger:{accounts}:version", "notanumber")
    insider.set(home.admin_records_key, "notalist")
    assert home.version() == -1 and home.admin_size() == -1
    reset = home.repair_version()
    assert reset is not None and reset > 1_000_000_000_000  # the Redis clock in ms, above any count
    assert home.rewrite_admin_records([b"admin genesis"]) == reset + 1
    assert home.admin_records() == [b"admin genesis"]
    insider.set("vledger:{accounts}:names", "notaset")  # k29: and the accounts' keys of another type
    insider.set("vledger:{accounts}:keys", "notahash")
    assert home.snapshot().spoiled == ("vledger:{accounts}:keys", "vledger:{accounts}:names")
    assert sorted(home.repair_account_types()) == ["vledger:{accounts}:keys", "vledger:{accounts}:names"]
    assert home.add_account("admin", "admin") > reset


def test_second_factors_are_the_ingest_nodes_and_the_admins_only(acl: AclServer) -> None:
    ingest = SecondFactorStore(acl.client("ingest"))
    ingest.enroll("root", b"sealed secret", ("digest-1", "digest-2"), ENROLL)
    assert ingest.state("root") == (b"sealed secret", -1)
    assert ingest.use_step("root", b"sealed secret", 7)
    assert ingest.failed("root", 900) == 1
    ingest.succeeded("root")
    assert ingest.use_recovery("root", "digest-1") and ingest.recovery_left("root") == 1
    assert ingest.forget("root")
    SecondFactorStore(acl.client("admin")).enroll("root", b"sealed again", ("digest-3",), REPLACE)
    assert ingest.unrecorded() == ["root"]
    for role in ("replica", "observer", "verifier"):
        other = SecondFactorStore(acl.client(role))
        with pytest.raises(NOPERM):
            other.state("root")
        with pytest.raises(NOPERM):
            other.use_step("root", b"sealed again", 9)
        with pytest.raises(NOPERM):
            other.enroll("mallory", b"x", (), REPLACE)


def test_an_ingest_node_s_second_factor_keys_leave_a_ledger_tagged_totp_alone(acl: AclServer) -> None:
    # Once ``{totp}:*``: a ledger named totp had its witnesses' keys writable by any ingest node.
    ingest = acl.client("ingest")
    for write in (
        lambda: ingest.set("vledger:{totp}:held:replica-1", 99),
        lambda: ingest.hset("vledger:{totp}:cosig", "replica-1", b"forged"),
        lambda: ingest.xadd("vledger:{totp}:tallies:observer-1", {"entry": b"forged"}),
        lambda: ingest.set("vledger:{totp}:tally:latest:observer-1", "1-0"),
    ):
        with pytest.raises(NOPERM, match="key"):
            write()
    assert SecondFactorStore(ingest).failed("root", 900) == 1  # its own second-factor keys it writes


def test_a_replica_does_its_own_work(acl: AclServer) -> None:
    ReplicationLedger(acl.client("ingest")).append("votes", "ingest-1", 0, [b"r0", b"r1"])
    repl = acl.repl("replica")
    replica = repl.client
    assert [r.data for r in repl.read("votes", 0, 10)] == [b"r0", b"r1"]
    assert repl.advance("replica-1", "votes", 1) == 1
    assert repl.ledgers() == {"votes": "ingest-1"}
    repl.alert(Alert(node="replica-1", ledger="votes", what="fork", height=1, detail="test"))
    assert list(repl.open_alerts()) == ["replica-1|votes|fork"]
    assert repl.open_alerts()["replica-1|votes|fork"]["raised_by"] == "replica-1"
    assert repl.resolve(["replica-1|votes|fork"]) == 1 and repl.open_alerts() == {}
    AccountRegistry(replica).record_applied("replica-1", 0)
    assert AccountRegistry(acl.client("admin")).applied(["replica-1", "replica-2"]) == {"replica-1": 0}


def test_no_node_says_another_applied_an_accounts_version(acl: AclServer) -> None:
    # F2 of outsider17: a replica's user set ingest-2's applied version in a shared hash, so a
    # revoke looked enforced on a node that had not applied it. Each node writes its own key.
    admin = AccountRegistry(acl.client("admin"))
    ingest = AccountRegistry(acl.client("ingest"))
    ingest.record_applied("ingest-1", 3)
    for role in ("replica", "observer", "verifier", "replica-2"):
        registry = AccountRegistry(acl.client(role))
        with pytest.raises(NOPERM):
            registry.record_applied("ingest-1", 99)
        with pytest.raises(NOPERM):
            registry.client.hset("vledger:{accounts}:applied:ingest-1", "version", 99)
        with pytest.raises(NOPERM):
            registry.client.hset("vledger:{accounts}:applied:ingest-1", "seen", 0)
        with pytest.raises(NOPERM):  # nor make a live one look stopped
            registry.record_stopped("ingest-1")
        registry.record_stopped(_node(role) or role)  # its own clean stop it says, with what it has
        registry.record_applied(_node(role) or role, 5)  # its own it writes
    for role in ("replica", "verifier"):
        with pytest.raises(NOPERM):
            AccountRegistry(acl.client(role)).record_applied("replica-2", 99)
    assert admin.applied(["ingest-1"]) == {"ingest-1": 3}
    with pytest.raises(ApplyTimeoutError, match="ingest-1 at 3"):
        admin.wait_applied(4, ["ingest-1", "replica-1"], 0.2)
    assert admin.wait_applied(3, ["ingest-1", "replica-1", "replica-2"], 1.0) == {
        "ingest-1": 3,
        "replica-1": 5,
        "replica-2": 5,
    }
    # A node can spoil only its own report, which then counts as none applied, and live: nothing
    # says it is down (o10 L1: read as down, a running node was left out of ``pending``).
    acl.client("ingest").set("vledger:{accounts}:applied:ingest-1", "junk")
    assert admin.applied(["ingest-1", "replica-1"]) == {"replica-1": 5}
    assert admin.live_nodes(["ingest-1", "replica-1"], within=60) == {"ingest-1", "replica-1"}


@pytest.mark.parametrize("role", ["ingest", "replica", "observer", "verifier"])
def test_a_node_replaces_its_own_applied_key_of_another_type_and_no_other(acl: AclServer, role: str) -> None:
    """o10 L1: the admin's user SET a node's applied key to a string; the node's reports (its
    start's too) failed on WRONGTYPE. Its scripts replace its own key, and DEL reaches no other."""
    node = _node(role) or role
    key = f"vledger:{{accounts}}:applied:{node}"
    admin = acl.client("admin")
    registry = AccountRegistry(acl.client(role))
    for report in (lambda: registry.record_applied(node, 4), lambda: registry.record_alive(node)):
        admin.delete(key)
        admin.set(key, "x")
        assert report() is True
        assert admin.type(key) == b"hash"
    admin.set(key, "x")
    assert registry.record_stopped(node) is True and admin.hget(key, "seen") == b"0"
    assert registry.record_applied(node, 5) is False  # a hash: nothing replaced
    other = "vledger:{accounts}:applied:replica-2" if node != "replica-2" else "vledger:{accounts}:applied:ingest-1"
    admin.set(other, "x")
    with pytest.raises(NOPERM):
        registry.client.delete(other)


@pytest.mark.parametrize("role", ["ingest", "replica", "observer", "verifier"])
def test_a_node_replaces_its_own_alert_keys_made_of_another_type_and_no_other(acl: AclServer, role: str) -> None:
    """review16 2: a node's own user can HDEL its open alerts and XADD to the key; every alert
    it raised then failed WRONGTYPE. It replaces its own key (DEL), and DEL reaches no other's,
    and one raiser's key of another type hides no other raiser's alerts from any reader."""
    repl = acl.repl(role)
    repl.client.xadd(repl.open_alerts_key, {"x": "y"})
    alert = Alert(node="x", ledger="votes", what="fork", height=1, detail="t")
    assert repl.alert(alert)
    assert acl.client("admin").type(repl.open_alerts_key) == b"hash"
    other = repl.open_alerts_key_of("replica-2" if repl.node != "replica-2" else "ingest-1")
    acl.client("admin").xadd(other, {"x": "y"})
    with pytest.raises(NOPERM):
        repl.client.delete(other)
    for reader in ("admin", "gateway", "verifier"):
        shown = acl.repl(reader).open_alerts()
        assert shown[alert.key]["raised_by"] == repl.node
        assert other.rpartition(":")[2] + "||alert_keys_damaged" in shown


def test_every_reader_may_read_a_raisers_open_hash_up_to_the_cap_and_reads_none_past_it(acl: AclServer) -> None:
    """review r24 F5: a node's own user filled its open hash with 1M fields, and every reader
    read them all; r25 F4: one sized by HLEN was read whole by HGETALL once grown in between.
    Each reader's user may HRANDFIELD it (else it falls back to HLEN, or to reading it whole)."""
    ingest = acl.repl("ingest")
    pipe = ingest.client.pipeline(transaction=False)
    for start in range(0, OPEN_ALERTS_CAP + 1, 5000):
        pipe.hset(
            ingest.open_alerts_key,
            mapping={f"x|{i}|lag": "{}" for i in range(start, min(OPEN_ALERTS_CAP + 1, start + 5000))},
        )
    pipe.execute()
    for reader in ("admin", "gateway", "verifier", "replica", "observer"):
        repl = acl.repl(reader)
        assert len(repl.client.hrandfield(ingest.open_alerts_key, 2, withvalues=True)) == 4
        assert f"{ingest.node}||alert_keys_damaged" in repl.open_alerts()


def test_the_users_that_write_a_shared_key_replace_it_made_of_another_type(acl: AclServer) -> None:
    """outsider 31 N1: {ledgers} made a string stalled every home's append; {alerts}:resolved
    made one failed every operator's resolution. Their writers' users may replace them (DEL)."""
    admin = acl.client("admin")
    home = ReplicationLedger(acl.client("ingest"))
    admin.set(home.ledgers_key, "x")
    home.append("votes", "ingest-1", 0, [b"r0"])
    home.client.delete(home.ledgers_key)
    home.client.set(home.ledgers_key, "x")
    home.name_homes(["votes"], "ingest-1")
    assert ReplicationLedger(admin).ledgers() == {"votes": "ingest-1"}
    alert = Alert(node="x", ledger="votes", what="fork", height=1, detail="t")
    acl.repl("replica").alert(alert)
    admin.set(home.resolved_alerts_key, "x")
    assert ReplicationLedger(admin, raisers=sorted(NODES)).resolve_as_operator([alert.key]) == 1
    assert admin.type(home.resolved_alerts_key) == b"hash"
    verifier = acl.client("verifier")
    for key in ("vledger:{sweep}:verifier-1", "vledger:{sweep}:verifier-2"):
        admin.set(key, "x")
    assert verifier.delete("vledger:{sweep}:verifier-1") == 1  # its own sweep key, replaced
    with pytest.raises(NOPERM):
        verifier.delete("vledger:{sweep}:verifier-2")


@pytest.mark.parametrize("damaged", ["epochs", "ledgers", "both"])
def test_a_standby_promoted_replaces_a_homes_or_epochs_hash_made_of_another_type(acl: AclServer, damaged: str) -> None:
    """review17 2: any ingest user may SET {ledgers}:epochs (or {ledgers}), and the promotion's
    script failed WRONGTYPE: no standby could take over. Its user replaces the key and names
    itself, and only that: the epoch it names is the one it asked for, no other entry is made up."""
    insider = ReplicationLedger(acl.client("ingest-2"))
    insider.promote("other", 2, "ingest-2")
    keys = {"epochs": [insider.epochs_key], "ledgers": [insider.ledgers_key]}
    for key in keys.get(damaged, [insider.epochs_key, insider.ledgers_key]):
        insider.client.delete(key)
        insider.client.set(key, "x")
    standby = ReplicationLedger(acl.client("ingest"))
    assert standby.promote("parish", 2, "ingest-1") is None
    admin = ReplicationLedger(acl.client("admin"))
    assert admin.epochs()["parish"] == (2, "ingest-1") and admin.ledgers()["parish"] == "ingest-1"
    assert ("other" in admin.epochs()) == (damaged == "ledgers")  # a claim gone with the string: the notes prove it
    assert standby.promote("parish", 2, "ingest-2") == (2, "ingest-1")  # one winner per epoch, as before


def test_witnesses_cosign_and_the_home_reads_their_cosignatures(acl: AclServer) -> None:
    home = ReplicationLedger(acl.client("ingest"), raisers=sorted(NODES))
    home.append("votes", "ingest-1", 0, [b"r0", b"r1"], checkpoint=b"home note")
    listener = acl.client("ingest").pubsub(ignore_subscribe_messages=True)
    listener.subscribe(home.cosigned_channel)
    for role in ("replica", "observer"):
        witness = acl.repl(role)
        assert witness.checkpoints() == {"votes": b"home note"}
        witness.publish_cosignature("votes", f"{role}-1", 2, b"cosigned note")
        witness.keep_evidence(f"{role}-1", "votes", 2, {"note": "other"})
        assert isinstance(witness.set_checkpoints({"votes": b"forged"})["votes"], NOPERM)
    assert home.cosignatures("votes") == {"replica-1": b"cosigned note", "observer-1": b"cosigned note"}
    # and their recent notes (a list each: the outside feeder's, PROTOCOL 13.9), behind the newest
    assert home.recent_cosignatures("votes", ["replica-1", "observer-1", "replica-2"]) == {
        "replica-1": [b"cosigned note", b"cosigned note"],
        "observer-1": [b"cosigned note", b"cosigned note"],
    }
    assert ReplicationLedger(acl.client("admin")).evidence() == {
        f"{role}-1|votes|2": {"note": "other"} for role in ("replica", "observer")
    }
    heard = []
    deadline = time.monotonic() + 5.0
    while len(heard) < 2 and time.monotonic() < deadline:
        message = listener.get_message(timeout=0.5)
        if message is not None:
            heard.append(message["data"])
    listener.close()
    assert heard == [b"replica-1 votes 2", b"observer-1 votes 2"]
    assert ReplicationLedger(acl.client("verifier")).checkpoints() == {"votes": b"home note"}
    # What may prove a handover to the verifier (10.9): the latest note and the witnesses' ones.
    assert sorted(ReplicationLedger(acl.client("verifier"), raisers=sorted(NODES)).epoch_notes("votes")) == [
        b"cosigned note",
        b"cosigned note",
        b"home note",
    ]
    with pytest.raises(NOPERM):
        ReplicationLedger(acl.client("verifier")).publish_cosignature("votes", "verifier-1", 2, b"x")
    with pytest.raises(NOPERM):
        ReplicationLedger(acl.client("ingest")).publish_cosignature("votes", "ingest-1", 2, b"x")
    # The new home keeps its epoch's witnessed note where no witness's user writes (10.9);
    # the verifier reads it with the rest, and a witness may neither replace nor delete it.
    home.keep_epoch_proof("votes", b"kept proof")
    assert sorted(ReplicationLedger(acl.client("verifier"), raisers=sorted(NODES)).epoch_notes("votes")) == [
        b"cosigned note",
        b"cosigned note",
        b"home note",
        b"kept proof",
    ]
    for role in ("replica", "observer", "verifier"):
        with pytest.raises(NOPERM):
            acl.repl(role).keep_epoch_proof("votes", b"forged")
        with pytest.raises(NOPERM):
            acl.client(role).delete(home.epoch_proof_key("votes"))
    assert home.epoch_proof("votes") == b"kept proof"


def test_only_the_nodes_that_may_home_a_ledger_write_its_checkpoint_and_epoch_proof(acl: AclServer) -> None:
    # ingest-2 homes ``funds`` and stands by for ``parish``: it writes theirs, not ``votes``'s,
    # whose home is the default one. So it can neither roll ``votes``'s latest checkpoint back
    # to an older signed one nor delete it or its epoch proof; it still reads them.
    default_home = ReplicationLedger(acl.client("ingest-1"), raisers=sorted(NODES))
    other = ReplicationLedger(acl.client("ingest-2"), raisers=sorted(NODES))
    for ledger in ("votes", "funds", "parish"):
        default_home.append(ledger, "ingest-1", 0, [b"r0", b"r1"], checkpoint=b"note 2")
        default_home.keep_epoch_proof(ledger, b"proof")
    refused = other.set_checkpoints({"votes": b"note 1", "funds": b"note 3"})  # one refused, the other set
    assert list(refused) == ["votes"] and isinstance(refused["votes"], NOPERM)
    assert other.checkpoints()["funds"] == b"note 3"
    with pytest.raises(NOPERM):
        other.keep_epoch_proof("votes", b"older proof")
    for key in (other.checkpoint_key("votes"), other.epoch_proof_key("votes")):
        with pytest.raises(NOPERM):
            other.client.delete(key)
        with pytest.raises(NOPERM):
            other.client.set(key, b"x")
    with pytest.raises(NOPERM):  # nor by the append's script, which sets the checkpoint
        other.append("votes", "ingest-2", 2, [b"r2"], checkpoint=b"note 3")
    assert other.epoch_notes("votes") == [b"note 2", b"proof"]
    assert default_home.last_height("votes") == 1
    for ledger in ("funds", "parish"):
        assert other.append(ledger, "ingest-2", 2, [b"r2"], checkpoint=b"note 3") == 2
        other.keep_epoch_proof(ledger, b"newer proof")
        assert other.epoch_notes(ledger) == [b"note 3", b"newer proof"]
        with pytest.raises(NOPERM):  # SET only: no user but the admin's deletes them
            other.client.delete(other.checkpoint_key(ledger))
    default_home.set_checkpoints({"funds": b"note 4"})  # the default home writes every ledger's
    assert other.checkpoints()["funds"] == b"note 4"


def test_only_an_observer_publishes_tallies(acl: AclServer) -> None:
    TallyBoard(acl.client("observer")).publish("votes", "observer-1", 3, b"body", bytes(64))
    for role in ("replica", "verifier", "ingest"):
        board = TallyBoard(acl.client(role))
        for name in ("observer-1", _node(role) or ""):  # neither in an observer's keys nor in its own name
            with pytest.raises(NOPERM):
                board.publish("votes", name, 4, b"forged", bytes(64))
    assert [p.height for p in TallyBoard(acl.client("admin")).history("votes", "observer-1")] == [3]


def test_an_observer_reads_back_its_own_latest_tally_id_and_no_other_observer_s(acl: AclServer) -> None:
    # PROTOCOL 11.1's look every latest_check_ms: refused, it was taken for "none" (outsider 21, F7).
    board = TallyBoard(acl.client("observer-1"))
    entry = board.publish("votes", "observer-1", 3, b"body", bytes(64))
    assert board.latest_ids(["votes"], ["observer-1"]) == {"votes": {"observer-1": entry}}
    TallyBoard(acl.client("observer-2")).publish("votes", "observer-2", 3, b"body", bytes(64))
    with pytest.raises(NOPERM):  # raised, never taken for "none published"
        board.latest_ids(["votes"], ["observer-2"])


def test_the_admin_home_reads_the_observers_tallies_and_no_other_ingest_node_does(acl: AclServer) -> None:
    # An observer's rotation states what its replaced key had tallied, read by the admin home (16.6).
    TallyBoard(acl.client("observer")).publish("votes", "observer-1", 3, b"body", bytes(64))
    found = TallyBoard(acl.client("ingest-1")).latest_entry("votes", "observer-1")
    assert found is not None and found.height == 3
    with pytest.raises(NOPERM):  # raised, never taken for "no tally"
        TallyBoard(acl.client("ingest-2")).latest_entry("votes", "observer-1")
    with pytest.raises(NOPERM):  # read only
        TallyBoard(acl.client("ingest-1")).publish("votes", "observer-1", 4, b"forged", bytes(64))


def test_the_verifier_reads_every_observer_s_tallies_and_writes_none(acl: AclServer) -> None:
    # Observers that disagree are its alert (PROTOCOL 11.4), not only vledger tally's (outsider 21, F6).
    entry = TallyBoard(acl.client("observer")).publish("votes", "observer-1", 3, b"body", bytes(64))
    board = TallyBoard(acl.client("verifier"))
    found = board.latest_entry("votes", "observer-1")
    assert found is not None and found.entry_id == entry
    assert [p.height for p in board.history("votes", "observer-1")] == [3]
    with pytest.raises(NOPERM):
        acl.client("verifier").set(board.latest_key("votes", "observer-1"), entry)


def test_an_observer_cannot_point_back_trim_or_add_to_another_observer_s_tallies(acl: AclServer) -> None:
    """The hole one observers' stream and latest hash per ledger left: an observer's user,
    broken into, could point another's latest at its older signed snapshot, or trim the stream.
    Now it writes keys of its own name only, and each of them with one command only."""
    victim = TallyBoard(acl.client("observer-2"))
    older = victim.publish("votes", "observer-2", 3, b"older body", bytes(64))
    newer = victim.publish("votes", "observer-2", 5, b"newer body", bytes(64))
    intruder = TallyBoard(acl.client("observer-1"))
    client = intruder.client
    stream, latest = intruder.stream_key("votes", "observer-2"), intruder.latest_key("votes", "observer-2")
    forged = {"height": "9", "body": b"forged", "signature": bytes(64)}
    for write in (
        lambda: client.set(latest, older),  # its latest back at its older snapshot
        lambda: intruder.publish("votes", "observer-2", 9, b"forged", bytes(64)),
        lambda: client.xadd(stream, forged),
        lambda: client.xadd(stream, forged, maxlen=0),  # a trim rides on XADD: refused with it
        lambda: client.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, latest, older),
        lambda: client.set("vledger:{votes}:tally:latest", older),  # the older layout's keys: the admin's
        lambda: client.xadd("vledger:{votes}:tallies", forged),
        # Its own keys take one command each: none makes them of a type every reader's XRANGE fails on.
        lambda: client.hset(intruder.stream_key("votes", "observer-1"), "height", "9"),
        lambda: client.set(intruder.stream_key("votes", "observer-1"), "x"),
        lambda: client.xadd(intruder.latest_key("votes", "observer-1"), forged),
        lambda: client.hset(intruder.latest_key("votes", "observer-1"), "observer-2", older),
    ):
        with pytest.raises(NOPERM):
            write()
    for command in (("DEL", stream), ("XTRIM", stream, "MAXLEN", "0"), ("XDEL", stream, older), ("DEL", latest)):
        with pytest.raises(NOPERM):
            client.execute_command(*command)
    intruder.publish("votes", "observer-1", 4, b"its own", bytes(64))  # its own keys it writes
    # and deletes its own stream, which the admin's user could make a string (wt31: XADD MAXLEN 0 emptied it already)
    acl.client("admin").set(intruder.stream_key("votes", "observer-1"), "x")
    assert client.delete(intruder.stream_key("votes", "observer-1")) == 1
    intruder.publish("votes", "observer-1", 4, b"its own", bytes(64))
    for reader in ("admin", "gateway"):
        board = TallyBoard(acl.client(reader), scripts=reader != "gateway")  # its user runs no script
        shown = board.latest("votes", ["observer-1", "observer-2"])
        assert {name: (p.height, p.body) for name, p in shown.items() if p is not None} == {
            "observer-1": (4, b"its own"),
            "observer-2": (5, b"newer body"),
        }
        assert [(p.entry_id, p.height) for p in board.history("votes", "observer-2")] == [(newer, 5), (older, 3)]
        assert board.latest_ids(["votes"], ["observer-1", "observer-2"])["votes"]["observer-2"] == newer


def test_the_gateway_reads_what_it_shows_and_cannot_write_anything(acl: AclServer) -> None:
    home = acl.repl("ingest")
    home.append("votes", "ingest-1", 0, [b"r0", b"r1"], checkpoint=b"home note")
    home.advance("ingest-1", "votes", 1)
    home.alert(Alert(node="ingest-1", ledger="votes", what="fork", height=1, detail="test"))
    ReplicationLedger(acl.client("replica")).publish_cosignature("votes", "replica-1", 2, b"cosigned note")
    TallyBoard(acl.client("observer")).publish("votes", "observer-1", 3, b"body", bytes(64))
    AccountRegistry(acl.client("admin")).add_account("alice", "writer")
    SecondFactorStore(acl.client("ingest")).enroll("root", b"sealed secret", ("digest-1",), ENROLL)
    gateway = acl.client("gateway")
    # Everything verifier/gateway.py reads from Redis, through the same calls.
    board = TallyBoard(gateway, scripts=False)
    assert [p.height for p in board.history("votes", "observer-1")] == [3]
    published = board.latest("votes", ["observer-1", "observer-2"])["observer-1"]
    assert published is not None and published.height == 3
    # the live page's poll of the latest tallies
    assert list(board.latest_ids(["votes"], ["observer-1", "observer-2"])["votes"]) == ["observer-1"]
    repl = ReplicationLedger(gateway, raisers=sorted(NODES))
    assert repl.cosignatures("votes") == {"replica-1": b"cosigned note"}
    assert repl.held("votes") == {"ingest-1": 1}
    assert repl.ledgers() == {"votes": "ingest-1"}
    assert list(repl.open_alerts()) == ["ingest-1|votes|fork"]
    gateway.ping()
    for write in (
        lambda: board.publish("votes", "observer-1", 4, b"forged", bytes(64)),
        lambda: repl.publish_cosignature("votes", "replica-1", 3, b"forged"),
        lambda: repl.advance("ingest-1", "votes", 9),
        lambda: repl.alert(Alert(node="ingest-1", ledger="votes", what="fork", height=2, detail="forged")),
        lambda: repl.resolve(["ingest-1|votes|fork"]),
        lambda: gateway.set(board.latest_key("votes", "observer-1"), "0-1"),
        lambda: gateway.xadd(board.stream_key("votes", "observer-1"), {"body": b"forged"}),
        lambda: gateway.hset("vledger:tally:latest:votes", "observer-1", "0-1"),
        lambda: gateway.xadd("vledger:tallies:votes", {"body": b"forged"}),
        lambda: gateway.hset("vledger:held:votes", "ingest-1", 9),
        lambda: gateway.hset("vledger:ledgers", "votes", "mallory"),
        lambda: gateway.delete("vledger:cosig:votes"),
        lambda: gateway.publish("vledger:held", "ingest-1 votes 9"),
        lambda: gateway.eval("return redis.call('del', KEYS[1])", 1, "vledger:ledgers"),
        lambda: AccountRegistry(gateway).add_account("mallory", "admin"),
    ):
        with pytest.raises(NOPERM):
            write()
    # Nor does it read what it does not show: accounts, second factors, the chains' streams.
    for read in (
        lambda: gateway.hgetall("vledger:account:alice"),
        lambda: SecondFactorStore(gateway).state("root"),
        lambda: ReplicationLedger(gateway).read("votes", 0, 10),
        lambda: ReplicationLedger(gateway).checkpoints(),
    ):
        with pytest.raises(NOPERM):
            read()
    assert ReplicationLedger(acl.client("admin")).held("votes") == {"ingest-1": 1}
    assert [p.height for p in TallyBoard(acl.client("admin")).history("votes", "observer-1")] == [3]


def test_the_verifier_reads_through_its_group_but_cannot_add_to_a_stream(acl: AclServer) -> None:
    ReplicationLedger(acl.client("ingest")).append("votes", "ingest-1", 0, [b"r0"])
    verifier = acl.client("verifier")
    verifier.xgroup_create("vledger:{votes}:chain", "verifier", id="0", mkstream=True)
    replies = verifier.xreadgroup("verifier", "verifier-1", {"vledger:{votes}:chain": ">"}, count=10)
    ((_, entries),) = replies
    assert verifier.xack("vledger:{votes}:chain", "verifier", entries[0][0]) == 1
    verifier.hset("vledger:{sweep}:verifier-1", "votes", "0")
    with pytest.raises(NOPERM, match="key"):
        verifier.hset("vledger:{sweep}:verifier-2", "votes", "0")  # another verifier's sweeps
    # The stream keys that exist, whatever {ledgers} lists (PROTOCOL 10.6).
    assert "vledger:{votes}:chain" in {k.decode() for k in verifier.scan_iter(match="vledger:{*}:chain")}
    # Its own evidence (a signed fork's two notes, PROTOCOL 10.5), and no other node's.
    ReplicationLedger(verifier, node="verifier-1").keep_evidence("verifier-1", "votes", 3, {"checkpoint": "x"})
    with pytest.raises(NOPERM, match="key"):
        verifier.hset("vledger:{evidence}:replica-1", "verifier-1|votes|3", "{}")
    with pytest.raises(NOPERM):
        verifier.xadd("vledger:{votes}:chain", {"record": b"x"})
    with pytest.raises(NOPERM):
        ReplicationLedger(verifier).advance("verifier-1", "votes", 9)
    with pytest.raises(NOPERM):
        AccountRegistry(verifier).add_account("mallory", "admin")


def test_an_ingest_node_writes_streams_and_carries_out_account_changes(acl: AclServer) -> None:
    ingest = acl.client("ingest")
    repl = ReplicationLedger(ingest)
    assert repl.append("votes", "ingest-1", 0, [b"r0", b"r1"]) == 1
    assert repl.rewind("votes", 1) == 1
    # A standby names itself the home of a new epoch, and undoes it when its handover fails (10.9).
    assert repl.promote("votes", 2, "ingest-2") is None
    assert repl.unpromote("votes", 2, "ingest-2", (1, "ingest-1")) and "votes" not in repl.epochs()
    # An ingest node carries out the admin's account commands (it checks the caller itself).
    accounts = AccountRegistry(ingest)
    accounts.add_account("alice", "writer")
    accounts.set_role("alice", "observer")
    accounts.remove_account("alice")
    assert AccountRegistry(acl.client("admin")).list_accounts() == []
    with pytest.raises(NOPERM):
        TallyBoard(ingest).publish("votes", "observer-1", 4, b"forged", bytes(64))


@pytest.mark.parametrize("role", redis_acl.ROLES)
def test_no_role_may_flush_configure_or_list_keys(acl: AclServer, role: str) -> None:
    client = acl.client(role)
    for command in (
        ("FLUSHALL",),
        ("CONFIG", "SET", "appendonly", "no"),
        ("KEYS", "*"),
        ("ACL", "LIST"),
        ("FLUSHDB",),
        ("SCRIPT", "FLUSH"),
    ):
        with pytest.raises(NOPERM):
            client.execute_command(*command)
    with pytest.raises(NOPERM):
        client.set("elsewhere:key", "x")  # no key outside the namespace


@pytest.mark.parametrize("role", ["replica", "observer", "ingest", "verifier", "gateway"])
def test_only_the_admin_notes_an_operator_s_resolution_which_the_verifier_reads(acl: AclServer, role: str) -> None:
    """No user but the admin's notes the resolution the verifier asks for before it lets an
    alert of another raiser go, nor deletes that raiser's alert (its keys are its own)."""
    alert = Alert(
        node="replica-2", ledger="votes", what="equivocation", height=3, detail="two roots", source="ingest-1"
    )
    raised = acl.repl("replica-2").alert(alert)
    user = acl.repl(role)
    with pytest.raises(NOPERM, match="command" if role == "gateway" else "key"):
        user.client.hset(user.resolved_alerts_key, alert.key, raised)
    if role != "gateway":
        assert user.resolve([alert.key]) == 0  # its own open alerts hold no such key
        with pytest.raises(NOPERM, match="key"):
            user.client.hdel(user.open_alerts_key_of("replica-2"), alert.key)
    verifier = acl.repl("verifier")
    assert verifier.operator_resolved([("replica-2", alert.key)]) == {}
    assert verifier.open_alerts()[alert.key]["raised_by"] == "replica-2"
    admin = ReplicationLedger(acl.client("admin"))
    latest = admin.open_alerts()[alert.key]["id"]
    assert admin.resolve_as_operator([alert.key]) == 1 and admin.open_alerts() == {}
    assert verifier.operator_resolved([("replica-2", alert.key)]) == {("replica-2", alert.key): latest}


@pytest.mark.parametrize("role", ["replica", "observer", "ingest", "verifier"])
def test_a_node_cannot_silence_forge_or_trim_another_node_s_alerts_or_evidence(acl: AclServer, role: str) -> None:
    """The hole per-role users left (PROTOCOL 10.5): a node's user, broken into, cannot delete
    or overwrite another node's open alert, add to or trim its stream, nor write its evidence;
    what it writes in its own keys is shown as raised by it, whatever node the alert names."""
    victim = acl.repl("replica-2")
    alert = Alert(node="replica-2", ledger="votes", what="equivocation", height=3, detail="two roots")
    raised = victim.alert(alert)
    victim.keep_evidence("replica-2", "votes", 4, {"checkpoint": "the home's note"})
    victim.publish_cosignature("votes", "replica-2", 4, b"replica-2's cosigned note")
    intruder = acl.repl(role)
    client = intruder.client
    stream, open_hash = intruder.alerts_key_of("replica-2"), intruder.open_alerts_key_of("replica-2")
    evidence = intruder.evidence_key_of("replica-2")
    forged = {"node": "replica-2", "ledger": "votes", "what": "fork", "height": "0", "detail": "forged"}
    for write in (
        lambda: client.hdel(open_hash, alert.key),
        lambda: client.hset(open_hash, alert.key, '{"what": "nothing"}'),
        lambda: client.hset(open_hash, "replica-2|votes|fork", '{"what": "fork"}'),
        lambda: client.xadd(stream, forged),
        lambda: client.xadd(stream, forged, maxlen=0),  # a trim rides on XADD: refused with it
        lambda: client.xadd(intruder.alerts_key_of(None), forged, maxlen=0),  # the shared stream is the admin's
        lambda: client.hset(intruder.open_alerts_key_of(None), "replica-2|votes|fork", "{}"),
        lambda: client.hset(evidence, "replica-2|votes|4", "{}"),
        lambda: client.hdel(evidence, "replica-2|votes|4"),
        lambda: client.hset(intruder.evidence_key_of(None), "replica-2|votes|4", "{}"),
        lambda: intruder.advance("replica-2", "votes", 99),  # another node's held height
        lambda: client.set(intruder.held_key("votes", "replica-2"), "99"),
        lambda: client.set(intruder.cosig_key("votes", "replica-2"), "x"),  # another witness's cosignature
        lambda: client.lpush(intruder.cosig_recent_key("votes", "replica-2"), "x"),  # and its recent ones
        lambda: client.ltrim(intruder.cosig_recent_key("votes", "replica-2"), 0, 0),
    ):
        # (LPUSH and LTRIM: no ingest node's or verifier's command at all)
        list_commands = "|'lpush' command|'ltrim' command"
        with pytest.raises(NOPERM, match=("key|'set' command" if role == "verifier" else "key") + list_commands):
            write()
    with pytest.raises(NOPERM):
        client.delete(intruder.cosig_key("votes", "replica-2"))
    with pytest.raises(NOPERM):
        client.delete(intruder.cosig_recent_key("votes", "replica-2"))
    assert intruder.recent_cosignatures("votes", ["replica-2"]) == {"replica-2": [b"replica-2's cosigned note"] * 2}
    assert intruder.cosignatures("votes") == {"replica-2": b"replica-2's cosigned note"}  # read, untouched
    assert victim.advance("replica-2", "votes", 5) == 5
    if role != "verifier":  # a node that holds copies says how far, in its own key
        assert intruder.advance(intruder.node or "", "votes", 7) == 7
    assert acl.repl("verifier").held("votes") == {"replica-2": 5, **({} if role == "verifier" else {intruder.node: 7})}
    # It raises in another's name only in its own keys, and that shows: raised by it.
    intruder.alert(Alert(node="replica-2", ledger="votes", what="fork", height=0, detail="forged"))
    if role in ("replica", "observer"):  # a witness keeps evidence, of its own name only
        intruder.keep_evidence("replica-2", "votes", 9, {"checkpoint": "forged"})
    reader = ReplicationLedger(acl.client("admin"))
    shown = reader.open_alerts()
    assert shown[alert.key]["id"] == raised and shown[alert.key]["raised_by"] == "replica-2"
    assert shown["replica-2|votes|fork"]["raised_by"] == acl.user(role).removeprefix("vledger-node-")
    assert [(a["what"], a["raised_by"]) for a in reader.alerts()] == [
        ("equivocation", "replica-2"),
        ("fork", acl.user(role).removeprefix("vledger-node-")),
    ]
    assert reader.evidence() == {"replica-2|votes|4": {"checkpoint": "the home's note"}}  # not a field of its name
    assert acl.repl("verifier").open_alerts().keys() == shown.keys()  # a node reads every raiser's
    assert ReplicationLedger(acl.client("gateway"), raisers=sorted(NODES)).open_alerts().keys() == shown.keys()


def _cluster_file(acl: AclServer, directory: Path) -> Path:
    """A cluster file of NODES on ``acl``'s server, whose ``vledger`` commands sign in as the admin's user."""
    nodes = "".join(
        f'[nodes.{name}]\nrole = "{role}"\nport = {7400 + 3 * i}\n'
        + (f"pub_port = {7401 + 3 * i}\n" if role in ("ingest", "replica") else "")
        for i, (name, role) in enumerate(sorted(NODES.items()))
    )
    path = directory / "cluster.toml"
    path.write_text(
        f'[cluster]\nredis = "{acl.server.url}"\ndefault_home = "ingest-1"\n'
        f'[redis]\npasswords = "{acl.passwords_dir}"\n{nodes}'
    )
    return path


def test_a_node_s_alert_under_the_verifier_s_key_hides_rewrites_and_closes_nothing_of_it(
    acl: AclServer, short_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outsider o16 2 and 3: with ingest-2's password only, an alert under the verifier's key in
    ingest-2's own keys, with a later stream id and "nothing to do", was all `vledger status`,
    `verify --cluster` and the gateway showed of the verifier's (no raiser named), and `vledger
    alerts` marked the verifier's closed. Each raiser's alert is its own entry, named by it."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    verifier = acl.repl("verifier")
    found = Alert("redis", "poll", 0, "unlisted_ledger", "deleted from it by a Redis user", source="ingest-1")
    raised = verifier.alert(found)
    intruder = acl.client("ingest-2")
    benign = {**found.fields(), "detail": "benign: archived by the operator on purpose; nothing to do"}
    later = intruder.xadd(verifier.alerts_key_of("ingest-2"), benign).decode()
    intruder.hset(verifier.open_alerts_key_of("ingest-2"), found.key, json.dumps({**benign, "id": later}))
    both = [("ingest-2", later, benign["detail"]), ("verifier-1", raised, found.detail)]
    for reader in ("admin", "gateway", "verifier", "replica"):
        shown = ReplicationLedger(acl.client(reader), raisers=sorted(NODES)).open_entries()
        assert [(e["raised_by"], e["id"], e["detail"]) for e in shown] == both
        assert {e["key"] for e in shown} == {found.key}
    config = str(_cluster_file(acl, short_tmp))
    assert cli.main(["verify", "--cluster", config]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert f"  {found.key}  height 0 [raised by verifier-1]: {found.detail}\n" in out
    assert f"  {found.key}  height 0 [raised by ingest-2]: {benign['detail']}\n" in out
    assert cli.main(["verify", "--cluster", config, "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)["open_alerts"]
    assert [(e["key"], e["raised_by"], e["detail"]) for e in listed] == [(found.key, r, d) for r, _, d in both]
    assert cli.main(["alerts", "--config", config, "--json"]) == 0
    marked = [(a["raised_by"], a["id"], a["open"]) for a in json.loads(capsys.readouterr().out)["alerts"]]
    assert marked == [("verifier-1", raised, True), ("ingest-2", later, True)]  # by id: the verifier's first
    # Only the raiser (or the operator) closes its own: ingest-2 resolving closes ingest-2's alone.
    assert ReplicationLedger(intruder, node="ingest-2").resolve([found.key]) == 1
    assert [(e["raised_by"], e["detail"]) for e in verifier.open_entries()] == [("verifier-1", found.detail)]
    assert cli.main(["alerts", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[raised, "open"], [later, "closed"]]


def test_only_the_nodes_that_may_home_a_ledger_write_its_outside_cosignatures(acl: AclServer) -> None:
    # Outsider o20 F4: any ingest node's user overwrote any ledger's outside witnesses' notes
    # (PROTOCOL 13.9: only the home's user writes them), as the checkpoint keys are kept.
    default_home, other = acl.repl("ingest-1"), acl.repl("ingest-2")
    for ledger in ("votes", "funds", "parish"):
        default_home.publish_outside_cosignature(ledger, "w.example/w1", 2, b"note 2")
    with pytest.raises(NOPERM):
        other.publish_outside_cosignature("votes", "w.example/w1", 1, b"junk")
    for write in (lambda: other.client.delete(other.outside_key("votes")),
                  lambda: other.client.hdel(other.outside_key("votes"), "w.example/w1")):  # fmt: skip
        with pytest.raises(NOPERM):
            write()
    assert other.outside_cosignatures("votes") == {"w.example/w1": b"note 2"}  # it still reads them
    for ledger in ("funds", "parish"):  # its own, and the one it stands by for
        other.publish_outside_cosignature(ledger, "w.example/w1", 3, b"note 3")
        assert default_home.outside_cosignatures(ledger) == {"w.example/w1": b"note 3"}
    acl.client("admin").set(other.outside_key("funds"), b"not a hash")  # replaced by its home
    other.publish_outside_cosignature("funds", "w.example/w1", 4, b"note 4")
    assert other.outside_cosignatures("funds") == {"w.example/w1": b"note 4"}
    with pytest.raises(NOPERM):
        acl.client("replica").hset(other.outside_key("funds"), "w.example/w1", b"junk")


# --- Lua: the functions library alone (outsider o18 F2) -------------------------------------

_LOOP = "redis.call('set', 'vledger:{loop}:x', 1) while true do end"  # a write, then no end: unkillable
_EVIL_LIBRARY = "#!lua name=evil\nredis.register_function('evil', function() while true do end end)"
_SCRIPT_COMMANDS = (
    ("EVAL", _LOOP, 0),
    ("EVAL_RO", "while true do end", 0),
    ("EVALSHA", "0" * 40, 0),
    ("EVALSHA_RO", "0" * 40, 0),
    ("SCRIPT", "LOAD", _LOOP),
    ("SCRIPT", "EXISTS", "0" * 40),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "LOAD", _EVIL_LIBRARY),
    ("FUNCTION", "LOAD", "REPLACE", _EVIL_LIBRARY),
    ("FUNCTION", "DELETE", redis_functions.LIBRARY_NAME),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "RESTORE", b"\x00"),
)


def test_no_user_but_the_loader_may_send_a_script_or_load_or_drop_a_library(acl: AclServer) -> None:
    """Every node's user, the gateway's and the admin's: no EVAL, EVALSHA, SCRIPT or FUNCTION
    LOAD / DELETE / FLUSH / RESTORE; Redis refuses each (NOPERM) before it runs anything. The
    loader may load, list and delete libraries, nothing else."""
    roles = [*NODES, "gateway", "admin"]
    for role in roles:
        client = acl.client(role)
        for command in _SCRIPT_COMMANDS:
            with pytest.raises(NOPERM):
                client.execute_command(*command)
    assert redis_functions.present(acl.client("admin"))  # the library is still there
    # The loader loads and lists libraries, and may do nothing else: no key, no script, no call.
    loader = acl.loader()
    redis_functions.load(loader)
    assert redis_functions.loaded(loader)
    for command in (("GET", "vledger:{accounts}:version"), ("SET", "k", "v"), ("EVAL", "return 1", 0)):
        with pytest.raises(NOPERM):
            loader.execute_command(*command)
    with pytest.raises(NOPERM):
        loader.execute_command(*redis_functions.command("ping", [], []))
    with pytest.raises(NOPERM):
        loader.execute_command("FUNCTION", "FLUSH")
    # It may delete one library (a foreign one claiming our function names, review r31), as it may
    # load any: its password is the Redis host's (README).
    loader.execute_command("FUNCTION", "DELETE", redis_functions.LIBRARY_NAME)
    assert not redis_functions.present(acl.client("admin"))


def test_a_node_password_cannot_make_redis_run_a_loop_for_everyone(acl: AclServer) -> None:
    """o18 F2: the least-privileged node's password ran ``EVAL 'while true do end'`` and Redis
    answered BUSY to everyone until a restart. Now the script is refused, and a function of
    the library given a count or a range far past what it reads fails at once."""
    replica = acl.client("replica")
    with pytest.raises(NOPERM):
        replica.execute_command("EVAL", _LOOP, 0)
    with pytest.raises(NOPERM):
        replica.execute_command("FUNCTION", "LOAD", _EVIL_LIBRARY)
    stream, records = "vledger:{votes}:tallies:observer-1", "vledger:{accounts}:admin:records"
    verifier = acl.client("verifier")
    for name, keys, args, what in (
        ("tally_read", [stream], ["XRANGE", "-", "+", 10**9, 4096], "count out of range"),
        ("tally_read", [stream], ["XRANGE", "-", "+", 10, 10**12], "byte budget out of range"),
        ("tally_read", [stream], ["KEYS", "*", "+", 10, 4096], "XRANGE or XREVRANGE"),
        ("admin_records_digest", [records], ["0", str(10**9)], "last index out of range"),
    ):
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ResponseError, match=what):
            verifier.execute_command(*redis_functions.command(name, keys, args))
        assert time.monotonic() - started < 1.0
    ingest = acl.client("ingest")
    with pytest.raises(redis.exceptions.ResponseError, match="first height out of range"):
        ingest.execute_command(*redis_functions.command("append", ["vledger:{votes}:chain"], ["x", 10, "i", ""]))
    assert acl.client("admin").ping()  # never BUSY


def test_a_node_waits_for_a_library_redis_lost_and_goes_on_once_the_loader_loaded_it(
    acl: AclServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarted without its data (a new server): a node's call says, in its error and its
    log, that the library is missing and who loads it, and records nothing (a ResponseError: the
    replication paths retry it as Redis refusing); the same client goes on once it is loaded."""
    repl = acl.repl("ingest")
    repl.append("votes", "ingest-1", 0, [b"r0"])
    for client in acl.clients:
        client.close()
    acl.server.stop()
    for path in (acl.server.directory).iterdir():  # its data lost; the ACL file is the host's
        if path.name != "redis.log":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    acl.server.start()
    repl = acl.repl("ingest")
    monkeypatch.setattr(redis_functions, "_warned_at", [-1e9])  # its warning not held back by an earlier one
    missing_error = pytest.raises(redis_functions.FunctionsMissingError, match=redis_functions.LIBRARY_NAME)
    with caplog.at_level(logging.WARNING, logger="vledger.broker.redis_functions"), missing_error as missing:
        repl.append("votes", "ingest-1", 0, [b"r0"])
    assert isinstance(missing.value, REDIS_ERRORS) and "vledger redis-functions" in str(missing.value)
    assert any(redis_functions.LIBRARY_NAME in r.getMessage() for r in caplog.records)
    assert repl.read("votes", 0, 10) == []
    with pytest.raises(redis_functions.FunctionsMissingError):
        AccountRegistry(acl.client("replica")).snapshot()
    redis_functions.load(acl.loader())
    assert repl.append("votes", "ingest-1", 0, [b"r0"]) == 0
    assert AccountRegistry(acl.client("replica")).list_accounts() == []


def test_two_versions_of_the_library_live_side_by_side(acl: AclServer) -> None:
    """A rolling upgrade: the library of another code version (another digest) is loaded beside
    this one's; each node calls the functions of its own, and neither replaces the other."""
    other_version = "0" * 16
    other = redis_functions.LIBRARY_FILE.read_text().replace("@VERSION@", other_version)
    loader = acl.loader()
    loader.execute_command("FUNCTION", "LOAD", other)
    assert {redis_functions.LIBRARY_NAME, f"vledger_{other_version}"} <= set(redis_functions.libraries(loader))
    node = acl.client("replica")
    assert node.execute_command("FCALL_RO", f"vledger_{other_version}_ping", 0) == other_version.encode()
    assert node.execute_command(*redis_functions.command("ping", [], [])) == redis_functions.VERSION.encode()
    repl = acl.repl("ingest")
    assert repl.append("votes", "ingest-1", 0, [b"r0", b"r1"]) == 1
    assert redis_functions.loaded(loader)


def test_the_loader_user_replaces_a_library_of_its_name_that_another_loaded(
    acl: AclServer,
    short_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """o22 F1: with the loader's password, one replaced the library by code of the same name
    (FUNCTION LOAD REPLACE: an ACL cannot forbid the argument) and `--keep` left it there. The
    loader, as its own user, reads the loaded code and loads its own again, saying so loudly."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    loader = acl.loader()
    tampered = redis_functions.LIBRARY + "-- o22 tampered\n"
    loader.execute_command("FUNCTION", "LOAD", "REPLACE", tampered)
    assert redis_functions.loaded_code(loader) == tampered
    assert not redis_functions.loaded(loader)
    assert redis_functions.ensure(loader) == "replaced"
    assert redis_functions.loaded_code(loader) == redis_functions.LIBRARY
    assert redis_functions.ensure(loader) == "kept"
    # `vledger redis-functions` (no --keep) as the loader user, signed in from the cluster file.
    config = str(_cluster_file(acl, short_tmp))
    loader.execute_command("FUNCTION", "LOAD", "REPLACE", tampered)
    with caplog.at_level(logging.ERROR, logger="vledger.broker.redis_functions"):
        assert cli.main(["redis-functions", "--config", config]) == 0
    assert capsys.readouterr().out == f"replaced {redis_functions.LIBRARY_NAME}\n"
    assert any("tampered" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert redis_functions.loaded(loader)
    assert cli.main(["redis-functions", "--config", config]) == 0
    assert capsys.readouterr().out == f"kept {redis_functions.LIBRARY_NAME}\n"


def test_prune_deletes_every_other_version_s_library_which_a_node_could_still_call(
    acl: AclServer, short_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """review r31 #5: after an upgrade the old version's library stays, and every node's user may
    FCALL its functions (an ACL cannot name a function), so a bug fixed since stays usable.
    `vledger redis-functions --prune` deletes every vledger_* library but its own version's."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    loader = acl.loader()
    old_version = "0123456789abcdef"
    old = redis_functions._SOURCE.replace("@VERSION@", old_version)
    loader.execute_command("FUNCTION", "LOAD", "REPLACE", old)
    ingest = acl.client("ingest")
    assert ingest.execute_command("FCALL_RO", f"vledger_{old_version}_ping", 0) == old_version.encode()
    config = str(_cluster_file(acl, short_tmp))
    assert cli.main(["redis-functions", "--config", config, "--prune"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [f"deleted vledger_{old_version}"]
    assert redis_functions.libraries(loader) == [redis_functions.LIBRARY_NAME]
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)function not found"):
        ingest.execute_command("FCALL_RO", f"vledger_{old_version}_ping", 0)
    assert acl.repl("ingest").append("votes", "ingest-1", 0, [b"r0"]) == 0  # this version's still there
    # --prune runs once, not beside --keep: a usage error (exit 2), nothing done.
    assert cli.main(["redis-functions", "--config", config, "--prune", "--keep"]) == 2


_READ_LOOP_LIBRARY = (
    "#!lua name=o22loop\n"
    "redis.register_function{function_name='o22loop', callback=function() while true do end end, flags={'no-writes'}}"
)


def test_the_admin_may_kill_a_function_that_loops_without_writing(acl: AclServer) -> None:
    """An operator's way out of a read-only loop (one the loader's password loaded): the admin's
    user may run FUNCTION KILL and SCRIPT KILL, which Redis refuses for a function that wrote, so
    nothing half-done can be left behind. No other user may, and no node's user may kill."""
    acl.loader().execute_command("FUNCTION", "LOAD", "REPLACE", _READ_LOOP_LIBRARY)
    admin = acl.client("admin")
    with pytest.raises(redis.exceptions.ResponseError, match="NOTBUSY"):
        admin.execute_command("SCRIPT", "KILL")
    for role in [*NODES, "gateway"]:
        for command in (("FUNCTION", "KILL"), ("SCRIPT", "KILL")):
            with pytest.raises(NOPERM):
                acl.client(role).execute_command(*command)
    caller = acl.client("replica")
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            caller.execute_command("FCALL_RO", "o22loop", 0)
        except redis.exceptions.RedisError as e:
            outcome.append(e)

    looping = threading.Thread(target=call, daemon=True)
    looping.start()
    deadline = time.monotonic() + 20  # Redis answers BUSY once the function ran past busy-reply-threshold (5 s)
    while True:
        try:
            admin.ping()
        except redis.exceptions.TimeoutError:
            pass  # queued behind the function until it ran past the threshold
        except redis.exceptions.ResponseError as e:
            assert "BUSY" in str(e)
            break
        assert time.monotonic() < deadline, "Redis never answered BUSY"
        time.sleep(0.1)
    assert admin.execute_command("FUNCTION", "KILL") in (b"OK", "OK", True)
    looping.join(10)
    assert not looping.is_alive() and outcome and "killed" in str(outcome[0]).lower()
    assert admin.ping()


@pytest.mark.parametrize("role", ["replica", "observer"])
def test_a_witness_keeps_its_few_newest_cosignatures_and_replaces_a_damaged_list(acl: AclServer, role: str) -> None:
    """A witness's recent notes (ReplicationLedger.publish_cosignature, PROTOCOL 13.9): pushed
    with its newest, RECENT_COSIGNATURES kept; made a string by the admin's user, the list is
    replaced at its next note (its own user may DEL it) and the note is set all the same."""
    witness, node = acl.repl(role), f"{role}-1"
    for size in range(1, RECENT_COSIGNATURES + 3):
        witness.publish_cosignature("votes", node, size, b"note %d" % size)
    newest = RECENT_COSIGNATURES + 2
    expected = [b"note %d" % size for size in range(newest, 2, -1)]
    assert witness.recent_cosignatures("votes", [node]) == {node: [b"note %d" % newest, *expected]}
    acl.client("admin").set(witness.cosig_recent_key("votes", node), "junk")
    assert witness.recent_cosignatures("votes", [node]) == {node: [b"note %d" % newest]}  # junk reads as none
    witness.publish_cosignature("votes", node, newest + 1, b"next")
    assert witness.recent_cosignatures("votes", [node]) == {node: [b"next", b"next"]}
    witness.publish_cosignature("votes", node, newest + 2, b"quiet", recent=False)  # no outside witness
    assert witness.recent_cosignatures("votes", [node]) == {node: [b"quiet", b"next"]}


def test_under_a_redis_acl_from_before_the_recent_lists_a_witness_still_publishes_its_newest(
    short_tmp: Path, redis_server: RedisServer
) -> None:
    """Redis discards a whole MULTI one of whose commands the user may not run: under a redis.acl
    written before ``{*}:cosig:<node>:recent``, every cosignature of a ledger with outside
    witnesses would have stayed unpublished (no ``w``, no handover proof) until the file was
    written anew. The newest note goes alone."""
    passwords = short_tmp / "keys" / "redis"
    written = redis_acl.write_passwords(passwords, NODES, admin_homes=("ingest-1",), checkpoints=WRITERS)
    text = Path(written["acl"]).read_text()
    before = text.replace(" (+lpush +ltrim +del ~vledger:{*}:cosig:replica-1:recent)", "")
    assert before != text
    Path(written["acl"]).write_text(before)
    admin = redis_acl.read_password(redis_acl.password_path(passwords, redis_acl.user_name("admin")))
    with RedisServer(
        short_tmp / "data", executable=find_redis_server(), acl_file=written["acl"], auth=("vledger-admin", admin)
    ) as server:
        served = AclServer(server, passwords)
        try:
            witness = served.repl("replica")
            witness.publish_cosignature("votes", "replica-1", 2, b"cosigned note")
            witness.publish_cosignature("votes", "replica-1", 3, b"newer note")
            assert served.repl("ingest").cosignatures("votes") == {"replica-1": b"newer note"}
            assert served.repl("ingest").recent_cosignatures("votes", ["replica-1"]) == {"replica-1": [b"newer note"]}
        finally:
            for client in served.clients:
                client.close()
