"""The one error tree of vledger.

Every error has a stable ``code`` (the string that crosses the wire, documented in
docs/PROTOCOL.md) and a sentence that says what failed. Errors about a record name the
ledger and the height they concern, so that an alert or a report can point at it.
"""

from __future__ import annotations

from typing import TypedDict


class Where(TypedDict, total=False):
    """Where a record error happened, passed on as ``**where`` to a RecordError."""

    ledger: str | None
    height: int | None


class VledgerError(Exception):
    """Base of every error vledger raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, object]:
        """The ``error`` map of a reply (docs/PROTOCOL.md, section 6)."""
        return {"code": self.code, "message": self.message}


# --- records and chains ---------------------------------------------------------------


class RecordError(VledgerError):
    """A record, or a chain of records, failed a check. Names the ledger and height."""

    code = "bad_record"

    def __init__(self, message: str, *, ledger: str | None = None, height: int | None = None) -> None:
        self.ledger = ledger
        self.height = height
        where = _where(ledger, height)
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message


def _where(ledger: str | None, height: int | None) -> str:
    parts = []
    if ledger is not None:
        parts.append(f"ledger {ledger!r}")
    if height is not None:
        parts.append(f"height {height}")
    return " ".join(parts)


class MalformedRecordError(RecordError):
    """The bytes are not a record: undecodable, a missing or unknown field, a wrong type."""

    code = "malformed"


class InvalidEncodingError(MalformedRecordError):
    """Invalid msgpack or invalid UTF-8."""

    code = "bad_encoding"


class NonCanonicalError(MalformedRecordError):
    """Decodable, but not the one canonical encoding (unsorted keys, a float, ...)."""

    code = "non_canonical"


class FieldError(MalformedRecordError):
    """A field is missing, unknown, of the wrong type or out of range."""

    code = "bad_field"


class LineError(MalformedRecordError):
    """An export line that is not, byte for byte, the one form of an export line (PROTOCOL.md, section 5)."""

    code = "bad_line"


class PayloadTooLargeError(RecordError):
    code = "too_large"


class UnknownKindError(RecordError):
    code = "unknown_kind"


class BadChecksumError(RecordError):
    code = "bad_checksum"


class InsufficientWorkError(RecordError):
    code = "insufficient_work"


class BadLinkError(RecordError):
    code = "bad_link"


class HeightGapError(RecordError):
    """Heights are not 0, 1, 2, ... without a gap or a repeat."""

    code = "height_gap"


class WrongLedgerError(RecordError):
    code = "wrong_ledger"


class BadGenesisError(RecordError):
    code = "bad_genesis"


# --- stores --------------------------------------------------------------------------


class StoreError(VledgerError):
    code = "store_error"


class LedgerExistsError(StoreError):
    code = "ledger_exists"


class NoSuchLedgerError(StoreError):
    """A ledger that the node (or the file, or the store) does not hold."""

    code = "no_such_ledger"


class RequestConflictError(StoreError):
    """A request id was used again with other content: retries must be identical."""

    code = "request_conflict"


class RecordConflictError(StoreError):
    """A record already stored at this height differs from the one offered."""

    code = "record_conflict"


class StoreClosedError(StoreError):
    code = "store_closed"


class BlobError(StoreError):
    code = "bad_blob"


class TreeMismatchError(StoreError):
    """A store's Merkle tree disagrees with its records (checked on open): never rewritten."""

    code = "tree_mismatch"


class StoreDamagedError(StoreError):
    """A node's own store failed a check made when it opens (a changed record or tree row, a
    head that is not its record, ...): the node does not start on it. The message starts with
    the failed check's own code; the node raised the ``store_damaged`` alert (PROTOCOL 10.5)."""

    code = "store_damaged"


class DiskFullError(StoreError):
    """A write of a node's store (or of a file beside it) found its disk full (SQLITE_FULL,
    ENOSPC): nothing of it was written, nor acknowledged. The moment's, not the file's: the
    node raises the ``disk_full`` alert, retries, and resolves it once a write succeeds again
    (PROTOCOL 10.5). The message starts with "disk full: <directory>"."""

    code = "disk_full"


