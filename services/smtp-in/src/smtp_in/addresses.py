"""Envelope addresses: the address an RCPT names, to ask the mailstore about, or the reply that
refuses it on its syntax alone.

The rule that makes smtp-in never an open relay: an address is accepted only when the mailstore
knows its domain (one of its domains: ``MAIL_DOMAINS`` and those added over REST) and resolves
it to accounts; what is asked is ``local@domain`` with the local part lower-cased, any ``+tag``
removed, and the domain in A-labels. The local part must follow the account name rule
(``mailcommon.names``), which has no ``@``, ``%``, ``!``, ``"`` or ``:``, so a percent hack, a
quoted local part hiding another address or a bang path can only ever name a local address or
nobody. Source routes (``<@a,@b:user@dom>``) are parsed away by aiosmtpd and the final address
is judged by the same rule (RFC 5321 4.1.1.3 lets a server ignore the route).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailcommon.addresses import normalize_domain, split_address

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_ADDRESS_LENGTH = 320  # 64 octets of local part, '@', 255 of domain (RFC 5321 4.5.3.1)
NULL_SENDER = "<>"  # what aiosmtpd reports for MAIL FROM:<>


def _unquote(local: str) -> str | None:
    """The content of a quoted local part (``"a\\"b"`` → ``a"b``), or None when it is malformed."""
    if not (len(local) >= 2 and local.startswith('"') and local.endswith('"')):
        return None
    out: list[str] = []
    chars = iter(local[1:-1])
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                return None
            out.append(nxt)
        elif ch == '"':
            return None
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class RecipientCheck:
    """The outcome of :func:`check_recipient`: an address to ask the mailstore about, or a reply."""

    address: str | None = None
    reply: str | None = None
    reason: str = ""


def relay_denied(address: str) -> str:
    return f"550 5.7.1 <{address}>: Relay access denied"


def user_unknown(address: str) -> str:
    return f"550 5.1.1 <{address}>: Recipient address rejected: user unknown"


def check_recipient(address: str) -> RecipientCheck:
    """Map an RCPT address (as aiosmtpd parsed it) to the address to look up, or a refusal."""
    if _CONTROL_RE.search(address) or len(address) > MAX_ADDRESS_LENGTH:
        return RecipientCheck(reply="501 5.1.3 Bad recipient address syntax", reason="syntax")
    parts = split_address(address)
    if parts is None:
        return RecipientCheck(reply="501 5.1.3 Bad recipient address syntax", reason="syntax")
    local, domain = parts
    name = normalize_domain(domain)
    if name is None and not domain.startswith("["):
        return RecipientCheck(
            reply=f"553 5.1.2 <{address}>: Bad destination domain name", reason="bad_domain"
        )
    if name is None:  # an address literal: never one of ours
        return RecipientCheck(reply=relay_denied(address), reason="not_local_domain")
    if local.startswith('"'):
        # Malformed quoting names nobody; the mailstore still says whether the domain is ours.
        local = _unquote(local) or '"'
    return RecipientCheck(address=f"{local.lower()}@{name}")


def check_sender(address: str) -> str | None:
    """A refusal for a MAIL FROM address that we could not write into a header, else None."""
    if address == NULL_SENDER:
        return None
    if _CONTROL_RE.search(address) or len(address) > MAX_ADDRESS_LENGTH:
        return "553 5.1.7 Bad sender address syntax"
    return None
