"""Messages per account per clock hour, counted in Redis so every replica shares the count."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

HOUR = 3600


class HourlyLimit:
    """At most ``limit`` messages per account in each clock hour (a fixed window)."""

    def __init__(self, redis: aioredis.Redis, limit: int, prefix: str = "submit") -> None:
        self._redis = redis
        self.limit = limit
        self.prefix = prefix

    def _key(self, account: str) -> str:
        return f"{self.prefix}:sent:{account}:{int(time.time()) // HOUR}"

    async def exhausted(self, account: str) -> bool:
        """Whether ``account`` has sent its ``limit`` this hour (read only: MAIL FROM)."""
        return int(await self._redis.get(self._key(account)) or 0) >= self.limit

    async def take(self, account: str) -> str | None:
        """Count one message (end of DATA); None when over the limit (the count is undone).
        Returns the key counted in, for :meth:`give_back`."""
        key = self._key(account)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * HOUR)
            count, _ = await pipe.execute()
        if int(count) > self.limit:
            await self._redis.decr(key)
            return None
        return key

    async def give_back(self, key: str) -> None:
        """A message counted by :meth:`take` was not accepted after all."""
        await self._redis.decr(key)
