"""node/epoch.py: a ledger's epochs, the handover record, epoch lines and fencing (PROTOCOL 10.9).

The chain says which of the two keys a genesis pins signs a checkpoint: a handover record
opens the next epoch; a checkpoint of the replaced home past it is fenced, one of the new home
without its epoch line, or signed by the other key, is refused.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from vledger.config.settings import PROTOCOL_LIMITS as _LIMITS
from vledger.node.epoch import (
    EPOCH_KIND,
    Epoch,
    EpochHistory,
    check_promotion,
    epoch_claim,
    epoch_payload,
    epoch_proof,
    gather_in_epochs,
    meets_epoch_rule,
    newest_witnessed_epoch,
    proven_epoch,
)
from vledger.node.errors import VledgerError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, Checkpoint, Note, SignerKey, VerifierKey, cosign, parse_note
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.rules.engine import RulesEngine
from vledger.node.witness import HomeSigner

CLUSTER = "local"
LEDGER = "votes"
HOME, STANDBY = "ingest-1", "ingest-2"
HOME_SIGNER = HomeSigner(CLUSTER, bytes(range(32)))
STANDBY_SIGNER = HomeSigner(CLUSTER, bytes(range(1, 33)))
OTHER_SIGNER = HomeSigner(CLUSTER, bytes(range(2, 34)))
HOME_KEY = HOME_SIGNER.key(LEDGER).verifier()
STANDBY_KEY = STANDBY_SIGNER.key(LEDGER).verifier()
ROOT = hashlib.sha256(b"a root").digest()


def _ANY(ledger: str, number: int, home: str) -> bool:  # a cluster file that allows every failback
    return True


def _NEVER(ledger: str, number: int, home: str) -> bool:  # one that allows none
    return False


def _proven(history: EpochHistory, notes: list[bytes], witnesses: list[VerifierKey]) -> tuple[int, str] | None:
    return proven_epoch(history, notes, witnesses, failback_allowed=_ANY)


T0 = 1_790_000_000_000


def _rules(standby: bool = True) -> LedgerRules:
    pinned: dict[str, Any] = {"checkpoint_key": HOME_KEY.encode()}
    if standby:
        pinned["standby_key"] = STANDBY_KEY.encode()
    return LedgerRules(kinds=(EPOCH_KIND, "note"), difficulty=0, rules=pinned)


def _chain(rules: LedgerRules, n: int) -> list[Record]:
    genesis = Entry.prepare(rules.genesis_content(LEDGER, "admin", "create", T0), 0, _LIMITS)
    records = [genesis.place(0, ZERO_LINK, T0, HOME)]
    for i in range(1, n):
        records.append(_next(records[-1], "note", {"n": i}, HOME))
    return records


def _next(head: Record, kind: str, payload: dict[str, Any], origin: str) -> Record:
    content = Content(LEDGER, kind, payload, "admin", f"r-{head.height + 1}", T0 + head.height + 1)
    return Entry.prepare(content, 0, _LIMITS).place(head.height + 1, head.link, head.accepted + 1, origin)


def _handed_over(n: int = 4) -> tuple[list[Record], EpochHistory]:
    """A chain of ``n`` records by the home, then the standby's handover record at height ``n``."""
    records = _chain(_rules(), n)
    records.append(_next(records[-1], EPOCH_KIND, epoch_payload(2, STANDBY, STANDBY_KEY), STANDBY))
    history = EpochHistory(CLUSTER, records[0], _rules())
    history.feed(records)
    return records, history


def _checkpoint(size: int, extensions: tuple[str, ...] = ()) -> Checkpoint:
    return Checkpoint(f"{CLUSTER}/{LEDGER}", size, ROOT, extensions)


def test_the_genesis_home_holds_epoch_1_and_its_checkpoints_carry_no_epoch_line() -> None:
    history = EpochHistory(CLUSTER, _chain(_rules(), 1)[0], _rules())
    assert history.current == Epoch(1, HOME, HOME_KEY, 0)
    assert history.current.extensions() == ()
    assert history.check(_checkpoint(5), HOME_KEY) == history.current
    assert history.pinned() == (HOME_KEY, STANDBY_KEY)


