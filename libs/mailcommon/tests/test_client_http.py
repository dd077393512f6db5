"""MailstoreClient's HTTP over real sockets, against small servers that misbehave on purpose:
interim replies, an early 413, connections closed under a request, bodies without a bound."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from mailcommon.client import (
    IDEMPOTENCY_HEADER,
    MAX_RESPONSE,
    STREAM_CHUNK,
    MailstoreClient,
    MailstoreUnavailable,
    MessageTooLarge,
)

TOKEN = "s" * 40
DELIVERED = json.dumps({"id": "1.M1.host", "recipients": ["alice"], "size": 5}).encode()
RECIPIENT = json.dumps(
    {"address": "alice@a.test", "accounts": ["alice"], "limited": False}
).encode()
# One body for a server that answers every call alike: a delivery and a recipient in one.
EITHER = json.dumps({**json.loads(DELIVERED), **json.loads(RECIPIENT)}).encode()


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which connection (1, 2, ...) of the server it came on


def reply(status: int, body: bytes = b"{}", *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


@dataclass
class Exchange:
    """What a handler gets: the server, the request (its head; the handler reads the body, or
    not) and the connection's streams."""

    fake: FakeMailstore
    request: Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def read_body(self) -> bytes:
        length = int(self.request.headers.get("content-length", "0"))
        self.request.body = await self.reader.readexactly(length)
        return self.request.body


# A handler answers (or not) and returns whether to keep the connection open.
Handler = Callable[[Exchange], Awaitable[bool]]


@dataclass
class FakeMailstore:
    handler: Handler
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                method, target, headers = await read_head(reader)
                request = Request(method, target, headers, b"", number)
                self.requests.append(request)
                if not await self.handler(Exchange(self, request, reader, writer)):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def count(self, method: str) -> int:
        return sum(r.method == method for r in self.requests)


@asynccontextmanager
async def mailstore(
    handler: Handler, timeout: float = 5.0
) -> AsyncIterator[tuple[FakeMailstore, MailstoreClient]]:
    fake = FakeMailstore(handler)
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = MailstoreClient(f"http://127.0.0.1:{port}", TOKEN, timeout=timeout)
    try:
        yield fake, client
    finally:
        await client.aclose()
        server.close()


def test_interim_replies_are_skipped_for_the_final_one() -> None:
    async def handler(ex: Exchange) -> bool:
        body = await ex.read_body()
        ex.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        ex.writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        if b"big" in body:
            ex.writer.write(reply(413, b'{"error":{"code":"too_large","message":"big"}}'))
        else:
            ex.writer.write(reply(200, EITHER))
        await ex.writer.drain()
        return True

    async def run() -> None:
        async with mailstore(handler) as (fake, client):
            delivery = await client.deliver(["alice"], b"hello")
            assert (delivery.id, delivery.size) == ("1.M1.host", 5)
            with pytest.raises(MessageTooLarge):
                await client.deliver(["alice"], b"big one")
            assert (await client.recipient("alice")).accounts == ["alice"]
            assert fake.connections == 1  # the interim replies did not spoil the connection
            assert [r.body for r in fake.requests] == [b"hello", b"big one", b""]

    asyncio.run(run())


@pytest.mark.parametrize("then", ["stop_reading", "close"])
def test_an_early_413_during_the_upload_is_the_answer(then: str) -> None:
    """The mailstore answers 413 after the head of a large upload and reads no more of it: the
    client reports the 413, not the broken upload, whether the server then waits or closes."""

    async def handler(ex: Exchange) -> bool:
        ex.writer.write(
            reply(413, b'{"error":{"code":"too_large","message":"no"}}', "Connection: close")
        )
        await ex.writer.drain()
        if then == "stop_reading":
            await asyncio.sleep(1.0)
        return False

    async def run() -> None:
        async with mailstore(handler) as (fake, client):
            with pytest.raises(MessageTooLarge) as caught:
                await client.deliver(["alice"], b"x" * (32 * 1024 * 1024))
            assert caught.value.code == "too_large"
            assert fake.count("POST") == 1

    asyncio.run(run())


def answer_first_drop_second(answer: bytes) -> Handler:
    """A server that answers the first request of each connection (keep-alive) and closes the
    connection, without a reply, when a second request arrives on it: what a keep-alive timeout
    racing a new request looks like from the client."""

    async def handler(ex: Exchange) -> bool:
        await ex.read_body()
        number = ex.request.connection
        if sum(r.connection == number for r in ex.fake.requests) > 1:
            return False
        ex.writer.write(reply(200, answer))
        await ex.writer.drain()
        return True

    return handler


def test_a_stale_pooled_get_is_retried_on_a_new_connection() -> None:
    async def run() -> None:
        async with mailstore(answer_first_drop_second(RECIPIENT)) as (fake, client):
            assert (await client.recipient("alice")).accounts == ["alice"]
            assert (await client.recipient("alice")).accounts == [
                "alice"
            ]  # dropped on the pooled one, resent
            assert fake.count("GET") == 3
            assert fake.connections == 2

    asyncio.run(run())


