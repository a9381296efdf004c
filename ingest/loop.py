"""The ingest node's socket loop: receive on the CURVE ROUTER, answer through the service.

One asyncio task per request, so that a put waiting for its group commit does not hold up
the requests behind it; at most ``max_in_flight`` at once, past which the loop stops reading
and ZeroMQ's queues push back on the clients.
"""

from __future__ import annotations

import asyncio
import logging

import zmq
import zmq.asyncio

from ..broker.curve import sender_key
from ..node.errors import BadRequestError, CurveError
from ..node.wire import reply_error
from .service import IngestService

log = logging.getLogger(__name__)


async def serve(
    socket: zmq.asyncio.Socket, service: IngestService, stop: asyncio.Event, max_in_flight: int = 1024
) -> None:
    """Answer requests until ``stop`` is set, then finish the ones in flight."""
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(identity: bytes, key: str, data: bytes) -> None:
        try:
            reply = await service.handle(key, data)
            await socket.send_multipart([identity, reply])
        except zmq.ZMQError as e:  # the client is gone: nothing to answer
            log.debug("reply not sent: %s", e)
        finally:
            slots.release()

    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            await slots.acquire()
            receiving = asyncio.ensure_future(socket.recv_multipart(copy=False))
            done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if receiving not in done:
                receiving.cancel()
                slots.release()
                break
            frames = receiving.result()
            if len(frames) != 2:  # a DEALER request is one frame; answer anything else, and go on
                slots.release()
                error = BadRequestError(f"a request is one frame, not {len(frames) - 1}")
                await socket.send_multipart([frames[0].bytes, reply_error(None, error)])
                continue
            identity, message = frames
            try:
                key = sender_key(message)
            except CurveError as e:  # never expected behind the ZAP handler: refuse to serve it
                log.warning("message dropped: %s", e)
                slots.release()
                continue
            task = asyncio.create_task(answer(identity.bytes, key, message.bytes))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        stopping.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
