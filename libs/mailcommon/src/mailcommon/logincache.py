"""Recently verified logins, kept in process memory so a repeated login skips the costly check.

An entry holds an HMAC-SHA256 of the password under a random key made when the process starts
(never the password, and useless outside this process), a value chosen by the user of the cache,
and an expiry. The mailstore uses it in front of argon2id; pop3 uses it in front of the call that
asks the mailstore, checking the account's credential tag at the snapshot it takes anyway (see
docs/architecture.md, "Password hashing and the login cache").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 100_000


class LoginCache(Generic[T]):
    """key (a user name) -> (HMAC of the password, value, expiry), compared in constant time."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._key = secrets.token_bytes(32)
        self._entries: dict[str, tuple[bytes, T, float]] = {}

    def _mac(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    def hit(self, key: str, password: str) -> T | None:
        """The value remembered with ``password`` for ``key``, if it is that password and fresh."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        mac, value, expires = entry
        if time.monotonic() >= expires:
            self._entries.pop(key, None)
            return None
        return value if hmac.compare_digest(mac, self._mac(password)) else None

    def remember(self, key: str, password: str, value: T) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (self._mac(password), value, time.monotonic() + self._ttl)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