def test_a_handover_opens_epoch_2_whose_checkpoints_carry_its_line_and_the_standby_key() -> None:
    _, history = _handed_over(4)
    epoch = history.current
    assert epoch == Epoch(2, STANDBY, STANDBY_KEY, 4)
    assert epoch.extensions() == ("vledger-epoch 2 ingest-2",)
    note = STANDBY_SIGNER.sign(LEDGER, 9, ROOT, epoch.extensions()).note
    # Byte-exact: the body is the checkpoint's three lines, then the epoch line (PROTOCOL 10.9).
    body = f"local/votes\n9\n{base64.b64encode(ROOT).decode()}\nvledger-epoch 2 ingest-2\n"
    assert parse_note(note).text == body
    verified = history.verify(note)
    assert (verified.checkpoint.size, epoch_claim(verified.checkpoint)) == (9, (2, STANDBY))


def test_the_old_home_s_checkpoint_past_the_handover_is_fenced_before_it_is_not() -> None:
    _, history = _handed_over(4)
    # Up to the records it placed (heights 0..3), the old home's checkpoints stay true.
    assert history.check(_checkpoint(4), HOME_KEY).number == 1
    with pytest.raises(VledgerError) as caught:
        history.verify(HOME_SIGNER.sign(LEDGER, 5, ROOT).note)
    assert caught.value.code == "fenced"
    assert "epoch 2 (ingest-2) at height 4" in caught.value.message


@pytest.mark.parametrize(
    ("signer", "extensions", "size"),
    [
        (STANDBY_SIGNER, (), 9),  # the new key without the epoch line: epoch 1 is not its
        (HOME_SIGNER, ("vledger-epoch 2 ingest-2",), 9),  # the line, but the old home's key
        (STANDBY_SIGNER, ("vledger-epoch 2 ingest-1",), 9),  # the line names another home
        (STANDBY_SIGNER, ("vledger-epoch 2 ingest-2",), 4),  # does not hold its handover record
    ],
    ids=["no-line", "old-key", "other-home", "before-handover"],
)
def test_a_checkpoint_not_signed_as_its_epoch_is_refused(
    signer: HomeSigner, extensions: tuple[str, ...], size: int
) -> None:
    _, history = _handed_over(4)
    with pytest.raises(VledgerError) as caught:
        history.verify(signer.sign(LEDGER, size, ROOT, extensions).note)
    assert caught.value.code in ("bad_epoch", "fenced")


def test_a_key_the_genesis_does_not_pin_signs_no_epoch() -> None:
    _, history = _handed_over(4)
    with pytest.raises(VledgerError) as caught:
        history.verify(OTHER_SIGNER.sign(LEDGER, 9, ROOT, ("vledger-epoch 2 ingest-2",)).note)
    assert caught.value.code == "unverified_note"


def test_a_copy_behind_the_handover_accepts_the_new_epoch_for_now_and_checks_it_once_stored() -> None:
    records, _ = _handed_over(4)
    behind = EpochHistory(CLUSTER, records[0], _rules())
    behind.feed(records[:3])
    assert behind.check(_checkpoint(9, ("vledger-epoch 2 ingest-2",)), STANDBY_KEY) is None
    behind.feed(records[3:])
    assert behind.check(_checkpoint(9, ("vledger-epoch 2 ingest-2",)), STANDBY_KEY) == behind.current


