"""vledger.client over a real gateway (a real store, real HTTP), honest and tampered with.

A ledger whose genesis pins its home's checkpoint key; the store keeps the home's checkpoint
of 30 records and a witness's cosigned one of 20. The client trusts only the genesis bytes
and the witness's key. Tampering happens where the client reads the gateway's JSON, so that
each forged answer reaches the client's checks: a flipped byte in a record, a wrong proof
hash, a checkpoint signed by another key, a rollback to an older checkpoint, a fork. Each
must fail with its own error.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.http import HttpThread
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths, witness_keys
from vledger.client import Client, Write
from vledger.client.api import recounted
from vledger.client.http import GatewayConnection
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.config.settings import Limits
from vledger.node.anchors import Anchors
from vledger.node.errors import (
    BadChecksumError,
    BadGenesisError,
    BadRequestError,
    HeightGapError,
    NoteKeyError,
    NotFoundError,
    ProofError,
    QuorumError,
    RemoteError,
    RollbackError,
    SettingsError,
    StaleCheckpointError,
    UnverifiedNoteError,
    UsageError,
)
from vledger.node.ledger import LedgerRules
from vledger.node.note import Note, parse_note
from vledger.node.record import ZERO_LINK, Content, Entry, decode_record
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, WitnessSigner, home_key, witness_name
from vledger.tests.unit.verifier.fakes import NoRedis
from vledger.verifier.gateway import Gateway, build_app
from vledger.verifier.tally import AGREE, MISMATCH, STILL_COUNTING, Verdict

LIMITS = Limits()
SEED = bytes(range(32))
LEDGER = "votes"
RECORDS = 40
SIGNED_AT = 30
COSIGNED_AT = 20


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("client")
    config = cluster_from_mapping(
        {
            "cluster": {"name": "t", "data": "data", "keys": "keys", "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 1, "pub_port": 2},
                "replica-1": {"role": "replica", "port": 3, "gateway_port": 4},
            },
        },
        base / "cluster.toml",
    )
    generate_signing_key(config.keys_dir, "replica-1")
    witness = WitnessSigner(
        witness_name("t", "replica-1"), load_signing_key(signing_key_paths(config.keys_dir, "replica-1")[0]).seed
    )
    home = HomeSigner("t", SEED)
    pinned = home_key("t", LEDGER, home.key(LEDGER).public_key).encode()
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        rules = LedgerRules(kinds=("note",), difficulty=0, rules={"checkpoint_key": pinned})
        genesis = Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS)
        store.create_ledger(genesis)
        for i in range(1, RECORDS):
            store.append(Entry.prepare(Content(LEDGER, "note", {"n": i}, "admin", f"r{i}", 1), 0, LIMITS))
        signed = home.sign(LEDGER, SIGNED_AT, store.root(LEDGER, SIGNED_AT))
        store.checkpoints.keep(LEDGER, "signed", SIGNED_AT, signed.root, signed.note)
        older = home.sign(LEDGER, COSIGNED_AT, store.root(LEDGER, COSIGNED_AT))
        # Cosigned now: a checkpoint its witnesses last vouched for long ago is stale (11.4).
        store.checkpoints.keep(LEDGER, "cosigned", COSIGNED_AT, older.root, witness.cosign(older, int(time.time())))
        stored_genesis = store.get(LEDGER, 0)
        assert stored_genesis is not None
        genesis_bytes = stored_genesis.encode()
    gateway = Gateway(config, "replica-1", redis_client=NoRedis())
    with HttpThread(build_app(gateway), "127.0.0.1", 0) as server:
        yield {
            "url": f"http://127.0.0.1:{server.port}/",
            "config": config,
            "genesis": genesis_bytes,
            "home": home,
            "roots": {SIGNED_AT: signed.root, COSIGNED_AT: older.root},
            "witness": witness,
        }
    gateway.close()


def http_client(served: dict[str, Any], quorum: int = 0, state_file: Path | None = None) -> Client:
    config: ClusterConfig = served["config"]
    return Client.http(
        served["url"],
        genesis={LEDGER: served["genesis"]},
        witnesses=list(witness_keys(config).values()),
        quorum=quorum,
        state_file=state_file,
    )


def tamper(monkeypatch: pytest.MonkeyPatch, path_part: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Every JSON answer whose path ends with ``path_part`` is changed by ``change`` before the client reads it."""
    honest = GatewayConnection.get_json

    def forged(self: GatewayConnection, path: str, query: dict[str, int] | None = None) -> dict[str, Any]:
        answer = honest(self, path, query)
        if path.endswith(path_part):
            change(answer)
        return answer

    monkeypatch.setattr(GatewayConnection, "get_json", forged)


