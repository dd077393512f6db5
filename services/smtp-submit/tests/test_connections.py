"""Connection limits over real sockets: per client address, both ports together; and SIGTERM."""

from __future__ import annotations

import contextlib
import smtplib
import socket

from mailstack.ports import wait_until
from submitkit import HOST, MAX_PER_IP, message


def greeting(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    return sock.recv(1024)


def test_connections_per_address_count_both_ports(submit):
    def fill() -> list[socket.socket] | None:
        """MAX_PER_IP connections, half on each port, all greeted (a connection of an earlier
        test may still be counted for a moment: then try again)."""
        held: list[socket.socket] = []
        for n in range(MAX_PER_IP):
            if n % 2:
                raw = socket.create_connection((HOST, submit.tls_port), timeout=10)
                sock: socket.socket = submit.tls.wrap_socket(raw)
            else:
                sock = socket.create_connection((HOST, submit.port), timeout=10)
            held.append(sock)
            if not greeting(sock).startswith(b"220 "):
                for s in held:
                    s.close()
                return None
        return held

    held = wait_until(fill, 30, "a full set of greeted connections")
    try:
        with socket.create_connection((HOST, submit.port), timeout=10) as extra:
            assert greeting(extra) == b"421 4.7.0 Too many connections, try again later\r\n"
            extra.settimeout(10)
            assert extra.recv(1024) == b""  # and closed
    finally:
        for sock in held:
            sock.close()
    # Released: a new session is served again.
    wait_until(lambda: greets_ok(submit), 30, "a session after the others closed")


def greets_ok(submit) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, submit.port)) as s:
        return greeting(s).startswith(b"220 ")
    return False


def test_sigterm_finishes_and_refuses(stack, submit, make_user, messages):
    """On SIGTERM an idle session is told 421 and closed, the service exits 0, and it serves again
    after a restart."""
    user, pw = make_user()
    idle = submit.starttls(user, pw)
    try:
        code = stack.stop_service("smtp-submit")
        assert code == 0
        try:
            reply = idle.noop()
        except smtplib.SMTPServerDisconnected:
            reply = (421, b"")
        assert reply[0] == 421
    finally:
        with contextlib.suppress(Exception):
            idle.close()
    stack.start_service("smtp-submit")
    rcpt, _ = make_user()
    with submit.implicit(user, pw) as c:
        assert c.sendmail(user, [rcpt], message(user, rcpt)) == {}
    assert len(messages(rcpt)) == 1
