"""The parts of ``vledger repair`` that need no cluster: which checkpoint a quorum vouches for,
that a copy refuses a record that does not verify or a tree that is not the checkpoint's, that a
store holding the checkpoint is recognised, and what is carried over from the old store."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.alert_journal import ALERT_JOURNAL, AlertJournal
from vledger.broker.node_lock import NODE_LOCK, node_lock
from vledger.broker.replication import STORE_DAMAGED, Alert, ReplicationLedger
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.config.settings import Limits
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.errors import RepairRefusedError
from vledger.node.ledger import LedgerRules
from vledger.node.note import origin_for
from vledger.node.record import Content, Entry, Record
from vledger.node.store import DB_NAME, ChainStore
from vledger.node.tree import Frontier, leaf_hash
from vledger.node.witness import HomeSigner, SignedCheckpoint, WitnessSigner, witness_key, witness_name
from vledger.tools import repair as repair_module
from vledger.tools.progress import Progress
from vledger.tools.repair import (
    LedgerRepair,
    already_holds,
    carry_checkpoints,
    cmd_repair,
    copy_ledger,
    default_quorum,
    ledgers_of,
    quorum_checkpoint,
    refused_at_start,
    repair_lock,
)

LIMITS = Limits()
CLUSTER, LEDGER = "test", "votes"
HOME = HomeSigner(CLUSTER, bytes(range(32)))
LOG_KEY = HOME.key(LEDGER).verifier()
WITNESSES = {f"replica-{i}": WitnessSigner(witness_name(CLUSTER, f"replica-{i}"), bytes([i]) * 32) for i in (1, 2, 3)}
WITNESS_KEYS = {name: witness_key(w.name, w.key.public_key) for name, w in WITNESSES.items()}


def _chain(directory: Path, records: int) -> list[Record]:
    with ChainStore(directory, origin="ingest-1") as store:
        rules = LedgerRules(kinds=("note",), difficulty=0, rules={"checkpoint_key": LOG_KEY.encode()})
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS))
        for i in range(1, records):
            store.append(Entry.prepare(Content(LEDGER, "note", {"n": i}, "admin", f"r{i}", 1), 0, LIMITS))
        return list(store.range(LEDGER))


def _root(records: list[Record]) -> bytes:
    frontier = Frontier()
    for record in records:
        frontier.append(leaf_hash(record.encode()))
    return frontier.root()


def _target(records: list[Record]) -> LedgerRepair:
    return LedgerRepair(LEDGER, "ingest-1", len(records), _root(records), (), "replica-2", b"")


def _cosigned(size: int, root: bytes, *names: str) -> list[bytes]:
    checkpoint = HOME.sign(LEDGER, size, root)
    return [WITNESSES[name].cosign(checkpoint, 1_790_000_000) for name in names] or [checkpoint.note]


def _home_and_replica(tmp_path: Path, replica: str, port: int) -> ClusterConfig:
    """A cluster file of ingest-1 and ``replica`` (on ``port``), in ``tmp_path``."""
    return cluster_from_mapping(
        {
            "cluster": {"name": CLUSTER, "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 7001, "pub_port": 7101},
                replica: {"role": "replica", "port": port},
            },
        },
        tmp_path / "cluster.toml",
    )


def test_the_quorum_checkpoint_is_the_largest_a_quorum_cosigned(tmp_path: Path) -> None:
    records = _chain(tmp_path / "a", 8)
    notes = [
        *_cosigned(5, _root(records[:5]), "replica-1", "replica-2"),
        *_cosigned(8, _root(records), "replica-1"),  # newer, but one cosignature only
    ]
    origin = origin_for(CLUSTER, LEDGER)
    assert default_quorum(len(WITNESS_KEYS)) == 2
    chosen = quorum_checkpoint(LEDGER, notes, LOG_KEY, origin, WITNESS_KEYS, 2)
    assert chosen.checkpoint.size == 5
    assert quorum_checkpoint(LEDGER, notes, LOG_KEY, origin, WITNESS_KEYS, 1).checkpoint.size == 8
    with pytest.raises(RepairRefusedError, match="no checkpoint cosigned by a quorum of 3"):
        quorum_checkpoint(LEDGER, notes, LOG_KEY, origin, WITNESS_KEYS, 3)
    # A cosignature by a key the cluster does not know counts for nothing.
    stranger = WitnessSigner(witness_name(CLUSTER, "replica-2"), b"\x09" * 32)
    forged = stranger.cosign(HOME.sign(LEDGER, 8, _root(records)), 1)
    assert quorum_checkpoint(LEDGER, [*notes, forged], LOG_KEY, origin, WITNESS_KEYS, 2).checkpoint.size == 5


def test_a_copy_refuses_a_record_that_does_not_verify_and_a_tree_that_is_not_the_checkpoint_s(
    tmp_path: Path,
) -> None:
    records = _chain(tmp_path / "source", 6)
    target = _target(records)
    with ChainStore(tmp_path / "good") as store:
        copy_ledger(
            store, iter((r.encode(), r) for r in records), target, LOG_KEY, CLUSTER, Progress("", enabled=False)
        )
        assert store.size(LEDGER) == 6 and store.root(LEDGER, 6) == target.root

    other = _chain(tmp_path / "other", 7)[1:6]  # a chain of its own: links that do not follow
    broken = [records[0], *other]
    with ChainStore(tmp_path / "bad") as store, pytest.raises(RepairRefusedError, match="does not verify"):
        copy_ledger(store, iter((r.encode(), r) for r in broken), target, LOG_KEY, CLUSTER, Progress("", enabled=False))

    wrong = LedgerRepair(LEDGER, "ingest-1", 6, b"\x00" * 32, (), "replica-2", b"")
    with ChainStore(tmp_path / "wrong") as store, pytest.raises(RepairRefusedError, match="do not make"):
        copy_ledger(store, iter((r.encode(), r) for r in records), wrong, LOG_KEY, CLUSTER, Progress("", enabled=False))


def test_a_store_that_holds_the_checkpoint_is_recognised_read_only(tmp_path: Path) -> None:
    records = _chain(tmp_path / "store", 9)
    assert already_holds(tmp_path / "store", [_target(records[:5])])
    assert not already_holds(tmp_path / "store", [LedgerRepair(LEDGER, "h", 5, b"\x01" * 32, (), "s", b"")])
    assert not already_holds(tmp_path / "store", [_target([*records, records[0]])])  # longer than it holds
    assert not already_holds(tmp_path / "missing", [_target(records)])


@pytest.mark.parametrize("kind", ["signed", "cosigned"])
def test_a_store_whose_own_checkpoint_row_its_records_contradict_is_not_held(tmp_path: Path, kind: str) -> None:
    """Its records make the quorum checkpoint, but it keeps a forged row of what it signed (or
    cosigned) that they contradict: its node refuses the ledger at start
    [store_contradicts_checkpoint], and repair said "nothing to repair" without --force."""
    records = _chain(tmp_path / "store", 9)
    target = _target(records[:5])

    def note(signed: SignedCheckpoint) -> bytes:  # a cosigned row's note carries the witness's line
        return WITNESSES["replica-1"].cosign(signed, 1) if kind == "cosigned" else signed.note

    with ChainStore(tmp_path / "store") as store:
        honest = HOME.sign(LEDGER, 7, _root(records[:7]))
        store.checkpoints.keep(LEDGER, kind, 7, honest.root, note(honest))
    assert already_holds(tmp_path / "store", [target])  # its own rows hold too
    with ChainStore(tmp_path / "store") as store:
        forged = HOME.sign(LEDGER, 8, b"\x07" * 32)
        store.checkpoints.keep(LEDGER, kind, 8, forged.root, note(forged))
    assert not already_holds(tmp_path / "store", [target])
    with ChainStore(tmp_path / "store") as store:
        past = HOME.sign(LEDGER, 12, b"\x08" * 32)  # more records than it holds
        store.checkpoints.keep(LEDGER, kind, 12, past.root, note(past))
    assert not already_holds(tmp_path / "store", [target])


def test_evidence_and_the_checkpoints_the_new_copy_proves_are_carried_over(tmp_path: Path) -> None:
    records = _chain(tmp_path / "old", 9)
    with ChainStore(tmp_path / "old") as old:
        proven = HOME.sign(LEDGER, 5, old.root(LEDGER, 5))
        beyond = HOME.sign(LEDGER, 9, old.root(LEDGER, 9))
        evidence = HOME.sign(LEDGER, 4, b"\x07" * 32)
        old.checkpoints.keep(LEDGER, "signed", 5, proven.root, proven.note)
        old.checkpoints.keep(LEDGER, "signed", 9, beyond.root, beyond.note)  # past what the copy holds
        old.checkpoints.keep(LEDGER, "evidence", 4, evidence.root, evidence.note)
    with ChainStore(tmp_path / "new") as new:
        copy_ledger(
            new,
            iter((r.encode(), r) for r in records[:6]),
            _target(records[:6]),
            LOG_KEY,
            CLUSTER,
            Progress("", enabled=False),
        )
        assert carry_checkpoints(tmp_path / "old", new, {LEDGER: [LOG_KEY]}, CLUSTER) == 2
        assert [c.size for c in new.checkpoints.all(LEDGER, "signed")] == [5]
        assert [c.note for c in new.checkpoints.all(LEDGER, "evidence")] == [evidence.note]


def test_cosignatures_of_every_epoch_s_key_are_carried_over(tmp_path: Path) -> None:
    # After a handover (10.9) a witness's newest cosignature is of the new home's checkpoint, signed
    # by another key: left behind, the rebuilt witness republished an older epoch's (outsider 21, F5).
    standby = HomeSigner(CLUSTER, bytes(range(1, 33)))
    records = _chain(tmp_path / "old", 9)
    with ChainStore(tmp_path / "old") as old:
        first = HOME.sign(LEDGER, 5, old.root(LEDGER, 5))
        second = standby.sign(LEDGER, 7, old.root(LEDGER, 7))
        stranger = HomeSigner(CLUSTER, bytes(range(2, 34))).sign(LEDGER, 6, old.root(LEDGER, 6))
        for kept in (first, second, stranger):  # a cosigned row's note carries the witness's line
            old.checkpoints.keep(LEDGER, "cosigned", kept.size, kept.root, WITNESSES["replica-1"].cosign(kept, 1))
    with ChainStore(tmp_path / "new") as new:
        copy_ledger(
            new, iter((r.encode(), r) for r in records), _target(records), LOG_KEY, CLUSTER, Progress("", enabled=False)
        )
        keys = {LEDGER: [LOG_KEY, standby.key(LEDGER).verifier()]}
        assert carry_checkpoints(tmp_path / "old", new, keys, CLUSTER) == 2  # no key of the ledger signed the third
        assert [c.size for c in new.checkpoints.all(LEDGER, "cosigned")] == [5, 7]


def test_a_handed_over_ledger_is_rebuilt_under_epoch_2_and_never_under_a_fenced_checkpoint(tmp_path: Path) -> None:
    """PROTOCOL 10.9: after a promotion the quorum checkpoint is the standby's, signed with its
    pinned key and the epoch line; the records fetched under it decide its epoch, and the old
    home's checkpoint of a tree past the handover (a fenced home's) rebuilds nothing."""
    standby = HomeSigner(CLUSTER, bytes(range(1, 33)))
    standby_key = standby.key(LEDGER).verifier()
    rules = {"checkpoint_key": LOG_KEY.encode(), "standby_key": standby_key.encode()}
    with ChainStore(tmp_path / "source", origin="ingest-1") as store:
        genesis = LedgerRules(kinds=(EPOCH_KIND, "note"), difficulty=0, rules=rules).genesis_content(
            LEDGER, "a", "g", 1
        )
        store.create_ledger(Entry.prepare(genesis, 0, LIMITS))
        store.append(Entry.prepare(Content(LEDGER, "note", {"n": 1}, "admin", "r1", 1), 0, LIMITS))
        head = store.head(LEDGER)
        assert head is not None
        handover = Content(LEDGER, EPOCH_KIND, epoch_payload(2, "ingest-2", standby_key), "a", "epoch-2", 2)
        store.append_record(Entry.prepare(handover, 0, LIMITS).place(2, head.link, 2, "ingest-2"))
        records = list(store.range(LEDGER))
    root = _root(records)
    epoch_2 = standby.sign(LEDGER, 3, root, ("vledger-epoch 2 ingest-2",)).note
    good = LedgerRepair(LEDGER, "ingest-2", 3, root, (), "replica-2", epoch_2)
    with ChainStore(tmp_path / "good") as store:
        copy_ledger(
            store, iter((r.encode(), r) for r in records), good, standby_key, CLUSTER, Progress("", enabled=False)
        )
        assert store.size(LEDGER) == 3
    fenced = LedgerRepair(LEDGER, "ingest-1", 3, root, (), "replica-2", HOME.sign(LEDGER, 3, root).note)
    with ChainStore(tmp_path / "fenced") as store, pytest.raises(RepairRefusedError, match="fenced"):
        copy_ledger(
            store, iter((r.encode(), r) for r in records), fenced, LOG_KEY, CLUSTER, Progress("", enabled=False)
        )
    # The home to rebuild from is the one Redis announces after the handover; the standby holds it too.
    config = cluster_from_mapping(
        {
            "cluster": {"name": CLUSTER, "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 7001, "pub_port": 7101},
                "ingest-2": {"role": "ingest", "port": 7002, "pub_port": 7102},
                "replica-1": {"role": "replica", "port": 7011},  # a standby's epoch needs a witness (10.9)
            },
            "ledgers": {LEDGER: {"home": "ingest-1", "standby": "ingest-2"}},
        },
        tmp_path / "cluster.toml",
    )
    assert ledgers_of(config, "ingest-2", {LEDGER: "ingest-2"}, set()) == {LEDGER: "ingest-2"}
    assert ledgers_of(config, "ingest-1", {LEDGER: "ingest-2"}, set()) == {LEDGER: "ingest-2"}
    # A stream found while {ledgers} is of another type names no home (wt31): the cluster file's.
    assert ledgers_of(config, "replica-1", {LEDGER: ""}, set()) == {LEDGER: "ingest-1"}


def test_a_home_redis_alone_names_is_not_taken_and_the_repair_says_so(tmp_path: Path) -> None:
    """outsider43 M1: any ingest node's Redis user may HSET {ledgers} L ingest-2; repair took
    ingest-2 for L's home, checked its checkpoints with ingest-2's key and refused ("no
    checkpoint cosigned by a quorum"). The cluster file's home (or its standby) is taken, and
    the repair notes what Redis claimed; an ingest node Redis alone names holds nothing of it."""
    config = cluster_from_mapping(
        {
            "cluster": {"name": CLUSTER, "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 7001, "pub_port": 7101},
                "ingest-2": {"role": "ingest", "port": 7002, "pub_port": 7102},
                "ingest-3": {"role": "ingest", "port": 7003, "pub_port": 7103},
                "replica-1": {"role": "replica", "port": 7011},
            },
            "ledgers": {LEDGER: {"home": "ingest-1", "standby": "ingest-2"}},
        },
        tmp_path / "cluster.toml",
    )
    said: list[str] = []
    announced = {LEDGER: "ingest-3", "other": "ingest-2"}
    assert ledgers_of(config, "replica-1", announced, set(), said) == {LEDGER: "ingest-1", "other": "ingest-1"}
    assert len(said) == 2 and said[1].startswith(f"{LEDGER}: Redis (vledger:{{ledgers}}) names ingest-3 its home")
    assert ledgers_of(config, "ingest-3", announced, set()) == {}  # not its to hold
    assert ledgers_of(config, "ingest-2", announced, set()) == {LEDGER: "ingest-1"}  # its standby


def test_a_repair_removes_what_an_interrupted_one_left_and_refuses_to_run_twice(tmp_path: Path) -> None:
    """Outsider 21, F8: a repair killed mid-copy left its full scratch copy for good, one a run."""
    store = tmp_path / "replica-3"
    store.mkdir()
    left = tmp_path / "replica-3.repair-20261206T154900Z"
    (left / "chain.sqlite3").parent.mkdir()
    (left / "chain.sqlite3").write_bytes(b"half a copy")
    kept = [tmp_path / name for name in ("replica-3.broken-20261206T154900Z", "replica-30.repair-20261206T154900Z",
                                          "replica-3.repair-notes")]  # fmt: skip
    for path in kept:
        path.mkdir()
    with repair_lock(store) as cleared:
        assert cleared == [left] and not left.exists()
        assert all(path.exists() for path in kept) and store.exists()
        with pytest.raises(RepairRefusedError, match="another repair of replica-3 is under way"), repair_lock(store):
            pass
    with repair_lock(store) as cleared:  # released with its run
        assert cleared == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["replica-3", *(p.name for p in kept)])  # no lock file


def test_a_swap_cut_short_leaves_the_verified_copy_alone_and_says_how_to_finish_it(tmp_path: Path) -> None:
    """Reviewer r6: killed between its two renames, a repair leaves no store, the old one at
    .broken-<stamp> and the verified copy at .repair-<stamp>: the only whole copy, never removed."""
    store = tmp_path / "replica-3"
    copy = tmp_path / "replica-3.repair-20261206T154900Z"
    copy.mkdir()
    (tmp_path / "replica-3.broken-20261206T154900Z").mkdir()
    with (
        pytest.raises(RepairRefusedError, match=r"finish it with `mv .*replica-3.repair-20261206T154900Z"),
        repair_lock(store),
    ):
        pass
    assert copy.exists()


def test_a_node_started_between_the_swap_s_renames_leaves_the_verified_copy_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r19 6: a node started (supervisord's autorestart) between the swap's two renames
    makes its store directory anew, with its lock; the second rename failed and the repair removed
    the verified copy, although the old store was already at .broken-<stamp>."""
    config = _home_and_replica(tmp_path, "replica-3", 7013)
    store = config.store_dir("replica-3")
    _chain(store, 3)  # the store under repair
    real_rename = os.rename

    def rename(source: Path, target: Path) -> None:
        real_rename(source, target)
        if Path(target).name.startswith(f"{store.name}.broken-"):
            with node_lock(store, "node replica-3"):  # the node starts, and holds its lock meanwhile
                pass

    monkeypatch.setattr(repair_module.os, "rename", rename)
    repair = repair_module.Repair(config, "replica-3", None, clock=lambda: 1_790_000_000.0)  # type: ignore[arg-type]
    with pytest.raises(RepairRefusedError, match=r"was made since: stop its node, .* finish it with `mv "):
        repair._rebuild(store, [], None)  # type: ignore[arg-type]
    monkeypatch.undo()
    copies = [p for p in store.parent.iterdir() if ".repair-" in p.name]
    assert len(copies) == 1 and (copies[0] / DB_NAME).exists()  # the verified copy is still there
    assert any(".broken-" in p.name for p in store.parent.iterdir()) and (store / NODE_LOCK).exists()


def test_a_second_repair_with_restart_is_refused_before_it_stops_or_starts_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reviewer r6: refused only when it reached the copy, a second `repair --restart` had
    already stopped (a no-op) and then started the node on the store the first was replacing."""
    config = _home_and_replica(tmp_path, "replica-1", 7011)
    (tmp_path / "cluster.toml").write_text("")
    monkeypatch.setattr(repair_module, "load_cluster", lambda path: config)
    monkeypatch.setattr(repair_module, "load_client_keys", lambda path: None)
    touched: list[str] = []
    monkeypatch.setattr(repair_module, "_restart_stop", lambda *a: touched.append("stop"))
    args = argparse.Namespace(
        config=tmp_path / "cluster.toml", node="replica-1", key=None, restart=True, run_dir=None,
        quorum=None, force=True, timeout=1.0, json=False,
    )  # fmt: skip
    with (
        repair_lock(config.store_dir("replica-1")),
        pytest.raises(RepairRefusedError, match="another repair of replica-1 is under way"),
    ):
        cmd_repair(args)
    assert touched == []


def _refused(node: ReplicationLedger, name: str) -> None:
    """``name``'s start refused its store: its store_damaged alert, as open_node_store raises it."""
    node.alert(Alert(name, "", 0, STORE_DAMAGED, "[tree_mismatch] the stored right edge is another"))


def test_a_journal_that_says_the_refusal_was_resolved_is_believed_over_redis(tmp_path: Path, redis_client: Any) -> None:
    """review18 1: the node's sound journal says its last start opened the store (store_damaged
    resolved), Redis still holds the alert open (its HDEL lost while Redis was away, or written
    with the node's Redis password): repair took Redis's word and rebuilt a sound store."""
    store = tmp_path / "ingest-1"
    _chain(store, 5)
    with AlertJournal(store / ALERT_JOURNAL, "ingest-1") as journal:
        _refused(ReplicationLedger(redis_client, node="ingest-1", journal=journal), "ingest-1")
        journal.resolved(["ingest-1||store_damaged"])  # the next start opened it; Redis's HDEL was lost
    assert refused_at_start(store, "ingest-1", ReplicationLedger(redis_client)) is None
    with AlertJournal(store / ALERT_JOURNAL, "ingest-1") as journal:  # open in the journal: its word stands
        _refused(ReplicationLedger(redis_client, node="ingest-1", journal=journal), "ingest-1")
    assert refused_at_start(store, "ingest-1", ReplicationLedger(redis_client)) == (
        "[tree_mismatch] the stored right edge is another"
    )


def test_with_no_journal_redis_s_alert_counts_only_if_the_node_s_start_check_fails_now(
    tmp_path: Path, redis_client: Any
) -> None:
    """No journal to read (lost, or damaged): Redis's open store_damaged, which the node's Redis
    user may write, only makes repair run the node's own start check again; a store that opens
    is left alone, one whose right edge its records contradict is refused as the start does."""
    store = tmp_path / "ingest-1"
    _chain(store, 20)
    _refused(ReplicationLedger(redis_client, node="ingest-1"), "ingest-1")
    assert not (store / ALERT_JOURNAL).exists()
    assert refused_at_start(store, "ingest-1", ReplicationLedger(redis_client), origin="ingest-1") is None
    with contextlib.closing(sqlite3.connect(store / DB_NAME)) as conn, conn:
        (edge,) = conn.execute("SELECT frontier FROM tree_edge WHERE ledger = ?", (LEDGER,)).fetchone()
        conn.execute("UPDATE tree_edge SET frontier = ? WHERE ledger = ?", (edge[:-1] + bytes([edge[-1] ^ 1]), LEDGER))
    refused = refused_at_start(store, "ingest-1", ReplicationLedger(redis_client), origin="ingest-1")
    assert refused is not None and refused.startswith("[tree_mismatch] ") and "right edge" in refused, refused
    ReplicationLedger(redis_client, raisers=["ingest-1"]).resolve_as_operator(["ingest-1||store_damaged"])
    assert refused_at_start(store, "ingest-1", ReplicationLedger(redis_client), origin="ingest-1") is None


def test_a_repair_without_the_admin_s_redis_password_says_where_to_get_it(tmp_path: Path) -> None:
    """Outsider o21 F8: run where it must be, on the node's host, repair failed `bad_settings:
    .../vledger-admin.redis_password: cannot read`, a password the README keeps with the
    operator, and nothing said which cluster file to run it with."""
    import dataclasses

    from vledger.node.errors import SettingsError

    config = _home_and_replica(tmp_path, "replica-1", 7011)
    (tmp_path / "host-keys").mkdir()  # the node's folder: its own password, not the admin's
    config = dataclasses.replace(config, redis=dataclasses.replace(config.redis, passwords_dir=tmp_path / "host-keys"))
    repair = repair_module.Repair(config, "replica-1", None, clock=lambda: 1_790_000_000.0)  # type: ignore[arg-type]
    with pytest.raises(SettingsError) as refused:
        repair._planned(config.store_dir("replica-1"))
    said = refused.value.message
    assert "vledger-admin.redis_password" in said and "[redis] passwords" in said and "on replica-1's host" in said
