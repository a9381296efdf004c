# ruff: noqa: F811
"""Who may open epoch 3 (PROTOCOL 10.9, "A failback"): a witness stores a handover opening an
epoch from 3 only when its own cluster file names that epoch's home the ledger's standby.

Reuses test_epochs.py's real stores and notes (a ledger whose genesis pins the home's and the
standby's keys, handed over to the standby at height 5)."""

from __future__ import annotations

import os
from pathlib import Path

from vledger.config.cluster import ConfiguredFailbacks, load_cluster
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.record import Record
from vledger.tests.unit.ingest.test_epochs import (  # noqa: F401 (chains: the fixture)
    EPOCH_2,
    HOME,
    HOME_KEY,
    HOME_SIGNER,
    LEDGER,
    STANDBY,
    STANDBY_KEY,
    STANDBY_SIGNER,
    Pages,
    Witness,
    _checkpoint,
    _place,
    chains,
)

EPOCH_3 = ("vledger-epoch 3 ingest-1",)


def _reopened(handed: list[Record]) -> list[Record]:
    """The chain past epoch 2 with a handover of epoch 3 at the genesis home (what both the
    operator's failback and a thief of the genesis key with a Redis password can place) and one
    record of it."""
    reopened = _place(handed[-1], EPOCH_KIND, epoch_payload(3, HOME, HOME_KEY), HOME)
    return [*handed, reopened, _place(reopened, "note", {"epoch 3": 1}, HOME)]


def _cluster_file(path: Path, home: str, standby: str, epoch: int | None = None) -> Path:
    path.write_text(
        f"""[cluster]
name = "test"
default_home = "{HOME}"

[nodes.{HOME}]
role = "ingest"
port = 7001
pub_port = 7101

[nodes.{STANDBY}]
role = "ingest"
port = 7002
pub_port = 7102

[nodes.replica-1]
role = "replica"
port = 7011

[ledgers.{LEDGER}]
home = "{home}"
standby = "{standby}"
{"" if epoch is None else f"epoch = {epoch}"}
""",
        encoding="utf-8",
    )
    return path


