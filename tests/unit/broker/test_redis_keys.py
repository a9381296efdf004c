"""Key names and hash slots (pure), then: every Lua script and MULTI of vledger touches keys of
one Redis Cluster slot, and the old layout migrates without losing a stream, on the real session Redis."""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from vledger.broker import redis_functions, replication
from vledger.broker.accounts import AccountRegistry
from vledger.broker.redis_keys import NAMESPACE, hash_slot, migrate, new_name
from vledger.broker.redis_pipeline import pipelined
from vledger.broker.replication import Alert, ReplicationLedger, StreamRecord
from vledger.broker.second_factor import ENROLL, SecondFactorStore
from vledger.broker.tallies import TallyBoard

LEDGER = "votes-2026"


def test_hash_slot_matches_redis_cluster() -> None:
    # The CRC16 check value, and the hash tag rules of the Redis Cluster specification.
    assert hash_slot("123456789") == 0x31C3 % 16384
    assert hash_slot("{user1000}.following") == hash_slot("{user1000}.followers") == hash_slot("user1000")
    assert hash_slot("foo{}{bar}") != hash_slot("bar")  # an empty tag: the whole key is hashed
    assert hash_slot("foo{{bar}}zap") == hash_slot("{bar")
    assert hash_slot(f"vledger:{{{LEDGER}}}:chain") == hash_slot(f"vledger:{{{LEDGER}}}:checkpoint")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("vledger:chain:votes", "vledger:{votes}:chain"),
        ("vledger:held:admin", "vledger:{admin}:held"),
        ("vledger:cosig:a.b", "vledger:{a.b}:cosig"),
        ("vledger:tallies:x", "vledger:{x}:tallies"),
        ("vledger:tally:latest:x", "vledger:{x}:tally:latest"),
        ("vledger:ledgers", "vledger:{ledgers}"),
        ("vledger:alerts", "vledger:{alerts}"),
        ("vledger:alerts:open", "vledger:{alerts}:open"),
        ("vledger:evidence", "vledger:{evidence}"),
        ("vledger:sweep:verifier-1", "vledger:{sweep}:verifier-1"),
        ("vledger:account:Alice@x", "vledger:{accounts}:account:Alice@x"),
        ("vledger:accounts:version", "vledger:{accounts}:version"),
        ("vledger:admin:records", "vledger:{accounts}:admin:records"),
        ("vledger:totp:failures:alice", "vledger:{totp}:failures:alice"),
        ("vledger:{votes}:chain", None),  # already tagged
        ("vledger:checkpoints", None),  # split, not renamed
        ("vledger:probe", None),
        ("other:chain:votes", None),
        ("vledger:chain:Bad{name}", None),
    ],
)
def test_new_names(old: str, new: str | None) -> None:
    assert new_name(old) == new


class _Recorder:
    """The real client, with every function call's keys and every transaction's keys written down."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: dict[str, list[list[str]]] = {}  # function name -> the key lists it was called with
        self.prefixes: dict[str, list[str]] = {}  # function name -> ARGV it builds key names from
        self.transactions: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def record(self, command: tuple[Any, ...]) -> None:
        """An FCALL / FCALL_RO (as redis_functions.command makes it): its function's keys and key prefixes."""
        if str(command[0]).upper() in ("FCALL", "FCALL_RO"):
            name, count = str(command[1]), int(command[2])
            self.calls.setdefault(name, []).append([str(k) for k in command[3 : 3 + count]])
            rest = (
                command[3 + count :] if str(command[0]).upper() == "FCALL_RO" else ()
            )  # a writer's ARGV names channels
            self.prefixes.setdefault(name, []).extend(str(a) for a in rest if str(a).startswith(NAMESPACE))

    def execute_command(self, *command: Any, **options: Any) -> Any:
        self.record(command)
        return self.client.execute_command(*command, **options)

    def pipeline(self, transaction: bool = True) -> Any:
        return _Pipe(self, self.client.pipeline(transaction=transaction), transaction)

    def pipelined(self, commands: list[Any], raise_on_error: bool = True) -> list[Any]:
        """redis_pipeline.pipelined through this recorder: each function call's keys written down."""
        for command in commands:
            self.record(command)
        return pipelined(self.client, commands, raise_on_error=raise_on_error)


class _Pipe:
    def __init__(self, recorder: _Recorder, pipe: Any, transaction: bool) -> None:
        self._recorder, self._pipe, self._transaction, self._keys = recorder, pipe, transaction, []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._pipe, name)
        if name == "execute_command":  # a function call in a pipeline (TallyBoard's reads)

            def execute_command(*command: Any) -> Any:
                self._recorder.record(command)
                return method(*command)

            return execute_command
        if name in ("execute", "publish"):  # a channel is no key
            if name == "execute" and self._transaction:
                self._recorder.transactions.append(self._keys)
            return method

        def queued(*args: Any, **kwargs: Any) -> Any:
            self._keys.append(str(args[0]))
            return method(*args, **kwargs)

        return queued


