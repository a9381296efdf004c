"""The pyvserv half of `python -m bench.pyvserv`: run by the interpreter of the pyvserv virtualenv.

It imports only the standard library and pyvserv's own client modules (pyvcommon), so that it runs
where pyvserv is installed and nowhere else; bench/pyvserv.py never imports it. One job per run,
given as JSON on the command line; the result is one line of JSON on stdout (``{"error": ...}`` and
exit status 1 on failure). The client calls are pyvserv 1.1.0's own (pyvclient/pyvcli_rput.py,
pyvcommon/pyclisup.py): ``CliSup.connect``, ``start_session`` (ECC key exchange, then an AES
session), ``client(["uini" | "user" | "pass" | "tout" | "hello" | "rput" | "rcheck", ...])``. Pipelining is
``CliSup.wrapx`` + ``sendx`` for each request and ``recvx`` for each reply, in order: the server
reads one length-prefixed frame at a time from a buffered reader, so frames may queue on the socket.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import types
from typing import Any

SESSION_TIMEOUT = 3600  # seconds: the server drops a connection idle for 20 s by default; rcheck takes longer
USER, PASSWORD = "admin", "bench-1234"


def _pyvserv() -> tuple[Any, Any]:
    """pyvserv's client modules; its modules import each other by bare name, as its own scripts arrange.

    Imported here, not at the top: they exist only in pyvserv's virtualenv, and only once sys.path
    holds pyvcommon (mypy and ruff read this file from vledger's)."""
    from pyvcommon import support  # type: ignore[import-not-found]  # noqa: PLC0415

    here = os.path.dirname(support.__file__)
    sys.path.append(here)
    sys.path.append(os.path.join(os.path.dirname(here), "pyvserver"))
    import pyclisup  # type: ignore[import-not-found]  # noqa: PLC0415
    import pyvhash  # type: ignore[import-not-found]  # noqa: PLC0415

    return pyclisup, pyvhash


class _Session:
    """A connected, session-keyed client, logged in (``login``) or not (first use: ``uini``)."""

    def __init__(self, port: int, login: bool = True) -> None:
        pyclisup, _ = _pyvserv()
        self.conf = types.SimpleNamespace(sess_key="", verbose=0, pgdebug=0)
        self.hand = pyclisup.CliSup()
        self.hand.connect("127.0.0.1", port)
        reply = self.hand.start_session(self.conf)
        if reply[0] != "OK":
            raise RuntimeError(f"pyvserv session: {reply!r}")
        self.call(["tout", str(SESSION_TIMEOUT)])
        if login:
            reply = self.hand.login(USER, PASSWORD, self.conf)
            if reply[0] != "OK":
                raise RuntimeError(f"pyvserv login: {reply!r}")

    def call(self, message: list[Any]) -> list[Any]:
        reply: list[Any] = self.hand.client(message, self.conf.sess_key)
        return reply

    def pipelined(self, messages: list[list[Any]], window: int) -> list[list[Any]]:
        """Every message sent with up to ``window`` unanswered; the replies in order."""
        hand, key = self.hand, self.conf.sess_key
        replies: list[list[Any]] = []
        sent = 0
        while len(replies) < len(messages):
            while sent < len(messages) and sent - len(replies) < window:
                hand.sendx(hand.wrapx(messages[sent], key))
                sent += 1
            replies.append(hand.recvx(key))
        return replies

    def close(self) -> None:
        try:
            self.call(["quit"])
        finally:
            self.hand.close()


def _record(i: int, salt: str) -> dict[str, Any]:
    """A pyvserv block whose payload is the vledger bench entry's content (bench/fixtures.py: entries),
    hashed and given a proof of one zero digit (the server runs with -t, which allows a weak proof)."""
    _, pyvhash = _pyvserv()
    block = pyvhash.BcData()
    block.num_zeros = 1
    block.addpayload(
        {"amount": 1_000 + i, "memo": f"invoice {i:09d} for services rendered", "to": f"account-{i % 977}"}
    )
    block.hasharr()
    while not block.powarr():
        pass
    return dict(block.datax)


def _puts(session: _Session, records: list[dict[str, Any]], window: int) -> None:
    messages = [["rput", "vote", record] for record in records]
    replies = [session.call(message) for message in messages] if window <= 1 else session.pipelined(messages, window)
    bad = [r for r in replies if r[0] != "OK"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(replies)} rput failed, first: {bad[0]!r}")


def _client(port: int, job: dict[str, Any], rank: int, start_line: Any, results: Any) -> None:
    """One client process: connect, log in, prepare its records, wait for the others, then time its puts."""
    try:
        session = _Session(port)
        salt = f"{job['salt']}-{rank}"
        records = [_record(i, salt) for i in range(job["count"])]
        start_line.wait(600)
        start = time.monotonic()
        _puts(session, records, job["window"])
        end = time.monotonic()
        session.close()
        results.put({"start": start, "end": end, "count": len(records)})
    except Exception as e:
        results.put({"error": f"client {rank}: {e!r}"})


def put(port: int, job: dict[str, Any]) -> dict[str, Any]:
    """``job["clients"]`` processes, each putting ``job["count"]`` records with ``job["window"]`` in
    flight, all starting together; records/s over the whole span, and the latency of sequential puts."""
    context = multiprocessing.get_context("fork")
    start_line, results = context.Barrier(job["clients"]), context.Queue()
    processes = [
        context.Process(target=_client, args=(port, job, rank, start_line, results)) for rank in range(job["clients"])
    ]
    for process in processes:
        process.start()
    done = [results.get(timeout=900) for _ in processes]
    for process in processes:
        process.join(30)
    errors = [d["error"] for d in done if "error" in d]
    if errors:
        raise RuntimeError(errors[0])
    span = max(d["end"] for d in done) - min(d["start"] for d in done)
    return {"rate": sum(d["count"] for d in done) / span}


def hello(port: int, job: dict[str, Any]) -> dict[str, Any]:
    """``job["count"]`` hellos in the session, one at a time: each round trip in ms."""
    session = _Session(port, login=False)
    times = []
    for _ in range(job["count"]):
        start = time.perf_counter()
        reply = session.call(["hello"])
        times.append((time.perf_counter() - start) * 1_000)
        if reply[0] != "OK":
            raise RuntimeError(f"hello: {reply!r}")
    session.close()
    return {"ms": times}


def setup(port: int, job: dict[str, Any]) -> dict[str, Any]:
    """The initial (admin) user, which pyvserv only lets a loopback client create, then a login."""
    session = _Session(port, login=False)
    reply = session.call(["uini", USER, PASSWORD])
    if reply[0] != "OK":
        raise RuntimeError(f"uini: {reply!r}")
    session.close()
    _Session(port).close()
    return {}


def fill(port: int, job: dict[str, Any]) -> dict[str, Any]:
    """A fresh chain of ``job["size"]`` records under ``job["root"]`` (the verification's store, not
    timed), written the way the server's rput writes one (pyvserver/pyvfuncr.py get_rput_func: the
    record under its header in initial.pydb, the header in the hash index, a replication request in
    replic.pydb), but in this process rather than over the wire, to keep the bench short."""
    from pydbase import twincore  # type: ignore[import-not-found]  # noqa: PLC0415

    _pyvserv()
    import pyvindex  # type: ignore[import-not-found]  # noqa: PLC0415
    import pyvpacker  # type: ignore[import-not-found]  # noqa: PLC0415

    chain = os.path.join(job["root"], "chain", "vote")
    os.makedirs(chain, exist_ok=True)
    packer = pyvpacker.packbin()
    core = twincore.TwinCore(os.path.join(chain, "initial.pydb"))
    core.hashname = os.path.join(chain, "initial.hash.id")
    replic = twincore.TwinCore(os.path.join(chain, "replic.pydb"), 0)
    for i in range(job["size"]):
        record = _record(i, "")
        header = record["header"]

        def index(c2: Any, _id: Any, header: str = header) -> None:
            pyvindex.append_index(c2, c2.hashname, pyvindex.hash_id, header)

        core.postexec = index
        core.save_data(header, packer.encode_data("", record))
        request = {k: record[k] for k in ("header", "now", "iso", "stamp")} | {"processed": "00000"}
        replic.save_data(header, packer.encode_data("", request))
    return {"size": core.getdbsize()}


def rcheck(port: int, job: dict[str, Any]) -> dict[str, Any]:
    """pyvserv's whole-chain check (rcheck vote data, hash, proof: what pyvcli_rcheck runs), from
    connecting to the last reply: seconds of each and in all, and the chain's size."""
    started = time.perf_counter()
    session = _Session(port)
    seconds: dict[str, float] = {}
    size = 0
    for mode in ("data", "hash", "proof"):
        start = time.perf_counter()
        reply = session.call(["rcheck", "vote", mode])
        seconds[mode] = time.perf_counter() - start
        if reply[0] != "OK":
            raise RuntimeError(f"rcheck {mode}: {str(reply)[:300]}")
        size = int(reply[3])
    session.close()
    return {"seconds": seconds, "wall": time.perf_counter() - started, "size": size}


JOBS = {"put": put, "hello": hello, "setup": setup, "fill": fill, "rcheck": rcheck}


def main() -> int:
    name, port, job = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    try:
        result = JOBS[name](port, job)
    except Exception as e:
        print(json.dumps({"error": f"{name}: {e!r}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
