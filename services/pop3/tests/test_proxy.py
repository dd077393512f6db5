"""The PROXY protocol (PROXY_PROTOCOL=true) on both listeners, 110 and 995 (header before TLS):
the client a trusted balancer names is what the limits, throttles and logs see; a connection
without a valid header, or from elsewhere, is closed before the greeting."""

from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable

import pytest
from mailstack import proxyheaders
from mailstack.logs import wait_for_records
from mailstack.stack import Stack
from pop3kit import HOST, Mail, Pop3Proc, Raw

DAY = "86400"
PROXIED = {
    "PROXY_PROTOCOL": "true",
    "PROXY_TRUSTED_NETWORKS": "10.9.0.0/16,127.0.0.1/32",
    "PROXY_PROTOCOL_TIMEOUT": "3",
    "MAX_CONNECTIONS_PER_IP": "2",
    "POP3_AUTH_FAIL_MAX_PER_IP": "2",
    "POP3_AUTH_FAIL_MAX_PER_USER": "1000",
    "POP3_AUTH_FAIL_DELAY": "0.05",
    "POP3_AUTH_FAIL_WINDOW": DAY,
}


@pytest.fixture(scope="module")
def proxied(pop3_factory: Callable[[dict[str, str]], Pop3Proc]) -> Pop3Proc:
    return pop3_factory(PROXIED)


def client_address() -> str:
    """A documentation address of this test's own (the throttles' counters live in Redis)."""
    return f"203.0.{random.randint(0, 255)}.{random.randint(1, 254)}"


def open_with(
    port: int,
    header: bytes,
    *,
    tls: ssl.SSLContext | None = None,
    source: str = "127.0.0.1",
) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10, source_address=(source, 0))
    sock.sendall(header)
    return tls.wrap_socket(sock) if tls is not None else sock


def closed_without_greeting(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    finally:
        sock.close()


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("implicit_tls", [False, True], ids=["110", "995"])
def test_a_session_through_the_header_logs_the_client(
    mail: Mail,
    proxied: Pop3Proc,
    client_tls: ssl.SSLContext,
    version: str,
    implicit_tls: bool,
) -> None:
    user, pw = mail.user()
    mail.deliver(user, b"Subject: proxied\r\n\r\nhello\r\n")
    client, port = client_address(), random.randint(1024, 65535)
    header = getattr(proxyheaders, version)(client, port)
    sock = open_with(
        proxied.pop3s_port if implicit_tls else proxied.port,
        header,
        tls=client_tls if implicit_tls else None,
    )
    r = Raw(0, sock=sock)
    assert r.line().startswith(b"+OK")
    assert r.cmd(f"USER {user}").startswith(b"+OK")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    assert r.cmd("RETR 1").startswith(b"+OK")
    assert b"hello" in r.multi()
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
    wait_for_records(
        proxied.logs,
        {"event": "session", "peer": f"{client}:{port}", "tls": implicit_tls, "result": "quit"},
    )


def test_the_client_hello_may_come_in_the_same_segment_as_the_header(
    proxied: Pop3Proc, client_tls: ssl.SSLContext
) -> None:
    """A balancer forwards the client's first octets at once: nothing after the header is lost."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_tls.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock = socket.create_connection((HOST, proxied.pop3s_port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(proxyheaders.v2(client_address(), 995) + outgoing.read())

    def pump() -> None:
        sock.sendall(outgoing.read())
        chunk = sock.recv(65536)
        assert chunk, "closed during the handshake"
        incoming.write(chunk)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump()
    greeting = b""
    while not greeting.endswith(b"\r\n"):
        try:
            greeting += tls.read(1024)
        except ssl.SSLWantReadError:
            pump()
    sock.close()
    assert greeting.startswith(b"+OK"), greeting


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["110", "995"])
def test_a_local_header_keeps_the_connections_own_address(
    proxied: Pop3Proc, client_tls: ssl.SSLContext, implicit_tls: bool
) -> None:
    """The balancer's health check (v2 LOCAL), here from a loopback peer that is not trusted."""
    sock = open_with(
        proxied.pop3s_port if implicit_tls else proxied.port,
        proxyheaders.LOCAL,
        tls=client_tls if implicit_tls else None,
        source="127.0.0.2",
    )
    r = Raw(0, sock=sock)
    assert r.line().startswith(b"+OK")
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
    wait_for_records(proxied.logs, lambda e: str(e.get("peer", "")).startswith("127.0.0.2:"))


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["110", "995"])
def test_a_header_from_an_untrusted_peer_is_closed_without_greeting(
    proxied: Pop3Proc, implicit_tls: bool
) -> None:
    port = proxied.pop3s_port if implicit_tls else proxied.port
    sock = open_with(port, proxyheaders.v2(client_address(), 1), source="127.0.0.2")
    assert closed_without_greeting(sock)
    wait_for_records(proxied.logs, {"event": "refusal", "reason": "proxy_header"})


