"""Hosts made of Linux network namespaces, for the tests across hosts (root only).

:class:`Network` makes one namespace per "host", each with an ``eth0`` (a veth pair) on a
bridge that lives in a namespace of its own (the switch), addresses in 10.231.0.0/24. Nothing
is created in the namespace the tests were started from: no interface, address or route of
the machine changes, and traffic goes only between these namespaces (and each one's own
loopback). Every namespace is named ``vlmh<pid>-<host>``: :func:`clean_leftovers` removes
those of a run whose process is gone (a crashed run), killing what still runs in them.

Faults, all undone by :meth:`Network.heal` and by teardown:

* :meth:`Network.cut_off`: nftables in the host's namespace drops every packet to and from
  the other hosts (a partition; loopback still works).
* :meth:`Network.degrade`: delay with jitter and loss between one host and some peers, both
  ways. With ``tc netem`` in the kernel that is netem on each side's ``eth0`` for those
  peers' addresses; a kernel without it (this project's Firecracker VMs have no sch_netem)
  gets the same from userspace: nftables redirects the host's TCP connections to the peers
  through :mod:`vledger.tests.multihost.wan` on the host's loopback, which holds every chunk
  for the delay (in order, as netem with its default reordering off does for one flow), and
  nftables drops the loss share of packets on the wire, so TCP retransmits as it would.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

PREFIX = "vlmh"
SUBNET = "10.231.0"
FAULT_TABLE = "vlmh_fault"
WAN_TABLE = "vlmh_wan"
WAN_PORT = 7999  # the userspace link on each degraded host's loopback
WAN_MARK = 0x2A  # the link's own connections to the peers: not redirected again
CLONE_NEWNET = 0x40000000
_NAME = re.compile(rf"^{PREFIX}(\d+)-")


def missing() -> str | None:
    """Why hosts cannot be made here (not root, no ``ip`` or ``nft``, namespaces refused), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns); run as root, as CI does"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH: apt-get install iproute2 nftables"
    probe = f"{PREFIX}{os.getpid()}-probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"ip netns add refused: {done.stderr.strip()}"
    try:
        nft = _run_in(probe, ["nft", "add", "table", "inet", "probe"], check=False)
        if nft.returncode != 0:
            return f"nftables refused in a namespace: {nft.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def has_netem() -> bool:
    """Whether the kernel has the netem and prio queueing disciplines (probed in a namespace of our own)."""
    probe = f"{PREFIX}{os.getpid()}-netem"
    subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=True)
    try:
        _run_in(probe, ["ip", "link", "set", "lo", "up"])
        prio = _run_in(probe, ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio"], check=False)
        netem = _run_in(
            probe, ["tc", "qdisc", "add", "dev", "lo", "parent", "1:3", "handle", "30:", "netem", "delay", "1ms"],
            check=False,
        )  # fmt: skip
        return prio.returncode == 0 and netem.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)


