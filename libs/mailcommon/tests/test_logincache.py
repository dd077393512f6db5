"""The in-memory cache of verified logins (used by the mailstore and by pop3)."""

from __future__ import annotations

import time

from mailcommon.logincache import LoginCache


def test_login_cache_hits_expires_and_forgets() -> None:
    cache: LoginCache[str] = LoginCache(ttl=0.2)
    cache.remember("bob", "pw", "account of bob")
    assert cache.hit("bob", "pw") == "account of bob"
    assert cache.hit("bob", "pw2") is None
    assert cache.hit("eve", "pw") is None
    cache.forget("bob")
    assert cache.hit("bob", "pw") is None
    cache.remember("bob", "pw", "again")
    time.sleep(0.25)  # the behaviour: past the 0.2 s TTL
    assert cache.hit("bob", "pw") is None
    off: LoginCache[str] = LoginCache(ttl=0)
    off.remember("bob", "pw", "x")
    assert off.hit("bob", "pw") is None


def test_the_password_itself_is_never_kept() -> None:
    cache: LoginCache[bool] = LoginCache(ttl=60)
    cache.remember("bob", "correct horse battery staple", True)
    assert b"correct horse" not in repr(cache._entries).encode()
    [(mac, value, _)] = cache._entries.values()
    assert value is True and len(mac) == 32 and b"correct" not in mac
