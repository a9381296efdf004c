"""A slow link in userspace: TCP relayed to where it was going, each chunk held for a delay.

For kernels without ``tc netem`` (see netns.py). nftables redirects a host's connections to
its peers here (``dnat`` in the output hook); the original destination comes from
``SO_ORIGINAL_DST``; the relay's own connection onwards carries ``SO_MARK`` so that it is
not redirected again. Each direction of each connection delivers chunks in order, each no
earlier than ``delay`` +- ``jitter`` (uniform) after it was read.

    python -m vledger.tests.multihost.wan --listen 127.0.0.1:7999 --delay-ms 200 --jitter-ms 50 --mark 42
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import struct

SO_ORIGINAL_DST = 80
CHUNK = 65536


def original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


class Link:
    def __init__(self, delay: float, jitter: float, mark: int) -> None:
        self.delay = delay
        self.jitter = jitter
        self.mark = mark

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = original_destination(writer.get_extra_info("socket"))
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
        upstream.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(upstream, (host, port))
            far_reader, far_writer = await asyncio.open_connection(sock=upstream)
        except OSError:
            upstream.close()
            writer.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # the link stops (SIGTERM): its connections end with it
            await asyncio.gather(self.pipe(reader, far_writer), self.pipe(far_reader, writer), return_exceptions=True)

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        sender = asyncio.create_task(deliver())
        last = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                # In order: never before the chunk ahead of it, as one flow through netem.
                last = max(last, loop.time() + self.delay + random.uniform(-self.jitter, self.jitter))
                queue.put_nowait((last, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
            writer.close()


async def serve(host: str, port: int, link: Link) -> None:
    server = await asyncio.start_server(link.handle, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--delay-ms", type=int, required=True)
    parser.add_argument("--jitter-ms", type=int, default=0)
    parser.add_argument("--mark", type=int, required=True)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(host, int(port), Link(args.delay_ms / 1000, args.jitter_ms / 1000, args.mark)))


if __name__ == "__main__":
    main()