def test_an_honest_gateway_verifies_end_to_end(served: dict[str, Any], tmp_path: Path) -> None:
    state = tmp_path / "trusted.json"
    with http_client(served, state_file=state) as client:
        checkpoint = client.checkpoint(LEDGER)
        assert checkpoint.checkpoint.size == SIGNED_AT and checkpoint.witnesses == ()
        proven = client.record(LEDGER, 7)
        assert proven.record.height == 7 and proven.record.content.payload == {"n": 7}
        assert proven.checkpoint.checkpoint.root == served["roots"][SIGNED_AT] and proven.proof
        heights = [record.height for record in client.records(LEDGER, 3)]
        assert heights == list(range(3, SIGNED_AT))  # up to the checkpoint, not the store's 40
        receipt = client.receipt(LEDGER, 12)
        assert receipt.index == 12 and receipt.ledger == LEDGER
    # The trusted state is kept, owner-only, and read again by the next client.
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    kept = json.loads(state.read_text())
    assert kept["ledgers"][LEDGER] == {"size": SIGNED_AT, "root": served["roots"][SIGNED_AT].hex()}
    with http_client(served, state_file=state) as again:
        assert again.checkpoint(LEDGER).checkpoint.size == SIGNED_AT


def test_a_quorum_of_witnesses_picks_the_cosigned_checkpoint(served: dict[str, Any]) -> None:
    with http_client(served, quorum=1) as client:
        checkpoint = client.checkpoint(LEDGER)
        assert checkpoint.checkpoint.size == COSIGNED_AT and checkpoint.witnesses == ("t/witness/replica-1",)
        with pytest.raises(NotFoundError, match="not in the latest verified checkpoint"):
            client.record(LEDGER, COSIGNED_AT)


