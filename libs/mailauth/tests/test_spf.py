"""SPF against policies published on a real DNS server, each verdict compared with libspf2's
(spfquery, reading the same zones)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from authreference import ReferenceTools
from mailauth.dns import Nameserver, Resolver
from mailauth.spf import SpfResult, check_spf
from mailstack.dnsserver import AuthoritativeDns, txt

CLIENT = "192.0.2.10"


def check(resolver: Resolver, *, ip: str = CLIENT, mail_from: str, helo: str) -> SpfResult:
    return asyncio.run(check_spf(resolver, ip=ip, mail_from=mail_from, helo=helo))


def spf(policy: str) -> str:
    return f"@ TXT {txt(policy)}"


# (the zone's records, the client address, the verdict); "{zone}" stands for the zone's name.
# libspf2 gives the same verdict for each, except where LIBSPF2_DIFFERS says otherwise.
POLICIES = {
    "ip4-pass": ([spf(f"v=spf1 ip4:{CLIENT} -all")], CLIENT, "pass"),
    "ip4-fail": ([spf("v=spf1 ip4:192.0.2.11 -all")], CLIENT, "fail"),
    "softfail": ([spf("v=spf1 ip4:192.0.2.11 ~all")], CLIENT, "softfail"),
    "neutral": ([spf("v=spf1 ?all")], CLIENT, "neutral"),
    "no-policy": (["@ A 192.0.2.1"], CLIENT, "none"),
    "ip6-pass": ([spf("v=spf1 ip6:2001:db8::/32 -all")], "2001:db8::5", "pass"),
    "mx-pass": (
        [spf("v=spf1 mx -all"), "@ MX 10 mail", f"mail A {CLIENT}"],
        CLIENT,
        "pass",
    ),
    "a-include-redirect": (
        [
            spf("v=spf1 include:inc.{zone} -all"),
            f"inc TXT {txt('v=spf1 a:host.{zone} -all')}",
            f"host A {CLIENT}",
            f"r TXT {txt('v=spf1 redirect=inc.{zone}')}",
        ],
        CLIENT,
        "pass",
    ),
    "syntax-error": ([spf("v=spf1 ip4:192.0.2.999 -all")], CLIENT, "permerror"),
    "two-policies": ([spf("v=spf1 -all"), spf("v=spf1 +all")], CLIENT, "permerror"),
    "ten-includes": (
        [spf(" ".join(["v=spf1", *(f"include:i{n}.{{zone}}" for n in range(10)), "-all"]))]
        + [f"i{n} TXT {txt('v=spf1 -all')}" for n in range(10)],
        CLIENT,
        "fail",
    ),
    "eleven-includes": (
        [spf(" ".join(["v=spf1", *(f"include:i{n}.{{zone}}" for n in range(11)), "-all"]))]
        + [f"i{n} TXT {txt('v=spf1 -all')}" for n in range(11)],
        CLIENT,
        "permerror",
    ),
    "two-void-lookups": ([spf("v=spf1 a:n1.{zone} a:n2.{zone} -all")], CLIENT, "fail"),
    "three-void-lookups": (
        [spf("v=spf1 a:n1.{zone} a:n2.{zone} a:n3.{zone} -all")],
        CLIENT,
        "permerror",
    ),
}


# libspf2 1.2.10 implements RFC 4408, which had no limit on void lookups (RFC 7208 4.6.4 added it).
LIBSPF2_DIFFERS = {"three-void-lookups": "fail"}


@pytest.mark.parametrize("name", POLICIES)
def test_mail_from_verdicts(
    dns_server: AuthoritativeDns,
    resolver: Resolver,
    reference: ReferenceTools,
    zone: str,
    name: str,
) -> None:
    records, ip, expected = POLICIES[name]
    dns_server.serve(zone, [record.replace("{zone}", zone) for record in records])
    sender = f"alice@{zone}"
    result = check(resolver, ip=ip, mail_from=sender, helo="client.example.net")
    assert (result.result, result.scope, result.domain, result.identity) == (
        expected,
        "mailfrom",
        zone,
        sender,
    ), result.explanation
    libspf2 = reference.spfquery(ip=ip, mail_from=sender, helo="client.example.net")
    assert libspf2 == LIBSPF2_DIFFERS.get(name, expected)


def test_the_helo_name_is_checked_when_mail_from_is_empty(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    dns_server.serve(zone, [spf("v=spf1 -all"), f"mx TXT {txt(f'v=spf1 ip4:{CLIENT} -all')}"])
    result = check(resolver, mail_from="", helo=f"mx.{zone}")
    assert result == SpfResult("pass", "helo", f"mx.{zone}", f"mx.{zone}", result.explanation)
    assert reference.spfquery(ip=CLIENT, mail_from="", helo=f"mx.{zone}") == "pass"
    other = check(resolver, ip="192.0.2.99", mail_from="", helo=f"mx.{zone}")
    assert (other.result, other.scope) == ("fail", "helo")
    assert reference.spfquery(ip="192.0.2.99", mail_from="", helo=f"mx.{zone}") == "fail"


def test_a_dns_timeout_is_a_temperror() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver([Nameserver("127.0.0.1", silent.getsockname()[1])], timeout=0.5)
        result = check(resolver, mail_from="alice@example.test", helo="h.example.test")
    assert (result.result, result.domain) == ("temperror", "example.test")


@pytest.mark.parametrize(
    ("ip", "mail_from", "helo"),
    [
        ("not-an-address", "alice@example.test", "h"),
        (CLIENT, "alice@" + "x" * 300, "h"),
        (CLIENT, "@", ""),
        (CLIENT, "", ""),
        (CLIENT, "alice@[192.0.2.1]", "[192.0.2.1]"),
    ],
)
def test_hostile_input_never_raises(resolver: Resolver, ip: str, mail_from: str, helo: str) -> None:
    result = check(resolver, ip=ip, mail_from=mail_from, helo=helo)
    assert result.result in ("none", "permerror"), result


def test_a_domain_whose_server_refuses_is_a_temperror(
    resolver: Resolver, reference: ReferenceTools
) -> None:
    # Knot answers REFUSED for a zone it does not serve: no answer can be had now.
    sender = "alice@not-served.test"
    assert check(resolver, mail_from=sender, helo="h.example.net").result == "temperror"
    assert reference.spfquery(ip=CLIENT, mail_from=sender, helo="h.example.net") == "temperror"


def test_checks_run_off_the_event_loop_and_side_by_side(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [spf(f"v=spf1 ip4:{CLIENT} -all")])
    finished: list[str] = []

    async def spf_check(ip: str) -> str:
        result = await check_spf(resolver, ip=ip, mail_from=f"a@{zone}", helo="h.example.net")
        finished.append(ip)
        return result.result

    async def meanwhile() -> None:
        finished.append("loop")  # runs while the checks wait: they do not hold the loop

    async def together() -> list[object]:
        return await asyncio.gather(spf_check(CLIENT), spf_check("192.0.2.66"), meanwhile())

    assert asyncio.run(together()) == ["pass", "fail", None]
    assert finished[0] == "loop"
