"""DMARC (RFC 7489): policy discovery, identifier alignment, the result and the disposition.

PyPI's ``dmarc`` package (1.2.1) was considered and rejected: its relaxed alignment takes a
``d=`` that is a parent of the From domain as aligned even when that parent is a public suffix,
and ``DMARC.get_result`` parses ``pct=`` but never applies it (only ``t=``). Reproduction::

    dmarc.DMARC().check_alignment("anything.co.uk", "co.uk", dmarc.DMARCAlignment.RELAXED)  # True

The record's tag list is read by dkimpy's RFC 6376 3.2 parser (RFC 7489 6.3: DMARC records use
DKIM's tag-value syntax); the organizational domain comes from the Public Suffix List.
"""

from __future__ import annotations

import random
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import dkim.util

from mailauth.dns import Resolver, TemporaryError
from mailauth.domains import ascii_domain, organizational_domain
from mailauth.verdicts import DkimResult, SpfResult

POLICIES = ("none", "quarantine", "reject")
# RFC 7489 6.6.3 step 2: a record is a DMARC record when it starts with this "v" tag.
_VERSION_TAG = re.compile(rb"\s*v\s*=\s*DMARC1\s*(;|$)")
# RFC 7489 6.6.4: a message that pct= exempts from the policy gets the next less strict one.
_LESS_STRICT = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass|fail|none|temperror|permerror
    from_domain: str  # RFC5322.From domain ("" when none could be found)
    policy: str  # the policy that applies: none|quarantine|reject ("" without a record)
    disposition: str  # what to do after pct= sampling: none|quarantine|reject
    aligned_by: str  # "spf", "dkim", "spf,dkim" or ""
    reason: str


@dataclass(frozen=True)
class _Record:
    domain: str  # where it was found: the From domain or its organizational domain
    tags: dict[bytes, bytes]


class _RecordError(Exception):
    """A DMARC record whose tag list does not parse (RFC 7489 11.2: permerror)."""


async def _discover(resolver: Resolver, from_domain: str) -> _Record | None:
    """RFC 7489 6.6.3 steps 1-5: the one DMARC record of the From domain or, failing any, of
    its organizational domain; ``None`` when that set is empty or has several."""
    org_domain = organizational_domain(from_domain)
    for domain in dict.fromkeys((from_domain, org_domain)):
        records = [r for r in await resolver.txt(f"_dmarc.{domain}") if _VERSION_TAG.match(r)]
        if len(records) > 1:
            return None
        if records:
            try:
                return _Record(domain, dkim.util.parse_tag_value(records[0]))
            except dkim.util.InvalidTagValueList as exc:
                raise _RecordError(f"_dmarc.{domain}: {exc!r}") from exc
    return None


def _has_reporting_uri(tags: dict[bytes, bytes]) -> bool:
    """RFC 7489 6.6.3 step 6.1: ``rua`` holds at least one syntactically valid URI."""
    for uri in tags.get(b"rua", b"").decode("ascii", errors="replace").split(","):
        parts = urllib.parse.urlsplit(uri.strip().partition("!")[0])
        if parts.scheme and (parts.netloc or parts.path):
            return True
    return False


def _policy(record: _Record, from_domain: str) -> str | None:
    """The policy for ``from_domain``: ``sp=`` when the record is its organizational domain's
    and it is a subdomain (RFC 7489 6.3), else ``p=``; an invalid ``p=`` or ``sp=`` is ``none``
    when ``rua`` is valid and ``None`` (no DMARC processing) when not (6.6.3 step 6)."""
    p = record.tags.get(b"p", b"").decode("ascii", errors="replace").lower()
    sp = record.tags.get(b"sp", p.encode()).decode("ascii", errors="replace").lower()
    if p not in POLICIES or sp not in POLICIES:
        return "none" if _has_reporting_uri(record.tags) else None
    return sp if record.domain != from_domain else p


def _percent(tags: dict[bytes, bytes]) -> int:
    """``pct=``; an invalid value is the default 100 (RFC 7489 6.3: syntax errors -> defaults)."""
    value = tags.get(b"pct", b"100")
    return int(value) if value.isdigit() and int(value) <= 100 else 100


def _aligned(domain: str, from_domain: str, mode: bytes) -> bool:
    """RFC 7489 3.1: strict: the same name; relaxed: the same organizational domain (a public
    suffix is its own, so ``d=co.uk`` does not align with ``example.co.uk``)."""
    normal = ascii_domain(domain)
    if normal is None:
        return False
    if mode == b"s":
        return normal == from_domain
    return organizational_domain(normal) == organizational_domain(from_domain)


def _alignment(record: _Record, from_domain: str, spf: SpfResult, dkim: list[DkimResult]) -> str:
    """Which identifiers align. SPF counts only as a ``pass`` for the MAIL FROM identity (RFC
    7489 4.1: "DMARC uses the result of SPF authentication of the MAIL FROM identity"); with a
    null MAIL FROM that identity is postmaster@<HELO name> (RFC 7208 2.4): mailauth.spf checks
    HELO only then, and reports it as scope "helo" (``smtp.helo`` in Authentication-Results), so
    both scopes count here.
    DKIM counts for any passing signature whose d= aligns (RFC 7489 3.1.1, 4.2)."""
    aspf = record.tags.get(b"aspf", b"r").lower()
    adkim = record.tags.get(b"adkim", b"r").lower()
    by = []
    if spf.result == "pass" and _aligned(spf.domain, from_domain, aspf):
        by.append("spf")
    if any(s.result == "pass" and _aligned(s.domain, from_domain, adkim) for s in dkim):
        by.append("dkim")
    return ",".join(by)


async def check_dmarc(
    resolver: Resolver,
    *,
    from_domain: str | None,
    spf: SpfResult,
    dkim: list[DkimResult],
    sample: Callable[[], float] = random.random,
) -> DmarcResult:
    """The DMARC verdict for a message whose RFC5322.From domain is ``from_domain``.

    ``from_domain`` ``None`` (no From, several, several addresses, unparsable): RFC 7489 6.6.1
    requires exactly one From domain and leaves other messages outside its scope; they are
    ``permerror`` here, not ``none``, so that adding a second From cannot pass as "the domain
    publishes no policy". ``sample()`` in [0, 1) below pct/100 applies the policy (6.6.4).
    """
    domain = ascii_domain(from_domain) if from_domain is not None else None
    if domain is None:
        return DmarcResult("permerror", "", "", "none", "", "no single RFC5322.From domain")
    try:
        record = await _discover(resolver, domain)
    except TemporaryError as exc:
        return DmarcResult("temperror", domain, "", "none", "", f"DNS: {exc}")
    except _RecordError as exc:
        return DmarcResult("permerror", domain, "", "none", "", f"invalid record {exc}")
    policy = _policy(record, domain) if record is not None else None
    if record is None or policy is None:
        why = "no DMARC record" if record is None else "invalid p= or sp= and no valid rua="
        return DmarcResult("none", domain, "", "none", "", why)
    aligned_by = _alignment(record, domain, spf, dkim)
    if aligned_by:
        return DmarcResult("pass", domain, policy, "none", aligned_by, f"aligned by {aligned_by}")
    percent = _percent(record.tags)
    if sample() * 100 < percent:
        return DmarcResult("fail", domain, policy, policy, "", "neither SPF nor DKIM aligned")
    reason = f"neither SPF nor DKIM aligned; policy not applied (pct={percent})"
    return DmarcResult("fail", domain, policy, _LESS_STRICT[policy], "", reason)
