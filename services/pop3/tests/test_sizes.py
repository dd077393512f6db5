"""Sizes: for awkward messages, LIST's size is exactly the octets RETR sends before the final '.'
(after removing byte-stuffing), and the bytes are the stored message with CRLF line ends."""

from __future__ import annotations

import random

from mailstack.stack import Stack
from pop3kit import Mail, Raw


def awkward(rng: random.Random) -> bytes:
    parts = [b"Subject: s\r\n" if rng.random() < 0.5 else b"Subject: s\n", b"\n"]
    for _ in range(rng.randint(0, 30)):
        line = rng.choice([b"", b".", b"..", b".x", b"x.", b"\r", b" .", b"a" * 300, b"From me"])
        parts.append(line + rng.choice([b"\n", b"\r\n", b"\n"]))
    if rng.random() < 0.3:
        parts.append(b"no final newline")
    return b"".join(parts)


def read_body(r: Raw) -> bytes:
    body = b""
    while not body.endswith(b"\r\n.\r\n"):
        chunk = r.file.readline()
        assert chunk
        body += chunk
    return body


def test_list_size_is_exactly_what_retr_sends(stack: Stack, mail: Mail) -> None:
    rng = random.Random(1939)
    messages = [awkward(rng) for _ in range(25)]
    user, pw = mail.user()
    ids = [mail.deliver(user, m) for m in messages]
    r = Raw(stack.pop3_port)
    r.line()
    r.cmd(f"USER {user}")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    r.send(b"LIST\r\n")
    assert r.line().startswith(b"+OK")
    sizes = [int(line.split()[1]) for line in r.multi()]
    for n, (mid, size) in enumerate(zip(ids, sizes, strict=True), 1):
        stored = mail.raw(user, mid)
        assert r.cmd(f"RETR {n}") == f"+OK {size} octets".encode()
        body = read_body(r)
        lines = body[:-3].split(b"\r\n")[:-1]
        unstuffed = b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
        assert len(unstuffed) == size
        assert unstuffed == stored.replace(b"\n", b"\r\n")
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
