"""Abuse limits: concurrent connections (per process, per client address) and failed logins
(fixed-window counters in Redis, shared by every replica)."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass

import redis.asyncio as aioredis


class ConnectionLimiter:
    """Counts open connections, in total and per client address."""

    __slots__ = ("_per_ip", "max_per_ip", "max_total", "total")

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: Counter[str] = Counter()

    def try_open(self, ip: str) -> str | None:
        """Count a new connection; returns why it is refused, or None when it is admitted."""
        if self.total >= self.max_total:
            return "too many connections"
        if self._per_ip[ip] >= self.max_per_ip:
            return "too many connections from your address"
        self.total += 1
        self._per_ip[ip] += 1
        return None

    def close(self, ip: str) -> None:
        self.total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]


#: admit: 0 = refused (failures used up), 1 = wait (attempts in flight could use them up),
#: 2 = admitted (registered as in flight). KEYS: failures by address, by name; attempts in flight
#: by address, by name (sorted sets, scored by when they are forgotten if never resolved).
#: ARGV: limit by address, by name, in-flight lifetime (ms), attempt id.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local max_ip, max_user = tonumber(ARGV[1]), tonumber(ARGV[2])
local failed_ip = tonumber(redis.call('GET', KEYS[1]) or '0')
local failed_user = tonumber(redis.call('GET', KEYS[2]) or '0')
if failed_ip >= max_ip or failed_user >= max_user then
    return 0
end
if failed_ip + redis.call('ZCARD', KEYS[3]) >= max_ip
        or failed_user + redis.call('ZCARD', KEYS[4]) >= max_user then
    return 1
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[3], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('ZADD', KEYS[4], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[4], ttl)
return 2
"""
#: resolve: the attempt ARGV[1] is no longer in flight; when ARGV[2] is "1" it failed: count it
#: (ARGV[3]: lifetime of the failure counters, seconds).
_RESOLVE = """
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[2] == '1' then
    redis.call('INCR', KEYS[1])
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    redis.call('INCR', KEYS[2])
    redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
"""
REFUSED, WAIT, ADMITTED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login attempt admitted by :meth:`AuthThrottle.admit`, in flight until resolved."""

    keys: tuple[str, str, str, str]
    id: str


class AuthThrottle:
    """Failed logins per client address and per user name, in fixed windows, in Redis.

    Counting by the name as given, whether the account exists or not, so the refusal says
    nothing about which accounts exist. Redis errors propagate (the caller answers [SYS/TEMP]).

    The check and the count cannot be outrun by attempts made in parallel: :meth:`admit`
    registers each attempt as *in flight* (atomically, in one Lua script) before its password is
    checked, and admits it only while failures plus attempts in flight stay within both limits;
    :meth:`resolve` then counts it as a failure or forgets it. An attempt that finds the limit
    taken by attempts in flight waits for them (a burst of right logins from one address is
    queued, never refused); once the failures alone reach a limit, it is refused.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        window: int,
        max_per_ip: int,
        max_per_user: int,
        *,
        in_flight_ms: int = 120_000,
        max_wait: float = 60.0,
    ) -> None:
        self._redis = redis
        self.window = window
        self.max_per_ip = max_per_ip
        self.max_per_user = max_per_user
        self.in_flight_ms = in_flight_ms  # an attempt never resolved (a crash) is forgotten
        self.max_wait = max_wait
        self._admit = redis.register_script(_ADMIT)
        self._resolve = redis.register_script(_RESOLVE)

    def _keys(self, ip: str, user: str) -> tuple[str, str]:
        slot = int(time.time()) // self.window
        return f"pop3:authfail:ip:{ip}:{slot}", f"pop3:authfail:user:{user.lower()}:{slot}"

    def _all_keys(self, ip: str, user: str) -> tuple[str, str, str, str]:
        by_ip, by_user = self._keys(ip, user)
        return by_ip, by_user, f"pop3:authpending:ip:{ip}", f"pop3:authpending:user:{user.lower()}"

    async def admit(self, ip: str, user: str) -> Attempt | None:
        """Register an attempt as in flight; None when this address or user name has used up
        its failures in this window. Waits while attempts in flight could use them up."""
        attempt_id = secrets.token_hex(8)
        deadline = time.monotonic() + self.max_wait
        pause = 0.01
        while True:
            keys = self._all_keys(ip, user)
            args = (self.max_per_ip, self.max_per_user, self.in_flight_ms, attempt_id)
            verdict = int(await self._admit(keys=keys, args=args))
            if verdict == ADMITTED:
                return Attempt(keys, attempt_id)
            if verdict == REFUSED or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.25)

    async def allows(self, ip: str, user: str) -> bool:
        """Whether neither this address nor this name has used up its failures in this window
        (a read, for a password already known to be right: attempts in flight do not matter)."""
        failed_ip, failed_user = await self._redis.mget(self._keys(ip, user))
        return int(failed_ip or 0) < self.max_per_ip and int(failed_user or 0) < self.max_per_user

    async def resolve(self, attempt: Attempt, *, failed: bool) -> None:
        """The attempt's password was checked (``failed``) or could not be (not a failure)."""
        args = (attempt.id, "1" if failed else "0", self.window * 2)
        await self._resolve(keys=attempt.keys, args=args)

    async def record_failure(self, ip: str, user: str) -> None:
        """Count a failure that was not admitted first (credentials that cannot be anybody's)."""
        ip_key, user_key = self._keys(ip, user)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(ip_key)
            pipe.expire(ip_key, self.window * 2)
            pipe.incr(user_key)
            pipe.expire(user_key, self.window * 2)
            await pipe.execute()
