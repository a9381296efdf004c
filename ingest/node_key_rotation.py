"""A node's sockets through a rotation of its CURVE key (docs/PROTOCOL.md 16.6).

:class:`RotatingKeys` moves a server socket's listeners: the request socket (``port``,
``rotation_port``) and the feed (``pub_port``, ``feed_rotation_port``) the same way.
:class:`ClientKeys` is the key pair the node connects to other nodes with: its newest
generation from the moment it reads the record (the others admit both during the window).

A ZeroMQ CURVE server socket has one key per bound endpoint: libzmq copies the socket's
options, the CURVE secret key among them, into each listener when it binds. So during a
rotation's window the node's ROUTER serves the **old** key on its endpoint (``port``), where
every client that has not learned the new key still connects, and the **new** key on its
rotation endpoint (``rotation_port``), where clients that hold the new key connect too. When
the window ends the endpoint is unbound (which also closes every connection made with the
old key) and bound again with the new key: from then on the old key gets no handshake. The
rotation endpoint keeps serving the new key until the process stops, so a client with the
new key loses nothing when the endpoint switches.

Each step runs on the request loop's thread (ZeroMQ sockets are not thread-safe): the
allow-lists' owner (ingest/members.py) hands every change of the key histories to
:meth:`RotatingKeys.update` on whatever thread, which queues :meth:`RotatingKeys.apply`.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from ..broker.keys import SECRET_SUFFIX, KeyPair, generation_name, key_paths, load_secret, newest_generation
from ..config.cluster import NodeConfig
from ..node.errors import KeyMaterialError
from ..node.node_key_rotation import KeyHistory
from .members import now_ms

log = logging.getLogger(__name__)

# A key taken after errors said it could not be (its files not there yet) is said at WARNING, the
# default level, so that the log's last word on it is not those errors (o21 F11); else at INFO.
TAKEN_AFTER = ", after the errors above"


def taken_level(after_errors: bool) -> int:
    """The level to log a rotated key taken at (see TAKEN_AFTER)."""
    return logging.WARNING if after_errors else logging.INFO


REBIND_ATTEMPTS = 250  # a port the old listener still holds, tried again for up to 5 s
REBIND_PAUSE = 0.02


def load_generation(
    keys_dir: Path, node: str, passphrase: str | None, history: KeyHistory | None, generation: int
) -> KeyPair:
    """Node ``node``'s key pair of generation ``generation`` (``<node>@<g>.key_secret``; ``<node>``
    for 0), checked against the admin ledger's key for it in ``history``.

    Raises KeyMaterialError when its file is missing, unreadable or holds another key.
    """
    keys = load_secret(key_paths(keys_dir, generation_name(node, generation))[1], passphrase)
    named = [g.curve for g in history.generations if g.number == generation] if history is not None else []
    if generation > 0 and keys.public not in named:
        raise KeyMaterialError(
            f"{node}: key generation {generation} on disk is {keys.fingerprint}, not the key the admin ledger names"
        )
    return keys


def start_keys(keys_dir: Path, node: str, passphrase: str | None, first: KeyPair) -> list[KeyPair]:
    """The key pairs node ``node`` may connect with before it read its key history (a home's
    start check, ingest/home_start.py): its newest generation on disk first, then the one before
    it (``first`` for generation 0). A rotation writes the new key's files before its record, so
    the newest is in force unless that record was never written; once a window ended the others
    refuse every older key (outsider o18 F1: the start check asked with the replaced key and
    nobody answered). A file that cannot be read is skipped with a warning."""
    newest = newest_generation(keys_dir, node, SECRET_SUFFIX)
    pairs: list[KeyPair] = []
    for generation in (newest, newest - 1) if newest > 0 else (0,):
        if generation == 0:
            pairs.append(first)
            continue
        try:
            pairs.append(load_secret(key_paths(keys_dir, generation_name(node, generation))[1], passphrase))
        except (OSError, KeyMaterialError) as e:
            log.warning("node %s: key generation %d unreadable, not used at start: %s", node, generation, e)
    return pairs or [first]


def serving_generations(history: KeyHistory | None, now: int) -> tuple[int, int | None]:
    """(the generation the node's endpoint serves, the one its rotation endpoint serves or None)
    at ``now``: the oldest generation in force on the endpoint; the newest, if it differs, on
    the rotation endpoint."""
    if history is None:
        return 0, None
    generations = history.in_force(now)
    # A generation that kept its CURVE key (an Ed25519 rotation alone) serves the key files it had.
    newest, oldest = (history.curve_generation(generations[i].number) for i in (0, -1))
    return oldest, (newest if newest != oldest else None)


class RotatingKeys:
    """The keys of node ``node``'s request socket, moved as its key history says.

    ``keys_dir`` holds its secret key files, generation g as ``<node>@<g>.key_secret``;
    ``passphrase`` opens them (the same as the node's first key's). ``serving`` is the
    generation the socket's endpoint serves now.
    """

    def __init__(
        self,
        node: NodeConfig,
        keys_dir: Path,
        passphrase: str | None,
        serving: int,
        endpoints: tuple[str, str | None] | None = None,
    ) -> None:
        self.node = node
        # (the endpoint, the rotation endpoint) to bind: the request socket's unless given (the feed's).
        self.endpoint, self.rotation_endpoint = (
            endpoints if endpoints is not None else (node.bind_endpoint, node.bind_rotation_endpoint)
        )
        self.keys_dir = keys_dir
        self._passphrase = passphrase
        self.serving = serving
        self.rotation_serving: int | None = None
        self._history: KeyHistory | None = None
        self._lock = threading.Lock()
        self._socket: Any = None
        self._call_soon: Callable[[Callable[[], None]], None] | None = None
        self._failed = False  # an error logged since a generation was last taken (taken_level)

    def attach(self, socket: Any, call_soon: Callable[[Callable[[], None]], None]) -> None:
        """Serve ``socket`` (bound to the node's endpoint), running each step through
        ``call_soon`` on the thread that owns it; the first step is queued now."""
        self._socket = socket
        self._call_soon = call_soon
        call_soon(self.apply)

    def update(self, histories: Mapping[str, KeyHistory]) -> None:
        """Take the key histories (any thread); the socket follows on its own thread."""
        with self._lock:
            self._history = histories.get(self.node.name)
        if self._call_soon is not None:
            self._call_soon(self.apply)

    def keys_of(self, generation: int) -> KeyPair:
        """Generation ``generation``'s key pair, checked against the admin ledger's key for it.

        Raises KeyMaterialError when its file is missing, unreadable or holds another key.
        """
        with self._lock:
            history = self._history
        return load_generation(self.keys_dir, self.node.name, self._passphrase, history, generation)

    def apply(self) -> None:
        """Bind what the history says now (on the socket's thread). A key that cannot be
        loaded is logged and not served: the old key stays until the window's end, the node
        then serves what it can (its rotation endpoint, if bound) rather than an old key."""
        if self._socket is None:
            return
        with self._lock:
            history = self._history
        main, side = serving_generations(history, now_ms())
        if side is not None and self.rotation_serving != side:
            self._bind_rotation(side)
        if main != self.serving:
            self._switch_main(main)

    def _bind_rotation(self, generation: int) -> None:
        endpoint = self.rotation_endpoint
        if endpoint is None:
            log.error("node %s: its keys rotated but %s has no rotation endpoint: the new key is served there "
                      "only once the window ends", self.node.name, self.endpoint)  # fmt: skip
            self.rotation_serving = generation
            return
        try:
            keys = self.keys_of(generation)
            if self.rotation_serving is not None:
                self._socket.unbind(endpoint)
            self._bind(endpoint, keys)
        except (KeyMaterialError, zmq.ZMQError) as e:
            self._failed = True
            log.error("node %s: cannot serve key generation %d on %s: %s", self.node.name, generation, endpoint, e)
            return
        self.rotation_serving = generation
        log.log(taken_level(self._failed), "node %s: key generation %d (%s) served on %s%s", self.node.name,
                generation, keys.fingerprint, endpoint, TAKEN_AFTER if self._failed else "")  # fmt: skip
        self._failed = False

    def _switch_main(self, generation: int) -> None:
        endpoint = self.endpoint
        try:
            keys: KeyPair | None = self.keys_of(generation)
        except KeyMaterialError as e:
            self._failed = True
            log.error("node %s: cannot load key generation %d: %s", self.node.name, generation, e)
            keys = None
        # The old key's window is over: its listener (and every connection it accepted) goes,
        # whether or not the new key could be loaded.
        self._socket.unbind(endpoint)
        self.serving = generation
        if keys is not None:
            self._bind_main(endpoint, keys, generation, 1)

    def _bind_main(self, endpoint: str, keys: KeyPair, generation: int, attempt: int) -> None:
        try:
            self._bind(endpoint, keys)
        except zmq.ZMQError as e:
            # libzmq closes an unbound listener on its I/O thread: the port may still be taken
            # for a moment. Try again shortly, on the socket's thread (the loop serves meanwhile).
            if e.errno == errno.EADDRINUSE and attempt < REBIND_ATTEMPTS and self._call_soon is not None:
                call_soon = self._call_soon
                retry = threading.Timer(
                    REBIND_PAUSE, call_soon, args=(lambda: self._bind_main(endpoint, keys, generation, attempt + 1),)
                )
                retry.daemon = True
                retry.start()
                return
            self._failed = True
            log.error("node %s: cannot bind %s with key generation %d: %s", self.node.name, endpoint, generation, e)
            return
        after = TAKEN_AFTER if self._failed else ""
        log.log(taken_level(self._failed), "node %s: key generation %d (%s) now on %s; the old key is refused%s",
                self.node.name, generation, keys.fingerprint, endpoint, after)  # fmt: skip
        self._failed = False

    def _bind(self, endpoint: str, keys: KeyPair) -> None:
        # Options in force when bind() runs are the listener's own (libzmq copies them).
        self._socket.curve_secretkey = keys.secret.encode("ascii")
        self._socket.curve_publickey = keys.public.encode("ascii")
        self._socket.bind(endpoint)


class ClientKeys:
    """The CURVE key pair node ``node`` connects to the other nodes with (a replica's sources and
    file copies, a follower's feeds): its newest generation from the moment it reads the
    record (PROTOCOL 16.6; the others admit both keys during the window). Each listener hears
    the new pair once, on the thread that calls :meth:`update`; it applies it on its own.
    """

    def __init__(self, node: str, keys_dir: Path, passphrase: str | None, keys: KeyPair) -> None:
        self.node = node
        self.keys_dir = keys_dir
        self._passphrase = passphrase
        self.current = keys
        self.generation = 0
        self.histories_read = False  # until then, which generation is in force is the disk's guess
        self._failed = False  # an error logged since a generation was last taken (taken_level)
        self._listeners: list[Callable[[KeyPair], None]] = []

    def candidates(self) -> list[KeyPair]:
        """The pairs to connect with, in order: the one in force once the node read its key
        history; before that (a start, asking the others for the admin ledger that holds the
        history), :func:`start_keys`."""
        if self.histories_read:
            return [self.current]
        return start_keys(self.keys_dir, self.node, self._passphrase, self.current)

    def follow(self, listener: Callable[[KeyPair], None]) -> KeyPair:
        """Tell ``listener`` of every change from now on; returns the pair in force now."""
        self._listeners.append(listener)
        return self.current

    def update(self, histories: Mapping[str, KeyHistory]) -> None:
        """Take the key histories: a newer generation is loaded and handed to the listeners. One
        that cannot be loaded is logged and the node keeps its key: the others refuse it from
        the window's end on, and the log says why."""
        self.histories_read = True
        history = histories.get(self.node)
        if history is None:
            return
        generation = history.newest_curve_generation(now_ms())
        if generation == self.generation:
            return
        try:
            keys = load_generation(self.keys_dir, self.node, self._passphrase, history, generation)
        except KeyMaterialError as e:
            self._failed = True
            log.error("node %s: cannot connect with its key generation %d: %s", self.node, generation, e)
            return
        self.current, self.generation = keys, generation
        log.log(taken_level(self._failed), "node %s: connects to the others with its key generation %d (%s)%s",
                self.node, generation, keys.fingerprint, TAKEN_AFTER if self._failed else "")  # fmt: skip
        self._failed = False
        for listener in self._listeners:
            listener(keys)
