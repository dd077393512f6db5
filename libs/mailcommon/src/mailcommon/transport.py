"""A lean HTTP/1.1 keep-alive transport for httpx, for the front ends' calls to the mailstore.

httpcore's pool costs more CPU per request than the mailstore spends answering it (measured:
1.5-3 ms per 4 KiB delivery on the project's 2-core machine; this transport: a fraction of that),
and smtp-in and pop3 make one such call per message or batch. It speaks just what the internal API
needs: one ``http://`` origin, requests with a length or chunked bodies, responses with
``Content-Length``, chunked or close-delimited bodies. Bodies are read whole, except a
``Content-Length`` body over :data:`STREAM_ABOVE` octets (pop3's RETR of a big message), which is
handed to httpx as a stream read from the socket as the caller iterates; its connection (and its
slot) stays taken until the response is closed, and goes back to the pool only when the body was
read to the end. Errors are httpx's own exception classes, so ``MailstoreClient`` maps them
exactly as before.

Besides httpx's transport interface, :meth:`LeanTransport.request` sends a request given as bytes and
returns the response read whole, without building httpx's request and response objects: the
client's URL merging, header and cookie handling cost the front ends more CPU per call than the
exchange itself (a POP3 login makes two such calls, an SMTP message one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass

import httpx

from mailcommon.streams import drain_within

MAX_HEADER_LINE = 64 * 1024
MAX_HEADERS = 100
#: Bodies with a Content-Length above this are streamed, not read whole.
STREAM_ABOVE = 256 * 1024
#: Most octets one read of a streamed body returns.
STREAM_CHUNK = 64 * 1024


Timeouts = dict[str, float | None]


@dataclass(frozen=True)
class RawResponse:
    """A response read whole: status, headers (names lower-cased) and body."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


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
        await self._take_slot(timeouts)
        response: httpx.Response | None = None
        try:
            payload = await _serialize(request)
            status, headers, body, conn, keep = await self._roundtrip(
                request.url, request.method, payload, timeouts, stream_above=STREAM_ABOVE
            )
            # A stream in both cases, as from any transport: a body read whole can still be
            # iterated with ``aiter_raw`` (pop3 streams messages over 64 KiB that way).
            content: httpx.AsyncByteStream
            if isinstance(body, int):  # a long body: read as the caller iterates
                assert conn is not None
                content = _BodyStream(self, conn, body, keep, timeouts.get("read"))
            else:
                content = httpx.ByteStream(body)
            response = httpx.Response(
                status,
                headers=headers,
                stream=content,
                request=request,
                extensions={"http_version": b"HTTP/1.1"},
            )
            return response
        finally:
            # A streamed body keeps its connection and slot until it is closed.
            if response is None or not isinstance(response.stream, _BodyStream):
                self._slots.release()

    async def request(
        self,
        origin: httpx.URL,
        method: str,
        target: str,
        *,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeouts: Timeouts,
    ) -> RawResponse:
        """``method target`` on ``origin`` with a ``Content-Length`` body (``Host`` and
        ``Content-Length`` are added); the response read whole. Raises httpx's errors."""
        host = origin.netloc
        head = [f"{method} {target} HTTP/1.1\r\n".encode(), b"Host: " + host + b"\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        await self._take_slot(timeouts)
        try:
            status, fields, content, _, _ = await self._roundtrip(
                origin, method, [b"".join(head), body], timeouts, stream_above=None
            )
        finally:
            self._slots.release()
        assert isinstance(content, bytes)
        return RawResponse(status, {name.lower(): value for name, value in fields}, content)

    async def _take_slot(self, timeouts: Timeouts) -> None:
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free connection to the mailstore") from exc

    async def _roundtrip(
        self,
        origin: httpx.URL,
        method: str,
        payload: list[bytes],
        timeouts: Timeouts,
        *,
        stream_above: int | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes | int, _Connection | None, bool]:
        """Status, headers, body (or, for a body left to stream, its length, with the
        connection it is to be read from and whether that may be reused afterwards)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._exchange(
                    conn, method, payload, timeouts, stream_above=stream_above, reused=True
                )
            except _StaleConnection:
                continue  # the server closed it while idle; it never saw this request
        conn = await self._connect(origin, timeouts.get("connect"))
        try:
            return await self._exchange(
                conn, method, payload, timeouts, stream_above=stream_above, reused=False
            )
        except _StaleConnection as exc:
            raise httpx.RemoteProtocolError(
                "server closed the connection without a response"
            ) from exc

    async def _connect(self, url: httpx.URL, limit: float | None) -> _Connection:
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
        method: str,
        payload: list[bytes],
        timeouts: Timeouts,
        *,
        stream_above: int | None,
        reused: bool,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes | int, _Connection | None, bool]:
        keep = False
        streaming = False
        try:
            try:
                conn.writer.writelines(payload)
                await drain_within(conn.writer, timeouts.get("write"))
            except TimeoutError as exc:
                raise httpx.WriteTimeout("writing to the mailstore") from exc
            except OSError as exc:
                if reused:
                    raise _StaleConnection from exc
                raise httpx.WriteError(str(exc)) from exc
            try:
                async with asyncio.timeout(timeouts.get("read")):
                    status, headers, body, keep = await _read_response(
                        conn.reader, method, reused, stream_above
                    )
            except TimeoutError as exc:
                raise httpx.ReadTimeout("waiting for the mailstore") from exc
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            except ValueError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            streaming = isinstance(body, int)
        finally:
            if streaming:
                pass  # the stream gives the connection back (or closes it) when it is closed
            elif keep:
                self._idle.append(conn)
            else:
                conn.close()
        return status, headers, body, (conn if streaming else None), keep

    def _finished(self, conn: _Connection, reusable: bool) -> None:
        """A streamed body was closed: pool its connection if it was read to the end."""
        if reusable and conn.usable():
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()


class _BodyStream(httpx.AsyncByteStream):
    """A Content-Length body read from the connection chunk by chunk, as the caller iterates."""

    def __init__(
        self,
        transport: LeanTransport,
        conn: _Connection,
        length: int,
        keep: bool,
        read_timeout: float | None,
    ) -> None:
        self._transport = transport
        self._conn = conn
        self._remaining = length
        self._keep = keep
        self._timeout = read_timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        while self._remaining > 0:
            try:
                async with asyncio.timeout(self._timeout):
                    chunk = await reader.read(min(STREAM_CHUNK, self._remaining))
            except TimeoutError as exc:
                raise httpx.ReadTimeout("waiting for the mailstore") from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            if not chunk:
                raise httpx.ReadError("connection closed inside the response body")
            self._remaining -= len(chunk)
            yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport._finished(self._conn, self._keep and self._remaining == 0)


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
    reader: asyncio.StreamReader, method: str, reused: bool, stream_above: int | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes | int, bool]:
    """Status, headers, the body (or, for a Content-Length body over ``stream_above``, its
    length: the caller streams it) and whether the connection may be reused."""
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
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = await _read_chunked(reader)
    elif b"content-length" in fields:
        length = int(fields[b"content-length"])
        if length < 0:
            raise ValueError("negative Content-Length")
        if stream_above is not None and length > stream_above:
            return status, headers, length, keep
        body = await reader.readexactly(length)
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
