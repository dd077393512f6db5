"""The PROXY protocol (HAProxy's, v1 and v2) in front of smtp-in and pop3: one policy for both.

The header is parsed by aiosmtpd's own parser (:func:`aiosmtpd.proxy_protocol.get_proxy`, both
versions). :class:`ProxyPolicy` decides what a connection's header is worth: from a peer in
``PROXY_TRUSTED_NETWORKS`` a valid header names the client, and that address is what every
limit, throttle, log line and trace header uses; a v2 ``LOCAL`` header (the balancer's own health
check) or a v1 ``UNKNOWN`` one keeps the real peer. A peer outside the trusted networks, or a
header missing or invalid, closes the connection before the greeting. A loopback peer may always
send ``LOCAL`` (the container's own health check, :mod:`mailcommon.healthcheck`): its address is
then its own, so it cannot pass for anyone else.

:class:`SocketReader` reads the header from a raw accepted socket without consuming a byte more,
so pop3 can start TLS on port 995 after it (the balancer sends the header before the handshake).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from aiosmtpd.proxy_protocol import AF, V2_CMD, V2_SIGNATURE, ProxyData, get_proxy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = tuple[str, int]

#: A v2 header with the LOCAL command: "no client behind me, use the connection's own address".
LOCAL_HEADER = V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
#: The longest v1 header (HAProxy's proxy-protocol.txt, 2.1); v2 carries its own length.
V1_MAX = 107


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, fd00::/8"`` as networks; a host address alone is its own /32 or /128."""
    networks = []
    for part in text.replace(" ", ",").split(","):
        if part:
            try:
                networks.append(ipaddress.ip_network(part))
            except ValueError as exc:
                raise ValueError(f"PROXY_TRUSTED_NETWORKS: {part!r}: {exc}") from None
    return tuple(networks)


def normalize_ip(text: str) -> str:
    """The address as written everywhere else: an IPv4-mapped IPv6 address as plain IPv4."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True)
class ProxyPolicy:
    """Who may send a PROXY header, and how long the header may take to arrive."""

    trusted: tuple[IPNetwork, ...]
    timeout: float

    def trusts(self, ip: str) -> bool:
        """Whether ``ip`` is a balancer whose headers are believed."""
        try:
            address = ipaddress.ip_address(normalize_ip(ip))
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def may_connect(self, ip: str) -> bool:
        """Whether a connection from ``ip`` is worth reading a header from (else: close now)."""
        return self.trusts(ip) or _is_loopback(ip)

    def client(self, data: ProxyData | None, peer: Address) -> Address | None:
        """The client's address for this connection, or None when it must be closed."""
        if data is None or not data.valid:
            return None
        if data.command == V2_CMD.LOCAL or data.family == AF.UNSPEC:
            # The balancer's own probe (v2 LOCAL; v1 UNKNOWN): the connection is the client.
            return peer if self.may_connect(peer[0]) else None
        if not self.trusts(peer[0]):
            return None
        if not isinstance(data.src_addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return None  # AF_UNIX on the balancer's side: no client address to go by
        return normalize_ip(str(data.src_addr)), int(data.src_port or 0)

    async def read(self, reader: SocketReader | asyncio.StreamReader) -> ProxyData | None:
        """The header, or None when none arrives complete within the timeout."""
        try:
            return await asyncio.wait_for(get_proxy(reader), self.timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            return None


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(normalize_ip(ip)).is_loopback
    except ValueError:
        return False


class SocketReader:
    """What :func:`get_proxy` reads with, over a non-blocking socket, never reading ahead.

    Every read takes at most the octets asked for; ``readuntil`` peeks (``MSG_PEEK``) and then
    takes the line up to its separator only. What follows the header stays in the kernel's
    buffer for whoever takes the socket over (a TLS handshake, a stream).
    """

    def __init__(self, sock: socket.socket, limit: int = V1_MAX) -> None:
        self._sock = sock
        self._limit = limit
        self._loop = asyncio.get_running_loop()

    async def read(self, n: int = -1) -> bytes:
        return await self._loop.sock_recv(self._sock, n if n > 0 else self._limit)

    async def readexactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = await self.read(n - len(data))
            if not chunk:
                raise asyncio.IncompleteReadError(data, n)
            data += chunk
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        taken = b""
        while True:
            await self._readable()
            peeked = self._sock.recv(self._limit - len(taken), socket.MSG_PEEK)
            if not peeked:
                raise asyncio.IncompleteReadError(taken, None)
            # The separator may straddle what was taken before and what is peeked now.
            seen = taken[-(len(separator) - 1) :] if len(separator) > 1 else b""
            end = (seen + peeked).find(separator)
            if end >= 0:
                return taken + await self.readexactly(end - len(seen) + len(separator))
            taken += await self.readexactly(len(peeked))  # holds no separator: safe to take
            if len(taken) >= self._limit:
                raise asyncio.LimitOverrunError("PROXY header line too long", len(taken))

    async def _readable(self) -> None:
        ready = self._loop.create_future()
        fd = self._sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_reader(fd)
