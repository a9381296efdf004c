"""Redis over TLS (``rediss://`` and ``[redis] ca``) on a real redis-server with a TLS port.

The CA and the server's certificate are made here with the ``openssl`` command (missing: the
tests skip, and fail in CI). The nodes and the ``vledger`` command reach the server the way
they do in production: the cluster file's ``rediss://`` URL and CA, signed in as their
roles' users; a client that does not trust that CA is refused by its own TLS check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from vledger.broker.bounded_range import bounded_range
from vledger.broker.redis_server import RedisServer, ServerTls, connect, find_redis_server
from vledger.config.cluster import RedisAccess
from vledger.node.errors import RedisServerError
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until

LEDGER = "votes"


@dataclass(frozen=True)
class TlsFiles:
    server: ServerTls
    other_ca: Path  # a CA that signed nothing of this server's


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN=vledger test {name}",
    )  # fmt: skip
    return key, cert


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA, a server certificate it signs for 127.0.0.1, and a second, unrelated CA."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("CI must provide the openssl command (the TLS tests make their certificates with it)")
        pytest.skip("no openssl command to make a test CA")
    ca_key, ca_cert = _ca(directory, "ca")
    _, other_ca = _ca(directory, "other-ca")
    server_key, csr, server_cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(server_key), "-out", str(csr), "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(server_cert), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    return TlsFiles(ServerTls(server_cert, server_key, ca_cert), other_ca)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[RedisServer, TlsFiles]]:
    directory = Path(tempfile.mkdtemp(prefix="vl-tls-", dir="/tmp"))
    try:
        files = make_tls_files(directory)
        try:
            executable = find_redis_server()
        except RedisServerError as e:
            pytest.skip(str(e))
        with RedisServer(directory / "data", executable=executable, tls=files.server) as server:
            yield server, files
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _tls_ports(client: Any, tls_port: int) -> dict[str, int]:
    """user -> how many of its connections came in on the TLS port (CLIENT LIST's laddr)."""
    counted: dict[str, int] = {}
    for line in client.execute_command("CLIENT", "LIST").decode().splitlines():
        fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
        if fields.get("laddr", "").endswith(f":{tls_port}"):
            counted[fields["user"]] = counted.get(fields["user"], 0) + 1
    return counted


def test_a_client_with_the_clusters_ca_speaks_tls_and_one_without_it_is_refused(
    tls_server: tuple[RedisServer, TlsFiles],
) -> None:
    server, files = tls_server
    trusted = connect(RedisAccess(server.tls_url, ca_file=files.server.ca_file), timeout=5.0)
    trusted.set("vledger:tls-test", b"over tls")
    assert trusted.get("vledger:tls-test") == b"over tls"
    assert server.tls_port is not None
    assert _tls_ports(trusted, server.tls_port).get("default", 0) >= 1
    trusted.close()
    # No CA named: the system's CAs do not know this server's.
    for access in (RedisAccess(server.tls_url), RedisAccess(server.tls_url, ca_file=files.other_ca)):
        refused = connect(access, timeout=5.0)
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
            refused.ping()
        refused.close()
    # Nor does the TLS port speak plain Redis.
    plain = connect(server.tls_url.replace("rediss://", "redis://"), timeout=2.0)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    plain.close()


def test_a_server_whose_certificate_names_another_host_is_refused(tls_server: tuple[RedisServer, TlsFiles]) -> None:
    """The certificate names 127.0.0.1, reached here as localhost: refused however the client's
    redis-py defaults (before 6.0 it checked the chain only, so any certificate of the cluster's
    CA passed for any of its servers)."""
    server, files = tls_server
    elsewhere = server.tls_url.replace("127.0.0.1", "localhost")
    assert elsewhere != server.tls_url
    refused = connect(RedisAccess(elsewhere, ca_file=files.server.ca_file), timeout=5.0)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        refused.ping()
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        bounded_range(refused, "XRANGE", "vledger:{tls}:x", "-", "+", 1, 1000)
    refused.close()


def test_a_bounded_stream_read_speaks_tls_with_the_client_s_ca_on_a_connection_of_its_own(
    tls_server: tuple[RedisServer, TlsFiles],
) -> None:
    """The gateway's tally read (broker/bounded_range.py) opens its own connection from the
    client's settings: over TLS with the cluster's CA, refused by a client that does not trust it."""
    server, files = tls_server
    trusted = connect(RedisAccess(server.tls_url, ca_file=files.server.ca_file), timeout=5.0)
    stream = "vledger:{tls}:tallies:observer-1"
    entry_id = trusted.xadd(stream, {"height": 1, "body": b"x" * 100})
    assert bounded_range(trusted, "XRANGE", stream, "-", "+", 1, 1000) == [
        [entry_id, [b"height", b"1", b"body", b"x" * 100]]
    ]
    assert bounded_range(trusted, "XRANGE", stream, "-", "+", 1, 10) == [[entry_id, []]]
    trusted.close()
    refused = connect(RedisAccess(server.tls_url, ca_file=files.other_ca), timeout=5.0)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        bounded_range(refused, "XRANGE", stream, "-", "+", 1, 1000)
    refused.close()


def test_nodes_and_the_cli_reach_redis_over_tls_with_the_ca_of_the_cluster_file(
    tls_server: tuple[RedisServer, TlsFiles],
) -> None:
    server, files = tls_server
    assert server.tls_port is not None
    with LocalCluster(
        server.url,
        nodes=1,
        replicas=1,
        accounts={"writer1": "writer"},
        redis_tls=(server.tls_url, files.server.ca_file),
    ) as cluster:
        cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        cluster.client("writer1").put_many([entry(LEDGER, "vote", {"n": i}, "writer1") for i in range(20)])
        wait_until(lambda: cluster.sizes(LEDGER) == {"ingest-1": 21, "replica-1": 21}, 20, "the replica's copy")
        observer = connect(server.url)
        try:
            # The nodes' own Redis clients, each as its own user, on the TLS port.
            wait_until(
                lambda: (
                    {"vledger-node-ingest-1", "vledger-node-replica-1"}
                    <= set(_tls_ports(observer, server.tls_port or 0))
                ),
                10,
                "both nodes connected over TLS",
            )
        finally:
            observer.close()
        listed = cluster.cli("repl", "status", "--config", str(cluster.config_path), "--json")
        assert LEDGER in listed.stdout
        # The same cluster file without its CA: the command says Redis refused, no traceback.
        text = cluster.config_path.read_text()
        cluster.config_path.write_text("\n".join(line for line in text.splitlines() if not line.startswith("ca =")))
        refused = cluster.cli("repl", "status", "--config", str(cluster.config_path), check=False)
        assert refused.returncode != 0
        assert "certificate verify failed" in refused.stderr and "Traceback" not in refused.stderr
