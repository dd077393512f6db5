"""TLS on the three front-end listeners for tests, opened by hand so the client checks the certificate against the
mail host name (smtplib and poplib would check it against the address they connected to)."""

from __future__ import annotations

import socket
import ssl

HOST = "127.0.0.1"


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def _reply(sock: socket.socket) -> bytes:
    """One SMTP reply (every line of a multi-line one)."""
    lines = b""
    while True:
        line = _line(sock)
        lines += line
        if line[3:4] != b"-":
            return lines


def open_tls(kind: str, port: int, context: ssl.SSLContext, hostname: str) -> ssl.SSLSocket:
    """A TLS session on ``port``: ``smtp`` (STARTTLS), ``stls`` (POP3 STLS) or ``pop3s``."""
    sock = socket.create_connection((HOST, port), timeout=30)
    if kind == "smtp":
        assert _reply(sock).startswith(b"220")
        sock.sendall(b"EHLO client.example.org\r\n")
        assert b"STARTTLS" in _reply(sock)
        sock.sendall(b"STARTTLS\r\n")
        assert _reply(sock).startswith(b"220")
    elif kind == "stls":
        assert _line(sock).startswith(b"+OK")
        sock.sendall(b"STLS\r\n")
        assert _line(sock).startswith(b"+OK")
    elif kind != "pop3s":
        raise ValueError(kind)
    tls = context.wrap_socket(sock, server_hostname=hostname)
    if kind == "pop3s":
        assert _line(tls).startswith(b"+OK")
    return tls


def still_talks(kind: str, tls: ssl.SSLSocket) -> bool:
    """A command on an open session gets its answer."""
    if kind == "smtp":
        tls.sendall(b"NOOP\r\n")
        return _reply(tls).startswith(b"250")
    tls.sendall(b"NOOP\r\n")
    return _line(tls).startswith((b"+OK", b"-ERR"))


def served_certificate(kind: str, port: int, context: ssl.SSLContext, hostname: str) -> bytes:
    """The DER certificate a new session on ``port`` is given (verified by ``context``)."""
    with open_tls(kind, port, context, hostname) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der