@pytest.mark.parametrize(
    "header",
    [b"USER bob\r\n", b"PROXY TCP4 1.2.3.4 x\r\n", b"PROXY " + b"9" * 200, b""],
    ids=["pop3-first", "v1-garbled", "v1-endless", "silent"],
)
def test_a_missing_or_invalid_header_is_closed_without_greeting(
    proxied: Pop3Proc, header: bytes
) -> None:
    assert closed_without_greeting(open_with(proxied.port, header))


def test_a_tls_handshake_without_a_header_is_closed(
    proxied: Pop3Proc, client_tls: ssl.SSLContext
) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        open_with(proxied.pop3s_port, b"", tls=client_tls)


def test_the_connection_limit_counts_the_proxied_client(proxied: Pop3Proc) -> None:
    client = client_address()
    held = [Raw(0, sock=open_with(proxied.port, proxyheaders.v2(client, 7000 + i))) for i in (0, 1)]
    for r in held:
        assert r.line().startswith(b"+OK")
    third = Raw(0, sock=open_with(proxied.port, proxyheaders.v1(client, 7002)))
    assert third.line().startswith(b"-ERR [SYS/TEMP]")
    third.close()
    # Another client behind the same balancer: the balancer's own address is not what counts.
    other = Raw(0, sock=open_with(proxied.port, proxyheaders.v2(client_address(), 7003)))
    assert other.line().startswith(b"+OK")
    for r in [*held, other]:
        r.close()


def test_the_failed_login_throttle_counts_the_proxied_client(mail: Mail, proxied: Pop3Proc) -> None:
    user, pw = mail.user()
    guesser, owner = client_address(), client_address()

    def login(client: str, password: str) -> bytes:
        r = Raw(0, sock=open_with(proxied.port, proxyheaders.v1(client, 4242)))
        assert r.line().startswith(b"+OK")
        assert r.cmd(f"USER {user}").startswith(b"+OK")
        reply = r.cmd(f"PASS {password}")
        r.close()
        return reply

    assert [login(guesser, "wrong")[:10] for _ in range(3)] == [b"-ERR [AUTH"] * 2 + [b"-ERR [LOGI"]
    assert login(owner, pw).startswith(b"+OK")  # the balancer's address is not throttled


def test_the_health_check_speaks_proxy_when_the_container_does(proxied: Pop3Proc) -> None:
    def probe(**env: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "mailcommon.healthcheck", f"pop3://{HOST}:{proxied.port}"],
            env={**os.environ, "PROXY_PROTOCOL": "false", **env},
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode

    assert probe(PROXY_PROTOCOL="true") == 0
    assert probe() == 1  # no header: closed without a greeting


def test_off_by_default_a_header_is_just_a_bad_command(stack: Stack) -> None:
    r = Raw(0, sock=open_with(stack.pop3_port, proxyheaders.v1(client_address(), 1)))
    assert r.line().startswith(b"+OK")
    assert r.line().startswith(b"-ERR")
    r.close()
