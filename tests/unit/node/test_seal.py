"""Seals (node/seal.py): the exact bytes a home node signs, and the wire form ``[height, hash, home, signature]``.

Signatures are not made or checked here (broker/signing.py does; tests/unit/broker/test_signing.py):
this is the message every implementation must sign byte for byte, and the shape checks a
seal passes before anyone looks at its signature.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vledger.node.errors import FeedError
from vledger.node.seal import SEAL_PREFIX, Seal, seal_from_wire, seal_message
from vledger.node.storefile import MAX_HEIGHT

LINK = bytes(range(32))
SIGNATURE = bytes(range(64, 128))
SEAL = Seal("ledger-a", 258, LINK, "ingest-1", SIGNATURE)

# seal_message("ledger-a", 258, LINK, "ingest-1"), written out by hand from docs/PROTOCOL.md 10.7:
# utf8("vledger seal v1") 00 utf8(ledger) 00 utf8(home) 00 u64be(height) link.
VECTOR = bytes.fromhex(
    "766c6564676572207365616c20763100"  # "vledger seal v1" NUL
    "6c65646765722d6100"  # "ledger-a" NUL
    "696e676573742d3100"  # "ingest-1" NUL
    "0000000000000102"  # 258, eight bytes, big-endian
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"  # the link
)

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
heights = st.integers(min_value=0, max_value=MAX_HEIGHT - 1)
seals = st.builds(
    Seal,
    ledger=names,
    height=heights,
    hash=st.binary(min_size=32, max_size=32),
    home=names,
    signature=st.binary(min_size=64, max_size=64),
)


# --- the message signed ----------------------------------------------------------------------------


def test_the_message_is_the_hand_computed_vector() -> None:
    assert SEAL_PREFIX == b"vledger seal v1\x00"
    assert seal_message("ledger-a", 258, LINK, "ingest-1") == VECTOR
    assert len(VECTOR) == 16 + 9 + 9 + 8 + 32
    assert SEAL.message == VECTOR


def test_the_height_is_eight_bytes_big_endian_at_both_ends_of_its_range() -> None:
    assert seal_message("a", 0, bytes(32), "b") == b"vledger seal v1\x00a\x00b\x00" + bytes(8) + bytes(32)
    top = seal_message("a", MAX_HEIGHT - 1, bytes(32), "b")
    assert top[-40:-32] == bytes.fromhex("7ffffffffffffffe")


def test_every_field_changes_the_message() -> None:
    messages = {
        seal_message("ledger-a", 258, LINK, "ingest-1"),
        seal_message("ledger-b", 258, LINK, "ingest-1"),
        seal_message("ledger-a", 259, LINK, "ingest-1"),
        seal_message("ledger-a", 258, bytes(32), "ingest-1"),
        seal_message("ledger-a", 258, LINK, "ingest-2"),
        seal_message("ingest-1", 258, LINK, "ledger-a"),  # ledger and home swapped
    }
    assert len(messages) == 6


@given(seal=seals)
def test_the_message_reads_back_into_its_fields(seal: Seal) -> None:
    """No two seals share a message: the names end at a NUL (which no name holds), the rest is fixed-size."""
    message = seal.message
    assert message.startswith(SEAL_PREFIX)
    ledger, home, tail = message[len(SEAL_PREFIX) :].split(b"\x00", 2)
    assert (ledger.decode(), home.decode()) == (seal.ledger, seal.home)
    assert len(tail) == 40
    assert (int.from_bytes(tail[:8], "big"), tail[8:]) == (seal.height, seal.hash)


# --- the wire form ---------------------------------------------------------------------------------


def test_the_wire_form_is_height_hash_home_signature() -> None:
    assert SEAL.wire() == [258, LINK, "ingest-1", SIGNATURE]
    assert seal_from_wire("ledger-a", [258, LINK, "ingest-1", SIGNATURE]) == SEAL


@given(seal=seals)
def test_a_seal_round_trips_through_its_wire_form_and_msgpack(seal: Seal) -> None:
    assert seal_from_wire(seal.ledger, seal.wire()) == seal
    packed = msgpack.packb(seal.wire())  # as a stream entry and vledger:seals hold it
    assert seal_from_wire(seal.ledger, msgpack.unpackb(packed, raw=False)) == seal


def test_the_limits_of_each_field_are_accepted() -> None:
    name = "a" * 64
    assert seal_from_wire(name, [0, LINK, name, SIGNATURE]) == Seal(name, 0, LINK, name, SIGNATURE)
    assert seal_from_wire("0", [MAX_HEIGHT - 1, LINK, "9", SIGNATURE]).height == MAX_HEIGHT - 1


def wire(**changes: Any) -> list[Any]:
    fields = {"height": 258, "hash": LINK, "home": "ingest-1", "signature": SIGNATURE, **changes}
    return list(fields.values())


BAD_SHAPES: list[tuple[str, object, object]] = [
    ("nil", "ledger-a", None),
    ("a map", "ledger-a", {"height": 258, "hash": LINK, "home": "ingest-1", "signature": SIGNATURE}),
    ("a tuple", "ledger-a", tuple(wire())),
    ("bytes", "ledger-a", LINK),
    ("an empty list", "ledger-a", []),
    ("a head before seals: [height, hash]", "ledger-a", [258, LINK]),
    ("three items", "ledger-a", wire()[:3]),
    ("five items", "ledger-a", [*wire(), 1]),
    ("another order", "ledger-a", [LINK, 258, "ingest-1", SIGNATURE]),
    ("a negative height", "ledger-a", wire(height=-1)),
    ("a height past SQLite's integers", "ledger-a", wire(height=MAX_HEIGHT)),
    ("a boolean height", "ledger-a", wire(height=True)),
    ("a float height", "ledger-a", wire(height=258.0)),
    ("a text height", "ledger-a", wire(height="258")),
    ("a 31-byte hash", "ledger-a", wire(hash=LINK[:31])),
    ("a 33-byte hash", "ledger-a", wire(hash=LINK + b"\x00")),
    ("a hex hash", "ledger-a", wire(hash=LINK.hex())),
    ("a bytearray hash", "ledger-a", wire(hash=bytearray(LINK))),
    ("a nil hash", "ledger-a", wire(hash=None)),
    ("a 63-byte signature", "ledger-a", wire(signature=SIGNATURE[:63])),
    ("a 65-byte signature", "ledger-a", wire(signature=SIGNATURE + b"\x00")),
    ("an empty signature", "ledger-a", wire(signature=b"")),
    ("a hex signature", "ledger-a", wire(signature=SIGNATURE.hex())),
    ("a nil signature", "ledger-a", wire(signature=None)),
    ("an empty home", "ledger-a", wire(home="")),
    ("an upper-case home", "ledger-a", wire(home="Ingest-1")),
    ("a home with a NUL", "ledger-a", wire(home="ingest\x001")),
    ("a home with a slash", "ledger-a", wire(home="../ingest-1")),
    ("a home of 65 characters", "ledger-a", wire(home="a" * 65)),
    ("a home that is bytes", "ledger-a", wire(home=b"ingest-1")),
    ("a home that is a number", "ledger-a", wire(home=1)),
    ("an empty ledger", "", wire()),
    ("a ledger with a space", "ledger a", wire()),
    ("a ledger with a NUL", "ledger\x00a", wire()),
    ("a ledger starting with a dash", "-ledger", wire()),
    ("a ledger of 65 characters", "a" * 65, wire()),
    ("a ledger that is bytes", b"ledger-a", wire()),
    ("a ledger that is nil", None, wire()),
]


@pytest.mark.parametrize(
    ("ledger", "value"), [(ledger, value) for _, ledger, value in BAD_SHAPES], ids=[what for what, _, _ in BAD_SHAPES]
)
def test_every_other_shape_is_refused(ledger: object, value: object) -> None:
    with pytest.raises(FeedError) as caught:
        seal_from_wire(ledger, value)
    assert caught.value.code == "bad_feed"


@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.binary() | st.text(), st.lists, max_leaves=8))
def test_anything_else_is_a_seal_or_a_feed_error(value: object) -> None:
    try:
        seal = seal_from_wire("ledger-a", value)
    except FeedError:
        return
    assert seal.wire() == value
