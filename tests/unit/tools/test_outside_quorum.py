"""What a ledger's outside witnesses cosigned, from notes nothing vouches for (tools/outside_quorum.py)."""

from __future__ import annotations

import secrets

from vledger.node.note import ALG_COSIGNATURE_V1, SignerKey, cosign, parse_note
from vledger.node.outside import OutsideWitnesses
from vledger.node.witness import HomeSigner, home_key
from vledger.tools.outside_quorum import forged_notes, signed, witnessed

CLUSTER, LEDGER = "test", "votes"
ORIGIN = f"{CLUSTER}/{LEDGER}"
HOME = HomeSigner(CLUSTER, secrets.token_bytes(32))
LOG_KEY = home_key(CLUSTER, LEDGER, HOME.key(LEDGER).public_key)
W1 = SignerKey("witness.example/w1", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
W2 = SignerKey("witness.example/w2", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
OUTSIDE = OutsideWitnesses((W1.verifier(), W2.verifier()), 2)


def _cosigned(size: int, *witnesses: SignerKey, root: bytes | None = None) -> bytes:
    note = parse_note(HOME.sign(LEDGER, size, root or bytes([size]) * 32).note)
    lines = [cosign(note.text, w, 1_700_000_000 + size).note_signature() for w in witnesses]
    return note.with_signatures(*lines).encode()


def test_the_quorum_checkpoint_is_the_largest_a_quorum_cosigned_across_notes() -> None:
    # Each witness's note carries its own line: the quorum is met by gathering both.
    notes = [_cosigned(5, W1), _cosigned(5, W2), _cosigned(7, W1)]
    seen = witnessed(notes, [LOG_KEY], ORIGIN, OUTSIDE)
    assert seen.checkpoint is not None and seen.checkpoint.checkpoint.size == 5
    assert seen.checkpoint.witnesses == (W1.name, W2.name)
    assert [g.checkpoint.size for g in signed(notes, [LOG_KEY], ORIGIN)] == [7, 5]


def test_no_quorum_names_who_is_missing_and_a_forged_line_counts_for_nothing() -> None:
    genuine = _cosigned(5, W1)
    # W1's signature under W2's name: the home's hash holds it under W2, the key id is not W2's.
    relabelled = genuine.replace(W1.name.encode(), W2.name.encode())
    seen = witnessed([genuine, relabelled], [LOG_KEY], ORIGIN, OUTSIDE)
    assert seen.checkpoint is None
    assert seen.missing() == [W2.name]
    assert "no checkpoint cosigned by 2 of the 2 outside witnesses" in seen.shortfall(LEDGER)
    assert "at most 1, at size 5" in seen.shortfall(LEDGER) and W2.name in seen.shortfall(LEDGER)
    bad = forged_notes({W1.name: genuine, W2.name: relabelled, "someone/else": genuine}, OUTSIDE, ORIGIN)
    assert bad == ["someone/else (no witness the genesis lists)", f"{W2.name} (its cosignature does not verify)"]


def test_a_checkpoint_the_home_s_key_did_not_sign_is_no_quorum_checkpoint() -> None:
    other = HomeSigner(CLUSTER, secrets.token_bytes(32))
    note = parse_note(other.sign(LEDGER, 9, bytes(32)).note)
    lines = [cosign(note.text, w, 1_700_000_000).note_signature() for w in (W1, W2)]
    seen = witnessed([note.with_signatures(*lines).encode()], [LOG_KEY], ORIGIN, OUTSIDE)
    assert seen.checkpoint is None and seen.most is None and seen.missing() == [W1.name, W2.name]
