"""Delivering one queue entry's recipients of one domain: MX hosts in order, each address of each
host, until one transaction is had (:mod:`smtp_out.transfer`); every recipient gets a result."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from mailauth.dns import Resolver
from mailcommon.logging import get_logger

from smtp_out import mx
from smtp_out.results import Result, from_reply
from smtp_out.transfer import Envelope, HostUnusable, Peer, TlsFailed, deliver

log = get_logger(__name__)
ADDRESSES_PER_HOST = 4


@dataclass(frozen=True)
class Route:
    """How this worker reaches remote MXs."""

    resolver: Resolver
    port: int
    helo: str
    connect_timeout: float
    command_timeout: float
    max_mx: int
    tls: ssl.SSLContext


async def deliver_domain(
    route: Route, domain: str, envelope: Envelope, entry: str
) -> dict[str, Result]:
    """Results for every recipient of ``envelope`` (all in ``domain``)."""

    def everyone(reply: str) -> dict[str, Result]:
        return {r: from_reply(reply) for r in envelope.recipients}

    try:
        hosts = await mx.mx_hosts(route.resolver, domain, route.max_mx)
    except mx.PermanentRouteError as exc:
        return everyone(exc.reply)
    except mx.TemporaryRouteError as exc:
        return everyone(f"451 4.4.3 DNS lookup for {domain} failed: {exc}")
    last = f"451 4.4.1 No MX host of {domain} could be reached"
    for host in hosts:
        try:
            found = await mx.addresses(route.resolver, host.name)
        except mx.TemporaryRouteError as exc:
            last = f"451 4.4.3 {exc}"
            continue
        if not found:
            last = f"451 4.4.4 MX host {host.name} has no address"
            continue
        for address in found[:ADDRESSES_PER_HOST]:
            peer = Peer(
                address, route.port, host.name, route.helo, route.connect_timeout,
                route.command_timeout,
            )  # fmt: skip
            try:
                try:
                    transcript = await deliver(peer, envelope, route.tls)
                except TlsFailed as exc:
                    log.warning("tls_fallback", entry=entry, host=host.name, address=address,
                                reason=exc.reply)  # fmt: skip
                    transcript = await deliver(peer, envelope, None)
            except HostUnusable as exc:
                log.info("host_unusable", entry=entry, host=host.name, address=address,
                         reply=exc.reply)  # fmt: skip
                last = exc.reply
                continue
            log.info(
                "transaction",
                entry=entry,
                domain=domain,
                host=host.name,
                address=address,
                tls=transcript.tls,
                results={r: res.status for r, res in transcript.results.items()},
            )
            return transcript.results
    return everyone(last)
