"""Settings as frozen dataclasses, loaded from TOML with errors that name the file and key.

Limits live here rather than in code so that an operator can see and change them in one
place; the pure core receives them as arguments and never reads a file itself.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from ..node.errors import SettingsError

DEFAULT_DIFFICULTY = 16
# The characters of an export line around its four values: {"ledger":"","height":,"hash":"","record":""}
_LINE_TEXT = 45


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a record may hold; anything past them is refused before it is stored."""

    max_content_bytes: int = 64 * 1024
    max_record_bytes: int = 80 * 1024
    max_depth: int = 16
    max_name_length: int = 64
    max_request_id_length: int = 128

    @property
    def max_line_bytes(self) -> int:
        """The longest export line (its ``\\n`` not counted) of a record within these limits:
        the line's fixed text, a longest name, a 20-digit height, a hash and the base64 of
        the largest record (docs/PROTOCOL.md, section 5). Readers refuse longer lines unread."""
        return _LINE_TEXT + self.max_name_length + 20 + 64 + 4 * ((self.max_record_bytes + 2) // 3)


# The protocol's own bounds (docs/PROTOCOL.md): every verifier reads every record with
# these. A node may set lower limits for what it accepts, never higher ones.
PROTOCOL_LIMITS = Limits()


@dataclasses.dataclass(frozen=True, slots=True)
class StoreSettings:
    """How a ChainStore groups appends into transactions (one fsync per group)."""

    group_commit_max: int = 1000
    read_page_size: int = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerSettings:
    """CURVE sockets, the accounts cache and the local redis-server (vledger.broker).

    ``max_message_bytes`` is ZMQ_MAXMSGSIZE on every CURVE server socket: a peer that sends
    more is disconnected by libzmq before a byte of it reaches Python.
    """

    max_message_bytes: int = 1024 * 1024
    handshake_timeout_ms: int = 3000
    accounts_poll_ms: int = 5000
    # How often a node puts back into Redis the open alerts its alert journal holds and Redis
    # lost (PROTOCOL 10.5): a FLUSHALL, or an insider deleting its keys.
    alerts_recheck_ms: int = 5000
    # ZMQ_HANDSHAKE_IVL of every CURVE server socket: a connection whose CURVE handshake is not
    # done this long after it opened is closed. libzmq's 30 s let silent connections pile up.
    handshake_interval_ms: int = 5000
    # A request socket's and a feed's caps (broker/curve_guard.py): open connections from one
    # client address (an IPv6 address counts by its /64) and in all, the second lowered to the
    # file limit less 256, within the budget all the process's ports share (broker/file_budget.py);
    # a connection past any is closed at once. On one host every node, tool and gateway
    # connects from the same loopback address: hence more than [http]'s 64.
    max_connections_per_address: int = 256
    max_connections: int = 8192
    # The requests a client may keep in flight on a connection, none of whose answers is lost.
    # A request socket's ZMQ_SNDHWM is twice this and 2 (broker/curve.py, reply_queue_mark): an
    # answer that finds the queue full is dropped, so a client that does not read holds at most
    # that many answers of the node's memory (libzmq's default of 1,000: six such clients asking
    # for ranges grew a node by 420 MiB, outsider pass 21, F4).
    max_queued_replies: int = 256
    # ZMQ_SNDBUF of a request socket's connections: what an unread connection holds in the kernel
    # beside its queue (Linux grows it to 4 MiB by itself).
    send_buffer_bytes: int = 256 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    limits: Limits = Limits()
    store: StoreSettings = StoreSettings()
    broker: BrokerSettings = BrokerSettings()


_T = TypeVar("_T")


def build_settings(cls: type[_T], table: Any, where: str) -> _T:
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        field = fields.get(key)
        if field is None:
            raise SettingsError(f"{where}.{key}: unknown key (known: {', '.join(sorted(fields))})")
        if type(field.default) is int and (type(value) is not int or value <= 0):
            raise SettingsError(f"{where}.{key}: expected a positive integer, got {value!r}")
        if type(field.default) is bool and type(value) is not bool:
            raise SettingsError(f"{where}.{key}: expected true or false, got {value!r}")
        if cls is Limits and value > getattr(PROTOCOL_LIMITS, key):
            raise SettingsError(
                f"{where}.{key}: {value} is over the protocol's limit of {getattr(PROTOCOL_LIMITS, key)}"
            )
        values[key] = value
    return cls(**values)


def check_at_most(settings: _T, table: Any, smaller: str, larger: str, where: str) -> _T:
    """``settings`` with its field ``smaller`` at most its field ``larger``: a cap per client
    address above the cap in all could never be reached.

    Raises SettingsError when ``table`` (the file's table) set ``smaller`` over ``larger``; a
    ``smaller`` left at its default is lowered to ``larger`` instead, so that a file written
    before the check, which lowered only the cap in all, still loads."""
    low, high = getattr(settings, smaller), getattr(settings, larger)
    if low <= high:
        return settings
    if smaller in table:
        raise SettingsError(f"{where}.{smaller}: {low} is over {larger} ({high})")
    return dataclasses.replace(settings, **{smaller: high})  # type: ignore[type-var]


def broker_settings(table: Any, where: str) -> BrokerSettings:
    """[settings.broker], whose cap per address is at most the cap in all."""
    broker = build_settings(BrokerSettings, table, where)
    return check_at_most(broker, table, "max_connections_per_address", "max_connections", where)


def settings_from_mapping(data: dict[str, Any], source: str = "<settings>") -> Settings:
    known = {"limits": Limits, "store": StoreSettings, "broker": BrokerSettings}
    parts: dict[str, Any] = {}
    for key, table in data.items():
        cls = known.get(key)
        if cls is None:
            raise SettingsError(f"{source}: [{key}]: unknown table (known: {', '.join(sorted(known))})")
        where = f"{source}: {key}"
        parts[key] = broker_settings(table, where) if cls is BrokerSettings else build_settings(cls, table, where)
    return Settings(**parts)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; every failure is a SettingsError naming the file."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise SettingsError(f"{path}: cannot read: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise SettingsError(f"{path}: not UTF-8 text: {e.reason}") from e
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: invalid TOML: {e}") from e
    except RecursionError:  # tomllib reads nested arrays and tables by recursion
        raise SettingsError(f"{path}: invalid TOML: nested deeper than it may be read") from None
    except ValueError as e:  # tomllib's int() of over 4,300 digits: a bare ValueError
        raise SettingsError(f"{path}: invalid TOML: {str(e)[:60]}...") from None


def load_settings(path: Path) -> Settings:
    return settings_from_mapping(read_toml(path), str(path))
