"""Limits: recipients, message size, connections (global and per address), idle and DATA timeouts."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from mailstack.logs import wait_for_records
from smtp_in.headers import MAX_ADDED_HEADERS
from smtp_testlib import Mail, SmtpProcess, read_reply, split_trace, wait_for

LIMITS = {
    "SMTP_MAX_RECIPIENTS": "3",
    "SMTP_MAX_CONNECTIONS": "3",
    "SMTP_MAX_CONNECTIONS_PER_IP": "2",
    "MAX_MESSAGE_SIZE": "65536",
    "SMTP_IDLE_TIMEOUT": "2",
    "SMTP_DATA_TIMEOUT": "1",
}


@pytest.fixture(scope="module")
def limited(mail: Mail, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpProcess]:
    proc = SmtpProcess(mail.stack, LIMITS, tmp_path_factory.mktemp("limited") / "smtp-in.log")
    yield proc
    proc.terminate()


def connect(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, bytearray, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    buf = bytearray()
    return sock, buf, read_reply(sock, buf)


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_too_many_recipients(mail: Mail, limited: SmtpProcess) -> None:
    users = [mail.add_user() for _ in range(4)]
    with smtplib.SMTP("127.0.0.1", limited.port) as client:
        client.ehlo()
        client.mail("alice@pokey.onl")
        assert [client.rcpt(f"{u}@pokey.onl")[0] for u in users[:3]] == [250, 250, 250]
        code, text = client.rcpt(f"{users[3]}@pokey.onl")
        assert (code, text[:5]) == (452, b"4.5.3")
        assert client.data(b"Subject: three\r\n\r\nx\r\n")[0] == 250
    assert [len(mail.stored(u)) for u in users] == [1, 1, 1, 0]


def test_oversized_message_gets_552_and_nothing_is_stored(mail: Mail, limited: SmtpProcess) -> None:
    bob = mail.add_user()
    with smtplib.SMTP("127.0.0.1", limited.port) as client:
        client.ehlo()
        assert int(client.esmtp_features["size"]) == 65536 - MAX_ADDED_HEADERS
        client.mail("alice@pokey.onl")
        client.rcpt(f"{bob}@pokey.onl")
        code, text = client.data(b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 1000)
        assert (code, text[:5]) == (552, b"5.3.4")
        # The connection stays usable.
        client.sendmail("alice@pokey.onl", [f"{bob}@pokey.onl"], b"Subject: small\r\n\r\nok\r\n")
    messages = mail.stored(bob)
    assert len(messages) == 1
    assert split_trace(messages[0])[1] == b"Subject: small\n\nok\n"


def test_connection_limits_global_and_per_address(limited: SmtpProcess) -> None:
    port = limited.port
    a1, _, g1 = connect(port, "127.0.0.1")
    a2, _, g2 = connect(port, "127.0.0.1")
    assert g1.startswith(b"220 ") and g2.startswith(b"220 ")
    a3, _, g3 = connect(port, "127.0.0.1")
    assert g3 == b"421 4.7.0 Too many connections, try again later"
    assert closed(a3)
    b1, _, g4 = connect(port, "127.0.0.2")  # another address: allowed, three in all
    assert g4.startswith(b"220 ")
    c1, _, g5 = connect(port, "127.0.0.3")  # beyond the global limit
    assert g5.startswith(b"421 4.7.0 ")
    assert closed(c1)
    a1.close()

    def admitted() -> bool:
        sock, _, greeting = connect(port, "127.0.0.3")
        sock.close()
        return greeting.startswith(b"220 ")

    wait_for(admitted, 5, "a freed slot")
    for sock in (a2, a3, b1, c1):
        sock.close()
    for reason in ("too_many_connections_from_address", "too_many_connections"):
        wait_for_records(limited.logs, {"event": "refused", "reason": reason})


def test_connections_closed_at_once_give_their_slot_back(
    mail: Mail, spawn_smtp: Callable[..., SmtpProcess]
) -> None:
    # Health probes' connect-and-close. aiosmtpd keeps a connection half open after the client's
    # EOF until its session task closes it, which on uvloop it never did: each probe held its
    # slot until the idle timeout (the default 300 s here, far beyond the wait below).
    server = spawn_smtp(mail.stack, SMTP_MAX_CONNECTIONS="3")
    for _ in range(6):
        socket.create_connection(("127.0.0.1", server.port), timeout=10).close()

    def all_admitted() -> bool:
        socks = [connect(server.port) for _ in range(3)]
        for sock, _, _ in socks:
            sock.close()
        return all(greeting.startswith(b"220 ") for _, _, greeting in socks)

    wait_for(all_admitted, 10, "the probes' slots")


def test_idle_timeout(limited: SmtpProcess) -> None:
    sock, buf, _ = connect(limited.port)
    sock.sendall(b"EHLO idle.test\r\n")
    read_reply(sock, buf)
    started = time.monotonic()
    assert read_reply(sock, buf) == b"421 4.4.2 Timeout exceeded, closing connection"
    # The timing is the behaviour: SMTP_IDLE_TIMEOUT=2 fires near 2 s (our own timer, not
    # aiosmtpd's, which is set years out), with slack for a loaded 2-core machine.
    assert 1.5 < time.monotonic() - started < 5
    assert closed(sock)


def test_data_timeout_is_inactivity_not_total_time(mail: Mail, limited: SmtpProcess) -> None:
    bob = mail.add_user()
    sock, buf, _ = connect(limited.port)
    for line in (
        b"EHLO slow.test",
        b"MAIL FROM:<a@pokey.onl>",
        f"RCPT TO:<{bob}@pokey.onl>".encode(),
        b"DATA",
    ):
        sock.sendall(line + b"\r\n")
        read_reply(sock, buf)
    # A trickle with pauses shorter than SMTP_DATA_TIMEOUT, for longer than both timeouts: the
    # timing is the behaviour (0.7 s of slack per pause for a loaded machine).
    for i in range(9):
        sock.sendall(f"line {i}\r\n".encode())
        time.sleep(0.3)
    sock.sendall(b".\r\n")
    assert read_reply(sock, buf).startswith(b"250 2.0.0 ")
    # Now a stall inside DATA.
    for line in (b"MAIL FROM:<a@pokey.onl>", f"RCPT TO:<{bob}@pokey.onl>".encode(), b"DATA"):
        sock.sendall(line + b"\r\n")
        read_reply(sock, buf)
    sock.sendall(b"Subject: stalled\r\n")
    started = time.monotonic()
    assert read_reply(sock, buf) == b"421 4.4.2 Timeout exceeded, closing connection"
    assert 0.7 < time.monotonic() - started < 1.9  # the DATA timeout (1 s), not the idle one (2 s)
    assert closed(sock)
    assert len(mail.stored(bob)) == 1
