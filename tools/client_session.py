"""The CLI's side of a session: where the configuration, the node and the caller's key come from.

The verified reads and the writes are the library's (:mod:`vledger.client.session`); this
module resolves the options every client verb takes:

* ``--config FILE``, else ``$VLEDGER_CONFIG``, else ``config/cluster.toml``: the nodes, their
  endpoints and the key directory holding each node's public key;
* ``--node NAME``: the node to talk to. Without it, a request about a ledger (a read or a
  write) goes to the ledger's home node as the configuration names it, any other to the
  configuration's ``default_home``, and ``ledger list`` asks every ingest node. A node that
  neither holds nor homes the ledger answers ``not_home`` naming the home, and the client
  follows once (docs/PROTOCOL.md 6.1); one naming the ledger's standby or configured home
  (a replaced home's, 10.9) is where the verb's later requests of that ledger go; a ledger
  whose home did not answer is asked of its standby, and so is it by the next commands for ten
  minutes (a note beside the key, client/home_cache.py), which then skip the home's timeout;
  a read of a ledger whose home or standby a not_home or that note named, and which then does
  not answer, is asked of the other of the two once;
* ``--key FILE``, else ``$VLEDGER_KEY``: the caller's secret key; a passphrase-protected
  key takes ``$VLEDGER_PASSPHRASE`` or asks on the terminal;
* ``--otp CODE``, else ``$VLEDGER_OTP``: an admin's one-time code (or recovery code), sent
  with the verb's requests; without one, a node that asks for it (``second_factor_required``,
  or ``bad_second_factor`` for a used code) gets one typed on the terminal, once per request
  (docs/PROTOCOL.md 16.5).
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..broker.keys import KeyPair, load_secret
from ..client import session as library
from ..client.home_cache import HomeCache
from ..client.session import Session
from ..config.cluster import load_cluster
from ..node.errors import PassphraseError, UsageError
from .args import DEFAULT_CONFIG, DEFAULT_TIMEOUT, KEY_ENV, PASSPHRASE_ENV, config_path, default_config_file
from .paths import input_file


@dataclass(frozen=True, slots=True)
class ClientOptions:
    config: Path
    node: str | None  # None: the configuration's default_home (and each ledger's home for writes)
    key: Path
    timeout: float

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> ClientOptions:
        key = args.key or environ.get(KEY_ENV)
        if not key:
            raise UsageError(f"which key? give --key FILE (your .key_secret file) or set ${KEY_ENV}")
        return cls(
            config=config_path(args.config, environ),
            node=args.node,
            key=Path(key),
            timeout=args.timeout or DEFAULT_TIMEOUT,
        )


def load_client_keys(
    path: Path, environ: Mapping[str, str] = os.environ, ask: Callable[[str], str] = getpass.getpass
) -> KeyPair:
    """The caller's key pair; a passphrase-protected file takes $VLEDGER_PASSPHRASE or asks for one."""
    try:
        return load_secret(path)
    except PassphraseError:
        passphrase = environ.get(PASSPHRASE_ENV)
        if passphrase is None:
            try:
                passphrase = ask(f"passphrase for {path}: ")
            except EOFError:  # no terminal to ask on
                raise PassphraseError(
                    f"{path}: this secret key is protected by a passphrase: set ${PASSPHRASE_ENV} or run on a terminal"
                ) from None
        return load_secret(path, passphrase)


def open_session(options: ClientOptions) -> Session:
    # A file that is not there is a usage error (exit 2), said before either file is read.
    if options.config == DEFAULT_CONFIG:
        default_config_file()
    input_file(options.config, "the configuration")
    input_file(options.key, "the key")
    config = load_cluster(options.config)
    config.node(options.node or config.default_home)  # a bad --node is said before a passphrase is asked
    keys = load_client_keys(options.key)
    # Beside the key: a note of which ledgers' homes were silent, so the next command skips their timeout.
    homes = HomeCache.beside(options.key, options.config)
    return library.open_session(config, keys, options.node, options.timeout, homes)


class SessionPool:
    """Sessions by their options, kept open: one for a command, several over a shell's life."""

    def __init__(self, opener: Callable[[ClientOptions], Session] = open_session) -> None:
        self._opener = opener
        self._sessions: dict[ClientOptions, Session] = {}

    def session(self, options: ClientOptions) -> Session:
        session = self._sessions.get(options)
        if session is None:
            session = self._sessions[options] = self._opener(options)
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