def test_a_post_on_a_dropped_pooled_connection_is_not_resent() -> None:
    async def run() -> None:
        async with mailstore(answer_first_drop_second(EITHER)) as (fake, client):
            assert (await client.recipient("alice")).accounts == ["alice"]
            with pytest.raises(MailstoreUnavailable) as caught:
                await client.deliver(["alice"], b"hello")
            assert caught.value.code == "unreachable"
            assert fake.count("POST") == 1  # the mailstore may have stored it: never twice
            assert IDEMPOTENCY_HEADER.lower() not in fake.requests[-1].headers
            # verify_password is a POST too: the HTTP layer does not resend it either
            assert (await client.recipient("alice")).accounts == ["alice"]
            with pytest.raises(MailstoreUnavailable):
                await client.verify_password("alice", "pw")
            assert fake.count("POST") == 2

    asyncio.run(run())


def test_a_delivery_with_a_key_is_sent_once_more_after_a_drop() -> None:
    async def run() -> None:
        async with mailstore(answer_first_drop_second(EITHER)) as (fake, client):
            assert (await client.recipient("alice")).accounts == ["alice"]
            delivery = await client.deliver(["alice"], b"hello", idempotency_key="0123456789abcdef")
            assert delivery.id == "1.M1.host"
            posts = [r for r in fake.requests if r.method == "POST"]
            assert len(posts) == 2 and posts[0].connection != posts[1].connection
            for post in posts:
                assert post.headers[IDEMPOTENCY_HEADER.lower()] == "0123456789abcdef"
                assert post.body == b"hello"
                assert post.target == "/internal/v1/deliveries?recipient=alice"
                assert post.headers["authorization"] == f"Bearer {TOKEN}"

    asyncio.run(run())


def test_a_delivery_is_retried_once_only_and_never_after_a_timeout() -> None:
    async def drop(ex: Exchange) -> bool:
        await ex.read_body()
        return False  # every request: the connection closes without a reply

    async def silent(ex: Exchange) -> bool:
        await ex.read_body()
        await asyncio.sleep(3)
        return False

    async def run() -> None:
        async with mailstore(drop) as (fake, client):
            with pytest.raises(MailstoreUnavailable):
                await client.deliver(["alice"], b"hello", idempotency_key="k1")
            assert fake.count("POST") == 2
        async with mailstore(silent, timeout=0.3) as (fake, client):
            with pytest.raises(MailstoreUnavailable):
                await client.deliver(["alice"], b"hello", idempotency_key="k2")
            assert fake.count("POST") == 1

    asyncio.run(run())


@pytest.mark.parametrize("framing", ["chunked", "close", "length"])
def test_a_response_body_over_the_bound_is_refused(framing: str) -> None:
    """A body read whole is refused past MAX_RESPONSE octets however it is framed; the client
    stops reading (its memory stays bounded) and the next call works on a new connection."""
    total = MAX_RESPONSE + 1

    async def handler(ex: Exchange) -> bool:
        await ex.read_body()
        if ex.request.target.endswith("/small"):
            ex.writer.write(reply(200, RECIPIENT))
            await ex.writer.drain()
            return True
        piece = b"x" * 65536
        if framing == "length":
            ex.writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        elif framing == "chunked":
            ex.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            ex.writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        sent = 0
        while sent < 2 * total:  # more than the bound, whatever the framing claims
            ex.writer.write(
                b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece
            )
            await ex.writer.drain()
            sent += len(piece)
        return False

    async def run() -> None:
        async with mailstore(handler) as (_, client):
            with pytest.raises(MailstoreUnavailable) as caught:
                await client.recipient("alice")
            assert caught.value.code == "too_long"
            with pytest.raises(MailstoreUnavailable) as caught:
                async with client.open_message("alice", "m1") as message:
                    await message.aread()
            assert caught.value.code == "too_long"
            assert (await client.recipient("small")).accounts == ["alice"]

    asyncio.run(run())


def test_a_message_streams_in_bounded_pieces_past_the_bound() -> None:
    """open_message's aiter_raw is the way to read a long message: no total bound, pieces of at
    most STREAM_CHUNK octets, read as the caller asks."""
    blob = bytes(range(256)) * (3 * MAX_RESPONSE // 256)

    async def handler(ex: Exchange) -> bool:
        ex.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(blob), 300_000):
            part = blob[start : start + 300_000]
            ex.writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await ex.writer.drain()
        ex.writer.write(b"0\r\n\r\n")
        await ex.writer.drain()
        return True

    async def run() -> None:
        async with mailstore(handler) as (fake, client):
            async with client.open_message("alice", "m1") as message:
                pieces = [piece async for piece in message.aiter_raw()]
            assert b"".join(pieces) == blob
            assert max(len(p) for p in pieces) <= STREAM_CHUNK
            assert fake.requests[0].target == "/internal/v1/mailboxes/alice/messages/m1"

    asyncio.run(run())


def test_no_mailstore_is_unavailable() -> None:
    async def run() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = MailstoreClient(f"http://127.0.0.1:{port}", TOKEN)
        try:
            with pytest.raises(MailstoreUnavailable) as caught:
                await client.deliver(["alice"], b"hello", idempotency_key="k")
            assert caught.value.code == "unreachable"
        finally:
            await client.aclose()

    asyncio.run(run())
