"""A blocking writer in a thread of its own, read as an async stream of chunks.

``produce(out)`` writes to ``out`` (the backup's tar); what it writes is gathered into chunks of
about :data:`CHUNK` octets and put into a thread-safe queue of :data:`DEPTH` chunks, so the
thread waits only while the queue is full (the reader is slow: memory stays bounded), never for
the event loop's turn; each put wakes the loop with one ``call_soon_threadsafe`` (waiting for the
loop on every chunk held the thread up: the stream ran at half the rate of the work). When the
reader stops early (a client gone), the thread's next write raises :class:`ReaderGone` and it
ends; an exception in the thread is raised to the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable

CHUNK = 1 << 20
DEPTH = 8


class ReaderGone(Exception):
    """The stream's reader stopped reading."""


class _Done:
    """The end of the stream: ``error`` is what ended the writer, or None."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Writer:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: queue.Queue[bytes | _Done] = queue.Queue(DEPTH)
        self.ready = asyncio.Event()
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

    def _put(self, item: bytes | _Done) -> None:
        if self.gone.is_set():
            raise ReaderGone("the reader went away")
        self.queue.put(item)  # blocks while full; a reader that leaves empties it
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            self._loop.call_soon_threadsafe(self.ready.set)


async def stream(produce: Callable[[_Writer], object], name: str) -> AsyncIterator[bytes]:
    """Run ``produce`` in a new thread named ``name``; yields what it writes."""
    writer = _Writer(asyncio.get_running_loop())

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
            try:
                item = writer.queue.get_nowait()
            except queue.Empty:
                writer.ready.clear()
                if writer.queue.empty():  # a put after the clear sets it again
                    await writer.ready.wait()
                continue
            if isinstance(item, _Done):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        writer.gone.set()
        while not writer.queue.empty():  # a put the thread waits on completes; its next raises
            writer.queue.get_nowait()
