"""A lean HTTP/1.1 keep-alive transport for httpx, used for smtp-in's calls to the mailstore.

httpcore's pool costs more CPU per request than the mailstore spends answering it (measured:
1.5-3 ms per 4 KiB delivery on the project's 2-core machine; this transport: a fraction of that),
and smtp-in makes one such call per message. It speaks just what the internal API needs: one
``http://`` origin, requests with a length or chunked bodies, responses with ``Content-Length``,
chunked or close-delimited bodies, read whole (smtp-in never streams a response). Errors are
httpx's own exception classes, so ``MailstoreClient`` maps them exactly as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable

import httpx

MAX_HEADER_LINE = 64 * 1024
MAX_HEADERS = 100


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        """Still open, and the server has sent nothing we did not ask for (e.g. EOF)."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive connections to one origin, at most ``max_connections`` at once."""

    def __init__(self, max_connections: int = 8) -> None:
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        pool_timeout = timeouts.get("pool")
        try:
            async with asyncio.timeout(pool_timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free connection to the mailstore") from exc
        try:
            return await self._send(request, timeouts)
        finally:
            self._slots.release()

    async def _send(
        self, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        payload = await _serialize(request)
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._exchange(conn, request, payload, timeouts, reused=True)
            except _StaleConnection:
                continue  # the server closed it while idle; it never saw this request
        conn = await self._connect(request, timeouts.get("connect"))
        try:
            return await self._exchange(conn, request, payload, timeouts, reused=False)
        except _StaleConnection as exc:
            raise httpx.RemoteProtocolError(
                "server closed the connection without a response"
            ) from exc

    async def _connect(self, request: httpx.Request, limit: float | None) -> _Connection:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"LeanTransport speaks http only, not {url.scheme}")
        try:
            async with asyncio.timeout(limit):
                reader, writer = await asyncio.open_connection(url.host, url.port or 80)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {url.host}:{url.port}") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{url.host}:{url.port}: {exc}") from exc
        return _Connection(reader, writer)

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        payload: list[bytes],
        timeouts: dict[str, float | None],
        *,
        reused: bool,
    ) -> httpx.Response:
        keep = False
        try:
            try:
                conn.writer.writelines(payload)
                async with asyncio.timeout(timeouts.get("write")):
                    await conn.writer.drain()
            except TimeoutError as exc:
                raise httpx.WriteTimeout("writing to the mailstore") from exc
            except OSError as exc:
                if reused:
                    raise _StaleConnection from exc
                raise httpx.WriteError(str(exc)) from exc
            try:
                async with asyncio.timeout(timeouts.get("read")):
                    status, headers, body, keep = await _read_response(conn.reader, request, reused)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("waiting for the mailstore") from exc
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            except ValueError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
        finally:
            if keep:
                self._idle.append(conn)
            else:
                conn.close()
        return httpx.Response(
            status,
            headers=headers,
            content=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )


class _StaleConnection(Exception):
    """A reused connection closed before any octet of the response arrived."""


async def _serialize(request: httpx.Request) -> list[bytes]:
    url = request.url
    target = url.raw_path or b"/"
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in request.headers.raw]
    lines.append(b"\r\n")
    chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
    stream = request.stream
    if isinstance(stream, AsyncIterable):
        chunks = [bytes(c) async for c in stream]
    else:
        assert isinstance(stream, Iterable)
        chunks = [bytes(c) for c in stream]
    if chunked:
        for chunk in chunks:
            if chunk:
                lines += [f"{len(chunk):x}\r\n".encode(), chunk, b"\r\n"]
        lines.append(b"0\r\n\r\n")
    else:
        lines += chunks
    return lines


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if len(line) > MAX_HEADER_LINE:
        raise ValueError("response header line too long")
    return line


async def _read_response(
    reader: asyncio.StreamReader, request: httpx.Request, reused: bool
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    status_line = await _read_line(reader)
    if not status_line:
        if reused:
            raise _StaleConnection
        raise httpx.RemoteProtocolError("server closed the connection without a response")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    headers: list[tuple[bytes, bytes]] = []
    while True:
        line = await _read_line(reader)
        if not line:
            raise ValueError("connection closed inside the response headers")
        if line in (b"\r\n", b"\n"):
            break
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"bad header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
        if len(headers) > MAX_HEADERS:
            raise ValueError("too many response headers")
    fields = {name.lower(): value for name, value in headers}
    keep = fields.get(b"connection", b"").lower() != b"close" and parts[0] == b"HTTP/1.1"
    if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = await _read_chunked(reader)
    elif b"content-length" in fields:
        body = await reader.readexactly(int(fields[b"content-length"]))
    else:
        body = await reader.read()
        keep = False
    return status, headers, body, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await _read_line(reader)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await _read_line(reader)) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
