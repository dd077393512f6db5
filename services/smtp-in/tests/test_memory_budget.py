"""The DATA memory budget: messages being received never take more memory than configured."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator

import pytest
from smtp_testlib import Mail, SmtpProcess

MiB = 1024 * 1024


@pytest.fixture
def budgeted(mail: Mail, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpProcess]:
    env = {
        "SMTP_DATA_MEMORY_BUDGET": str(4 * MiB),
        "SMTP_DATA_BUDGET_WAIT": "1",
        "MAX_MESSAGE_SIZE": str(8 * MiB),
    }
    proc = SmtpProcess(mail.stack, env, tmp_path_factory.mktemp("budget") / "smtp-in.log")
    yield proc
    proc.terminate()


def open_data(port: int, user: str, declared: int) -> smtplib.SMTP:
    """A transaction that has declared its SIZE and is inside DATA (after the 354)."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo()
    assert client.mail("alice@pokey.onl", [f"SIZE={declared}"])[0] == 250
    assert client.rcpt(f"{user}@pokey.onl")[0] == 250
    client.putcmd("data")
    assert client.getreply()[0] == 354
    return client


def test_data_waits_for_room_then_refuses_with_452(mail: Mail, budgeted: SmtpProcess) -> None:
    bob = mail.add_user()
    body = b"Subject: held\r\n\r\n" + b"z" * 76 + b"\r\n"
    holder = open_data(budgeted.port, bob, 700_000)  # reserves ~3.3 MiB of the 4 MiB
    second = smtplib.SMTP("127.0.0.1", budgeted.port, timeout=30)
    second.ehlo()
    second.mail("alice@pokey.onl", ["SIZE=700000"])
    second.rcpt(f"{bob}@pokey.onl")
    started = time.monotonic()
    code, text = second.docmd("DATA")
    assert (code, text[:5]) == (452, b"4.3.1")
    assert time.monotonic() - started >= 0.9  # it waited SMTP_DATA_BUDGET_WAIT first
    holder.send(body + b".\r\n")
    assert holder.getreply()[0] == 250
    holder.quit()
    # Room again: the refused sender's retry goes through.
    second.rset()
    second.sendmail("alice@pokey.onl", [f"{bob}@pokey.onl"], body)
    second.quit()
    assert len(mail.stored(bob)) == 2


def test_more_than_the_declared_size_is_refused(mail: Mail, budgeted: SmtpProcess) -> None:
    bob = mail.add_user()
    client = open_data(budgeted.port, bob, 1000)
    client.send(b"Subject: liar\r\n\r\n" + (b"x" * 998 + b"\r\n") * 200 + b".\r\n")
    code, text = client.getreply()
    assert (code, text[:5]) == (552, b"5.3.4")
    client.quit()
    assert mail.stored(bob) == []
