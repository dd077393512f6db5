"""Every command, state and error over real sockets (poplib and raw), against the real stack."""

from __future__ import annotations

import base64
import hashlib
import poplib
import re
import time
from collections.abc import Callable

import pytest
from mailstack.stack import Stack
from pop3kit import HOST, Mail, Raw

MSG1 = b"Subject: one\n\nHello Bob, this is a test message over the internet!\n"
MSG2 = b"Subject: two\nX-Dots: yes\n\n.leading dot\n..two dots\n.\nend\n"
MSG3 = b"Subject: three\r\n\r\nCRLF line\r\nno final newline"


def w_size(stored: bytes) -> int:
    """W for what the mailstore stores (CRLF→LF, final LF added), counted with CRLF."""
    lf = stored.replace(b"\r\n", b"\n")
    if not lf.endswith(b"\n"):
        lf += b"\n"
    return len(lf) + lf.count(b"\n")


@pytest.fixture
def box(mail: Mail) -> tuple[str, str, list[str]]:
    user, pw = mail.user()
    ids = [mail.deliver(user, m) for m in (MSG1, MSG2, MSG3)]
    return user, pw, ids


def login(stack: Stack, user: str, pw: str) -> poplib.POP3:
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    pop.user(user)
    pop.pass_(pw)
    return pop


def test_greeting_has_unique_apop_timestamp(raw: Callable[..., Raw]) -> None:
    a, b = raw().line(), raw().line()
    pattern = rb"\+OK .*(<\d+\.\d+\.\d+\.[0-9a-f]+@mail\.pokey\.onl>)"
    ma, mb = re.match(pattern, a), re.match(pattern, b)
    assert ma and mb, (a, b)
    assert ma.group(1) != mb.group(1)


def test_stat_list_uidl_retr_top(stack: Stack, box: tuple[str, str, list[str]]) -> None:
    user, pw, ids = box
    pop = login(stack, user, pw)
    sizes = [w_size(m) for m in (MSG1, MSG2, MSG3)]
    assert pop.stat() == (3, sum(sizes))
    resp, listing, _ = pop.list()
    assert resp == f"+OK 3 messages ({sum(sizes)} octets)".encode()
    assert listing == [f"{i} {s}".encode() for i, s in enumerate(sizes, 1)]
    assert pop.list(2) == f"+OK 2 {sizes[1]}".encode()
    _, uidls, _ = pop.uidl()
    assert uidls == [f"{i} {m}".encode() for i, m in enumerate(ids, 1)]
    assert pop.uidl(3) == f"+OK 3 {ids[2]}".encode()
    for n, stored in enumerate((MSG1, MSG2, MSG3), 1):
        resp, lines, octets = pop.retr(n)
        assert resp == f"+OK {sizes[n - 1]} octets".encode()
        # poplib counts octets after removing byte-stuffing: exactly W.
        assert octets == sizes[n - 1]
        expected = stored.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
        assert lines == expected
    resp, lines, _ = pop.top(2, 1)
    assert resp.startswith(b"+OK")
    assert lines == [b"Subject: two", b"X-Dots: yes", b"", b".leading dot"]
    assert pop.top(1, 0)[1] == [b"Subject: one", b""]
    assert pop.noop() == b"+OK"
    pop.quit()


def test_retr_bytes_on_the_wire(stack: Stack, box: tuple[str, str, list[str]], raw) -> None:
    user, pw, _ = box
    r = raw()
    r.line()
    r.cmd(f"USER {user}")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    assert r.cmd("RETR 2") == f"+OK {w_size(MSG2)} octets".encode()
    body = b""
    while not body.endswith(b"\r\n.\r\n"):
        body += r.file.readline()
    assert body == (
        b"Subject: two\r\nX-Dots: yes\r\n\r\n..leading dot\r\n...two dots\r\n..\r\nend\r\n.\r\n"
    )
    # W is the body's length with the stuffing removed, before the terminating "."
    assert len(body) - 3 - 3 == w_size(MSG2)  # three stuffed dots
    assert r.cmd("QUIT").startswith(b"+OK")


def test_dele_rset_and_deleted_messages(stack: Stack, mail: Mail, box) -> None:
    user, pw, ids = box
    pop = login(stack, user, pw)
    assert pop.dele(1).startswith(b"+OK")
    for call in (
        lambda: pop.retr(1),
        lambda: pop.dele(1),
        lambda: pop.list(1),
        lambda: pop.uidl(1),
        lambda: pop.top(1, 0),
    ):
        with pytest.raises(poplib.error_proto, match="deleted"):
            call()
    assert pop.stat() == (2, w_size(MSG2) + w_size(MSG3))
    assert [x.split()[0] for x in pop.list()[1]] == [b"2", b"3"]
    assert [x.split()[0] for x in pop.uidl()[1]] == [b"2", b"3"]
    resp = pop.rset()
    assert resp.startswith(b"+OK maildrop has 3 messages")
    assert pop.stat()[0] == 3
    pop.dele(2)
    resp = pop.quit()
    assert resp.startswith(b"+OK")
    assert mail.messages(user) == [ids[0], ids[2]]
    # the next session numbers the remaining messages afresh
    pop = login(stack, user, pw)
    assert [u.split()[1].decode() for u in pop.uidl()[1]] == [ids[0], ids[2]]
    pop.quit()


