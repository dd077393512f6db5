"""The trace headers smtp-in prepends to every message: ``Return-Path:`` and ``Received:``.

``Received:`` follows RFC 5321 4.4 and the shape Postfix writes::

    Received: from client.example ([192.0.2.7])
    \tby mail.pokey.onl (maildrop smtp-in) with ESMTPS id 3f9a...
    \tfor <bob@pokey.onl>; Fri, 27 Nov 2026 06:00:00 +0000
"""

from __future__ import annotations

import datetime
from email.utils import format_datetime

from mailcommon.smtptrace import address_literal, safe_helo

# The most octets Return-Path: and Received: can take (two addresses of at most 320 characters, in
# UTF-8, a HELO name of 255 and a host name of 253).
MAX_TRACE_HEADERS = 4096
# The most octets of every header smtp-in adds: the trace headers, Authentication-Results (at most
# 10 DKIM results of a 253-character domain and selector each, an SPF identity of 320) and the
# X-Spam lines. smtp-in's SIZE is MAX_MESSAGE_SIZE minus this, so a message it accepts with its
# headers added never exceeds the mailstore's MAX_MESSAGE_SIZE.
MAX_ADDED_HEADERS = 16384


def received(
    *,
    helo: str | None,
    peer_ip: str,
    hostname: str,
    protocol: str,
    transaction_id: str,
    recipient: str | None,
    when: datetime.datetime | None = None,
) -> str:
    """The ``Received:`` header (folded, CRLF line ends, final CRLF included)."""
    stamp = format_datetime(when or datetime.datetime.now(datetime.UTC))
    lines = [
        f"Received: from {safe_helo(helo)} ({address_literal(peer_ip)})",
        f"\tby {hostname} (maildrop smtp-in) with {protocol} id {transaction_id}",
    ]
    if recipient is not None:
        lines.append(f"\tfor <{recipient}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{stamp}")
    return "\r\n".join(lines) + "\r\n"


def return_path(sender: str) -> str:
    """``Return-Path: <sender>`` (``<>`` for the null sender), final CRLF included."""
    path = "<>" if sender in {"", "<>"} else f"<{sender}>"
    return f"Return-Path: {path}\r\n"


def trace_headers(
    *,
    sender: str,
    helo: str | None,
    peer_ip: str,
    hostname: str,
    protocol: str,
    transaction_id: str,
    recipient: str | None,
    when: datetime.datetime | None = None,
) -> bytes:
    """``Return-Path:`` then ``Received:``, as octets (UTF-8 for SMTPUTF8 addresses, RFC 6532)."""
    text = return_path(sender) + received(
        helo=helo,
        peer_ip=peer_ip,
        hostname=hostname,
        protocol=protocol,
        transaction_id=transaction_id,
        recipient=recipient,
        when=when,
    )
    # aiosmtpd decodes arguments with surrogateescape: give back the octets the client sent.
    return text.encode("utf-8", errors="surrogateescape")
