"""node/cosigning.py: cosignatures gathered from notes nothing vouches for, each line on its own."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node.cosigning import (
    cosigned_by_witness,
    distinct_witnesses,
    gather,
    needed_witnesses,
    newest,
    quorum_fresh_ms,
    quorum_since_ms,
    stale_since,
    verified_fresh_ms,
    vouched_by,
)
from vledger.node.errors import NoteError
from vledger.node.node_key_rotation import key_histories
from vledger.node.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    Note,
    SignerKey,
    cosign,
    sign,
    verify_checkpoint,
)
from vledger.node.witness import cosignatures_in_force

ORIGIN = "local/votes"
HOME = SignerKey(ORIGIN, ALG_ED25519, bytes(range(32)))
WITNESSES = [SignerKey(f"local/witness/r{i}", ALG_COSIGNATURE_V1, bytes([i + 40]) * 32) for i in range(3)]
KEYS = [w.verifier() for w in WITNESSES]


def _cosigned(size: int, witness: SignerKey, signer: SignerKey = HOME, at: int = 1_790_000_000) -> bytes:
    body = Checkpoint(ORIGIN, size, hashlib.sha256(str(size).encode()).digest()).body()
    return Note(body, (sign(body, signer), cosign(body, witness, at).note_signature())).encode()


def test_each_witness_note_adds_its_line_to_one_checkpoint() -> None:
    notes = [_cosigned(5, w) for w in WITNESSES] + [_cosigned(4, WITNESSES[0])]
    found = gather(notes, HOME.verifier(), ORIGIN, KEYS)
    assert [(g.checkpoint.size, len(g.witnesses)) for g in found] == [(5, 3), (4, 1)]
    best = newest(found, 2)
    assert best is not None and best.checkpoint.size == 5
    # The note gathered passes the client's whole check with a quorum of all three.
    assert verify_checkpoint(best.note, HOME.verifier(), KEYS, 3).witnesses == tuple(w.name for w in WITNESSES)
    assert newest(found, 4) is None


def test_a_bad_line_is_dropped_and_the_good_ones_kept() -> None:
    good = [_cosigned(5, w) for w in WITNESSES[:2]]
    forged = bytearray(_cosigned(5, WITNESSES[2]))
    forged[-3] ^= 1  # the third witness's signature no longer verifies
    impostor = _cosigned(5, WITNESSES[0], SignerKey(ORIGIN, ALG_ED25519, bytes(32)))  # another log key
    found = gather([*good, bytes(forged), impostor, b"not a note"], HOME.verifier(), ORIGIN, KEYS)
    assert len(found) == 1 and found[0].witnesses == (WITNESSES[0].name, WITNESSES[1].name)
    assert gather([impostor], HOME.verifier(), ORIGIN, KEYS) == []
    assert gather([_cosigned(5, WITNESSES[0])], HOME.verifier(), "local/other", KEYS) == []


def test_one_key_under_two_names_gathers_one_cosignature() -> None:
    # The name is not signed (PROTOCOL 13.4): r0's cosignature relabelled as an alias of r0's key
    # must not make two witnesses of one (the gateway's checkpoint?witnesses= counts these).
    alias = SignerKey("local/witness/alias", ALG_COSIGNATURE_V1, WITNESSES[0].seed)
    notes = [_cosigned(5, WITNESSES[0]), _cosigned(5, alias), _cosigned(5, WITNESSES[1])]
    found = gather(notes, HOME.verifier(), ORIGIN, [*KEYS, alias.verifier()])
    assert len(found) == 1 and len(found[0].witnesses) == 2 and WITNESSES[1].name in found[0].witnesses
    assert newest(found, 3) is None


def test_each_witness_s_largest_cosigned_note_is_read_whatever_key_signed_the_tree() -> None:
    """A follower whose key chain lacks a rotation reads the witnesses' word on a tree (PROTOCOL
    10.7): the log line is not checked, each witness's own line is, one witness counts once."""
    rotated = SignerKey(ORIGIN, ALG_ED25519, bytes([7]) * 32)  # a key the reader does not know
    alias = SignerKey("local/witness/alias", ALG_COSIGNATURE_V1, WITNESSES[0].seed)
    forged = bytearray(_cosigned(9, WITNESSES[2], rotated))
    forged[-3] ^= 1  # r2's line no longer verifies: its older note stands
    notes = [
        _cosigned(7, WITNESSES[0], rotated),
        _cosigned(6, WITNESSES[0]),
        _cosigned(8, alias, rotated),  # r0's key under another name: r0 still
        _cosigned(5, WITNESSES[2], rotated),
        bytes(forged),
        b"not a note",
        _cosigned(9, WITNESSES[1]).replace(ORIGIN.encode(), b"local/other"),  # another ledger's text
    ]
    found = cosigned_by_witness(notes, ORIGIN, [*KEYS, alias.verifier()])
    assert {name: note.split(b"\n")[1] for name, note in found.items()} == {
        "local/witness/alias": b"8",  # the least name stands for the shared key (witness_groups)
        WITNESSES[2].name: b"5",
    }
    assert cosigned_by_witness(notes, ORIGIN, KEYS, lambda line, key, checkpoint: checkpoint.size < 6) == {
        WITNESSES[2].name: notes[3]
    }
    assert list(cosigned_by_witness(notes, ORIGIN, [*KEYS, alias.verifier()], above=7)) == ["local/witness/alias"]
    with pytest.raises(NoteError):
        cosigned_by_witness(notes, ORIGIN, [HOME.verifier()])


