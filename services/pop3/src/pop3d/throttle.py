"""Abuse limits: concurrent connections (per process, per client address) and failed logins
(fixed-window counters in Redis, shared by every replica)."""

from __future__ import annotations

import time
from collections import Counter

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


class AuthThrottle:
    """Failed logins per client address and per user name, in fixed windows (INCR + EXPIRE).

    Counting by the name as given, whether the account exists or not, so the refusal says
    nothing about which accounts exist. Redis errors propagate (the caller answers [SYS/TEMP]).

    Check and count are one step: :meth:`admit` counts the attempt (INCR) BEFORE the password is
    checked and admits it only when the new count is within the limit, so attempts made in
    parallel cannot all pass a check that none of them has counted yet. An attempt that turns
    out right (or could not be checked) is taken back with :meth:`forgive`.
    """

    def __init__(
        self, redis: aioredis.Redis, window: int, max_per_ip: int, max_per_user: int
    ) -> None:
        self._redis = redis
        self.window = window
        self.max_per_ip = max_per_ip
        self.max_per_user = max_per_user

    def _keys(self, ip: str, user: str) -> tuple[str, str]:
        slot = int(time.time()) // self.window
        return f"pop3:authfail:ip:{ip}:{slot}", f"pop3:authfail:user:{user.lower()}:{slot}"

    async def admit(self, ip: str, user: str) -> tuple[str, str] | None:
        """Count an attempt as a failure in advance; the counted keys when it is within both
        limits, None when this address or user name has used up its failures in this window."""
        ip_key, user_key = self._keys(ip, user)
        by_ip, by_user = await self._count(ip_key, user_key)
        if by_ip > self.max_per_ip or by_user > self.max_per_user:
            return None
        return ip_key, user_key

    async def forgive(self, keys: tuple[str, str]) -> None:
        """Take back an attempt counted by :meth:`admit` (it was not a failure)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.decr(key)
            await pipe.execute()

    async def record_failure(self, ip: str, user: str) -> None:
        """Count a failure that was not admitted first (credentials that cannot be anybody's)."""
        await self._count(*self._keys(ip, user))

    async def _count(self, ip_key: str, user_key: str) -> tuple[int, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(ip_key)
            pipe.expire(ip_key, self.window * 2)
            pipe.incr(user_key)
            pipe.expire(user_key, self.window * 2)
            by_ip, _, by_user, _ = await pipe.execute()
        return int(by_ip), int(by_user)
