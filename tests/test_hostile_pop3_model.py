"""Property-based tests of a POP3 session over a real socket against a small model of RFC 1939.

Each example makes a fresh user, delivers a few messages through the internal API, logs in over
POP3 and runs a random sequence of valid and invalid commands (STAT, LIST [n], UIDL [n], RETR n,
TOP n m, DELE n, RSET, NOOP, garbage). Every reply is checked against the model: what STAT, LIST
and UIDL must say after any DELE/RSET sequence, that a message marked as deleted gives -ERR, that
RETR and TOP send exactly the stored message (CRLF, byte-stuffed). The session then ends either
by dropping the connection (nothing may be deleted: checked by a second login and by the admin
API) or by QUIT (exactly the marked messages are gone).
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailstack.ports import wait_until

HOST = "127.0.0.1"
TIMEOUT = 15.0


class Pop3Conn:
    """A minimal POP3 client on a raw socket: exact bytes in, exact lines out."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; partial: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def cmd(self, command: str | bytes) -> bytes:
        self.send((command.encode() if isinstance(command, str) else command) + b"\r\n")
        return self.line()

    def multiline(self) -> list[bytes]:
        """The lines of a multi-line reply after its status line, byte-stuffing removed."""
        lines: list[bytes] = []
        while True:
            line = self.line()
            if line == b".":
                return lines
            lines.append(line[1:] if line.startswith(b".") else line)

    def close(self) -> None:
        self.sock.close()


def login(port: int, user: str, password: str) -> tuple[Pop3Conn, bytes]:
    """Log in, retrying while a previous session of the user still holds the maildrop lock."""

    def attempt() -> tuple[Pop3Conn, bytes] | None:
        conn = Pop3Conn(port)
        assert conn.line().startswith(b"+OK")
        assert conn.cmd(f"USER {user}").startswith(b"+OK")
        reply = conn.cmd(f"PASS {password}")
        if reply.startswith(b"+OK"):
            return conn, reply
        conn.close()
        assert b"[IN-USE]" in reply, reply
        return None

    return wait_until(attempt, 30, f"{user}'s maildrop free")


def message_body(i: int, variant: int) -> bytes:
    """A message with LF line ends (the stored form), lines beginning with '.', a few body lines."""
    body_lines = [f"body line {k} of message {i}" for k in range(variant)]
    body_lines += [".leading dot", "..two dots", ".", f"end of {i}"]
    head = f"From: sender{i}@example.test\nTo: someone@pokey.onl\nSubject: message {i}\n"
    return (head + "\n" + "\n".join(body_lines) + "\n").encode()


def crlf_lines(stored: bytes) -> list[bytes]:
    """The lines a client holds after RETR (CRLF removed, byte-stuffing removed)."""
    assert stored.endswith(b"\n")
    return stored[:-1].split(b"\n")


def top_lines(stored: bytes, n: int) -> list[bytes]:
    lines = crlf_lines(stored)
    blank = lines.index(b"")
    return lines[: blank + 1 + n]


@dataclass
class Model:
    """RFC 1939 TRANSACTION state: the snapshot and the deletion marks."""

    ids: list[str]
    bodies: list[bytes]
    deleted: set[int] = field(default_factory=set)

    def size(self, n: int) -> int:
        body = self.bodies[n - 1]
        return len(body) + body.count(b"\n")  # octets with CRLF line ends

    def live(self) -> list[int]:
        return [n for n in range(1, len(self.ids) + 1) if n not in self.deleted]

    def is_live(self, n: int) -> bool:
        return 1 <= n <= len(self.ids) and n not in self.deleted


# Commands: (name, argument) with arguments drawn around the valid range, plus garbage lines.
MSG_NUMBERS = st.integers(min_value=0, max_value=7)
BAD_ARGS = st.sampled_from(
    ["abc", "-1", "+1", "01", "1 2 3", "1 ", " 1", "\u0661", "\u00b2", "99999999999999999999"]
)
GARBAGE = st.one_of(
    st.sampled_from(
        ["FOO", "STATX", "RETRIEVE 1", "", " ", "USER bob", "PASS x", "STLS", "LAST", "\x00"]
    ),
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=20),
)
COMMAND = st.one_of(
    st.just(("STAT", None)),
    st.just(("LIST", None)),
    st.tuples(st.just("LIST"), MSG_NUMBERS),
    st.just(("UIDL", None)),
    st.tuples(st.just("UIDL"), MSG_NUMBERS),
    st.tuples(st.just("RETR"), MSG_NUMBERS),
    st.tuples(st.just("TOP"), st.tuples(MSG_NUMBERS, st.integers(min_value=0, max_value=6))),
    st.tuples(st.just("DELE"), MSG_NUMBERS),
    st.tuples(st.just("DELE"), MSG_NUMBERS),
    st.just(("RSET", None)),
    st.just(("NOOP", None)),
    st.tuples(st.sampled_from(["LIST", "UIDL", "RETR", "DELE", "TOP"]), BAD_ARGS),
    st.tuples(st.just("GARBAGE"), GARBAGE),
)


