"""``--watch``: run a status round again and again, until Ctrl-C."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ..node.errors import VledgerError
from .safe_output import terminal

CLEAR_SCREEN = "\x1b[H\x1b[2J"
EXIT_FAILED = 1


def watch_rounds(
    show: Callable[[], int], *, as_json: bool, interval: float, sleep: Callable[[float], None] = time.sleep
) -> int:
    """``show()`` every ``interval`` seconds until interrupted; the last round's exit code.

    On a terminal each round replaces the last; in a log, rounds follow each other, each
    after its time. A round that fails (Redis away) says so on stderr and the watch goes on:
    what it watches may come back.
    """
    clear = not as_json and sys.stdout.isatty()
    code = 0
    try:
        while True:
            if clear:
                print(CLEAR_SCREEN, end="", file=terminal())
            if not as_json:
                print(time.strftime("%Y-%m-%d %H:%M:%S"), end="  ")
            try:
                code = show()
            except VledgerError as e:
                if not as_json:
                    print(flush=True)  # end the time line
                print(f"vledger: error: {e.code}: {e.message}", file=sys.stderr, flush=True)
                code = EXIT_FAILED
            if not as_json and not clear:
                print(flush=True)  # a blank line between two rounds in a log
            sleep(interval)
    except KeyboardInterrupt:
        return code