def _exercise(client: Any) -> None:
    """Every method of the Redis adapters that runs a script or a transaction, once or more."""
    repl = ReplicationLedger(client)
    repl.append(LEDGER, "ingest-1", 0, [b"r0", b"r1"], b"checkpoint 2")
    repl.append_checked(LEDGER, "ingest-1", 1, [b"other"])
    repl.rewind(LEDGER, 1)
    repl.advance("replica-1", LEDGER, 0)
    repl.set_held("replica-1", LEDGER, 0)
    repl.publish_cosignature(LEDGER, "replica-1", 1, b"note")
    repl.alert(Alert("replica-1", LEDGER, 1, "bad_link", "detail"))
    assert repl.resolve_up_to([f"replica-1|{LEDGER}|bad_link"], 1) == 1
    assert repl.checkpoints() == {LEDGER: b"checkpoint 2"}
    repl.add([StreamRecord("other", 0, b"x", "ingest-2")])
    assert repl.promote(LEDGER, 2, "ingest-2") is None  # the epochs and homes hashes, one script
    assert repl.unpromote(LEDGER, 2, "ingest-2", (1, "ingest-1"))  # and its undo (10.9 step 4)
    repl.publish_outside_cosignature(LEDGER, "witness.example/w1", 1, b"note")
    TallyBoard(client).publish(LEDGER, "observer-1", 1, b"body", b"s" * 64)
    registry = AccountRegistry(client)
    key = zmq.curve_keypair()[0].decode()
    registry.bootstrap_admin("root", key)
    registry.add_account("alice", "writer")
    registry.set_role("alice", "observer")
    other = zmq.curve_keypair()[0].decode()
    registry.add_key("alice", other)
    assert registry.lookup(other) is not None
    registry.revoke_key(other)
    registry.remove_account("alice")
    registry.push_admin_record(0, b"genesis")
    registry.record_applied("ingest-1", registry.version())
    registry.record_stopped("ingest-1")
    registry.record_alive("ingest-1")
    registry.rewrite_admin_records([b"genesis"])
    registry.admin_records_digest(0, 0)
    registry.repair_version()
    client.set("vledger:{accounts}:account:root", "spoiled")  # the repair touches an account's hash too
    assert registry.repair_account_types() == ["vledger:{accounts}:account:root"]
    registry.add_account("root", "admin")
    assert "root" in {a.name for a in registry.list_accounts()}
    factors = SecondFactorStore(client)
    factors.enroll("root", b"sealed", ("d1", "d2"), ENROLL)
    factors.use_step("root", b"sealed", 5)
    factors.failed("root", 60)
    factors.failures("root", 60)
    factors.forget("root")
    assert redis_functions.present(client)  # ping: no key


def test_every_script_and_transaction_touches_one_slot(redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(redis_client)
    monkeypatch.setattr(replication, "pipelined", lambda client, commands, **kw: client.pipelined(commands, **kw))
    _exercise(recorder)
    TallyBoard(recorder).latest(LEDGER, ["observer-1"])  # the reads' pipeline of tally_read
    TallyBoard(recorder).history(LEDGER, "observer-1")
    called = {name.rpartition(redis_functions.LIBRARY_NAME + "_")[2] for name in recorder.calls}
    assert called == set(redis_functions.FUNCTIONS), "a function of the library was never run"
    for name, calls in recorder.calls.items():
        for keys in calls:
            slots = {hash_slot(k) for k in keys} | {hash_slot(p + "x") for p in recorder.prefixes.get(name, [])}
            assert len(slots) == 1 or keys == [], f"keys {keys} of function {name} are in slots {slots}"
    assert recorder.transactions
    for keys in recorder.transactions:
        assert len({hash_slot(k) for k in keys}) == 1, f"a MULTI over {keys}"


def test_every_key_is_tagged(redis_client: Any) -> None:
    _exercise(redis_client)
    keys = sorted(k.decode() for k in redis_client.keys("*"))
    assert keys and all("{" in k and "}" in k for k in keys), keys


def test_migrate_moves_the_old_layout_and_loses_nothing(redis_client: Any) -> None:
    old = "vledger:chain:votes"
    redis_client.xadd(old, {"record": b"r0", "origin": "ingest-1"}, id="0-1")
    redis_client.xadd(old, {"record": b"r1", "origin": "ingest-1"}, id="1-1")
    redis_client.xgroup_create(old, "verifier", id="0")
    redis_client.hset("vledger:checkpoints", mapping={"votes": b"note 2", "zakat": b"note 7"})
    redis_client.hset("vledger:ledgers", mapping={"votes": "ingest-1", "zakat": "ingest-2"})
    redis_client.xadd("vledger:alerts", {"what": "bad_link"})
    redis_client.hset("vledger:alerts:open", "n|votes|bad_link", "{}")
    redis_client.set("vledger:accounts:version", 4)
    # A process of the new layout came first: the alerts stream exists under both names.
    redis_client.xadd("vledger:{alerts}", {"what": "fork"})
    redis_client.set("vledger:{accounts}:version", 2)

    done = migrate(redis_client)

    repl = ReplicationLedger(redis_client)
    assert [r.data for r in repl.read("votes", 0, 10)] == [b"r0", b"r1"]
    assert redis_client.xinfo_groups(repl.stream_key("votes"))[0]["name"] == b"verifier"
    assert repl.checkpoints() == {"votes": b"note 2", "zakat": b"note 7"}
    assert repl.open_alerts() == {"n|votes|bad_link": {}}
    assert AccountRegistry(redis_client).version() == 4
    assert done.kept == {"vledger:alerts": "vledger:{alerts}"}  # kept, not lost
    assert redis_client.xlen("vledger:alerts") == 1
    assert not redis_client.exists(old, "vledger:checkpoints", "vledger:ledgers", "vledger:accounts:version")
    assert migrate(redis_client).moved == {}  # again: nothing to do
