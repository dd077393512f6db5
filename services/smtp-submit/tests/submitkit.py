"""What the submission tests share: where the stack's submission listens, a message, a reply."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstack.stack import Stack

HOST = "127.0.0.1"
MAX_RECIPIENTS = 5
MAX_PER_HOUR = 4
AUTH_FAIL_MAX_PER_USER = 3
MAX_PER_IP = 12


@dataclass(frozen=True)
class Submit:
    """Where the stack's submission listens, and a client TLS context that trusts its CA."""

    stack: Stack
    ca_file: Path
    tls: ssl.SSLContext

    @property
    def port(self) -> int:
        return self.stack.submit_port

    @property
    def tls_port(self) -> int:
        return self.stack.submits_port

    def starttls(self, user: str | None = None, password: str | None = None) -> smtplib.SMTP:
        """A session on 587's port after EHLO and STARTTLS (and AUTH, given credentials)."""
        client = smtplib.SMTP(HOST, self.port, local_hostname="client.test", timeout=30)
        client.ehlo()
        client.starttls(context=self.tls)
        client.ehlo()
        if user is not None and password is not None:
            client.login(user, password)
        return client

    def implicit(self, user: str | None = None, password: str | None = None) -> smtplib.SMTP_SSL:
        """A session on 465's port (TLS from the first octet), after EHLO (and AUTH)."""
        client = smtplib.SMTP_SSL(
            HOST, self.tls_port, local_hostname="client.test", context=self.tls, timeout=30
        )
        client.ehlo()
        if user is not None and password is not None:
            client.login(user, password)
        return client


def message(sender: str, to: str, subject: str = "hello", extra: str = "") -> bytes:
    """A small message from ``sender`` (its From:) to ``to``, without Message-ID or Date."""
    return (
        f"From: Sender <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n{extra}\r\nbody\r\n"
    ).encode()


def reply_of(exc: Any) -> tuple[int, str]:
    """(code, text) of an smtplib refusal."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return code, text.decode()
    return exc.smtp_code, exc.smtp_error.decode()
