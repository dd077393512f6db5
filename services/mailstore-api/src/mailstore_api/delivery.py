"""One delivery: the streamed body converted to LF, spilled to tmp/, fsynced, linked into new/.

Small messages are held in memory until the end and written, fsynced and linked in one worker-thread
call (one hop off the event loop per delivery); larger ones are spilled to the tmp file every
``SPILL`` octets, so memory per delivery stays bounded whatever the message size.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import anyio
import anyio.to_thread

from mailstore_api.maildir import LineEndings, MailStore, write_all

SPILL = 256 * 1024


class DeliveryWriter:
    """Collects one message for ``recipients``; :meth:`commit` makes it durable, :meth:`abort` not."""

    def __init__(self, store: MailStore, recipients: list[str], limiter: anyio.CapacityLimiter):
        self._store = store
        self._recipients = recipients
        self._limiter = limiter
        self._lines = LineEndings()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None
        self._tmp: Path | None = None
        self.received = 0

    @property
    def stored(self) -> int:
        return self._lines.stored

    async def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        data = self._lines.convert(chunk)
        if data:
            self._buffer.append(data)
            self._buffered += len(data)
        if self._buffered >= SPILL:
            await anyio.to_thread.run_sync(self._spill, limiter=self._limiter)

    def _spill(self) -> None:
        if self._fd is None:
            self._fd, self._tmp = self._store.open_tmp(self._recipients[0])
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        write_all(self._fd, data)

    async def commit(self) -> str:
        """Write the rest, fsync, link into every recipient's new/; returns the message id."""
        tail = self._lines.finish()
        if tail:
            self._buffer.append(tail)
        return await anyio.to_thread.run_sync(self._commit, limiter=self._limiter)

    def _commit(self) -> str:
        self._spill()
        assert self._fd is not None and self._tmp is not None
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        name = self._store.link_into_new(
            self._tmp, self._recipients, self._lines.stored, self._lines.stored + self._lines.lfs
        )
        self._tmp = None
        return name

    async def abort(self) -> None:
        """Remove the tmp file, if any; safe to call at any point and more than once."""
        if self._fd is None and self._tmp is None:
            return
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._abort, limiter=self._limiter)

    def _abort(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