def test_unusable_keys_are_refused() -> None:
    with pytest.raises(NoteError):
        gather([], WITNESSES[0].verifier(), ORIGIN, KEYS)
    with pytest.raises(NoteError):
        gather([], HOME.verifier(), ORIGIN, [HOME.verifier()])


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 7))
def test_any_flipped_byte_never_adds_a_cosignature(position: int, bit: int) -> None:
    data = bytearray(_cosigned(5, WITNESSES[0]))
    data[position % len(data)] ^= 1 << bit
    for g in gather([bytes(data)], HOME.verifier(), ORIGIN, KEYS):
        # Whatever survives is still exactly what the keys signed.
        verify_checkpoint(g.note, HOME.verifier(), KEYS, len(g.witnesses))
        assert g.checkpoint.size == 5


def test_a_replaced_key_s_line_counts_only_as_its_rotation_allows() -> None:
    # PROTOCOL 16.6: r0's key rotated; its rotation states the old key had cosigned votes up
    # to size 4. Stamped inside the window (T = 1_790_000_000 < until), a larger checkpoint's
    # line by the old key is left out; the new key's line counts at any size.
    new = SignerKey(WITNESSES[0].name, ALG_COSIGNATURE_V1, bytes([99]) * 32)
    rotation = {
        "node": "r0",
        "curve": "A" * 40,
        "sign": new.verifier().public_key.hex(),
        "accepted": 1_789_000_000_000,
        "until": 1_791_000_000_000,
        "cosigned": {"votes": 4},
    }
    histories = key_histories({"r0": ("A" * 40, KEYS[0].public_key.hex())}, [rotation])
    counts = cosignatures_in_force("local", histories)
    keys = [*KEYS, new.verifier()]
    notes = [_cosigned(4, WITNESSES[0]), _cosigned(5, WITNESSES[0]), _cosigned(5, WITNESSES[1])]
    found = gather(notes, HOME.verifier(), ORIGIN, keys, counts)
    assert [(g.checkpoint.size, g.witnesses) for g in found] == [(5, (WITNESSES[1].name,)), (4, (WITNESSES[0].name,))]
    found = gather([*notes, _cosigned(5, new)], HOME.verifier(), ORIGIN, keys, counts)
    assert found[0].witnesses == (WITNESSES[0].name, WITNESSES[1].name)
    assert len(gather(notes, HOME.verifier(), ORIGIN, keys)[0].witnesses) == 2  # without the rule: counted


