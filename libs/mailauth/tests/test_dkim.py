"""DKIM verification against keys published on a real DNS server, each verdict compared with
OpenDKIM's (opendkim-testmsg, reading the same zones)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import dns.rdata
import pytest
from authreference import ReferenceTools
from mailauth.dkim import DkimResult, verify_dkim
from mailauth.dns import Nameserver, Resolver
from mailstack.authkit import Key, ed25519_key, message, rsa_key, sign, sign_with_tags
from mailstack.dnsserver import AuthoritativeDns


def verify(resolver: Resolver, raw: bytes, **limits: int) -> list[DkimResult]:
    return asyncio.run(verify_dkim(resolver, raw, **limits))


def publish(dns_server: AuthoritativeDns, zone: str, key: Key, selector: str = "sel") -> Key:
    """Publish ``key`` at ``selector._domainkey.zone``; returns it."""
    dns_server.serve(zone, [key.published(selector)])
    return key


def published_and_signed(
    dns_server: AuthoritativeDns, zone: str, key: Key | None = None, **options: Any
) -> bytes:
    """A message from ``zone`` signed at s=sel with ``key`` (a new RSA 2048 one by default),
    published there; ``options`` go to :func:`sign`."""
    key = publish(dns_server, zone, key or rsa_key(2048))
    return sign(message(zone), key, zone, **options)


def verdicts(resolver: Resolver, reference: ReferenceTools, raw: bytes) -> tuple[DkimResult, str]:
    """The one result of :func:`verify` for ``raw``, and OpenDKIM's verdict on it."""
    [result] = verify(resolver, raw)
    return result, reference.opendkim(raw)


