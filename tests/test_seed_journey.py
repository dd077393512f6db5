"""The journey of the seed write-up: bob is added, alice mails him, he reads it every way."""

from __future__ import annotations

import poplib
import smtplib
import socket
from pathlib import Path
from typing import Any

import httpx
from mailstack import mpop

SEED_LINE = b"Hello Bob, this is a test message over the internet!"
HOST = "127.0.0.1"


class LineSocket:
    """A telnet stand-in: send a line, read CRLF-terminated lines back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.buffer = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed while waiting for a line"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def send(self, command: str) -> bytes:
        self.sock.sendall(command.encode() + b"\r\n")
        return self.line()

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".":
            lines.append(line)
        return lines

    def close(self) -> None:
        self.sock.close()


def send_seed_message(stack: Any) -> None:
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
        smtp.ehlo("pokey.onl")
        refused = smtp.sendmail("alice@pokey.onl", ["bob@pokey.onl"], SEED_LINE + b"\r\n")
        assert refused == {}


def write_mpoprc(tmp_path: Path, stack: Any, keep: str) -> Path:
    maildir = mpop.maildir(tmp_path)
    return mpop.write_rc(
        tmp_path,
        # The seed's ~/.mpoprc, pointed at the test stack's port.
        "defaults\n"
        "tls off\n"
        "auth user\n"
        f"uidls_file {tmp_path}/uidls\n"
        "\n"
        "account bobatpokey\n"
        f"host {HOST}\n"
        f"port {stack.pop3_port}\n"
        "user bob\n"
        "password password\n"
        f"delivery maildir {maildir}\n"
        f"keep {keep}\n"
        "\n"
        "account default : bobatpokey\n",
    )


def test_seed_journey(stack: Any, admin: httpx.Client, mailbox: Any, tmp_path: Path) -> None:
    # 1. Add bob over REST.
    created = admin.post("/users", json={"username": "bob", "password": "password"})
    assert created.status_code == 201, created.text

    # 2. alice@pokey.onl sends bob the seed's message over SMTP.
    send_seed_message(stack)
    [listed] = mailbox("bob")

    # 3. The seed's telnet transcript, line by line.
    telnet = LineSocket(stack.pop3_port)
    assert telnet.line().startswith(b"+OK")
    assert telnet.send("USER bob").startswith(b"+OK")
    assert telnet.send("PASS password").startswith(b"+OK")
    assert telnet.send("LIST").startswith(b"+OK")
    [entry] = telnet.multiline()
    number, size = entry.split()
    assert number == b"1"
    size_octets = int(size)
    assert telnet.send("STAT") == b"+OK 1 " + size
    assert telnet.send("RETR 1") == b"+OK " + size + b" octets"
    body = telnet.multiline()
    assert body[-1] == SEED_LINE
    # Exactly the announced octets arrive before the terminating dot (no line starts with '.').
    assert sum(len(line) + 2 for line in body) == size_octets
    assert telnet.send("QUIT").startswith(b"+OK")
    telnet.close()

    # 4. The same over poplib, and the REST API agrees on id and size.
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    pop.user("bob")
    pop.pass_("password")
    assert pop.stat() == (1, size_octets)
    _, uidls, _ = pop.uidl()
    assert uidls == [f"1 {listed['id']}".encode()]
    _, lines, octets = pop.retr(1)
    assert lines[-1] == SEED_LINE
    assert octets == size_octets  # poplib counts the octets after removing byte-stuffing
    pop.quit()
    raw = admin.get(f"/users/bob/messages/{listed['id']}/raw")
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("message/rfc822")
    assert raw.content.endswith(SEED_LINE + b"\n")
    assert b"Received: from" in raw.content

    # 5. mpop with the seed's .mpoprc: keep on twice fetches it once.
    rc = write_mpoprc(tmp_path, stack, keep="on")
    mpop.run(rc, "-q")
    fetched = list((tmp_path / "Maildir" / "new").iterdir())
    assert len(fetched) == 1
    assert fetched[0].read_bytes().rstrip(b"\r\n").endswith(SEED_LINE)
    mpop.run(rc, "-q")
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 1
    assert len(mailbox("bob")) == 1

    # 6. Delete over POP3; REST shows it gone.
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    pop.user("bob")
    pop.pass_("password")
    assert pop.dele(1).startswith(b"+OK")
    pop.quit()
    assert mailbox("bob") == []
    gone = admin.get(f"/users/bob/messages/{listed['id']}")
    assert gone.status_code == 404


def test_mpop_keep_off_deletes(stack: Any, make_user: Any, mailbox: Any, tmp_path: Path) -> None:
    user, password = make_user()
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
        for n in range(3):
            smtp.sendmail(
                "alice@pokey.onl", [f"{user}@pokey.onl"], f"Subject: {n}\r\n\r\nbody {n}\r\n"
            )
    rc = write_mpoprc(tmp_path, stack, keep="off")
    text = (
        rc.read_text()
        .replace("user bob", f"user {user}")
        .replace("password password", f"password {password}")
    )
    rc.write_text(text)
    mpop.run(rc, "-q")
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 3
    assert mailbox(user) == []
