"""The console's admin password (argon2id, in ``users.sqlite3``) and the sign-in check: that
password, or the admin token."""

from __future__ import annotations

import hmac

from mailcommon.logging import get_logger

from mailstore_api.accounts import check_password
from mailstore_api.state import State, now_iso

log = get_logger(__name__)
#: The login cache's key for the admin password: no account address (those have an @).
CACHE_NAME = "console admin"


async def set_admin_password(state: State, password: str) -> None:
    """Store a new admin password (422 ``invalid_password`` as for accounts)."""
    check_password(password)
    password_hash = await state.passwords.hash(password)
    await state.run_io(state.db.set_admin_password, password_hash, now_iso())
    state.passwords.cache.forget(CACHE_NAME)
    log.info("console admin password changed")


async def is_admin(state: State, secret: str) -> bool:
    """Whether ``secret`` is the admin token or the admin password (argon2id: a worker
    thread; verified against a dummy hash when none is set, so timing tells nothing)."""
    if hmac.compare_digest(secret.encode(), state.tokens.admin.encode()):
        return True
    stored: str | None = await state.run_io(state.db.admin_password_hash)
    return await state.passwords.verify(CACHE_NAME, stored, secret)
