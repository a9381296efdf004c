"""A node's key generations: which CURVE keys are in force when (node/node_key_rotation.py)."""

from __future__ import annotations

from vledger.node.node_key_rotation import (
    NO_SIGN_KEY,
    curve_key_problem,
    key_histories,
    rotation_sign_problem,
    sign_key_problem,
)

K0, K1, K2 = ("A" * 40, "B" * 40, "C" * 40)
S0, S1, S2 = ("0" * 64, "1" * 64, "2" * 64)


def _rotation(node: str, curve: str, sign: str, accepted: int, until: int) -> dict[str, object]:
    return {"node": node, "curve": curve, "sign": sign, "accepted": accepted, "until": until, "via": ""}


def test_without_a_rotation_the_key_files_are_in_force() -> None:
    history = key_histories({"ingest-1": (K0, S0)}, [])["ingest-1"]
    assert history.curve_keys(0) == (K0,) and history.curve_keys(10**15) == (K0,)
    assert history.window_end(5) is None and history.newest.number == 0


def test_both_keys_during_the_window_and_only_the_new_one_after_it() -> None:
    history = key_histories({"ingest-1": (K0, S0)}, [_rotation("ingest-1", K1, S1, 1000, 5000)])["ingest-1"]
    assert history.curve_keys(999) == (K0,)  # before the record: it is not yet in force
    assert history.curve_keys(1000) == (K1, K0)
    assert history.window_end(1000) == 5000
    assert history.curve_keys(4999) == (K1, K0)
    assert history.curve_keys(5000) == (K1,)  # until is the first moment the old key is refused
    assert history.window_end(5000) is None
    assert history.newest.sign == S1


def test_a_second_rotation_ends_the_first_generation_for_good() -> None:
    rotations = [_rotation("ingest-1", K1, S1, 1000, 5000), _rotation("ingest-1", K2, S2, 3000, 9000)]
    history = key_histories({"ingest-1": (K0, S0)}, rotations)["ingest-1"]
    # A rotation during another's window: the newest and the one it replaced, never three.
    assert history.curve_keys(3000) == (K2, K1)
    assert history.curve_keys(9000) == (K2,)
    assert [g.number for g in history.generations] == [0, 1, 2]


def test_other_nodes_keep_their_keys_and_a_node_without_files_starts_at_its_rotation() -> None:
    histories = key_histories(
        {"ingest-1": (K0, S0), "replica-1": (K2, S2)}, [_rotation("ingest-9", K1, S1, 1000, 5000)]
    )
    assert histories["replica-1"].curve_keys(2000) == (K2,)
    assert histories["ingest-9"].curve_keys(2000) == (K1,)
    assert histories["ingest-9"].curve_keys(0) == (K1,)


def test_key_texts_are_checked() -> None:
    assert curve_key_problem(K0) is None and sign_key_problem(S0) is None
    assert curve_key_problem("A" * 39) is not None and curve_key_problem(None) is not None
    assert sign_key_problem("G" * 64) is not None and sign_key_problem(S0.upper().replace("0", "A")) is not None


def test_an_old_ed25519_key_counts_only_for_signatures_stamped_before_the_window_s_end() -> None:
    # A replica's rotation: its CURVE key stays, its Ed25519 key changes (PROTOCOL 16.6).
    history = key_histories({"replica-1": (K0, S0)}, [_rotation("replica-1", K0, S1, 1000, 5000)])["replica-1"]
    assert history.sign_keys() == (S1, S0)
    assert history.signs_at(S0, 4999)  # stamped in the window: the old key still counts
    assert not history.signs_at(S0, 5000)  # at until and after: no longer
    assert not history.signs_at(S0, 10**15)
    assert history.signs_at(S1, 0) and history.signs_at(S1, 10**15)  # the newest key always
    assert not history.signs_at(S2, 1000)  # a key the node never had
    # Its CURVE key did not rotate: generation 1 serves the files of generation 0.
    assert history.curve_generation(1) == 0 and history.curve_keys(2000) == (K0,)


def test_a_key_kept_through_a_curve_rotation_stays_in_force_and_a_twice_replaced_key_ends_at_its_own_window() -> None:
    rotations = [
        _rotation("n", K1, S0, 1000, 5000),
        _rotation("n", K1, S1, 6000, 8000),
        _rotation("n", K1, S2, 9000, 12000),
    ]
    history = key_histories({"n": (K0, S0)}, rotations)["n"]
    assert history.curve_generation(1) == 1 and history.curve_generation(3) == 1
    assert history.signs_at(S0, 7999) and not history.signs_at(S0, 8000)  # replaced by generation 2 only
    assert history.signs_at(S1, 11_999) and not history.signs_at(S1, 12_000)
    assert history.signs_at(S2, 12_000)


