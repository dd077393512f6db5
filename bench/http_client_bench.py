"""CPU per request of the front ends' HTTP client candidates, against a real uvicorn on loopback.

Starts uvicorn (httptools, as the mailstore runs) in a child process with a tiny ASGI app that
answers like the mailstore's internal API (``POST /deliveries`` of a 4 KiB message -> small JSON,
``GET /recipients/x`` -> small JSON), then, for each client candidate and concurrency, sends
``--requests`` calls over keep-alive connections (pool of 8) and reports the CPU time of this
(the client's) process per call, from ``resource.getrusage``: user + system, in microseconds.
Wall-clock rates on a shared machine are noise; CPU per call is what the front ends pay.

Candidates:

- ``httpx``:       ``httpx.AsyncClient`` with its defaults (httpcore's pool, HTTP/1.1);
- ``httpx-tuned``: ``httpx.AsyncClient(limits=8/8, trust_env=False)``, ``client.post(...)``;
- ``httpcore``:    httpcore's ``AsyncConnectionPool.request`` directly (no httpx client layer);
- ``aiohttp``:     ``aiohttp.ClientSession`` over a ``TCPConnector(limit=8)``;
- ``h11``:         h11 under a minimal pool of asyncio streams written for this bench;
- ``MailstoreClient``: the front ends' client as shipped (aiohttp), ``deliver`` and
  ``recipient``, so what it adds to its library is measured too.

    uv run python bench/http_client_bench.py [--requests 3000] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import h11
import httpcore
import httpx
import uvicorn
from mailcommon.client import MailstoreClient
from mailstack.ports import free_port

MESSAGE = b"x" * 4096
TOKEN = "Bearer " + "t" * 40
Call = Callable[[int], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The mailstore's shape, without its work: read the body, answer ~100 octets of JSON."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        event = await receive()
        size += len(event.get("body", b""))
        if not event.get("more_body"):
            break
    body = json.dumps(
        {
            "id": "1700000000.M1P1Q1.host",
            "recipients": ["a"],
            "size": size,
            "accounts": ["a@a.test"],
            "limited": False,
        }
    )
    payload = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def serve(port: int) -> None:
    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", log_level="warning")


class H11Pool:
    """Keep-alive h11 connections to one origin (the bench's "own small pool")."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: collections.deque[
            tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]
        ] = collections.deque()
        self.slots = asyncio.Semaphore(size)

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes]:
        async with self.slots:
            while self.idle:  # skip connections the server closed while idle (5 s in uvicorn)
                reader, writer, conn = self.idle.pop()
                if not reader.at_eof() and not writer.is_closing():
                    break
                writer.close()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                conn = h11.Connection(h11.CLIENT)
            all_headers = [
                ("Host", f"{self.host}:{self.port}"),
                ("Content-Length", str(len(body))),
                *headers,
            ]
            writer.write(conn.send(h11.Request(method=method, target=target, headers=all_headers)))
            if body:
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            status, chunks = 0, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                self.idle.append((reader, writer, conn))
            else:
                writer.close()
            return status, b"".join(chunks)


async def make_clients(
    base: str, port: int
) -> dict[str, tuple[Call, Callable[[], Awaitable[Any]]]]:
    headers = {"Authorization": TOKEN}
    hx = httpx.AsyncClient(base_url=base, headers=headers)
    hxt = httpx.AsyncClient(
        base_url=base,
        headers=headers,
        limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        trust_env=False,
    )
    core = httpcore.AsyncConnectionPool(max_connections=8)
    session = aiohttp.ClientSession(
        base,
        headers=headers,
        connector=aiohttp.TCPConnector(limit=8),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
    )
    h11pool = H11Pool("127.0.0.1", port, 8)
    mailstore = MailstoreClient(base, "t" * 40, max_connections=8)
    raw_headers = [(b"Authorization", TOKEN.encode())]

    async def via_httpx(i: int, client: httpx.AsyncClient = hx) -> None:
        if i % 2:
            r = await client.post("/deliveries?recipient=a", content=MESSAGE)
        else:
            r = await client.get("/recipients/a")
        assert r.status_code == 200, r.status_code
        r.json()

    async def via_httpx_tuned(i: int) -> None:
        await via_httpx(i, hxt)

    async def via_httpcore(i: int) -> None:
        if i % 2:
            r = await core.request(
                "POST", base + "/deliveries?recipient=a", headers=raw_headers, content=MESSAGE
            )
        else:
            r = await core.request("GET", base + "/recipients/a", headers=raw_headers)
        assert r.status == 200
        json.loads(r.content)

    async def via_aiohttp(i: int) -> None:
        if i % 2:
            ctx = session.post("/deliveries", params={"recipient": "a"}, data=MESSAGE)
        else:
            ctx = session.get("/recipients/a")
        async with ctx as r:
            assert r.status == 200
            json.loads(await r.read())

    async def via_h11(i: int) -> None:
        h = [("Authorization", TOKEN)]
        if i % 2:
            status, body = await h11pool.request("POST", "/deliveries?recipient=a", h, MESSAGE)
        else:
            status, body = await h11pool.request("GET", "/recipients/a", h, b"")
        assert status == 200
        json.loads(body)

    async def via_mailstore_client(i: int) -> None:
        if i % 2:
            await mailstore.deliver(["a"], MESSAGE, idempotency_key=f"{i:016x}")
        else:
            assert (await mailstore.recipient("a@a.test")).accounts

    async def noop() -> None:
        return None

    return {
        "httpx": (via_httpx, hx.aclose),
        "httpx-tuned": (via_httpx_tuned, hxt.aclose),
        "httpcore": (via_httpcore, core.aclose),
        "aiohttp": (via_aiohttp, session.close),
        "h11": (via_h11, noop),
        "MailstoreClient": (via_mailstore_client, mailstore.aclose),
    }


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(call: Call, requests: int, concurrency: int) -> tuple[float, float]:
    """CPU µs per call and calls/s (wall) of ``requests`` calls, ``concurrency`` at a time."""
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            await call(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the pool
    counter = iter(range(requests))
    cpu0, t0 = cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (cpu() - cpu0) / requests * 1e6, requests / (time.perf_counter() - t0)


async def main(args: argparse.Namespace, port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    clients = await make_clients(f"http://127.0.0.1:{port}", port)
    try:
        names = args.clients or list(clients)
        for concurrency in args.concurrency:
            for _ in range(args.rounds):
                for name in names:
                    call, _ = clients[name]
                    us, rate = await run(call, args.requests, concurrency)
                    print(
                        f"{name:<15} c={concurrency:<2} {us:7.0f} µs CPU/call  {rate:7.0f} calls/s"
                    )
    finally:
        for _, close in clients.values():
            await close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2, help="passes over the candidates")
    parser.add_argument("--clients", nargs="+", help="only these candidates")
    cli = parser.parse_args()
    if cli.serve:
        serve(cli.serve)
    else:
        server_port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(server_port)])
        try:
            asyncio.run(main(cli, server_port))
        finally:
            server.terminate()
            server.wait()
