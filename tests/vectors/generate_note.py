"""Write tests/vectors/note.json: signed-note, checkpoint and cosignature vectors (PROTOCOL 13).

    .venv/bin/python tests/vectors/generate_note.py

Two kinds of vectors, kept apart in the file:

- ``outside``: published by others, copied verbatim with the repository, path and commit
  they come from. Our code must accept, refuse and reproduce them as their authors' code does.
- ``vledger``: ours, made here from fixed keys and times with vledger.node.note, so an
  outsider can check an implementation of PROTOCOL section 13 against them.

tests/unit/node/test_note.py checks every vector and that this script still writes the
committed file byte for byte.
"""

# ruff: noqa: E501  (published vectors are copied verbatim, one string a line)

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from vledger.node import note

HERE = Path(__file__).parent

C2SP = {"repo": "github.com/C2SP/C2SP", "commit": "5ba5ee830903e91240fc6f9f3a7a9293d49e69c9"}
GO_MOD = {"repo": "github.com/golang/mod", "commit": "fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db"}
FORMATS = {"repo": "github.com/transparency-dev/formats", "commit": "0b850f1a7b4a5b70deeacac6535e4b8023809d21"}
# A production checkpoint of the Arche 2025h1 staging CT log (its Ed25519 note key and an
# RFC 6962 STH signature) with five witness cosignatures, quoted in tlog-scales' test of
# c2sp signing. The remora.n621.de witness key is also published in transparency-dev/formats,
# so its cosignature is checked against a key from a second source.
ARCHE = {
    "repo": "github.com/florolf/tlog-scales",
    "commit": "dfd5c4bf3b0c9703a6760e52e80e2515ee53f86e",
    "path": "tests/test_signing.py",
}

GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
SOFA = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SOFA_SIG = "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
ARCHE_NOTE = (
    "arche2025h1.staging.ct.transparency.dev\n1432088532\nU7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n\n"
    "— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=\n"
    "— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n"
    "— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n"
    "— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==\n"
    "— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==\n"
    "— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==\n"
)


def _src(base: dict[str, Any], path: str) -> dict[str, Any]:
    return {**base, "path": path}


