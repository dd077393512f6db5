"""Domain names as the checks compare them: A-labels, and organizational domains (RFC 7489 3.2)."""

from __future__ import annotations

import functools
import re

import dns.exception
import dns.name
from publicsuffixlist import PublicSuffixList

# Letters, digits, hyphens and underscores (as in _domainkey names) in dot-separated labels.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


@functools.lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str | None:
    """``domain`` lower-cased, without a final dot, U-labels as A-labels (RFC 7489 6.6.1);
    ``None`` for what is no host name (empty, a label too long, a bad U-label, a character
    outside letters, digits, ``-`` and ``_``). Remembered: one message asks for the same few
    names up to six times (From, DMARC, alignment), at about 13 µs each through dnspython."""
    domain = domain.strip().rstrip(".")
    if not domain:
        return None
    try:
        name = dns.name.from_unicode(domain)
    except (dns.exception.DNSException, UnicodeError):
        return None
    text = name.to_text(omit_final_dot=True).lower()
    return text if _HOST_NAME.fullmatch(text) else None


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # parses the bundled list: once per process


def organizational_domain(domain: str) -> str:
    """The public suffix plus one label (RFC 7489 3.2); a public suffix is its own."""
    return _public_suffixes().privatesuffix(domain) or domain