@pytest.mark.parametrize(
    "canonicalize", [(b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple")]
)
def test_a_good_rsa_signature_passes(
    dns_server: AuthoritativeDns,
    resolver: Resolver,
    reference: ReferenceTools,
    zone: str,
    canonicalize: tuple[bytes, bytes],
) -> None:
    signed = published_and_signed(dns_server, zone, canonicalize=canonicalize)
    result, opendkim = verdicts(resolver, reference, signed)
    assert (result.result, result.domain, result.selector, result.algorithm) == (
        "pass",
        zone,
        "sel",
        "rsa-sha256",
    )
    field_b = signed.split(b"b=")[-1].split(b"\r\n\r\n")[0]
    assert result.header_b == b"".join(field_b.split())[:12].decode()
    assert opendkim == "OK"


def test_an_ed25519_signature_passes(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    signed = published_and_signed(dns_server, zone, ed25519_key())
    result, opendkim = verdicts(resolver, reference, signed)
    assert (result.result, result.algorithm) == ("pass", "ed25519-sha256")
    assert opendkim == "OK"


def test_rsa_sha1_is_not_accepted(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    key = publish(dns_server, zone, rsa_key(2048))
    signed = sign(message(zone), Key(key.private, b"rsa-sha1", key.record), zone)
    result, opendkim = verdicts(resolver, reference, signed)
    assert (result.result, result.algorithm) == ("permerror", "rsa-sha1")
    # libopendkim 2.11 still verifies rsa-sha1 (it predates RFC 8301): its cryptography agrees
    # the signature is intact, which it must be for the refusal above to be about a= alone.
    assert opendkim == "OK"


def test_an_unsigned_message_has_no_results(resolver: Resolver, zone: str) -> None:
    assert verify(resolver, message(zone)) == []


@pytest.mark.parametrize(
    "change",
    [(b"Hello there.", b"Hello thereX"), (b"Subject: Hello", b"Subject: Hellp")],
    ids=["body", "header"],
)
def test_an_altered_message_fails(
    dns_server: AuthoritativeDns,
    resolver: Resolver,
    reference: ReferenceTools,
    zone: str,
    change: tuple[bytes, bytes],
) -> None:
    altered = published_and_signed(dns_server, zone).replace(*change)
    result, opendkim = verdicts(resolver, reference, altered)
    assert result.result == "fail"
    assert opendkim == "Bad signature"


def test_an_expired_signature_fails(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    key = publish(dns_server, zone, rsa_key(2048))
    signed = sign_with_tags(message(zone), key, zone, "sel", x=str(int(time.time()) - 3600))
    result, opendkim = verdicts(resolver, reference, signed)
    assert result.result == "fail"
    assert "expired" in result.reason
    assert opendkim == "Unable to verify"
    # The same signature unexpired passes: the expiry is what failed it.
    fresh = sign_with_tags(message(zone), key, zone, "sel", x=str(int(time.time()) + 3600))
    assert [r.result for r in verify(resolver, fresh)] == ["pass"]
    assert reference.opendkim(fresh) == "OK"


def test_content_appended_past_l_is_never_a_pass(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    signed = published_and_signed(dns_server, zone, length=True)
    assert [r.result for r in verify(resolver, signed)] == ["pass"]  # l= covers all of it
    assert reference.opendkim(signed) == "OK"
    appended = signed + b"\r\nClick here: http://evil.example/\r\n"
    result, opendkim = verdicts(resolver, reference, appended)
    assert result.result == "policy"
    assert "not a pass" in result.reason
    # OpenDKIM's cryptography agrees the signed part is intact; it leaves l= to policy.
    assert opendkim == "OK"


def test_an_l_longer_than_the_body_fails(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    key = publish(dns_server, zone, rsa_key(2048))
    raw = message(zone)
    body_length = len(raw.split(b"\r\n\r\n", 1)[1])
    signed = sign_with_tags(raw, key, zone, "sel", l=str(body_length + 10))
    result, opendkim = verdicts(resolver, reference, signed)
    assert (result.result, result.reason) == ("fail", f"l={body_length + 10} exceeds the body")
    assert opendkim == "Unable to verify"
    exact = sign_with_tags(raw, key, zone, "sel", l=str(body_length))
    assert [r.result for r in verify(resolver, exact)] == ["pass"]


def test_a_512_bit_rsa_key_fails(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    signed = published_and_signed(dns_server, zone, rsa_key(512))
    result, opendkim = verdicts(resolver, reference, signed)
    assert result.result == "fail"
    assert "512 bits" in result.reason
    assert opendkim == "Unable to verify"
    assert [r.result for r in verify(resolver, signed, min_rsa_bits=512)] == ["pass"]


def test_a_missing_key_is_a_permerror(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    publish(dns_server, zone, rsa_key(2048), selector="other")
    signed = sign(message(zone), rsa_key(2048), zone)
    result, opendkim = verdicts(resolver, reference, signed)
    assert result.result == "permerror"
    assert "no key" in result.reason
    assert opendkim == "Key retrieval failed"


def test_a_key_lookup_that_times_out_is_a_temperror(zone: str) -> None:
    signed = sign(message(zone), rsa_key(2048), zone)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver([Nameserver("127.0.0.1", silent.getsockname()[1])], timeout=0.5)
        [result] = verify(resolver, signed)
    assert result.result == "temperror"


def test_a_key_whose_server_refuses_is_a_temperror(
    resolver: Resolver, reference: ReferenceTools
) -> None:
    # Knot answers REFUSED for a zone it does not serve: the key cannot be had now.
    signed = sign(message("not-served.test"), rsa_key(2048), "not-served.test")
    result, opendkim = verdicts(resolver, reference, signed)
    assert result.result == "temperror"
    # libopendkim reports both a missing key and a failed lookup as this one status.
    assert opendkim == "Key retrieval failed"


def test_every_signature_is_reported(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    good = rsa_key(2048)
    dns_server.serve(zone, [good.published("good"), good.published("bad")])
    signed = sign(message(zone), good, zone, "good")
    # A signature made with a key other than the one published at s=bad.
    forged = sign(signed, rsa_key(2048, "forger"), zone, "bad")
    results = verify(resolver, forged)
    assert [(r.selector, r.result) for r in results] == [("bad", "fail"), ("good", "pass")]
    assert results[0].header_b != results[1].header_b
    assert reference.opendkim(forged) == "OK"  # one good signature is enough for OpenDKIM too


# Broken DKIM-Signature fields (for a key published at s=sel), and what libopendkim says.
BROKEN = {
    "not-tag-value": (b"v=1; a=rsa-sha256; d={zone}; s=sel; garbage", "Syntax error"),
    "no-b": (b"v=1; a=rsa-sha256; d={zone}; s=sel; h=from; bh=AAAA", "Syntax error"),
    "unknown-a": (b"v=1; a=rsa-md5; d={zone}; s=sel; h=from; bh=AAAA; b=AAAA", "Unable to verify"),
    "bad-l": (
        b"v=1; a=rsa-sha256; d={zone}; s=sel; h=from; bh=AAAA; b=AAAA; l=-3",
        "Unable to verify",
    ),
    "not-ascii": (b"\xff\xfe; d=\xc3\x28", "Syntax error"),
    "not-ascii-d": (
        b"v=1; a=rsa-sha256; d=\xc3\xbc.{zone}; s=sel; h=from; bh=AAAA; b=AAAA",
        "Syntax error",
    ),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_signatures_are_permerrors(
    dns_server: AuthoritativeDns,
    resolver: Resolver,
    reference: ReferenceTools,
    zone: str,
    name: str,
) -> None:
    publish(dns_server, zone, rsa_key(2048))
    field, opendkim = BROKEN[name]
    raw = b"DKIM-Signature: " + field.replace(b"{zone}", zone.encode()) + b"\r\n" + message(zone)
    result, verdict = verdicts(resolver, reference, raw)
    assert result.result == "permerror", result
    assert verdict == opendkim


def test_a_key_of_another_type_than_a_is_a_permerror(
    dns_server: AuthoritativeDns, resolver: Resolver, reference: ReferenceTools, zone: str
) -> None:
    dns_server.serve(zone, [ed25519_key().published("sel")])
    signed = sign(message(zone), rsa_key(2048), zone)
    result, opendkim = verdicts(resolver, reference, signed)
    assert (result.result, result.reason) == ("permerror", "a=rsa-sha256 with a k=ed25519 key")
    assert opendkim == "Unable to verify"


@pytest.mark.parametrize(
    "raw",
    [
        b" leading continuation\r\nDKIM-Signature: v=1\r\n\r\nbody",
        b"DKIM-Signature\r\n\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=.; s=.; h=from; bh=AAAA; b=AAAA\r\n\r\n",
        b"DKIM-Signature: " + b"a" * 100000 + b"\r\n\r\n",
    ],
)
def test_hostile_messages_never_raise(resolver: Resolver, raw: bytes) -> None:
    results = verify(resolver, raw)
    assert all(r.result in ("permerror", "temperror") for r in results)


class CountingResolver(Resolver):
    """The real resolver, counting the lookups made through it."""

    lookups = 0

    async def resolve(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        self.lookups += 1
        return await super().resolve(name, rdtype)


def test_signatures_past_the_cap_cost_nothing(dns_server: AuthoritativeDns, zone: str) -> None:
    selectors = [f"s{i}" for i in range(1000)]
    dns_server.serve(zone, [rsa_key(1024).published(s) for s in selectors[:10]])
    raw = message(zone)
    fields = (
        b"".join(sign(raw, rsa_key(1024), zone, s).removesuffix(raw) for s in selectors[:10]) * 100
    )
    resolver = CountingResolver([Nameserver("127.0.0.1", dns_server.port)])
    results = verify(resolver, fields + raw, max_signatures=5)
    assert [(r.selector, r.result) for r in results] == [(s, "pass") for s in selectors[:5]]
    assert resolver.lookups == 5
