"""The SMTP dialogue: reply codes, ESMTP extensions, pipelining, smuggling, long lines, STARTTLS."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from smtp_in.headers import MAX_ADDED_HEADERS
from smtp_testlib import Mail, SmtpProcess, read_reply, split_trace

ENHANCED = re.compile(rb"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


class Raw:
    """A raw SMTP connection: exact octets out, whole replies in."""

    def __init__(self, port: int, host: str = "127.0.0.1", source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=15, source_address=(source, 0) if source else None
        )
        self.buf = bytearray()
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        return read_reply(self.sock, self.buf)

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def test_greeting_and_ehlo(mail: Mail) -> None:
    raw = Raw(mail.smtp_port)
    assert raw.greeting == b"220 mail.pokey.onl ESMTP"
    ehlo = raw.cmd(b"EHLO client.test").split(b"\r\n")
    keywords = [line[4:] for line in ehlo[1:]]
    assert ehlo[0] == b"250-mail.pokey.onl"
    assert f"SIZE {25 * 1024 * 1024 - MAX_ADDED_HEADERS}".encode() in keywords
    for keyword in (b"8BITMIME", b"SMTPUTF8", b"PIPELINING", b"ENHANCEDSTATUSCODES", b"STARTTLS"):
        assert keyword in keywords
    assert not any(k.startswith(b"AUTH") for k in keywords)
    assert raw.cmd(b"QUIT") == b"221 2.0.0 Bye"
    raw.close()


def test_every_reply_has_an_enhanced_code(mail: Mail) -> None:
    bob = mail.add_user()
    raw = Raw(mail.smtp_port)
    replies = [
        raw.cmd(b"MAIL FROM:<alice@pokey.onl>"),  # 503 before HELO
        raw.cmd(b"FOO bar"),  # unknown command
        raw.cmd(b"EHLO"),  # 501 syntax
    ]
    raw.cmd(b"EHLO client.test")  # exempt (RFC 2034)
    replies += [
        raw.cmd(b"NOOP"),
        raw.cmd(b"HELP"),
        raw.cmd(b"VRFY bob"),
        raw.cmd(b"EXPN list"),
        raw.cmd(b"AUTH PLAIN AGJvYgBwdw=="),
        raw.cmd(b"RCPT TO:<bob@pokey.onl>"),  # 503 need MAIL
        raw.cmd(b"DATA"),  # 503 need RCPT
        raw.cmd(
            b"MAIL FROM:alice"
        ),  # accepted as written by aiosmtpd? or refused: either way coded
        raw.cmd(b"RSET"),
        raw.cmd(b"MAIL FROM:<alice@pokey.onl> BODY=9BIT"),
        raw.cmd(b"MAIL FROM:<alice@pokey.onl> FOO=1"),
        raw.cmd(b"MAIL FROM:<a@b@c>"),
        raw.cmd(b"MAIL FROM:<alice@pokey.onl> SIZE=99999999999"),
        raw.cmd(b"MAIL FROM:<alice@pokey.onl>"),
        raw.cmd(b"MAIL FROM:<alice@pokey.onl>"),  # nested
        raw.cmd(b"RCPT TO:<x@remote.test>"),
        raw.cmd(b"RCPT TO:<nobody@pokey.onl>"),
        raw.cmd(b"RCPT TO:<bob%remote.test@pokey.onl>"),
        raw.cmd(b"RCPT TO:<" + bob.encode() + b"@pokey.onl> NOTIFY=NEVER"),
        raw.cmd(b"RCPT TO:<" + bob.encode() + b"@pokey.onl>"),
        raw.cmd(b"DATA extra"),
        raw.cmd(b"DATA"),  # 354: intermediate, no code
    ]
    raw.send(b"x" * 1200 + b"\r\n.\r\n")
    replies.append(raw.reply())  # line too long
    replies.append(raw.cmd(b"X" * 600))  # command line too long
    replies.append(raw.cmd(b""))  # empty line
    replies.append(raw.cmd(b"QUIT"))
    raw.close()
    assert replies[-1] == b"221 2.0.0 Bye"
    for reply in replies:
        if reply.startswith(b"354"):
            continue
        for line in reply.split(b"\r\n"):
            assert ENHANCED.match(line), reply
    codes = [r[:9] for r in replies]
    assert b"503 5.5.1" in codes[0]
    assert b"552 5.3.4" in codes  # SIZE over the limit, at MAIL
    assert b"550 5.7.1" in codes and b"550 5.1.1" in codes
    assert replies[-5].startswith(b"354")
    assert replies[-4].startswith(b"500 5.5.2 Line too long")
    assert mail.stored(bob) == []  # the over-long message was not stored


@pytest.mark.parametrize("address", [b"<a@", b"a@", b"<@", b"<"])
def test_an_address_the_parser_trips_over_is_a_syntax_error(mail: Mail, address: bytes) -> None:
    raw = Raw(mail.smtp_port)
    raw.cmd(b"EHLO client.test")
    assert raw.cmd(b"MAIL FROM:" + address) == b"553 5.1.3 Error: malformed address"
    assert raw.cmd(b"MAIL FROM:<alice@pokey.onl>") == b"250 2.1.0 Ok"
    assert raw.cmd(b"RCPT TO:" + address) == b"553 5.1.3 Error: malformed address"
    assert raw.cmd(b"QUIT") == b"221 2.0.0 Bye"
    raw.close()


def test_size_declared_at_mail(mail: Mail) -> None:
    with smtplib.SMTP("127.0.0.1", mail.smtp_port) as client:
        client.ehlo()
        limit = int(client.esmtp_features["size"])
        assert client.mail("a@pokey.onl", [f"SIZE={limit}"])[0] == 250
        client.rset()
        code, text = client.mail("a@pokey.onl", [f"SIZE={limit + 1}"])
        assert (code, text[:5]) == (552, b"5.3.4")


def test_pipelined_transaction_in_one_write(mail: Mail) -> None:
    bob = mail.add_user()
    raw = Raw(mail.smtp_port)
    raw.cmd(b"EHLO pipeliner.test")
    raw.send(
        b"MAIL FROM:<alice@pokey.onl>\r\n"
        + f"RCPT TO:<{bob}@pokey.onl>\r\n".encode()
        + b"RCPT TO:<nobody@pokey.onl>\r\n"
        + b"RCPT TO:<x@elsewhere.test>\r\n"
        + b"DATA\r\n"
    )
    replies = [raw.reply() for _ in range(5)]
    assert [r[:9] for r in replies[:4]] == [b"250 2.1.0", b"250 2.1.5", b"550 5.1.1", b"550 5.7.1"]
    assert replies[4].startswith(b"354 ")
    # The message, its end and the next transaction in one write too.
    raw.send(
        b"Subject: pipelined\r\n\r\nbody\r\n.\r\n"
        b"MAIL FROM:<carol@example.test>\r\n"
        + f"RCPT TO:<{bob}@pokey.onl>\r\n".encode()
        + b"DATA\r\nSubject: second\r\n\r\nagain\r\n.\r\nQUIT\r\n"
    )
    replies = [raw.reply() for _ in range(6)]
    raw.close()
    assert replies[0].startswith(b"250 2.0.0 Ok: queued as ")
    assert [r[:9] for r in replies[1:3]] == [b"250 2.1.0", b"250 2.1.5"]
    assert replies[3].startswith(b"354 ")
    assert replies[4].startswith(b"250 2.0.0 Ok: queued as ")
    assert replies[5] == b"221 2.0.0 Bye"
    bodies = sorted(split_trace(m)[1] for m in mail.stored(bob))
    assert bodies == [b"Subject: pipelined\n\nbody\n", b"Subject: second\n\nagain\n"]


@pytest.mark.parametrize(
    "sequence", [b"\n.\n", b"\r\n.\n", b"\n.\r\n"], ids=["LF.LF", "CRLF.LF", "LF.CRLF"]
)
def test_smuggling_sequences_do_not_end_data(mail: Mail, sequence: bytes) -> None:
    bob, victim = mail.add_user(), mail.add_user()
    raw = Raw(mail.smtp_port)
    raw.cmd(b"EHLO smuggler.test")
    assert raw.cmd(b"MAIL FROM:<alice@pokey.onl>").startswith(b"250")
    assert raw.cmd(f"RCPT TO:<{bob}@pokey.onl>".encode()).startswith(b"250")
    assert raw.cmd(b"DATA").startswith(b"354")
    smuggled = (
        b"MAIL FROM:<admin@pokey.onl>\r\n"
        + f"RCPT TO:<{victim}@pokey.onl>\r\n".encode()
        + b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
    )
    raw.send(b"Subject: outer\r\n\r\nfirst part" + sequence + smuggled + b".\r\n")
    reply = raw.reply()
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    assert raw.cmd(b"NOOP") == b"250 2.0.0 OK"  # nothing else was answered in between
    raw.close()
    assert mail.stored(victim) == []
    messages = mail.stored(bob)
    assert len(messages) == 1
    _, rest = split_trace(messages[0])
    assert b"first part" in rest and b"MAIL FROM:<admin@pokey.onl>" in rest
    assert b"evil" in rest


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def test_starttls_with_a_test_certificate(
    mail: Mail,
    spawn_smtp: Callable[..., SmtpProcess],
    tls_ca: trustme.CA,
    tmp_path: Path,
) -> None:
    # smtplib checks the name it connected to (127.0.0.1) as well as the chain.
    cert = tls_ca.issue_cert("mail.pokey.onl", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    server = spawn_smtp(mail.stack, TLS_CERT_FILE=str(cert_file), TLS_KEY_FILE=str(key_file))
    bob = mail.add_user()
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="tls.client") as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, text = client.starttls(context=context)
        assert (code, text) == (220, b"2.0.0 Ready to start TLS")
        assert isinstance(client.sock, ssl.SSLSocket)
        peer = client.sock.getpeercert()
        assert peer is not None
        assert ("DNS", "mail.pokey.onl") in peer["subjectAltName"]
        client.ehlo()
        assert not client.has_extn("starttls")
        assert not client.has_extn("auth")
        client.sendmail("alice@pokey.onl", [f"{bob}@pokey.onl"], b"Subject: tls\r\n\r\nsecret\r\n")
    trace, rest = split_trace(mail.stored(bob)[0])
    assert b" with ESMTPS id " in trace[2]
    assert rest == b"Subject: tls\n\nsecret\n"


def test_commands_pipelined_before_tls_are_discarded(
    mail: Mail, spawn_smtp: Callable[..., SmtpProcess], tls_ca: trustme.CA, tmp_path: Path
) -> None:
    cert = tls_ca.issue_cert("mail.pokey.onl")
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    server = spawn_smtp(mail.stack, TLS_CERT_FILE=str(cert_file), TLS_KEY_FILE=str(key_file))
    raw = Raw(server.port)
    raw.cmd(b"EHLO injector.test")
    raw.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert raw.reply() == b"220 2.0.0 Ready to start TLS"
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    tls = context.wrap_socket(raw.sock, server_hostname="mail.pokey.onl")
    buf = bytearray()
    tls.sendall(b"EHLO injector.test\r\n")
    assert read_reply(tls, buf).startswith(b"250-mail.pokey.onl")
    tls.sendall(b"RCPT TO:<bob@pokey.onl>\r\n")
    # The MAIL sent in clear before the handshake never happened.
    assert read_reply(tls, buf).startswith(b"503 5.5.1")
    tls.close()


def test_generated_certificate_when_none_is_configured(
    mail: Mail, spawn_smtp: Callable[..., SmtpProcess], tmp_path: Path
) -> None:
    server = spawn_smtp(mail.stack, SECRETS_DIR=str(tmp_path / "secrets"))
    assert (tmp_path / "secrets" / "tls" / "cert.pem").exists()
    context = ssl.create_default_context()
    context.load_verify_locations(tmp_path / "secrets" / "tls" / "cert.pem")
    context.check_hostname = False  # issued for mail.pokey.onl; we connect to 127.0.0.1
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert client.starttls(context=context)[0] == 220
        client.ehlo()
        assert client.noop() == (250, b"2.0.0 OK")