class NodeRunningError(StoreError):
    """Another process holds a node's store: the node itself (a second one started on its
    store, by hand or from another host on a shared volume), or a ``vledger repair`` of it. The
    process that finds it opens nothing of the store (PROTOCOL 10.5)."""

    code = "node_running"


class TreeSizeError(StoreError):
    """A proof, root or tile asked for a size or index past the ledger's tree."""

    code = "bad_tree_size"


class SettingsError(VledgerError):
    """A settings file or value is invalid; the message names the file and the key."""

    code = "bad_settings"


# --- the vledger command ----------------------------------------------------------------


class UsageError(VledgerError):
    """The command line names something that cannot be used (exit 2, like argparse's own errors)."""

    code = "usage"


class SourceChangedError(VledgerError):
    """An export file changed between the import's verifying pass and its appending pass.

    Not a StoreError: the store is sound, it is the file being read that can no longer be
    trusted to hold what was verified.
    """

    code = "source_changed"


class IndexMismatchError(RecordError):
    """A store's lookup column (hash, author, request id) disagrees with the record's own bytes.

    The record itself may be valid, but a lookup by that column would find the wrong record.
    """

    code = "index_mismatch"


# --- the client protocol (docs/PROTOCOL.md, section 6) -------------------------------------


class RequestError(VledgerError):
    """A client's request cannot be served as it stands (a base: the leaves below have the codes)."""

    code = "request_refused"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details  # extra fields of the error reply (retry_after_ms, home)

    def to_wire(self) -> dict[str, object]:
        return {**super().to_wire(), **self.details}


class BadRequestError(RequestError):
    code = "bad_request"


class UnknownCommandError(RequestError):
    code = "unknown_command"


class ForbiddenError(RequestError):
    """The role may not do this, or the key is not bound to an enabled account: never says which."""

    code = "forbidden"


class NotHomeError(RequestError):
    code = "not_home"


class ThrottledError(RequestError):
    code = "throttled"


class SecondFactorRequiredError(RequestError):
    """An admin command without a one-time code where one is required (production mode, or
    an enrolled account): the same answer whether or not the account is enrolled."""

    code = "second_factor_required"


class BadSecondFactorError(RequestError):
    """A one-time code or recovery code that is wrong, expired, already used, or of an account
    with no second factor: one answer for all, so a guess learns nothing but "no"."""

    code = "bad_second_factor"


class NotFoundError(RequestError):
    code = "not_found"


class UploadQuotaError(RequestError):
    """An account's uploads no file record names on a node, partial or complete, would pass
    ``max_partial_uploads`` files or ``max_partial_upload_bytes`` bytes; recording one, or its
    expiry, frees its share."""

    code = "upload_quota"


class MessageTooLargeError(RequestError):
    code = "message_too_large"


class ReplicationTimeoutError(RequestError):
    """A put with a write concern: the record is durable at its home node, but fewer replicas
    than asked for confirmed it in time. The details say where it stands and who holds it."""

    code = "replication_timeout"


# --- replication (vledger.broker.feed, vledger.ingest.follow) ----------------------------


class FeedError(VledgerError):
    """A replication feed message that is not one (docs/PROTOCOL.md, section 10): dropped."""

    code = "bad_feed"


class ForkError(RecordError):
    """Two nodes hold different records at one height of a ledger."""

    code = "fork"


# --- Merkle trees and proofs (vledger.node.tree, docs/PROTOCOL.md section 12) ------------


class ProofError(VledgerError):
    """An inclusion or consistency proof, or its arguments, failed a check; says which."""

    code = "bad_proof"


class StoreContradictsCheckpointError(RecordError):
    """A node's own store no longer holds a checkpoint the node signed (a home) or cosigned (a
    witness): shorter than its size, or another tree root there. A home refuses writes to
    that ledger; an alert names the node (docs/PROTOCOL.md section 10.7)."""

    code = "store_contradicts_checkpoint"


