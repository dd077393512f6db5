"""What every session of a process shares: settings, ONE mailstore client, ONE Redis pool."""

from __future__ import annotations

import itertools
import os
import secrets
import ssl
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from mailcommon.client import MailstoreClient, Verified
from mailcommon.locks import MaildropLocks
from mailcommon.logincache import LoginCache
from mailcommon.throttle import AuthThrottle

from pop3d.leases import LeaseKeeper
from pop3d.prefetch import PrefetchBudget
from pop3d.settings import Pop3Settings
from pop3d.throttle import ConnectionLimiter


@dataclass
class Context:
    settings: Pop3Settings
    client: MailstoreClient
    redis: aioredis.Redis
    locks: MaildropLocks
    keeper: LeaseKeeper
    throttle: AuthThrottle
    limiter: ConnectionLimiter
    tls: ssl.SSLContext
    prefetch_budget: PrefetchBudget
    # Logins verified within AUTH_CACHE_TTL: name as given -> the account (auth.login).
    logins: LoginCache[Verified]
    # Key of the hash that stands for unverified user names in the logs (auth.user_tag).
    log_key: bytes
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_timestamp(self) -> str:
        """A unique greeting timestamp (RFC 1939 APOP): ``<pid.counter.time.random@host>``.

        The random part keeps replicas apart even where every container's pid is 1.
        """
        return (
            f"<{os.getpid()}.{next(self._counter)}.{int(time.time())}."
            f"{secrets.token_hex(4)}@{self.settings.mail_hostname}>"
        )

    def new_session_id(self) -> str:
        return secrets.token_hex(8)
