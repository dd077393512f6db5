"""The recipient cache: only "exists" is remembered; a user deleted meanwhile costs a 451, not mail."""

from __future__ import annotations

import smtplib
import uuid

from smtp_testlib import Mail


def rcpt(mail: Mail, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", mail.smtp_port) as client:
        client.ehlo()
        client.mail("alice@pokey.onl")
        return client.rcpt(address)


def test_unknown_user_is_not_remembered(mail: Mail) -> None:
    name = f"late{uuid.uuid4().hex[:8]}"
    assert rcpt(mail, f"{name}@pokey.onl")[0] == 550
    mail.add_user(name)
    assert rcpt(mail, f"{name}@pokey.onl")[0] == 250


def test_user_deleted_between_rcpt_and_data(mail: Mail) -> None:
    doomed, other = mail.add_user(), mail.add_user()
    assert rcpt(mail, f"{doomed}@pokey.onl")[0] == 250  # now cached as existing
    status, body = mail.api("DELETE", f"/api/v1/users/{doomed}?purge=true")
    assert status == 204, body
    with smtplib.SMTP("127.0.0.1", mail.smtp_port) as client:
        client.ehlo()
        client.mail("alice@pokey.onl")
        assert client.rcpt(f"{doomed}@pokey.onl")[0] == 250  # from the cache
        assert client.rcpt(f"{other}@pokey.onl")[0] == 250
        code, text = client.data(b"Subject: retry me\r\n\r\nx\r\n")
        assert (code, text[:5]) == (451, b"4.3.0")  # nothing stored; the sender retries
        # The retry: the deleted user is now refused, the other one gets the message.
        client.mail("alice@pokey.onl")
        assert client.rcpt(f"{doomed}@pokey.onl")[0] == 550
        assert client.rcpt(f"{other}@pokey.onl")[0] == 250
        assert client.data(b"Subject: retry me\r\n\r\nx\r\n")[0] == 250
    assert len(mail.stored(other)) == 1