def test_since_when_a_checkpoint_was_vouched_for_is_a_majority_s_time_not_one_witness_s() -> None:
    """outsider24 G5: the oldest cosignature time decided, so one witness whose clock ran 15 s
    slow made honest, current observers STALE (11.4); the time by which a majority of the
    witnesses that cosigned had done so is the n // 2 + 1-th oldest of n."""
    now = 1_790_000_100
    found = gather([_cosigned(5, w, at=t) for w, t in zip(WITNESSES, (now - 15, now - 1, now), strict=True)],
                   HOME.verifier(), ORIGIN, KEYS)  # fmt: skip
    assert found[0].cosigned_ms == {w.name: t * 1000 for w, t in zip(WITNESSES, (now - 15, now - 1, now), strict=True)}
    assert found[0].since_ms == (now - 1) * 1000
    assert quorum_since_ms([], 1) is None
    assert quorum_since_ms([7], 1) == 7
    assert quorum_since_ms([9, 3], 2) == 9  # of two, both: neither alone
    assert quorum_since_ms([4, 1, 3, 2], 3) == 3
    assert quorum_since_ms([4, 1], 3) is None and quorum_since_ms([4, 1], 0) is None  # too few; none trusted


def test_a_witness_s_first_and_newest_lines_give_since_and_fresh_and_a_re_cosigning_never_moves_since() -> None:
    """PROTOCOL 11.4: a quiet ledger's witnesses cosign its checkpoint again (10.7); since_ms is
    a majority's first time (an observer stuck behind it stays stale), fresh_ms a majority's
    newest (how recently the view was vouched for), whichever notes and lines come in what order."""
    first, again, later = 1_790_000_000, 1_790_000_300, 1_790_000_600
    notes = [_cosigned(5, w, at=first) for w in WITNESSES]
    body = Checkpoint(ORIGIN, 5, hashlib.sha256(b"5").digest()).body()
    # Witness 0 cosigned again twice, witness 1 once; their fresh notes come before the first ones.
    recosigned = [
        Note(
            body, (sign(body, HOME), *(cosign(body, WITNESSES[0], t).note_signature() for t in (later, first, again)))
        ),
        Note(body, (sign(body, HOME), cosign(body, WITNESSES[1], again).note_signature())),
    ]
    (found,) = gather([*(n.encode() for n in recosigned), *notes], HOME.verifier(), ORIGIN, KEYS)
    assert found.cosigned_ms == {w.name: first * 1000 for w in WITNESSES}
    assert found.vouched_ms == {KEYS[0].name: later * 1000, KEYS[1].name: again * 1000, KEYS[2].name: first * 1000}
    assert found.since_ms == first * 1000  # the re-cosignings never reset it
    assert found.fresh_ms == again * 1000  # two of three vouched at `again` or later
    # The gathered note reads as any checker reads it: each witness's first line, its oldest.
    verified = verify_checkpoint(found.note, HOME.verifier(), KEYS, 3)
    assert {c.timestamp for c in verified.cosignatures} == {first}
    assert gather([found.note], HOME.verifier(), ORIGIN, KEYS)[0].note == found.note  # served and read again
    assert quorum_fresh_ms([], 1) is None
    assert quorum_fresh_ms([7], 1) == 7
    assert quorum_fresh_ms([9, 3], 2) == 3  # of two, both: the older
    assert quorum_fresh_ms([4, 1, 3, 2], 3) == 2
    assert quorum_fresh_ms([4, 1], 3) is None and quorum_fresh_ms([4, 1], 0) is None  # too few; none trusted


FIVE = [SignerKey(f"local/witness/w{i}", ALG_COSIGNATURE_V1, bytes([i + 90]) * 32) for i in range(5)]