def clean_leftovers() -> list[str]:
    """Remove the namespaces (and kill their processes) of runs whose process is gone; their names."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    removed = []
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        found = _NAME.match(name)
        if found is None or _alive(int(found.group(1))):
            continue
        _remove_namespace(name)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_namespace(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _run_in(namespace: str, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", "netns", "exec", namespace, *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"in {namespace}: {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    """One namespace on the bridge: its name, its address, the prefix that runs a command in it."""

    name: str
    namespace: str
    address: str
    wan: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run_in(self.namespace, args, check=check)

    def nft(self, script: str) -> None:
        done = subprocess.run(
            [*self.prefix, "nft", "-f", "-"], input=script, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"nft in {self.namespace} refused:\n{script}\n{done.stderr.strip()}")


@dataclass
class Network:
    """Hosts on one bridge; :meth:`close` removes every namespace and what runs in it."""

    names: Sequence[str]
    hosts: dict[str, Host] = field(default_factory=dict)
    netem: bool | None = None  # decided on the first degrade

    def __post_init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-switch"

    def open(self) -> Network:
        try:
            subprocess.run(["ip", "netns", "add", self.switch], check=True, capture_output=True)
            _run_in(self.switch, ["ip", "link", "add", "br0", "type", "bridge"])
            _run_in(self.switch, ["ip", "link", "set", "br0", "up"])
            for index, name in enumerate(self.names, start=1):
                self._add(name, index)
        except BaseException:
            self.close()
            raise
        return self

    def _add(self, name: str, index: int) -> None:
        host = Host(name, f"{self.tag}-{name}", f"{SUBNET}.{10 + index}")
        subprocess.run(["ip", "netns", "add", host.namespace], check=True, capture_output=True)
        self.hosts[name] = host
        port = f"p{index}"  # the switch's end; the host's end is its eth0
        _run_in(
            self.switch, ["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.namespace]
        )
        _run_in(self.switch, ["ip", "link", "set", port, "master", "br0", "up"])
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        host.run("ip", "link", "set", "eth0", "up")

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        """Every host's processes killed and its namespace removed, then the switch's."""
        for host in self.hosts.values():
            if host.wan is not None:
                _stop(host.wan)
                host.wan = None
            _remove_namespace(host.namespace)
        self.hosts.clear()
        _remove_namespace(self.switch)

    # --- faults ----------------------------------------------------------------------------------

    def cut_off(self, name: str) -> None:
        """Drop every packet between host ``name`` and every other host, both ways."""
        self[name].nft(
            f"""table inet {FAULT_TABLE} {{
  chain input {{ type filter hook input priority -10; ip saddr {SUBNET}.0/24 drop; }}
  chain output {{ type filter hook output priority -10; ip daddr {SUBNET}.0/24 drop; }}
}}"""
        )

    def heal(self, name: str) -> None:
        """Undo :meth:`cut_off` and :meth:`degrade` on host ``name``."""
        host = self[name]
        for table in (FAULT_TABLE, WAN_TABLE):
            host.run("nft", "delete", "table", "inet", table, check=False)
        if host.wan is not None:
            _stop(host.wan)
            host.wan = None
        host.run("tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        for peer in self.hosts.values():
            if peer.name != name:
                peer.run("tc", "qdisc", "del", "dev", "eth0", "root", check=False)

    def degrade(self, name: str, peers: Sequence[str], *, delay_ms: int, jitter_ms: int, loss_percent: int) -> None:
        """``delay_ms`` +- ``jitter_ms`` and ``loss_percent`` % loss each way between ``name`` and ``peers``."""
        if self.netem is None:
            self.netem = has_netem()
        if self.netem:
            self._netem(self[name], [self[p].address for p in peers], delay_ms, jitter_ms, loss_percent)
            for peer in peers:
                self._netem(self[peer], [self[name].address], delay_ms, jitter_ms, loss_percent)
        else:
            self._userspace(self[name], [self[p].address for p in peers], delay_ms, jitter_ms, loss_percent)

    @staticmethod
    def _netem(host: Host, addresses: Sequence[str], delay_ms: int, jitter_ms: int, loss_percent: int) -> None:
        """netem on band 3 of a prio qdisc, and a filter that sends only ``addresses`` there."""
        host.run("tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "prio")
        host.run(
            "tc", "qdisc", "replace", "dev", "eth0", "parent", "1:3", "handle", "30:", "netem",
            "delay", f"{delay_ms}ms", f"{jitter_ms}ms", "distribution", "normal", "loss", f"{loss_percent}%",
        )  # fmt: skip
        for address in addresses:
            host.run(
                "tc", "filter", "add", "dev", "eth0", "parent", "1:0", "protocol", "ip", "prio", "1",
                "u32", "match", "ip", "dst", f"{address}/32", "flowid", "1:3",
            )  # fmt: skip

    @staticmethod
    def _userspace(host: Host, addresses: Sequence[str], delay_ms: int, jitter_ms: int, loss_percent: int) -> None:
        """The link of :mod:`wan` on the host's loopback, and nftables to send the peers' TCP through it."""
        if host.wan is None:
            host.wan = subprocess.Popen(
                [
                    *host.prefix, sys.executable, "-m", "vledger.tests.multihost.wan",
                    "--listen", f"127.0.0.1:{WAN_PORT}", "--delay-ms", str(delay_ms),
                    "--jitter-ms", str(jitter_ms), "--mark", str(WAN_MARK),
                ],
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            _wait_listening(host, WAN_PORT)
        peers = ", ".join(addresses)
        # Loss on the wire, both ways; the redirect is for connections the host opens to a peer
        # (the nodes here only ever connect towards the home), except the link's own (marked).
        # NAT applies to a connection's first packet only: a connection opened before is still
        # addressed to the peer after the NAT hook, and is reset, so that it is opened again
        # through the link (ZeroMQ reconnects by itself).
        to_peers = f"meta mark != {WAN_MARK} ip daddr {{ {peers} }} meta l4proto tcp"
        drop = f"numgen random mod 100 < {loss_percent} drop"
        host.nft(
            f"""table inet {WAN_TABLE} {{
  chain loss_in {{ type filter hook input priority -5; ip saddr {{ {peers} }} {drop}; }}
  chain loss_out {{ type filter hook output priority -5; ip daddr {{ {peers} }} {drop}; }}
  chain to_link {{ type nat hook output priority -100; {to_peers} dnat ip to 127.0.0.1:{WAN_PORT}; }}
  chain old_flows {{ type filter hook output priority 0; {to_peers} reject with tcp reset; }}
}}"""
        )


def _wait_listening(host: Host, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while f":{port} " not in host.run("ss", "-ltnH").stdout:
        if host.wan is not None and host.wan.poll() is not None:
            raise AssertionError(f"the userspace link on {host.name} exited with status {host.wan.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the userspace link on {host.name} is not listening on {port} within {timeout} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- this process on one of the hosts ------------------------------------------------------------


@contextlib.contextmanager
def inside(host: Host) -> Iterator[None]:
    """This thread (and the threads and processes it starts) in ``host``'s namespace for the block.

    ZeroMQ's I/O threads are made with the first socket of a Context, in the namespace of the
    thread that makes it: the process's Context (``zmq.Context.instance()``) is replaced by a
    fresh one for the block, and the one before it is put back afterwards.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{host.namespace}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {host.namespace}")
        previous: Any = zmq.Context._instance
        zmq.Context._instance = None
        try:
            yield
        finally:
            ours = zmq.Context._instance
            zmq.Context._instance = previous
            if ours is not None:
                ours.destroy(linger=0)
            if libc.setns(here, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test's own namespace")
    finally:
        os.close(there)
        os.close(here)