def outside() -> dict[str, Any]:
    """The published vectors, verbatim."""
    go_test = _src(GO_MOD, "sumdb/note/note_test.go")
    formats_log = _src(FORMATS, "log/note_test.go")
    formats_witness = _src(FORMATS, "witness/witness_test.go")
    formats_cosig = _src(FORMATS, "note/note_cosigv1_test.go")
    return {
        # skey -> vkey pairs: deriving the public key and key id from the seed must give the vkey.
        "key_pairs": [
            {
                "source": go_test,
                "skey": "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
                "vkey": PETER_VKEY,
            },
            {
                "source": formats_log,
                "skey": "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ",
                "vkey": "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs",
            },
            {
                "source": formats_log,
                "skey": "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci",
                "vkey": "Known+451c786d+AXAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH",
            },
            {
                "source": formats_log,
                "skey": "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+",
                "vkey": "KnownAgain+4893b26c+AQ+LR7BFF/F/dkpIBjBpSvT0crkteizuUkavAoGeaYMj",
            },
            {
                "source": formats_log,
                "skey": "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU",
                "vkey": "Unknown+fdbb2e08+AWgRIYZ+8x1Vl+1Q+sR8zciNHiYI1SdlBjNw+RV0rots",
            },
            {
                "source": formats_witness,
                "skey": "PRIVATE+KEY+Wit1+55ee4561+AeadRiG7XM4XiieCHzD8lxysXMwcViy5nYsoXURWGrlE",
                "vkey": "Wit1+55ee4561+AVhZSmQj9+SoL+p/nN0Hh76xXmF7QcHfytUrI1XfSClk",
            },
            {
                "source": formats_witness,
                "skey": "PRIVATE+KEY+Wit2+85ecc407+AfPTvxw5eUcqSgivo2vaiC7JPOMUZ/9baHPSDrWqgdGm",
                "vkey": "Wit2+85ecc407+AWVbwFJte9wMQIPSnEnj4KibeO6vSIOEDUTDp3o63c2x",
            },
            {
                "source": formats_witness,
                "skey": "PRIVATE+KEY+Wit3+d3ed3be7+AR2Kg8k6ccBr5QXz5SHtnkOS4UGQGEQaWi6Gfr6Mm3X5",
                "vkey": "Wit3+d3ed3be7+ASb6Uz1+fxAcXkMvDd7nGa3FjDce7LxIKmbbTCT0MpVn",
            },
        ],
        # vkeys that parse (their key id matches), with their type.
        "verifier_keys": [
            {"source": go_test, "vkey": ENOCH_VKEY, "alg": 1},
            {
                "source": _src(C2SP, "signed-note.md"),
                "vkey": "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
                "alg": 1,
            },
            {"source": formats_cosig, "vkey": "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6", "alg": 1},
            {
                "source": formats_cosig,
                "vkey": "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
                "alg": 4,
            },
            {
                "source": ARCHE,
                "vkey": "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f",
                "alg": 1,
            },
        ],
        "bad_verifier_keys": [
            {
                "source": go_test,
                "vkey": "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
                "why": "wrong key length",
            },
            {
                "source": go_test,
                "vkey": "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                "why": "unknown algorithm",
            },
            {"source": formats_cosig, "vkey": "bananas.sigstore.dev+12344556", "why": "wrong number of parts"},
            {
                "source": formats_cosig,
                "vkey": "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
                "why": "invalid base64",
            },
            {"source": formats_cosig, "vkey": "rekor.sigstore.dev+12345678+AwEB", "why": "invalid algorithm"},
        ],
        # Notes that open with the given vkeys: the names verified, the lines left unverified.
        "notes": [
            {
                "source": go_test,
                "note": GO_TEXT + "\n" + PETER_SIG,
                "vkeys": [PETER_VKEY],
                "verified": ["PeterNeumann"],
                "unverified": 0,
                "resign": {"skey": "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"},
            },
            {
                "source": go_test,
                "note": GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG,
                "vkeys": [PETER_VKEY],
                "verified": ["PeterNeumann"],
                "unverified": 1,
            },
            {
                "source": go_test,
                "note": GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG,
                "vkeys": [PETER_VKEY, ENOCH_VKEY],
                "verified": ["PeterNeumann", "EnochRoot"],
                "unverified": 0,
            },
            {
                "source": go_test,
                "note": GO_TEXT
                + "\n"
                + PETER_SIG
                + PETER_SIG
                + ENOCH_SIG
                + ENOCH_SIG
                + ENOCH_SIG[:60]
                + "ABCD"
                + ENOCH_SIG[60:],
                "vkeys": [PETER_VKEY],
                "verified": ["PeterNeumann"],
                "unverified": 2,
            },
            {
                "source": _src(C2SP, "signed-note.md"),
                "note": "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n",
                "vkeys": ["example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"],
                "verified": ["example.com/foo"],
                "unverified": 0,
            },
        ],
        # Notes refused, with the error code we give.
        "bad_notes": [
            {
                "source": go_test,
                "note": GO_TEXT + "\n" + PETER_SIG + PETER_SIG * 100,
                "vkeys": [PETER_VKEY],
                "code": "bad_note",
                "why": "101 signatures",
            },
            {
                "source": go_test,
                "note": GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:],
                "vkeys": [PETER_VKEY],
                "code": "bad_note_signature",
                "why": "invalid signature",
            },
            {
                "source": go_test,
                "note": GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG,
                "vkeys": [],
                "code": "unverified_note",
                "why": "no known key",
            },
            {"source": go_test, "note": GO_TEXT, "vkeys": [PETER_VKEY], "code": "bad_note", "why": "no signatures"},
            {
                "source": go_test,
                "note": GO_TEXT + "\n",
                "vkeys": [PETER_VKEY],
                "code": "bad_note",
                "why": "no signature lines",
            },
            {
                "source": go_test,
                "note": GO_TEXT + "\n" + PETER_SIG[:-1],
                "vkeys": [PETER_VKEY],
                "code": "bad_note",
                "why": "unterminated line",
            },
            {
                "source": go_test,
                "note": "\u0001" + GO_TEXT + "\n" + PETER_SIG,
                "vkeys": [PETER_VKEY],
                "code": "bad_note",
                "why": "control character",
            },
            {
                "source": go_test,
                "note_hex": (b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode()).hex(),
                "vkeys": [PETER_VKEY],
                "code": "bad_note",
                "why": "not UTF-8",
            },
            {
                "source": go_test,
                "note": GO_TEXT
                + "\n"
                + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
                "vkeys": [PETER_VKEY],
                "code": "bad_note",
                "why": "a space in the name",
            },
            {
                "source": go_test,
                "note": GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
                "vkeys": [PETER_VKEY],
                "code": "bad_note",
                "why": "not a signature line",
            },
        ],
        # Checkpoints that verify with a log key, the witnesses trusted and the quorum asked.
        "checkpoints": [
            {
                "source": ARCHE,
                "note": ARCHE_NOTE,
                "log_vkey": "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f",
                "witness_vkeys": ["remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"],
                "quorum": 1,
                "origin": "arche2025h1.staging.ct.transparency.dev",
                "size": 1432088532,
                "root_hex": "53b58cefd8ebcf2846679fc65014e933b373c1dc9f171eb5b77468be0702e11a",
                "witnesses": ["remora.n621.de"],
                "timestamps": [1779573024],
            },
        ],
        "checkpoint_bodies": [
            {
                "source": _src(C2SP, "tlog-checkpoint.md"),
                "body": SOFA,
                "origin": "example.com/behind-the-sofa",
                "size": 20852163,
                "root_hex": "0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62",
                "extensions": [],
            },
        ],
        "bad_checkpoint_bodies": [
            {"source": _src(FORMATS, "log/checkpoint_test.go"), "body": "Head\n9944\n", "why": "insufficient lines"},
            {
                "source": _src(FORMATS, "log/checkpoint_test.go"),
                "body": "\n9944\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\n",
                "why": "empty origin",
            },
            {
                "source": _src(FORMATS, "log/checkpoint_test.go"),
                "body": "Log\n123\nYmFuYW5hcw==",
                "why": "no final newline",
            },
            {
                "source": _src(FORMATS, "log/checkpoint_test.go"),
                "body": "Log\nbananas\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\n",
                "why": "size not a number",
            },
            {
                "source": _src(FORMATS, "log/checkpoint_test.go"),
                "body": "Log\n-34\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\n",
                "why": "negative size",
            },
            {
                "source": _src(FORMATS, "log/checkpoint_test.go"),
                "body": "Log\n3438945738945739845734895735\ndGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ==\n",
                "why": "size over 2^64 - 1",
            },
            {
                "source": _src(FORMATS, "log/checkpoint_test.go"),
                "body": "Log\n123\nThisIsn'tBase64\n",
                "why": "root not base64",
            },
            {
                "source": _src(FORMATS, "log/checkpoint_test.go"),
                "body": "Log\n123\nYmFuYW5hcw==\n",
                "why": "root not 32 bytes (formats accepts it, the C2SP spec does not)",
            },
        ],
        # Cosignature lines whose timestamp is known from their source.
        "cosignature_lines": [
            {
                "source": _src(C2SP, "tlog-cosignature.md"),
                "line": "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==",
                "timestamp": 1679315147,
                "key_id_hex": "8d66cf3f",
                "message": "cosignature/v1\ntime 1679315147\n" + SOFA,
            },
            {
                "source": formats_cosig,
                "line": "— unnamed ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==",
                "timestamp": 1727964367,
                "why": "formats publishes only the base64; the name unnamed is ours",
                "key_id_hex": "646846b9",
                "message": None,
            },
        ],
        "witness_requests": [
            {
                "source": _src(C2SP, "tlog-witness.md"),
                "body": (
                    "old 20852014\n"
                    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
                    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
                    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
                    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
                    "\n"
                    + SOFA
                    + "\n"
                    + SOFA_SIG
                    + "— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
                ),
                "old_size": 20852014,
                "proof_lines": 4,
                "size": 20852163,
            },
        ],
        "witness_responses": [
            {
                "source": _src(C2SP, "tlog-witness.md"),
                "body": (
                    "— witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==\n"
                    "— witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==\n"
                    "— witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n"
                ),
                "names": ["witness.example/w1", "witness.example/w1", "witness.example/w2"],
            },
        ],
    }


