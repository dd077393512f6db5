"""TLS: STLS (RFC 2595) and implicit TLS, with plain-text login refused before TLS.

Every test against ``strict`` runs on both event loops (``POP3_UVLOOP``): STLS upgrades the
connection with ``StreamWriter.start_tls``, which each loop implements in its own way.
"""

from __future__ import annotations

import base64
import poplib
import socket
import ssl
from collections.abc import Callable

import pytest
from mailstack.logs import wait_for_records
from pop3kit import HOST, Mail, Pop3Proc, Raw

STRICT = {"POP3_ALLOW_PLAINTEXT_AUTH": "false"}


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def strict(
    request: pytest.FixtureRequest, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> Pop3Proc:
    """A pop3d with the default policy (passwords only over TLS), on one event loop and then
    the other."""
    loop = str(request.param)
    proc = pop3_factory({**STRICT, "POP3_UVLOOP": str(loop == "uvloop").lower()})
    wait_for_records(proc.logs, {"event": "listening", "loop": loop})
    return proc


def test_capa_and_refusals_before_tls(strict: Pop3Proc, mail: Mail) -> None:
    user, pw = mail.user()
    pop = poplib.POP3(HOST, strict.port, timeout=30)
    caps = pop.capa()
    assert set(caps) == {
        "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "STLS", "IMPLEMENTATION",
    }  # fmt: skip
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        pop.user(user)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        pop.pass_(pw)
    token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        pop._shortcmd(f"AUTH PLAIN {token}")
    assert pop._longcmd("AUTH")[1] == []  # no mechanism offered in clear text
    pop.quit()


def test_stls_then_login(strict: Pop3Proc, mail: Mail, client_tls: ssl.SSLContext) -> None:
    user, pw = mail.user()
    mail.deliver(user, b"Subject: tls\n\nsecret\n")
    pop = poplib.POP3(HOST, strict.port, timeout=30)
    assert pop.stls(context=client_tls).startswith(b"+OK")
    caps = pop.capa()
    assert "STLS" not in caps
    assert "USER" in caps
    assert caps["SASL"] == ["PLAIN"]
    with pytest.raises(poplib.error_proto):
        pop._shortcmd("STLS")
    pop.user(user)
    pop.pass_(pw)
    assert pop.retr(1)[1] == [b"Subject: tls", b"", b"secret"]
    pop.quit()


def test_stls_flow_control(strict: Pop3Proc, mail: Mail, client_tls: ssl.SSLContext) -> None:
    """After STLS, back-pressure works both ways over the new TLS transport: 3 MiB retrieved by
    a client that reads only after sending, and 2,000 pipelined commands (far beyond the read
    buffer, so reading from the client pauses and resumes) all answered in order."""
    user, pw = mail.user()
    body = b"".join(b"line %06d of a big message\n" % i for i in range(110_000))  # ~3 MiB
    mail.deliver(user, b"Subject: big\n\n" + body)
    pop = poplib.POP3(HOST, strict.port, timeout=60)
    assert pop.stls(context=client_tls).startswith(b"+OK")
    pop.user(user)
    pop.pass_(pw)
    tls = pop.sock
    tls.sendall(b"NOOP\r\n" * 2000 + b"RETR 1\r\nSTAT\r\n")
    r = Raw(0, sock=tls)
    assert all(r.line() == b"+OK" for _ in range(2000))
    assert r.line().startswith(b"+OK")
    got = r.multi()
    assert got[:2] == [b"Subject: big", b""]
    assert b"\n".join(got[2:]) + b"\n" == body
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()


def test_implicit_tls(strict: Pop3Proc, mail: Mail, client_tls: ssl.SSLContext) -> None:
    user, pw = mail.user()
    pop = poplib.POP3_SSL(HOST, strict.pop3s_port, context=client_tls, timeout=30)
    caps = pop.capa()
    assert "STLS" not in caps and "USER" in caps
    with pytest.raises(poplib.error_proto):
        pop._shortcmd("STLS")
    token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
    assert pop._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
    assert pop.stat() == (0, 0)
    pop.quit()


def test_stls_discards_pipelined_commands(
    strict: Pop3Proc, mail: Mail, client_tls: ssl.SSLContext
) -> None:
    """Commands sent in clear text after STLS must not run inside TLS (command injection)."""
    user, pw = mail.user()
    raw = socket.create_connection((HOST, strict.port), timeout=30)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"+OK")
    raw.sendall(f"STLS\r\nUSER {user}\r\nCAPA\r\nQUIT\r\n".encode())
    assert f.readline().startswith(b"+OK")
    f.close()
    tls = client_tls.wrap_socket(raw, server_hostname="mail.pokey.onl")
    r = Raw(0, sock=tls)
    # Had "USER" been executed, PASS would be accepted; had CAPA run, its listing would come first.
    assert r.cmd(f"PASS {pw}") == b"-ERR send USER first"
    assert r.cmd(f"USER {user}") == b"+OK send PASS"
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()


def test_failed_handshake_closes(strict: Pop3Proc) -> None:
    r = Raw(strict.port)
    r.line()
    assert r.cmd("STLS").startswith(b"+OK")
    r.send(b"this is not a TLS client hello\r\n" * 4)
    r.sock.settimeout(10)
    data = b""
    while chunk := r.sock.recv(4096):
        data += chunk
    assert b"+OK" not in data
    r.close()
