"""The stack as a whole survives restarts: data persists, SMTP says 4xx during a gap, nothing is lost."""

from __future__ import annotations

import poplib
import smtplib
from typing import Any

import pytest

HOST = "127.0.0.1"


def send(stack: Any, user: str, subject: str) -> None:
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
        smtp.sendmail(
            "alice@pokey.onl", [f"{user}@pokey.onl"], f"Subject: {subject}\r\n\r\n{subject}\r\n"
        )


def pop_subjects(stack: Any, user: str, password: str) -> list[str]:
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    try:
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        subjects = []
        for n in range(1, count + 1):
            _, lines, _ = pop.retr(n)
            subjects.append(lines[-1].decode())
        return subjects
    finally:
        pop.quit()


def test_down_and_up_keeps_users_and_mail(stack: Any, make_user: Any, mailbox: Any) -> None:
    user, password = make_user()
    send(stack, user, "kept")
    stack.restart_all()
    assert pop_subjects(stack, user, password) == ["kept"]
    assert [m["subject"] for m in mailbox(user)] == ["kept"]


def temporary_refusal(smtp: smtplib.SMTP, user: str) -> int:
    """Send while the mailstore is down; the reply code that refused the message."""
    try:
        smtp.sendmail("alice@pokey.onl", [f"{user}@pokey.onl"], b"Subject: gap\r\n\r\ngap\r\n")
    except smtplib.SMTPRecipientsRefused as exc:
        [(code, _)] = exc.recipients.values()
        return int(code)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code
    raise AssertionError("a message was accepted while the mailstore was down")


@pytest.mark.parametrize("service", ["redis", "mailstore-api", "smtp-in", "pop3"])
def test_data_survives_restart(stack: Any, make_user: Any, mailbox: Any, service: str) -> None:
    user, password = make_user()
    send(stack, user, f"before-{service}")
    stack.stop_service(service)
    stack.start_service(service)
    send(stack, user, f"after-{service}")
    assert pop_subjects(stack, user, password) == [f"before-{service}", f"after-{service}"]
    assert len(mailbox(user)) == 2
    # The account itself survived too: a wrong password is still wrong, the right one still right.
    with pytest.raises(poplib.error_proto):
        pop_subjects(stack, user, password + "x")


def test_smtp_says_4xx_while_the_mailstore_is_down(stack: Any, make_user: Any) -> None:
    user, password = make_user()
    send(stack, user, "one")
    stack.stop_service("mailstore-api")
    try:
        with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
            code = temporary_refusal(smtp, user)
        assert 400 <= code < 500  # at RCPT or at DATA: the sender keeps the message and retries
    finally:
        stack.start_service("mailstore-api")
    send(stack, user, "two")
    assert pop_subjects(stack, user, password) == ["one", "two"]


def test_two_pop3_replicas_share_the_maildrop_lock(stack: Any, make_user: Any) -> None:
    user, password = make_user()
    replica = stack.start_replica("pop3")
    first = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    first.user(user)
    first.pass_(password)
    try:
        second = poplib.POP3(HOST, replica["pop3"], timeout=30)
        second.user(user)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            second.pass_(password)
        second.close()
    finally:
        first.quit()
    # Once the first session is over, the replica serves the same user.
    again = poplib.POP3(HOST, replica["pop3"], timeout=30)
    again.user(user)
    again.pass_(password)
    assert again.stat() == (0, 0)
    again.quit()
