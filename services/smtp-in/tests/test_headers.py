"""The Return-Path: and Received: headers."""

from __future__ import annotations

import datetime
import email
import email.policy
from typing import Any

from mailcommon.smtptrace import address_literal, protocol_name, safe_helo
from smtp_in.headers import MAX_TRACE_HEADERS, trace_headers

WHEN = datetime.datetime(2026, 11, 27, 6, 0, 0, tzinfo=datetime.UTC)
# One delivery's trace_headers arguments; each test changes what it is about.
DELIVERY: dict[str, Any] = {
    "sender": "alice@pokey.onl",
    "helo": "client.example",
    "peer_ip": "192.0.2.7",
    "hostname": "mail.pokey.onl",
    "protocol": "ESMTPS",
    "transaction_id": "0123456789abcdef",
    "recipient": "bob@pokey.onl",
    "when": WHEN,
}


def trace(**changes: Any) -> bytes:
    return trace_headers(**{**DELIVERY, **changes})


def test_trace_headers_one_recipient() -> None:
    text = trace()
    assert text == (
        b"Return-Path: <alice@pokey.onl>\r\n"
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mail.pokey.onl (maildrop smtp-in) with ESMTPS id 0123456789abcdef\r\n"
        b"\tfor <bob@pokey.onl>; Fri, 27 Nov 2026 06:00:00 +0000\r\n"
    )
    parsed = email.message_from_bytes(text + b"\r\nbody\r\n", policy=email.policy.default)
    assert parsed["Return-Path"] == "<alice@pokey.onl>"
    assert "for <bob@pokey.onl>" in str(parsed["Received"])


def test_trace_headers_several_recipients_and_null_sender() -> None:
    text = trace(
        sender="<>",
        helo=None,
        peer_ip="::1",
        hostname="mx.test",
        protocol="SMTP",
        transaction_id="id1",
        recipient=None,
    )
    assert text == (
        b"Return-Path: <>\r\n"
        b"Received: from unknown ([IPv6:::1])\r\n"
        b"\tby mx.test (maildrop smtp-in) with SMTP id id1;\r\n"
        b"\tFri, 27 Nov 2026 06:00:00 +0000\r\n"
    )


def test_utf8_addresses_are_utf8_octets() -> None:
    text = trace(
        sender="jürgen@bücher.test",
        helo="bücher.test",
        peer_ip="127.0.0.1",
        hostname="mx.test",
        protocol="UTF8SMTP",
        transaction_id="x",
    )
    assert text.startswith("Return-Path: <jürgen@bücher.test>\r\n".encode())
    assert b"from b_cher.test ([127.0.0.1])" in text


def test_hostile_helo_cannot_inject_headers() -> None:
    assert safe_helo("evil\r\nX-Injected: 1") == "evil__X-Injected:_1"
    assert safe_helo("a (b) c\\") == "a__b__c_"
    assert safe_helo("x" * 1000) == "x" * 255
    assert safe_helo("") == "unknown"


def test_address_literals() -> None:
    assert address_literal("192.0.2.1") == "[192.0.2.1]"
    assert address_literal("2001:db8::1") == "[IPv6:2001:db8::1]"
    assert address_literal("::ffff:192.0.2.1") == "[192.0.2.1]"
    assert address_literal("fe80::1%eth0") == "[IPv6:fe80::1]"
    assert address_literal("garbage") == "[unknown]"


def test_protocol_names() -> None:
    assert protocol_name(esmtp=False, tls=False, smtputf8=False) == "SMTP"
    assert protocol_name(esmtp=True, tls=False, smtputf8=False) == "ESMTP"
    assert protocol_name(esmtp=True, tls=True, smtputf8=False) == "ESMTPS"
    assert protocol_name(esmtp=True, tls=False, smtputf8=True) == "UTF8SMTP"
    assert protocol_name(esmtp=True, tls=True, smtputf8=True) == "UTF8SMTPS"
    assert protocol_name(esmtp=True, tls=True, smtputf8=False, authenticated=True) == "ESMTPSA"
    assert protocol_name(esmtp=True, tls=True, smtputf8=True, authenticated=True) == "UTF8SMTPSA"


def test_trace_headers_fit_the_allowance() -> None:
    longest = "\U0001f600" * 64 + "@" + "b\u00fccher." * 20 + "test"
    text = trace_headers(
        sender=longest,
        helo="h" * 2000,
        peer_ip="2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        hostname="m" * 253,
        protocol="UTF8SMTPS",
        transaction_id="f" * 16,
        recipient=longest,
    )
    assert len(text) < MAX_TRACE_HEADERS
