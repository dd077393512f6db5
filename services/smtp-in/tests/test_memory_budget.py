"""The DATA memory budget: messages being received never take more memory than configured."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator

import pytest
from smtp_testlib import Mail, SmtpProcess

MiB = 1024 * 1024


def smtp_with_budget(
    mail: Mail, tmp_path_factory: pytest.TempPathFactory, budget: int, size_limit: int
) -> Iterator[SmtpProcess]:
    """An smtp-in of its own with this budget and size limit, and a 1 s wait for room."""
    env = {
        "SMTP_DATA_MEMORY_BUDGET": str(budget),
        "SMTP_DATA_BUDGET_WAIT": "1",
        "MAX_MESSAGE_SIZE": str(size_limit),
    }
    proc = SmtpProcess(mail.stack, env, tmp_path_factory.mktemp("budget") / "smtp-in.log")
    yield proc
    proc.terminate()


@pytest.fixture
def budgeted(mail: Mail, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpProcess]:
    yield from smtp_with_budget(mail, tmp_path_factory, 4 * MiB, 8 * MiB)


def open_data(port: int, user: str, declared: int | None) -> smtplib.SMTP:
    """A transaction inside DATA (after the 354) that declared ``declared`` as its SIZE, or no
    SIZE when it is None."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo()
    options = [] if declared is None else [f"SIZE={declared}"]
    assert client.mail("alice@pokey.onl", options)[0] == 250
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


@pytest.fixture
def roomy(mail: Mail, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpProcess]:
    """A 32 MiB budget: an undeclared message reserves 4 MiB (4 x its first MiB), then 16 MiB
    (4 x the 4 MiB limit); five first steps fit with room for one second step beside them."""
    yield from smtp_with_budget(mail, tmp_path_factory, 32 * MiB, 4 * MiB)


def test_undeclared_messages_do_not_reserve_the_size_limit(mail: Mail, roomy: SmtpProcess) -> None:
    # Reserving 4 x the 4 MiB limit each, the third would wait for room and get 452.
    bob = mail.add_user()
    started = time.monotonic()
    clients = [open_data(roomy.port, bob, None) for _ in range(3)]
    assert time.monotonic() - started < 0.9
    for n, client in enumerate(clients):
        client.send(f"Subject: small {n}\r\n\r\nhello\r\n.\r\n".encode())
        assert client.getreply()[0] == 250
        client.quit()
    assert len(mail.stored(bob)) == 3


def test_an_undeclared_message_grows_its_reservation(mail: Mail, roomy: SmtpProcess) -> None:
    bob = mail.add_user()
    body = b"Subject: grows\r\n\r\n" + (b"g" * 998 + b"\r\n") * 3000  # 3 MB: 12 MiB reserved
    client = open_data(roomy.port, bob, None)
    client.send(body + b".\r\n")
    assert client.getreply()[0] == 250
    client.quit()
    [stored] = mail.stored(bob)
    assert stored.endswith(body.replace(b"\r\n", b"\n"))


def test_outgrowing_the_room_left_closes_with_421(mail: Mail, roomy: SmtpProcess) -> None:
    bob = mail.add_user()
    grower = open_data(roomy.port, bob, None)  # reserves 4 MiB
    holders = [open_data(roomy.port, bob, 2_000_000) for _ in range(2)]  # 8.6 MiB each
    # Exactly enough for the last line to take it past its first MiB: 12 MiB more is wanted,
    # 10.7 MiB is left, and everything sent has been read when the server gives up.
    head = b"Subject: too much at once\r\n\r\n"
    lines = (MiB - len(head)) // 1000 + 1
    grower.send(head + (b"y" * 998 + b"\r\n") * lines)
    code, text = grower.getreply()
    assert (code, text[:5]) == (421, b"4.3.1")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        grower.noop()
    for holder in holders:
        holder.send(b"Subject: held\r\n\r\nstill fine\r\n.\r\n")
        assert holder.getreply()[0] == 250
        holder.quit()
    assert [m.split(b"\n\n", 1)[1] for m in mail.stored(bob)] == [b"still fine\n"] * 2
    # All of it was given back: a message that needs the second step goes through again.
    again = open_data(roomy.port, bob, None)
    again.send(b"Subject: later\r\n\r\n" + (b"z" * 998 + b"\r\n") * 3000 + b".\r\n")
    assert again.getreply()[0] == 250
    again.quit()
    assert len(mail.stored(bob)) == 3
