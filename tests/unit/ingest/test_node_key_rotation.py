"""Which key generation a node's request socket serves where, through a rotation's window."""

from __future__ import annotations

from vledger.ingest.node_key_rotation import serving_generations
from vledger.node.node_key_rotation import key_histories

K0, K1, K2 = ("A" * 40, "B" * 40, "C" * 40)


def test_the_endpoint_keeps_the_old_key_for_the_window_and_the_rotation_endpoint_has_the_new() -> None:
    rotation = {"node": "ingest-1", "curve": K1, "sign": "1" * 64, "accepted": 1000, "until": 5000}
    history = key_histories({"ingest-1": (K0, "0" * 64)}, [rotation])["ingest-1"]
    assert serving_generations(None, 3000) == (0, None)
    assert serving_generations(history, 999) == (0, None)
    assert serving_generations(history, 1000) == (0, 1)
    assert serving_generations(history, 4999) == (0, 1)
    assert serving_generations(history, 5000) == (1, None)  # the old key's listener is gone


def test_a_node_restarted_after_two_rotations_serves_the_newest_on_its_endpoint() -> None:
    rotations = [
        {"node": "ingest-1", "curve": K1, "sign": "1" * 64, "accepted": 1000, "until": 5000},
        {"node": "ingest-1", "curve": K2, "sign": "2" * 64, "accepted": 6000, "until": 9000},
    ]
    history = key_histories({"ingest-1": (K0, "0" * 64)}, rotations)["ingest-1"]
    assert serving_generations(history, 7000) == (1, 2)
    assert serving_generations(history, 9000) == (2, None)
