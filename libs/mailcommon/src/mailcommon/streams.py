"""Writing to asyncio streams without paying for back-pressure that is not there."""

from __future__ import annotations

import asyncio


async def drain_within(writer: asyncio.StreamWriter, seconds: float | None) -> None:
    """Wait, at most ``seconds`` (``TimeoutError``), for the socket to take what was written.

    Mostly the kernel took it all in the ``write`` itself: then this returns at once, without the
    timer ``asyncio.timeout`` would schedule and cancel (one per reply or request, on hot paths).
    A transport that is closing still goes through ``drain``, which raises the connection's error.
    """
    transport = writer.transport
    if transport.get_write_buffer_size() == 0 and not transport.is_closing():
        return
    async with asyncio.timeout(seconds):
        await writer.drain()
