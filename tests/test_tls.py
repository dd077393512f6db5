"""TLS with the certificate the stack generated: implicit TLS on 995, STLS on 110, STARTTLS on 25."""

from __future__ import annotations

import poplib
import smtplib
import ssl
from typing import Any

HOST = "127.0.0.1"


def test_pop3s_implicit_tls(stack: Any, make_user: Any, tls_context: ssl.SSLContext) -> None:
    user, password = make_user()
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
        smtp.sendmail("alice@pokey.onl", [f"{user}@pokey.onl"], b"Subject: tls\r\n\r\nover TLS\r\n")
    pop = poplib.POP3_SSL(HOST, stack.pop3s_port, context=tls_context, timeout=30)
    try:
        assert isinstance(pop.sock, ssl.SSLSocket)
        assert pop.sock.version() in {"TLSv1.2", "TLSv1.3"}
        capabilities = pop.capa()
        assert "STLS" not in capabilities  # already encrypted
        assert "USER" in capabilities
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        assert count == 1
        _, lines, _ = pop.retr(1)
        assert lines[-1] == b"over TLS"
    finally:
        pop.quit()


def test_pop3_stls(stack: Any, make_user: Any, tls_context: ssl.SSLContext) -> None:
    user, password = make_user()
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    try:
        assert "STLS" in pop.capa()
        pop.stls(context=tls_context)
        assert isinstance(pop.sock, ssl.SSLSocket)
        assert "STLS" not in pop.capa()
        pop.user(user)
        pop.pass_(password)
        assert pop.stat() == (0, 0)
    finally:
        pop.quit()


def test_pop3s_refuses_untrusted_client_view(stack: Any) -> None:
    """A client that verifies against the system CAs rejects the self-signed certificate."""
    strict = ssl.create_default_context()
    strict.check_hostname = False
    try:
        poplib.POP3_SSL(HOST, stack.pop3s_port, context=strict, timeout=30)
    except ssl.SSLCertVerificationError:
        return
    raise AssertionError("a self-signed certificate passed verification against system CAs")


def test_smtp_starttls(
    stack: Any, make_user: Any, mailbox: Any, tls_context: ssl.SSLContext
) -> None:
    user, _ = make_user()
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
        smtp.ehlo("client.example.org")
        assert smtp.has_extn("starttls")
        smtp.starttls(context=tls_context)
        smtp.ehlo("client.example.org")
        assert not smtp.has_extn("starttls")
        smtp.sendmail("alice@example.org", [f"{user}@pokey.onl"], b"Subject: s\r\n\r\nsecret\r\n")
    [message] = mailbox(user)
    assert message["size"] > 0
