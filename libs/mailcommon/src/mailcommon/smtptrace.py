"""Pieces of the ``Received:`` trace field (RFC 5321 4.4) that smtp-in and smtp-submit share."""

from __future__ import annotations

import ipaddress
import re

# What may appear of a client's HELO argument: visible ASCII without comment parentheses or
# backslashes (a HELO name is untrusted input that ends up inside a header).
_HELO_UNSAFE = re.compile(r"[^\x21-\x27\x2a-\x5b\x5d-\x7e]")
MAX_HELO_IN_HEADER = 255


def protocol_name(*, esmtp: bool, tls: bool, smtputf8: bool, authenticated: bool = False) -> str:
    """The ``with`` keyword (RFC 3848, RFC 6531): SMTP, ESMTP, ESMTPS, UTF8SMTP or UTF8SMTPS,
    with an ``A`` after the SMTP part for an authenticated session (ESMTPSA, UTF8SMTPSA)."""
    auth = "A" if authenticated else ""
    if smtputf8:
        return f"UTF8SMTPS{auth}" if tls else f"UTF8SMTP{auth}"
    if tls:
        return f"ESMTPS{auth}"
    return f"ESMTP{auth}" if esmtp or authenticated else "SMTP"


def address_literal(ip: str) -> str:
    """``[192.0.2.7]`` or ``[IPv6:2001:db8::7]`` (RFC 5321 4.1.3); unparsable input is replaced."""
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "[unknown]"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return f"[{parsed.ipv4_mapped}]"
        return f"[IPv6:{parsed.compressed}]"
    return f"[{parsed}]"


def safe_helo(helo: str | None) -> str:
    """The client's HELO name, with anything that could break the header replaced by ``_``."""
    if not helo:
        return "unknown"
    return _HELO_UNSAFE.sub("_", helo)[:MAX_HELO_IN_HEADER]
