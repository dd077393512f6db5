"""Failed logins: fixed-window counters in Redis, shared by every replica and by every door that
takes a password (POP3 logins, the web console's sign-in), each under its own key prefix.

Failed logins are counted per client address, per user name, and per user name and source
network (/24 for IPv4, /64 for IPv6). A network from which the account logged in successfully
is remembered for ``known_ttl`` (30 days by default, refreshed on every login); an attempt from
such a *known* network is held to its address's limit and to a limit of that name and network
(10 by default, the name's own limit, so an owner who mistypes is treated as before), not to the
name's limit from everywhere. So an attacker who uses up the name's failures (10 per window)
locks out every network the account was never used from, but not its owner at home or at work
(the owner was refused for the rest of the 300 s window before: ``bench/RESULTS.md``, "POP3
brute force"), and a compromised neighbour on a known network gets only that network's own guesses.

Chosen over the alternatives: counting only per name and network would give an attacker with
many networks (a botnet) 10 guesses per network instead of 10 per account; a growing delay
instead of a refusal still locks the owner out once the delay is long, and holds a connection
per guess. The cost: an owner travelling to a network never used before is still refused while
an attack goes on, and gets in when the window ends.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis

#: Prefix lengths of a "source network" (a home or office router's range, a provider's /64).
IPV4_PREFIX, IPV6_PREFIX = 24, 64
#: Seconds between two renewals, by one process, of a known network's marker that is there (a
#: login from a known network renews it at most this often, not at every login: one Redis call
#: less per cached login); at most a tenth of the marker's lifetime.
RENEW_KNOWN_EVERY = 3600.0
#: Markers whose renewal one process remembers (about 150 octets each); beyond it the memo
#: starts afresh.
MAX_RENEWALS_KEPT = 10_000


@functools.lru_cache(maxsize=4096)
def source_network(ip: str) -> str:
    """The network a client address belongs to: its /24 (IPv4, also IPv4-mapped IPv6) or /64;
    an address that is no IP address (a Unix socket) is its own network."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = IPV4_PREFIX if addr.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network((addr, prefix), strict=False))


#: admit: 0 = refused (failures used up), 1 = wait (attempts in flight could use them up),
#: 2 = admitted (registered as in flight). KEYS: failures by address, by name, by name and
#: network; attempts in flight by address, by name, by name and network (sorted sets, scored by
#: when they are forgotten if never resolved); the marker of a known network.
#: ARGV: limit by address, by name, by name and known network, in-flight lifetime (ms), id.
#: From a known network the name's limit gives way to the name-and-network limit.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 4, 6 do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
end
local max_ip = tonumber(ARGV[1])
local failed_ip = tonumber(redis.call('GET', KEYS[1]) or '0')
local by, max_by = 2, tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[7]) == 1 then
    by, max_by = 3, tonumber(ARGV[3])
end
local failed_by = tonumber(redis.call('GET', KEYS[by]) or '0')
if failed_ip >= max_ip or failed_by >= max_by then
    return 0
end
if failed_ip + redis.call('ZCARD', KEYS[4]) >= max_ip
        or failed_by + redis.call('ZCARD', KEYS[by + 3]) >= max_by then
    return 1
end
local ttl = tonumber(ARGV[4])
for i = 4, 6 do
    redis.call('ZADD', KEYS[i], now + ttl, ARGV[5])
    redis.call('PEXPIRE', KEYS[i], ttl)
end
return 2
"""
#: resolve: the attempt ARGV[1] is no longer in flight. ARGV[2]: "failed" counts it (ARGV[3]:
#: lifetime of the failure counters, seconds), "right" marks the network known (ARGV[4]:
#: seconds), anything else only forgets it.
_RESOLVE = """
for i = 4, 6 do
    redis.call('ZREM', KEYS[i], ARGV[1])
end
if ARGV[2] == 'failed' then
    for i = 1, 3 do
        redis.call('INCR', KEYS[i])
        redis.call('EXPIRE', KEYS[i], ARGV[3])
    end
elseif ARGV[2] == 'right' and tonumber(ARGV[4]) > 0 then
    redis.call('SET', KEYS[7], '1', 'EX', ARGV[4])
end
return 1
"""
REFUSED, WAIT, ADMITTED = 0, 1, 2


class Outcome(StrEnum):
    """How a resolved attempt ended: its password was wrong, right, or could not be checked."""

    FAILED = "failed"
    RIGHT = "right"
    UNCHECKED = "unchecked"


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login attempt admitted by :meth:`AuthThrottle.admit`, in flight until resolved."""

    keys: tuple[str, str, str, str, str, str, str]
    id: str