@pytest.mark.parametrize(
    ("payload", "origin", "standby"),
    [
        (epoch_payload(3, STANDBY, STANDBY_KEY), STANDBY, True),  # skips epoch 2
        (epoch_payload(2, STANDBY, STANDBY_KEY), HOME, True),  # placed by another node than it names
        (epoch_payload(2, HOME, HOME_KEY), HOME, True),  # the home hands over to itself
        (epoch_payload(2, STANDBY, OTHER_SIGNER.key(LEDGER).verifier()), STANDBY, True),  # key not pinned
        ({**epoch_payload(2, STANDBY, STANDBY_KEY), "x": 1}, STANDBY, True),  # an unknown field
        ({"epoch": True, "home": STANDBY, "key": STANDBY_KEY.encode()}, STANDBY, True),  # not an integer
        (epoch_payload(2, STANDBY, STANDBY_KEY), STANDBY, False),  # the genesis pins no standby
        (epoch_payload(2, STANDBY, HOME_KEY), STANDBY, True),  # keeps the key the replaced home holds
    ],
    ids=["skip", "origin", "same-home", "unpinned-key", "extra-field", "bool", "no-standby", "current-key"],
)
def test_a_bad_handover_record_is_refused_by_the_rules_engine(
    payload: dict[str, Any], origin: str, standby: bool
) -> None:
    rules = _rules(standby)
    records = _chain(rules, 3)
    engine = RulesEngine()
    assert engine.replay(records) == []
    bad = _next(records[-1], EPOCH_KIND, payload, origin)
    with pytest.raises(VledgerError) as caught:
        engine.check(bad, rules)
    assert (caught.value.code, getattr(caught.value, "height", None)) == ("bad_epoch", 3)
    assert engine.epochs(LEDGER).current.number == 1


def test_the_rules_engine_follows_the_epochs_and_reports_a_bad_one_in_a_replay() -> None:
    records, _ = _handed_over(4)
    engine = RulesEngine()
    assert engine.replay(records) == []
    assert engine.epochs(LEDGER).current == Epoch(2, STANDBY, STANDBY_KEY, 4)
    # A second handover back to the first home is epoch 3; a repeat of epoch 2 is refused.
    again = _next(records[-1], EPOCH_KIND, epoch_payload(2, HOME, HOME_KEY), HOME)
    violations = engine.replay([again])
    assert [(v.height, v.error.code) for v in violations] == [(5, "bad_epoch")]
    back = _next(again, EPOCH_KIND, epoch_payload(3, HOME, HOME_KEY), HOME)
    assert engine.replay([back]) == []
    assert engine.epochs(LEDGER).current == Epoch(3, HOME, HOME_KEY, 6)


def test_a_forged_handover_keeping_the_current_key_opens_no_epoch_for_any_checker() -> None:
    """Outsider o16 F5: a handover record naming the new home but the key the replaced home
    holds would let that home sign valid checkpoints of the new epoch. The chain's checkers
    (followers, witnesses, `vledger verify`, observers) refuse the record [bad_epoch] and then
    any checkpoint of that epoch by that key; honest epochs alternate the two pinned keys."""
    records = _chain(_rules(), 4)
    forged = _next(records[-1], EPOCH_KIND, epoch_payload(2, STANDBY, HOME_KEY), STANDBY)
    history = EpochHistory(CLUSTER, records[0], _rules())
    refused = history.feed([*records, forged])
    assert [(e.code, e.height) for e in refused] == [("bad_epoch", 4)]
    assert "the one epoch 1 signs with" in refused[0].message
    assert history.current.number == 1
    # The replaced home's key signing the new epoch's line: refused, held or not yet held.
    line = (f"vledger-epoch 2 {STANDBY}",)
    with pytest.raises(VledgerError) as caught:
        history.verify(HOME_SIGNER.sign(LEDGER, 9, ROOT, line).note)
    assert caught.value.code == "bad_epoch"
    behind = EpochHistory(CLUSTER, records[0], _rules())
    with pytest.raises(VledgerError) as caught:
        behind.verify(HOME_SIGNER.sign(LEDGER, 9, ROOT, line).note)
    assert caught.value.code == "bad_epoch"
    # Observers (the rules engine) report it where it stands.
    assert [(v.height, v.error.code) for v in RulesEngine().replay([*records, forged])] == [(4, "bad_epoch")]


