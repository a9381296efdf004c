"""A tlog-witness written from the C2SP specifications alone, to feed vledger ledgers to in tests.

c2sp.org/tlog-witness (add-checkpoint), c2sp.org/signed-note, c2sp.org/tlog-checkpoint,
c2sp.org/tlog-cosignature (Ed25519 cosignature/v1) and RFC 9162 2.1.4.2 (verifying a
consistency proof). It imports nothing of vledger on purpose: what it accepts and signs is
what the specifications say, so a test that vledger's home feeds it proves the wire format,
not vledger's agreement with itself. It keeps, per origin, the size and root of the latest
checkpoint it cosigned (in memory), and answers 400, 403, 404, 409 and 422 as the spec says.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from Crypto.Signature import eddsa

EM_DASH = "\u2014"
SIZE_TYPE = "text/x.tlog.size"
MAX_BODY = 1 << 20
EMPTY_ROOT = hashlib.sha256(b"").digest()


def _key_id(name: str, alg: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    raw = base64.b64decode(text, validate=True)
    if _b64(raw) != text:
        raise ValueError("not canonical base64")
    return raw


def _decimal(text: str) -> int:
    if not text.isdigit() or not text.isascii() or (text != "0" and text.startswith("0")) or len(text) > 20:
        raise ValueError(f"not a decimal: {text!r}")
    value = int(text)
    if value >= 2**64:
        raise ValueError("over a u64")
    return value


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def consistency_ok(first: int, second: int, first_hash: bytes, second_hash: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2, step by step."""
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0 or first > second or not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the old root is the first node
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


@dataclass
class LogKey:
    name: str
    key_id: bytes
    public: bytes


def parse_vkey(vkey: str) -> LogKey:
    """A signed-note verifier key ``<name>+<hex id>+<base64(0x01 || key)>`` (Ed25519 only)."""
    name, hex_id, rest = vkey.split("+", 2)
    raw = _unb64(rest)
    if len(raw) != 33 or raw[0] != 0x01 or _key_id(name, 0x01, raw[1:]).hex() != hex_id:
        raise ValueError("not an Ed25519 note vkey")
    return LogKey(name, bytes.fromhex(hex_id), raw[1:])


class Refusal(Exception):
    def __init__(self, status: int, text: str, content_type: str = "text/plain") -> None:
        super().__init__(text)
        self.status, self.text, self.content_type = status, text, content_type


