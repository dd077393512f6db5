"""STLS (POP3) and STARTTLS (SMTP) ignore anything pipelined before the handshake.

The class of bug is CVE-2011-0411 (Postfix) / CVE-2011-1575 (Pure-FTPd): commands written in the
same packet as STARTTLS sit in the server's plaintext buffer and are executed after the handshake,
as if the client had sent them over TLS. A man in the middle uses that to inject commands.

Each test writes the TLS command and injected commands in one ``send``, completes the handshake,
sends one command of its own over TLS and checks that exactly one reply comes back, and that it is
the reply a fresh TLS session gives (the injected commands had no effect).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest

HOST = "127.0.0.1"


def read_line(sock: socket.socket | ssl.SSLSocket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed; partial {bytes(buf)!r}")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def read_all(sock: ssl.SSLSocket, buf: bytearray, expect: int, quiet: float = 0.5) -> list[bytes]:
    """At least ``expect`` lines, plus whatever else arrives until ``quiet`` seconds of silence."""
    sock.settimeout(30)
    while bytes(buf).count(b"\r\n") < expect:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    sock.settimeout(quiet)
    try:
        while chunk := sock.recv(4096):
            buf += chunk
    except (TimeoutError, ssl.SSLError):
        pass
    sock.settimeout(30)
    return [line for line in bytes(buf).split(b"\r\n") if line]


def connect(port: int, greeting: bytes) -> tuple[socket.socket, bytearray]:
    """A plaintext connection to ``port`` whose greeting starts with ``greeting``, and its buffer."""
    plain = socket.create_connection((HOST, port), timeout=30)
    buf = bytearray()
    assert read_line(plain, buf).startswith(greeting)
    return plain, buf


def upgrade_with(
    plain: socket.socket,
    buf: bytearray,
    tls_context: ssl.SSLContext,
    *,
    command: bytes,
    injected: str,
    ready: bytes,
) -> ssl.SSLSocket:
    """Write ``command`` and ``injected`` in one ``send``; the reply must start with ``ready``
    with nothing after it in plaintext; then the TLS handshake."""
    plain.sendall(command + b"\r\n" + injected.encode() + b"\r\n")
    assert read_line(plain, buf).startswith(ready)
    assert not buf, f"plaintext after {ready.decode()} to {command.decode()}: {bytes(buf)!r}"
    return tls_context.wrap_socket(plain)


@pytest.mark.parametrize(
    "injected",
    [
        "USER {user}",
        "USER {user}\r\nCAPA",
        "NOOP",
        "USER {user}\r\nPASS {password}",
    ],
)
def test_pop3_stls_ignores_pipelined_commands(
    stack: Any,
    make_user: Callable[..., tuple[str, str]],
    tls_context: ssl.SSLContext,
    injected: str,
) -> None:
    user, password = make_user()
    plain, buf = connect(stack.pop3_port, b"+OK")
    pipelined = injected.format(user=user, password=password)
    tls = upgrade_with(plain, buf, tls_context, command=b"STLS", injected=pipelined, ready=b"+OK")
    try:
        tls.sendall(f"PASS {password}\r\n".encode())
        started = time.monotonic()
        lines = read_all(tls, bytearray(), 1)
        # Exactly one reply, to our PASS: -ERR because no USER was given over TLS.
        assert len(lines) == 1, lines
        assert lines[0].startswith(b"-ERR"), lines
        assert b"[AUTH]" not in lines[0], lines  # not a login attempt with an injected USER
        assert time.monotonic() - started < 10
        # and the session is a fresh one: a proper login now works
        tls.sendall(f"USER {user}\r\nPASS {password}\r\nQUIT\r\n".encode())
        lines = read_all(tls, bytearray(), 3, quiet=0.1)
        assert [line[:3] for line in lines] == [b"+OK"] * 3, lines
    finally:
        tls.close()


@pytest.mark.parametrize(
    "injected",
    [
        "RSET",
        "MAIL FROM:<evil@x.test>",
        "EHLO evil.test\r\nMAIL FROM:<evil@x.test>",
        "HELO evil.test\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<{user}@pokey.onl>",
    ],
)
def test_smtp_starttls_ignores_pipelined_commands(
    stack: Any,
    make_user: Callable[..., tuple[str, str]],
    tls_context: ssl.SSLContext,
    injected: str,
) -> None:
    user, _ = make_user()
    plain, buf = connect(stack.smtp_port, b"220")
    plain.sendall(b"EHLO client.test\r\n")
    while not (line := read_line(plain, buf)).startswith(b"250 "):
        assert line.startswith(b"250-"), line
    tls = upgrade_with(
        plain,
        buf,
        tls_context,
        command=b"STARTTLS",
        injected=injected.format(user=user),
        ready=b"220",
    )
    try:
        # After TLS the session starts over (RFC 3207 4.2): no HELO, no MAIL, whatever was injected.
        tls.sendall(f"RCPT TO:<{user}@pokey.onl>\r\n".encode())
        lines = read_all(tls, bytearray(), 1)
        assert len(lines) == 1, lines
        assert lines[0].startswith(b"503"), lines
        tls.sendall(b"EHLO client.test\r\nRCPT TO:<" + user.encode() + b"@pokey.onl>\r\n")
        lines = read_all(tls, bytearray(), 2)
        assert lines[-1].startswith(b"503"), lines  # still no MAIL in this session
        assert all(line.startswith(b"250") for line in lines[:-1]), lines
        tls.sendall(b"QUIT\r\n")
    finally:
        tls.close()