# --- our own vectors ---------------------------------------------------------------------------

CLUSTER = "local"
LOG_SEED = hashlib.sha256(b"vledger test vector: log key").digest()
WITNESS_SEEDS = {
    "local/witness/replica-1": hashlib.sha256(b"vledger test vector: witness replica-1").digest(),
    "local/witness/observer-1": hashlib.sha256(b"vledger test vector: witness observer-1").digest(),
}
COSIGNED_AT = 1_790_000_000  # 2026-09-21, POSIX seconds

# Ed25519 (RFC 8032): the group order L, the base point B, and the eight points of small order,
# one encoding each (the sign bit of x set where x is odd), as libsodium's list has them.
ED25519_L = 2**252 + 27742317777372353535851937790883648493
BASE_POINT = bytes.fromhex("58" + "66" * 31)
SMALL_ORDER_POINTS = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # the identity, order 1
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # (0, -1), order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
]


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH of RFC 6962 section 2.1, the recursive definition, for the vector ledger only."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)  # the largest power of two below n
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


def vledger_vectors() -> dict[str, Any]:
    """A checkpoint of the vector ledger (tests/vectors/vectors.json) signed by a fixed log
    key and cosigned by two fixed witness keys at a fixed time."""
    chain = json.loads((HERE / "vectors.json").read_text(encoding="utf-8"))
    leaves = [bytes.fromhex(r["record_hex"]) for r in chain["records"]]
    origin = note.origin_for(CLUSTER, chain["ledger"])
    log = note.SignerKey(origin, note.ALG_ED25519, LOG_SEED)
    witnesses = [note.SignerKey(name, note.ALG_COSIGNATURE_V1, seed) for name, seed in WITNESS_SEEDS.items()]
    checkpoint = note.Checkpoint(origin, len(leaves), rfc6962_root(leaves))
    body = checkpoint.body()
    signed = note.Note(body, (note.sign(body, log),))
    cosigs = [note.cosign(body, w, COSIGNED_AT + i) for i, w in enumerate(witnesses)]
    cosigned = signed.with_signatures(*(c.note_signature() for c in cosigs))
    return {
        "source": "tests/vectors/generate_note.py",
        "leaves": "the record_hex of each record of tests/vectors/vectors.json, in height order",
        "log_skey": log.encode(),
        "log_vkey": log.verifier().encode(),
        "witnesses": [
            {
                "skey": w.encode(),
                "vkey": w.verifier().encode(),
                "timestamp": c.timestamp,
                "message_hex": note.cosignature_message(body.encode(), c.timestamp).hex(),
                "line": c.note_signature().line(),
            }
            for w, c in zip(witnesses, cosigs, strict=True)
        ],
        "origin": origin,
        "size": checkpoint.size,
        "root_hex": checkpoint.root.hex(),
        "body": body,
        "signed": signed.encode().decode("utf-8"),
        "cosigned": cosigned.encode().decode("utf-8"),
        "add_checkpoint": note.add_checkpoint_request(0, [], cosigned.encode()).encode().decode("utf-8"),
        "edges": edge_vectors(log),
    }


