"""Accounts: create, delete, change passwords, verify credentials (password and APOP)."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from mailcommon.logging import get_logger
from mailcommon.names import USERNAME_RULE, is_valid_username

from mailstore_api.db import UserRow
from mailstore_api.errors import ApiError
from mailstore_api.passwords import MAX_PASSWORD_LENGTH
from mailstore_api.state import State

log = get_logger(__name__)


@dataclass(frozen=True)
class VerifiedAccount:
    """An account whose password was just checked, and its credential tag."""

    name: str
    credential_tag: str


def credential_tag(password_hash: str) -> str:
    """Stands for the account's current password: it changes whenever the stored hash does (a
    new password, a rehash), so a front end remembering a verified login can tell it is stale.
    A digest of the salted argon2 hash: it helps no one guess the password."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def check_new_username(username: str) -> None:
    if not is_valid_username(username):
        raise ApiError(
            422, "invalid_username", f"user names are {USERNAME_RULE}", rule=USERNAME_RULE
        )


def check_password(password: str) -> None:
    if not password:
        raise ApiError(422, "invalid_password", "the password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ApiError(
            422, "invalid_password", f"the password is longer than {MAX_PASSWORD_LENGTH} characters"
        )


def known_user(state: State, username: str) -> str:
    """``username`` if the account exists, else 404 ``unknown_user``."""
    if username not in state.users:
        raise ApiError(404, "unknown_user", "no such user")
    return username


async def get_user(state: State, username: str) -> UserRow:
    known_user(state, username)
    row: UserRow | None = await state.run_io(state.db.get_user, username)
    if row is None:
        raise ApiError(404, "unknown_user", "no such user")
    return row


async def create_user(state: State, username: str, password: str) -> None:
    check_new_username(username)
    check_password(password)
    if username in state.users:
        raise ApiError(409, "user_exists", "a user with this name exists")
    password_hash = await state.passwords.hash(password)
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if not await state.run_io(state.db.create_user, username, password_hash, created):
        raise ApiError(409, "user_exists", "a user with this name exists")
    try:
        await state.run_io(state.store.create, username)
    except BaseException:
        await state.run_io(state.db.delete_user, username)
        raise
    state.users.add(username)
    log.info("user created", user=username)


async def set_password(state: State, username: str, password: str) -> None:
    known_user(state, username)
    check_password(password)
    password_hash = await state.passwords.hash(password)
    state.passwords.cache.forget(username)
    if not await state.run_io(state.db.set_password, username, password_hash):
        raise ApiError(404, "unknown_user", "no such user")
    state.passwords.cache.forget(username)
    log.info("password changed", user=username)


async def delete_user(state: State, username: str, purge: bool) -> None:
    """Delete the account; 409 while mail remains unless ``purge``."""
    known_user(state, username)
    if not purge:
        count, _ = await state.run_io(state.store.usage, username)
        if count:
            raise ApiError(
                409,
                "mailbox_not_empty",
                f"the mailbox holds {count} messages; delete them or use ?purge=true",
                messages=count,
            )
    state.users.discard(username)
    state.passwords.cache.forget(username)
    await state.run_io(state.db.delete_user, username)
    await state.run_io(state.store.remove, username)
    log.info("user deleted", user=username, purge=purge)


async def verify_password(state: State, username: str, password: str) -> VerifiedAccount | None:
    """The account when the credentials are right."""
    name = username.lower()
    if not is_valid_username(name) or len(password) > MAX_PASSWORD_LENGTH:
        return None
    row: UserRow | None = None
    if name in state.users:
        row = await state.run_io(state.db.get_user, name)
    ok = await state.passwords.verify(name, row.password_hash if row else None, password)
    if not ok or row is None:
        return None
    stored_hash = row.password_hash
    if state.passwords.needs_rehash(stored_hash):
        stored_hash = await state.passwords.hash(password)
        await state.run_io(state.db.set_password, name, stored_hash)
    return VerifiedAccount(name, credential_tag(stored_hash))


async def verify_apop(state: State, username: str, timestamp: str, digest: str) -> str | None:
    if not state.settings.apop_enabled:
        return None
    name = username.lower()
    if name not in state.users:
        return None
    row: UserRow | None = await state.run_io(state.db.get_user, name)
    if row is None or row.apop_secret is None:
        return None
    return name if state.apop.check(name, row.apop_secret, timestamp, digest) else None


async def set_apop_secret(state: State, username: str, secret: str | None) -> None:
    known_user(state, username)
    sealed = state.apop.seal(username, secret) if secret is not None else None
    if not await state.run_io(state.db.set_apop_secret, username, sealed):
        raise ApiError(404, "unknown_user", "no such user")