def test_the_stolen_genesis_key_alone_cannot_reopen_epoch_3_on_a_witness(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """Review r30 F1. README ("What a key compromise means"): the home's key stolen, the
    operator promotes the standby (epoch 2) and never fails back, leaving the cluster file as
    it was (home ingest-1, standby ingest-2). The thief, with that key and the robbed host's
    Redis password, XADDs a handover of epoch 3 naming the genesis home (10.9's record rules
    accept it) and a note of epoch 3 signed by the genesis key. A witness catching up from the
    stream stored it and cosigned epoch 3: the verifier, repl status and receipts followed. Its
    file does not name ingest-1 the standby: refused, an alert, nothing stored past it."""
    handed, _ = chains
    thief = _reopened(handed)
    notes = [_checkpoint(handed, STANDBY_SIGNER, EPOCH_2), _checkpoint(thief, HOME_SIGNER, EPOCH_3)]
    config = load_cluster(_cluster_file(tmp_path / "cluster.toml", home=HOME, standby=STANDBY))
    witness = Witness(tmp_path / "replica", [Pages(thief, notes)], failback_allowed=ConfiguredFailbacks(config).allows)
    try:
        witness.send(handed, _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
        assert witness.held() == handed
        witness.follower.catch_up(LEDGER, len(thief))
        assert witness.held() == handed, "the witness stored the thief's epoch 3 (and would cosign it)"
        refused = [a for a in witness.alerts if a.what == "failback_unconfigured"]
        assert refused and "epoch 3" in refused[0].detail, witness.alerts
        assert witness.book.history(LEDGER).current.number == 2  # type: ignore[union-attr]
        # Epoch 2's home goes on: its checkpoints get through, and resolve no failback refused
        # (perhaps a thief's): that is the operator's to close.
        resolved: list[str] = []
        witness.follower.on_resolve = lambda keys, upto: resolved.extend(keys)
        honest = [*handed, _place(handed[-1], "note", {"epoch 2": 1}, STANDBY)]
        witness.send(honest[-1:], _checkpoint(honest, STANDBY_SIGNER, EPOCH_2), STANDBY)
        assert witness.held() == honest
        assert not [key for key in resolved if key.endswith("|failback_unconfigured")], resolved
    finally:
        witness.store.close()


def test_the_operator_s_failback_is_stored_once_the_file_is_swapped_without_a_restart(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """The failback README describes: the file swapped on every host (home ingest-2, standby
    ingest-1) while the witness runs with the file it read at its start; it meets the handover,
    reads the file again, and stores epoch 3."""
    handed, _ = chains
    failback = _reopened(handed)
    notes = [_checkpoint(handed, STANDBY_SIGNER, EPOCH_2), _checkpoint(failback, HOME_SIGNER, EPOCH_3)]
    path = _cluster_file(tmp_path / "cluster.toml", home=HOME, standby=STANDBY)
    failbacks = ConfiguredFailbacks(load_cluster(path))  # read at the witness's start
    witness = Witness(tmp_path / "replica", [Pages(failback, notes)], failback_allowed=failbacks.allows)
    try:
        witness.send(handed, _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
        _cluster_file(path, home=STANDBY, standby=HOME)  # the operator's swap, then the promote
        witness.follower.catch_up(LEDGER, len(failback))
        assert witness.held() == failback
        assert witness.book.history(LEDGER).current.home == HOME  # type: ignore[union-attr]
        assert not [a for a in witness.alerts if a.what == "failback_unconfigured"]
    finally:
        witness.store.close()


def test_a_copy_catching_up_over_epochs_3_and_4_holds_the_newest_to_the_file(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """After a failback (epoch 3) and a second handover (epoch 4, the file swapped back: standby
    ingest-2), a new witness catches up from scratch: the run under epoch 4's checkpoint opens
    both, and only epoch 4, the one its checkpoint states, is held to the file (epoch 3's key
    signs no checkpoint of epoch 4)."""
    handed, _ = chains
    three = _reopened(handed)
    fourth = _place(three[-1], EPOCH_KIND, epoch_payload(4, STANDBY, STANDBY_KEY), STANDBY)
    four = [*three, fourth, _place(fourth, "note", {"epoch 4": 1}, STANDBY)]
    notes = [_checkpoint(four, STANDBY_SIGNER, ("vledger-epoch 4 ingest-2",))]
    config = load_cluster(_cluster_file(tmp_path / "cluster.toml", home=HOME, standby=STANDBY))
    witness = Witness(tmp_path / "replica", [Pages(four, notes)], failback_allowed=ConfiguredFailbacks(config).allows)
    try:
        witness.send(handed, _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
        witness.follower.catch_up(LEDGER, len(four))
        assert witness.held() == four
        assert witness.book.history(LEDGER).current.number == 4  # type: ignore[union-attr]
    finally:
        witness.store.close()


def test_configured_failbacks_read_the_file_again_only_when_it_changed(tmp_path: Path) -> None:
    path = _cluster_file(tmp_path / "cluster.toml", home=HOME, standby=STANDBY)
    failbacks = ConfiguredFailbacks(load_cluster(path))
    assert failbacks.allows(LEDGER, 4, STANDBY)
    assert not failbacks.allows(LEDGER, 3, HOME)
    _cluster_file(path, home=STANDBY, standby=HOME)  # the same size: the stat's times and inode tell
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert failbacks.allows(LEDGER, 3, HOME)
    assert not failbacks.allows(LEDGER, 4, STANDBY)
    path.write_text("[cluster\n", encoding="utf-8")  # half written: the last reading stands
    assert failbacks.allows(LEDGER, 3, HOME)
    assert not failbacks.allows("other", 3, HOME)


def test_a_file_swapped_back_keeps_the_failback_it_states(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """After a failback the operator swaps the file back (home ingest-1, standby ingest-2, so that
    ingest-2 follows as the standby again) and states `epoch = 3`: a witness catching up from
    scratch still stores epoch 3, which the file's standby alone no longer allows."""
    handed, _ = chains
    failback = _reopened(handed)
    notes = [_checkpoint(failback, HOME_SIGNER, EPOCH_3)]
    path = _cluster_file(tmp_path / "cluster.toml", home=HOME, standby=STANDBY, epoch=3)
    config = load_cluster(path)
    assert config.allows_epoch(LEDGER, 3, HOME) and not config.allows_epoch(LEDGER, 5, HOME)
    witness = Witness(
        tmp_path / "replica", [Pages(failback, notes)], failback_allowed=ConfiguredFailbacks(config).allows
    )
    try:
        witness.send(handed, _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
        witness.follower.catch_up(LEDGER, len(failback))
        assert witness.held() == failback
    finally:
        witness.store.close()


def test_the_outbox_process_s_failback_rule_reads_the_node_s_file_at_its_first_question(tmp_path: Path) -> None:
    """An ingest node's outbox process has no config of its own: its rule reads the node's
    cluster file when first asked, and again once the file is swapped (fix31)."""
    path = _cluster_file(tmp_path / "cluster.toml", home=HOME, standby=STANDBY)
    failbacks = ConfiguredFailbacks(None, path)
    assert not failbacks.allows(LEDGER, 3, HOME) and failbacks.allows(LEDGER, 3, STANDBY)
    _cluster_file(path, home=STANDBY, standby=HOME)  # the operator's swap
    assert failbacks.allows(LEDGER, 3, HOME)
    assert not ConfiguredFailbacks(None, tmp_path / "none.toml").allows(LEDGER, 3, HOME)  # no file: none


def test_a_refused_failback_is_one_alert_however_many_checkpoints_of_its_epoch_come(
    tmp_path: Path, chains: tuple[list[Record], list[Record]]
) -> None:
    """Outsider o24 F2: a copy whose file does not allow the epoch a live home writes in raised a
    new failback_unconfigured for each checkpoint of that epoch (56 alert entries in 35 s at 1.5
    writes/s, each closing the previous one): one alert per ledger and epoch while it lasts."""
    handed, _ = chains
    thief = _reopened(handed)
    for i in range(4):
        thief.append(_place(thief[-1], "note", {"more": i}, HOME))
    config = load_cluster(_cluster_file(tmp_path / "cluster.toml", home=HOME, standby=STANDBY))
    witness = Witness(tmp_path / "replica", failback_allowed=ConfiguredFailbacks(config).allows)
    try:
        witness.send(handed, _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
        for size in range(len(handed) + 2, len(thief) + 1):  # the home's checkpoints, one by one
            witness.send(thief[len(handed) : size], _checkpoint(thief[:size], HOME_SIGNER, EPOCH_3), HOME)
        assert witness.held() == handed
        refused = [a for a in witness.alerts if a.what == "failback_unconfigured"]
        assert len(refused) == 1, [(a.height, a.detail) for a in refused]
        assert refused[0].height == len(handed)  # the handover refused, not each checkpoint past it
    finally:
        witness.store.close()
