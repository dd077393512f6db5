"""Where mail for a domain goes (RFC 5321 5.1, RFC 7505), through :class:`mailauth.dns.Resolver`.

The MX records in preference order (equal preferences shuffled, to spread load as RFC 5321 5.1
asks); a null MX (one record, ``0 .``) means the domain accepts no mail: a permanent failure;
no MX at all means the domain itself is the host (the implicit MX), provided it has an address;
a name with neither is a permanent failure too. A DNS failure (timeout, SERVFAIL) is temporary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mailauth.dns import Resolver, TemporaryError

NULL_MX = "556 5.1.10 Recipient domain publishes a null MX: it accepts no mail (RFC 7505)"
NO_HOST = "550 5.1.2 Recipient domain has no MX and no address record"


class PermanentRouteError(Exception):
    """The domain cannot receive mail (its reply: :data:`NULL_MX`, :data:`NO_HOST`)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class TemporaryRouteError(Exception):
    """DNS could not answer now: try again later."""


@dataclass(frozen=True)
class Host:
    name: str
    preference: int


def _name(rdata: object) -> str:
    return str(getattr(rdata, "exchange", rdata)).rstrip(".").lower()


async def mx_hosts(resolver: Resolver, domain: str, limit: int) -> list[Host]:
    """The hosts to try for ``domain``, best first (at most ``limit``)."""
    try:
        records = await resolver.resolve(domain, "MX")
    except TemporaryError as exc:
        raise TemporaryRouteError(str(exc)) from exc
    if not records:
        if await addresses(resolver, domain):  # the implicit MX (RFC 5321 5.1)
            return [Host(domain, 0)]
        raise PermanentRouteError(NO_HOST)
    hosts = [Host(_name(r), int(getattr(r, "preference", 0))) for r in records]
    if any(host.name == "" for host in hosts):  # "." : RFC 7505 null MX
        raise PermanentRouteError(NULL_MX)
    random.shuffle(hosts)
    hosts.sort(key=lambda host: host.preference)  # stable: equal preferences stay shuffled
    return hosts[:limit]


async def addresses(resolver: Resolver, host: str) -> list[str]:
    """The IPv6 then IPv4 addresses of ``host`` (TemporaryError when DNS fails for both)."""
    found: list[str] = []
    failures = 0
    for rdtype in ("AAAA", "A"):
        try:
            found += [str(r) for r in await resolver.resolve(host, rdtype)]
        except TemporaryError:
            failures += 1
    if failures == 2:
        raise TemporaryRouteError(f"{host}: no address lookup answered")
    return found
