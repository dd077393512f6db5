"""ARC chains made with dkimpy by a mailing list and forwarders, validated against keys on a real
DNS server."""

from __future__ import annotations

import asyncio
import socket

import pytest
from mailauth.arc import ArcResult, verify_arc
from mailauth.dkim import verify_dkim
from mailauth.dns import Nameserver, Resolver
from mailstack.authkit import arc_seal, message, rsa_key, sign
from mailstack.dnsserver import AuthoritativeDns


def verify(resolver: Resolver, raw: bytes) -> ArcResult:
    return asyncio.run(verify_arc(resolver, raw))


def through_the_list(dns_server: AuthoritativeDns, zone: str) -> bytes:
    """An author's signed message, as a mailing list at list.<zone> alters and seals it."""
    author, mailing_list = rsa_key(2048), rsa_key(2048, "list")
    dns_server.serve(
        zone,
        [author.published("sel"), mailing_list.published("arc", under="list"), "list A 192.0.2.7"],
    )
    signed = sign(message(zone), author, zone)
    altered = signed.replace(b"Subject: Hello", b"Subject: [list] Hello") + (
        b"--\r\nThe list: https://list.example/\r\n"
    )
    return arc_seal(altered, mailing_list, f"list.{zone}", "arc", f"dkim=pass header.d={zone}")


def test_a_mailing_lists_chain_passes_where_dkim_fails(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    sealed = through_the_list(dns_server, zone)
    assert [r.result for r in asyncio.run(verify_dkim(resolver, sealed))] == ["fail"]
    assert verify(resolver, sealed) == ArcResult("pass", 1, "success")


def test_a_second_hop_extends_the_chain(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    sealed = through_the_list(dns_server, zone)
    forwarded = arc_seal(sealed, rsa_key(2048, "list"), f"list.{zone}", "arc", "arc=pass")
    assert verify(resolver, forwarded) == ArcResult("pass", 2, "success")


@pytest.mark.parametrize(
    "change",
    [
        (b"The list: https://list.example/", b"The list: https://evil.example/"),
        (b"Subject: [list] Hello", b"Subject: [list] Hellp"),
        (b"cv=none", b"cv=pass"),
    ],
    ids=["body-after-sealing", "header-after-sealing", "seal"],
)
def test_a_chain_broken_after_sealing_fails(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str, change: tuple[bytes, bytes]
) -> None:
    sealed = through_the_list(dns_server, zone)
    assert verify(resolver, sealed).result == "pass"
    assert change[0] in sealed
    result = verify(resolver, sealed.replace(*change))
    assert (result.result, result.instances, result.temporary) == ("fail", 1, False)


def test_an_unsealed_message_is_none(resolver: Resolver, zone: str) -> None:
    assert verify(resolver, message(zone)) == ArcResult("none", 0, "no ARC sets")


def test_a_key_lookup_that_times_out_fails_as_temporary(
    dns_server: AuthoritativeDns, zone: str
) -> None:
    sealed = through_the_list(dns_server, zone)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver([Nameserver("127.0.0.1", silent.getsockname()[1])], timeout=0.5)
        result = verify(resolver, sealed)
    assert (result.result, result.temporary) == ("fail", True)


@pytest.mark.parametrize(
    "raw",
    [
        b"ARC-Seal: i=1000; cv=none; a=rsa-sha256; d=x; s=y; b=AAAA\r\n\r\nbody",
        b"ARC-Seal: i=1; garbage\r\nARC-Message-Signature: i=1\r\n"
        b"ARC-Authentication-Results: i=1\r\n\r\n",
        b" leading continuation\r\nARC-Seal: i=1\r\n\r\n",
        b"ARC-Seal: i=2; cv=pass; a=rsa-sha256; d=x; s=y; b=AAAA\r\n\r\n",
    ],
)
def test_hostile_chains_fail_without_raising(resolver: Resolver, raw: bytes) -> None:
    assert verify(resolver, raw).result == "fail"