class AuthThrottle:
    """Failed logins per client address, per user name and per name and source network, in
    fixed windows, in Redis; networks the name logged in from are remembered (module docstring).

    Counting by the name as given, whether the account exists or not, so the refusal says
    nothing about which accounts exist. Redis errors propagate (the caller answers [SYS/TEMP]).

    The check and the count cannot be outrun by attempts made in parallel: :meth:`admit`
    registers each attempt as *in flight* (atomically, in one Lua script) before its password is
    checked, and admits it only while failures plus attempts in flight stay within the limits;
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
        max_per_known_net: int,
        *,
        prefix: str,
        known_ttl: int = 30 * 86400,
        in_flight_ms: int = 120_000,
        max_wait: float = 60.0,
    ) -> None:
        self._redis = redis
        self.prefix = prefix  # of every key: "pop3", "console"
        self.window = window
        self.max_per_ip = max_per_ip
        self.max_per_user = max_per_user
        self.max_per_known_net = max_per_known_net
        self.known_ttl = known_ttl  # 0: no network is remembered
        self.in_flight_ms = in_flight_ms  # an attempt never resolved (a crash) is forgotten
        self.max_wait = max_wait
        # Marker key -> when this process last renewed it (monotonic); dropped when allows()
        # finds the marker gone, so a marker lost in Redis is set again at the next login.
        self._renewed: dict[str, float] = {}
        self._admit = redis.register_script(_ADMIT)
        self._resolve = redis.register_script(_RESOLVE)

    def _keys(self, ip: str, user: str) -> tuple[str, str, str, str, str, str, str]:
        """Failures (address, name, name and network), in flight (the same), known marker."""
        slot = int(time.time()) // self.window
        name, net = user.lower(), source_network(ip)
        return (
            f"{self.prefix}:authfail:ip:{ip}:{slot}",
            f"{self.prefix}:authfail:user:{name}:{slot}",
            f"{self.prefix}:authfail:usernet:{name}:{net}:{slot}",
            f"{self.prefix}:authpending:ip:{ip}",
            f"{self.prefix}:authpending:user:{name}",
            f"{self.prefix}:authpending:usernet:{name}:{net}",
            f"{self.prefix}:knownnet:{name}:{net}",
        )

    async def admit(self, ip: str, user: str) -> Attempt | None:
        """Register an attempt as in flight; None when this address, or this name (from a known
        network: this name and network), has used up its failures in this window. Waits while
        attempts in flight could use them up."""
        attempt_id = secrets.token_hex(8)
        deadline = time.monotonic() + self.max_wait
        pause = 0.01
        while True:
            keys = self._keys(ip, user)
            args = (
                self.max_per_ip,
                self.max_per_user,
                self.max_per_known_net,
                self.in_flight_ms,
                attempt_id,
            )
            verdict = int(await self._admit(keys=keys, args=args))
            if verdict == ADMITTED:
                return Attempt(keys, attempt_id)
            if verdict == REFUSED or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.25)

    async def allows(self, ip: str, user: str) -> bool:
        """Whether :meth:`admit` would not refuse, read only (for a password already known to
        be right: attempts in flight do not matter)."""
        keys = self._keys(ip, user)
        failed_ip, failed_user, failed_net, known = await self._redis.mget(
            keys[0], keys[1], keys[2], keys[6]
        )
        if known is None:
            self._renewed.pop(keys[6], None)
        if int(failed_ip or 0) >= self.max_per_ip:
            return False
        if known is not None:
            return int(failed_net or 0) < self.max_per_known_net
        return int(failed_user or 0) < self.max_per_user

    async def resolve(self, attempt: Attempt, outcome: Outcome) -> None:
        """The attempt's password was checked (``FAILED``, ``RIGHT``: its network is then
        known) or could not be (``UNCHECKED``, not a failure)."""
        args = (attempt.id, outcome.value, self.window * 2, self.known_ttl)
        await self._resolve(keys=attempt.keys, args=args)

    async def remember(self, ip: str, user: str) -> None:
        """Mark the network of ``ip`` known for ``user`` (a right password, checked without
        :meth:`admit`: the login cache), called after :meth:`allows`. A marker that allows()
        found there and this process renewed within ``RENEW_KNOWN_EVERY`` is left as it is."""
        if self.known_ttl <= 0:
            return
        key = self._keys(ip, user)[6]
        now = time.monotonic()
        last = self._renewed.get(key)
        if last is not None and now - last < min(RENEW_KNOWN_EVERY, self.known_ttl / 10):
            return
        await self._redis.set(key, "1", ex=self.known_ttl)
        if len(self._renewed) >= MAX_RENEWALS_KEPT:
            self._renewed.clear()
        self._renewed[key] = now

    async def record_failure(self, ip: str, user: str) -> None:
        """Count a failure that was not admitted first (credentials that cannot be anybody's)."""
        ip_key, user_key = self._keys(ip, user)[:2]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(ip_key)
            pipe.expire(ip_key, self.window * 2)
            pipe.incr(user_key)
            pipe.expire(user_key, self.window * 2)
            await pipe.execute()