def test_a_flipped_byte_in_a_record_is_caught(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def flip(answer: dict[str, Any]) -> None:
        data = base64.b64decode(answer["record"])
        assert data.count(b"\xa1n\x05") == 1  # the payload {"n": 5} in the content's msgpack
        answer["record"] = base64.b64encode(data.replace(b"\xa1n\x05", b"\xa1n\x04")).decode()

    with http_client(served) as client:
        client.keys(LEDGER)  # the genesis is read before the tampering starts
        tamper(monkeypatch, "/records/5", flip)
        with pytest.raises(BadChecksumError):
            client.record(LEDGER, 5)


def test_a_wrong_inclusion_proof_is_caught(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(answer: dict[str, Any]) -> None:
        first = bytearray.fromhex(answer["proof"][0])
        first[0] ^= 0x80
        answer["proof"][0] = first.hex()

    tamper(monkeypatch, "/proof/inclusion", wrong)
    with http_client(served) as client, pytest.raises(ProofError, match="root"):
        client.record(LEDGER, 9)


def test_a_range_with_a_swapped_record_is_caught(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def swap(answer: dict[str, Any]) -> None:
        records = answer["records"]
        records[4], records[5] = records[5], records[4]

    with http_client(served) as client:
        client.keys(LEDGER)
        tamper(monkeypatch, "/records", swap)
        with pytest.raises(HeightGapError):
            list(client.records(LEDGER, 1))


def test_a_checkpoint_signed_by_another_key_is_refused(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    mallory = HomeSigner("t", bytes(32))  # the same key name, another key

    def forge(answer: dict[str, Any]) -> None:
        answer["note"] = mallory.sign(LEDGER, answer["size"], bytes.fromhex(answer["root"])).note.decode()

    tamper(monkeypatch, "/checkpoint", forge)
    with http_client(served) as client, pytest.raises(UnverifiedNoteError):
        client.checkpoint(LEDGER)


def test_a_rollback_to_an_older_checkpoint_is_refused(served: dict[str, Any], tmp_path: Path) -> None:
    state = tmp_path / "trusted.json"
    with http_client(served, state_file=state) as client:
        assert client.checkpoint(LEDGER).checkpoint.size == SIGNED_AT
    # A later run that is served the smaller checkpoint (here: the cosigned one of 20) refuses it.
    with http_client(served, quorum=1, state_file=state) as client, pytest.raises(RollbackError):
        client.checkpoint(LEDGER)


def test_a_forked_tree_fails_the_consistency_proof(served: dict[str, Any], tmp_path: Path) -> None:
    state = tmp_path / "trusted.json"
    forked = {"version": 1, "ledgers": {LEDGER: {"size": COSIGNED_AT, "root": "ab" * 32}}}
    state.write_text(json.dumps(forked))
    with http_client(served, state_file=state) as client, pytest.raises(ProofError):
        client.checkpoint(LEDGER)
    # Nothing was remembered from the refused checkpoint.
    assert json.loads(state.read_text()) == forked


def test_what_the_client_is_not_given_it_does_not_trust(served: dict[str, Any], tmp_path: Path) -> None:
    with Client.http(served["url"]) as client, pytest.raises(NoteKeyError, match="no trusted key"):
        client.checkpoint(LEDGER)
    pinned = home_key("t", LEDGER, served["home"].key(LEDGER).public_key).encode()
    other = LedgerRules(kinds=("memo",), difficulty=0, rules={"checkpoint_key": pinned}).genesis_content(
        LEDGER, "admin", "x", 1
    )
    forged = Entry.prepare(other, 0, LIMITS).place(0, ZERO_LINK, 1, "ingest-1").encode()
    with Client.http(served["url"], genesis={LEDGER: forged}) as client, pytest.raises(BadGenesisError):
        client.checkpoint(LEDGER)
    bad_state = tmp_path / "state.json"
    bad_state.write_text('{"version": 1, "ledgers": {"votes": {"size": -1, "root": ""}}}')
    with pytest.raises(SettingsError, match="not a trusted-state file"):
        http_client(served, state_file=bad_state)


def test_refusals_and_writes_over_http(served: dict[str, Any]) -> None:
    with http_client(served) as client:
        with pytest.raises(RemoteError) as refused:
            client.reader.size("nothing-here")
        assert refused.value.code == "no_such_ledger"
        with pytest.raises(UsageError, match="CURVE"):
            client.put(LEDGER, Write("note", {"n": 1}))
        with pytest.raises(UsageError, match="gateway"):
            Client.http("file:///etc/passwd")


@pytest.mark.parametrize("eid", ["E-xyz", "None", "E-0123456789ABCDEF", "e-0123456789abcdef", "E-0123456789abcdef0"])
def test_a_malformed_electronic_id_is_a_bad_request_never_no_records(served: dict[str, Any], eid: str) -> None:
    # A voter who mistyped the id was answered "voter None, 0 records" by voter_records (outsider
    # o10), where the gateway's voters route refuses it: the same refusal, before any read.
    with http_client(served) as client:
        for lookup in (client.voter_records, client.voter_receipts):
            with pytest.raises(BadRequestError, match="is not an electronic id") as refused:
                lookup(LEDGER, eid)
            assert refused.value.code == "bad_request"


def anchors_file(served: dict[str, Any], path: Path) -> Path:
    """The publisher's anchors of the served cluster, as ``vledger anchors`` writes them: the
    ledger's genesis link, the witness's key, an observer's key (replica-1's, for the test)."""
    witness = next(iter(witness_keys(served["config"]).values()))
    link = decode_record(served["genesis"], LIMITS).link
    path.write_text(Anchors({LEDGER: link}, {witness.name: witness}, {"observer-1": witness}).encode())
    return path


def test_anchors_give_the_genesis_witnesses_and_observers(served: dict[str, Any], tmp_path: Path) -> None:
    with Client.http(served["url"], anchors=anchors_file(served, tmp_path / "anchors.txt"), quorum=1) as client:
        checkpoint = client.checkpoint(LEDGER)  # the key the anchored genesis pins, the anchored witness
        assert checkpoint.checkpoint.size == COSIGNED_AT and checkpoint.witnesses == ("t/witness/replica-1",)
        assert client.record(LEDGER, 3).record.content.payload == {"n": 3}
        assert client.trust is not None and list(client.trust.observers) == ["observer-1"]


def test_anchors_with_quorum_0_warn_that_no_cosignature_is_required(
    served: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # outsider23 F6: with the default quorum of 0 a checkpoint the home's key alone signed was
    # taken from a gateway through anchors, silently, where the pages ask a majority.
    anchors = anchors_file(served, tmp_path / "anchors.txt")
    with caplog.at_level(logging.WARNING, logger="vledger.client.api"):
        Client.http(served["url"], anchors=anchors, stale_after=None).close()
    assert "quorum 0: a checkpoint no witness cosigned is accepted; pass quorum=1" in caplog.text
    caplog.clear()
    # Outsider o18 F6: with stale_after (the default) such a checkpoint is refused as stale
    # unless a majority re-cosigned the head lately: the warning said the opposite.
    with caplog.at_level(logging.WARNING, logger="vledger.client.api"):
        Client.http(served["url"], anchors=anchors).close()
    assert "is accepted;" not in caplog.text
    assert "quorum 0: a checkpoint is taken without its own cosignatures only while 1 of the 1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vledger.client.api"):
        Client.http(served["url"], anchors=anchors, quorum=1).close()
    assert "quorum 0" not in caplog.text


def test_with_anchors_a_gateway_s_forged_genesis_and_witness_key_are_refused(
    served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway serving a genesis of its own (pinning its key, its checkpoint signed by it) is
    refused for the anchored link; one stating a witness key of its own, with a cosignature by
    it in place of the witness's, gets no quorum: the anchors' key is the one checked."""
    anchors = anchors_file(served, tmp_path / "anchors.txt")
    mallory = HomeSigner("t", bytes(32))
    pinned = home_key("t", LEDGER, mallory.key(LEDGER).public_key).encode()
    other = LedgerRules(kinds=("note",), difficulty=0, rules={"checkpoint_key": pinned}).genesis_content(
        LEDGER, "admin", "g", 1
    )
    forged = Entry.prepare(other, 0, LIMITS).place(0, ZERO_LINK, 1, "ingest-1").encode()
    with monkeypatch.context() as patched:
        tamper(patched, "/records/0", lambda answer: answer.update(record=base64.b64encode(forged).decode()))
        tamper(patched, "/checkpoint", lambda answer: answer.update(note=_signed(mallory, answer)))
        with Client.http(served["url"], anchors=anchors) as client, pytest.raises(BadGenesisError, match="anchored"):
            client.checkpoint(LEDGER)

    stranger = WitnessSigner(witness_name("t", "replica-1"), bytes(range(2, 34)))

    def cosigned_by_stranger(answer: dict[str, Any]) -> None:
        signed = served["home"].sign(LEDGER, answer["size"], bytes.fromhex(answer["root"]))
        answer["note"] = stranger.cosign(signed, 1_790_000_000).decode()
        answer["witness_keys"] = {"replica-1": stranger.key.verifier().encode()}

    tamper(monkeypatch, "/checkpoint", cosigned_by_stranger)
    with Client.http(served["url"], anchors=anchors, quorum=1) as client, pytest.raises(QuorumError):
        client.checkpoint(LEDGER)


def _signed(signer: HomeSigner, answer: dict[str, Any]) -> str:
    return signer.sign(LEDGER, answer["size"], bytes.fromhex(answer["root"])).note.decode()


def test_anchors_that_are_not_some_or_that_clash_with_arguments_are_refused(
    served: dict[str, Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("vledger-anchors v1\nledger votes 00\n")
    with pytest.raises(SettingsError, match=r"bad\.txt: anchors line 2"):
        Client.http(served["url"], anchors=bad)
    with pytest.raises(SettingsError, match="cannot read"):
        Client.http(served["url"], anchors=tmp_path / "missing.txt")
    with pytest.raises(UsageError, match="both in the trust anchors and as arguments: votes"):
        Client.http(
            served["url"], anchors=anchors_file(served, tmp_path / "a.txt"), genesis={LEDGER: served["genesis"]}
        )


def test_the_anchors_admin_key_is_the_client_s_unless_given_as_an_argument_too(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """The admin ledger's checkpoint key in the anchors (15.5) follows rotated keys (15.4 step 7)
    as an ``admin_key`` argument does; given both ways, which is meant is not guessed."""
    admin = HomeSigner("t", bytes(range(1, 33))).key("admin").verifier()
    plain = anchors_file(served, tmp_path / "plain.txt")
    carried = tmp_path / "admin.txt"
    carried.write_text(plain.read_text() + f"admin {admin.encode()}\n")
    with Client.http(served["url"], anchors=carried) as client:
        assert client.trust is not None and client.trust.admin_key == admin
    with Client.http(served["url"], anchors=plain, admin_key=admin) as client:
        assert client.trust is not None and client.trust.admin_key == admin
    with pytest.raises(UsageError, match="both in the trust anchors and as arguments: the admin key"):
        Client.http(served["url"], anchors=carried, admin_key=admin)


def _vouched(served: dict[str, Any], *ages: int) -> Callable[[dict[str, Any]], None]:
    """The served checkpoint answer rewritten as a gateway shows it whose witness cosigned it
    ``ages[0]`` seconds ago and, for a quiet ledger, again ``ages[1]`` seconds ago (10.7)."""

    def change(answer: dict[str, Any]) -> None:
        signed = served["home"].sign(LEDGER, answer["size"], bytes.fromhex(answer["root"]))
        note = served["witness"].cosign(signed, int(time.time()) - ages[0])
        for age in ages[1:]:
            note = served["witness"].cosign_again(note, int(time.time()) - age)
        answer.update(note=note.decode(), recosign_interval_ms=10**12)  # a gateway's word counts for nothing

    return change


def test_a_checkpoint_no_majority_of_witnesses_vouched_for_lately_is_stale(
    served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """o4 F2 for scripts: a frozen (or lying) gateway kept serving a quiet ledger's old checkpoint,
    and a client took it as current. Its witnesses' newest lines 400 s old are past the default
    300 s interval and 10 s of grace: every read of the latest checkpoint refuses it, whatever
    interval the gateway states; one cosigned again since (its first line as old) is fresh."""
    tamper(monkeypatch, "/checkpoint", _vouched(served, 400))
    with http_client(served, quorum=1) as client:
        reads: list[Callable[[], object]] = [
            lambda: client.checkpoint(LEDGER),
            lambda: client.record(LEDGER, 3),
            lambda: list(client.records(LEDGER, 3)),
            lambda: client.voter_receipts(LEDGER, "E-0123456789abcdef"),
        ]
        for read in reads:
            with pytest.raises(
                StaleCheckpointError,
                match=r"only 0 of the 1 trusted witnesses .* within 310 s \(1 of them last did 40[0-9] s ago",
            ) as e:
                read()
            assert e.value.code == "stale_checkpoint"
    # Judged by the caller's interval (or not at all), never by the gateway's.
    config: ClusterConfig = served["config"]
    witnesses = list(witness_keys(config).values())
    trusted = {"genesis": {LEDGER: served["genesis"]}, "witnesses": witnesses, "quorum": 1}
    with Client.http(served["url"], **trusted, recosign_interval_ms=600_000) as longer:
        assert longer.checkpoint(LEDGER).checkpoint.size == COSIGNED_AT
    with Client.http(served["url"], **trusted, stale_after=None) as unjudged:
        assert unjudged.checkpoint(LEDGER).checkpoint.size == COSIGNED_AT
    tamper(monkeypatch, "/checkpoint", _vouched(served, 400, 5))
    with http_client(served, quorum=1) as client:
        assert client.checkpoint(LEDGER).checkpoint.size == COSIGNED_AT


def test_a_gateway_stripping_every_cosignature_is_stale_when_witnesses_are_trusted(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r12 finding 2: with quorum 0 (the default) a head no witness cosigned was never
    judged, so a frozen gateway stripping every cosignature line served an old view as current.
    With witnesses trusted, a majority of them must vouch for the head (or for the checkpoint
    before it, proven of its tree); a client trusting none judges nothing, as before."""

    def strip(answer: dict[str, Any]) -> None:
        note = parse_note(answer["note"].encode())
        answer["note"] = Note(note.text, note.signatures[:1]).encode().decode()

    with http_client(served) as honest:  # the latest is uncosigned; the one before it is vouched for now
        assert honest.checkpoint(LEDGER).checkpoint.size == SIGNED_AT
    tamper(monkeypatch, "/checkpoint", strip)
    with (
        http_client(served) as client,
        pytest.raises(StaleCheckpointError, match=r"only 0 of the 1 trusted witnesses \(1 needed\)") as e,
    ):
        client.checkpoint(LEDGER)
    assert e.value.code == "stale_checkpoint"
    with Client.http(served["url"], genesis={LEDGER: served["genesis"]}) as trusting_none:
        assert trusting_none.checkpoint(LEDGER).checkpoint.size == SIGNED_AT


def test_the_anchors_recosign_interval_is_the_one_a_head_is_judged_by(
    served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper(monkeypatch, "/checkpoint", _vouched(served, 400))
    plain = anchors_file(served, tmp_path / "plain.txt")
    with Client.http(served["url"], anchors=plain, quorum=1) as client, pytest.raises(StaleCheckpointError):
        client.checkpoint(LEDGER)
    timed = tmp_path / "timed.txt"
    timed.write_text(plain.read_text() + "recosign_interval_ms 600000\n")
    with Client.http(served["url"], anchors=timed, quorum=1) as client:
        assert client.recosign_ms == 600_000 and client.checkpoint(LEDGER).checkpoint.size == COSIGNED_AT
    with pytest.raises(UsageError, match="recosign_interval_ms"):
        Client.http(served["url"], anchors=timed, recosign_interval_ms=600_000)
    with pytest.raises(SettingsError, match="positive"):
        Client.http(served["url"], anchors=plain, recosign_interval_ms=0)


RECOUNT_TRUSTED = ("observer-1", "observer-2")  # o21 F4: the gateway's word of a verifier's recount


def test_a_recount_named_by_the_gateway_takes_an_agreement_away() -> None:
    agreed = Verdict(AGREE, 9)
    assert recounted(agreed, {"status": "mismatch", "recount": ["observer-1"]}, RECOUNT_TRUSTED) == Verdict(
        MISMATCH, 9, ("observer-1",), ("observer-1",)
    )
    still = Verdict(STILL_COUNTING, None)
    assert recounted(still, {"recount": ["observer-2"]}, RECOUNT_TRUSTED).status == MISMATCH


def test_a_name_the_client_does_not_trust_or_no_list_changes_nothing() -> None:
    agreed = Verdict(AGREE, 9)
    for served in (None, {}, {"recount": "observer-1"}, {"recount": ["observer-9", 5, None]}, ["observer-1"]):
        assert recounted(agreed, served, RECOUNT_TRUSTED) == agreed
