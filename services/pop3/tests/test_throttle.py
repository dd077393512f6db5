"""The failed-login throttle counts each attempt before checking it (parallel guesses cannot
outrun it), takes back the ones that succeed, and logs unverified names only as a keyed hash."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mailstack.logs import wait_for_records
from mailstack.stack import Stack
from pop3d.auth import log_key, user_tag
from pop3kit import HOST, Mail, Pop3Proc, Raw, account
from redis import Redis

LIMIT = 3
#: The throttle's windows are fixed (multiples of the window since the epoch): with the default
#: 300 s a test's counts could be reset half-way (seen at 01:10:00 UTC); a day's window ends at
#: 00:00 UTC only.
DAY = "86400"


def login(
    port: int, user: str, password: str, *, hold: bool = False, source: str = "127.0.0.1"
) -> tuple[bytes, Raw | None]:
    sock = socket.create_connection((HOST, port), timeout=30, source_address=(source, 0))
    r = Raw(port, sock=sock)
    assert r.line().startswith(b"+OK")
    assert r.cmd(f"USER {user}").startswith(b"+OK")
    reply = r.cmd(f"PASS {password}")
    if hold:
        return reply, r
    r.cmd("QUIT")
    r.close()
    return reply, None


def events(proc: Pop3Proc) -> list[dict[str, object]]:
    return [json.loads(line) for line in proc.logs().splitlines() if line.startswith("{")]


def test_successes_are_not_failures_and_parallel_guesses_are_counted_first(
    mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    proc = pop3_factory(
        {
            "POP3_AUTH_FAIL_MAX_PER_USER": str(LIMIT),
            # the guesses come from the network the owner just logged in from: its own limit
            "POP3_AUTH_FAIL_MAX_PER_KNOWN_NET": str(LIMIT),
            "POP3_AUTH_FAIL_MAX_PER_IP": "100000",
            "POP3_AUTH_FAIL_DELAY": "0.2",
            "POP3_AUTH_FAIL_WINDOW": DAY,
        }
    )
    user, pw = mail.user()
    for _ in range(LIMIT * 2):  # right passwords, one after the other: never throttled
        reply, _ = login(proc.port, user, pw)
        assert reply.startswith(b"+OK"), reply
    # many guesses at once: only LIMIT of them are checked, the rest refused unchecked
    with ThreadPoolExecutor(max_workers=12) as pool:
        replies = list(pool.map(lambda i: login(proc.port, user, f"wrong-{i}")[0], range(12)))
    assert sum(b"[AUTH]" in r for r in replies) == LIMIT, replies
    assert sum(b"[LOGIN-DELAY]" in r for r in replies) == 12 - LIMIT, replies
    reply, _ = login(proc.port, user, pw)  # now even the right password waits for the window
    assert b"[LOGIN-DELAY]" in reply, reply

    # another account: a session holds it, the second login is refused [IN-USE]
    other, other_pw = mail.user()
    reply, held = login(proc.port, other, other_pw, hold=True)
    assert reply.startswith(b"+OK") and held is not None
    reply, _ = login(proc.port, other, other_pw)
    assert b"[IN-USE]" in reply, reply
    held.cmd("QUIT")
    held.close()

    tag = user_tag(log_key(mail.stack.service_token), account(user))
    wait_for_records(proc.logs, {"event": "refusal", "user_hash": tag}, count=12 + 1)
    wait_for_records(proc.logs, {"event": "refusal", "user": account(other)})
    refusals = [e for e in events(proc) if e.get("event") == "refusal"]
    mine = [e for e in refusals if e.get("user_hash") == tag]
    assert sorted(str(e["reason"]) for e in mine) == sorted(
        ["bad_credentials"] * LIMIT + ["throttled"] * (12 - LIMIT + 1)
    )
    # names not (yet) verified are never logged as typed; a verified account is named
    assert not [e for e in refusals if e.get("user") in (user, account(user))]
    assert [e["reason"] for e in refusals if e.get("user") == account(other)] == ["in_use"]
    assert user_tag(b"k", "Bob") == user_tag(b"k", "bob") != user_tag(b"other", "bob")


def test_a_burst_of_right_logins_from_one_address_is_queued_not_refused(
    mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    """Attempts in flight hold a place under the limit only until they are checked: more right
    logins at once than the per-address limit all get in (a NAT, a client with many accounts)."""
    proc = pop3_factory(
        {
            "POP3_AUTH_FAIL_MAX_PER_USER": str(LIMIT),
            "POP3_AUTH_FAIL_MAX_PER_IP": str(LIMIT),
            "POP3_AUTH_FAIL_DELAY": "0.2",
            "POP3_AUTH_FAIL_WINDOW": DAY,
        }
    )
    # an address of its own (the failure counters are shared by every pop3 on this Redis)
    src = f"127.0.{random.randint(100, 250)}.{random.randint(2, 250)}"
    users = [mail.user() for _ in range(LIMIT * 5)]
    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        replies = list(pool.map(lambda up: login(proc.port, *up, source=src)[0], users))
    assert all(r.startswith(b"+OK") for r in replies), replies
    # failures still count: LIMIT wrong guesses (in parallel) use up this address ...
    with ThreadPoolExecutor(max_workers=LIMIT * 3) as pool:
        replies = list(
            pool.map(lambda i: login(proc.port, users[i][0], "x", source=src)[0], range(LIMIT * 3))
        )
    assert sum(b"[AUTH]" in r for r in replies) == LIMIT, replies
    # ... and then even a right password from it is refused
    reply, _ = login(proc.port, *users[-1], source=src)
    assert b"[LOGIN-DELAY]" in reply, reply


def test_guesses_from_elsewhere_do_not_lock_the_owner_out(
    mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    """The name's failures used up by an attacker refuse the right password from networks the
    account never logged in from, not from the owner's network (/24) it logged in from before,
    where a neighbour gets only the smaller per-network limit; over the login cache as well."""
    proc = pop3_factory(
        {
            "POP3_AUTH_FAIL_MAX_PER_USER": str(LIMIT),
            "POP3_AUTH_FAIL_MAX_PER_KNOWN_NET": "2",
            "POP3_AUTH_FAIL_MAX_PER_IP": "100000",
            "POP3_AUTH_FAIL_DELAY": "0.2",
            "POP3_AUTH_FAIL_WINDOW": DAY,
        }
    )
    home, away = random.sample(range(100, 250), 2)
    owner_src, neighbour_src = f"127.{home}.1.1", f"127.{home}.1.77"
    attacker_src, owner_away = f"127.{away}.2.2", f"127.{away}.3.3"
    user, pw = mail.user()
    reply, _ = login(proc.port, user, pw, source=owner_src)  # the owner, at home (and cached)
    assert reply.startswith(b"+OK"), reply

    with ThreadPoolExecutor(max_workers=12) as pool:
        replies = list(
            pool.map(lambda i: login(proc.port, user, f"w{i}", source=attacker_src)[0], range(12))
        )
    assert sum(b"[AUTH]" in r for r in replies) == LIMIT, replies
    # the attacker's network, and any other never used, are refused even the right password
    # (the login cache knows it: the cached path is refused too) ...
    for src in (attacker_src, owner_away):
        reply, _ = login(proc.port, user, pw, source=src)
        assert b"[LOGIN-DELAY]" in reply, (src, reply)
    # ... the owner's network is not: at once, from the address it used and another in its /24
    started = time.monotonic()
    for src in (owner_src, neighbour_src, owner_src):
        reply, _ = login(proc.port, user, pw, source=src)
        assert reply.startswith(b"+OK"), (src, reply)
    assert time.monotonic() - started < 60

    # a neighbour on the owner's network guessing: 2 checked, then that network is throttled
    # too, and the attacker's stays throttled
    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(
            pool.map(lambda i: login(proc.port, user, f"n{i}", source=neighbour_src)[0], range(6))
        )
    assert sum(b"[AUTH]" in r for r in replies) == 2, replies
    for src in (owner_src, attacker_src):
        reply, _ = login(proc.port, user, pw, source=src)
        assert b"[LOGIN-DELAY]" in reply, (src, reply)


def test_known_network_marker_lost_in_redis_is_set_again(
    stack: Stack, mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    """A cached login renews the known network's marker at most hourly, but one that Redis lost
    (deleted, or Redis restarted empty) is set again at the next login."""
    proc = pop3_factory({})
    user, pw = mail.user()
    src = f"127.{random.randrange(100, 250)}.9.9"
    redis = Redis.from_url(stack.redis_url)
    marker = f"pop3:knownnet:{account(user)}:{src.rsplit('.', 1)[0]}.0/24"
    try:
        for _ in range(2):  # the first checks the password, the second comes from the cache
            assert login(proc.port, user, pw, source=src)[0].startswith(b"+OK")
        assert redis.ttl(marker) > 29 * 86400
        redis.delete(marker)
        assert login(proc.port, user, pw, source=src)[0].startswith(b"+OK")
        assert redis.ttl(marker) > 29 * 86400
    finally:
        redis.close()
