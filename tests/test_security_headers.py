"""The trace headers smtp-in writes (Return-Path, Received) cannot be used to inject headers.

What the client says in HELO/EHLO and MAIL FROM ends up in the stored message. A bare CR, NUL or
8-bit octet there must not become a header line of its own in any mail reader (many treat a bare CR
as a line break): either the command is refused, or the value is written sanitised. The stored
message (as the admin API serves it raw) must have exactly one Return-Path and one Received header
that smtp-in wrote, no injected header, and no CR or NUL in the header section.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

HOST = "127.0.0.1"

CASES = {
    "ehlo-cr": (b"EHLO x\rX-Injected: cr", b"a@b.test"),
    "ehlo-nul": (b"EHLO x\x00X-Injected: nul", b"a@b.test"),
    "ehlo-8bit": (b"EHLO x\xff\xfeX-Injected: 8bit", b"a@b.test"),
    "helo-cr": (b"HELO x\rX-Injected: helo", b"a@b.test"),
    "helo-tab": (b"HELO x\tX-Injected: tab", b"a@b.test"),
    "mail-cr": (b"EHLO x", b'"a\rX-Injected: mail"@b.test'),
    "mail-nul": (b"EHLO x", b"a\x00X-Injected: mail@b.test"),
    "mail-quoted-lf": (b"EHLO x", b'"a\\\nX-Injected: q"@b.test'),
    "mail-8bit": (b"EHLO x", b"\xc3\xa9X-Injected\xff@b.test"),
    "mail-long": (b"EHLO x", b"a" * 300 + b"@b.test"),
}


def smtp_raw(port: int, helo: bytes, sender: bytes, rcpt: bytes) -> list[bytes]:
    """Speak one transaction command by command; returns the reply lines."""
    sock = socket.create_connection((HOST, port), timeout=30)
    f = sock.makefile("rb")
    replies: list[bytes] = []

    def reply() -> bytes:
        while True:
            line = f.readline()
            assert line, replies
            replies.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return line

    try:
        reply()
        for command in (helo, b"MAIL FROM:<" + sender + b">", b"RCPT TO:<" + rcpt + b">"):
            sock.sendall(command + b"\r\n")
            if not reply().startswith(b"2"):
                sock.sendall(b"QUIT\r\n")
                return replies
        sock.sendall(b"DATA\r\n")
        if reply().startswith(b"354"):
            sock.sendall(b"Subject: injection\r\n\r\nbody\r\n.\r\n")
            reply()
        sock.sendall(b"QUIT\r\n")
        return replies
    finally:
        sock.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_trace_headers_cannot_be_injected(
    stack: Any, admin: httpx.Client, make_user: Callable[..., tuple[str, str]], case: str
) -> None:
    user, _ = make_user()
    helo, sender = CASES[case]
    replies = smtp_raw(stack.smtp_port, helo, sender, f"{user}@pokey.onl".encode())
    assert not any(b"Traceback" in r for r in replies), replies
    messages = admin.get(f"/users/{user}/messages").json()["messages"]
    if not messages:
        assert any(r[:1] in (b"4", b"5") for r in replies), replies  # refused, and said so
        return
    assert len(messages) == 1
    raw = admin.get(f"/users/{user}/messages/{messages[0]['id']}/raw").content
    header = raw.split(b"\n\n", 1)[0]
    names = [
        line.split(b":", 1)[0].lower()
        for line in header.split(b"\n")
        if line and not line[:1].isspace()
    ]
    assert names.count(b"return-path") == 1 and names.count(b"received") == 1, header
    assert b"x-injected" not in names, header
    assert b"\r" not in header and b"\x00" not in header, header
    assert names[-1] == b"subject", header  # the client's own header comes after the trace
