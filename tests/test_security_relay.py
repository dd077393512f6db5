"""No open relay: from outside, every way of naming a non-local mailbox is refused with 5xx.

The stack's local domains are ``pokey.onl`` and ``example.test``; ``other.test`` is somebody else's.
Forms tried (and their upper/mixed-case variants): a plain foreign address, source routes, quoted
local parts hiding an address, the percent hack, double ``@``, a local domain as a prefix of a
foreign one, address literals, bang paths, trailing dots, ``localhost`` and the host name.
A quoted local part naming an existing local user may be delivered, but only to that user.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

HOST = "127.0.0.1"

RELAY_FORMS = [
    "user@other.test",
    "USER@OTHER.TEST",
    "User@Other.Test",
    "postmaster@other.test",
    "@pokey.onl:user@other.test",
    "@POKEY.ONL:user@other.test",
    "@pokey.onl,@example.test:user@other.test",
    '"user@other.test"@pokey.onl',
    '"USER@OTHER.TEST"@POKEY.ONL',
    '"user@other.test"@example.test',
    '"user%other.test"@pokey.onl',
    "user%other.test@pokey.onl",
    "USER%OTHER.TEST@POKEY.ONL",
    "user%other.test%pokey.onl@pokey.onl",
    "user@other.test@pokey.onl",
    "user@pokey.onl@other.test",
    "user@pokey.onl.other.test",
    "USER@POKEY.ONL.OTHER.TEST",
    "user@other.test.pokey.onl",
    "user@pokeyonl.test",
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    "user@[192.0.2.1]",
    "other.test!user@pokey.onl",
    "other.test!user",
    "user@other.test.",
    "user@localhost",
    "user@mail.pokey.onl",
    "user\\@other.test@pokey.onl",
    "user@other.test%pokey.onl",
    "user",
]


def rcpt(smtp: smtplib.SMTP, address: str) -> tuple[int, bytes]:
    return smtp.docmd(f"RCPT TO:<{address}>")


@pytest.fixture
def smtp(stack: Any) -> Any:
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as client:
        client.ehlo("outside.test")
        yield client


@pytest.mark.parametrize("address", RELAY_FORMS)
def test_relay_attempt_is_refused(smtp: smtplib.SMTP, address: str) -> None:
    assert smtp.mail("someone@outside.test")[0] == 250
    code, text = rcpt(smtp, address)
    assert 500 <= code <= 599, (address, code, text)


@pytest.mark.parametrize("address", RELAY_FORMS)
def test_relay_attempt_with_a_local_user_in_it_is_refused(
    smtp: smtplib.SMTP, make_user: Callable[..., tuple[str, str]], address: str
) -> None:
    """The same forms with an existing local user's name where ``user`` was."""
    local, _ = make_user()
    assert smtp.mail("someone@outside.test")[0] == 250
    tricky = address.replace("user", local).replace("USER", local.upper()).replace("User", local)
    code, text = rcpt(smtp, tricky)
    assert 500 <= code <= 599, (tricky, code, text)


def utf8cmd(smtp: smtplib.SMTP, line: str) -> tuple[int, bytes]:
    smtp.send(line.encode() + b"\r\n")  # smtplib's docmd only speaks ASCII
    return smtp.getreply()


def test_null_sender_and_smtputf8_do_not_open_a_relay(smtp: smtplib.SMTP) -> None:
    assert smtp.docmd("MAIL FROM:<>")[0] == 250
    assert 500 <= rcpt(smtp, "user@other.test")[0] <= 599
    smtp.rset()
    assert utf8cmd(smtp, "MAIL FROM:<\u00fc@outside.test> SMTPUTF8")[0] == 250
    for address in ("\u00fc@other.test", "user@\u00f6ther.test", "user@p\u00f6key.onl"):
        code, text = utf8cmd(smtp, f"RCPT TO:<{address}>")
        assert 500 <= code <= 599, (address, code, text)


def test_unknown_local_user_is_550(smtp: smtplib.SMTP) -> None:
    assert smtp.mail("someone@outside.test")[0] == 250
    for address in ("nobody-here@pokey.onl", '"nobody-here"@pokey.onl', "NOBODY-HERE@Example.Test"):
        code, text = rcpt(smtp, address)
        assert code == 550, (address, code, text)


def test_quoted_local_part_delivers_only_to_the_local_user(
    stack: Any,
    smtp: smtplib.SMTP,
    admin: httpx.Client,
    make_user: Callable[..., tuple[str, str]],
) -> None:
    """One transaction: every relay form refused, ``"bob"@pokey.onl`` accepted (or refused).

    Whatever is accepted ends up in bob's mailbox only, once; another local user receives nothing.
    """
    bob, _ = make_user()
    carol, _ = make_user()
    assert smtp.mail("someone@outside.test")[0] == 250
    for address in RELAY_FORMS:
        assert 500 <= rcpt(smtp, address)[0] <= 599, address
    code, text = rcpt(smtp, f'"{bob}"@pokey.onl')
    assert code in (250, 550, 553, 501), (code, text)
    code2, text2 = rcpt(smtp, f'"{bob}@other.test"@pokey.onl')
    assert 500 <= code2 <= 599, (code2, text2)
    if code == 250:
        code, text = smtp.data(b"Subject: quoted\r\n\r\nonly for bob\r\n")
        assert code == 250, text
        messages = admin.get(f"/users/{bob}/messages").json()["messages"]
        assert len(messages) == 1
        assert messages[0]["subject"] == "quoted"
    else:
        code, _ = smtp.data(b"Subject: quoted\r\n\r\nnobody\r\n")
        assert code >= 500  # no valid recipient: no transaction
    assert admin.get(f"/users/{carol}/messages").json()["messages"] == []


def test_transaction_with_only_refused_recipients_delivers_nothing(smtp: smtplib.SMTP) -> None:
    assert smtp.mail("someone@outside.test")[0] == 250
    assert 500 <= rcpt(smtp, "user@other.test")[0] <= 599
    code, text = smtp.docmd("DATA")
    assert code in (503, 554), (code, text)


def test_vrfy_and_expn_do_not_reveal_users(
    smtp: smtplib.SMTP, make_user: Callable[..., tuple[str, str]]
) -> None:
    """VRFY and EXPN answer the same for a user that exists and one that does not."""
    bob, _ = make_user()
    for command in ("VRFY", "EXPN"):
        known = smtp.docmd(command, f"{bob}@pokey.onl")
        unknown = smtp.docmd(command, "nobody-here@pokey.onl")
        assert known[0] == unknown[0], (command, known, unknown)
        assert known[1].replace(bob.encode(), b"X") == unknown[1].replace(b"nobody-here", b"X")
        assert known[0] != 250, known
