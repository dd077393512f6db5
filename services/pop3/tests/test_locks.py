"""Maildrop locks, snapshots and UPDATE against real Redis and the real mailstore."""

from __future__ import annotations

import poplib
import time
from collections.abc import Callable

import pytest
import redis
from mailcommon.locks import fence_key, lock_key
from mailstack.logs import wait_for_records
from mailstack.ports import wait_until
from mailstack.stack import Stack
from pop3kit import HOST, Mail, Pop3Proc, Raw, account


def login(port: int, user: str, pw: str) -> poplib.POP3:
    pop = poplib.POP3(HOST, port, timeout=30)
    pop.user(user)
    pop.pass_(pw)
    return pop


@pytest.fixture
def rds(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url)


def test_second_session_gets_in_use(stack: Stack, mail: Mail) -> None:
    user, pw = mail.user()
    first = login(stack.pop3_port, user, pw)
    second = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    second.user(user)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[IN-USE\]"):
        second.pass_(pw)
    first.quit()
    second.user(user)
    assert second.pass_(pw).startswith(b"+OK")  # released at QUIT
    second.quit()


def test_lock_released_when_connection_drops(stack: Stack, mail: Mail, rds: redis.Redis) -> None:
    user, pw = mail.user()
    pop = login(stack.pop3_port, user, pw)
    assert rds.get(lock_key(account(user))) is not None
    pop.close()  # no QUIT
    wait_until(
        lambda: rds.get(lock_key(account(user))) is None, 30, "the lock's release after the drop"
    )
    login(stack.pop3_port, user, pw).quit()


def test_admin_delete_refused_while_locked(stack: Stack, mail: Mail) -> None:
    user, pw = mail.user()
    mid = mail.deliver(user, b"Subject: x\n\nbody\n")
    pop = login(stack.pop3_port, user, pw)
    assert mail.admin.delete(f"/users/{user}/messages/{mid}").status_code == 423
    pop.quit()
    assert mail.admin.delete(f"/users/{user}/messages/{mid}").status_code == 204


def test_message_delivered_during_session(stack: Stack, mail: Mail) -> None:
    user, pw = mail.user()
    old = mail.deliver(user, b"Subject: old\n\nold\n")
    pop = login(stack.pop3_port, user, pw)
    new = mail.deliver(user, b"Subject: new\n\nnew\n")
    assert pop.stat()[0] == 1
    assert pop.uidl()[1] == [f"1 {old}".encode()]
    with pytest.raises(poplib.error_proto):
        pop.retr(2)
    pop.dele(1)
    assert pop.quit().startswith(b"+OK")
    assert mail.messages(user) == [new]
    pop = login(stack.pop3_port, user, pw)
    assert pop.uidl()[1] == [f"1 {new}".encode()]
    pop.quit()


def test_dropped_connection_after_dele_deletes_nothing(
    stack: Stack, mail: Mail, rds: redis.Redis
) -> None:
    user, pw = mail.user()
    ids = [mail.deliver(user, f"Subject: {i}\n\n{i}\n".encode()) for i in range(3)]
    r = Raw(stack.pop3_port)
    r.line()
    r.cmd(f"USER {user}")
    assert r.cmd(f"PASS {pw}").startswith(b"+OK")
    for n in (1, 2, 3):
        assert r.cmd(f"DELE {n}").startswith(b"+OK")
    r.close()  # no QUIT
    wait_until(
        lambda: rds.get(lock_key(account(user))) is None, 30, "the end of the dropped session"
    )
    assert mail.messages(user) == ids
    pop = login(stack.pop3_port, user, pw)
    assert pop.stat()[0] == 3
    pop.quit()


def test_stale_fence_is_raised_and_retried(stack: Stack, mail: Mail, rds: redis.Redis) -> None:
    """Redis lost its fencing counter: the mailstore has seen higher; login still works."""
    user, pw = mail.user()
    mail.deliver(user, b"Subject: x\n\nbody\n")
    for _ in range(3):
        login(stack.pop3_port, user, pw).quit()
    seen = int(rds.get(fence_key(account(user))) or 0)
    assert seen >= 3
    rds.delete(fence_key(account(user)))
    pop = login(stack.pop3_port, user, pw)
    assert int(rds.get(fence_key(account(user))) or 0) > seen
    pop.dele(1)
    assert pop.quit().startswith(b"+OK")
    assert mail.messages(user) == []


def test_lost_lease_means_no_expunge(
    mail: Mail, rds: redis.Redis, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    proc = pop3_factory({"POP3_LOCK_TTL": "3"})
    user, pw = mail.user()
    mid = mail.deliver(user, b"Subject: x\n\nbody\n")
    pop = login(proc.port, user, pw)
    pop.dele(1)
    rds.delete(lock_key(account(user)))  # as if it had expired
    wait_for_records(
        proc.logs, {"event": "lease_lost", "user": account(user)}
    )  # the renewer saw it
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\]"):
        pop.quit()
    assert mail.messages(user) == [mid]


def test_lease_is_renewed(
    mail: Mail, rds: redis.Redis, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    proc = pop3_factory({"POP3_LOCK_TTL": "3"})
    user, pw = mail.user()
    mail.deliver(user, b"Subject: x\n\nbody\n")
    pop = login(proc.port, user, pw)
    pop.dele(1)
    time.sleep(4)  # the behaviour: longer than the TTL (3 s), only renewal keeps the lock
    assert rds.pttl(lock_key(account(user))) > 0
    assert pop.quit().startswith(b"+OK")
    assert mail.messages(user) == []


def test_redis_down_refuses_login_and_deletes_nothing(
    stack: Stack, mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    proc = pop3_factory({"POP3_LOCK_TTL": "3"})
    user, pw = mail.user()
    ids = [mail.deliver(user, f"Subject: {i}\n\n{i}\n".encode()) for i in range(2)]
    pop = login(proc.port, user, pw)
    pop.dele(1)
    stack.stop_service("redis")
    try:
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\]"):
            pop.quit()
        other = poplib.POP3(HOST, proc.port, timeout=30)
        other.user(user)
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\]"):
            other.pass_(pw)
        other.quit()
    finally:
        stack.start_service("redis")
    assert mail.messages(user) == ids

    # Recovery: once Redis is back (and the old lease, which could not be released, expired).
    def logged_in() -> poplib.POP3 | None:
        pop = poplib.POP3(HOST, proc.port, timeout=30)
        pop.user(user)
        try:
            pop.pass_(pw)
        except poplib.error_proto as exc:
            assert b"[IN-USE]" in exc.args[0] or b"[SYS/TEMP]" in exc.args[0]
            pop.quit()
            return None
        return pop

    pop = wait_until(logged_in, 30, "a login once Redis is back")
    assert pop.stat()[0] == 2
    pop.dele(1)
    assert pop.quit().startswith(b"+OK")
    assert mail.messages(user) == [ids[1]]
