"""How `vledger tally` shows a tally: amounts in currency units for people, minor units only in --json."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.broker.tallies import Published
from vledger.config.settings import Limits
from vledger.ingest.key_chains import HomeKeys, KeyChains
from vledger.node.key_rotation import ROTATION_KIND
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_ED25519, SignerKey
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.times import time_text
from vledger.node.witness import HomeSigner, SignedCheckpoint, WitnessSigner, witness_name
from vledger.tools.tally_command import ledger_head, report_json, report_lines, snapshot_json, tally_lines
from vledger.verifier.tally import (
    AGREE,
    EXIT_STALE,
    MAX_CLOCK_SKEW_MS,
    MISMATCH,
    Checked,
    LedgerHead,
    ObserverTally,
    Snapshot,
    TallyReport,
    Verdict,
    agreement_behind,
    ahead_observers,
    head_stale,
    stale_observers,
)

CHARITY = {
    "type": "charity",
    "currency": "SAR",
    "funds": {
        "zakat": {"donated": 300_000, "disbursed": 75_000, "donations": 3, "disbursements": 1, "balance": 225_000}
    },
    "donated": 300_000,
    "disbursed": 75_000,
    "balance": 225_000,
    "records": 5,
    "flagged": 0,
}


def test_a_charity_tally_shows_amounts_in_its_currency() -> None:
    lines = tally_lines(CHARITY)
    assert "  balance: 2,250.00 SAR" in lines
    assert "  donated: 3,000.00 SAR" in lines and "  disbursed: 750.00 SAR" in lines
    assert (
        "  funds: zakat (donated 3,000.00 SAR, disbursed 750.00 SAR, donations 3, disbursements 1, "
        "balance 2,250.00 SAR)"
    ) in lines
    assert "  records: 5" in lines  # counts stay counts
    assert not any("225,000" in line for line in lines)


@pytest.mark.parametrize(
    ("currency", "balance", "per_unit"),
    [("JPY", "225,000 JPY", 1), ("KWD", "225.000 KWD", 1000), ("points", "225,000 points (minor units)", None)],
)
def test_a_charity_tally_uses_its_currency_s_decimals(currency: str, balance: str, per_unit: int | None) -> None:
    # Every currency was shown as hundredths: 225,000 yen read "2,250.00 JPY".
    tally = {**CHARITY, "currency": currency}
    assert f"  balance: {balance}" in tally_lines(tally)
    shown = snapshot_json(Snapshot("observer-1", "zakat", 4, bytes(32), tally, bytes(32), 0))
    assert shown["amounts"] == {"unit": "minor", "currency": currency, "per_unit": per_unit}


def test_other_tallies_show_plain_numbers() -> None:
    lines = tally_lines({"type": "resources", "unit": "credits", "balances": {"alice": 1_500}, "issued": 2_000})
    assert lines == ["  unit: credits", "  balances: alice 1,500", "  issued: 2,000"]


def test_json_keeps_the_signed_minor_units_and_labels_them() -> None:
    snapshot = Snapshot("observer-1", "zakat", 4, bytes(32), CHARITY, bytes(32), 0)
    shown = snapshot_json(snapshot)
    assert shown["tally"]["balance"] == 225_000
    assert shown["amounts"] == {"unit": "minor", "currency": "SAR", "per_unit": 100}
    other = Snapshot("observer-1", "res", 4, bytes(32), {"type": "resources"}, bytes(32), 0)
    assert "amounts" not in snapshot_json(other)


# --- stale observers: behind the ledger's signed checkpoint, and silent ---------------------------

NOW = 1_800_000_000_000


def _observer(name: str, height: int, at_ms: int) -> ObserverTally:
    snapshot = Snapshot(name, "council", height, bytes(32), {"type": "plain", "records": height + 1}, bytes(32), at_ms)
    return ObserverTally(name, Checked(Published("1-0", name, height, b"", b""), snapshot, None))


def test_an_observer_behind_the_checkpoint_and_silent_is_stale_and_the_command_exits_4() -> None:
    fresh = _observer("observer-1", 99, NOW - 500)  # at the head
    stuck = _observer("observer-2", 40, NOW - 60_000)  # behind, a minute ago
    busy = _observer("observer-3", 97, NOW - 300)  # behind, but signed a moment ago: counting, not stuck
    head = LedgerHead(100, "ingest-1")
    stale = stale_observers((fresh, stuck, busy), head, NOW)
    assert stale == ("observer-2",)
    assert stale_observers((fresh, stuck), LedgerHead(None, problem="no checkpoint"), NOW) == ()
    assert stale_observers((fresh, stuck), LedgerHead(41, "ingest-1"), NOW) == ()  # at the head, however old

    assert fresh.checked is not None and fresh.checked.snapshot is not None
    compared = {"observer-1": fresh.checked.snapshot}
    agreeing = TallyReport("council", (fresh, stuck), Verdict(AGREE, 40), compared, head=head, stale=stale)
    assert agreeing.exit_code == EXIT_STALE == 4
    shown = report_json(agreeing)
    assert shown["stale"] == ["observer-2"] and shown["head"] == {
        "size": 100,
        "signer": "ingest-1",
        "problem": None,
        "since_ms": None,
        "fresh_ms": None,
    }
    assert [o["stale"] for o in shown["observers"]] == [False, True]
    assert shown["ok"] is False
    text = report_lines(agreeing)
    assert any(line.startswith("STALE: observer-2") for line in text)
    assert any("observer-2" in line and line.endswith("STALE") for line in text)
    assert "ledger head: a checkpoint of 100 records, signed by ingest-1 (verified)" in text
    assert replace(agreeing, stale=()).exit_code == 0
    assert replace(agreeing, verdict=Verdict(MISMATCH, 40, ("observer-2",))).exit_code == 1  # a mismatch first


def test_an_observer_claiming_records_no_checkpoint_holds_is_ahead_and_the_command_exits_4() -> None:
    # An outsider with one observer's key signed height 1,000,000 of a 10-record ledger, fresh:
    # nobody was stale, the comparison fell back to an old common height and exited 0.
    liar = _observer("observer-1", 1_000_000, NOW - 100)
    honest = _observer("observer-2", 9, NOW - 100)
    head = LedgerHead(10, "ingest-1")
    assert ahead_observers((liar, honest), head) == ("observer-1",)
    assert ahead_observers((liar, honest), LedgerHead(None, problem="no checkpoint")) == ()
    assert ahead_observers((honest,), head) == ()  # at the head exactly is not ahead
    old = _observer("observer-2", 6, NOW - 60_000)
    assert old.checked is not None and old.checked.snapshot is not None
    compared = {"observer-2": old.checked.snapshot}
    report = TallyReport("council", (liar, honest), Verdict(AGREE, 6), compared, head=head, ahead=("observer-1",))
    assert report.exit_code == EXIT_STALE
    shown = report_json(report)
    assert shown["ahead"] == ["observer-1"] and [o["ahead"] for o in shown["observers"]] == [True, False]
    text = report_lines(report)
    assert any(line.startswith("AHEAD: observer-1") for line in text)
    assert any("observer-1" in line and line.endswith("AHEAD") for line in text)
    assert replace(report, ahead=()).exit_code == 0


def test_an_old_agreement_the_head_left_behind_exits_4_a_fresh_one_does_not() -> None:
    # A liar that signs at heights nobody else signs at keeps the comparison on an old common height
    # while the honest observer is at the head.
    old = _observer("observer-2", 6, NOW - 60_000)
    assert old.checked is not None and old.checked.snapshot is not None
    compared = {"observer-2": old.checked.snapshot}
    honest = _observer("observer-2", 9, NOW - 100)  # its latest, at the head
    liar = _observer("observer-1", 8, NOW - 100)
    latest = (liar, honest)
    head = LedgerHead(10, "ingest-1")
    assert agreement_behind(Verdict(AGREE, 6), compared, latest, head, NOW)
    assert not agreement_behind(Verdict(AGREE, 6), compared, latest, head, NOW, after_ms=120_000)  # within the grace
    assert not agreement_behind(Verdict(AGREE, 6), compared, latest, LedgerHead(7, "ingest-1"), NOW)  # current
    assert not agreement_behind(Verdict(MISMATCH, 6, ("x",)), compared, latest, head, NOW)
    assert not agreement_behind(Verdict(AGREE, 6), compared, latest, LedgerHead(None, problem="none"), NOW)
    fresh = _observer("observer-2", 6, NOW - 100)
    assert fresh.checked is not None and fresh.checked.snapshot is not None
    assert not agreement_behind(Verdict(AGREE, 6), {"observer-2": fresh.checked.snapshot}, latest, head, NOW)
    # Steady writes: every observer signs on its own timer at its own height, none at the head yet;
    # the common height is old, and that is counting, not a lie (reviewer r4 2).
    busy = (_observer("observer-1", 7, NOW - 100), _observer("observer-2", 8, NOW - 300))
    assert not agreement_behind(Verdict(AGREE, 6), compared, busy, head, NOW)
    report = TallyReport("council", (old,), Verdict(AGREE, 6), compared, head=head, behind=True)
    assert report.exit_code == EXIT_STALE and report_json(report)["behind"] is True
    assert any(line.startswith("BEHIND:") for line in report_lines(report))


def test_a_tally_dated_ahead_of_the_clock_never_shows_an_observer_current() -> None:
    # outsider23 F1: one observer's key re-signed its body at height 491 with at_ms ten years ahead:
    # "now - at_ms" was negative, so neither STALE nor BEHIND, and the command said "agree", exit 0,
    # while the checkpoint held 540 records.
    future = NOW + 10 * 365 * 86_400_000
    forged = _observer("observer-1", 491, future)
    honest = _observer("observer-2", 539, NOW - 200)
    head = LedgerHead(540, "ingest-1")
    assert stale_observers((forged, honest), head, NOW) == ("observer-1",)
    assert forged.checked is not None and forged.checked.snapshot is not None
    assert agreement_behind(Verdict(AGREE, 491), {"observer-1": forged.checked.snapshot}, (forged, honest), head, NOW)
    # An honest clock a little ahead is no lie: within MAX_CLOCK_SKEW_MS it is taken at its word.
    slightly = _observer("observer-1", 537, NOW + MAX_CLOCK_SKEW_MS)
    assert stale_observers((slightly, honest), head, NOW) == ()
    assert stale_observers((_observer("observer-1", 539, future),), head, NOW) == ()  # at the head: current


def test_a_count_behind_a_checkpoint_witnesses_cosigned_long_ago_is_stale_whatever_its_date() -> None:
    # A key's holder re-signing its old count with a fresh at_ms on every run: the witnesses' time
    # says the checkpoint has held 540 records for a minute, so 491 is stuck, not counting.
    forged = _observer("observer-1", 491, NOW - 100)
    honest = _observer("observer-2", 539, NOW - 200)
    cosigned_long_ago = LedgerHead(540, "ingest-1", since_ms=NOW - 60_000)
    assert stale_observers((forged, honest), cosigned_long_ago, NOW) == ("observer-1",)
    assert stale_observers((forged, honest), replace(cosigned_long_ago, since_ms=NOW - 2_000), NOW) == ()
    assert forged.checked is not None and forged.checked.snapshot is not None
    compared = {"observer-1": forged.checked.snapshot}
    assert agreement_behind(Verdict(AGREE, 491), compared, (forged, honest), cosigned_long_ago, NOW)
    assert not agreement_behind(Verdict(AGREE, 491), compared, (forged, honest), LedgerHead(540, "ingest-1"), NOW)


def test_nobody_is_ahead_of_a_head_a_larger_unverified_note_leaves_uncertain() -> None:
    # After a ledger.rekey the home's newer notes verify with no key file, and a down witness's old
    # note made every observer AHEAD (reviewer r4 7).
    counting = _observer("observer-1", 50, NOW - 100)
    assert ahead_observers((counting,), LedgerHead(10, "ingest-1")) == ("observer-1",)
    assert ahead_observers((counting,), LedgerHead(10, "ingest-1", larger_unverified=True)) == ()


# --- the head: the home's signed word, not Redis's ---------------------------------------------


def _cluster(tmp_path: Path, replicas: int = 1) -> tuple[Any, dict[str, HomeSigner]]:
    """A cluster stand-in with home ingest-1 and standby ingest-2 of "council", and their signers,
    and witnesses replica-1 .. replica-``replicas`` (key files only: cosign with :func:`_witness`)."""
    signers = {}
    for name in ("ingest-1", "ingest-2"):
        generate_signing_key(tmp_path, name)
        signers[name] = HomeSigner("local", load_signing_key(signing_key_paths(tmp_path, name)[0]).seed)
    witnesses = [f"replica-{i}" for i in range(1, replicas + 1)]
    for name in witnesses:
        generate_signing_key(tmp_path, name)
    config = SimpleNamespace(
        name="local",
        keys_dir=tmp_path,
        nodes={name: SimpleNamespace(name=name, role="replica") for name in witnesses},
        home_of=lambda ledger: SimpleNamespace(name="ingest-1"),
        standby_of=lambda ledger: SimpleNamespace(name="ingest-2"),
    )
    return config, signers


def test_the_head_is_the_largest_verified_note_and_junk_or_an_older_note_does_not_hide_it(
    tmp_path: Path, redis_client: Any
) -> None:
    config, signers = _cluster(tmp_path)
    replication = ReplicationLedger(redis_client)
    checkpoint_key = replication.checkpoint_key("council")
    home = signers["ingest-1"]
    redis_client.set(checkpoint_key, home.sign("council", 100, bytes(32)).note)
    assert ledger_head(config, redis_client, "council") == LedgerHead(100, "ingest-1", needed=1)

    # An ingest user writes junk there: no head, and an agreement is no longer "ok".
    redis_client.set(checkpoint_key, b"junk")
    junk = ledger_head(config, redis_client, "council")
    assert junk.size is None and junk.problem is not None and junk.problem.startswith("no checkpoint in Redis verifies")
    stuck = _observer("observer-1", 40, NOW - 60_000)
    assert stuck.checked is not None and stuck.checked.snapshot is not None
    agreeing = TallyReport("council", (stuck,), Verdict(AGREE, 40), {"observer-1": stuck.checked.snapshot}, head=junk)
    assert agreeing.exit_code == EXIT_STALE
    assert any(line.startswith("ledger head not checked") for line in report_lines(agreeing))

    # ... or writes back an older valid note: the witnesses' cosigned notes still show the head.
    redis_client.set(checkpoint_key, home.sign("council", 41, bytes(32)).note)
    replication.publish_cosignature("council", "replica-1", 100, home.sign("council", 100, bytes(32)).note)
    head = ledger_head(config, redis_client, "council")
    assert head == LedgerHead(100, "ingest-1", needed=1)
    # A larger note signed by a key no key file holds (a rekeyed ledger's) leaves the head uncertain upward.
    redis_client.set(checkpoint_key, signers["ingest-2"].sign("council", 120, bytes(32)).note)
    assert ledger_head(config, redis_client, "council") == LedgerHead(100, "ingest-1", larger_unverified=True, needed=1)
    assert stale_observers((stuck,), head, NOW) == ("observer-1",)


def _witness(tmp_path: Path, name: str = "replica-1") -> WitnessSigner:
    seed = load_signing_key(signing_key_paths(tmp_path, name)[0]).seed
    return WitnessSigner(witness_name("local", name), seed)


def test_the_head_says_since_when_a_witness_vouched_for_it(tmp_path: Path, redis_client: Any) -> None:
    # outsider23 F1: a count re-signed with any at_ms beat STALE; the time a witness cosigned the
    # checkpoint is no observer's word, and a forged cosignature line must not move it.
    config, signers = _cluster(tmp_path)
    replication = ReplicationLedger(redis_client)
    home = signers["ingest-1"]
    checkpoint = home.sign("council", 100, bytes(32))
    replication.publish_cosignature(
        "council", "replica-1", 100, _witness(tmp_path).cosign(checkpoint, NOW // 1000 - 60)
    )
    redis_client.set(replication.checkpoint_key("council"), checkpoint.note)
    head = ledger_head(config, redis_client, "council")
    assert head == LedgerHead(100, "ingest-1", since_ms=NOW - 60_000, fresh_ms=NOW - 60_000, needed=1)
    stuck = _observer("observer-1", 40, NOW - 100)  # dated a moment ago, 60 records behind for a minute
    assert stale_observers((stuck,), head, NOW) == ("observer-1",)
    assert report_json(TallyReport("council", (stuck,), Verdict(AGREE, 40), {}, head=head))["head"]["since_ms"] == (
        NOW - 60_000
    )
    # A line another key signed under replica-1's name is not the witness's time.
    forger = WitnessSigner(witness_name("local", "replica-1"), bytes(range(32)))
    replication.publish_cosignature("council", "replica-1", 100, forger.cosign(checkpoint, 0))
    assert ledger_head(config, redis_client, "council") == LedgerHead(100, "ingest-1", needed=1)


def test_one_witness_with_a_slow_clock_never_makes_current_observers_stale(tmp_path: Path, redis_client: Any) -> None:
    # outsider24 G5: replica-3 re-cosigning each new checkpoint with T = now - 15 s made both
    # observers, which had signed 0 s before, STALE (exit 4) under steady writes: the oldest T
    # decided. The time by which a majority of the witnesses had cosigned decides now.
    config, signers = _cluster(tmp_path, replicas=3)
    replication = ReplicationLedger(redis_client)
    checkpoint = signers["ingest-1"].sign("council", 100, bytes(32))
    redis_client.set(replication.checkpoint_key("council"), checkpoint.note)
    for name, behind_s in (("replica-1", 1), ("replica-2", 0), ("replica-3", 15)):
        cosignature = _witness(tmp_path, name).cosign(checkpoint, NOW // 1000 - behind_s)
        replication.publish_cosignature("council", name, 100, cosignature)
    head = ledger_head(config, redis_client, "council")
    assert head == LedgerHead(100, "ingest-1", since_ms=NOW - 1_000, fresh_ms=NOW - 1_000, needed=2)
    current = _observer("observer-1", 97, NOW - 100)  # signed a moment ago, a few records behind
    assert stale_observers((current,), head, NOW) == ()
    # Two of three cosigned long ago: the count behind it is stale whatever its date.
    late = _witness(tmp_path, "replica-1").cosign(checkpoint, NOW // 1000 - 60)
    replication.publish_cosignature("council", "replica-1", 100, late)
    head = ledger_head(config, redis_client, "council")
    assert head.since_ms == NOW - 15_000
    assert stale_observers((current,), head, NOW) == ("observer-1",)


def test_two_witness_names_sharing_one_key_count_once_toward_the_head_s_majority(
    tmp_path: Path, redis_client: Any
) -> None:
    # review r13 #9: replica-3's key file is replica-1's (one witness under two names, 13.5 step
    # 1): 2 distinct witnesses, so both must vouch. Its lines under each name, in separate notes,
    # were two of the times: one witness alone made the head fresh.
    config, signers = _cluster(tmp_path, replicas=3)
    for private, public in zip(
        signing_key_paths(tmp_path, "replica-1"), signing_key_paths(tmp_path, "replica-3"), strict=True
    ):
        public.write_bytes(private.read_bytes())
    replication = ReplicationLedger(redis_client)
    checkpoint = signers["ingest-1"].sign("council", 100, bytes(32))
    redis_client.set(replication.checkpoint_key("council"), checkpoint.note)
    seed = load_signing_key(signing_key_paths(tmp_path, "replica-1")[0]).seed
    for name, behind_s in (("replica-1", 60), ("replica-3", 1)):
        cosignature = WitnessSigner(witness_name("local", name), seed).cosign(checkpoint, NOW // 1000 - behind_s)
        replication.publish_cosignature("council", name, 100, cosignature)
    assert ledger_head(config, redis_client, "council") == LedgerHead(100, "ingest-1", needed=2)
    # replica-2, the other witness, vouches too: a majority, from the one witness's oldest line.
    replication.publish_cosignature(
        "council", "replica-2", 100, _witness(tmp_path, "replica-2").cosign(checkpoint, NOW // 1000 - 5)
    )
    head = ledger_head(config, redis_client, "council")
    assert head == LedgerHead(100, "ingest-1", since_ms=NOW - 5_000, fresh_ms=NOW - 5_000, needed=2)


def test_the_head_follows_the_rotated_key_the_stream_s_rotation_proves(tmp_path: Path, redis_client: Any) -> None:
    # outsider23 F4: after `vledger ledger rotate-key`, the home's checkpoints verify with no key
    # file, and every `vledger tally` exited 4 ("no checkpoint in Redis verifies") for good.
    config, _ = _cluster(tmp_path)
    seed = load_signing_key(signing_key_paths(tmp_path, "ingest-1")[0]).seed
    pinned = SignerKey("local/council", ALG_ED25519, seed).verifier()
    store = ChainStore(tmp_path / "home", origin="ingest-1", clock=lambda: NOW)
    rules = LedgerRules((ROTATION_KIND, "note"), 0, {"checkpoint_key": pinned.encode()})
    store.create_ledger(Entry.prepare(rules.genesis_content("council", "admin", "create-1", NOW), 0, Limits()))
    home = HomeKeys("local", seed, KeyChains(store, lambda ledger: None), make_seed=lambda: bytes(range(32)))
    height = home.rotate("council", "admin", store.append).height
    for i in range(3):
        store.append(Entry.prepare(Content("council", "note", {"n": i}, "Zoe.1", f"r-{i}", NOW + i), 0, Limits()))
    size = store.size("council")
    replication = ReplicationLedger(redis_client)
    checkpoint_key = replication.checkpoint_key("council")
    redis_client.set(checkpoint_key, home.sign("council", size, store.root("council", size)).note)
    unproven = ledger_head(config, redis_client, "council")  # the stream holds no records yet
    assert unproven.size is None and unproven.problem is not None and "unverified_note" in unproven.problem
    replication.append("council", "ingest-1", 0, [data for _, data in store.range_raw("council")])
    assert ledger_head(config, redis_client, "council") == LedgerHead(size, "ingest-1", needed=1)
    # The retired key signs past the rotation: not the key in force there.
    retired = HomeSigner("local", seed).sign("council", size, store.root("council", size)).note
    redis_client.set(checkpoint_key, retired)
    assert ledger_head(config, redis_client, "council").size is None
    # The stream trimmed past the genesis proves no rotation: the key-directory key alone.
    redis_client.set(checkpoint_key, home.sign("council", size, store.root("council", size)).note)
    redis_client.xtrim(replication.stream_key("council"), minid=f"{height}-0", approximate=False)
    assert ledger_head(config, redis_client, "council").size is None
    store.close()


def test_a_note_signed_by_the_standby_counts_only_with_an_epoch_line(tmp_path: Path, redis_client: Any) -> None:
    config, signers = _cluster(tmp_path)
    checkpoint_key = ReplicationLedger(redis_client).checkpoint_key("council")
    standby = signers["ingest-2"]
    redis_client.set(checkpoint_key, standby.sign("council", 100, bytes(32)).note)
    refused = ledger_head(config, redis_client, "council")
    assert refused.size is None and refused.problem is not None and "ingest-2's key: bad_epoch" in refused.problem
    redis_client.set(checkpoint_key, standby.sign("council", 100, bytes(32), ("vledger-epoch 2 ingest-2",)).note)
    assert ledger_head(config, redis_client, "council") == LedgerHead(100, "ingest-2", needed=1)


def test_re_cosignings_keep_the_head_fresh_and_an_observer_behind_it_stale(tmp_path: Path, redis_client: Any) -> None:
    # o4 F2: witnesses cosign a quiet ledger's checkpoint again (PROTOCOL 10.7), each note keeping
    # its first line beside the fresh one. The head is fresh while a majority's newest line is
    # within recosign_interval + --stale-after; since_ms stays the first time, so an observer
    # stuck behind it for an hour stays STALE across every re-cosigning.
    config, signers = _cluster(tmp_path, replicas=3)
    replication = ReplicationLedger(redis_client)
    checkpoint = signers["ingest-1"].sign("council", 100, bytes(32))
    redis_client.set(replication.checkpoint_key("council"), checkpoint.note)
    first = NOW // 1000 - 3600
    for name in ("replica-1", "replica-2", "replica-3"):
        cosigned = _witness(tmp_path, name).cosign(checkpoint, first)
        replication.publish_cosignature("council", name, 100, cosigned)
    quiet = ledger_head(config, redis_client, "council")
    assert quiet == LedgerHead(100, "ingest-1", since_ms=first * 1000, fresh_ms=first * 1000, needed=2)
    assert head_stale(quiet, NOW, 10_000, 300_000)  # nobody vouched for an hour: a frozen view
    agreeing = _observer("observer-1", 99, NOW - 100)
    assert agreeing.checked is not None and agreeing.checked.snapshot is not None
    report = TallyReport(
        "council", (agreeing,), Verdict(AGREE, 99), {"observer-1": agreeing.checked.snapshot}, head=quiet,
        head_stale=True,
    )  # fmt: skip
    assert report.exit_code == EXIT_STALE
    assert report_json(report)["head_stale"] is True and report_json(report)["head"]["fresh_ms"] == first * 1000
    assert any(line.startswith("STALE: no majority of the witnesses vouched") for line in report_lines(report))
    ago = report_lines(replace(report, judged_at_ms=NOW))
    assert any(line.strip().endswith(f"vouched for it at {time_text(first * 1000)}, 3,600 s ago") for line in ago)
    # Two of three cosigned it again a moment ago (a fast clock alone would not do).
    for name in ("replica-1", "replica-2"):
        note = replication.cosignatures("council", [name])[name]
        replication.publish_cosignature(
            "council", name, 100, _witness(tmp_path, name).cosign_again(note, NOW // 1000 - 5)
        )
    head = ledger_head(config, redis_client, "council")
    assert head == LedgerHead(100, "ingest-1", since_ms=first * 1000, fresh_ms=NOW - 5_000, needed=2)
    assert not head_stale(head, NOW, 10_000, 300_000)
    assert head_stale(head, NOW + 306_000, 10_000, 300_000)  # past the interval and the grace
    stuck = _observer("observer-2", 40, NOW - 100)  # dated a moment ago, behind for an hour
    assert stale_observers((stuck,), head, NOW) == ("observer-2",)
    assert replace(report, head=head, head_stale=False).exit_code == 0


def _council_in_redis(
    tmp_path: Path, redis_client: Any, home: HomeSigner, rules: LedgerRules
) -> tuple[ChainStore, ReplicationLedger, SignedCheckpoint]:
    """A home's "council" of ``rules`` and four notes, in its store and in Redis's stream, with
    its checkpoint there (no cosignature yet)."""
    store = ChainStore(tmp_path / "home", origin="ingest-1", clock=lambda: NOW)
    store.create_ledger(Entry.prepare(rules.genesis_content("council", "admin", "create-1", NOW), 0, Limits()))
    for i in range(4):
        store.append(Entry.prepare(Content("council", "note", {"n": i}, "Zoe.1", f"r-{i}", NOW + i), 0, Limits()))
    size = store.size("council")
    replication = ReplicationLedger(redis_client)
    replication.append("council", "ingest-1", 0, [data for _, data in store.range_raw("council")])
    checkpoint = home.sign("council", size, store.root("council", size))
    redis_client.set(replication.checkpoint_key("council"), checkpoint.note)
    return store, replication, checkpoint


def _listing(home: HomeSigner, outside: list[WitnessSigner]) -> LedgerRules:
    """The rules of a "council" that pins ``home``'s key and lists ``outside``, a quorum of 1."""
    pinned = home.key("council").verifier().encode()
    return LedgerRules(
        ("note",), 0, {"checkpoint_key": pinned, "witnesses": [w.key.verifier().encode() for w in outside], "quorum": 1}
    )


