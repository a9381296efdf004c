"""Sealed ids (node/sealed.py): deterministic AES-256-SIV, opened only with the key and context."""

from __future__ import annotations

import base64
import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vledger.node.errors import SealError, VledgerError
from vledger.node.sealed import (
    BUCKETS,
    MAX_INFO_BYTES,
    is_sealed,
    new_seal_key,
    pad,
    seal,
    siv_decrypt,
    siv_encrypt,
    unpad,
    unseal,
)

KEY = bytes(range(64))
OTHER_KEY = bytes(range(1, 65))
SPELLING = re.compile(r"S2-[a-z2-7]+")
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def body(sealed: str) -> bytes:
    text = sealed[3:].upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def spelt(prefix: str, data: bytes) -> str:
    return prefix + base64.b32encode(data).decode().rstrip("=").lower()


def seal_v1(key: bytes, info: str, context: str = "") -> str:
    """An S1 id as PROTOCOL 8 spells version 1 (nothing writes them now; chains hold them)."""
    return spelt("S1-", siv_encrypt(key, info.encode(), context.encode()))


def test_seal_and_unseal_round_trip_non_ascii() -> None:
    sealed = seal(KEY, "Zoë Ābele, ID 7781", "zakat-fund")
    assert SPELLING.fullmatch(sealed)
    assert unseal(KEY, sealed, "zakat-fund") == "Zoë Ābele, ID 7781"


@given(st.text(), st.text())
def test_any_text_round_trips_in_normal_form_c(info: str, context: str) -> None:
    assert unseal(KEY, seal(KEY, info, context), context) == unicodedata.normalize("NFC", info)


def test_a_name_typed_decomposed_is_the_same_donor_as_typed_composed() -> None:
    """The outsider's "Zoë" typed with a combining diaeresis (macOS input) got a second id."""
    composed, decomposed = "Zo\u00eb Ahmed, +966 5", "Zoe\u0308 Ahmed, +966 5"
    assert composed != decomposed
    assert seal(KEY, decomposed, "relief") == seal(KEY, composed, "relief")
    assert unseal(KEY, seal(KEY, decomposed, "relief"), "relief") == composed


def test_sealing_is_deterministic() -> None:
    assert seal(KEY, "Zoë") == seal(KEY, "Zoë") == seal(KEY, "Zoë", "")
    assert seal(KEY, "Zoë") != seal(KEY, "Zoe")


def test_the_id_depends_on_key_and_context() -> None:
    ids = {seal(KEY, "Zoë", "a"), seal(KEY, "Zoë", "b"), seal(OTHER_KEY, "Zoë", "a"), seal(KEY, "Zoë")}
    assert len(ids) == 4