class HeldBackError(RecordError):
    """A follower holds a ledger's records back: a quorum of the other witnesses' notes are of
    sizes above what it holds, by a key its key chain does not know, and every source it asked
    gave it all it had without the rotation that names that key, or gave a tree those notes
    contradict (docs/PROTOCOL.md section 10.7). Raised as an alert about its own copy."""

    code = "held_back"


class FencedError(RecordError):
    """A home of an earlier epoch: its checkpoint past the handover record, or a write to it,
    is refused; the node that holds the newer epoch says which home replaced it (10.9)."""

    code = "fenced"


class EquivocationError(RecordError):
    """A checkpoint signed with a ledger's key that contradicts a witness's verified copy: the
    same size with another root. Kept verbatim as evidence; an alert names the signer."""

    code = "equivocation"


class ReceiptError(VledgerError):
    """A receipt file that is not one, or whose record is not at the index or hash it states
    (docs/PROTOCOL.md section 14). Its other checks raise the record's, note's or proof's own
    errors."""

    code = "bad_receipt"


# --- observers and signed tallies (vledger.verifier.observer, docs/PROTOCOL.md section 11) ----


class SignatureError(VledgerError):
    """A signed tally whose Ed25519 signature does not verify with its observer's public key."""

    code = "bad_signature"


class TallyMismatchError(VledgerError):
    """Two observers signed different tallies of one ledger at the same height (an alert)."""

    code = "tally_mismatch"


class TallyUncomparedError(VledgerError):
    """Observers of one ledger signed at no common height for too long, none progressing (an alert)."""

    code = "tally_uncompared"


# --- keys, CURVE, Redis and accounts (vledger.broker) -----------------------------------


class KeyMaterialError(VledgerError):
    """A CURVE key or key file cannot be used; the message names the file, never the secret."""

    code = "bad_key"


class BadPublicKeyError(KeyMaterialError):
    """Not a CURVE public key: 40 characters of Z85 that decode to 32 bytes."""

    code = "bad_public_key"


class KeyNameError(KeyMaterialError):
    """A key name that could name another path (a separator, a leading dot, too long)."""

    code = "bad_key_name"


class KeyExistsError(KeyMaterialError):
    code = "key_exists"


class KeyPermissionsError(KeyMaterialError):
    """A secret key file that group or others may read (or write): refused, as ssh does."""

    code = "key_permissions"


class PassphraseError(KeyMaterialError):
    """A wrong passphrase, a missing one, or one given for a key that has none."""

    code = "bad_passphrase"


class CurveError(VledgerError):
    code = "curve_error"


class AuthSelfTestError(CurveError):
    """The start-up check found that an unlisted client key is not refused: never serve then."""

    code = "auth_self_test_failed"


class RedisServerError(VledgerError):
    """No redis-server could be found, or it did not start and answer PING in time."""

    code = "redis_server"


class SupervisorError(VledgerError):
    """A supervised cluster that did not start, answer or stop in time; says which process and why."""

    code = "supervisor"


class PromotionRefusedError(VledgerError):
    """``vledger ledger promote`` makes no new home: the standby holds fewer records than a
    write concern acknowledged, it is not the ledger's standby, or the old home still holds
    the lease; the sentence says which (10.9)."""

    code = "promotion_refused"


class RepairRefusedError(VledgerError):
    """``vledger repair`` will not rebuild a store: no quorum-cosigned checkpoint, no source
    consistent with it, a fetched record that does not verify, or the node still runs."""

    code = "repair_refused"


class ForgetRefusedError(VledgerError):
    """``vledger repl forget`` deletes nothing: the node is still in the cluster file, or its
    heartbeat in Redis is recent or unreadable (it may still run); the sentence says which."""

    code = "forget_refused"


class AccountError(VledgerError):
    """An account operation failed. Precise on purpose: the server decides what a client may learn."""

    code = "account_error"


class AccountExistsError(AccountError):
    code = "account_exists"


class NameHoldsUnitsError(AccountError):
    """``vledger user add`` of a name that holds units or may issue on a resources ledger (7.3):
    the new account would take them over; refused unless ``--reuse-name``."""

    code = "name_holds_units"


class NoSuchAccountError(AccountError):
    code = "no_such_account"


class AccountNameError(AccountError):
    code = "bad_account_name"


