"""A blocking writer in a thread of its own, read as an async stream of chunks.

``produce(out)`` writes to ``out`` (the backup's tar); what it writes is gathered into chunks of
about :data:`CHUNK` octets and handed to the event loop through a queue of :data:`DEPTH` chunks,
so the thread waits while the reader is slow (memory stays bounded) and the loop wakes once per
chunk. When the reader stops early (a client gone), the thread's next write raises
:class:`ReaderGone` and it ends; an exception in the thread is raised to the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

CHUNK = 1 << 20
DEPTH = 4


class ReaderGone(Exception):
    """The stream's reader stopped reading."""


class _Done:
    """The end of the stream: ``error`` is what ended the writer, or None."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Writer:
    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        self._loop = loop
        self._queue = queue
        self._parts: list[bytes] = []
        self._buffered = 0
        self.gone = threading.Event()

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered >= CHUNK:
            self._put(self._take())
        return len(data)

    def _take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self._buffered = 0
        return data

    def flush_end(self, error: BaseException | None) -> None:
        if self._parts and error is None:
            self._put(self._take())
        self._put(_Done(error))

    def _put(self, item: object) -> None:
        if self.gone.is_set():
            raise ReaderGone("the reader went away")
        asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop).result()


async def stream(produce: Callable[[_Writer], object], name: str) -> AsyncIterator[bytes]:
    """Run ``produce`` in a new thread named ``name``; yields what it writes."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(DEPTH)
    writer = _Writer(loop, queue)

    def run() -> None:
        error: BaseException | None = None
        try:
            produce(writer)
        except ReaderGone:
            return
        except BaseException as exc:  # handed to the reader, who raises it
            error = exc
        with contextlib.suppress(ReaderGone):
            writer.flush_end(error)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Done):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        writer.gone.set()
        while not queue.empty():  # a put the thread is waiting on completes; its next one raises
            queue.get_nowait()