def test_the_genesis_outside_witnesses_count_once_the_stream_s_genesis_is_the_head_s(
    tmp_path: Path, redis_client: Any
) -> None:
    # outsider o8 J4: 2 of 3 cluster witnesses down while "council" (its genesis lists 2 outside
    # witnesses, both up) was written. The gateway counts those among its trusted (4 of 5, k 3);
    # the command counted the cluster's alone and judged by the stopped witnesses' old lines.
    config, signers = _cluster(tmp_path, replicas=3)
    home = signers["ingest-1"]
    outside = [WitnessSigner(f"example.org/w{i}", bytes([40 + i]) * 32) for i in (1, 2)]
    rules = _listing(home, outside)
    store, replication, checkpoint = _council_in_redis(tmp_path, redis_client, home, rules)
    size = checkpoint.size
    for name, behind_s in (("replica-1", 5), ("replica-2", 400), ("replica-3", 400)):
        cosignature = _witness(tmp_path, name).cosign(checkpoint, NOW // 1000 - behind_s)
        replication.publish_cosignature("council", name, size, cosignature)
    for witness in outside:
        replication.publish_outside_cosignature(
            "council", witness.key.name, size, witness.cosign(checkpoint, NOW // 1000 - 5)
        )
    head = ledger_head(config, redis_client, "council")
    assert (head.needed, head.fresh_ms, head.since_ms) == (3, NOW - 5_000, NOW - 5_000)
    assert not head_stale(head, NOW, 10_000, 300_000)
    # A genesis in the stream that is not the head's (written there by whoever holds the
    # stream's password, listing witnesses of their own) lists none: the cluster's judge alone.
    forged = home.sign("council", size, bytes(32))
    redis_client.set(replication.checkpoint_key("council"), forged.note)
    for name in ("replica-1", "replica-2", "replica-3"):
        replication.publish_cosignature("council", name, size, _witness(tmp_path, name).cosign(forged, NOW // 1000 - 5))
    redis_client.delete(replication.outside_key("council"))
    for witness in outside:
        replication.publish_outside_cosignature("council", witness.key.name, size, witness.cosign(forged, NOW // 1000))
    assert ledger_head(config, redis_client, "council").needed == 2
    store.close()


def test_a_genesis_naming_an_outside_witness_as_the_cluster_s_own_lends_the_head_no_outside_witness(
    tmp_path: Path, redis_client: Any
) -> None:
    # fix19c left `vledger tally` out: a genesis listing an outside witness named as one of the
    # cluster's (local/witness/...) had both its keys counted among the trusted (5, k 3), the
    # posing one by the cluster witness's name. None of that genesis's outside witnesses counts.
    config, signers = _cluster(tmp_path, replicas=3)
    home = signers["ingest-1"]
    outside = [
        WitnessSigner(name, bytes([60 + i]) * 32) for i, name in enumerate(("example.org/w1", "local/witness/x"))
    ]
    rules = _listing(home, outside)
    store, replication, checkpoint = _council_in_redis(tmp_path, redis_client, home, rules)
    for name in ("replica-1", "replica-2", "replica-3"):
        cosignature = _witness(tmp_path, name).cosign(checkpoint, NOW // 1000 - 5)
        replication.publish_cosignature("council", name, checkpoint.size, cosignature)
    for witness in outside:
        cosignature = witness.cosign(checkpoint, NOW // 1000 - 5)
        replication.publish_outside_cosignature("council", witness.key.name, checkpoint.size, cosignature)
    assert ledger_head(config, redis_client, "council").needed == 2  # the cluster's 3 alone
    store.close()


def test_the_outside_witnesses_counted_come_from_the_genesis_bytes_that_were_hashed(
    tmp_path: Path, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # review r14 F3: the witness list came from one read of the genesis, the root from a second:
    # a stream swapped between the two (RENAME of a prepared key) lent a forged genesis' five
    # witnesses (needed 5 of 8) the real root, and their fresh lines kept a frozen view fresh.
    config, signers = _cluster(tmp_path, replicas=3)
    home = signers["ingest-1"]
    key = home.key("council").verifier().encode()
    real = LedgerRules(("note",), 0, {"checkpoint_key": key})
    store, replication, checkpoint = _council_in_redis(tmp_path, redis_client, home, real)
    size = checkpoint.size
    for name in ("replica-1", "replica-2", "replica-3"):  # the view is frozen: old lines only
        cosignature = _witness(tmp_path, name).cosign(checkpoint, NOW // 1000 - 400)
        replication.publish_cosignature("council", name, size, cosignature)
    attackers = [WitnessSigner(f"evil.example/w{i}", bytes([90 + i]) * 32) for i in range(5)]
    for attacker in attackers:
        cosignature = attacker.cosign(checkpoint, NOW // 1000 - 1)
        replication.publish_outside_cosignature("council", attacker.key.name, size, cosignature)
    forged_rules = LedgerRules(
        ("note",), 0, {"checkpoint_key": key, "witnesses": [w.key.verifier().encode() for w in attackers], "quorum": 1}
    )
    other = ChainStore(tmp_path / "forged", origin="ingest-1", clock=lambda: NOW)
    other.create_ledger(Entry.prepare(forged_rules.genesis_content("council", "admin", "create-1", NOW), 0, Limits()))
    stream = replication.stream_key("council")
    redis_client.rename(stream, stream + ":real")
    replication.append("council", "ingest-1", 0, [data for _, data in other.range_raw("council")])
    real_read_rows = ReplicationLedger.read_rows

    def swap_then_read_rows(self: ReplicationLedger, ledger: str, start: int, count: int) -> Any:
        if redis_client.exists(stream + ":real"):  # the attacker puts the real stream back
            redis_client.rename(stream + ":real", stream)
        return real_read_rows(self, ledger, start, count)

    monkeypatch.setattr(ReplicationLedger, "read_rows", swap_then_read_rows)
    head = ledger_head(config, redis_client, "council")
    assert not redis_client.exists(stream + ":real")  # the swap did happen between the reads
    assert head.needed == 2
    assert head_stale(head, NOW, 10_000, 300_000)
    store.close()
    other.close()
