"""Files: a ledger of uploads (name, size, SHA-256) and who may read them back.

Genesis rules::

    {"type": "files", "read": "public" | "uploader" | "authors", "max_size": int}   # max_size optional

The genesis ``kinds`` must include ``file``; other kinds are allowed (and make their
authors count as authors of the ledger). The file's bytes live in the node's blob area,
named by their SHA-256; the ledger records that they were uploaded, by whom, and under
which display name.

**Records**: ``file`` ``{"name": str, "size": int, "sha256": str}``, exactly these fields,
checked in this order [``bad_payload`` unless said otherwise]:

* ``name``: a display name, never a path: 1-255 characters, no ``/`` or ``\\``, no NUL or
  other control character (U+0000-U+001F, U+007F-U+009F), not ``.`` or ``..``;
* ``size``: an integer >= 0 (a bool or float refused), at most ``max_size`` when the
  genesis sets one [``file_too_large``];
* ``sha256``: 64 lower-case hexadecimal characters;
* a SHA-256 already on the ledger with another size is a contradiction [``file_conflict``].

The same file may be uploaded again (by its uploader or another account, under any name):
each uploader is remembered. The uploader is the record's author.

**Reading** (:func:`may_read`, which the server calls before it sends a blob): ``public``,
anyone; ``uploader``, an account that uploaded that file; ``authors``, any account that has
authored a record on this ledger (its genesis included). An unknown SHA-256 is never readable.

State: one entry per distinct file and the set of the ledger's authors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import FileConflictError, FileTooLargeError
from ..ledger import LedgerRules
from ..record import Record
from . import Domain, GenesisReader, Plan, Ref, refuse

READ_RULES = ("public", "uploader", "authors")
MAX_NAME_LENGTH = 255
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Control characters (C0, DEL, C1) and both path separators.
_NOT_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")


@dataclass(frozen=True, slots=True)
class StoredFile:
    sha256: str
    size: int
    first: Ref  # the record that first uploaded it
    uploaders: frozenset[str]


@dataclass(frozen=True, slots=True)
class FilesTally:
    files: int  # distinct files (SHA-256)
    bytes: int  # their total size
    uploads: int  # file records
    authors: int  # accounts that have authored a record on the ledger


class FilesState(Domain):
    type_name = "files"
    kinds = frozenset({"file"})

    def __init__(self, genesis: Record, rules: LedgerRules) -> None:
        reader = GenesisReader(genesis, rules, type(self))
        self.identifiers = reader.identifiers
        reader.keys(("read",), optional=("max_size",))
        read = rules.rules["read"]
        if read not in READ_RULES:
            reader.fail(f"read must be one of {list(READ_RULES)}, not {read!r}")
        self.read: str = read
        self.max_size = reader.integer("max_size") if "max_size" in rules.rules else None
        self._files: dict[str, StoredFile] = {}
        self._authors = {genesis.content.author}
        self._uploads = 0

    def plan(self, record: Record) -> Plan:
        if record.content.kind == "file":
            return self._file(record)
        author = record.content.author
        if author in self._authors:
            return Plan()
        return Plan(lambda: self._authors.add(author))

    def _file(self, record: Record) -> Plan:
        fields = self.fields(record, "name", "size", "sha256")
        name = fields.text("name")
        if len(name) > MAX_NAME_LENGTH or _NOT_IN_NAME.search(name) or name in {".", ".."}:
            fields.fail(f"name {name!r} is not a display name (1-{MAX_NAME_LENGTH} characters, no path, no control)")
        size = fields.integer("size", 0)
        if self.max_size is not None and size > self.max_size:
            refuse(FileTooLargeError, record, f"{size} bytes is over this ledger's max_size of {self.max_size}")
        sha256 = fields.text("sha256")
        if not _SHA256.fullmatch(sha256):
            fields.fail("sha256 must be 64 lower-case hexadecimal characters")
        author = record.content.author
        known = self._files.get(sha256)
        if known is None:
            stored = StoredFile(sha256, size, Ref.of(record), frozenset({author}))
        elif known.size != size:
            refuse(
                FileConflictError, record, f"{sha256} was uploaded at height {known.first.height} as {known.size} bytes"
            )
        else:
            stored = StoredFile(sha256, size, known.first, known.uploaders | {author})

        def commit() -> None:
            self._files[sha256] = stored
            self._authors.add(author)
            self._uploads += 1

        return Plan(commit)

    def file(self, sha256: str) -> StoredFile | None:
        return self._files.get(sha256)

    def files(self) -> list[StoredFile]:
        """Every distinct file the ledger records."""
        return list(self._files.values())

    def is_author(self, account: str) -> bool:
        return account in self._authors

    def tally(self) -> FilesTally:
        files = self._files.values()
        return FilesTally(len(files), sum(f.size for f in files), self._uploads, len(self._authors))


def may_read(state: FilesState, sha256: str, account: str | None) -> bool:
    """Whether ``account`` (None: not signed in) may read the file ``sha256`` of this ledger."""
    stored = state.file(sha256)
    if stored is None:
        return False
    if state.read == "public":
        return True
    if account is None:
        return False
    if state.read == "uploader":
        return account in stored.uploaders
    return state.is_author(account)
