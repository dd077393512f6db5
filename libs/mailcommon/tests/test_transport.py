"""LeanTransport's HTTP/1.1: chunked and close-delimited bodies, keep-alive, stale connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from mailcommon.transport import LeanTransport

Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return head, body
    return head, await reader.readexactly(length)


async def serve(responder: Responder) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(responder, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_content_length_chunked_and_keepalive() -> None:
    connections = 0

    async def responder(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            if head.startswith(b"GET /chunked"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nT: 1\r\n\r\n"
                )
            else:
                reply = b"echo:" + body
                writer.write(
                    b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply)
                )
            await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(responder)
        async with httpx.AsyncClient(transport=LeanTransport(2), base_url=url) as client:
            r = await client.get("/chunked")
            assert (r.status_code, r.content) == (200, b"abcde")
            r = await client.post("/x", content=b"hello")
            assert (r.status_code, r.content) == (201, b"echo:hello")

            async def parts() -> AsyncIterator[bytes]:
                yield b"stream"
                yield b"ed"

            r = await client.post("/y", content=parts())
            assert r.content == b"echo:streamed"
            results = await asyncio.gather(
                *(client.post("/z", content=str(i).encode()) for i in range(10))
            )
            assert sorted(r.content for r in results) == sorted(b"echo:%d" % i for i in range(10))
        assert connections <= 2  # kept alive and reused, never more than the limit
        server.close()

    asyncio.run(main())


def test_close_delimited_body_and_stale_idle_connection() -> None:
    async def responder(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if head.startswith(b"GET /close"):
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        else:
            # Answer keep-alive, then close the idle connection (as uvicorn does after 5 s).
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(responder)
        async with httpx.AsyncClient(transport=LeanTransport(1), base_url=url) as client:
            r = await client.get("/close")
            assert r.content == b"until the end"
            for _ in range(3):  # each time the pooled connection has been closed by the server
                r = await client.get("/ok")
                assert r.content == b"ok"
                await asyncio.sleep(0.05)
        server.close()

    asyncio.run(main())


def test_errors_are_httpx_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP/1.0 nonsense\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(silent)
        async with httpx.AsyncClient(
            transport=LeanTransport(1), base_url=url, timeout=0.3
        ) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/")
        server.close()
        server, url = await serve(garbage)
        async with httpx.AsyncClient(transport=LeanTransport(1), base_url=url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/")
        server.close()
        port = url.rsplit(":", 1)[1]
        await server.wait_closed()
        async with httpx.AsyncClient(
            transport=LeanTransport(1), base_url=f"http://127.0.0.1:{port}"
        ) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("/")

    asyncio.run(main())