def test_past_epoch_2_a_key_stays_its_first_home_s() -> None:
    """Epoch 3 signs with the genesis home's key again (not the current one): only the genesis
    home may open it, since it holds that key and could sign for any other home of epoch 3."""
    records, history = _handed_over(4)
    third = _next(records[-1], EPOCH_KIND, epoch_payload(3, "ingest-3", HOME_KEY), "ingest-3")
    with pytest.raises(VledgerError) as caught:
        history.next_epoch(third)
    assert caught.value.code == "bad_epoch" and "ingest-1" in caught.value.message
    same = _next(records[-1], EPOCH_KIND, epoch_payload(3, "ingest-3", STANDBY_KEY), "ingest-3")
    with pytest.raises(VledgerError) as caught:
        history.next_epoch(same)  # the standby key, which epoch 2's home holds
    assert caught.value.code == "bad_epoch"
    back = _next(records[-1], EPOCH_KIND, epoch_payload(3, HOME, HOME_KEY), HOME)
    assert history.next_epoch(back) == Epoch(3, HOME, HOME_KEY, 5)


@pytest.mark.parametrize(
    "line",
    [
        "vledger-epoch 1 ingest-2",
        "vledger-epoch 02 ingest-2",
        "vledger-epoch 2",
        "vledger-epoch 2 Ingest",
        "vledger-epoch x y",
    ],
)
def test_a_malformed_epoch_line_is_a_bad_checkpoint(line: str) -> None:
    with pytest.raises(VledgerError) as caught:
        epoch_claim(_checkpoint(3, (line,)))
    assert caught.value.code == "bad_checkpoint"


def test_other_extension_lines_are_opaque_and_two_epoch_lines_are_refused() -> None:
    assert epoch_claim(_checkpoint(3, ("other 1",))) == (1, None)
    with pytest.raises(VledgerError):
        epoch_claim(_checkpoint(3, ("vledger-epoch 2 a", "vledger-epoch 3 b")))


def test_promotion_waits_for_everything_acknowledged() -> None:
    check_promotion(LEDGER, STANDBY, held=10, acknowledged=10)
    with pytest.raises(VledgerError) as caught:
        check_promotion(LEDGER, STANDBY, held=9, acknowledged=10)
    assert caught.value.code == "promotion_refused"


WITNESS = SignerKey("local/witness/r1", ALG_COSIGNATURE_V1, bytes([41]) * 32)


