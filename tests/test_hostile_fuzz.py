"""Fuzzing the POP3 and SMTP line parsers over real sockets with arbitrary bytes.

For every input (hypothesis binary strings, and hand-picked nasties: NUL, non-UTF-8, a 100 KB line
without a newline, lone CR, lone LF, huge numbers, Unicode digits): the service never crashes (the
process is still alive and the next normal client is served), never sends a Python traceback to
the peer, and never hangs (each reply comes within a timeout; once the client says QUIT the
connection ends).
"""

from __future__ import annotations

import poplib
import re
import secrets
import smtplib
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailstack.ports import wait_until
from pop3d.settings import Pop3Settings

HOST = "127.0.0.1"
REPLY_TIMEOUT = 10.0
FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SMTP_STATUS = re.compile(rb"^[2-5][0-9][0-9][ -]")


def assert_alive(stack: Any, name: str) -> None:
    processes = getattr(stack, "processes", None)
    if processes is not None:  # local stack: the process itself
        assert processes[name].running(), f"{name} died:\n{stack.logs(name)[-3000:]}"


def assert_pop3_serves(stack: Any) -> None:
    assert_alive(stack, "pop3")
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=REPLY_TIMEOUT)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        assert "UIDL" in pop.capa()
    finally:
        pop.quit()


def assert_smtp_serves(stack: Any) -> None:
    assert_alive(stack, "smtp-in")
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=REPLY_TIMEOUT) as smtp:
        code, _ = smtp.ehlo("fuzz.test")
        assert code == 250
        assert smtp.noop()[0] == 250


def read_until_closed(sock: socket.socket, timeout: float = REPLY_TIMEOUT) -> bytes:
    """Everything the server sends until it closes; fails when it neither closes nor talks."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"session hung; received so far: {data[-500:]!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"session hung; received so far: {data[-500:]!r}") from None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def check_pop3_output(data: bytes) -> None:
    assert b"Traceback" not in data, data[-2000:]
    assert not re.search(rb'File "[^"]+", line [0-9]+', data), data[-2000:]
    assert data.startswith(b"+OK"), data[:200]


def pop3_send(stack: Any, payload: bytes, login: tuple[str, str] | None = None) -> bytes:
    """Greeting (and login), the payload, then QUIT; returns what came back after the login."""
    sock = socket.create_connection((HOST, stack.pop3_port), timeout=REPLY_TIMEOUT)
    try:
        buf = b""
        if login is not None:
            user, password = login
            sock.sendall(f"USER {user}\r\nPASS {password}\r\n".encode())
            while buf.count(b"\r\n") < 3:
                chunk = sock.recv(4096)
                assert chunk, buf
                buf += chunk
            assert buf.split(b"\r\n")[2].startswith(b"+OK"), buf
        sock.sendall(payload + b"\r\nQUIT\r\n")
        return buf + read_until_closed(sock)
    finally:
        sock.close()


def pop3_send_when_free(stack: Any, payload: bytes, login: tuple[str, str] | None) -> bytes:
    """``pop3_send``, once the previous example's session has let go of the maildrop."""

    def attempt() -> bytes | None:
        try:
            return pop3_send(stack, payload, login=login)
        except AssertionError as exc:
            if b"[IN-USE]" not in str(exc).encode():
                raise
            return None

    return wait_until(attempt, 30, "the maildrop's release")


def smtp_send(stack: Any, payload: bytes) -> bytes:
    sock = socket.create_connection((HOST, stack.smtp_port), timeout=REPLY_TIMEOUT)
    try:
        sock.sendall(payload + b"\r\nQUIT\r\n")
        return read_until_closed(sock)
    finally:
        sock.close()


def check_smtp_output(data: bytes) -> None:
    assert b"Traceback" not in data, data[-2000:]
    assert not re.search(rb'File "[^"]+", line [0-9]+', data), data[-2000:]
    lines = [line for line in data.split(b"\r\n") if line]
    assert lines, "no greeting"
    for line in lines:
        assert SMTP_STATUS.match(line) or re.fullmatch(rb"[2-5][0-9][0-9]", line), (line, data)


@pytest.fixture(scope="module")
def fuzz_user(stack: Any, seed_mailbox: Callable[..., list[str]]) -> tuple[str, str]:
    user, password = f"fz{secrets.token_hex(5)}", secrets.token_urlsafe(12)
    seed_mailbox(stack, {user: password}, b"Subject: fuzz\n\none line\n")
    return user, password


