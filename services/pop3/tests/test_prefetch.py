"""Prefetch of small messages for sequential RETR/TOP: byte-exact, DELE-aware, bounded in memory.

Every check goes through the real stack (pop3d, mailstore, Redis); what was fetched in batches is
read from pop3d's session log line (``batches``, ``prefetched``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from mailstack.logs import wait_for_records
from mailstack.stack import Stack
from pop3kit import Mail, Pop3Proc, Raw, account


def message(i: int, size: int = 0) -> bytes:
    """Varied small messages: dot lines, a first line that is a dot line, no final newline."""
    head = b"Subject: prefetch %d\nX-Id: %s\n\n" % (i, secrets.token_hex(8).encode())
    body = b".dot at start\nplain %d\n..two dots\n.\n" % i
    if size:
        line = b"filler 0123456789 abcdefghijklmnopqrstuvwxyz\n"
        body += line * ((size - len(head) - len(body)) // len(line))
    data = head + body
    return data.rstrip(b"\n") if i % 5 == 4 else data


def client_view(stored: bytes) -> bytes:
    """What a client holds after RETR: CRLF line ends, a final CRLF."""
    crlf = stored.replace(b"\n", b"\r\n")
    return crlf if crlf.endswith(b"\r\n") or not crlf else crlf + b"\r\n"


def login(r: Raw, user: str, pw: str) -> None:
    assert r.line().startswith(b"+OK")
    assert r.cmd(f"USER {user}").startswith(b"+OK")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK"), user


def logged_in_with(stack: Stack, mail: Mail, stored: list[bytes]) -> tuple[str, Raw, list[str]]:
    """A new account holding ``stored`` (delivered in order) and a POP3 session logged in to it:
    (the account, the session, the message ids)."""
    user, pw = mail.user()
    ids = [mail.deliver(user, data) for data in stored]
    r = Raw(stack.pop3_port)
    login(r, user, pw)
    return user, r, ids


def fetch(r: Raw, command: str) -> tuple[bytes, bytes]:
    """(status line, the body as the client holds it: unstuffed, CRLF)."""
    status = r.cmd(command)
    if not status.startswith(b"+OK"):
        return status, b""
    lines = [line[1:] if line.startswith(b".") else line for line in r.multi()]
    return status, b"".join(line + b"\r\n" for line in lines)


def wait_for_session(logs: Callable[[], str], user: str) -> list[dict[str, object]]:
    return wait_for_records(logs, {"event": "session", "user": account(user)})


def test_sequential_retr_is_byte_exact_and_batched(stack: Stack, mail: Mail) -> None:
    stored = [message(i) for i in range(40)]
    user, r, _ = logged_in_with(stack, mail, stored)
    for n, data in enumerate(stored, 1):
        status, body = fetch(r, f"RETR {n}")
        assert status == b"+OK %d octets" % len(client_view(data)), (n, status)
        assert body == client_view(data), n
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
    (line,) = wait_for_session(lambda: stack.logs("pop3"), user)
    assert line["retrieved"] == 40
    assert line["batches"] == 1  # 40 small messages: one batch read
    assert line["prefetched"] == 39


def test_top_and_dele_inside_a_prefetched_range(stack: Stack, mail: Mail) -> None:
    stored = [message(i) for i in range(10)]
    user, r, _ = logged_in_with(stack, mail, stored)
    status, body = fetch(r, "TOP 1 0")  # prefetches 2..10
    assert status.startswith(b"+OK")
    assert body == client_view(stored[0].split(b"\n\n")[0] + b"\n\n")
    assert r.cmd("DELE 3").startswith(b"+OK")
    status, _ = fetch(r, "RETR 3")
    assert status.startswith(b"-ERR") and b"deleted" in status
    assert r.cmd("DELE 2").startswith(b"+OK")
    status, body = fetch(r, "TOP 4 1")
    head, _, rest = stored[3].partition(b"\n\n")
    assert body == client_view(head + b"\n\n" + rest.split(b"\n")[0] + b"\n")
    status, body = fetch(r, "RETR 4")  # TOP took 4 out of the prefetch: read again, exact
    assert body == client_view(stored[3])
    for n in (5, 6):
        status, body = fetch(r, f"RETR {n}")
        assert body == client_view(stored[n - 1]), n
    status, body = fetch(r, "RETR 2")  # deleted: -ERR whatever was prefetched
    assert status.startswith(b"-ERR")
    status, body = fetch(r, "RETR 1")  # backwards: read again, exact
    assert body == client_view(stored[0])
    assert r.cmd("RSET").startswith(b"+OK")  # drops the prefetch; 2 and 3 live again
    for n in (2, 3, 7, 10):
        status, body = fetch(r, f"RETR {n}")
        assert body == client_view(stored[n - 1]), n
    assert r.cmd("DELE 9").startswith(b"+OK")
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
    remaining = mail.messages(user)
    assert len(remaining) == 9  # only 9 was deleted
    (line,) = wait_for_session(lambda: stack.logs("pop3"), user)
    assert line["deleted"] == 1


def test_gone_messages_and_big_ones_in_between(stack: Stack, mail: Mail) -> None:
    stored = [message(0), message(1), message(2, 200 * 1024), message(3), message(4), message(5)]
    user, r, ids = logged_in_with(stack, mail, stored)
    # message 5 vanishes behind the session's back (another Maildir tool): the batch of 4..6
    # fails as a whole, and each message is then read alone; 1 and 2 are one batch (the big
    # message 3 ends it, and is streamed)
    box = stack.maildir(user) / "new"
    next(p for p in box.iterdir() if p.name.startswith(ids[4])).unlink()
    for n in (1, 2, 3, 4):
        status, body = fetch(r, f"RETR {n}")
        assert body == client_view(stored[n - 1]), n
    status, _ = fetch(r, "RETR 5")
    assert status.startswith(b"-ERR [SYS/PERM]")
    status, body = fetch(r, "RETR 6")
    assert body == client_view(stored[5])
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
    (line,) = wait_for_session(lambda: stack.logs("pop3"), user)
    assert line["retrieved"] == 5
    assert line["batches"] == 1 and line["prefetched"] == 1


def test_the_process_wide_budget_bounds_prefetch(
    mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    # Messages of about 3,960 stored octets: a batch is 16 of them (at most 64,000 octets), and
    # after its first message is sent a session holds 15 (about 59,400). The process may hold
    # 125,000 in all: two sessions' prefetches, and then not even two more messages.
    proc = pop3_factory({"POP3_PREFETCH_BYTES": "64000", "POP3_PREFETCH_TOTAL": "125000"})
    users = [mail.user() for _ in range(4)]
    stored: dict[str, list[bytes]] = {}
    for user, _ in users:
        stored[user] = [message(i, 3990) for i in range(20)]
        for data in stored[user]:
            mail.deliver(user, data)

    def retr(r: Raw, user: str, numbers: range) -> None:
        for n in numbers:
            status, body = fetch(r, f"RETR {n}")
            assert body == client_view(stored[user][n - 1]), (user, n, status)

    (u1, p1), (u2, p2), (u3, p3), (u4, p4) = users
    r1, r2, r3, r4 = (Raw(proc.port) for _ in range(4))
    login(r1, u1, p1)
    retr(r1, u1, range(1, 2))  # holds 15 messages
    login(r2, u2, p2)
    retr(r2, u2, range(1, 2))  # holds 15 messages: the budget is used up
    login(r3, u3, p3)
    retr(r3, u3, range(1, 21))  # every message read alone
    assert r3.cmd("QUIT").startswith(b"+OK")
    assert r1.cmd("QUIT").startswith(b"+OK")  # gives its share back
    login(r4, u4, p4)
    retr(r4, u4, range(1, 21))
    assert r4.cmd("QUIT").startswith(b"+OK")
    retr(r2, u2, range(2, 21))
    assert r2.cmd("QUIT").startswith(b"+OK")
    for r in (r1, r2, r3, r4):
        r.close()
    lines = [wait_for_session(proc.logs, user)[0] for user, _ in users]
    assert [(x["retrieved"], x["batches"]) for x in lines[:3]] == [(1, 1), (20, 2), (20, 0)]
    assert [x["prefetched"] for x in lines[:3]] == [0, 18, 0]
    assert lines[3]["batches"] == 2 and lines[3]["prefetched"] == 18
