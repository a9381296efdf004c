"""The README's shell examples, run as written on a cluster started the way ``make run`` starts one.

``make run`` is ``vledger supervise start`` then ``vledger demo --cluster config/cluster.toml``.
Here the same ``config/cluster.toml`` (same nodes, ledgers and settings) gets free ports, in a
short folder under /tmp laid out like the repository (``config/``, ``run/``, ``README.md``), so
that the test never meets a real ``make run`` cluster or another test's. The demo runs with
few voters at a low difficulty (its ledgers exist afterwards, as on a ``make run`` cluster).

Then every ```sh block of README.md runs, in order, in one ``bash`` with ``set -euo
pipefail`` from that folder: a block must succeed as written, with no placeholder to fill
in. A block that must not run here (make itself, docker, starting the nodes by hand) opens
with ```sh no-test, and says so where a reader sees it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vledger.broker.redis_server import find_redis_server, free_port
from vledger.config.cluster import load_cluster
from vledger.node.errors import RedisServerError
from vledger.tools.supervise import Supervisor, alive, layout_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CLI = [sys.executable, "-m", "vledger.tools.cli"]
NO_TEST = "no-test"
FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")


@dataclass(frozen=True, slots=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    marker: str
    text: str


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced block of a Markdown text, with its language and whatever follows it on the fence."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"README.md:{i + 1}: a fence that is never closed"
        blocks.append(Block(i + 1, opening[1], opening[2].strip(), "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


def shell_script(blocks: list[Block]) -> str:
    """The runnable blocks as one script: each announces its README line on stderr before it runs."""
    parts = ["set -euo pipefail"]
    for block in blocks:
        parts += [f"echo '### README.md:{block.line}' >&2", block.text]
    return "\n".join(parts)


def runnable(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.language == "sh" and b.marker != NO_TEST]


def make_run_config(directory: Path) -> Path:
    """config/cluster.toml with every port (nodes and Redis) replaced by a free one."""
    used: set[int] = set()

    def port() -> int:
        while (found := free_port()) in used:
            pass
        used.add(found)
        return found

    text = (ROOT / "config" / "cluster.toml").read_text(encoding="utf-8")
    # Every listening port, the HTTP ones too: a `make run` of the repository may hold them meanwhile.
    ports = r"^((?:feed_rotation_|rotation_|pub_|http_|gateway_)?port) = \d+"
    text, nodes = re.subn(ports, lambda m: f"{m[1]} = {port()}", text, flags=re.MULTILINE)
    text, redis = re.subn(r"redis://127\.0\.0\.1:\d+/", lambda _: f"redis://127.0.0.1:{port()}/", text)
    assert nodes >= 9 and redis == 1, "config/cluster.toml changed shape: this test must learn it"
    path = directory / "config" / "cluster.toml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    return path


def environment(directory: Path) -> dict[str, str]:
    """The test's environment without the user's cluster settings, with this venv's vledger on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLEDGER_") and k != "REDIS_URL"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(directory)  # nothing of the user's home is read or written
    return env


def logs(directory: Path) -> str:
    folder = directory / "run" / "logs"
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in sorted(folder.glob("*.log"))
    )


@dataclass(frozen=True, slots=True)
class MakeRunCluster:
    directory: Path
    config: Path
    env: dict[str, str]

    def run(self, args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=self.directory, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture(scope="module")
def make_run() -> Iterator[MakeRunCluster]:
    """`make run`'s cluster and demo, on free ports, in a folder laid out like the repository."""
    try:
        find_redis_server()
    except RedisServerError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide a redis-server: {e}")
        pytest.skip(str(e))
    directory = Path(tempfile.mkdtemp(prefix="vlr-", dir="/tmp"))  # short: supervisord's socket path
    cluster = MakeRunCluster(directory, make_run_config(directory), environment(directory))
    shutil.copy(README, directory / "README.md")
    # As in the repository after `make install`: a block may call .venv/bin/... (a fresh shell's way).
    (directory / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    try:
        for step in (["supervise", "--config", "config/cluster.toml", "start"],
                     ["demo", "--cluster", "config/cluster.toml", "--voters", "20", "--difficulty", "8"]):  # fmt: skip
            done = cluster.run([*CLI, *step])
            assert done.returncode == 0, f"{step}: exit {done.returncode}\n{done.stdout}{done.stderr}{logs(directory)}"
        yield cluster
    finally:
        supervisor = Supervisor(layout_for(load_cluster(cluster.config), None, find_redis=False).socket_path)
        if supervisor.running():
            pids = [supervisor.pid(), *(info["pid"] for info in supervisor.processes().values() if info["pid"])]
            cluster.run([*CLI, "supervise", "--config", "config/cluster.toml", "stop"])
            for pid in pids:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


def test_every_shell_block_is_run_or_visibly_marked_not_to_be() -> None:
    blocks = fenced_blocks(README.read_text(encoding="utf-8"))
    shell = [b for b in blocks if b.language == "sh"]
    assert {b.marker for b in shell} <= {"", NO_TEST}, "a ```sh fence takes nothing, or no-test"
    assert len(runnable(blocks)) >= 4
    for block in shell:
        if block.marker == NO_TEST:
            continue
        assert not re.search(r"<[a-z0-9-]+>|\bE-\.\.\.", block.text), f"README.md:{block.line}: a placeholder"


def test_the_readme_shell_blocks_run_as_written(make_run: MakeRunCluster) -> None:
    script = shell_script(runnable(fenced_blocks(README.read_text(encoding="utf-8"))))
    done = make_run.run(["bash", "-c", script], timeout=300)
    assert done.returncode == 0, (
        f"exit {done.returncode} in the block last announced:\n{done.stderr}\n{done.stdout}\n{logs(make_run.directory)}"
    )
    # Nothing the README does not show: its voter example passes the anchors' majority as quorum,
    # and printed a warning telling the voter to do so when it did not (outsider o23 LOW 4).
    assert "pass quorum=" not in done.stderr, done.stderr
    # What the blocks said they did: the file they uploaded came back byte for byte.
    assert (make_run.directory / "run" / "README.copy.md").read_bytes() == README.read_bytes()
