"""Listeners behind a balancer (``PROXY_PROTOCOL=true``): the PROXY header, then the session.

The balancer sends its header before anything of the client's, on port 995 before the TLS
handshake. So the header is read from the raw accepted socket (:class:`mailcommon.proxy.SocketReader`
takes it and not an octet more), and only then does the socket become a stream, with TLS on the
implicit-TLS port (``loop.connect_accepted_socket``, as ``asyncio.start_server`` would have made
it). A peer outside the trusted networks, or no valid header in time: closed without a greeting.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable

from mailcommon.logging import get_logger
from mailcommon.proxy import Address, ProxyPolicy, SocketReader

from pop3d.protocol import READER_LIMIT

log = get_logger(__name__)

#: What serves a connection once its client is known: (reader, writer, tls_port, client).
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bool, Address], Awaitable[None]]
#: Pause after a failed accept (out of file descriptors): the backlog waits meanwhile.
ACCEPT_BACKOFF = 0.1


class ProxiedListener:
    """One listening socket whose connections start with a PROXY header."""

    def __init__(
        self,
        host: str,
        port: int,
        backlog: int,
        *,
        policy: ProxyPolicy,
        tls: ssl.SSLContext | None,
        handshake_timeout: float,
        serve: Serve,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=backlog)
        self.sock.setblocking(False)
        self._policy, self._tls, self._handshake_timeout = policy, tls, handshake_timeout
        self._serve = serve
        self._tasks = tasks
        self._accepting: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        self.sock.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:
                log.warning("accept_failed", error=str(exc))
                await asyncio.sleep(ACCEPT_BACKOFF)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._connection(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connection(self, conn: socket.socket) -> None:
        try:
            host, port = conn.getpeername()[:2]
        except OSError:
            conn.close()
            return
        peer: Address = (str(host), int(port))
        client = None
        reason = "untrusted"
        if self._policy.may_connect(peer[0]):
            client = self._policy.client(await self._policy.read(SocketReader(conn)), peer)
            reason = "proxy_header"
        if client is None:
            log.info("refusal", peer=f"{peer[0]}:{peer[1]}", reason=reason)
            conn.close()
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READER_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout if self._tls else None,
            )
        except (OSError, TimeoutError) as exc:  # the TLS handshake failed or timed out
            log.debug("handshake_failed", peer=f"{client[0]}:{client[1]}", error=str(exc))
            with contextlib.suppress(OSError):
                conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await self._serve(reader, writer, self._tls is not None, client)