# Arbitrary bytes that never spell a login (the session stack's throttle is shared) nor AUTH
# (which would read the next line as SASL data).
def _no_auth(data: bytes) -> bool:
    upper = data.upper()
    return not any(word in upper for word in (b"USER", b"PASS", b"AUTH", b"APOP", b"STLS"))


FUZZ_BYTES = st.one_of(
    st.binary(max_size=600),
    st.lists(
        st.one_of(
            st.sampled_from(
                [b"STAT", b"LIST", b"UIDL", b"RETR", b"TOP", b"DELE", b"NOOP", b"RSET", b"CAPA"]
            ),
            st.binary(max_size=12),
            st.sampled_from([b" ", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"1", b"0"]),
        ),
        max_size=40,
    ).map(b"".join),
).filter(_no_auth)


@FUZZ_SETTINGS
@given(payload=FUZZ_BYTES)
def test_pop3_fuzz_before_login(stack: Any, payload: bytes) -> None:
    check_pop3_output(pop3_send(stack, payload))
    assert_pop3_serves(stack)


@FUZZ_SETTINGS
@given(payload=FUZZ_BYTES)
def test_pop3_fuzz_in_transaction(stack: Any, fuzz_user: tuple[str, str], payload: bytes) -> None:
    check_pop3_output(pop3_send_when_free(stack, payload, fuzz_user))
    assert_pop3_serves(stack)


HUGE = b"99999999999999999999"
POP3_NASTIES = {
    "nul": b"NO\x00OP",
    "nul-arg": b"LIST \x00",
    "non-utf8": b"\xff\xfe\xc3\x28 \x80\x81",
    "non-utf8-arg": b"RETR \xc3\xa9",
    "overlong-100k": b"A" * 100_000,
    "overlong-100k-command": b"LIST " + b"1" * 100_000,
    "lone-cr": b"NOOP\rNOOP\rSTAT\r",
    "lone-lf": b"NOOP\nSTAT\nLIST\n",
    "huge-list": b"LIST " + HUGE,
    "huge-retr": b"RETR " + HUGE,
    "huge-top": b"TOP 1 " + HUGE,
    "huge-top-msg": b"TOP " + HUGE + b" 1",
    "negative": b"DELE -1",
    "arabic-digit": "LIST \u0661".encode(),
    "superscript": "RETR \u00b2".encode(),
    "fullwidth": "TOP \uff11 \uff11".encode(),
    "unicode-command": "\uff33\uff34\uff21\uff34".encode(),
    "many-spaces": b"LIST" + b" " * 240 + b"1",
    "tab": b"LIST\t1",
    "many-lines": b"NOOP\r\n" * 500,
}


@pytest.mark.parametrize("name", sorted(POP3_NASTIES))
def test_pop3_nasty_input(stack: Any, fuzz_user: tuple[str, str], name: str) -> None:
    payload = POP3_NASTIES[name]
    for login in (None, fuzz_user):
        out = pop3_send_when_free(stack, payload, login)
        check_pop3_output(out)
        if login is not None and name.startswith(("huge", "negative", "arabic", "superscript")):
            # after the greeting and the login: the command is refused, never taken as a number
            replies = out.split(b"\r\n")
            assert replies[3].startswith(b"-ERR"), out
    assert_pop3_serves(stack)


def test_pop3_overlong_line_is_refused_and_session_continues(
    stack: Any, fuzz_user: tuple[str, str]
) -> None:
    """A 100 KB line without a newline, then its end: -ERR for it, and the next command works."""
    sock = socket.create_connection((HOST, stack.pop3_port), timeout=REPLY_TIMEOUT)
    try:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"+OK")
        sock.sendall(b"X" * 100_000)
        # The behaviour: the line's end arrives apart from its start (no reply tells when the
        # server has read the start, so a margin).
        time.sleep(0.2)
        sock.sendall(b"\r\nCAPA\r\n")
        assert f.readline().startswith(b"-ERR")
        assert f.readline().startswith(b"+OK")
        lines = []
        while (line := f.readline()) != b".\r\n":
            assert line, "connection closed"
            lines.append(line)
        assert b"UIDL\r\n" in lines
        sock.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"+OK")
    finally:
        sock.close()


def _smtp_stays_in_command_mode(data: bytes) -> bool:
    """No DATA or BDAT (the rest would be message content) nor STARTTLS (the next octets must be
    a TLS handshake, so the QUIT after the payload is discarded and the server rightly waits for
    one; tests/test_security_starttls.py covers what is pipelined after it)."""
    upper = data.upper()
    return not any(verb in upper for verb in (b"DATA", b"BDAT", b"STARTTLS"))


