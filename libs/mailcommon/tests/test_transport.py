"""LeanTransport's HTTP/1.1: chunked and close-delimited bodies, keep-alive, stale connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from mailcommon.transport import STREAM_ABOVE, STREAM_CHUNK, LeanTransport

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


class KeepAlive:
    """A responder answering every request of a connection with ``answer(head, body)``, until the
    client closes it; counts the connections it was given."""

    def __init__(self, answer: Callable[[bytes, bytes], bytes]) -> None:
        self.answer = answer
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(self.answer(head, body))
            await writer.drain()
        writer.close()


def test_content_length_chunked_and_keepalive() -> None:
    def answer(head: bytes, body: bytes) -> bytes:
        if head.startswith(b"GET /chunked"):
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nT: 1\r\n\r\n"
        reply = b"echo:" + body
        return b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply)

    responder = KeepAlive(answer)

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
        assert responder.connections <= 2  # kept alive and reused, never more than the limit
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


def test_long_bodies_are_streamed_and_the_connection_comes_back() -> None:
    """A Content-Length body over STREAM_ABOVE is read as the caller iterates; read to the end,
    its connection is reused; closed early, it is dropped; meanwhile it holds its slot."""
    size = 5 * 1024 * 1024 + 7
    blob = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    connections = 0
    closed_early = asyncio.Event()

    async def responder(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head, _ = await read_request(reader)
                body = blob if head.startswith(b"GET /big") else b"small"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            closed_early.set()
        writer.close()

    async def main() -> None:
        server, url = await serve(responder)
        transport = LeanTransport(1)
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            async with client.stream("GET", "/big") as response:
                assert response.headers["content-length"] == str(size)
                chunks = [chunk async for chunk in response.aiter_raw()]
            assert b"".join(chunks) == blob
            assert len(chunks) > 1 and max(len(c) for c in chunks) <= STREAM_CHUNK
            r = await client.get("/small")  # read whole, on the same connection
            assert r.content == b"small" and connections == 1
            async with client.stream("GET", "/small") as response:  # read whole, iterable
                assert b"".join([c async for c in response.aiter_raw()]) == b"small"
            r = await client.get("/big")  # not streamed by the caller: httpx reads it all
            assert r.content == blob and connections == 1
            async with client.stream("GET", "/big") as response:
                # the only slot is taken while the body is open
                with pytest.raises(httpx.PoolTimeout):
                    await client.get("/small", timeout=httpx.Timeout(5, pool=0.2))
                async for _ in response.aiter_raw():
                    break  # stop early: the rest is never read
            await asyncio.wait_for(closed_early.wait(), 5)  # that connection was closed
            r = await client.get("/small")
            assert r.content == b"small" and connections == 2
        server.close()

    asyncio.run(main())


def test_a_streamed_body_cut_short_is_a_read_error() -> None:
    async def responder(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (STREAM_ABOVE * 4))
        writer.write(b"y" * (STREAM_ABOVE + 1))
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(responder)
        async with httpx.AsyncClient(transport=LeanTransport(1), base_url=url) as client:
            got = 0
            with pytest.raises(httpx.ReadError):
                async with client.stream("GET", "/") as response:
                    async for chunk in response.aiter_raw():
                        got += len(chunk)
            assert got == STREAM_ABOVE + 1
            with pytest.raises(httpx.ReadError):  # read whole by httpx: the same error
                await client.get("/")
        server.close()

    asyncio.run(main())


TIMEOUTS: dict[str, float | None] = {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0}


def test_raw_requests_share_the_pool_and_read_long_bodies_whole() -> None:
    seen: list[bytes] = []
    long_body = b"L" * (STREAM_ABOVE + 10)

    def answer(head: bytes, body: bytes) -> bytes:
        seen.append(head)
        reply = long_body if head.startswith(b"GET /long") else b"echo:" + body
        return b"HTTP/1.1 200 OK\r\nX-Sizes: 1,2\r\nContent-Length: %d\r\n\r\n%s" % (
            len(reply),
            reply,
        )

    responder = KeepAlive(answer)

    async def main() -> None:
        server, url = await serve(responder)
        transport = LeanTransport(1)
        origin = httpx.URL(url)
        headers = [(b"Authorization", b"Bearer t")]
        r = await transport.request(
            origin, "POST", "/a?x=1", headers=headers, body=b"hi", timeouts=TIMEOUTS
        )
        assert (r.status, r.body, r.headers[b"x-sizes"]) == (200, b"echo:hi", b"1,2")
        r = await transport.request(
            origin, "GET", "/long", headers=headers, body=b"", timeouts=TIMEOUTS
        )
        assert r.body == long_body  # never streamed on this path
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            assert (await client.post("/b", content=b"x")).content == b"echo:x"
        assert responder.connections == 1  # one keep-alive connection served all three
        assert seen[0].startswith(b"POST /a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n" in seen[0]
        server.close()
        await server.wait_closed()
        with pytest.raises(httpx.ConnectError):  # errors are httpx's, as on the httpx path
            await transport.request(origin, "GET", "/", headers=[], body=b"", timeouts=TIMEOUTS)
        await transport.aclose()

    asyncio.run(main())
