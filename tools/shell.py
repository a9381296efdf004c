"""``vledger shell``: the client verbs line by line over kept connections (like pyvserv's pyvcli_cli).

A line is split with :mod:`shlex` and parsed by the parser of the ``vledger`` verbs
themselves, so ``put notes note --payload '{"a":1}'`` does in the shell what it does on the
command line. The shell's own ``--config``, ``--node``, ``--key`` and ``--timeout`` are every
line's defaults; a line's own options win. Sessions stay open between lines (one per set of
options), so a passphrase is asked once and a ledger's genesis is read once.

A failed line prints its error and the shell goes on; ``quit``, ``exit`` or the end of input
leaves. ``help`` lists the verbs and the commands the node offers your role. Where
:mod:`readline` exists, tab completes verb names and options, and the history is kept in
``~/.vledger_history`` (mode 0600: lines may hold private text) if the home directory is
writable.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from ..client.session import reply_field
from ..node.errors import RemoteError, UsageError, VledgerError
from .client_session import ClientOptions, SessionPool

HISTORY_FILE = ".vledger_history"
HISTORY_LENGTH = 1000
LEAVE = ("quit", "exit")
LOCAL = ("help", *LEAVE)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _readline() -> ModuleType | None:
    try:
        return importlib.import_module("readline")
    except ImportError:  # Windows without pyreadline: no history, no completion
        return None


def error_line(error: VledgerError) -> str:
    """``error: <code>: <message>``, for a node's refusal and a local failure alike."""
    message = error.reason if isinstance(error, RemoteError) else error.message
    return f"error: {error.code}: {message}"


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands ``parser`` offers, by name (none for a leaf verb)."""
    action = _subparsers(parser)
    return dict(action.choices) if action is not None else {}


def summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each subcommand's one-line summary (its ``help``), by name."""
    action = _subparsers(parser)
    return {choice.dest: choice.help or "" for choice in action._choices_actions} if action is not None else {}


def completions(parser: argparse.ArgumentParser, before: str, text: str) -> list[str]:
    """What may complete ``text``, the word being typed after ``before`` on a shell line."""
    try:
        words = shlex.split(before)
    except ValueError:  # inside an open quote: nothing sensible to offer
        return []
    for word in words:
        parser = subcommands(parser).get(word, parser)
    if text.startswith("-"):
        names = [option for action in parser._actions for option in action.option_strings]
    else:
        names = list(subcommands(parser))
        if not words:
            names.extend(LOCAL)
    return sorted(name for name in names if name.startswith(text))


class Shell:
    def __init__(
        self,
        parser: argparse.ArgumentParser,
        pool: SessionPool,
        defaults: Mapping[str, Any],
        *,
        read: Callable[[str], str] = input,
        interactive: bool | None = None,
    ) -> None:
        self.parser = parser
        self.pool = pool
        self.defaults = dict(defaults)  # the shell's client options: --config, --node, --key, --timeout
        self.read = read
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self.status = EXIT_OK  # the last line's exit code

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        prompt = "vledger> " if self.interactive else ""
        with self._line_editing():
            while True:
                try:
                    line = self.read(prompt)
                except EOFError:
                    if self.interactive:
                        print()
                    break
                except KeyboardInterrupt:  # Ctrl-C drops the line being typed, not the shell
                    print()
                    continue
                if not self.run_line(line):
                    break
        return EXIT_OK

    def run_line(self, line: str) -> bool:
        """Run one line; False when it asks to leave."""
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:  # an unclosed quote
            self._fail(f"error: usage: {e}", EXIT_USAGE)
            return True
        if words[:1] == ["vledger"]:  # a line copied from a command line
            words = words[1:]
        if not words:
            return True
        if words[0] in LEAVE:
            return False
        if words[0] == "help":
            self.help(words[1:])
        else:
            self.status = self.dispatch(words)
        return True

    def dispatch(self, words: list[str]) -> int:
        """Parse ``words`` as a verb and run it; every failure is printed, never raised."""
        try:
            args = self.parser.parse_args(words)
        except SystemExit as e:  # a usage error (or --help), already printed by argparse
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        if "pool" in vars(args):  # a verb that talks to a node: the shell's options, its sessions
            for name, value in self.defaults.items():
                if getattr(args, name, None) is None:
                    setattr(args, name, value)
            args.pool = self.pool
        try:
            code: int = args.run(args)
        except UsageError as e:
            return self._fail(error_line(e), EXIT_USAGE)
        except VledgerError as e:
            for note in getattr(e, "__notes__", ()):
                print(f"note: {note}", file=sys.stderr)
            return self._fail(error_line(e), EXIT_FAILED)
        except OSError as e:
            where = f"{e.filename}: " if e.filename is not None else ""
            return self._fail(f"error: {where}{e.strerror or e}", EXIT_FAILED)
        except KeyboardInterrupt:
            return self._fail("interrupted", EXIT_INTERRUPTED)
        return code

    def _fail(self, message: str, code: int) -> int:
        print(message, file=sys.stderr)
        self.status = code
        return code

    # --- help -------------------------------------------------------------------------------

    def help(self, words: list[str]) -> None:
        if words:
            self.dispatch([*words, "--help"])
            return
        print("Verbs (`help VERB` for one; the shell's --config, --node, --key are every line's defaults):")
        for name, summary in [*summaries(self.parser).items(), ("quit", "leave the shell (also: exit, end of input)")]:
            print(f"  {name:<10} {summary}")
        try:
            session = self.pool.session(ClientOptions.from_args(argparse.Namespace(**self.defaults)))
            listed = reply_field(session.call("help"), "commands", list)
        except VledgerError as e:
            self._fail(f"(the node's commands are not available: {error_line(e)})", EXIT_FAILED)
            return
        print(f"Commands of node {session.node.name} for your role (what the verbs send):")
        rows = [
            (f"{entry.get('name')} {entry.get('args') or ''}".strip(), str(entry.get("summary") or ""))
            for entry in listed
            if isinstance(entry, dict)
        ]
        width = max((len(usage) for usage, _ in rows), default=0)
        for usage, summary in rows:
            print(f"  {usage:<{width}}  {summary}")

    # --- line editing -------------------------------------------------------------------

    @contextlib.contextmanager
    def _line_editing(self) -> Iterator[None]:
        readline = _readline() if self.interactive else None
        if readline is None:
            yield
            return
        history = _history_path()
        if history is not None and history.is_file():
            with contextlib.suppress(OSError):
                readline.read_history_file(history)
        readline.set_history_length(HISTORY_LENGTH)
        readline.set_completer_delims(" \t\n")
        readline.set_completer(self._completer(readline))
        binding = "bind ^I rl_complete" if "libedit" in (readline.__doc__ or "") else "tab: complete"
        readline.parse_and_bind(binding)
        try:
            yield
        finally:
            readline.set_completer(None)
            if history is not None:
                with contextlib.suppress(OSError):
                    readline.write_history_file(history)
                    os.chmod(history, 0o600)

    def _completer(self, readline: ModuleType) -> Callable[[str, int], str | None]:
        found: list[str] = []

        def complete(text: str, state: int) -> str | None:
            if state == 0:
                before = readline.get_line_buffer()[: readline.get_begidx()]
                found[:] = completions(self.parser, before, text)
            return found[state] if state < len(found) else None

        return complete


def _history_path() -> Path | None:
    """``~/.vledger_history``, or None when there is no home directory the shell may write in."""
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no password entry
        return None
    return home / HISTORY_FILE if os.access(home, os.W_OK) else None
