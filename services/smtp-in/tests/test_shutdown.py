"""SIGTERM: stop accepting, tell idle clients 421, let the transaction in flight finish, exit 0."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import pytest
from smtp_testlib import Mail, SmtpProcess, read_reply, split_trace


def test_sigterm_drains(mail: Mail, spawn_smtp: Callable[..., SmtpProcess]) -> None:
    server = spawn_smtp(mail.stack, SMTP_SHUTDOWN_GRACE="10")
    bob = mail.add_user()

    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    ibuf = bytearray()
    read_reply(idle, ibuf)
    idle.sendall(b"EHLO idle.test\r\n")
    read_reply(idle, ibuf)

    busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    bbuf = bytearray()
    read_reply(busy, bbuf)
    for line in (
        b"EHLO busy.test",
        b"MAIL FROM:<alice@pokey.onl>",
        f"RCPT TO:<{bob}@pokey.onl>".encode(),
    ):
        busy.sendall(line + b"\r\n")
        assert read_reply(busy, bbuf).startswith(b"250")

    server.proc.send_signal(signal.SIGTERM)
    # The idle session is told and closed.
    assert read_reply(idle, ibuf) == b"421 4.3.2 Service shutting down, try again later"
    assert idle.recv(1) == b""
    # No new connections.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).recv(1)
    # The transaction under way completes.
    busy.sendall(b"DATA\r\n")
    assert read_reply(busy, bbuf).startswith(b"354")
    busy.sendall(b"Subject: in flight\r\n\r\nfinished\r\n.\r\n")
    assert read_reply(busy, bbuf).startswith(b"250 2.0.0 Ok: queued as ")
    busy.sendall(b"MAIL FROM:<alice@pokey.onl>\r\n")
    try:
        reply = read_reply(busy, bbuf)
    except ConnectionError:
        reply = b"closed"
    assert reply in (b"421 4.3.2 Service shutting down, try again later", b"closed")
    started = time.monotonic()
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    assert [split_trace(m)[1] for m in mail.stored(bob)] == [b"Subject: in flight\n\nfinished\n"]
    assert '"event": "stopped"' in server.logs()
    assert "Traceback" not in server.logs()