@pytest.mark.parametrize(
    "command",
    ["RETR 0", "RETR 4", "RETR 2147483647", "LIST 0", "DELE 4", "TOP 4 1", "UIDL 0"],
)
def test_no_such_message(stack: Stack, box, command: str) -> None:
    user, pw, _ = box
    pop = login(stack, user, pw)
    with pytest.raises(poplib.error_proto, match="no such message"):
        pop._shortcmd(command)
    pop.quit()


@pytest.mark.parametrize(
    "command",
    [
        "RETR",
        "RETR x",
        "RETR 1x",
        "RETR -1",
        "RETR +1",
        "RETR 01",
        "RETR 1 2",
        "RETR \uff11",
        "DELE",
        "TOP 1",
        "TOP 1 x",
        "TOP 1 -1",
        "LIST 1 2",
        "STAT 1",
        "NOOP x",
        "RSET 1",
        "QUIT now",
        "UIDL a",
    ],
)
def test_bad_arguments(stack: Stack, box, command: str) -> None:
    user, pw, _ = box
    pop = login(stack, user, pw)
    with pytest.raises(poplib.error_proto) as info:
        pop._shortcmd(command)
    assert info.value.args[0].startswith(b"-ERR")
    assert pop.stat()[0] == 3  # the session goes on
    pop.quit()


def test_wrong_state_and_unknown(stack: Stack, box, raw) -> None:
    user, pw, _ = box
    r = raw()
    r.line()
    for cmd in ("STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL", "LAST"):
        assert r.cmd(cmd).startswith(b"-ERR"), cmd
    assert r.cmd("XYZZY").startswith(b"-ERR unknown")
    assert r.cmd("PASS x").startswith(b"-ERR")  # PASS without USER
    assert r.cmd(f"USER {user}").startswith(b"+OK")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    for cmd in (f"USER {user}", "PASS x", "APOP a b", "AUTH PLAIN", "STLS"):
        assert r.cmd(cmd).startswith(b"-ERR"), cmd
    assert r.cmd("LAST").startswith(b"-ERR")
    assert r.cmd("stat").startswith(b"+OK 3 ")  # commands are case-insensitive
    assert r.cmd("QUIT").startswith(b"+OK")
    assert r.closed()


def test_wrong_password_and_unknown_user_look_alike(stack: Stack, box, raw) -> None:
    user, _, _ = box
    replies = []
    for name in (user, "nosuchuser"):
        r = raw()
        r.line()
        assert r.cmd(f"USER {name}") == b"+OK send PASS"
        replies.append(r.cmd("PASS wrong"))
        assert r.cmd("QUIT").startswith(b"+OK")
    assert replies[0] == replies[1]
    assert replies[0].startswith(b"-ERR [AUTH]")


def test_password_with_spaces(stack: Stack, mail: Mail) -> None:
    user, pw = mail.user(password="correct horse battery staple")
    pop = login(stack, user, pw)
    assert pop.stat() == (0, 0)
    pop.quit()


def test_capa_per_state(stack: Stack, box) -> None:
    user, pw, _ = box
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    caps = pop.capa()
    assert set(caps) == {
        "TOP",
        "UIDL",
        "RESP-CODES",
        "PIPELINING",
        "AUTH-RESP-CODE",
        "USER",
        "SASL",
        "STLS",
        "IMPLEMENTATION",
    }
    assert caps["SASL"] == ["PLAIN"]
    pop.user(user)
    pop.pass_(pw)
    caps = pop.capa()
    assert set(caps) == {"TOP", "UIDL", "RESP-CODES", "PIPELINING", "IMPLEMENTATION"}
    pop.quit()


def test_auth_plain_both_ways(stack: Stack, box, raw) -> None:
    user, pw, _ = box
    token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
    r = raw()
    r.line()
    assert r.cmd(f"AUTH PLAIN {token}").startswith(b"+OK")
    assert r.cmd("QUIT").startswith(b"+OK")
    r = raw()
    r.line()
    assert r.cmd("AUTH PLAIN") == b"+ "
    assert r.cmd(token).startswith(b"+OK")
    assert r.cmd("STAT").startswith(b"+OK 3")
    assert r.cmd("QUIT").startswith(b"+OK")
    # authzid equal to the user is fine, another one is not
    r = raw()
    r.line()
    same = base64.b64encode(f"{user}\0{user}\0{pw}".encode()).decode()
    assert r.cmd(f"AUTH PLAIN {same}").startswith(b"+OK")
    r.cmd("QUIT")
    r = raw()
    r.line()
    other = base64.b64encode(f"admin\0{user}\0{pw}".encode()).decode()
    assert r.cmd(f"AUTH PLAIN {other}").startswith(b"-ERR [AUTH]")
    # cancel, bad base64, unknown mechanism, the mechanism list
    assert r.cmd("AUTH PLAIN") == b"+ "
    assert r.cmd("*").startswith(b"-ERR")
    assert r.cmd("AUTH PLAIN") == b"+ "
    assert r.cmd("!!!notbase64").startswith(b"-ERR [AUTH]")
    assert r.cmd("AUTH CRAM-MD5").startswith(b"-ERR")
    assert r.cmd("AUTH") == b"+OK SASL mechanisms follow"
    assert r.multi() == [b"PLAIN"]
    # poplib's own helper
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    pop._putcmd(f"AUTH PLAIN {token}")
    assert pop._getresp().startswith(b"+OK")
    pop.quit()