def _witnessed(signer: HomeSigner, size: int, extensions: tuple[str, ...] = ()) -> bytes:
    """A witness's note: ``signer``'s checkpoint of ``size`` with the witness's cosignature."""
    note = parse_note(signer.sign(LEDGER, size, ROOT, extensions).note)
    return Note(note.text, (*note.signatures, cosign(note.text, WITNESS, T0 // 1000).note_signature())).encode()


def test_gathering_after_a_handover_keeps_each_epoch_s_checkpoints_and_drops_the_fenced_and_the_forged() -> None:
    _, history = _handed_over(4)
    line = ("vledger-epoch 2 ingest-2",)
    notes = [
        _witnessed(HOME_SIGNER, 3),  # epoch 1, below the handover: true
        _witnessed(HOME_SIGNER, 6),  # epoch 1 past the handover at 4: the fenced home's
        _witnessed(STANDBY_SIGNER, 9, line),  # epoch 2: the standby's key and line
        STANDBY_SIGNER.sign(LEDGER, 8, ROOT).note,  # the standby's key without the line
        _witnessed(STANDBY_SIGNER, 12, ("vledger-epoch 3 ingest-1",)),  # an epoch the records do not open yet
        _witnessed(OTHER_SIGNER, 11, line),  # a key the genesis does not pin
    ]
    found = gather_in_epochs(notes, history, [WITNESS.verifier()])
    assert [(g.checkpoint.size, g.witnesses) for g in found] == [(9, ("local/witness/r1",)), (3, ("local/witness/r1",))]
    # Before the handover is held, the old home's size 6 was a true checkpoint of epoch 1.
    before = EpochHistory(CLUSTER, _chain(_rules(), 1)[0], _rules())
    assert [g.checkpoint.size for g in gather_in_epochs(notes, before, [WITNESS.verifier()])] == [6, 3]


def test_only_a_witnessed_checkpoint_signed_by_the_other_pinned_key_proves_a_newer_epoch() -> None:
    """What a node holding epoch 1 takes as proof that Redis's epochs hash tells the truth: the
    standby's checkpoint of epoch 2 that a witness cosigned (a witness cosigns it only once its
    store holds the handover record); not the standby's key alone (its host could sign any
    epoch line: outsider F6), a witness the node does not trust, the home's own key, an
    unpinned key, a checkpoint of the epoch it holds, or anything that is no checkpoint."""
    history = EpochHistory(CLUSTER, _chain(_rules(), 4)[0], _rules())
    line = (f"vledger-epoch 2 {STANDBY}",)
    trusted = [WITNESS.verifier()]
    witnessed = _witnessed(STANDBY_SIGNER, 9, line)
    assert _proven(history, [b"not a note", witnessed], trusted) == (2, STANDBY)
    alone = STANDBY_SIGNER.sign(LEDGER, 9, ROOT, line).note
    assert _proven(history, [alone], trusted) is None  # the standby key's word: no witness saw a handover
    assert _proven(history, [witnessed], []) is None  # cosigned by no witness this node trusts
    stranger = SignerKey("local/witness/r1", ALG_COSIGNATURE_V1, bytes([42]) * 32).verifier()
    assert _proven(history, [witnessed], [stranger]) is None  # the witness's name, another key: forged
    assert _proven(history, [_witnessed(HOME_SIGNER, 9, line)], trusted) is None  # its own epoch's key
    assert _proven(history, [_witnessed(OTHER_SIGNER, 9, line)], trusted) is None  # pinned by no genesis
    assert _proven(history, [_witnessed(STANDBY_SIGNER, 9)], trusted) is None  # states epoch 1
    unpinned = EpochHistory(CLUSTER, _chain(_rules(False), 1)[0], _rules(False))
    assert _proven(unpinned, [witnessed], trusted) is None
    _, handed = _handed_over()  # a copy that holds epoch 2: only epoch 3 of the home's key is newer
    assert _proven(handed, [witnessed], trusted) is None
    back = (f"vledger-epoch 3 {HOME}",)
    assert _proven(handed, [_witnessed(HOME_SIGNER, 9, back)], trusted) == (3, HOME)
    # Epoch 3 only as the checker's cluster file allows it (a failback, 10.9): else a thief of the
    # home's key with one compromised witness moved the ledger's writes (fix31).
    asked: list[tuple[str, int, str]] = []
    refused = proven_epoch(
        handed, [_witnessed(HOME_SIGNER, 9, back)], trusted, failback_allowed=lambda *a: bool(asked.append(a))
    )
    assert refused is None and asked == [(LEDGER, 3, HOME)]
    assert proven_epoch(handed, [witnessed], trusted, failback_allowed=_NEVER) is None
    assert proven_epoch(history, [witnessed], trusted, failback_allowed=_NEVER) == (2, STANDBY)  # epoch 2: pinned
    # The rule holds both ways: the old home's key alone hands nothing back either.
    assert _proven(handed, [HOME_SIGNER.sign(LEDGER, 9, ROOT, back).note], trusted) is None


def test_the_new_home_keeps_as_its_epoch_s_proof_only_a_witnessed_checkpoint_of_that_epoch() -> None:
    """What the new home's outbox copies from the witnesses' hash into ``epoch_proof`` (10.9):
    the note that proves its epoch to the home it replaced (proven_epoch of that home's history)."""
    _, handed = _handed_over()
    line = (f"vledger-epoch 2 {STANDBY}",)
    trusted = [WITNESS.verifier()]
    witnessed = _witnessed(STANDBY_SIGNER, 9, line)
    alone = STANDBY_SIGNER.sign(LEDGER, 9, ROOT, line).note
    assert epoch_proof(handed, [b"not a note", alone, witnessed], trusted) == witnessed
    assert epoch_proof(handed, [alone], trusted) is None  # no witness cosigned it
    assert epoch_proof(handed, [witnessed], []) is None  # nor one the home trusts
    assert epoch_proof(handed, [_witnessed(STANDBY_SIGNER, 9)], trusted) is None  # states epoch 1
    assert epoch_proof(handed, [_witnessed(STANDBY_SIGNER, 9, (f"vledger-epoch 2 {HOME}",))], trusted) is None
    assert epoch_proof(handed, [_witnessed(HOME_SIGNER, 9, line)], trusted) is None  # not the epoch's key
    before = EpochHistory(CLUSTER, _chain(_rules(), 4)[0], _rules())
    assert epoch_proof(before, [witnessed], trusted) is None  # epoch 1: nothing to prove
    assert _proven(before, [witnessed], trusted) == (
        2,
        STANDBY,
    )  # what the kept note proves


def test_a_failback_s_epoch_3_is_proven_by_the_genesis_home_s_key_to_whoever_lacks_it() -> None:
    """A failback (10.9): epoch 3 is the genesis home's again, signed with its key. The verifier,
    which holds the genesis alone, and ``vledger repl status``, which holds two key files, took
    a handover only to "another home than epoch 1's" signed by the standby's key: after a
    failback they kept naming epoch 2's home, or the cluster file's. The newest witnessed epoch,
    signed by its own pinned key (the keys alternate), names its home, whichever it is."""
    genesis_only = EpochHistory(CLUSTER, _chain(_rules(), 4)[0], _rules())
    trusted = [WITNESS.verifier()]
    pinned = (HOME_KEY, STANDBY_KEY)
    second = _witnessed(STANDBY_SIGNER, 9, (f"vledger-epoch 2 {STANDBY}",))
    third = _witnessed(HOME_SIGNER, 12, (f"vledger-epoch 3 {HOME}",))
    keys = genesis_only.pinned()
    assert newest_witnessed_epoch([second, third], keys, trusted, pinned=pinned) == (3, HOME)
    assert newest_witnessed_epoch([third, second], keys, trusted, pinned=pinned) == (3, HOME)
    assert newest_witnessed_epoch([second], keys, trusted, pinned=pinned) == (2, STANDBY)
    # Signed by the key of no such epoch: the standby's key signs the even ones only.
    wrong = _witnessed(STANDBY_SIGNER, 12, (f"vledger-epoch 3 {HOME}",))
    assert newest_witnessed_epoch([wrong], keys, trusted, pinned=pinned) is None
    assert newest_witnessed_epoch([HOME_SIGNER.sign(LEDGER, 12, ROOT, ("vledger-epoch 3 ingest-1",)).note],
                                  keys, trusted, pinned=pinned) is None  # fmt: skip
    assert newest_witnessed_epoch([_witnessed(HOME_SIGNER, 12)], keys, trusted, pinned=pinned) is None  # epoch 1
    # Without the genesis (repl status: the two key files), the witness vouched for the key.
    assert newest_witnessed_epoch([second, third], [STANDBY_KEY, HOME_KEY], trusted) == (3, HOME)
    # A node: its own home named again proves nothing to the store that lacks epoch 2 ...
    assert _proven(genesis_only, [third], trusted) is None
    assert _proven(genesis_only, [second, third], trusted) == (2, STANDBY)
    # ... and to epoch 2's home, epoch 3 is the genesis home's, signed with its key.
    _, handed = _handed_over()
    assert _proven(handed, [second, third, wrong], trusted) == (3, HOME)
    fourth = _witnessed(STANDBY_SIGNER, 15, (f"vledger-epoch 4 {STANDBY}",))
    assert _proven(handed, [fourth], trusted) is None  # names epoch 2's home, the one held


def test_an_epoch_is_proven_from_its_parts_without_a_genesis() -> None:
    """newest_witnessed_epoch, what vledger repl status proves a handover with (the key files of
    the cluster file's standby and home, no genesis): a note of an epoch from 2, by one of the
    keys given, cosigned by a witness given; the newest of several, whatever its home."""
    line = (f"vledger-epoch 2 {STANDBY}",)
    trusted = [WITNESS.verifier()]
    notes = [_witnessed(STANDBY_SIGNER, 9, line), b"not a note"]
    assert newest_witnessed_epoch(notes, [STANDBY_KEY], trusted) == (2, STANDBY)
    alone = [STANDBY_SIGNER.sign(LEDGER, 9, ROOT, line).note]
    assert newest_witnessed_epoch(alone, [STANDBY_KEY], trusted) is None
    assert newest_witnessed_epoch(notes, [STANDBY_KEY], []) is None  # cosigned by no witness given
    assert newest_witnessed_epoch(notes, [HOME_KEY], trusted) is None  # not signed by the key given
    assert newest_witnessed_epoch(notes, [STANDBY_KEY], trusted, above=2) is None  # not past the epoch held
    assert newest_witnessed_epoch(notes, [STANDBY_KEY], trusted, excluding=STANDBY) is None  # names the home held
    assert newest_witnessed_epoch([_witnessed(STANDBY_SIGNER, 9)], [STANDBY_KEY], trusted) is None  # epoch 1
    later = _witnessed(STANDBY_SIGNER, 12, ("vledger-epoch 4 ingest-3",))
    assert newest_witnessed_epoch([*notes, later], [STANDBY_KEY], trusted) == (4, "ingest-3")


def test_an_outside_witness_alone_proves_no_epoch_to_a_node_or_the_verifier() -> None:
    """An outside witness (13.9) checks the log key's signature and the tree's consistency, not
    that its store holds the handover record: the standby's host could have it cosign an epoch
    line of its own over the current tree and take the ledger with no promotion (reviewer r3).
    Only the cluster's witnesses, which cosign a new epoch once they hold its handover record,
    prove one."""
    outside = SignerKey("witness.example/w1", ALG_COSIGNATURE_V1, bytes([7]) * 32)
    rules = _rules()
    listed = LedgerRules(
        kinds=rules.kinds,
        difficulty=0,
        rules={**rules.rules, "witnesses": [outside.verifier().encode()], "quorum": 1},
    )
    history = EpochHistory(CLUSTER, _chain(listed, 4)[0], listed)
    line = (f"vledger-epoch 2 {STANDBY}",)
    note = parse_note(STANDBY_SIGNER.sign(LEDGER, 9, ROOT, line).note)
    by_outside = Note(note.text, (*note.signatures, cosign(note.text, outside, T0 // 1000).note_signature())).encode()
    assert _proven(history, [by_outside], [WITNESS.verifier()]) is None
    assert _proven(history, [by_outside], []) is None
    assert _proven(history, [_witnessed(STANDBY_SIGNER, 9, line)], [WITNESS.verifier()]) == (2, STANDBY)


@pytest.mark.parametrize("number", ["9" * 5000, "1" + "0" * 20, "01", "1", "x"])
def test_an_epoch_line_whose_number_is_none_is_refused_not_a_crash(number: str) -> None:
    # 5,000 digits: Python's int() raises a bare ValueError over 4,300 (a traceback in `receipt verify`).
    checkpoint = Checkpoint(f"{LEDGER}", 1, ROOT, (f"vledger-epoch {number} ingest-2",))
    with pytest.raises(VledgerError) as caught:
        epoch_claim(checkpoint)
    assert caught.value.code == "bad_checkpoint"


def test_the_epoch_rule_counts_a_cluster_witness_never_an_outside_one_alone() -> None:
    """Outsider o24 F0/F5 (13.5 step 3): what a server filters its served notes by, so that no
    reader is served a checkpoint of an epoch from 2 that only an outside witness cosigned."""
    cluster = {"local/witness/replica-1"}
    epoch_5 = Checkpoint(f"{CLUSTER}/{LEDGER}", 5, bytes(32), ("vledger-epoch 5 ingest-1",))
    assert not meets_epoch_rule(epoch_5, ["ow.example/w1"], cluster)
    assert not meets_epoch_rule(epoch_5, [], cluster)
    assert meets_epoch_rule(epoch_5, ["ow.example/w1", "local/witness/replica-1"], cluster)
    assert meets_epoch_rule(Checkpoint(f"{CLUSTER}/{LEDGER}", 5, bytes(32), ()), ["ow.example/w1"], cluster)
    two_lines = Checkpoint(f"{CLUSTER}/{LEDGER}", 5, bytes(32), ("vledger-epoch 2 a", "vledger-epoch 3 b"))
    assert not meets_epoch_rule(two_lines, sorted(cluster), cluster)
