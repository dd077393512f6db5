"""RETR and TOP: the stored message (LF line ends) streamed as a POP3 multi-line response.

Every LF becomes CRLF, every line beginning with ``.`` gets one more ``.`` (the first line too),
a final CRLF is added when the message lacks one, then the terminating ``.CRLF``. The encoder
works chunk by chunk with one bit of state (are we at the start of a line?), so a message is never
held whole; :func:`stream_message` writes each chunk and waits for the socket to drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable

TERMINATOR = b".\r\n"


class DotStuffer:
    """LF→CRLF and byte-stuffing over a stream of chunks."""

    __slots__ = ("at_line_start",)

    def __init__(self) -> None:
        self.at_line_start = True

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        out = chunk.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
        if self.at_line_start and chunk[:1] == b".":
            out = b"." + out
        self.at_line_start = chunk[-1:] == b"\n"
        return out

    def finish(self) -> bytes:
        """What ends the response: a CRLF if the message did not end with one, then ``.``."""
        return TERMINATOR if self.at_line_start else b"\r\n" + TERMINATOR


class TopLimiter:
    """Cuts a stored message (LF form) after the header, the blank line and ``lines`` body lines."""

    __slots__ = ("done", "in_header", "prev_lf", "remaining")

    def __init__(self, lines: int) -> None:
        self.remaining = lines
        self.in_header = True
        self.prev_lf = True  # the start of the message counts as the start of a line
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        if self.done or not chunk:
            return b""
        pos = 0
        if self.in_header:
            if self.prev_lf and chunk[:1] == b"\n":
                pos = 1
            else:
                idx = chunk.find(b"\n\n")
                if idx < 0:
                    self.prev_lf = chunk[-1:] == b"\n"
                    return chunk
                pos = idx + 2
            self.in_header = False
        while self.remaining > 0:
            idx = chunk.find(b"\n", pos)
            if idx < 0:
                return chunk
            self.remaining -= 1
            pos = idx + 1
        self.done = True
        return chunk[:pos]


def encoded_size(stored: bytes) -> int:
    """The size POP3 reports for a stored message: octets with CRLF line ends (``W``)."""
    size = len(stored) + stored.count(b"\n")
    return size if stored.endswith(b"\n") or not stored else size + 2


async def stream_message(
    chunks: AsyncIterable[bytes],
    writer: asyncio.StreamWriter,
    top_lines: int | None = None,
    drain: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Write the encoded message and its terminator; returns the octets written.

    ``top_lines`` None sends the whole message (RETR); a number sends the header and that many
    body lines (TOP). ``drain`` replaces ``writer.drain`` (e.g. one with a timeout). Back-pressure: after each chunk the writer is drained, so a slow reader holds
    at most the transport's high-water mark plus one chunk.
    """
    wait = drain if drain is not None else writer.drain
    stuffer = DotStuffer()
    limiter = TopLimiter(top_lines) if top_lines is not None else None
    written = 0
    async for raw in chunks:
        data = stuffer.feed(limiter.feed(raw) if limiter is not None else raw)
        if data:
            writer.write(data)
            written += len(data)
            await wait()
        if limiter is not None and limiter.done:
            break
    tail = stuffer.finish()
    writer.write(tail)
    await wait()
    return written + len(tail)


def encode_message(stored: bytes, top_lines: int | None = None) -> bytes:
    """The whole response body for ``stored`` at once (tests and small messages)."""
    stuffer = DotStuffer()
    if top_lines is not None:
        stored = TopLimiter(top_lines).feed(stored)
    return stuffer.feed(stored) + stuffer.finish()
