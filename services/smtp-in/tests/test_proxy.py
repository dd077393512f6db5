"""The PROXY protocol (PROXY_PROTOCOL=true): v1 and v2 headers from a trusted balancer name the
client that limits, logs and ``Received:`` see; anything else is closed before the greeting."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest
from mailstack import proxyheaders
from mailstack.logs import wait_for_records
from smtp_testlib import Mail, SmtpProcess, read_reply, split_trace

PROXIED = {
    "PROXY_PROTOCOL": "true",
    "PROXY_TRUSTED_NETWORKS": "10.9.0.0/16, 127.0.0.1/32",
    "PROXY_PROTOCOL_TIMEOUT": "3",
    "SMTP_MAX_CONNECTIONS_PER_IP": "2",
}


@pytest.fixture(scope="module")
def proxied(mail: Mail, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpProcess]:
    proc = SmtpProcess(mail.stack, PROXIED, tmp_path_factory.mktemp("proxied") / "smtp-in.log")
    yield proc
    proc.terminate()


def open_with(port: int, header: bytes, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(header)
    return sock


def greeted(sock: socket.socket, buf: bytearray) -> bytes:
    reply = read_reply(sock, buf)
    assert reply.startswith(b"220 "), reply
    return reply


def closed_without_greeting(sock: socket.socket) -> bool:
    """True when the server closes having sent nothing at all."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def deliver(sock: socket.socket, buf: bytearray, rcpt: str, subject: str) -> None:
    """One message over an open (greeted) connection, then QUIT."""
    for line, code in (
        (b"EHLO client.test", b"250"),
        (b"MAIL FROM:<alice@sender.test>", b"250"),
        (f"RCPT TO:<{rcpt}>".encode(), b"250"),
        (b"DATA", b"354"),
        (f"Subject: {subject}\r\n\r\nhello\r\n.".encode(), b"250"),
        (b"QUIT", b"221"),
    ):
        sock.sendall(line + b"\r\n")
        reply = read_reply(sock, buf)
        assert reply.startswith(code), (line, reply)
    sock.close()


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (proxyheaders.v1("203.0.113.7", 40001), "203.0.113.7"),
        (proxyheaders.v2("203.0.113.8", 40002), "203.0.113.8"),
        (proxyheaders.v2("2001:db8::25", 40003), "2001:db8::25"),
    ],
    ids=["v1", "v2", "v2-ipv6"],
)
def test_the_header_names_the_client_in_received_and_logs(
    mail: Mail, proxied: SmtpProcess, header: bytes, client: str
) -> None:
    user = mail.add_user()
    sock, buf = open_with(proxied.port, header), bytearray()
    greeted(sock, buf)
    deliver(sock, buf, f"{user}@pokey.onl", f"via {client}")
    (stored,) = mail.stored(user)
    trace, _ = split_trace(stored)
    literal = f"[IPv6:{client}]" if ":" in client else f"[{client}]"
    assert trace[1].startswith(f"Received: from client.test ({literal})".encode()), trace
    assert b"127.0.0.1" not in b"\n".join(trace)
    wait_for_records(proxied.logs, {"event": "message", "result": "delivered", "client": client})


def test_the_client_stays_the_proxied_one_after_starttls(mail: Mail, proxied: SmtpProcess) -> None:
    """aiosmtpd starts a new session at STARTTLS, its peer the balancer: ours carries over."""
    user = mail.add_user()
    raw, buf = open_with(proxied.port, proxyheaders.v2("203.0.113.77", 40077)), bytearray()
    greeted(raw, buf)
    raw.sendall(b"EHLO client.test\r\n")
    assert b"STARTTLS" in read_reply(raw, buf)
    raw.sendall(b"STARTTLS\r\n")
    assert read_reply(raw, buf).startswith(b"220")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the stack's own pair
    deliver(context.wrap_socket(raw), bytearray(), f"{user}@pokey.onl", "tls")
    (stored,) = mail.stored(user)
    received = b"".join(split_trace(stored)[0][1:3])
    assert b"([203.0.113.77])" in received and b"ESMTPS" in received, received


def test_a_local_header_keeps_the_connections_own_address(mail: Mail, proxied: SmtpProcess) -> None:
    """The balancer's health check (v2 LOCAL), from a trusted or a loopback peer."""
    for source in ("127.0.0.1", "127.0.0.2"):
        user = mail.add_user()
        sock, buf = open_with(proxied.port, proxyheaders.LOCAL, source), bytearray()
        greeted(sock, buf)
        deliver(sock, buf, f"{user}@pokey.onl", "local")
        (stored,) = mail.stored(user)
        assert f"({'[' + source + ']'})".encode() in split_trace(stored)[0][1]


def test_a_header_from_an_untrusted_peer_is_closed_without_greeting(
    proxied: SmtpProcess,
) -> None:
    sock = open_with(proxied.port, proxyheaders.v2("203.0.113.9", 1), source="127.0.0.2")
    assert closed_without_greeting(sock)
    wait_for_records(proxied.logs, {"event": "refused", "reason": "proxy_header"})


@pytest.mark.parametrize(
    "header",
    [
        b"EHLO client.test\r\n",
        b"PROXY TCP4 1.2.3.4\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x02ab",
    ],
    ids=["smtp-first", "v1-garbled", "v2-truncated"],
)
def test_a_missing_or_invalid_header_is_closed_without_greeting(
    proxied: SmtpProcess, header: bytes
) -> None:
    assert closed_without_greeting(open_with(proxied.port, header))


def test_a_silent_connection_is_closed_after_the_header_timeout(proxied: SmtpProcess) -> None:
    assert closed_without_greeting(open_with(proxied.port, b""))


def test_the_per_address_limit_counts_the_proxied_client(proxied: SmtpProcess) -> None:
    held = []
    for _ in range(2):
        sock, buf = open_with(proxied.port, proxyheaders.v2("198.51.100.4", 5000)), bytearray()
        greeted(sock, buf)
        held.append(sock)
    third, buf = open_with(proxied.port, proxyheaders.v1("198.51.100.4", 5001)), bytearray()
    assert read_reply(third, buf).startswith(b"421 4.7.0")
    third.close()
    # Another client behind the same balancer is served: the balancer's address is not counted.
    other, buf = open_with(proxied.port, proxyheaders.v2("198.51.100.5", 5002)), bytearray()
    greeted(other, buf)
    other.close()
    for sock in held:
        sock.close()
    wait_for_records(
        proxied.logs,
        {
            "event": "refused",
            "reason": "too_many_connections_from_address",
            "client": "198.51.100.4",
        },
    )


def test_off_by_default_a_header_is_just_a_bad_command(mail: Mail) -> None:
    sock, buf = open_with(mail.smtp_port, proxyheaders.v1("203.0.113.7", 1)), bytearray()
    greeted(sock, buf)
    assert read_reply(sock, buf).startswith(b"500 5.5.1")
    sock.close()
