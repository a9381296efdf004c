"""Outside witnesses: the genesis rules that list them, and reading their add-checkpoint answers."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from vledger.node.errors import BadGenesisError, CosignatureError, QuorumError, WitnessRequestError
from vledger.node.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Cosignature,
    SignerKey,
    cosign,
    encode_cosignature_response,
    parse_note,
    verify_checkpoint,
)
from vledger.node.outside import (
    Conflict,
    Cosigned,
    Refused,
    WitnessReply,
    check_witnessed,
    outside_witnesses,
    read_reply,
)
from vledger.node.witness import HomeSigner, home_key, witness_name

CLUSTER, LEDGER = "test", "votes"
SEED = secrets.token_bytes(32)
HOME = HomeSigner(CLUSTER, SEED)
LOG_KEY = home_key(CLUSTER, LEDGER, HOME.key(LEDGER).public_key)
W1 = SignerKey("witness.example/w1", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
W2 = SignerKey("witness.example/w2", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
NOTE = HOME.sign(LEDGER, 3, bytes(range(32))).note
TEXT = parse_note(NOTE).text


def _rules(**fields: Any) -> dict[str, Any]:
    return {"checkpoint_key": LOG_KEY.encode(), **fields}


def test_a_genesis_lists_outside_witnesses_and_a_quorum() -> None:
    listed = outside_witnesses(
        LEDGER, _rules(witnesses=[W1.verifier().encode(), W2.verifier().encode()], quorum=2), CLUSTER
    )
    assert listed is not None and listed.quorum == 2
    assert listed.keys == (W1.verifier(), W2.verifier()) and listed.key(W2.name) == W2.verifier()
    assert outside_witnesses(LEDGER, _rules(), CLUSTER) is None  # a genesis from before the rule


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"witnesses": [W1.verifier().encode()]}, "go together"),
        ({"quorum": 1}, "go together"),
        ({"witnesses": [], "quorum": 1}, "list of 1 to"),
        ({"witnesses": W1.verifier().encode(), "quorum": 1}, "list of 1 to"),
        ({"witnesses": [W1.verifier().encode()], "quorum": 0}, "integer 1..1"),
        ({"witnesses": [W1.verifier().encode()], "quorum": 2}, "integer 1..1"),
        ({"witnesses": [W1.verifier().encode()], "quorum": True}, "integer 1..1"),
        ({"witnesses": [W1.verifier().encode(), W1.verifier().encode()], "quorum": 1}, "repeats"),
        ({"witnesses": [SignerKey(W1.name, ALG_ED25519, W1.seed).verifier().encode()], "quorum": 1}, "type 0x04"),
        ({"witnesses": [W1.verifier().encode()[:-2] + "AA"], "quorum": 1}, r"witnesses\[0\]"),
        ({"witnesses": [7], "quorum": 1}, "vkey string"),
        ({"witnesses": [LOG_KEY.as_cosigner().encode()], "quorum": 1}, "checkpoint key's own"),
    ],
)
def test_a_genesis_with_unusable_outside_witnesses_is_refused(fields: dict[str, Any], why: str) -> None:
    with pytest.raises(BadGenesisError, match=why):
        outside_witnesses(LEDGER, _rules(**fields), CLUSTER)


def test_an_outside_witness_named_as_a_witness_of_the_cluster_is_refused_where_the_cluster_is_known() -> None:
    # Review r19 4: cosigners are told apart by name; such a key's would count as the cluster's own.
    impostor = SignerKey(witness_name(CLUSTER, "replica-1"), ALG_COSIGNATURE_V1, secrets.token_bytes(32))
    rules = _rules(witnesses=[W1.verifier().encode(), impostor.verifier().encode()], quorum=1)
    with pytest.raises(BadGenesisError, match=r"witnesses\[1\] is named as a witness of cluster 'test'"):
        outside_witnesses(LEDGER, rules, CLUSTER)
    listed = outside_witnesses(LEDGER, rules, "other")  # another cluster's witness is an outside one here
    assert listed is not None and listed.key(impostor.name) == impostor.verifier()


def _ok(*keys: SignerKey, timestamp: int = 1_790_000_000) -> WitnessReply:
    return WitnessReply(200, "text/plain", encode_cosignature_response(cosign(TEXT, k, timestamp) for k in keys))


def test_a_cosignature_that_verifies_is_added_to_the_note() -> None:
    outcome = read_reply(_ok(W2, W1), NOTE, W1.verifier())  # another witness's line is dropped
    assert isinstance(outcome, Cosigned) and outcome.cosignature.name == W1.name
    assert verify_checkpoint(outcome.note, LOG_KEY, (W1.verifier(),), 1).witnesses == (W1.name,)
    assert parse_note(outcome.note).text == TEXT and len(parse_note(outcome.note).signatures) == 2


def test_an_unverifiable_answer_is_never_believed() -> None:
    with pytest.raises(WitnessRequestError, match="no cosignature by"):
        read_reply(_ok(W2), NOTE, W1.verifier())
    forged = SignerKey(W1.name, ALG_COSIGNATURE_V1, secrets.token_bytes(32))  # its name, another key
    with pytest.raises(WitnessRequestError):  # another key id: not a line by the witness
        read_reply(_ok(forged), NOTE, W1.verifier())
    good = cosign(TEXT, W1, 1_790_000_000)
    bad = Cosignature(good.name, good.key_id, good.timestamp + 1, good.signature)  # signed another time
    with pytest.raises(CosignatureError, match="does not verify"):
        read_reply(WitnessReply(200, "text/plain", encode_cosignature_response([bad])), NOTE, W1.verifier())
    with pytest.raises(CosignatureError):  # tlog-witness: the timestamp must not be zero
        read_reply(_ok(W1, timestamp=0), NOTE, W1.verifier())
    for garbage in (b"", b"hello\n", b"\xe2\x80\x94 w AAAA\n", b"\xff\xfe\n", b"x" * 70_000):
        with pytest.raises(WitnessRequestError):
            read_reply(WitnessReply(200, "text/plain", garbage), NOTE, W1.verifier())


def test_a_conflict_names_the_witness_size() -> None:
    assert read_reply(WitnessReply(409, "text/x.tlog.size", b"17\n"), NOTE, W1.verifier()) == Conflict(17)
    for content_type, body in (("text/plain", b"17\n"), ("text/x.tlog.size", b"017\n"), ("text/x.tlog.size", b"x")):
        with pytest.raises(WitnessRequestError):
            read_reply(WitnessReply(409, content_type, body), NOTE, W1.verifier())


def test_other_statuses_are_refusals_with_a_printable_reason() -> None:
    outcome = read_reply(WitnessReply(422, "text/plain", b"bad proof\n\x1b[31m"), NOTE, W1.verifier())
    assert isinstance(outcome, Refused) and outcome.status == 422 and "\x1b" not in outcome.reason
    assert read_reply(WitnessReply(404, "", b""), NOTE, W1.verifier()) == Refused(404, "")


def test_witnessed_needs_the_genesis_quorum_of_outside_cosignatures() -> None:
    listed = outside_witnesses(
        LEDGER, _rules(witnesses=[W1.verifier().encode(), W2.verifier().encode()], quorum=2), CLUSTER
    )
    assert listed is not None
    one = read_reply(_ok(W1), NOTE, W1.verifier())
    assert isinstance(one, Cosigned)
    with pytest.raises(QuorumError, match=r"outside witnesses .*none from witness\.example/w2"):
        check_witnessed(one.note, LOG_KEY, listed)
    two = read_reply(_ok(W2), one.note, W2.verifier())
    assert isinstance(two, Cosigned)
    assert check_witnessed(two.note, LOG_KEY, listed).witnesses == (W1.name, W2.name)