def test_a_verifier_s_rotation_has_no_ed25519_key_and_its_curve_keys_rotate_as_any_node_s() -> None:
    # A verifier signs nothing: generation 0 and each rotation have sign "" (PROTOCOL 16.6).
    history = key_histories({"verifier-1": (K0, "")}, [_rotation("verifier-1", K1, "", 1000, 5000)])["verifier-1"]
    assert history.curve_keys(4999) == (K1, K0) and history.curve_keys(5000) == (K1,)
    assert history.newest_curve_generation(1000) == 1
    assert history.sign_keys() == ()  # no Ed25519 key ever: nothing counts as its signature
    assert not history.signs_at("", 0)


def test_a_rotation_s_sign_is_a_key_or_empty_for_a_node_without_one() -> None:
    assert rotation_sign_problem(S0) is None and rotation_sign_problem(NO_SIGN_KEY) is None
    for bad in (None, " ", "0", S0.upper().replace("0", "A"), 0, b""):
        assert rotation_sign_problem(bad) is not None, bad


def test_a_replaced_key_cosigns_only_checkpoints_no_larger_than_its_rotation_states() -> None:
    # PROTOCOL 16.6: the rotation states what the old key had cosigned, per ledger; T is the
    # signer's claim, the sizes are the admin ledger's.
    rotation = _rotation("replica-1", K0, S1, 1000, 5000) | {"cosigned": {"polls": 10}}
    history = key_histories({"replica-1": (K0, S0)}, [rotation])["replica-1"]
    assert history.cosigns(S0, 4999, "polls", 10) and history.cosigns(S0, 0, "polls", 1)
    assert not history.cosigns(S0, 4999, "polls", 11)  # larger: whatever T it claims
    assert not history.cosigns(S0, 4999, "other", 1)  # a ledger not listed
    assert not history.cosigns(S0, 5000, "polls", 10)  # stamped at until: the window still bounds it
    assert history.cosigns(S1, 10**15, "polls", 10**9)  # the newest key: any checkpoint
    assert not history.cosigns(S2, 0, "polls", 1)
    # A rotation written before 16.6 stated sizes: the window alone, as before.
    legacy = key_histories({"replica-1": (K0, S0)}, [_rotation("replica-1", K0, S1, 1000, 5000)])["replica-1"]
    assert legacy.cosigns(S0, 4999, "polls", 10**9) and not legacy.cosigns(S0, 5000, "polls", 1)


def test_a_replaced_key_s_tally_counts_only_at_heights_no_larger_than_its_rotation_states() -> None:
    # PROTOCOL 11.3, 16.6: an observer's rotation states the largest tally height its old key
    # had signed, per ledger; at_ms is the signer's claim, the heights are the admin ledger's.
    rotation = _rotation("observer-1", K0, S1, 1000, 5000) | {"cosigned": {"polls": 10}, "tallied": {"polls": 9}}
    history = key_histories({"observer-1": (K0, S0)}, [rotation])["observer-1"]
    assert history.tallies(S0, 4999, "polls", 9) and history.tallies(S0, 0, "polls", 0)
    assert not history.tallies(S0, 4999, "polls", 10)  # larger: whatever at_ms it claims
    assert not history.tallies(S0, 4999, "other", 0)  # a ledger not listed
    assert not history.tallies(S0, 5000, "polls", 9)  # at until: the window still bounds it
    assert history.tallies(S1, 10**15, "polls", 10**9)  # the newest key: any height
    assert not history.tallies(S2, 0, "polls", 0)
    # The two bounds are apart: the sizes bound cosignatures, the heights tallies.
    assert history.cosigns(S0, 4999, "polls", 10) and not history.tallies(S0, 4999, "polls", 10)
    # A rotation that states cosigned sizes but no tallied heights (written before 16.6 said
    # so of tallies), or neither: a tally by the old key is bounded by the window alone.
    for older in (_rotation("observer-1", K0, S1, 1000, 5000) | {"cosigned": {"polls": 10}}, rotation):
        legacy = key_histories({"observer-1": (K0, S0)}, [{k: v for k, v in older.items() if k != "tallied"}])
        assert legacy["observer-1"].tallies(S0, 4999, "polls", 10**9)
        assert not legacy["observer-1"].tallies(S0, 5000, "polls", 0)


def test_the_newest_key_given_as_generation_0_counts_on_any_checkpoint() -> None:
    # A verifier given the witness's newest key (`vledger receipt keys`) has it twice: as
    # generation 0 and as the rotation's generation 1, which bounds only the key it replaced.
    rotation = _rotation("replica-1", K0, S1, 1000, 5000) | {"cosigned": {"polls": 10}}
    history = key_histories({"replica-1": (K0, S1)}, [rotation])["replica-1"]
    assert history.cosigns(S1, 10**15, "polls", 10**9) and history.cosigns(S1, 0, "other", 1)
