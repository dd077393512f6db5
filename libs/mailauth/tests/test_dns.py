"""The resolver against a real server: answers, absent names, the cache, silence and limits."""

from __future__ import annotations

import asyncio
import socket

import pytest
from mailauth.dns import (
    Nameserver,
    Resolver,
    TemporaryError,
    lookup_from_thread,
    parse_nameservers,
    run_in_thread,
)
from mailstack.dnsserver import AuthoritativeDns, txt


def test_txt_strings_are_joined(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    long_value = "v=DKIM1; k=rsa; p=" + "A" * 600
    dns_server.serve(zone, [f"@ TXT {txt('v=spf1 -all')}", f"k TXT {txt(long_value)}"])
    assert asyncio.run(resolver.txt(zone)) == [b"v=spf1 -all"]
    assert asyncio.run(resolver.txt(f"k.{zone}")) == [long_value.encode()]


def test_absent_name_and_type_are_empty(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, ["@ A 192.0.2.1"])
    assert asyncio.run(resolver.resolve(f"nothing.{zone}", "A")) == []  # NXDOMAIN
    assert asyncio.run(resolver.resolve(zone, "MX")) == []  # NODATA


def test_answers_are_cached_for_their_ttl(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, ["@ A 192.0.2.1"], ttl=300)

    async def twice() -> tuple[list[str], list[str]]:
        first = [r.to_text() for r in await resolver.resolve(zone, "A")]
        dns_server.serve(zone, ["@ A 192.0.2.2"], ttl=300)
        return first, [r.to_text() for r in await resolver.resolve(zone, "A")]

    first, second = asyncio.run(twice())
    assert first == second == ["192.0.2.1"]
    fresh = Resolver([Nameserver("127.0.0.1", dns_server.port)])
    assert [r.to_text() for r in asyncio.run(fresh.resolve(zone, "A"))] == ["192.0.2.2"]


def test_a_server_that_never_answers_is_a_temporary_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        resolver = Resolver([Nameserver("127.0.0.1", port)], timeout=0.5)
        with pytest.raises(TemporaryError):
            asyncio.run(resolver.txt("example.test"))


def test_a_zone_the_server_does_not_serve_is_a_temporary_error(resolver: Resolver) -> None:
    # knotd answers REFUSED for a zone it is not authoritative for.
    with pytest.raises(TemporaryError):
        asyncio.run(resolver.txt("not-served.invalid"))


@pytest.mark.parametrize("name", ["a" * 64 + ".test", "a..test", "x" * 250 + ".a.b.test"])
def test_a_name_that_cannot_exist_is_absent_not_temporary(resolver: Resolver, name: str) -> None:
    assert asyncio.run(resolver.resolve(name, "TXT")) == []


def test_worker_threads_look_up_through_the_loops_resolver(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, ["@ A 192.0.2.9"])

    def blocking_library_call() -> list[str]:
        return [r.to_text() for r in lookup_from_thread(zone, "A")]

    assert asyncio.run(run_in_thread(resolver, blocking_library_call)) == ["192.0.2.9"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("127.0.0.1", [Nameserver("127.0.0.1", 53)]),
        ("127.0.0.1:5353, ::1", [Nameserver("127.0.0.1", 5353), Nameserver("::1", 53)]),
        ("[2001:db8::1]:5300", [Nameserver("2001:db8::1", 5300)]),
    ],
)
def test_parse_nameservers(value: str, expected: list[Nameserver]) -> None:
    assert parse_nameservers(value) == expected


@pytest.mark.parametrize("value", ["dns.example", "127.0.0.1:0", "127.0.0.1:99999", "1.2.3.4:x"])
def test_parse_nameservers_refuses_what_is_not_an_address(value: str) -> None:
    with pytest.raises(ValueError):
        parse_nameservers(value)