class RoleError(AccountError):
    code = "bad_role"


class KeyInUseError(AccountError):
    """The public key is already bound to another account: one key, one account."""

    code = "key_in_use"


class NoSuchKeyError(AccountError):
    code = "no_such_key"


class AdminCacheConflictError(AccountError):
    """Redis's cache of the admin ledger holds other bytes at ``height`` than the home's record
    (written there by hand, 16.4): the home rewrites the cache from its store."""

    code = "admin_cache_conflict"

    def __init__(self, message: str, *, height: int) -> None:
        super().__init__(message)
        self.height = height


class AdminLedgerExistsError(AccountError):
    """``vledger admin bootstrap`` that would add, re-enable or give a key to an admin once the
    admin ledger exists: no record would show it (16.3)."""

    code = "admin_ledger_exists"


class LastAdminError(AccountError):
    """An admin command that would leave no enabled admin holding a key: nobody could then
    send another admin command, and a refused key hears nothing (16.3)."""

    code = "last_admin"


class AlreadyEnrolledError(AccountError):
    """``totp.enroll`` of an account that has a second factor: ``totp.reset`` replaces one."""

    code = "already_enrolled"


class NotEnrolledError(AccountError):
    """``totp.reset`` of an account that has no second factor to replace."""

    code = "not_enrolled"


class ApplyTimeoutError(AccountError):
    """Not every named node applied an accounts version before the deadline; ``lagging`` names them."""

    code = "apply_timeout"

    def __init__(self, message: str, lagging: dict[str, int]) -> None:
        super().__init__(message)
        self.lagging = lagging


# --- domain rules (node/rules/) and sealed ids (node/sealed.py) ---------------------------


class RuleError(RecordError):
    """A record is well formed and correctly chained, but breaks its ledger's domain rules.

    Ingest refuses such a record; an observer replaying a chain skips it (it is not counted)
    and reports it with its height.
    """

    code = "rule_violation"


class BadEpochError(RuleError):
    """A handover record (kind ``epoch``, PROTOCOL 10.9) that is not the next epoch of its
    ledger: a wrong number, a home other than the node that placed it, a key the genesis does
    not pin, or a ledger whose genesis pins no standby key; or a checkpoint whose epoch line
    or signer is not the one its epoch names."""

    code = "bad_epoch"


class FailbackUnconfiguredError(BadEpochError):
    """A handover record opening epoch 3 or later (a failback) whose home the checker's own
    cluster file does not name the ledger's standby: the genesis pins the key, but only the
    operator's swap of the file on every host says the key was given the pen again, and not
    taken by a thief of it (10.9). The run is not stored, nothing past it cosigned."""

    code = "failback_unconfigured"


class BadDomainRulesError(BadGenesisError, RuleError):
    """The genesis ``rules`` map is not a valid domain (election, charity, ...) description.

    Both a genesis error (ingest refuses to create the ledger) and a rule error (an observer
    replaying a chain reports it at height 0 and every later record of that ledger with it,
    as nothing on it can be checked). Its own code: the protocol's genesis is valid.
    """

    code = "bad_rules"


class RulesOutOfSyncError(RecordError):
    """The rule state held for a ledger does not lead up to this record.

    A fault of the node that checks, not of the record: no state (expects the genesis), a
    record that is not the next height, or rules that differ from the genesis' own. Replay
    the ledger from its genesis.
    """

    code = "rules_out_of_sync"


class BadPayloadError(RuleError):
    """A payload field the ledger's domain reads is missing, unknown, of the wrong type or
    out of range (a float or a bool where an integer amount is expected)."""

    code = "bad_payload"


class BadIdentifierError(BadPayloadError):
    """A payload string breaks the identifier rule of its ledger (docs/PROTOCOL.md 7.5): not in
    normal form C, or holding a control, bidi-override, unassigned or (under "nfc-visible")
    invisible character."""

    code = "bad_identifier"


class AlreadyRegisteredError(RuleError):
    code = "already_registered"


class ElectronicIdTakenError(RuleError):
    """The electronic id derived from a registration is already held; retry with another request id."""

    code = "electronic_id_taken"


