"""The one DNS resolver of the checks: dnspython's asyncio resolver with its bounded LRU cache.

dnspython's ``LRUCache`` keeps positive and negative answers for their TTL (the SOA minimum for
NXDOMAIN and NODATA) and evicts the least recently used beyond ``cache_size``; it is thread-safe, so
the libraries that run in worker threads (pyspf, dkimpy) share it through :func:`lookup_from_thread`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver

DEFAULT_PORT = 53
T = TypeVar("T")


# Names that cannot be put in a query: too long, an empty label, a bad escape, not IDNA 2008.
_UNASKABLE = (
    dns.name.NameTooLong,
    dns.name.LabelTooLong,
    dns.name.EmptyLabel,
    dns.name.BadEscape,
    dns.name.IDNAException,
)


class TemporaryError(Exception):
    """The answer could not be had now (timeout, SERVFAIL, REFUSED, no server answered)."""


@dataclass(frozen=True)
class Nameserver:
    host: str
    port: int = DEFAULT_PORT


def parse_nameservers(value: str) -> list[Nameserver]:
    """``DNS_NAMESERVERS``: comma-separated ``ip``, ``ip:port`` or ``[ipv6]:port``; empty: none."""
    servers = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, port = item, DEFAULT_PORT
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                port = int(rest.removeprefix(":"))
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(f"DNS_NAMESERVERS: port out of range in {item!r}")
        dns.inet.af_for_address(host)  # raises ValueError for anything but an IP address
        servers.append(Nameserver(host, port))
    return servers


class Resolver:
    """Asynchronous lookups with a TTL-honouring cache; ``nameservers`` empty: the system's."""

    def __init__(
        self,
        nameservers: Sequence[Nameserver] = (),
        *,
        timeout: float = 5.0,
        cache_size: int = 10000,
    ) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(server.host, server.port) for server in nameservers
            ]
        # lifetime bounds one lookup, retries and every server together; timeout one attempt.
        self._resolver.lifetime = timeout
        self._resolver.timeout = min(timeout, 2.0)
        self._resolver.cache = dns.resolver.LRUCache(cache_size)

    async def resolve(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """The records of ``rdtype`` at ``name``; ``[]`` when the name or the type does not exist."""
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except _UNASKABLE:  # no such name can exist: a permanent absence, not DNS trouble
            return []
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL, REFUSED, no server left
            raise TemporaryError(f"{name}/{rdtype}: {exc}") from exc
        return list(answer)

    async def txt(self, name: str) -> list[bytes]:
        """Each TXT record at ``name``, its strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(rdata.strings) for rdata in await self.resolve(name, "TXT")]  # type: ignore[attr-defined]


# The resolver and loop that a worker thread's lookups go back to (see lookup_from_thread).
_context: contextvars.ContextVar[tuple[Resolver, asyncio.AbstractEventLoop]] = (
    contextvars.ContextVar("mailauth_dns")
)


async def run_in_thread(resolver: Resolver, function: Callable[[], T]) -> T:
    """Run a blocking library call (pyspf, dkimpy) in a worker thread, off the event loop; the
    lookups it makes through :func:`lookup_from_thread` are answered by ``resolver`` on this loop,
    so every check shares one resolver and one cache."""
    token = _context.set((resolver, asyncio.get_running_loop()))
    try:
        return await asyncio.to_thread(function)  # to_thread runs it in a copy of this context
    finally:
        _context.reset(token)


def lookup_from_thread(name: str, rdtype: str) -> list[dns.rdata.Rdata]:
    """:meth:`Resolver.resolve` from inside :func:`run_in_thread`; blocks that thread only."""
    resolver, loop = _context.get()
    return asyncio.run_coroutine_threadsafe(resolver.resolve(name, rdtype), loop).result()
