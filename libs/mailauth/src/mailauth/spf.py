"""SPF (RFC 7208) for MAIL FROM, or for the HELO name when MAIL FROM is empty, with pyspf.

pyspf does the evaluation: macros, the 10-DNS-mechanism and 2-void-lookup limits (permerror), every
result. Its lookups go through its documented plug point, the module global ``spf.DNSLookup``
(how it switches between pydns and dnspython), which this module points at
:func:`mailauth.dns.lookup_from_thread`: one resolver and one cache for every check, and the event
loop never waits on the network. The bridge only works inside :func:`mailauth.dns.run_in_thread`.
"""

from __future__ import annotations

import dns.rdata
import spf  # type: ignore[import-untyped]

from mailauth.dns import Resolver, TemporaryError, lookup_from_thread, run_in_thread
from mailauth.verdicts import SpfResult

__all__ = ["SpfResult", "check_spf"]

# RFC 7208 4.6.4: SHOULD bound the whole evaluation (at least 20 seconds); pyspf's querytime does.
QUERY_TIME = 20.0

Answer = list[tuple[tuple[str, str], object]]


def _data(rdata: dns.rdata.Rdata, qtype: str) -> object:
    """One answer in the shape of pyspf's own ``DNSLookup_dnspython``."""
    if qtype in ("A", "AAAA"):
        return rdata.address  # type: ignore[attr-defined]
    if qtype == "MX":
        return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    if qtype == "PTR":
        return rdata.target.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
    return tuple(rdata.strings)  # type: ignore[attr-defined]  # TXT, SPF


def _dns_lookup(name: str, qtype: str, strict: object = True, timeout: float = 0) -> Answer:
    """pyspf's ``DNSLookup`` signature; the resolver's own timeout bounds each lookup."""
    try:
        records = lookup_from_thread(name, qtype)
    except TemporaryError as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    return [((name, qtype), _data(rdata, qtype)) for rdata in records]


spf.DNSLookup = _dns_lookup


async def check_spf(resolver: Resolver, *, ip: str, mail_from: str, helo: str) -> SpfResult:
    """The SPF verdict for a client at ``ip``; never raises for what the client or DNS sent."""
    scope = "mailfrom" if mail_from else "helo"
    identity = mail_from or helo
    domain = str(spf.split_email(mail_from, helo)[1]).lower()
    if not domain or spf.RE_TOPLAB.split(domain)[-1]:
        # RFC 7208 4.3: a malformed or single-label domain is "none", without a lookup (the
        # test is pyspf's own, from its best_guess()).
        return SpfResult("none", scope, domain, identity, "not a multi-label domain name")

    def evaluate() -> tuple[str, str]:
        query = spf.query(i=ip, s=mail_from, h=helo, querytime=QUERY_TIME)
        result, _code, explanation = query.check()
        return str(result), str(explanation)

    try:
        result, explanation = await run_in_thread(resolver, evaluate)
    except spf.TempError as exc:
        result, explanation = "temperror", f"SPF Temporary Error: {exc}"
    except Exception as exc:  # pyspf on hostile input: a bad IP, a recursion assertion, ...
        result, explanation = "permerror", f"SPF Permanent Error: {type(exc).__name__}: {exc}"
    return SpfResult(result, scope, domain, identity, explanation)
