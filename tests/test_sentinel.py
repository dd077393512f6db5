"""Redis behind Sentinel (issue 17): real ``redis-server`` and ``redis-sentinel`` processes (a
master, a replica, three sentinels; ``mailstack.sentinel.SentinelGroup``) and the stack pointed
at them with ``REDIS_SENTINELS``. The master fails over during POP3 sessions, logins and SMTP
deliveries; one failover loses the last lock writes, and the fencing numbers keep the mail safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import poplib
import smtplib
import threading
import time
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from mailcommon.client import LockConflict, MailstoreClient
from mailcommon.locks import MaildropLocks, fence_key, lock_key
from mailcommon.redisclient import connect_redis
from mailcommon.settings import CommonSettings
from mailstack.ports import wait_until
from mailstack.sentinel import SentinelGroup
from mailstack.stack import Stack
from mailstack.underload import add_account
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ReadOnlyError

pytestmark = [pytest.mark.local_only, pytest.mark.slow]
HOST = "127.0.0.1"
PASSWORD = "secret-password"
DOMAIN = "pokey.onl"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path / "redis") as started:
        yield started


@pytest.fixture
def stack(tmp_path: Path, group: SentinelGroup) -> Iterator[Stack]:
    env = {
        **group.environment(),
        "POP3_ALLOW_PLAINTEXT_AUTH": "true",
        "POP3_AUTH_FAIL_DELAY": "0",
        "AUTH_CACHE_TTL": "0",  # every login takes the whole path, through Redis
    }
    services = ("mailstore-api", "smtp-in", "pop3")
    with Stack(tmp_path / "stack", services=services, env=env) as running:
        yield running


def add_user(stack: Stack, name: str) -> None:
    add_account(stack.api_url, stack.admin_token, name, PASSWORD)


def deliver(stack: Stack, user: str, subject: str) -> None:
    response = httpx.post(
        f"{stack.api_url}/internal/v1/deliveries",
        params={"recipient": user},
        content=f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode(),
        headers={"Authorization": f"Bearer {stack.service_token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text


def pop_login(stack: Stack, user: str) -> poplib.POP3:
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    try:
        pop.user(user)
        pop.pass_(PASSWORD)
    except BaseException:
        with contextlib.suppress(OSError, poplib.error_proto):
            pop.close()
        raise
    return pop


def subject(pop: poplib.POP3, number: int) -> str:
    _, lines, _ = pop.top(number, 0)
    return next(line.decode()[9:] for line in lines if line.startswith(b"Subject: "))


def stored_subjects(stack: Stack, user: str) -> list[str]:
    box = stack.maildir(user)
    paths = [*(box / "new").iterdir(), *(box / "cur").iterdir()]
    parser = BytesHeaderParser()
    return sorted(str(parser.parsebytes(path.read_bytes())["Subject"]) for path in paths)


def test_a_replica_refuses_every_lock_script_and_the_client_follows_a_demotion(
    group: SentinelGroup,
) -> None:
    """The lock scripts run only on a master (Redis 7 script flags): a replica, or a master
    demoted by a failover, answers READONLY instead of acting on its copy; the client from
    ``mailcommon.redisclient`` then finds the new master by itself."""
    account = f"bob@{DOMAIN}"
    settings = CommonSettings(mail_domains=DOMAIN, redis_sentinels=group.sentinels)

    async def run() -> None:
        client = connect_redis(settings, socket_timeout=2.0, retry=Retry(NoBackoff(), 1))
        replica = aioredis.Redis(host=HOST, port=group.replica_port())
        try:
            locks = MaildropLocks(client)
            lease = await locks.acquire(account, 60_000)
            assert lease is not None
            for _ in range(100):  # replicated within a moment
                if await replica.get(lock_key(account)) is not None:
                    break
                await asyncio.sleep(0.05)
            stale = MaildropLocks(replica)
            for call in (
                stale.acquire(f"carol@{DOMAIN}", 60_000),
                stale.renew(lease, 60_000),
                stale.release(lease),
                stale.raise_fence(account, 10),
                stale.holder(account),
            ):
                with pytest.raises(ReadOnlyError):
                    await call
            old = group.demote_master()
            group.wait_failover(old)
            # The pooled connection meets READONLY on the demoted master; the retry reaches
            # the new one, which had the lease replicated.
            assert await locks.holder(account) == lease.value
            assert await locks.renew(lease, 60_000)
            assert await locks.release(lease)
        finally:
            await replica.aclose()
            await client.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("how", ["kill", "demote"])
def test_a_failover_during_sessions_logins_and_deliveries(
    group: SentinelGroup, stack: Stack, how: str
) -> None:
    """Logins are refused with -ERR [SYS/TEMP] only while the master is failing over and work
    after it, with nothing restarted; a session open across it expunges; every delivery that
    got a 250 is in the mailbox (and none is refused: delivery needs no Redis)."""
    for name in ("carol", "dave", "erin"):
        add_user(stack, name)
    for n in (1, 2, 3):
        deliver(stack, "erin", f"erin {n}")
    stop = threading.Event()
    logins: list[tuple[float, str]] = []
    acknowledged: list[str] = []
    smtp_other: list[str] = []

    def log_in_again_and_again() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                pop_login(stack, "dave").quit()
                outcome = "ok"
            except poplib.error_proto as exc:
                text = exc.args[0].decode(errors="replace")
                outcome = "temp" if text.startswith("-ERR [SYS/TEMP]") else f"other: {text}"
            except OSError as exc:
                outcome = f"other: {exc!r}"
            logins.append((started, outcome))
            time.sleep(0.05)

    def send_again_and_again() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            name = f"carol {seq:04d}"
            try:
                with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
                    smtp.sendmail(
                        "alice@example.org",
                        [f"carol@{DOMAIN}"],
                        f"Subject: {name}\r\n\r\nhello\r\n".encode(),
                    )
                acknowledged.append(name)
            except smtplib.SMTPException as exc:
                smtp_other.append(repr(exc))

    erin = pop_login(stack, "erin")
    threads = [threading.Thread(target=f) for f in (log_in_again_and_again, send_again_and_again)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(logins) >= 5 and len(acknowledged) >= 5, 30, "traffic")
        failing = time.monotonic()
        old = group.kill_master() if how == "kill" else group.demote_master()
        group.wait_failover(old)
        failed_over = time.monotonic()
        settled = failed_over + 0.5  # an attempt begun before may still be answered after
        wait_until(
            lambda: sum(t > settled and o == "ok" for t, o in logins) >= 5, 30, "logins after"
        )
        # The session opened before the failover goes on and expunges under its lock.
        assert erin.stat()[0] == 3
        erin.dele(1)
        assert erin.quit().startswith(b"+OK")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert [o for _, o in logins if o.startswith("other")] == []
    refused = [t for t, o in logins if o == "temp"]
    if how == "kill":  # the master was gone for seconds: logins then were refused, not hung
        assert refused
    assert all(failing - 0.5 <= t <= settled for t in refused), (failing, failed_over, refused)
    assert all(o == "ok" for t, o in logins if t > settled)
    assert stored_subjects(stack, "erin") == ["erin 2", "erin 3"]
    assert smtp_other == []  # deliveries need no Redis: a failover refuses none
    assert set(acknowledged) <= set(stored_subjects(stack, "carol"))


def test_a_failover_that_lost_the_lock_writes_lets_only_the_newer_fence_delete(
    group: SentinelGroup, stack: Stack
) -> None:
    """The replica never got the first session's lock: the new master hands the same fencing
    number out again, so two sessions for one maildrop both believe they hold it. The mailstore
    accepts that number only with the first session's token; the second is lifted to the next
    number, and only it deletes."""
    add_user(stack, "bob")
    account = f"bob@{DOMAIN}"
    deliver(stack, "bob", "one")
    deliver(stack, "bob", "two")
    with group.replication_cut():
        first = pop_login(stack, "bob")  # lock and fence 1: on the master only
        numbers = {subject(first, n): n for n in (1, 2)}
        first.dele(numbers["one"])
        old = group.kill_master()
        new = group.wait_failover(old)
    with group.client(new) as master:
        assert master.get(lock_key(account)) is None  # the last lock writes are lost
        assert master.get(fence_key(account)) is None

    def second_login() -> poplib.POP3 | None:
        try:
            return pop_login(stack, "bob")
        except poplib.error_proto as exc:
            assert exc.args[0].startswith(b"-ERR [SYS/TEMP]"), exc
            return None

    second = wait_until(second_login, 20, "a login after the failover")
    assert first.stat()[0] == 1  # both sessions are in TRANSACTION (one marked deleted)
    assert second.stat()[0] == 2
    with group.client(new) as master:
        holder = master.get(lock_key(account))
    assert holder is not None and holder.split(b":")[0] == b"2"  # lifted above the reused 1
    second.dele(numbers["two"])
    assert second.quit().startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
        first.quit()
    assert stored_subjects(stack, "bob") == ["one"]


def test_a_login_against_a_replica_is_refused_with_sys_temp(
    tmp_path: Path, group: SentinelGroup
) -> None:
    """REDIS_URL naming a replica (a master demoted, no Sentinel to say so): the login's writes
    (the throttle's, the lock script) are refused with READONLY, and the login gets
    -ERR [SYS/TEMP], not a crash or a session without a lock."""
    env = {
        "REDIS_URL": f"redis://{HOST}:{group.replica_port()}/0",
        "POP3_ALLOW_PLAINTEXT_AUTH": "true",
        "POP3_AUTH_FAIL_DELAY": "0",
    }
    with Stack(tmp_path / "stack", services=("mailstore-api", "pop3"), env=env) as stack:
        add_user(stack, "bob")
        for _ in range(2):  # and again: the server is still there
            with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\]"):
                pop_login(stack, "bob")
        wait_until(lambda: "ReadOnlyError" in stack.logs("pop3"), 10, "the READONLY in the log")


def test_when_the_lock_check_is_fooled_the_fence_alone_refuses_the_older_session(
    group: SentinelGroup, stack: Stack
) -> None:
    """The same failover, at the mailstore's internal API: the first lease's writes are lost and
    Redis hands its fencing number to a second lease. Then the Redis check is made to pass for
    the first lease again (its value written back, as a read racing the failover or a stale
    master still answering could show it): the fencing number alone refuses it, after the second
    session's snapshot. Before fences kept their token both used the same number and the first
    session's expunge was applied."""
    add_user(stack, "bob")
    account = f"bob@{DOMAIN}"
    deliver(stack, "bob", "one")
    deliver(stack, "bob", "two")
    settings = CommonSettings(mail_domains=DOMAIN, redis_sentinels=group.sentinels)

    async def run() -> None:
        redis = connect_redis(settings, socket_timeout=2.0, retry=Retry(NoBackoff(), 1))
        store = MailstoreClient(stack.api_url, stack.service_token)
        locks = MaildropLocks(redis)
        try:
            with group.replication_cut():
                first = await locks.acquire(account, 60_000)
                assert first is not None
                one, two = [
                    e.id for e in (await store.snapshot(account, first.token, first.fence)).entries
                ]
                group.wait_failover(group.kill_master())
            second = await locks.acquire(account, 60_000)
            assert second is not None and second.fence == first.fence  # handed out twice
            with pytest.raises(LockConflict) as refused:
                await store.snapshot(account, second.token, second.fence)
            assert refused.value.code == "stale_fence"
            # What pop3 does on stale_fence: lift the counter, lock again, retry.
            await locks.raise_fence(account, refused.value.highest_fence)
            assert await locks.release(second)
            second = await locks.acquire(account, 60_000)
            assert second is not None and second.fence == first.fence + 1
            await store.snapshot(account, second.token, second.fence)
            assert await store.expunge(account, [two], second.token, second.fence) == [two]
            await redis.set(lock_key(account), first.value)  # the Redis check fooled
            with pytest.raises(LockConflict) as refused:
                await store.expunge(account, [one], first.token, first.fence)
            assert refused.value.code == "stale_fence"
        finally:
            await store.aclose()
            await redis.aclose()

    asyncio.run(run())
    assert stored_subjects(stack, "bob") == ["one"]