def test_freshness_is_over_a_majority_of_the_trusted_witnesses_not_of_the_lines_shown() -> None:
    """Review r12 finding 2: 5 trusted witnesses, quorum 3; a frozen gateway shows 2 colluders'
    fresh re-cosignatures and 1 honest old line. The median of the lines shown was fresh: 2
    keys, fewer than the quorum, kept an old view alive. Over the trusted 5, 3 must vouch."""
    old, now = 1_790_000_000, 1_790_010_000
    body = Checkpoint(ORIGIN, 5, hashlib.sha256(b"5").digest()).body()
    lines = [cosign(body, w, old).note_signature() for w in FIVE[:3]]
    lines += [cosign(body, w, now).note_signature() for w in FIVE[:2]]  # the colluders' re-cosignatures
    note = Note(body, (sign(body, HOME), *lines)).encode()
    keys = [w.verifier() for w in FIVE]
    needed = needed_witnesses(5, 3)
    assert needed == 3 and needed_witnesses(5) == 3 and needed_witnesses(4) == 3 and needed_witnesses(5, 4) == 4
    verified = verify_checkpoint(note, HOME.verifier(), keys, 3)
    assert verified_fresh_ms(verified, needed) == old * 1000
    assert stale_since(verified_fresh_ms(verified, needed), now * 1000, 300_000, 10_000, needed)
    (found,) = gather([note], HOME.verifier(), ORIGIN, keys)
    assert found.trusted == 5 and found.fresh_ms == old * 1000
    # 2 lines of 5 trusted: fewer than a majority vouch at all: stale, not "not judged".
    two = Note(body, (sign(body, HOME), *(cosign(body, w, now).note_signature() for w in FIVE[:2]))).encode()
    (found,) = gather([two], HOME.verifier(), ORIGIN, keys)
    assert found.fresh_ms is None and found.since_ms is None
    assert stale_since(found.fresh_ms, now * 1000, 300_000, 10_000, needed_witnesses(found.trusted))
    # A note stripped of every line, with witnesses trusted, is stale; with none trusted, not judged.
    stripped = verify_checkpoint(Note(body, (sign(body, HOME),)).encode(), HOME.verifier(), keys)
    assert stale_since(verified_fresh_ms(stripped, needed_witnesses(5)), now * 1000, 300_000, 10_000, 3)
    assert not stale_since(None, now * 1000, 300_000, 10_000, needed_witnesses(0))


def test_since_is_not_made_old_by_fewer_than_a_majority_of_the_trusted_witnesses() -> None:
    """The same weakness in since_ms (11.4): 1 colluder of 5 backdating its line while the server
    withholds the honest ones made honest, current observers STALE; now 3 of 5 must say so."""
    now = 1_790_000_100
    body = Checkpoint(ORIGIN, 5, hashlib.sha256(b"5").digest()).body()
    backdated = Note(body, (sign(body, HOME), cosign(body, FIVE[0], now - 3600).note_signature())).encode()
    (found,) = gather([backdated], HOME.verifier(), ORIGIN, [w.verifier() for w in FIVE])
    assert found.since_ms is None  # was now - 3600: a majority of the one line shown


def test_vouched_by_counts_the_outside_witnesses_lines_that_verify_each_witness_once() -> None:
    """A client's evidence (15.4 step 8): the cluster's witnesses by the lines 13.5 counted, the
    outside witnesses a genesis lists by each of their lines that verifies on its own (their
    newest), a forged one not at all, and a key under two names (one cluster, one outside) once."""
    old, now = 1_790_000_000, 1_790_000_300
    body = Checkpoint(ORIGIN, 5, hashlib.sha256(b"5").digest()).body()
    outside = [SignerKey(f"example.org/o{i}", ALG_COSIGNATURE_V1, bytes([i + 70]) * 32) for i in range(2)]
    twin = SignerKey("example.org/twin", ALG_COSIGNATURE_V1, bytes([40]) * 32)  # WITNESSES[0]'s key
    forger = SignerKey("example.org/o1", ALG_COSIGNATURE_V1, bytes([99]) * 32)
    lines = [
        cosign(body, WITNESSES[0], old).note_signature(),
        cosign(body, outside[0], old).note_signature(),
        cosign(body, outside[0], now).note_signature(),
        cosign(body, forger, now).note_signature(),
        cosign(body, twin, now).note_signature(),
    ]
    verified = verify_checkpoint(Note(body, (sign(body, HOME), *lines)).encode(), HOME.verifier(), KEYS)
    listed = [outside[0].verifier(), outside[1].verifier(), twin.verifier()]
    assert vouched_by(verified, KEYS) == {WITNESSES[0].name: old * 1000}
    # WITNESSES[0] and the twin are one witness, under the least of their names.
    assert vouched_by(verified, KEYS, listed) == {twin.name: now * 1000, outside[0].name: now * 1000}
    assert distinct_witnesses([*KEYS, *listed]) == 5
