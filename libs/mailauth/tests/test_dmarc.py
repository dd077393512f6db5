"""DMARC against records published on a real DNS server, each verdict compared with authheaders'."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Iterator

import authheaders
import dns.resolver
import pytest
from authheaders.dmarc_lookup import DMARCException
from authres import DKIMAuthenticationResult, SPFAuthenticationResult
from mailauth.dmarc import DmarcResult, check_dmarc
from mailauth.dns import Nameserver, Resolver
from mailauth.verdicts import DkimResult, SpfResult
from mailstack.dnsserver import AuthoritativeDns, txt

SPF_NONE = SpfResult("none", "mailfrom", "", "", "")


def spf_pass(domain: str, scope: str = "mailfrom") -> SpfResult:
    identity = f"bounce@{domain}" if scope == "mailfrom" else domain
    return SpfResult("pass", scope, domain, identity, "")


def signature(domain: str, result: str = "pass") -> DkimResult:
    return DkimResult(result, domain, "sel", "rsa-sha256", "AbCdEfGhIjKl", "")


@pytest.fixture
def authheaders_dns(dns_server: AuthoritativeDns) -> Iterator[None]:
    """authheaders looks up through dnspython's default resolver: point it at the test server."""
    default = dns.resolver.Resolver(configure=False)
    default.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", dns_server.port)]
    saved = dns.resolver.default_resolver
    dns.resolver.default_resolver = default
    yield
    dns.resolver.default_resolver = saved


def dmarc(
    resolver: Resolver,
    from_domain: str | None,
    spf: SpfResult = SPF_NONE,
    dkim: tuple[DkimResult, ...] = (),
    sample: float = 0.0,
) -> DmarcResult:
    return asyncio.run(
        check_dmarc(
            resolver, from_domain=from_domain, spf=spf, dkim=list(dkim), sample=lambda: sample
        )
    )


def authheaders_verdict(
    from_domain: str, spf: SpfResult = SPF_NONE, dkim: tuple[DkimResult, ...] = ()
) -> tuple[str, str]:
    """(result, policy) by authheaders, which takes one SPF and at most one DKIM result."""
    spf_result = SPFAuthenticationResult(result=spf.result, smtp_mailfrom=spf.identity)
    dkim_result = (
        DKIMAuthenticationResult(result=dkim[0].result, header_d=dkim[0].domain) if dkim else None
    )
    # A HELO check is made only for the null sender, whose MAIL FROM identity it is (RFC 7208
    # 2.4): authheaders gets it as that identity, postmaster@<HELO>.
    if spf.scope == "helo":
        spf_result = SPFAuthenticationResult(
            result=spf.result, smtp_mailfrom=f"postmaster@{spf.domain}"
        )
    result, _, _, policy = authheaders.dmarc_per_from(
        from_domain, spf_result=spf_result, dkim_result=dkim_result
    )
    return result, policy


def verdict(
    resolver: Resolver,
    from_domain: str,
    spf: SpfResult = SPF_NONE,
    dkim: tuple[DkimResult, ...] = (),
    sample: float = 0.0,
) -> DmarcResult:
    """Ours, asserted to agree with authheaders on the result and the policy."""
    ours = dmarc(resolver, from_domain, spf, dkim, sample)
    assert authheaders_verdict(from_domain, spf, dkim) == (ours.result, ours.policy)
    return ours


pytestmark = pytest.mark.usefixtures("authheaders_dns")


@pytest.fixture
def zone() -> str:
    """An organizational domain under a listed public suffix. (Under an unlisted TLD such as
    .test, authheaders' publicsuffix2 takes the TLD itself as the organizational domain of
    every name, where RFC 7489 3.2's default rule gives the last two labels: our verdicts for
    subdomains there would differ from its for that reason alone.)"""
    return f"z{secrets.token_hex(4)}.co.uk"


