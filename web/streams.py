"""Blocking gRPC streams (client.Client's iterators) as async iterators, and Server-Sent Events
(the one way both APIs write them).

A gRPC stream is read by a thread of its own, which hands each item to the event loop. The HTTP
response reads them from there; when it ends early (the HTTP client went away, so Starlette cancels
the response) the gRPC call is cancelled at once, which frees the server's stream slot and ends the
thread.
"""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator

_ITEM, _END, _ERROR = range(3)
BUFFERED = 64  # items read from gRPC and not yet sent to the HTTP client, at most


class BlockingStream:
    """Iterate ``iterator`` (blocking) in a thread; ``async for`` over the result, or ``await first()``.

    ``cancel`` is called when the async side stops before the iterator ended, so that the thread's
    blocking ``next()`` returns. ``keepalive``: seconds without an item after which ``None`` is
    yielded (SSE writers turn it into a comment line, which also notices a gone client).
    """

    def __init__(self, iterator: Iterator, cancel: Callable[[], None], keepalive: float | None = None):
        self._iterator, self._cancel, self._keepalive = iterator, cancel, keepalive
        self._queue: asyncio.Queue = asyncio.Queue()
        # Back-pressure: the thread stops reading gRPC while BUFFERED items wait for a slow HTTP client,
        # so a client that does not read holds no unbounded text here.
        self._credits = threading.Semaphore(BUFFERED)
        self._loop = asyncio.get_running_loop()
        self._ended = False
        threading.Thread(target=self._produce, name="grpc-stream", daemon=True).start()

    def _produce(self) -> None:
        put = self._loop.call_soon_threadsafe
        try:
            for item in self._iterator:
                self._credits.acquire()
                if self._ended:  # closed while this thread waited: the call is cancelled
                    return
                put(self._queue.put_nowait, (_ITEM, item))
            put(self._queue.put_nowait, (_END, None))
        except BaseException as exc:  # handed to the async side, which raises it
            try:
                put(self._queue.put_nowait, (_ERROR, exc))
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                pass

    async def _next(self):
        while True:
            try:
                if self._keepalive is None:
                    kind, value = await self._queue.get()
                else:
                    kind, value = await asyncio.wait_for(self._queue.get(), self._keepalive)
            except asyncio.TimeoutError:
                return _ITEM, None
            return kind, value

    async def __aiter__(self) -> AsyncIterator:
        try:
            while True:
                kind, value = await self._next()
                if kind == _ITEM and value is not None:
                    self._credits.release()
                if kind == _END:
                    self._ended = True
                    return
                if kind == _ERROR:
                    self._ended = True
                    raise value
                yield value
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the gRPC call unless it already ended (idempotent)."""
        if not self._ended:
            self._ended = True
            self._cancel()
            self._credits.release()  # a thread waiting for room sees the end


def sse(data, event: str | None = None, event_id: str | None = None) -> str:
    """One Server-Sent Event: optional ``id:`` and ``event: NAME`` lines, then ``data:`` with ``data``
    as JSON. Without a name it is a plain message, as OpenAI's stream chunks are."""
    head = f"id: {event_id}\n" if event_id else ""
    if event is not None:
        head += f"event: {event}\n"
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


KEEPALIVE = ": keepalive\n\n"  # an SSE comment: clients ignore it, proxies see traffic
DONE = "data: [DONE]\n\n"  # OpenAI's last event of a stream (not JSON: its SDKs look for this line)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