class TlogWitness:
    """An add-checkpoint witness named ``name`` with the Ed25519 ``seed``, trusting ``logs``
    (origin -> the log's note vkey). :meth:`start` serves it on 127.0.0.1 in a thread."""

    def __init__(self, name: str, seed: bytes, logs: dict[str, str], clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.clock = clock  # the POSIX time it cosigns at
        self._private = eddsa.import_private_key(seed)
        self.public = bytes(self._private.public_key().export_key(format="raw"))
        self.logs = {origin: parse_vkey(vkey) for origin, vkey in logs.items()}
        self.latest: dict[str, tuple[int, bytes]] = {}  # origin -> (size, root) last cosigned
        self.answers: list[int] = []  # every status it answered, in order
        # Seconds between the bytes of a hostile answer (None: honest): a 200 whose headers say
        # 100000 bytes, then one byte at a time, for as long as the client listens.
        self.trickle: float | None = None
        self.delay = 0.0  # seconds it takes before each answer over HTTP: a witness across a WAN
        self.trickled = 0  # requests it answered so
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def vkey(self) -> str:
        """This witness's cosignature verifier key (type 0x04), as a log lists it."""
        return f"{self.name}+{_key_id(self.name, 0x04, self.public).hex()}+{_b64(bytes([0x04]) + self.public)}"

    def trust(self, origin: str, vkey: str) -> None:
        with self._lock:
            self.logs[origin] = parse_vkey(vkey)

    # --- the protocol --------------------------------------------------------------------

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) of the answer to one add-checkpoint request body."""
        try:
            answer = self._add_checkpoint(body)
            status, content_type = 200, "text/plain; charset=utf-8"
        except Refusal as e:
            status, content_type, answer = e.status, e.content_type, e.text.encode()
        self.answers.append(status)
        return status, content_type, answer

    def _add_checkpoint(self, body: bytes) -> bytes:
        try:
            head, _, note = body.partition(b"\n\n")
            lines = head.decode("ascii").split("\n")
            if not lines[0].startswith("old ") or len(lines) > 64:
                raise ValueError("no old line, or more than 63 proof lines")
            old = _decimal(lines[0][4:])
            proof = [_unb64(line) for line in lines[1:]]
            if any(len(h) != 32 for h in proof):
                raise ValueError("a proof hash is 32 bytes")
            text_end = note.rindex(b"\n\n") + 1
            text = note[:text_end].decode("utf-8")
            sig_lines = note[text_end + 1 :].decode("utf-8").split("\n")
            if sig_lines[-1] != "":
                raise ValueError("a signature line ends in a newline")
            origin, size_text, root_text, *_ = text[:-1].split("\n")
            size, root = _decimal(size_text), _unb64(root_text)
            if len(root) != 32:
                raise ValueError("a root is 32 bytes")
        except (ValueError, UnicodeDecodeError, binascii.Error) as e:
            raise Refusal(400, f"malformed request: {e}\n") from None
        log = self.logs.get(origin)
        if log is None:
            raise Refusal(404, "unknown origin\n")
        verified = False
        for line in sig_lines[:-1]:
            if not line.startswith(EM_DASH + " "):
                raise Refusal(400, "malformed signature line\n")
            name, _, sig64 = line[2:].partition(" ")
            try:
                raw = _unb64(sig64)
            except (ValueError, binascii.Error):
                raise Refusal(400, "malformed signature line\n") from None
            if name != log.name or raw[:4] != log.key_id:
                continue  # unknown keys are ignored
            try:
                eddsa.new(eddsa.import_public_key(log.public), "rfc8032").verify(text.encode(), raw[4:])
            except ValueError:
                raise Refusal(403, "a signature by the log's key does not verify\n") from None
            verified = True
        if not verified:
            raise Refusal(403, "no signature by the log's key\n")
        if old > size:
            raise Refusal(400, "old size is over the checkpoint's size\n")
        with self._lock:  # check and update at once (the spec's race)
            held_size, held_root = self.latest.get(origin, (0, EMPTY_ROOT))
            if old != held_size:
                raise Refusal(409, f"{held_size}\n", SIZE_TYPE)
            if size == 0 and root != EMPTY_ROOT:
                raise Refusal(422, "a size-0 checkpoint has the empty tree's root\n")
            if old == 0 and proof:
                raise Refusal(422, "no proof may follow old 0\n")
            if old > 0 and not consistency_ok(old, size, held_root, root, proof):
                raise Refusal(422, "the consistency proof does not verify\n")
            self.latest[origin] = (size, root)
        timestamp = int(self.clock())
        message = f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()
        signature = eddsa.new(self._private, "rfc8032").sign(message)
        key_id = _key_id(self.name, 0x04, self.public)
        line = f"{EM_DASH} {self.name} {_b64(key_id + timestamp.to_bytes(8, 'big') + signature)}\n"
        return line.encode()

    # --- serving --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.content.read(MAX_BODY + 1)
        if self.trickle is not None:
            return await self._trickle(request, self.trickle)
        if len(body) > MAX_BODY:
            return web.Response(status=400, text="too large\n")
        if self.delay:
            await asyncio.sleep(self.delay)
        status, content_type, answer = self.add_checkpoint(body)
        return web.Response(status=status, body=answer, headers={"Content-Type": content_type})

    async def _trickle(self, request: web.Request, every: float) -> web.StreamResponse:
        self.trickled += 1
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.content_length = 100_000
        await response.prepare(request)
        try:
            for _ in range(100_000):
                await response.write(b"x")
                await asyncio.sleep(every)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what a client with a deadline does
        return response

    def start(self) -> TlogWitness:
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/add-checkpoint", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"tlog-witness-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test witness did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