def test_pass_by_spf_alignment_only(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject')}"])
    result = verdict(
        resolver, zone, spf_pass(f"bounces.{zone}"), (signature("other.example", "pass"),)
    )
    assert result == DmarcResult("pass", zone, "reject", "none", "spf", "aligned by spf")


def test_pass_by_dkim_alignment_only(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject')}"])
    failed_spf = SpfResult("fail", "mailfrom", zone, f"x@{zone}", "")
    result = verdict(resolver, zone, failed_spf, (signature(f"mail.{zone}"),))
    assert (result.result, result.aligned_by, result.disposition) == ("pass", "dkim", "none")


def test_both_align(dns_server: AuthoritativeDns, resolver: Resolver, zone: str) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=quarantine')}"])
    result = verdict(resolver, zone, spf_pass(zone), (signature(zone),))
    assert (result.result, result.aligned_by) == ("pass", "spf,dkim")


@pytest.mark.parametrize(("mode", "expected"), [("r", "pass"), ("s", "fail")])
def test_relaxed_and_strict_alignment(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str, mode: str, expected: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt(f'v=DMARC1; p=reject; aspf={mode}; adkim={mode}')}"])
    sub = f"sub.{zone}"
    assert verdict(resolver, zone, spf_pass(sub)).result == expected
    assert verdict(resolver, zone, dkim=(signature(sub),)).result == expected
    # Strict still aligns the From domain itself.
    assert verdict(resolver, zone, spf_pass(zone)).result == "pass"


@pytest.mark.parametrize("policy", ["reject", "quarantine", "none"])
def test_unaligned_message_fails_with_the_published_policy(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str, policy: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt(f'v=DMARC1; p={policy}; rua=mailto:d@{zone}')}"])
    result = verdict(
        resolver, zone, spf_pass("elsewhere.example"), (signature("elsewhere.example"),)
    )
    assert result == DmarcResult("fail", zone, policy, policy, "", "neither SPF nor DKIM aligned")


def test_failed_signatures_do_not_align(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject')}"])
    result = verdict(resolver, zone, dkim=(signature(zone, "fail"), signature(zone, "neutral")))
    assert (result.result, result.disposition) == ("fail", "reject")


def test_the_null_senders_helo_pass_aligns(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    # A bounce: MAIL FROM:<>, so SPF checked postmaster@<HELO> (RFC 7208 2.4), scope "helo".
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject')}"])
    result = verdict(resolver, zone, spf_pass(f"mx.{zone}", scope="helo"))
    assert (result.result, result.aligned_by) == ("pass", "spf")


def test_any_passing_aligned_signature_among_several(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject')}"])
    signatures = (signature(zone, "fail"), signature("list.example"), signature(zone))
    assert dmarc(resolver, zone, dkim=signatures).aligned_by == "dkim"


def test_sp_applies_to_subdomains_through_the_org_domains_record(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject; sp=quarantine')}"])
    sub = verdict(resolver, f"news.{zone}")
    assert (sub.result, sub.from_domain, sub.policy, sub.disposition) == (
        "fail",
        f"news.{zone}",
        "quarantine",
        "quarantine",
    )
    # authheaders applies sp= to the domain that published it too (RFC 7489 6.3: "sp" is for its
    # subdomains only): no comparison for the org domain itself.
    assert dmarc(resolver, zone).policy == "reject"


def test_a_subdomain_without_sp_gets_p(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=quarantine')}"])
    assert verdict(resolver, f"a.b.{zone}").policy == "quarantine"


def test_the_from_domains_own_record_comes_first(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(
        zone,
        [
            f"_dmarc TXT {txt('v=DMARC1; p=reject; sp=reject')}",
            f"_dmarc.news TXT {txt('v=DMARC1; p=none; sp=quarantine')}",
        ],
    )
    # The record at news.<zone> is the From domain's own: its p=, not its sp=, applies
    # (authheaders applies sp= here: no comparison).
    assert dmarc(resolver, f"news.{zone}").policy == "none"


@pytest.mark.parametrize(
    ("policy", "sampled_out"), [("reject", "quarantine"), ("quarantine", "none")]
)
def test_pct_sampling_downgrades_the_disposition(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str, policy: str, sampled_out: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt(f'v=DMARC1; p={policy}; pct=0')}"])
    zero = verdict(resolver, zone, sample=0.0)
    assert (zero.result, zero.policy, zero.disposition) == ("fail", policy, sampled_out)
    assert "pct=0" in zero.reason


def test_pct_is_the_share_of_samples_below_it(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject; pct=50')}"])
    assert dmarc(resolver, zone, sample=0.49).disposition == "reject"
    assert dmarc(resolver, zone, sample=0.5).disposition == "quarantine"


def test_pct_does_not_touch_a_pass(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject; pct=0')}"])
    assert dmarc(resolver, zone, spf_pass(zone), sample=0.99).disposition == "none"


def test_two_records_are_none(dns_server: AuthoritativeDns, resolver: Resolver, zone: str) -> None:
    dns_server.serve(
        zone,
        [f"_dmarc TXT {txt('v=DMARC1; p=reject')}", f"_dmarc TXT {txt('v=DMARC1; p=none')}"],
    )
    result = verdict(resolver, zone)
    assert (result.result, result.policy, result.disposition) == ("none", "", "none")


def test_two_records_at_the_from_domain_do_not_fall_back_to_the_org_domain(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    # RFC 7489 6.6.3 step 3 asks the org domain only when the From domain's set is empty.
    # (authheaders does ask it: no comparison here.)
    dns_server.serve(
        zone,
        [
            f"_dmarc TXT {txt('v=DMARC1; p=reject')}",
            f"_dmarc.sub TXT {txt('v=DMARC1; p=none')}",
            f"_dmarc.sub TXT {txt('v=DMARC1; p=quarantine')}",
        ],
    )
    assert dmarc(resolver, f"sub.{zone}").result == "none"


def test_no_record_is_none(dns_server: AuthoritativeDns, resolver: Resolver, zone: str) -> None:
    dns_server.serve(zone, [f"@ TXT {txt('v=spf1 -all')}"])
    result = verdict(resolver, f"sub.{zone}")
    assert result == DmarcResult("none", f"sub.{zone}", "", "none", "", "no DMARC record")


def test_other_txt_records_are_not_dmarc_records(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(
        zone,
        [
            f"_dmarc TXT {txt('v=spf1 -all')}",
            f"_dmarc TXT {txt('p=none; v=DMARC1')}",  # v= not first: not a DMARC record
            f"_dmarc TXT {txt('v=DMARC1; p=quarantine; future=tag; fo=1')}",
        ],
    )
    result = verdict(resolver, zone)
    assert (result.result, result.policy) == ("fail", "quarantine")


def test_invalid_p_with_a_valid_rua_is_p_none(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    # authheaders would take p=bogus as the policy: no comparison here.
    dns_server.serve(
        zone,
        [
            f"_dmarc TXT {txt(f'v=DMARC1; p=bogus; rua=mailto:reports@{zone}')}",
            f"_dmarc.norua TXT {txt('v=DMARC1; p=bogus')}",
            f"_dmarc.badsp TXT {txt(f'v=DMARC1; p=reject; sp=bogus; rua=mailto:r@{zone}')}",
        ],
    )
    with_rua = dmarc(resolver, zone)
    assert (with_rua.result, with_rua.policy, with_rua.disposition) == ("fail", "none", "none")
    without_rua = dmarc(resolver, f"norua.{zone}")
    assert (without_rua.result, without_rua.policy) == ("none", "")
    assert dmarc(resolver, f"badsp.{zone}").policy == "none"


def test_an_unparsable_record_is_permerror(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject; garbage')}"])
    assert dmarc(resolver, zone).result == "permerror"
    with pytest.raises(DMARCException):  # authheaders' permerror
        authheaders.dmarc_per_from(zone)
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject; p=none')}"])
    assert dmarc(resolver, zone).result == "permerror"  # a tag twice (RFC 6376 3.2)


def test_invalid_optional_values_fall_back_to_defaults(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject; pct=many; aspf=x')}"])
    assert dmarc(resolver, zone).disposition == "reject"  # pct=100
    assert dmarc(resolver, zone, spf_pass(f"sub.{zone}")).result == "pass"  # aspf=r


def test_dns_silence_is_temperror(zone: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver([Nameserver("127.0.0.1", silent.getsockname()[1])], timeout=0.5)
        result = dmarc(resolver, zone, spf_pass(zone))
    assert (result.result, result.from_domain, result.disposition) == ("temperror", zone, "none")


def test_the_org_domain_comes_from_the_public_suffix_list(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject; sp=quarantine')}"])
    # mail.<zone>.co.uk: the org domain is <zone>.co.uk, where the record is.
    result = verdict(resolver, f"mail.{zone}", dkim=(signature(f"news.{zone}"),))
    assert (result.result, result.policy, result.aligned_by) == ("pass", "quarantine", "dkim")


def test_a_public_suffix_does_not_align(
    dns_server: AuthoritativeDns, resolver: Resolver, zone: str
) -> None:
    dns_server.serve(zone, [f"_dmarc TXT {txt('v=DMARC1; p=reject')}"])
    result = verdict(resolver, zone, spf_pass("co.uk"), (signature("co.uk"),))
    assert (result.result, result.aligned_by, result.disposition) == ("fail", "", "reject")


def test_a_u_label_from_domain_is_looked_up_as_its_a_label(
    dns_server: AuthoritativeDns, resolver: Resolver
) -> None:
    org = f"b\u00fccher{secrets.token_hex(3)}.co.uk".encode("idna").decode()
    dns_server.serve(org, [f"_dmarc TXT {txt('v=DMARC1; p=quarantine')}"])
    unicode_from = org.encode().decode("idna")
    # authheaders compares the U-label with d= as it is (RFC 7489 6.6.1: convert to A-labels),
    # and finds no alignment: no comparison.
    result = dmarc(resolver, unicode_from, dkim=(signature(org),))
    assert (result.result, result.from_domain, result.policy) == ("pass", org, "quarantine")


def test_no_single_from_domain_is_permerror(resolver: Resolver) -> None:
    result = dmarc(resolver, None, spf_pass("example.com"))
    assert (result.result, result.from_domain, result.disposition) == ("permerror", "", "none")