class NotRegisteredError(RuleError):
    code = "not_registered"


class WithdrawnError(RuleError):
    code = "withdrawn"


class AlreadyVotedError(RuleError):
    code = "already_voted"


class NoActiveVoteError(RuleError):
    code = "no_active_vote"


class InvalidChoiceError(RuleError):
    code = "invalid_choice"


class ElectionClosedError(RuleError):
    """The record's acceptance time lies outside the period that kind of record is allowed in."""

    code = "election_closed"


class UnknownFundError(RuleError):
    code = "unknown_fund"


class InsufficientFundsError(RuleError):
    """A disbursement or transfer of more than the fund or account holds."""

    code = "insufficient_funds"


class TooManyHoldersError(RuleError):
    """An issue or transfer that would make an account a holder beyond the ledger's ``max_holders``."""

    code = "too_many_holders"


class NotIssuerError(RuleError):
    code = "not_issuer"


class NotOwnerError(RuleError):
    code = "not_owner"


class SelfTransferError(RuleError):
    code = "self_transfer"


class NotGrantedError(RuleError):
    """The record's author holds no grant for its kind on its ledger, which the admin ledger
    closed by granting it to others (docs/PROTOCOL.md section 16)."""

    code = "not_granted"


class NotAdminAuthorError(RuleError):
    """An admin-ledger record whose author is not an enabled admin by the admin records before
    it, nor one of the exceptions PROTOCOL 16.7 lists (what an observer's replay flags: the
    home wrote a change for someone the ledger never made an admin)."""

    code = "not_admin_author"


class AlreadyGrantedError(RuleError):
    code = "already_granted"


class NoSuchGrantError(RuleError):
    code = "no_such_grant"


class NotGrantableError(RuleError):
    """A grant of a kind no grant closes on that ledger (a resources ledger's ``issue`` and
    ``transfer``, PROTOCOL 7.3): ``vledger grant add`` refuses to record one that changes nothing."""

    code = "not_grantable"


class NodeKeyInUseError(RuleError):
    """A ``key_rotation`` to a key another node's rotation already named: one host's key
    would then sign, and count, for two nodes (a write concern of 2 met by one witness)."""

    code = "node_key_in_use"


class FileTooLargeError(RuleError):
    code = "file_too_large"


class FileConflictError(RuleError):
    """A file record states another size for a SHA-256 already on the ledger."""

    code = "file_conflict"


# --- signed notes, checkpoints and cosignatures (node/note.py, docs/PROTOCOL.md section 13) ---


class NoteError(VledgerError):
    """Text that is not a C2SP signed note: bad UTF-8, a control character, no blank line
    before the signatures, a malformed signature line, or over a limit. Also the base of the
    checkpoint, cosignature and quorum errors below."""

    code = "bad_note"


class CheckpointKeyMissingError(VledgerError):
    """A home that holds no private key of the checkpoint key in force for a ledger (its rotated
    key file ``<home>.ckpt-<digest>.sign`` is not in its key directory): it could sign no
    checkpoint of what it acknowledged, so it refuses the ledger's writes (outsider o21 F2)."""

    code = "no_checkpoint_key"


class NoteKeyError(NoteError):
    """A verifier key (vkey) or signer key string that is not one: its syntax, its algorithm,
    its key length, or a key id that does not match its name and key; or a set of keys that
    cannot be used together (two keys with one name and key id)."""

    code = "bad_note_key"


class NoteSignatureError(NoteError):
    """A signature line whose name and key id match a trusted key, but whose signature does
    not verify: the whole note is refused (C2SP signed-note)."""

    code = "bad_note_signature"


class UnverifiedNoteError(NoteError):
    """A well-formed note with no verified signature by the key it must be signed by."""

    code = "unverified_note"


class CheckpointError(NoteError):
    """A note text that is not a C2SP checkpoint body (origin, size, root, extension lines)."""

    code = "bad_checkpoint"


class WrongOriginError(CheckpointError):
    """A checkpoint of another log: its origin line is not the one expected."""

    code = "wrong_origin"


