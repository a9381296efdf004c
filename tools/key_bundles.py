"""A folder per process with the key files that process reads, and nothing else.

``vledger keygen --cluster FILE --bundles DIR`` writes, beside the cluster's key directory
(which stays the operator's: ``admin.key_secret``, the admin's Redis password), one folder per
process under DIR, laid out as the key directory is, so that mounted (or copied) at the
cluster file's ``[cluster] keys`` it is all that process finds there:

=============  ==================================================================================
folder         holds
=============  ==================================================================================
NODE           every public file (``*.key``, ``*.sign.pub``: a node admits the cluster's members by
               their ``.key`` and checks checkpoints, cosignatures and tallies with ``.sign.pub``);
               the node's own secrets: ``NODE.key_secret`` and ``NODE.sign`` with every rotated
               generation (``NODE@G.*``) and a home's rotated checkpoint keys (``NODE.ckpt-*.sign``);
               an ingest node also the cluster's ``second-factor.seal`` (it checks admins' codes);
               with ``[redis] passwords``, its own Redis user's password file
``gateway``    every public file and the gateway's Redis password: no secret key at all
``redis``      ``redis.acl`` (digests, no password) and, behind Sentinel, the replication
               user's password (the data servers sign in to each other with it)
``sentinel``   behind Sentinel: the Sentinels' password for the data servers
``redis-functions``  the loader user's password alone (``vledger redis-functions``: it loads the
               functions library into Redis; no node's user may)
=============  ==================================================================================

What each process reads: ingest/runtime.py (``NodeRuntime.open``: its ``.key_secret``),
ingest/members.py (every ``.key`` and ``.sign.pub``), ingest/server.py (its ``.sign``, its
checkpoint keys, ingest/second_factor.py's seal key), ingest/replica.py and
verifier/observer.py (their ``.sign``), verifier/gateway.py (``.sign.pub`` files and its Redis
user). The Redis password files sit under the same path relative to the key directory as
``[redis] passwords`` gives, so ``[redis] passwords`` must lie inside ``[cluster] keys``.

Running it again brings every folder up to date (a key rotated since, a node added): each
file is replaced whole. A file in a folder that is not in its list is left there and named
(``extra``), never removed: a home given its folder as its key directory writes the checkpoint
key of ``vledger ledger rotate-key`` there (ingest/server.py), and a key deleted is lost; copy
such a key back into the key directory, or remove a stray file by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..broker import redis_acl
from ..broker.keys import GENERATION_MARK, SECRET_SUFFIX
from ..broker.keys import PUBLIC_SUFFIX as CURVE_PUBLIC_SUFFIX
from ..broker.signing import CHECKPOINT_KEY_INFIX, PRIVATE_SUFFIX
from ..broker.signing import PUBLIC_SUFFIX as SIGN_PUBLIC_SUFFIX
from ..config.cluster import ClusterConfig
from ..config.redis import check_redis_url
from ..node.errors import UsageError

GATEWAY = "gateway"
REDIS = "redis"
SENTINEL = "sentinel"
FUNCTIONS = "redis-functions"  # the loader of the functions library (vledger redis-functions)
SERVICE_BUNDLES = (GATEWAY, REDIS, SENTINEL, FUNCTIONS)

# A bundle's file: where it goes in the bundle (a relative path) -> (where it is now, secret).
Bundle = dict[PurePosixPath, tuple[Path, bool]]


def public_files(config: ClusterConfig) -> list[Path]:
    """Every public key file of the key directory: CURVE ``*.key`` and Ed25519 ``*.sign.pub``."""
    found = [*config.keys_dir.glob(f"*{CURVE_PUBLIC_SUFFIX}"), *config.keys_dir.glob(f"*{SIGN_PUBLIC_SUFFIX}")]
    return sorted(path for path in found if path.is_file())


def node_secrets(config: ClusterConfig, name: str) -> list[Path]:
    """Node ``name``'s secret files: its CURVE and Ed25519 keys of every generation, its rotated
    checkpoint keys, and for an ingest node the cluster's second-factor key."""
    node = config.node(name)
    patterns = [
        f"{name}{SECRET_SUFFIX}",
        f"{name}{GENERATION_MARK}*{SECRET_SUFFIX}",
        f"{name}{PRIVATE_SUFFIX}",
        f"{name}{GENERATION_MARK}*{PRIVATE_SUFFIX}",
        f"{name}{CHECKPOINT_KEY_INFIX}*{PRIVATE_SUFFIX}",
    ]
    found = {path for pattern in patterns for path in config.keys_dir.glob(pattern) if path.is_file()}
    seal = config.second_factor_key_path()
    if node.role == "ingest" and seal.is_file():
        found.add(seal)
    return sorted(found)


