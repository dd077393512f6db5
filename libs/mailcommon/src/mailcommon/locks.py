"""The maildrop lock in Redis, with a fencing number.

Keys (the ``{user}`` hash tag keeps both in one Redis Cluster slot):

- ``maildrop:{user}:lock``  value ``"<fence>:<token>"``, set NX with a TTL in milliseconds;
- ``maildrop:{user}:fence`` a counter; each acquisition takes the next number.

Acquire, renew and release are Lua scripts, so each is atomic: acquisition takes a fencing number
only when it gets the lock; renewal and release act only while the lock still holds our value
(compare-and-set, compare-and-delete). The mailstore checks both the value and the fencing number
before it expunges (see docs/architecture.md).

Every script, the holder's read too, starts with a ``#!lua`` line and no ``no-writes`` flag (Redis 7
script flags): a replica refuses it with ``READONLY`` before it runs. A server demoted by a failover
can therefore neither take, renew nor vouch for a lock from its stale copy; through Sentinel the
``READONLY`` drops the connection and the next one reaches the new master
(:mod:`mailcommon.redisclient`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

# Redis 7 script flags: no ``no-writes``, so only a master runs these (a replica answers READONLY).
_MASTER_ONLY = "#!lua\n"
_ACQUIRE = (
    _MASTER_ONLY
    + """if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence .. ':' .. ARGV[1], 'PX', ARGV[2])
return fence
"""
)
_RENEW = (
    _MASTER_ONLY
    + """if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
)
_RELEASE = (
    _MASTER_ONLY
    + """if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)
# Raise the counter to at least ARGV[1]: used when the mailstore has seen a higher fencing number
# than Redis remembers (Redis lost its data).
_RAISE_FENCE = (
    _MASTER_ONLY
    + """local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
)
# The holder as the master knows it: a stale replica's answer could vouch for a lost lock.
_HOLDER = _MASTER_ONLY + "return redis.call('GET', KEYS[1])\n"


def lock_key(user: str) -> str:
    """The Redis key of ``user``'s maildrop lock."""
    return f"maildrop:{{{user}}}:lock"


def fence_key(user: str) -> str:
    """The Redis key of ``user``'s fencing counter."""
    return f"maildrop:{{{user}}}:fence"


@dataclass(frozen=True)
class Lease:
    """A held maildrop lock."""

    user: str
    token: str
    fence: int

    @property
    def value(self) -> str:
        """What the lock key holds while this lease is valid."""
        return f"{self.fence}:{self.token}"


class MaildropLocks:
    """Acquire, renew, release and inspect maildrop locks. Redis errors propagate to the caller."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._raise_fence = client.register_script(_RAISE_FENCE)
        self._holder = client.register_script(_HOLDER)

    async def acquire(self, user: str, ttl_ms: int) -> Lease | None:
        """Take ``user``'s lock, or return None when another session holds it."""
        token = secrets.token_hex(16)
        fence = int(
            await self._acquire(keys=[lock_key(user), fence_key(user)], args=[token, ttl_ms])
        )
        return Lease(user, token, fence) if fence else None

    async def renew(self, lease: Lease, ttl_ms: int) -> bool:
        """Extend the lease; False when it was lost (expired and possibly taken by another)."""
        return bool(await self._renew(keys=[lock_key(lease.user)], args=[lease.value, ttl_ms]))

    async def release(self, lease: Lease) -> bool:
        """Drop the lock if it is still ours; False when it had already gone."""
        return bool(await self._release(keys=[lock_key(lease.user)], args=[lease.value]))

    async def raise_fence(self, user: str, at_least: int) -> None:
        """Make the next fencing number for ``user`` greater than ``at_least``."""
        await self._raise_fence(keys=[fence_key(user)], args=[at_least])

    async def holder(self, user: str) -> str | None:
        """The current lock value (``"<fence>:<token>"``) or None when the maildrop is free."""
        value = await self._holder(keys=[lock_key(user)])
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
