"""The node containers' entry (tools/container_entry.py), run as the process it is in a container.

Its children here are small Python programs that end as a node does: with a status, or on the
signal Docker sends. Waits are on a condition with a deadline (a line on its stderr, its exit).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from vledger.config.supervisor import EXIT_STORE_DAMAGED

DEADLINE = 20.0
ENTRY = [sys.executable, "-m", "vledger.tools.container_entry"]
# A stand-in node: says it started (so a test knows its handlers are there), then waits for SIGTERM.
SERVES = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
    "print('serving', file=sys.stderr, flush=True); time.sleep(60)"
)


@contextmanager
def entry(*child: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([*ENTRY, sys.executable, "-c", *child], stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def line_with(process: subprocess.Popen[str], text: str) -> str:
    """The first line of ``process``'s stderr that holds ``text`` (within DEADLINE, or the test fails)."""
    assert process.stderr is not None
    seen: list[str] = []
    found = threading.Event()

    def read(stream: IO[str]) -> None:
        for line in stream:
            seen.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, args=(process.stderr,), daemon=True).start()
    assert found.wait(DEADLINE), f"no line with {text!r} within {DEADLINE} s: {seen!r}"
    return seen[-1]


def test_after_a_damaged_store_it_stays_up_idle_until_docker_stops_it() -> None:
    # Docker's restart policy would start the node again on the same store, for ever.
    with entry(f"import sys; sys.exit({EXIT_STORE_DAMAGED})") as process:
        line = line_with(process, "stays up, idle")
        assert "level=error" in line and "store is damaged" in line and "vledger repair" in line
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == EXIT_STORE_DAMAGED


def test_any_other_status_is_the_container_s() -> None:
    with entry("import sys; sys.exit(3)") as process:
        assert process.wait(timeout=DEADLINE) == 3
    with entry("pass") as process:
        assert process.wait(timeout=DEADLINE) == 0


def test_a_stop_reaches_the_node_and_its_status_is_returned() -> None:
    with entry(SERVES) as process:
        line_with(process, "serving")
        process.send_signal(signal.SIGINT)  # a node ends on either; its own status is the container's
        assert process.wait(timeout=DEADLINE) == 128 + signal.SIGINT


def test_a_node_that_exits_65_as_it_is_stopped_is_not_kept_idle() -> None:
    stops_damaged = SERVES.replace("sys.exit(0)", f"sys.exit({EXIT_STORE_DAMAGED})")
    with entry(stops_damaged) as process:
        line_with(process, "serving")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == EXIT_STORE_DAMAGED


def test_a_node_killed_by_a_signal_ends_it_as_a_shell_reports_it() -> None:
    with entry("import os, signal; os.kill(os.getpid(), signal.SIGKILL)") as process:
        assert process.wait(timeout=DEADLINE) == 128 + signal.SIGKILL


def test_without_a_command_it_is_a_usage_error() -> None:
    done = subprocess.run(ENTRY, capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert done.returncode == 2 and "usage:" in done.stderr