SMTP_FUZZ = st.one_of(
    st.binary(max_size=600),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    b"EHLO x",
                    b"HELO x",
                    b"MAIL FROM:<",
                    b"RCPT TO:<",
                    b"@pokey.onl>",
                    b"NOOP",
                    b"RSET",
                    b"VRFY",
                    b"EXPN",
                    b"HELP",
                    b" SIZE=",
                ]
            ),
            st.binary(max_size=12),
            st.sampled_from([b" ", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b":", b"<>"]),
        ),
        max_size=40,
    ).map(b"".join),
).filter(_smtp_stays_in_command_mode)


@FUZZ_SETTINGS
@given(payload=SMTP_FUZZ)
def test_smtp_fuzz(stack: Any, payload: bytes) -> None:
    check_smtp_output(smtp_send(stack, payload))
    assert_smtp_serves(stack)


SMTP_NASTIES = {
    "nul": b"EHLO a\x00b",
    "nul-mail": b"EHLO x\r\nMAIL FROM:<a\x00@x.test>",
    "nul-rcpt": b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bo\x00b@pokey.onl>",
    "non-utf8": b"EHLO \xff\xfe\xc3\x28",
    "non-utf8-mail": b"EHLO x\r\nMAIL FROM:<\xff\xfe@x.test>",
    "non-utf8-rcpt": b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<\xc3\x28@pokey.onl>",
    "overlong-100k": b"A" * 100_000,
    "overlong-100k-ehlo": b"EHLO " + b"x" * 100_000,
    "overlong-rcpt": b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<" + b"a" * 5000 + b"@pokey.onl>",
    "lone-cr": b"EHLO x\rNOOP\rRSET\r",
    "lone-lf": b"EHLO x\nNOOP\nRSET\n",
    "huge-size": b"EHLO x\r\nMAIL FROM:<a@x.test> SIZE=" + HUGE,
    "negative-size": b"EHLO x\r\nMAIL FROM:<a@x.test> SIZE=-1",
    "arabic-size": "EHLO x\r\nMAIL FROM:<a@x.test> SIZE=\u0661\u0662".encode(),
    "superscript-size": "EHLO x\r\nMAIL FROM:<a@x.test> SIZE=\u00b2".encode(),
    "unicode-rcpt": "EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<\u0661@pokey.onl>".encode(),
    "unicode-domain": "EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<a@\uff50\uff4f\uff4b\uff45\uff59.onl>".encode(),
    "smtputf8": "EHLO x\r\nMAIL FROM:<ü@x.test> SMTPUTF8\r\nRCPT TO:<ü@pokey.onl>".encode(),
    "unknown-params": b"EHLO x\r\nMAIL FROM:<a@x.test> FOO=BAR BODY=9BIT",
    "no-brackets": b"EHLO x\r\nMAIL FROM:a@x.test\r\nRCPT TO:bob@pokey.onl",
    "empty-path": b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<>",
    "many-lines": b"NOOP\r\n" * 500,
    "auth": b"EHLO x\r\nAUTH PLAIN AGJvYgBwdw==",
}


@pytest.mark.parametrize("name", sorted(SMTP_NASTIES))
def test_smtp_nasty_input(stack: Any, name: str) -> None:
    out = smtp_send(stack, SMTP_NASTIES[name])
    check_smtp_output(out)
    assert out.rstrip().split(b"\r\n")[-1].startswith((b"221", b"421", b"500", b"5")), out[-500:]
    assert_smtp_serves(stack)


def test_pop3_too_many_bad_commands_close_the_connection(stack: Any) -> None:
    """A client that only sends garbage is cut off after POP3_MAX_BAD_COMMANDS (default 20)."""
    limit = int(Pop3Settings.model_fields["pop3_max_bad_commands"].default)
    sock = socket.create_connection((HOST, stack.pop3_port), timeout=REPLY_TIMEOUT)
    try:
        sock.sendall(b"XYZZY\r\n" * (limit + 10))
        out = read_until_closed(sock)
    finally:
        sock.close()
    lines = [line for line in out.split(b"\r\n") if line]
    assert lines[0].startswith(b"+OK")
    assert lines[1:] == [lines[1]] * (limit - 1) + [lines[-1]], lines
    assert len(lines) == 1 + limit and all(line.startswith(b"-ERR") for line in lines[1:])
    assert_pop3_serves(stack)
