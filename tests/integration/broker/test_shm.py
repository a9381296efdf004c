"""A sweeping process group killed with SIGKILL: its resource tracker dies with it and cannot
remove the pool's shared memory; the next owner to start removes it (vledger.broker.shm)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from vledger.broker.shm import SHM_DIR
from vledger.verifier.sweep import PagePool

DEADLINE = 60.0  # seconds the sweeping process has to start its workers and check a page (a loaded machine)

# A process that sweeps a page through a real pool (forkserver workers, a slot of shared
# memory), says so with its segment's name, then waits to be killed.
SWEEPER = """
import json, sys, time
from pathlib import Path

def main():
    from vledger.config.settings import Limits
    from vledger.node.ledger import LedgerRules
    from vledger.node.record import Content, Entry
    from vledger.node.store import ChainStore
    from vledger.verifier.sweep import PagePool

    with ChainStore(Path(sys.argv[1]), origin="node-1") as store:
        rules = LedgerRules(("note",), 0, {})
        store.create_ledger(Entry.prepare(rules.genesis_content("swept", "clerk", "g", 1), 0, Limits()))
        for i in range(20):
            store.append(Entry.prepare(Content("swept", "note", {"n": i}, "clerk", f"r{i}", 2 + i), 0, Limits()))
        chain = [data for _, data in store.range_raw("swept")]
    pool = PagePool(2)
    summary = pool.result(pool.submit("swept", chain[0], 1, chain[1:]))
    assert summary is not None and summary.clean, summary
    print(json.dumps({"segment": pool._segment.name}), flush=True)
    time.sleep(600)

if __name__ == "__main__":
    main()
"""


def _line(process: subprocess.Popen[bytes]) -> bytes:
    assert process.stdout is not None
    deadline = time.monotonic() + DEADLINE
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"the sweeping process said nothing in {DEADLINE} s"
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk, f"the sweeping process ended: {process.wait()}"
            line += chunk
    return line


def test_a_killed_sweeping_group_leaves_a_file_the_next_owner_removes(tmp_path: Path) -> None:
    script = tmp_path / "sweeper.py"
    script.write_text(SWEEPER, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "store")], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        said = json.loads(_line(process))
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    segment = SHM_DIR / said["segment"]
    assert said["segment"].startswith(f"vledger-{process.pid}-") and segment.exists()
    os.killpg(process.pid, signal.SIGKILL)  # the sweeper, its workers, forkserver and resource tracker
    process.wait()  # the segment's owner is gone (its workers may linger as zombies: they hold no name)
    assert segment.exists()  # nobody was left to remove it
    PagePool(1).close()  # an owner starts: a sweep's pool, as the verifier makes one
    assert not segment.exists()