KNOWN_COMMANDS = ("STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "QUIT", "CAPA")


def check_command(conn: Pop3Conn, model: Model, name: str, arg: Any) -> None:
    """Send one command and check the reply against the model (updating it)."""
    if name == "GARBAGE":
        text = arg.strip().upper()
        if text.startswith(KNOWN_COMMANDS):
            text = "X" + text  # never a real TRANSACTION command by accident
            arg = "X" + arg
        reply = conn.cmd(arg)
        assert reply.startswith(b"-ERR"), (arg, reply)
        return
    if isinstance(arg, str):  # a malformed argument
        reply = conn.cmd(f"{name} {arg}")
        assert reply.startswith(b"-ERR"), (name, arg, reply)
        return
    if name == "STAT":
        live = model.live()
        assert conn.cmd("STAT") == b"+OK %d %d" % (len(live), sum(model.size(n) for n in live))
    elif name == "NOOP":
        assert conn.cmd("NOOP").startswith(b"+OK")
    elif name == "RSET":
        model.deleted.clear()
        assert conn.cmd("RSET").startswith(b"+OK")
    elif name in ("LIST", "UIDL") and arg is None:
        reply = conn.cmd(name)
        assert reply.startswith(b"+OK"), reply
        got = conn.multiline()
        if name == "LIST":
            want = [b"%d %d" % (n, model.size(n)) for n in model.live()]
        else:
            want = [b"%d %s" % (n, model.ids[n - 1].encode()) for n in model.live()]
        assert got == want
    elif name in ("LIST", "UIDL"):
        reply = conn.cmd(f"{name} {arg}")
        if model.is_live(arg):
            value = model.size(arg) if name == "LIST" else model.ids[arg - 1]
            assert reply == f"+OK {arg} {value}".encode()
        else:
            assert reply.startswith(b"-ERR"), (name, arg, reply)
    elif name == "RETR":
        reply = conn.cmd(f"RETR {arg}")
        if model.is_live(arg):
            assert reply.startswith(b"+OK"), reply
            assert conn.multiline() == crlf_lines(model.bodies[arg - 1])
        else:
            assert reply.startswith(b"-ERR"), (name, arg, reply)
    elif name == "TOP":
        n, count = arg
        reply = conn.cmd(f"TOP {n} {count}")
        if model.is_live(n):
            assert reply.startswith(b"+OK"), reply
            assert conn.multiline() == top_lines(model.bodies[n - 1], count)
        else:
            assert reply.startswith(b"-ERR"), (name, arg, reply)
    elif name == "DELE":
        reply = conn.cmd(f"DELE {arg}")
        if model.is_live(arg):
            assert reply.startswith(b"+OK"), reply
            model.deleted.add(arg)
        else:
            assert reply.startswith(b"-ERR"), (name, arg, reply)
    else:  # pragma: no cover
        raise AssertionError(name)


@pytest.fixture(scope="module")
def api(stack: Any) -> Any:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


def stored_ids(api: httpx.Client, stack: Any, user: str) -> list[str]:
    response = api.get(
        f"/api/v1/users/{user}/messages",
        params={"limit": 500},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
    )
    assert response.status_code == 200, response.text
    return sorted(m["id"] for m in response.json()["messages"])


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    scenario=st.fixed_dictionaries(
        {
            "count": st.integers(min_value=0, max_value=5),
            "variants": st.lists(st.integers(min_value=0, max_value=4), min_size=5, max_size=5),
            "commands": st.lists(COMMAND, max_size=15),
            "quit": st.booleans(),
        }
    )
)
def test_pop3_session_follows_rfc1939_model(
    stack: Any, api: httpx.Client, scenario: dict[str, Any]
) -> None:
    count, variants = scenario["count"], scenario["variants"]
    commands, end_with_quit = scenario["commands"], scenario["quit"]
    user = f"m{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(12)
    admin_headers = {"Authorization": f"Bearer {stack.admin_token}"}
    created = api.post(
        "/api/v1/users", json={"username": user, "password": password}, headers=admin_headers
    )
    assert created.status_code == 201, created.text
    ids: list[str] = []
    bodies: list[bytes] = []
    for i in range(count):
        body = message_body(i, variants[i])
        delivered = api.post(
            "/internal/v1/deliveries",
            params={"recipient": user},
            content=body,
            headers={"Authorization": f"Bearer {stack.service_token}"},
        )
        assert delivered.status_code == 201, delivered.text
        ids.append(delivered.json()["id"])
        bodies.append(body)
        time.sleep(0.002)  # distinct delivery times: the snapshot is ordered oldest first
    model = Model(ids, bodies)

    conn, greeting = login(stack.pop3_port, user, password)
    try:
        assert re.search(rb"\b%d messages?\b" % count, greeting), greeting
        for name, arg in commands:
            check_command(conn, model, name, arg)
        if end_with_quit:
            reply = conn.cmd("QUIT")
            assert reply.startswith(b"+OK"), reply
            survivors = [ids[n - 1] for n in model.live()]
        else:
            conn.send(b"STAT\r\nDELE 1\r\nQU")  # dropped mid-command: no UPDATE
            survivors = list(ids)
    finally:
        conn.close()

    # A second session (once the first has let go of the maildrop) sees exactly the survivors.
    conn, greeting = login(stack.pop3_port, user, password)
    try:
        assert conn.cmd("UIDL").startswith(b"+OK")
        uidls = [line.split(b" ", 1)[1].decode() for line in conn.multiline()]
        assert uidls == survivors
        assert conn.cmd("QUIT").startswith(b"+OK")
    finally:
        conn.close()
    assert stored_ids(api, stack, user) == sorted(survivors)
    api.delete(f"/api/v1/users/{user}", params={"purge": "true"}, headers=admin_headers)
