"""Redis access control: a Redis user per node, with only the commands and keys its role uses.

Without it any host that reaches Redis reads and writes every key: a replica could rewrite a
ledger's stream or give itself an admin account. With it (``[redis] passwords`` in the
cluster file, docs/INTERNALS.md) each node signs in as a user of its own,
``vledger-node-<node>``, with its role's rules; the public gateway and the ``vledger``
command sign in as their role's user, ``vledger-gateway`` and ``vledger-admin``. Each user
has its own password file (``<user>.redis_password``, 0600, beside the ACL file). No user
is shared by the nodes of a role: one would write every node's keys, the hole this closes
(an upgrade from role users runs ``vledger keygen --cluster`` again: docs/INTERNALS.md).


============  ===========================================================================
role          its users may
============  ===========================================================================
ingest        append to and repair its ledgers' streams (``{*}:chain``), name homes and epochs
              (``{ledgers}``, ``{ledgers}:epochs``); of the ledgers it may home (see Checkpoints
              below) keep the latest checkpoint (``{*}:checkpoint``) and, a home of an epoch from
              2 on, its witnessed checkpoint of it (``{*}:epoch_proof``), and read every ledger's;
              read the witnesses' cosignatures (``{*}:cosig:*``, channel
              ``cosigned``), keep its outside witnesses' verified ones (``{*}:outside``: of the
              ledgers it may home, as checkpoints; every ledger's read); advance
              held heights, raise and resolve its own alerts (see Alerts below); read the
              accounts and the admin ledger's cache (``{accounts}:admin:records``: grants);
              check and use admins' second factors (``{totp}:account:*``, ``:recovery:*``,
              ``:failures:*``, ``:session:*``, sealed secrets: broker/second_factor.py). The admin ledger's
              home alone also changes the accounts and that cache (it carries out the admin's
              account commands, which it checks itself: ingest/accounts.py, PROTOCOL 16.3) and
              records the host's enrollments (``{totp}:unrecorded``), and reads every
              observer's tallies (``{*}:tallies:*``, ``{*}:tally:latest:*``: what an observer's
              rotated key had tallied, PROTOCOL 16.6)
replica       read streams, homes, epochs, checkpoints, epoch proofs and outside cosignatures; as a witness
              publish its cosignatures (``{*}:cosig:<node>``, its recent ones in
              ``{*}:cosig:<node>:recent``, channel ``cosigned``) and keep its own
              evidence (``{evidence}:<node>``); advance held heights; raise and resolve its own
              alerts (see Alerts below); read the accounts
observer      what a replica may, and publish its own signed tallies (``{*}:tallies:<node>``,
              ``{*}:tally:latest:<node>``: see Tallies below) and read back its own latest ids
verifier      read streams, held heights, homes, epochs, checkpoints, the witnesses'
              cosignatures and epoch proofs (``{*}:cosig:*``, ``{*}:epoch_proof``: what proves a
              handover, 10.9); read streams through its
              consumer group (``XREADGROUP``/``XACK``/``XAUTOCLAIM``, and nothing else writes
              there), list the stream keys (``SCAN``: a ledger ``{ledgers}`` no longer lists is
              checked all the same); read the observers' signed tallies (``{*}:tallies:*``,
              ``{*}:tally:latest:*``: a disagreement is an alert); keep its own sweep
              checkpoints (``{sweep}:<node>``) and evidence (``{evidence}:<node>``: a signed
              fork's two notes); raise and resolve its own
              alerts; read the accounts
gateway       read only: every observer's signed tallies, the witnesses' and outside
              witnesses' cosignatures, held heights, the ledgers' homes and every raiser's
              open alerts (verifier/gateway.py); no write command at all
admin         the ``vledger`` command: every ``vledger:*`` key, accounts included (and the
              renames of ``vledger admin migrate-keys``), each node's ``{accounts}:applied:N``
              too: Redis has no pattern that leaves keys out, and the operator deletes by hand
              what Redis holds wrong. So no node trusts those keys' type: a node's applied key
              of another type reads as a live node that applied nothing, and the node replaces
              it at its next report (broker/accounts.py, outsider o10 L1)
============  ===========================================================================

**Alerts.** Redis ACLs grant a command on a key, never on a field of a hash, on what an entry
says or on a command's arguments (``XADD``'s ``MAXLEN`` trims the stream it adds to). So
every raiser's alerts have keys of its own name: a node adds to its own stream
(``{alerts}:log:<node>``) and opens and resolves its own alerts (``{alerts}:open:<node>``),
and reads every raiser's and the operator's resolutions (``{alerts}:resolved``); the shared
``{alerts}`` and ``{alerts}:open`` (the older layout's, and ``vledger tally``'s) are the admin's,
and read by all. A node broken into can therefore
neither delete, overwrite nor trim another node's alerts; what it can do is raise alerts in
its own keys that name any node (an alert's ``node`` is a claim; its raiser, the key's name,
is not), and delete or trim its own (which the node itself puts back from its data directory,
broker/alert_journal.py: a Redis password is not the host). Readers show each alert's raiser (``raised_by``). Only
the admin's user writes ``{alerts}:resolved``, where ``vledger alerts resolve`` notes each
alert it resolves (and deletes it from every raiser's keys), and the verifier (reading it)
opens again, in its own keys, an alert only an operator resolves (broker/replication.py
OPERATOR_RESOLVED: ``equivocation``, ``store_contradicts_checkpoint`` but a follower's about
itself, ...: operator_resolves) that left its
raiser's open hash without that note; its own findings it raises again while their cause
remains (docs/PROTOCOL.md 10.5). A witness's evidence is likewise in a hash of its own,
``{evidence}:<node>``.

**Held heights** are per node too: node N's height of a ledger is ``{*}:held:N``, a string
only N's user sets (``SET``, in a selector of that key alone) and every node reads.

**Checkpoints** are per ledger: ``{L}:checkpoint`` and ``{L}:epoch_proof`` are set (``SET``
alone, in a selector of those keys, with the ``FCALL`` that appends to ``{L}:chain`` and sets
the checkpoint with it) only by the users of the nodes that may home ledger L: the home and
the standby the cluster file names for it (``[ledgers.L]``; a promotion moves a ledger only to
its standby, PROTOCOL 10.9), and the ``default_home``, which homes every ledger the file does
not list and so has these selectors for ``{*}`` (:func:`checkpoint_writers`). No user but the
admin's runs ``DEL`` on them. Every other ingest node reads them only: it can neither roll a ledger's
latest checkpoint back to an older signed one nor delete it or its epoch proof. What the
writers themselves could still do: a smaller checkpoint is seen (the verifier keeps the largest
it verified there and raises ``rollback``, PROTOCOL 10.5); a key made to vanish (``SET`` with an
expiry) or junk is not, and proves nothing either (the verifier takes neither); a follower holds each checkpoint to its
own records (10.7), and an older one its home signed takes nothing from it; a proven epoch is
kept by whoever proved it (10.9).

**Cosignatures** as well: witness W's latest cosigned note of a ledger is ``{*}:cosig:W``, a
string only W's user sets and every node reads (the names read are the reader's cluster's
nodes, never a list found in Redis), and its few newest ``{*}:cosig:W:recent``, a list only
W's user pushes to and trims (and deletes, when of another type), read as the cosignatures are.
So a witness broken into can neither delete nor set back another witness's cosignature; it can
only publish an older note of its own, or junk, which counts nowhere (whoever counts a
cosignature verifies it, docs/PROTOCOL.md 10.3).

**Tallies** as well: observer O adds its signed snapshots of a ledger to its own stream
``{*}:tallies:O`` (``XADD`` alone, in a selector of those keys, whose ``MAXLEN`` trims that
stream only) and sets the id of its latest in ``{*}:tally:latest:O`` (``SET`` alone, in the
selector of its held heights), so each stays of its type; the gateway, the admin ledger's
home and the admin read every observer's. So an observer broken into can neither point another's latest at an older
signed snapshot nor trim, delete or add to another's stream; what it can do is put in its
own keys an old snapshot of its own or a body another observer signed (readers take the
observer from the key's name, and the body's ``observer`` must be it, its signature that
observer's), and trim its own stream. The shared ``{*}:tallies`` and ``{*}:tally:latest`` of
the older layout are the admin's, and read by nobody.

**What ACLs still cannot say.** Some keys stay shared by every node of a role, which may
overwrite, delete or trim what another node wrote there:

- what every ingest node writes: every ledger's stream (``{*}:chain``), the homes
  (``{ledgers}``) and the epochs (``{ledgers}:epochs``). So an ingest node broken into may add
  entries to another node's ledger's stream or name itself its
  home or the home of a newer epoch. Followers store a record only under a checkpoint its home
  signed (10.7); a home rewrites its stream from its store when it finds an entry not its own
  (``record_conflict``) and puts back its field of ``{ledgers}`` when it names another node
  (``home_rewritten``: no ACL reaches a field, so per-node keys would be the only bar, and
  every reader already takes homes from the cluster file or a witnessed epoch, lists no name
  there that no genesis backs, and ``vledger repair`` notes what it did not take); and a node
  takes a newer epoch than its store holds only when a
  checkpoint of that epoch, signed by the pinned key its own epoch does not sign with and
  cosigned by a witness, proves it (10.9: ingest/epochs.py Homes, the outbox, the write
  concern; that key alone is the standby host's). The verifier, ``vledger repl status`` and
  a node that holds no copy of the ledger take the cluster file's home until such a checkpoint
  proves a handover, and show the hash's home otherwise as a claim (docs/PROTOCOL.md 10.6,
  10.9); and since any of them may delete an entry of the epochs, the verifier and the nodes
  also look for such a checkpoint while the hash names none, and keep an epoch once proven.

A node may also claim, in its own keys, a height it does not hold or an alert about any node:
those are claims, shown with the name of the node that made them.

Every node user reads the admin ledger's cache (``{accounts}:admin:records``), where its
grants are. Node N reports which accounts version it applied, and when, in a hash of its own
(``{accounts}:applied:N``, which it may also DEL, to replace it when of another type, as it
may its own alert keys) and reads every node's: the admin's ``wait_applied`` reads them, so no
node can say another applied a change (a revoke) it has not, nor make a live one look dead. Keys
are named by broker/redis_keys.py (``{*}`` above is a ledger's hash tag); a command a
function runs is checked against the caller's user too, so a function cannot reach past these
rules. No user has ``KEYS``, ``FLUSH*``, ``CONFIG``, ``ACL``, ``DEBUG``, ``SHUTDOWN``,
``MODULE`` or ``MIGRATE``; nobody can sign in as the default user (below).

**Lua.** The atomic steps are the functions of one library (broker/functions.lua), which every
user but the gateway's calls (``FCALL``, ``FCALL_RO`` for those that only read, whose keys then
count as read: a reader's ``%R~`` keys take them). No node's user, nor the admin's, may run
``EVAL``, ``EVALSHA``, ``EVAL_RO``, ``EVALSHA_RO``, ``SCRIPT`` or ``FUNCTION LOAD`` / ``DELETE`` /
``FLUSH`` / ``RESTORE``: one password could otherwise make Redis run a loop that never ends,
for everyone (a script that wrote cannot be killed; outsider o18 F2), and each function bounds
its loops by its arguments. The library is loaded by a user of its own, :data:`LOADER_USER`,
which may do nothing else (broker/redis_functions.py) but may load any code: its password is
as strong as the Redis host's administrator. The admin's user may ``FUNCTION KILL`` and
``SCRIPT KILL`` a loop that wrote nothing, the operator's way out.

Pure apart from :func:`write_passwords` (files) and :func:`apply` (a Redis client).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ..node.errors import SettingsError

NODE_ROLES = ("ingest", "replica", "observer", "verifier")  # a user per node
SERVICE_ROLES = ("gateway", "admin")  # a user per role
ROLES = (*NODE_ROLES, *SERVICE_ROLES)
USER_PREFIX = "vledger-"
NODE_USER_PREFIX = "vledger-node-"
PASSWORD_SUFFIX = ".redis_password"  # noqa: S105 (a file name)
ACL_FILE = "redis.acl"
_PASSWORD_BYTES = 32

# What a client does on every connection: AUTH (always allowed), SELECT the URL's database,
# PING, and call the functions of vledger's library (FCALL, FCALL_RO: broker/functions.lua).
# No EVAL, EVALSHA, SCRIPT or FUNCTION LOAD: a user that may send a script of its own may send
# a loop that never ends, and a script that wrote cannot be killed (Redis stayed BUSY for
# everyone until a restart, outsider o18 F2). redis-py also names its library (CLIENT SETINFO,
# Redis 7.2 on) and takes a refusal in its stride.
_CONNECTION = ("ping", "select", "fcall", "fcall_ro")
# Accounts as every node reads them (AccountRegistry.snapshot / lookup, AccountCache), and
# its grants from the admin ledger's cache (AccountCache._load_grants: LLEN, LRANGE).
_ACCOUNTS_READ: tuple[str, ...] = ("get", "smembers", "sismember", "hget", "hmget", "hgetall", "time")
_ACCOUNTS_READ += ("subscribe", "unsubscribe", "llen", "lrange")
# The version each node reports it applied (record_applied: HSET, TIME, PUBLISH; its own key).
_ACCOUNTS_REPORT = ("hset", "publish")
_STREAM_READ = ("xrange", "xrevrange", "xread", "xlen", "exists")
# The witnesses' cosignatures of a ledger, a key per witness, in one read (ReplicationLedger.cosignatures).
_COSIGNATURES_READ = ("mget",)
# HRANDFIELD: a raiser's open hash is read at most OPEN_ALERTS_CAP + 1 fields at a time, and
# MEMORY USAGE: not read past OPEN_ALERTS_BYTES (ReplicationLedger.open_by_raiser).
_ALERTS = ("xadd", "hset", "hdel", "hgetall", "hrandfield", "memory|usage", "xrevrange")
# The account changes' functions (broker/accounts.py), run by an ingest node for the admin.
_ACCOUNTS_WRITE = ("sadd", "srem", "del", "incr", "hset", "hdel", "publish", "rpush")
# Admins' second factors (broker/second_factor.py): its functions and calls, and a
# transaction (MULTI/EXEC) when an account's factor is dropped.
_SECOND_FACTOR = ("hexists", "hmget", "hset", "del", "sadd", "srem", "scard", "smembers", "incr", "expire", "get")
# A witness makes its cosignature and the hint on ``cosigned`` one transaction (MULTI/EXEC).
_TRANSACTION = ("multi", "exec", "discard")

_COMMANDS: dict[str, tuple[str, ...]] = {
    "ingest": (
        *_CONNECTION,
        *_ACCOUNTS_READ,
        *_ACCOUNTS_REPORT,
        *_STREAM_READ,
        *_COSIGNATURES_READ,
        *_ALERTS,
        *_ACCOUNTS_WRITE,
        *_SECOND_FACTOR,
        *_TRANSACTION,
        "hsetnx",
        "set",  # its own held heights (a function); each checkpoint it writes is in a selector of its own
        "xdel",
        "xsetid",
        "xinfo|groups",
        "xgroup|setid",
        "xgroup|create",  # a rewind on Redis 7.2+ / Valkey makes the stream and its groups again
    ),
    "replica": (
        *_CONNECTION,
        *_ACCOUNTS_READ,
        *_ACCOUNTS_REPORT,
        *_STREAM_READ,
        *_COSIGNATURES_READ,
        *_ALERTS,
        *_TRANSACTION,
    ),
    "observer": (
        *_CONNECTION,
        *_ACCOUNTS_READ,
        *_ACCOUNTS_REPORT,
        *_STREAM_READ,
        *_COSIGNATURES_READ,
        *_ALERTS,
        *_TRANSACTION,
    ),
    # SCAN: the stream keys that exist, a ledger Redis's {ledgers} hash no longer lists included.
    "verifier": (
        *_CONNECTION,
        *_ACCOUNTS_READ,
        *_ACCOUNTS_REPORT,
        *_STREAM_READ,
        *_COSIGNATURES_READ,
        *_ALERTS,
        "scan",
    ),
    # The public gateway faces the internet: if it is taken over, it must not be able to
    # change what it shows, so it has read commands only (no FCALL: a function could write;
    # it reads tallies through broker/bounded_range.py), and FCALL_RO, which runs only the
    # library's functions flagged no-writes, for read_open (an open hash sized and read at once).
    # TIME: the server's clock, past which no alert's stream id can be, and HRANDFIELD: an open
    # hash read at most OPEN_ALERTS_CAP + 1 fields at a time (ReplicationLedger.open_by_raiser).
    "gateway": (
        "ping",
        "select",
        "fcall_ro",
        "get",
        "hget",
        "hgetall",
        "hrandfield",
        "memory|usage",
        "hkeys",
        "smembers",
        "time",
        *_STREAM_READ,
        *_COSIGNATURES_READ,
    ),
    "admin": (
        *_CONNECTION,
        *_ACCOUNTS_READ,
        *_ACCOUNTS_REPORT,
        *_STREAM_READ,
        *_COSIGNATURES_READ,
        *_ALERTS,
        "sadd",
        "srem",
        "del",
        "incr",
        "hsetnx",
        "xinfo|groups",
        "psubscribe",
        "punsubscribe",
        "info",
        # vledger admin migrate-keys (broker/redis_keys.py): old key names found and moved.
        "scan",
        "type",
        "renamenx",
        "set",
        *_SECOND_FACTOR,
        *_TRANSACTION,
        # An operator's way out of a function (or script) that loops without writing: Redis
        # lets these through while it answers BUSY, kills only what wrote nothing (so nothing
        # half-done stays), and reaches only what ran past busy-reply-threshold (5 s), which
        # none of the library's bounded functions does.
        "function|kill",
        "script|kill",
    ),
}


def _keys(ns: str, node: str = "", *, admin_home: bool = False) -> dict[str, tuple[str, ...]]:
    # Key names as broker/redis_keys.py makes them: ``{*}`` is a ledger's hash tag (a ledger
    # name has no braces or colons), the other tags name a cluster-wide group. ``node`` is
    # the node whose user these are: of the per-node keys it writes its own only.
    # ``admin_home``: that node homes the admin ledger, and so alone carries out the account
    # commands (PROTOCOL 16.3) and writes the accounts and the admin ledger's cache.
    group = f"{ns}:{{accounts}}"
    accounts = tuple(f"{group}:{key}" for key in ("account:*", "names", "keys", "version", "admin:records"))
    accounts_read = tuple(f"%R~{key}" for key in accounts)
    alerts = f"{ns}:{{alerts}}"
    # Every raiser's alerts are read (the shared keys are the admin's, and the older layout's);
    # a node adds to and trims its own stream and opens and resolves its own alerts only. The
    # operator's resolutions are read too: a node puts back what Redis lost of its open alerts,
    # not what an operator resolved (ReplicationLedger.reassert), and the verifier reopens what
    # left a raiser's hash without one.
    alerts_read = (
        f"%R~{alerts}",
        f"%R~{alerts}:open",
        f"%R~{alerts}:log:*",
        f"%R~{alerts}:open:*",
        f"%R~{alerts}:resolved",
    )
    own_alerts = (f"~{alerts}:log:{node}", f"~{alerts}:open:{node}")
    # Each node says which accounts version it applied in a key of its own (HSET), and reads
    # every node's: the admin's ``wait_applied`` waits on the ingest nodes' keys.
    applied = (f"%R~{group}:applied:*", f"~{group}:applied:{node}")
    reports = (*applied, *alerts_read, *own_alerts)
    node_keys = (*accounts_read, *reports)
    chain, checkpoint = f"{ns}:{{*}}:chain", f"{ns}:{{*}}:checkpoint"
    # Each node's held height of a ledger is a key of its own (``{*}:held:<node>``): it writes
    # its own and reads every node's.
    held, own_held = f"{ns}:{{*}}:held:*", f"{ns}:{{*}}:held:{node}"
    ledgers = f"{ns}:{{ledgers}}"
    # A witness (replica, observer) writes its own cosignatures and evidence, in keys of its own
    # name, and reads the others' (a hint only: whoever counts cosignatures verifies each one,
    # broker/replication.py); one hash for all let any witness HDEL the others' and hide a quorum.
    # (its own it SETs in a selector, as its held height: _selectors).
    cosig = f"{ns}:{{*}}:cosig:*"
    witness = (f"%R~{cosig}", f"~{ns}:{{evidence}}:{node}")
    # An observer publishes its tallies in keys of its own name (in its selectors); the gateway
    # (verifier/gateway.py) reads every observer's, as its own read-only user.
    tallies_read = (f"%R~{ns}:{{*}}:tallies:*", f"%R~{ns}:{{*}}:tally:latest:*")
    # A home keeps there the cosignatures its outside witnesses sent it (ingest/outside_feeder.py).
    outside = f"{ns}:{{*}}:outside"
    epochs = f"{ns}:{{ledgers}}:epochs"  # a standby promoted names itself there (10.9)
    # A home of an epoch from 2 on keeps there its witnessed checkpoint of it (10.9): no witness writes it.
    epoch_proof = f"{ns}:{{*}}:epoch_proof"
    # The second-factor keys by name (broker/second_factor.py), not ``{totp}:*``: a ledger named
    # ``totp`` (refused at ledger.create since, GROUP_TAGS) would have had its held heights,
    # cosignatures and tallies match that pattern.
    totp = f"{ns}:{{totp}}"
    # Every ingest node checks admins' codes (ledger.create is sent to a ledger's home): it moves
    # an account's last step, counts failures, uses up recovery codes, opens and checks sessions.
    # Only the admin ledger's home enrolls, resets and forgets a second factor and records the
    # host's enrollments. Since every ingest node writes the rest, no node trusts those
    # on Redis's word alone: a MAC under a host key, or the admin ledger (outsider o16, 16.5).
    second_factor = tuple(f"~{totp}:{key}" for key in ("account:*", "recovery:*", "failures:*", "session:*"))
    if admin_home:
        second_factor += (f"~{totp}:unrecorded",)
    follower = (
        *node_keys,
        f"%R~{chain}",
        f"%R~{ledgers}",
        f"%R~{epochs}",
        f"%R~{checkpoint}",
        f"%R~{epoch_proof}",
        f"%R~{outside}",
        *witness,
        f"%R~{held}",
        f"~{own_held}",
    )
    return {
        "ingest": (
            *(tuple(f"~{key}" for key in accounts) if admin_home else accounts_read),
            *reports,
            f"~{chain}",
            f"~{ledgers}",
            f"~{epochs}",
            f"%R~{checkpoint}",  # written only in the selectors of the ledgers it may home (_selectors)
            f"%R~{epoch_proof}",
            f"%R~{cosig}",
            f"%R~{outside}",  # written only in the selectors of the ledgers it may home (_selectors)
            # The admin home reads an observer's tallies when it writes its rotation (PROTOCOL 16.6).
            *(tallies_read if admin_home else ()),
            *second_factor,
            f"%R~{held}",
            f"~{own_held}",
        ),
        "replica": follower,
        # An observer reads back which tally its latest id names (PROTOCOL 11.1's latest_check_ms):
        # refused, it took every look for "none" and published again every 5 s (outsider 21, F7).
        "observer": (*follower, f"%R~{ns}:{{*}}:tally:latest:{node}"),
        "verifier": (
            *node_keys,
            f"%R~{chain}",
            f"%R~{ledgers}",
            f"%R~{epochs}",
            f"%R~{checkpoint}",
            f"%R~{cosig}",  # a witness's cosigned note of a new epoch proves its handover (10.9)
            f"%R~{epoch_proof}",  # and so does the one its new home kept
            f"%R~{held}",
            *tallies_read,  # the observers' signed tallies: a disagreement is an alert (11.4)
            f"~{ns}:{{sweep}}:{node}",  # its own sweep checkpoints, not another verifier's
            f"~{ns}:{{evidence}}:{node}",  # its own evidence: the two notes of a signed fork (10.5)
        ),
        "gateway": (
            *tallies_read,
            f"%R~{cosig}",
            f"%R~{outside}",
            f"%R~{held}",
            f"%R~{ledgers}",
            f"%R~{alerts}:open",
            f"%R~{alerts}:open:*",
        ),
        "admin": (f"~{ns}:*",),
    }


def _channels(ns: str) -> dict[str, tuple[str, ...]]:
    node = (f"&{ns}:accounts", f"&{ns}:accounts:applied")
    return {
        "ingest": (*node, f"&{ns}:held", f"&{ns}:cosigned"),
        "replica": (*node, f"&{ns}:held", f"&{ns}:cosigned"),
        "observer": (*node, f"&{ns}:held", f"&{ns}:cosigned"),
        "verifier": node,
        "gateway": (),
        "admin": (f"&{ns}:*",),
    }


# The verifier reads each stream through a consumer group: the group's commands write the
# group's state in the stream key, so they get a selector of their own, and XADD on a
# stream stays refused.
# A follower sets its held height and, as a witness, its latest cosignature (strings: SET) on
# its own keys only, not on any other key its root rules let it write. An observer also sets the id of its latest
# tally so, and adds to its own tally streams with XADD alone, neither key being in its root
# rules: no other command (HSET, SET on the stream) makes them of a type the readers' GET and
# XRANGE fail on. Its publishing function (FCALL) names both keys, so a selector of its own lets
# it run there: the commands the function runs are checked again, against every selector.
# An ingest node sets the latest checkpoint and the epoch proof of the ledgers it may home
# only (``checkpoints``: their names, or ALL_LEDGERS for the default home's): SET alone on those
# two keys, HSET (and DEL) alone on their outside witnesses' cosignatures, and the append's
# function (FCALL), which names the ledger's stream and checkpoint
# and sets the checkpoint, on those keys. Its root rules read every ledger's.
def _selectors(ns: str, node: str = "", checkpoints: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
    own_held, own_cosig = f"~{ns}:{{*}}:held:{node}", f"~{ns}:{{*}}:cosig:{node}"
    # Its recent cosigned notes (a list, ReplicationLedger.publish_cosignature): LPUSH and LTRIM
    # alone there, and DEL for one the admin's user made another type. Read as ``{*}:cosig:*``.
    own_recent = f"(+lpush +ltrim +del ~{ns}:{{*}}:cosig:{node}:recent)"
    stream, latest = f"~{ns}:{{*}}:tallies:{node}", f"~{ns}:{{*}}:tally:latest:{node}"
    own_tallies = (
        f"(+fcall {stream} {latest})",
        f"(+set {own_held} {own_cosig} {latest})",
        own_recent,
        # DEL too, for a stream the admin's user made another type (verifier/observer.py): XADD
        # with MAXLEN 0 empties it already.
        f"(+xadd +del {stream})",
    )
    # A node replaces its own applied key when it is of another type (broker/accounts.py
    # _OWN_HASH: the admin's user can SET it, and every report, the start's too, failed on it),
    # and its own alert keys so (ReplicationLedger.own_write: its own user can XADD to its open
    # hash, and every alert it raised or put back failed there).
    own_alerts = f"~{ns}:{{alerts}}:log:{node} ~{ns}:{{alerts}}:open:{node}"
    own_applied = f"(+del ~{ns}:{{accounts}}:applied:{node} {own_alerts})"
    homed: list[str] = [own_applied]
    for ledger in sorted(checkpoints):
        keys = f"~{ns}:{{{ledger}}}:checkpoint ~{ns}:{{{ledger}}}:epoch_proof"
        homed += [f"(+fcall ~{ns}:{{{ledger}}}:chain ~{ns}:{{{ledger}}}:checkpoint)", f"(+set {keys})"]
        # Its outside witnesses' cosignatures (PROTOCOL 13.9), and DEL for a hash the admin's
        # user made another type (ReplicationLedger.replace_damaged).
        homed.append(f"(+hset +del ~{ns}:{{{ledger}}}:outside)")
    return {
        "ingest": tuple(homed),
        # and its own sweep checkpoints, which the admin's user can SET (outsider 31, N1).
        "verifier": (
            f"(+xgroup|create +xreadgroup +xack +xautoclaim ~{ns}:{{*}}:chain)",
            own_applied,
            f"(+del ~{ns}:{{sweep}}:{node})",
        ),
        "replica": (f"(+set {own_held} {own_cosig})", own_recent, own_applied),
        "observer": (*own_tallies, own_applied),
    }


ALL_LEDGERS = "*"  # a node that homes every ledger the cluster file does not list: the default home


def checkpoint_writers(
    default_home: str, homes: Mapping[str, str], standbys: Mapping[str, str]
) -> dict[str, tuple[str, ...]]:
    """Which ledgers' latest checkpoint and epoch proof each ingest node's user writes: those the
    cluster file names it the home or the standby of (``homes``, ``standbys``: ledger -> node),
    and, for ``default_home``, every ledger (:data:`ALL_LEDGERS`), whose unlisted ones it homes.
    A ledger's epochs are homed by those two nodes only (a promotion is the standby's, 10.9)."""
    found: dict[str, set[str]] = {default_home: {ALL_LEDGERS}}
    for ledger, node in (*homes.items(), *standbys.items()):
        found.setdefault(node, set()).add(ledger)
    return {
        node: (ALL_LEDGERS,) if ALL_LEDGERS in ledgers else tuple(sorted(ledgers)) for node, ledgers in found.items()
    }


def merge_writers(*writers: Mapping[str, Collection[str]]) -> dict[str, tuple[str, ...]]:
    """The union of :func:`checkpoint_writers` answers (clusters that share one server's users)."""
    found: dict[str, set[str]] = {}
    for each in writers:
        for node, ledgers in each.items():
            found.setdefault(node, set()).update(ledgers)
    return {
        node: (ALL_LEDGERS,) if ALL_LEDGERS in ledgers else tuple(sorted(ledgers)) for node, ledgers in found.items()
    }


def user_name(role: str, node: str | None = None) -> str:
    """The Redis user of node ``node`` of ``role`` (``vledger-node-replica-1``), or of a
    service role (``vledger-gateway``, ``vledger-admin``); SettingsError for a role not in
    :data:`ROLES`, a node role without its node or a service role with one."""
    if role not in ROLES:
        raise SettingsError(f"no Redis user for role {role!r} (roles: {', '.join(ROLES)})")
    if (role in NODE_ROLES) != (node is not None):
        needs = "a node's name" if role in NODE_ROLES else "no node's name"
        raise SettingsError(f"the Redis user of the {role} role takes {needs}")
    return NODE_USER_PREFIX + node if node is not None else USER_PREFIX + role


def users(nodes: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """Every Redis user of a cluster whose ``nodes`` map each node's name to its role: one per
    node, then the gateway's and the admin's; user -> (role, node or None)."""
    found: dict[str, tuple[str, str | None]] = {}
    for node, role in sorted(nodes.items()):
        found[user_name(role, node)] = (role, node)
    for role in SERVICE_ROLES:
        found[user_name(role)] = (role, None)
    return found


def rules(
    role: str,
    namespace: str = "vledger",
    node: str | None = None,
    *,
    admin_home: bool = False,
    checkpoints: Collection[str] = (),
) -> list[str]:
    """The ACL rules of the user of ``role`` (and ``node``, for a node role), as ``ACL SETUSER``
    and an ACL file take them, without its password: reset first, then the commands, keys,
    channels and selectors allowed. ``admin_home``: the node is the admin ledger's home, the
    one ingest node that writes the accounts (PROTOCOL 16.3). ``checkpoints``: the ledgers whose
    latest checkpoint and epoch proof this ingest node writes (:func:`checkpoint_writers`)."""
    user_name(role, node)
    if admin_home and role != "ingest":
        raise SettingsError(f"the admin ledger's home {node} is a {role}, not an ingest node")
    if checkpoints and role != "ingest":
        raise SettingsError(f"{node} writes ledgers' checkpoints, but it is a {role}, not an ingest node")
    tokens = ["reset", "on", "-@all"]
    tokens += [f"+{command}" for command in dict.fromkeys(_COMMANDS[role])]
    tokens += list(_keys(namespace, node or "", admin_home=admin_home)[role])
    tokens += list(_channels(namespace)[role])
    tokens += list(_selectors(namespace, node or "", checkpoints).get(role, ()))
    return tokens


# The default user has no password (``resetpass``, and not ``nopass``): no client can sign in
# as it. It is not ``off`` with no rights, because a redis-server replaying its append-only
# file runs each transaction (MULTI/EXEC, which is how a Lua script's writes are logged) as
# the default user and checks that user's rights again at EXEC: a Redis without the fix of
# redis/redis#14541 (Debian's 7.0.15 has none) then drops every transaction of the file
# silently on a restart, which loses the accounts and what the scripts wrote.
_DEFAULT_USER = "user default on resetpass ~* &* +@all"


# A replicated set (Redis behind Sentinel, a ``sentinel://`` URL) has two users of its own
# beside the cluster's, so that the data servers too let nobody in as the default user: the
# replica signs in to its primary as :data:`REPLICATION_USER` (``masteruser``/``masterauth``;
# both servers name it, since a failover swaps their parts), and each Sentinel to the data
# servers as :data:`SENTINEL_USER` (``sentinel auth-user``/``auth-pass``). Their rules are the
# ones Redis's documentation gives those clients, and no key.
# The user that loads vledger's functions library (broker/redis_functions.py) and may do nothing
# else: FUNCTION LOAD and FUNCTION LIST, no key. It is no node's: a user that may load a library
# may load a function that never ends. Its password file is written beside the ACL file, on the
# Redis host, for whatever loads the library there (``vledger redis-functions``).
LOADER_USER = "vledger-functions"
# FUNCTION DELETE: a library of another name that registers our function names (review r31 #1).
LOADER_RULES = ("reset", "on", "-@all", "+ping", "+select", "+function|load", "+function|list", "+function|delete")
REPLICATION_USER = "vledger-replication"
SENTINEL_USER = "vledger-sentinel"
SERVER_USERS: dict[str, tuple[str, ...]] = {
    REPLICATION_USER: ("reset", "on", "-@all", "+psync", "+replconf", "+ping"),
    SENTINEL_USER: (
        "reset", "on", "-@all", "allchannels", "+multi", "+exec", "+slaveof", "+ping", "+subscribe",
        "+publish", "+info", "+role", "+config|rewrite", "+client|setname", "+client|kill", "+script|kill",
    ),
}  # fmt: skip

# A Sentinel's own default user (a line of its configuration file): whoever reaches it may
# ask where the primary and its replicas are, and Sentinels may ask each other whether the
# primary is down (their vote on a failover), but nobody may run SENTINEL SET, MONITOR,
# REMOVE, RESET, FAILOVER, CONFIG or ACL: those would point every node at a server of their
# choosing, which would then receive each node's password. Nor PUBLISH: a forged hello
# message on ``__sentinel__:hello`` with a newer epoch moves a Sentinel's primary too (the
# Sentinels hear each other's hellos on the data servers, where only SENTINEL_USER publishes).
# Clients ask the Sentinels without credentials (vledger.config.redis).
SENTINEL_DEFAULT_USER = (
    "user default on nopass -@all +ping +auth +hello +role +client|setname "
    "+sentinel|get-master-addr-by-name +sentinel|masters +sentinel|master +sentinel|replicas "
    "+sentinel|slaves +sentinel|sentinels +sentinel|is-master-down-by-addr"
)


def password_digest(password: str) -> str:
    """The SHA-256 of ``password`` as an ACL rule takes it (``#<hex>``): the ACL file holds no password."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_file_text(
    passwords: Mapping[str, str],
    nodes: Mapping[str, str],
    namespace: str = "vledger",
    *,
    admin_homes: Collection[str] = (),
    checkpoints: Mapping[str, Collection[str]],
    servers: bool = False,
) -> str:
    """An ACL file (redis-server ``--aclfile``): a default user nobody can sign in as, and each
    of :func:`users` with its password (``passwords``: user -> password). ``admin_homes``: the
    node that homes the admin ledger (ClusterConfig.home_of), the only one whose user writes
    the accounts (more than one only where clusters share a server's users, as the tests').
    ``checkpoints``: node -> the ledgers whose checkpoints it writes (:func:`checkpoint_writers`).
    ``servers``: also the users of a replicated set (:data:`SERVER_USERS`), whose passwords
    ``passwords`` then holds too. The loader (:data:`LOADER_USER`) always, its password in ``passwords``."""
    lines = [_DEFAULT_USER]
    for user, (role, node) in users(nodes).items():
        tokens = rules(
            role, namespace, node, admin_home=node in admin_homes, checkpoints=checkpoints.get(node or "", ())
        )
        lines.append(" ".join(["user", user, *tokens, password_digest(passwords[user])]))
    lines.append(" ".join(["user", LOADER_USER, *LOADER_RULES, password_digest(passwords[LOADER_USER])]))
    for user, server_tokens in SERVER_USERS.items() if servers else ():
        lines.append(" ".join(["user", user, *server_tokens, password_digest(passwords[user])]))
    return "\n".join(lines) + "\n"


def password_path(directory: Path, user: str) -> Path:
    """Where ``user``'s password is (a user name: :func:`user_name`)."""
    return directory / f"{user}{PASSWORD_SUFFIX}"


def read_password(path: Path) -> str:
    """A password file's one line; SettingsError if it is missing, empty or readable by others."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path}: cannot read the Redis password: {getattr(e, 'strerror', None) or e}") from None
    if mode & 0o077:
        raise SettingsError(f"{path}: a Redis password file must be private (chmod 600), not {oct(mode & 0o777)}")
    if not text:
        raise SettingsError(f"{path}: the Redis password file is empty")
    return text


def read_passwords(directory: Path, nodes: Mapping[str, str]) -> dict[str, str]:
    """Every user's password from ``directory`` (:func:`read_password` checks each file)."""
    return {user: read_password(password_path(directory, user)) for user in users(nodes)}


def write_passwords(
    directory: Path,
    nodes: Mapping[str, str],
    namespace: str = "vledger",
    *,
    admin_homes: Collection[str] = (),
    checkpoints: Mapping[str, Collection[str]],
    force: bool = False,
    servers: bool = False,
) -> dict[str, Path]:
    """A new random password per user of :func:`users`, the loader's (:data:`LOADER_USER`) and with
    ``servers`` one per user of :data:`SERVER_USERS` (a replicated set), each in its 0600 file, and
    the ACL file beside them (0600; ``admin_homes`` and ``checkpoints`` as :func:`acl_file_text` takes them).

    A password file already there is kept (so running processes keep signing in) unless
    ``force``; the ACL file is always written from the passwords on disk. Returns the paths
    written, by user name, and the ACL file's as ``acl``.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    passwords: dict[str, str] = {}
    written: dict[str, Path] = {}
    for user in [*users(nodes), LOADER_USER, *(SERVER_USERS if servers else ())]:
        path = password_path(directory, user)
        if path.exists() and not force:
            passwords[user] = read_password(path)
            continue
        passwords[user] = secrets.token_urlsafe(_PASSWORD_BYTES)
        _write_private(path, passwords[user] + "\n")
        written[user] = path
    acl = directory / ACL_FILE
    text = acl_file_text(passwords, nodes, namespace, admin_homes=admin_homes, checkpoints=checkpoints, servers=servers)
    _write_private(acl, text)
    written["acl"] = acl
    return written


def _write_private(path: Path, text: str) -> None:
    # Created 0600 (never world-readable for an instant), then moved over the old one.
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    os.replace(tmp, path)


def apply(
    client: Any,
    passwords: Mapping[str, str],
    nodes: Mapping[str, str],
    namespace: str = "vledger",
    *,
    admin_homes: Collection[str] = (),
    checkpoints: Mapping[str, Collection[str]],
) -> None:
    """Create or reset each of :func:`users` on a running server (``ACL SETUSER``), as the ACL file
    would; the loader's too when ``passwords`` holds its password."""
    for user, (role, node) in users(nodes).items():
        tokens = rules(
            role, namespace, node, admin_home=node in admin_homes, checkpoints=checkpoints.get(node or "", ())
        )
        client.execute_command("ACL", "SETUSER", user, *tokens, password_digest(passwords[user]))
    if LOADER_USER in passwords:
        client.execute_command("ACL", "SETUSER", LOADER_USER, *LOADER_RULES, password_digest(passwords[LOADER_USER]))