def _point(encoded: bytes) -> ECC.EccPoint:
    return eddsa.import_public_key(encoded).pointQ


def _encode(point: ECC.EccPoint) -> bytes:
    return (int(point.y) | (int(point.x) & 1) << 255).to_bytes(32, "little")


def _sign_with_r(seed: bytes, r: int, torsion: bytes, public: bytes, message: bytes) -> bytes:
    """An Ed25519 signature whose R is [r]B plus the point ``torsion`` of small order: with the
    identity it passes the cofactorless equation [S]B = R + [k]A (as Go checks it), with a
    point of order 8 only the cofactored one [8][S]B = [8]R + [8k]A."""
    digest = hashlib.sha512(seed).digest()
    a = int.from_bytes(digest[:32], "little") & (2**254 - 8) | 2**254  # RFC 8032 5.1.5
    big_r = _point(BASE_POINT) * r + _point(torsion) if r else _point(torsion)
    encoded_r = _encode(big_r)
    k = int.from_bytes(hashlib.sha512(encoded_r + public + message).digest(), "little") % ED25519_L
    return encoded_r + ((r + k * a) % ED25519_L).to_bytes(32, "little")


def edge_vectors(log: note.SignerKey) -> dict[str, Any]:
    """PROTOCOL 13.1 and 13.2 at the edges where Ed25519 verifiers differ: keys of small order
    (refused), a signature whose R is the identity (Go accepts it, libsodium and 13.2 refuse
    it) and one whose R has a part of order 8 (only a cofactored verifier accepts it)."""
    text = "vledger edge vector\n"
    public = log.public_key
    identity, order_8 = bytes.fromhex(SMALL_ORDER_POINTS[0]), bytes.fromhex(SMALL_ORDER_POINTS[4])
    cases = [
        (
            "R is the identity: [S]B = R + [k]A holds, R is of small order",
            _sign_with_r(LOG_SEED, 0, identity, public, text.encode()),
        ),
        (
            "R = [r]B + T, T of order 8: only [8][S]B = [8]R + [8k]A holds",
            _sign_with_r(LOG_SEED, 2**200 + 12345, order_8, public, text.encode()),
        ),
    ]
    return {
        "small_order_vkeys": [_unchecked_vkey("small", note.ALG_ED25519, bytes.fromhex(p)) for p in SMALL_ORDER_POINTS],
        "bad_signatures": [
            {
                "note": note.Note(text, (note.NoteSignature(log.name, log.key_id, signature),))
                .encode()
                .decode("utf-8"),
                "vkey": log.verifier().encode(),
                "code": "bad_note_signature",
                "why": why,
            }
            for why, signature in cases
        ],
    }


def _unchecked_vkey(name: str, alg: int, public: bytes) -> str:
    """The vkey string of a public key VerifierKey refuses to hold."""
    return f"{name}+{note.key_id(name, alg, public):08x}+{base64.b64encode(bytes([alg]) + public).decode()}"


def build() -> dict[str, Any]:
    return {"outside": outside(), "vledger": vledger_vectors()}


def document(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    (HERE / "note.json").write_text(document(build()), encoding="utf-8")
