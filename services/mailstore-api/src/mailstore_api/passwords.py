"""Password hashing (argon2id) and the in-process cache of recently verified logins.

Hashing costs CPU on purpose, so it runs in worker threads behind a small limiter (never on the event
loop, and never more at once than there are cores to spare). The cache
(:class:`mailcommon.logincache.LoginCache`) keeps, per user, an HMAC of the last password that
verified, keyed with a random per-process key, so a POP3 client polling every minute costs one
argon2 verification per ``ttl`` instead of one per login. See docs/architecture.md,
"Password hashing and the login cache".
"""

from __future__ import annotations

import os
import secrets

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from mailcommon.logincache import LoginCache

# OWASP's minimum for argon2id: m=19 MiB, t=2, p=1 (about 25 ms per hash on one core).
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16)
# Verified against when the user does not exist, so timing does not reveal which names exist.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))
MAX_PASSWORD_LENGTH = 1024


class Passwords:
    """Hash and verify passwords in worker threads, with the login cache in front."""

    def __init__(self, cache_ttl: float) -> None:
        self.cache: LoginCache[bool] = LoginCache(cache_ttl)
        self._limiter = anyio.CapacityLimiter(max(1, (os.cpu_count() or 2)))

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(HASHER.hash, password, limiter=self._limiter)

    async def verify(self, username: str, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash`` (None: unknown user, always False)."""
        if stored_hash is not None and self.cache.hit(username, password):
            return True
        ok = await anyio.to_thread.run_sync(
            _verify, stored_hash or _DUMMY_HASH, password, limiter=self._limiter
        )
        if ok and stored_hash is not None:
            self.cache.remember(username, password, True)
            return True
        return False

    @staticmethod
    def needs_rehash(stored_hash: str) -> bool:
        try:
            return HASHER.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return False


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
