"""smtp_out.mx against Knot: MX hosts by preference, the implicit MX, null MX, no host at all,
and a DNS server that does not answer (temporary)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from mailauth.dns import Nameserver, Resolver
from mailstack.ports import free_port
from smtp_out import mx


def resolver_for(dns_server) -> Resolver:
    return Resolver([Nameserver("127.0.0.1", dns_server.port)], timeout=2.0)


def zone() -> str:
    return f"m{secrets.token_hex(4)}.test"


def test_hosts_in_preference_order(dns_server):
    name = zone()
    dns_server.serve(name, ["@ MX 20 backup", "@ MX 10 primary", "primary A 127.0.0.9"])
    hosts = asyncio.run(mx.mx_hosts(resolver_for(dns_server), name, 5))
    assert [(h.name, h.preference) for h in hosts] == [
        (f"primary.{name}", 10),
        (f"backup.{name}", 20),
    ]
    assert asyncio.run(mx.mx_hosts(resolver_for(dns_server), name, 1))[0].name == f"primary.{name}"
    assert asyncio.run(mx.addresses(resolver_for(dns_server), f"primary.{name}")) == ["127.0.0.9"]


def test_no_mx_is_the_domain_itself_if_it_has_an_address(dns_server):
    name = zone()
    dns_server.serve(name, ["@ A 127.0.0.9"])
    hosts = asyncio.run(mx.mx_hosts(resolver_for(dns_server), name, 5))
    assert [h.name for h in hosts] == [name]


def test_null_mx_and_no_host_are_permanent(dns_server):
    null, empty = zone(), zone()
    dns_server.serve(null, ["@ MX 0 .", "@ A 127.0.0.9"])
    dns_server.serve(empty, ['@ TXT "nothing"'])
    with pytest.raises(mx.PermanentRouteError) as refused:
        asyncio.run(mx.mx_hosts(resolver_for(dns_server), null, 5))
    assert refused.value.reply.startswith("556 5.1.10")
    with pytest.raises(mx.PermanentRouteError) as refused:
        asyncio.run(mx.mx_hosts(resolver_for(dns_server), empty, 5))
    assert refused.value.reply.startswith("550 5.1.2")
    with pytest.raises(mx.PermanentRouteError):  # NXDOMAIN inside a served zone
        asyncio.run(mx.mx_hosts(resolver_for(dns_server), f"nowhere.{empty}", 5))


def test_a_dns_server_that_does_not_answer_is_temporary():
    silent = Resolver([Nameserver("127.0.0.1", free_port())], timeout=1.0)
    with pytest.raises(mx.TemporaryRouteError):
        asyncio.run(mx.mx_hosts(silent, "example.test", 5))