def test_apop(stack: Stack, mail: Mail) -> None:
    user, _ = mail.user()
    secret = "apop-secret-of-this-user"
    r = mail.admin.put(f"/users/{user}/apop-secret", json={"secret": secret})
    assert r.status_code == 204, r.text
    mail.deliver(user, MSG1)
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    assert pop.apop(user, secret).startswith(b"+OK")
    assert pop.stat()[0] == 1
    pop.quit()
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.apop(user, "wrong")
    # a digest for another greeting's timestamp is refused (replay)
    ts = re.search(rb"<.*>", pop.getwelcome())
    assert ts
    pop2 = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    digest = hashlib.md5(ts.group(0) + secret.encode()).hexdigest()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop2._shortcmd(f"APOP {user} {digest}")
    pop.quit()
    pop2.quit()


def test_line_too_long_nul_and_non_utf8(stack: Stack, box, raw) -> None:
    user, pw, _ = box
    r = raw()
    r.line()
    assert r.cmd(b"NOOP" + b" " * 300).startswith(b"-ERR")
    assert r.cmd(b"USER " + b"a" * 5000).startswith(b"-ERR")
    assert r.cmd(b"\x00\xff\xfe").startswith(b"-ERR")
    assert r.cmd(b"USER \xff\xfe").startswith(b"+OK")
    assert r.cmd(b"PASS \xff").startswith(b"-ERR [AUTH]")
    assert r.cmd(f"USER {user}") == b"+OK send PASS"
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    # exactly 255 octets with CRLF is a command line; 256 is too long
    assert r.cmd(b"X" * 253).startswith(b"-ERR unknown")
    assert r.cmd(b"X" * 254).startswith(b"-ERR command line too long")
    assert r.cmd("STAT").startswith(b"+OK 3")


def test_replies_fit_512_octets(stack: Stack, box, raw) -> None:
    user, pw, _ = box
    r = raw()
    assert len(r.line()) <= 510
    r.cmd(f"USER {user}")
    assert len(r.cmd(f"PASS {pw}")) <= 510
    r.send(b"UIDL\r\n")
    assert r.line().startswith(b"+OK")
    assert all(len(line) <= 510 for line in r.multi())


def test_bad_command_limit_disconnects(pop3_factory) -> None:
    proc = pop3_factory({"POP3_MAX_BAD_COMMANDS": "3"})
    r = Raw(proc.port)
    r.line()
    assert r.cmd("FOO").startswith(b"-ERR")
    assert r.cmd("BAR").startswith(b"-ERR")
    assert r.cmd("BAZ").startswith(b"-ERR")
    assert r.closed()
    r.close()


def test_auth_timeout_disconnects(pop3_factory) -> None:
    proc = pop3_factory({"POP3_AUTH_TIMEOUT": "0.5"})
    r = Raw(proc.port)
    r.line()
    started = time.monotonic()
    assert r.line().startswith(b"-ERR")
    assert r.closed()
    assert time.monotonic() - started < 5
    r.close()


def test_each_command_restarts_the_idle_timer(pop3_factory) -> None:
    # Commands 0.3 s apart keep a session with a 1 s limit open well past that limit; once the
    # client stops, the limit runs from its last command.
    proc = pop3_factory({"POP3_AUTH_TIMEOUT": "1"})
    r = Raw(proc.port)
    r.line()
    started = time.monotonic()
    while time.monotonic() - started < 3:
        time.sleep(0.3)  # the behaviour: a pause shorter than the idle limit
        assert r.cmd("CAPA") == b"+OK capability list follows"
        assert b"UIDL" in r.multi()
    last = time.monotonic()
    assert r.line() == b"-ERR autologout: idle for too long"
    assert 0.8 < time.monotonic() - last < 5
    assert r.closed()
    r.close()


def test_pipelining(stack: Stack, box, raw) -> None:
    user, pw, _ = box
    r = raw()
    r.line()
    r.send(f"USER {user}\r\nPASS {pw}\r\nSTAT\r\nLIST 1\r\nUIDL 2\r\nNOOP\r\nQUIT\r\n".encode())
    got = [r.line() for _ in range(7)]
    assert all(g.startswith(b"+OK") for g in got), got
    assert got[2] == f"+OK 3 {w_size(MSG1) + w_size(MSG2) + w_size(MSG3)}".encode()