class CosignatureError(NoteError):
    """A cosignature line from a trusted witness key that is malformed (length, timestamp)
    or does not verify over the checkpoint it is attached to."""

    code = "bad_cosignature"


class QuorumError(NoteError):
    """Fewer distinct trusted witnesses cosigned a checkpoint than the quorum asks for, or a
    quorum that no set of the given witnesses could ever meet. ``past_replaced_key``: the only
    line was by a replaced key on a checkpoint larger than its rotation says that key had
    cosigned (docs/PROTOCOL.md 16.6), no fault of an honest witness, which cosigns with that
    key until it reads its rotation."""

    code = "no_quorum"
    past_replaced_key = False


class StaleCheckpointError(NoteError):
    """A verified checkpoint no majority of its witnesses vouched for lately (docs/PROTOCOL.md
    11.4's stale head): its ``fresh_ms`` is more than the cluster's recosign_interval_ms plus a
    grace before the client's clock. Witnesses cosign a quiet ledger's checkpoint again (10.7),
    so a live server's never gets that old: a frozen or lying one shows an old view."""

    code = "stale_checkpoint"


class RollbackError(NoteError):
    """A verified checkpoint smaller than one the client already verified for the same ledger:
    a log only grows, so a server that shows an older tree is rolling it back (or is behind and
    must not be believed over what the client saw)."""

    code = "rollback"


class RotationError(RecordError):
    """A record of kind ``checkpoint_key`` that is no valid key rotation: a ledger whose
    genesis pins no checkpoint key, a malformed payload, a new key that is not an Ed25519
    note key of the ledger's origin or was in force before, or a signature that is not the
    key in force's over the rotation message (docs/PROTOCOL.md section 13.8)."""

    code = "bad_rotation"


class StandbyRotationError(RotationError, RuleError):
    """A record of kind ``checkpoint_key`` on a ledger whose genesis pins a standby key: its
    checkpoint keys are the two its genesis pins, and it never rotates (docs/PROTOCOL.md 10.9,
    13.8). A rule breaker as well, so an observer's replay reports it where it stands."""

    code = "standby_rotation"


class RetiredKeyError(NoteError):
    """A checkpoint signed by a key of the ledger's key chain that is not the one in force at
    its size: a retired key past its rotation, or a new key before it (section 13.8). The
    signature itself verified: the note is evidence against whoever held that key."""

    code = "retired_key"


class WitnessRequestError(NoteError):
    """A C2SP tlog-witness message (an add-checkpoint request or a response) that is not one.

    ``status`` is the HTTP status the tlog-witness spec gives for the failure: 400 for a
    malformed request, 422 for a proof where none may be.
    """

    code = "bad_witness_message"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class WitnessRefusedError(NoteError):
    """An outside witness would not cosign a checkpoint its home fed it (an alert, 13.9): it
    answered 422 (it saw a tree this one does not extend), 403 or 404 (it does not trust the
    key or know the origin), or named a size past what the home signed."""

    code = "witness_refused"


class WitnessUnreachableError(NoteError):
    """An outside witness gave its home no cosignature twice in a row (an alert, 13.9): it could
    not be reached, did not answer in full within ``witness_timeout_ms``, or answered what is
    not a cosignature by its listed key."""

    code = "witness_unreachable"


class SealError(VledgerError):
    """A sealed id that does not unseal: malformed, tampered with, another key or another context."""

    code = "bad_seal"


class RemoteError(VledgerError):
    """A node's error reply, as a client sees it: the node's code, message and details."""

    code = "remote"  # each instance carries the node's own code

    def __init__(self, code: str, message: str, details: dict[str, object]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = message
        self.details = details


class NodeUnavailableError(VledgerError):
    """A node did not answer in time, or answered with something that is not a reply.

    ``listening`` False: nothing accepted a TCP connection at its endpoints either, so it is
    down or not serving yet (one started on a full disk waits for room before it listens), not
    refusing a key. No key decides that (anyone sees a closed port): it says nothing of whether
    an account exists. None: not looked at."""

    code = "unavailable"

    def __init__(self, message: str, *, listening: bool | None = None) -> None:
        super().__init__(message)
        self.listening = listening