def replicated(config: ClusterConfig) -> bool:
    """Whether the cluster's Redis is a set behind Sentinel (its servers then have users of their own)."""
    return check_redis_url(config.redis_url) is not None


def bundle_names(config: ClusterConfig) -> list[str]:
    """The folders :func:`write_bundles` makes: a node's, the gateway's, and with access control
    Redis's (and the Sentinels') and the functions loader's."""
    names = [*sorted(config.nodes), GATEWAY]
    if config.redis.passwords_dir is not None:
        names.append(REDIS)
        if replicated(config):
            names.append(SENTINEL)
        names.append(FUNCTIONS)
    return names


def bundle(config: ClusterConfig, name: str) -> Bundle:
    """The files of folder ``name`` (a node's name, or one of :data:`SERVICE_BUNDLES`).

    Raises UsageError for a name that is neither, or for ``[redis] passwords`` outside
    ``[cluster] keys`` (a folder mounted at the key directory could not hold its password)."""
    passwords = config.redis.passwords_dir
    files: Bundle = {}
    if name in (REDIS, SENTINEL):
        if passwords is None:
            raise UsageError(f"{config.path}: no [redis] passwords, so Redis has no users to give a folder")
        wanted = [redis_acl.ACL_FILE, f"{redis_acl.REPLICATION_USER}{redis_acl.PASSWORD_SUFFIX}"]
        if name == SENTINEL:
            wanted = [f"{redis_acl.SENTINEL_USER}{redis_acl.PASSWORD_SUFFIX}"]
        for file in wanted:
            if (passwords / file).is_file():
                files[PurePosixPath(file)] = (passwords / file, True)
        return files
    public = name != FUNCTIONS  # the loader reads its password alone
    secrets: list[Path] = []
    if name == FUNCTIONS:
        if passwords is None:
            raise UsageError(f"{config.path}: no [redis] passwords, so Redis has no loader user to give a folder")
        user = redis_acl.LOADER_USER
    elif name == GATEWAY:
        user = redis_acl.user_name("gateway")
    elif name in config.nodes:
        node = config.node(name)
        user, secrets = redis_acl.user_name(node.role, name), node_secrets(config, name)
    else:
        raise UsageError(f"{name!r} is neither a node of {config.path} nor one of {', '.join(SERVICE_BUNDLES)}")
    for path in public_files(config) if public else ():
        files[PurePosixPath(path.name)] = (path, False)
    for path in secrets:
        files[PurePosixPath(path.name)] = (path, True)
    if passwords is not None:
        if not passwords.is_relative_to(config.keys_dir):
            raise UsageError(
                f"{config.path}: [redis] passwords ({passwords}) is not inside [cluster] keys ({config.keys_dir}): "
                "a folder mounted at the key directory could not hold the Redis password"
            )
        where = PurePosixPath(passwords.relative_to(config.keys_dir).as_posix())
        path = redis_acl.password_path(passwords, user)
        files[where / path.name] = (path, True)
    return files


@dataclass(frozen=True, slots=True)
class Written:
    """A folder :func:`write_bundles` wrote: its files, and those it found there besides (kept)."""

    files: list[str]
    extra: list[str]


def write_bundles(config: ClusterConfig, directory: Path) -> dict[str, Written]:
    """Each folder of :func:`bundle_names` under ``directory`` (0700), its files copied in (secrets
    0600, public files 0644); returns folder -> what it wrote and what else the folder holds."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: dict[str, Written] = {}
    for name in bundle_names(config):
        files = bundle(config, name)
        folder = directory / name
        folder.mkdir(mode=0o700, exist_ok=True)
        for target, (source, secret) in files.items():
            path = folder / target
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _copy(source, path, 0o600 if secret else 0o644)
        wanted = {folder / target for target in files}
        extra = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file() and p not in wanted]
        written[name] = Written(sorted(str(target) for target in files), extra)
    return written


def _copy(source: Path, path: Path, mode: int) -> None:
    # Written with its mode from the first byte, then moved over the old copy (a running
    # process rereads a whole file or the old one, never half of each).
    data = source.read_bytes()
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have taken bits the mode needs
        f.write(data)
    os.replace(tmp, path)