def test_the_byte_format_is_tag_then_ciphertext_of_the_padded_info() -> None:
    """S2- || base32(V || C): the 16-byte synthetic IV, then the info, 0x80 and zeros to a bucket."""
    for info, bucket in (("", 64), ("Zoë", 64), ("x" * 100, 128)):
        padded = info.encode() + b"\x80" + bytes(bucket - len(info.encode()) - 1)
        data = body(seal(KEY, info, "ctx"))
        assert len(data) == 16 + bucket
        assert data == siv_encrypt(KEY, padded, b"ctx")


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        *[(0, 64), (1, 64), (31, 64), (32, 64), (33, 64), (63, 64), (64, 128), (127, 128), (128, 256)],
        *[(255, 256), (256, 512), (511, 512), (512, 1024), (MAX_INFO_BYTES, 1024)],
    ],
)
def test_the_id_tells_only_the_bucket_of_the_info(size: int, bucket: int) -> None:
    """A name of 1 byte and one of 63 give ids of one length; the length grows only past a bucket."""
    sealed = seal(KEY, "x" * size, "ctx")
    assert len(body(sealed)) == 16 + bucket
    assert len(sealed) == len(seal(KEY, "y" * (bucket - 1), "ctx"))
    assert bucket == 64 or len(sealed) > len(seal(KEY, "y" * (bucket // 2 - 1), "ctx"))
    assert unseal(KEY, sealed, "ctx") == "x" * size


def test_the_outsiders_two_donors_give_ids_of_one_length() -> None:
    short, long = seal(KEY, "A", "zakat"), seal(KEY, "Zoe Ahmed, +966 5 0123 4567, ID 1098765432", "zakat")
    assert len(short) == len(long) == 3 + 128  # 80 bytes: 16 of tag, 64 of padded info
    assert {len(seal(KEY, "x" * n)) for n in range(64)} == {131}


def test_the_pad_counts_utf8_bytes_not_characters() -> None:
    assert len(body(seal(KEY, "ë" * 31))) == 16 + 64  # 62 bytes
    assert len(body(seal(KEY, "ë" * 32))) == 16 + 128  # 64 bytes


def test_info_longer_than_the_last_bucket_is_refused() -> None:
    assert unseal(KEY, seal(KEY, "x" * MAX_INFO_BYTES)) == "x" * MAX_INFO_BYTES
    for info in ("x" * (MAX_INFO_BYTES + 1), "ë" * 512):
        with pytest.raises(SealError, match=f"at most {MAX_INFO_BYTES}") as caught:
            seal(KEY, info)
        assert caught.value.code == "bad_seal"


@given(st.binary(max_size=MAX_INFO_BYTES))
def test_pad_and_unpad_are_inverse_and_land_on_a_bucket(info: bytes) -> None:
    padded = pad(info)
    assert len(padded) in BUCKETS and len(padded) > len(info)
    assert len(padded) == 64 or len(info) >= len(padded) // 2  # the smallest bucket that holds it
    assert unpad(padded) == info


@pytest.mark.parametrize(
    ("name", "padded"),
    [
        ("no mark, only zeros", bytes(64)),
        ("the mark is not 0x80", b"Zoe\x81" + bytes(60)),
        ("a non-zero byte after the mark", b"Zoe\x80" + bytes(59) + b"\x01"),
        ("a bucket larger than the info needs", b"Zoe\x80" + bytes(124)),
        ("not a bucket size", b"Zoe\x80" + bytes(28)),
        ("the mark is the info's last byte, no room for it", b"x" * 64),
        ("an empty plaintext", b""),
    ],
)
def test_a_forged_pad_is_refused_even_when_authentic(name: str, padded: bytes) -> None:
    """Only the key's holder can make these; the strict check keeps one id per info all the same."""
    assert unpad(padded) is None, name
    forged = spelt("S2-", siv_encrypt(KEY, padded, b"ctx"))
    with pytest.raises(SealError):
        unseal(KEY, forged, "ctx")


def test_a_non_minimal_pad_would_be_a_second_id_for_the_same_info() -> None:
    forged = spelt("S2-", siv_encrypt(KEY, b"Zoe\x80" + bytes(124), b"ctx"))
    assert is_sealed(forged)  # its length is a bucket: only the key tells
    with pytest.raises(SealError, match="not padded as S2- ids are"):
        unseal(KEY, forged, "ctx")


def test_s1_ids_already_on_chains_still_open_and_are_still_sealed_ids() -> None:
    old = seal_v1(KEY, "Zoë Ābele, ID 7781", "zakat-fund")
    assert re.fullmatch(r"S1-[a-z2-7]+", old)
    assert len(body(old)) == 16 + len("Zoë Ābele, ID 7781".encode())
    assert is_sealed(old)
    assert unseal(KEY, old, "zakat-fund") == "Zoë Ābele, ID 7781"
    assert seal(KEY, "Zoë Ābele, ID 7781", "zakat-fund") != old  # new seals are S2: another id
    with pytest.raises(SealError):
        unseal(KEY, old, "other-fund")
    with pytest.raises(SealError):
        unseal(OTHER_KEY, old, "zakat-fund")


@given(st.text(), st.text())
def test_s1_ids_of_any_text_open(info: str, context: str) -> None:
    assert unseal(KEY, seal_v1(KEY, info, context), context) == info


@pytest.mark.parametrize("info", ["", "Zoe", "ë" * 31, "x" * 64])
def test_an_s2_body_relabelled_s1_does_not_open(info: str) -> None:
    """The versions share key and associated data: the pad's 0x80 right after whole UTF-8 refuses it."""
    with pytest.raises(SealError, match="not UTF-8"):
        unseal(KEY, "S1-" + seal(KEY, info, "ctx")[3:], "ctx")


def test_an_s1_body_relabelled_s2_does_not_open() -> None:
    """An S1 info that looks padded (a bucket long, 0x80 then zeros) ends its 0x80 inside a character."""
    info = "x" * 61 + "Ā" + "\x00"  # "Ā" is C4 80: 64 bytes ending 80 00
    old = seal_v1(KEY, info, "ctx")
    assert unseal(KEY, old, "ctx") == info
    with pytest.raises(SealError, match="not UTF-8"):
        unseal(KEY, "S2-" + old[3:], "ctx")


def test_aes_siv_matches_rfc_5297() -> None:
    """RFC 5297 appendix A.1 (AES-128-SIV, one associated-data component): V || C."""
    key = bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    ad = bytes.fromhex("101112131415161718191a1b1c1d1e1f2021222324252627")
    plaintext = bytes.fromhex("112233445566778899aabbccddee")
    expected = bytes.fromhex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c")
    assert siv_encrypt(key, plaintext, ad) == expected
    assert siv_decrypt(key, expected, ad) == plaintext


def test_an_empty_context_is_one_empty_component_not_none() -> None:
    from Crypto.Cipher import AES

    cipher = AES.new(KEY, AES.MODE_SIV)  # no associated data at all
    ciphertext, tag = cipher.encrypt_and_digest(pad(b"Zoe"))
    assert body(seal(KEY, "Zoe")) != tag + ciphertext
    assert body(seal(KEY, "Zoe")) == siv_encrypt(KEY, pad(b"Zoe"), b"")


def test_the_wrong_key_is_refused() -> None:
    sealed = seal(KEY, "Zoë", "zakat-fund")
    with pytest.raises(SealError) as caught:
        unseal(OTHER_KEY, sealed, "zakat-fund")
    assert caught.value.code == "bad_seal"
    assert isinstance(caught.value, VledgerError)


@pytest.mark.parametrize("context", ["", "other-fund", "zakat-fund ", "Zakat-fund"])
def test_the_wrong_context_is_refused(context: str) -> None:
    with pytest.raises(SealError):
        unseal(KEY, seal(KEY, "Zoë", "zakat-fund"), context)


@given(st.data())
def test_any_changed_character_is_refused(data: st.DataObject) -> None:
    sealed = seal(KEY, "Zoë", "ctx")
    index = data.draw(st.integers(0, len(sealed) - 1))
    replacement = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz234567S1-=A"))
    changed = sealed[:index] + replacement + sealed[index + 1 :]
    if changed != sealed:
        with pytest.raises(SealError):
            unseal(KEY, changed, "ctx")


@given(st.data())
def test_any_flipped_bit_is_refused(data: st.DataObject) -> None:
    prefix = data.draw(st.sampled_from(["S1-", "S2-"]))
    sealed = seal(KEY, "Zoë", "ctx") if prefix == "S2-" else seal_v1(KEY, "Zoë", "ctx")
    raw = bytearray(body(sealed))
    bit = data.draw(st.integers(0, 8 * len(raw) - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SealError):
        unseal(KEY, spelt(prefix, bytes(raw)), "ctx")


@pytest.mark.parametrize(
    ("sealed", "length"),
    [
        (seal_v1(KEY, "Zoe"), 31),  # 16 + 3 bytes: 31 characters, the last with 3 unused bits
        (seal(KEY, "x" * 64), 231),  # 16 + 128 bytes: 231 characters, the last with 3 unused bits
    ],
)
def test_only_the_one_exact_spelling_is_accepted(sealed: str, length: int) -> None:
    assert len(sealed) == 3 + length
    last = ALPHABET.index(sealed[-1])
    same_bytes = sealed[:-1] + ALPHABET[last ^ 1]
    assert body(same_bytes) == body(sealed)  # a lax decoder would take it
    for spelling in (
        same_bytes,
        sealed.upper(),
        sealed[:3] + sealed[3:].upper(),
        sealed + "=",
        sealed + "=====",
        sealed[:3].lower() + sealed[3:],
    ):
        assert not is_sealed(spelling)
        with pytest.raises(SealError, match="not a sealed id"):
            unseal(KEY, spelling)


@pytest.mark.parametrize(
    "text",
    ["", "S1-", "S2-", "S2-" + "a" * 26, "S1-" + "a" * 25, "S1-abc", "S1-a", "Zoë", "S1-aaaaaaaaa!", "S3-" + "a" * 128]
    + ["S2-" + "a" * 125, "S2-" + "a" * 130, "S2-" + "a" * 230]  # 78, 81 and 143 bytes: no bucket
    + [spelt("S2-", bytes(16 + n)) for n in (0, 1, 32, 63, 65, 2048)],
)
def test_malformed_ids_are_refused(text: str) -> None:
    assert not is_sealed(text)
    with pytest.raises(SealError):
        unseal(KEY, text)


def test_is_sealed_accepts_real_ids() -> None:
    assert is_sealed(seal(KEY, ""))
    assert is_sealed(seal(new_seal_key(), "Zoë", "ctx"))
    assert is_sealed(seal_v1(KEY, ""))
    assert is_sealed(seal_v1(new_seal_key(), "Zoë", "ctx"))
    assert all(is_sealed(spelt("S2-", bytes(16 + bucket))) for bucket in BUCKETS)  # the key alone tells more


@pytest.mark.parametrize("key", [b"", bytes(32), bytes(63), bytes(65), "k" * 64])
def test_keys_are_64_bytes(key: object) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        seal(key, "Zoë")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 bytes"):
        unseal(key, seal(KEY, "Zoë"))  # type: ignore[arg-type]


def test_new_keys_are_fresh_64_byte_keys() -> None:
    keys = {new_seal_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(key) == 64 for key in keys)
