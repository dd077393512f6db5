"""Who may send as whom, and what submission adds to a message (RFC 6409 8).

An account may use, in MAIL FROM and in every address of the ``From:`` field, its own address
or an alias that delivers to it (the mailstore's ``sender-addresses``), each with or without a
``+tag`` and in any case. A message without ``Message-ID:`` or ``Date:`` gets one (RFC 6409 8.3,
8.4). The ``Received:`` field of a submission names the client only by its EHLO name, not its
address (RFC 5321 4.4 makes the address a SHOULD; submitted mail goes on to other people, and the
author's network location is theirs to keep): ``from <EHLO> by <host> (maildrop smtp-submit)
with ESMTPSA id <transaction> (TLS version and cipher)``, and no account name.
"""

from __future__ import annotations

import datetime
import secrets
from email.utils import format_datetime

from mailauth.headers import has_field
from mailcommon.addresses import base_local_part, normalize_domain, split_address
from mailcommon.smtptrace import safe_helo

# The most octets submission adds on top of a message: Return-Path (an address of 320), Received
# (an EHLO name of 255, a host of 253, a TLS description), Message-ID and Date.
MAX_ADDED_HEADERS = 4096
_MESSAGE_ID = frozenset({b"message-id"})
_DATE = frozenset({b"date"})


def canonical(address: str) -> str | None:
    """``address`` as the mailstore names it: lower case, without ``+tag``, domain in A-labels."""
    parts = split_address(address)
    if parts is None:
        return None
    base, domain = base_local_part(parts[0]), normalize_domain(parts[1])
    if base is None or domain is None:
        return None
    return f"{base}@{domain}"


def may_send_as(address: str, allowed: frozenset[str]) -> bool:
    """Whether ``address`` is one of ``allowed`` (canonical addresses)."""
    return canonical(address) in allowed


def not_yours(address: str) -> str:
    return f"553 5.7.1 <{address}>: Sender address not owned by the authenticated account"


def added_fields(message: bytes, hostname: str, *, when: datetime.datetime) -> bytes:
    """``Message-ID:`` and ``Date:`` for a message that lacks them (CRLF, or nothing)."""
    out = b""
    if not has_field(message, _MESSAGE_ID):
        out += f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n".encode()
    if not has_field(message, _DATE):
        out += f"Date: {format_datetime(when)}\r\n".encode()
    return out


def return_path(sender: str) -> bytes:
    """``Return-Path:`` for the local copy only: local delivery is final delivery (RFC 5321
    4.4); the copy that goes to the outbound queue leaves without it (the final receiver adds
    its own)."""
    return f"Return-Path: <{sender}>\r\n".encode("utf-8", errors="surrogateescape")


def received(
    *,
    helo: str | None,
    hostname: str,
    protocol: str,
    transaction_id: str,
    tls: str | None,
    when: datetime.datetime,
) -> bytes:
    """The ``Received:`` field of the submission (on both the local and the outbound copy)."""
    comment = f"\r\n\t({tls})" if tls else ""
    text = (
        f"Received: from {safe_helo(helo)}\r\n"
        f"\tby {hostname} (maildrop smtp-submit) with {protocol} id {transaction_id}{comment};\r\n"
        f"\t{format_datetime(when)}\r\n"
    )
    return text.encode("utf-8", errors="surrogateescape")
