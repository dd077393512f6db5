"""The one way a service gets its asyncio Redis client: plain ``REDIS_URL``, or the master that
Sentinel names when ``REDIS_SENTINELS`` is set.

Through Sentinel every new connection asks the sentinels for the current master, and a
connection that finds its server demoted (``READONLY``) is dropped with a ``ConnectionError``
(redis-py's ``SentinelManagedConnection``): the caller sees an ordinary Redis error during a
failover and the next command reaches the new master.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailcommon.settings import CommonSettings


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master pool that waits for a free connection instead of failing when full."""


class _FollowingConnection(SentinelManagedConnection):
    """redis-py's Sentinel connection, except that reconnecting inside a command's retry asks
    the sentinels too. redis-py's own dials the address it had (the old master's) again, so the
    first command after a failover failed on every connection in use (redis-py issue #3874)."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]  # through the sentinels
        await super().send_packed_command(command, check_health)


def connect_redis(
    settings: CommonSettings,
    *,
    socket_timeout: float,
    retry: Retry,
    max_connections: int | None = None,
    wait_timeout: float = 5.0,
) -> aioredis.Redis:
    """A lazily connecting client. With ``max_connections`` the pool is bounded and a command
    waits up to ``wait_timeout`` seconds for a free connection; without, it grows as needed.
    A command that meets a dropped connection or a timeout is retried per ``retry``."""
    options: dict[str, Any] = {
        "socket_connect_timeout": min(2.0, socket_timeout),
        "socket_timeout": socket_timeout,
        "retry": retry,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    bounded: dict[str, Any] = (
        {"max_connections": max_connections, "timeout": wait_timeout}
        if max_connections is not None
        else {}
    )
    if not settings.redis_sentinels:
        if max_connections is None:
            return aioredis.Redis.from_url(settings.redis_url, **options)
        pool = BlockingConnectionPool.from_url(settings.redis_url, **options, **bounded)
        return aioredis.Redis(connection_pool=pool)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [_address(item) for item in settings.redis_sentinels],
        sentinel_kwargs={
            "socket_connect_timeout": options["socket_connect_timeout"],
            "socket_timeout": socket_timeout,
        },
    )
    client: aioredis.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=_BlockingSentinelPool if bounded else SentinelConnectionPool,
        connection_class=_FollowingConnection,
        **_credentials(settings.redis_url),
        **options,
        **bounded,
    )
    return client


def _credentials(url: str) -> dict[str, Any]:
    """What of ``REDIS_URL`` still applies through Sentinel: the database, user and password
    (the host and port are Sentinel's to name)."""
    parsed = parse_url(url)
    return {k: parsed[k] for k in ("db", "username", "password") if k in parsed}


def _address(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    return host.strip("[]"), int(port)
