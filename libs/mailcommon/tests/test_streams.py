"""drain_within over real loopback sockets: at once when sent, a timeout for a reader that stalls."""

from __future__ import annotations

import asyncio
import time

import pytest
from mailcommon.streams import drain_within


async def _pair() -> tuple[asyncio.StreamWriter, asyncio.StreamReader, asyncio.AbstractServer]:
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(reader)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    return writer, await accepted.get(), server


def test_a_small_write_needs_no_wait() -> None:
    async def run() -> None:
        writer, reader, server = await _pair()
        writer.write(b"+OK\r\n")
        await drain_within(writer, 0.001)  # nothing buffered: returns, even with a tiny limit
        assert await reader.readexactly(5) == b"+OK\r\n"
        writer.close()
        server.close()

    asyncio.run(run())


def test_a_reader_that_stalls_meets_the_limit_and_one_that_reads_does_not() -> None:
    async def run() -> None:
        writer, reader, server = await _pair()
        data = b"x" * (64 * 1024 * 1024)  # far more than the kernel's socket buffers
        writer.write(data)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await drain_within(writer, 0.3)
        assert time.monotonic() - started < 5
        received = 0

        async def read_all() -> None:
            nonlocal received
            while received < len(data):
                received += len(await reader.read(1 << 20))

        await asyncio.gather(drain_within(writer, 30), read_all())
        assert writer.transport.get_write_buffer_size() == 0
        writer.close()
        server.close()

    asyncio.run(run())
