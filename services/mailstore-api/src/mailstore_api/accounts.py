"""Accounts: create, delete, change passwords and quotas, verify credentials (password and APOP).

An account is an address ``local@domain`` in one of the domains; wherever a name is given (REST
paths, logins, deliveries), a bare name means the primary domain (:mod:`mailcommon.addresses`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mailcommon.addresses import account_address
from mailcommon.logging import get_logger
from mailcommon.names import USERNAME_RULE

from mailstore_api.db import AccountRow
from mailstore_api.directory import Account
from mailstore_api.errors import ApiError
from mailstore_api.passwords import MAX_PASSWORD_LENGTH
from mailstore_api.state import State, now_iso
from mailstore_api.usage import Quota, Used

log = get_logger(__name__)
ADDRESS_RULE = (
    f"local@domain (or a bare name, in the primary domain); the local part is {USERNAME_RULE}"
)


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


def unknown_user() -> ApiError:
    return ApiError(404, "unknown_user", "no such user")


def parse_address(state: State, name: str) -> str:
    """The canonical address of ``name``; 422 ``invalid_username`` when it cannot be one."""
    address = account_address(name, state.directory.primary)
    if address is None:
        raise ApiError(422, "invalid_username", f"user names are {ADDRESS_RULE}", rule=ADDRESS_RULE)
    return address


def known_user(state: State, name: str) -> str:
    """The address of the existing account ``name``, else 404 ``unknown_user``."""
    address = state.directory.account_of(name)
    if address is None:
        raise unknown_user()
    return address


def check_new_address(state: State, address: str, *, alias: bool) -> str:
    """The domain of ``address``, for a new account (or ``alias``): 422 ``unknown_domain`` when it
    is not one of ours, 409 when an account or an alias has the address already."""
    directory = state.directory
    domain = address.rpartition("@")[2]
    if domain not in directory.domains:
        raise ApiError(422, "unknown_domain", f"{domain} is not one of this server's domains")
    if address in directory.accounts:
        if alias:
            raise ApiError(409, "address_is_account", "an account has this address")
        raise ApiError(409, "user_exists", "a user with this name exists")
    if address in directory.aliases:
        if alias:
            raise ApiError(409, "alias_exists", "the alias exists")
        raise ApiError(409, "address_is_alias", "an alias has this address")
    return domain


def quota(state: State, address: str) -> Quota:
    """The limits of the account ``address`` (its own, else DEFAULT_QUOTA_BYTES)."""
    return Quota.of(state.directory.accounts[address], state.settings.default_quota_bytes)


def check_password(password: str) -> None:
    if not password:
        raise ApiError(422, "invalid_password", "the password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ApiError(
            422, "invalid_password", f"the password is longer than {MAX_PASSWORD_LENGTH} characters"
        )


async def get_account(state: State, name: str) -> AccountRow:
    address = known_user(state, name)
    row: AccountRow | None = await state.run_io(state.db.get_account, address)
    if row is None:
        raise unknown_user()
    return row


async def create_account(
    state: State,
    name: str,
    password: str,
    quota_bytes: int | None = None,
    quota_messages: int | None = None,
) -> str:
    """Create the account and its Maildir; its address."""
    address = parse_address(state, name)
    check_password(password)
    domain = check_new_address(state, address, alias=False)
    password_hash = await state.passwords.hash(password)
    row = AccountRow(
        address, domain, password_hash, None, None, now_iso(), quota_bytes, quota_messages
    )
    if not await state.run_io(state.db.create_account, row):
        raise ApiError(409, "user_exists", "a user with this name exists")
    try:
        await state.run_io(state.store.create, address)
    except BaseException:
        await state.run_io(state.db.delete_account, address)
        raise
    state.directory.accounts[address] = Account.of(row)
    state.usage.set(address, Used())
    log.info("user created", user=address)
    return address


async def set_password(state: State, name: str, password: str) -> None:
    address = known_user(state, name)
    check_password(password)
    password_hash = await state.passwords.hash(password)
    state.passwords.cache.forget(address)
    if not await state.run_io(state.db.set_password, address, password_hash):
        raise unknown_user()
    state.passwords.cache.forget(address)
    log.info("password changed", user=address)


async def set_quota(
    state: State, name: str, quota_bytes: int | None, quota_messages: int | None
) -> None:
    address = known_user(state, name)
    if not await state.run_io(state.db.set_quota, address, quota_bytes, quota_messages):
        raise unknown_user()
    account = state.directory.accounts[address]
    account.quota_bytes, account.quota_messages = quota_bytes, quota_messages
    log.info("quota changed", user=address, quota_bytes=quota_bytes, quota_messages=quota_messages)


async def delete_account(state: State, name: str, purge: bool) -> None:
    """Delete the account; 409 while mail remains unless ``purge``."""
    address = known_user(state, name)
    if not purge:
        count = state.usage.of(address).messages
        if count:
            raise ApiError(
                409,
                "mailbox_not_empty",
                f"the mailbox holds {count} messages; delete them or use ?purge=true",
                messages=count,
            )
    await remove_account(state, address)
    log.info("user deleted", user=address, purge=purge)


async def remove_account(state: State, address: str) -> None:
    """Forget the account everywhere and remove its Maildir (no checks: callers made them)."""
    state.directory.accounts.pop(address, None)
    state.usage.forget(address)
    state.search.forget(address)
    state.passwords.cache.forget(address)
    await state.run_io(state.db.delete_account, address)
    await state.run_io(state.store.remove, address)


async def verify_password(state: State, name: str, password: str) -> VerifiedAccount | None:
    """The account when the credentials are right."""
    address = account_address(name, state.directory.primary)
    if address is None or len(password) > MAX_PASSWORD_LENGTH:
        return None
    row: AccountRow | None = None
    if address in state.directory.accounts:
        row = await state.run_io(state.db.get_account, address)
    ok = await state.passwords.verify(address, row.password_hash if row else None, password)
    if not ok or row is None:
        return None
    stored_hash = row.password_hash
    if state.passwords.needs_rehash(stored_hash):
        stored_hash = await state.passwords.hash(password)
        await state.run_io(state.db.set_password, address, stored_hash)
    return VerifiedAccount(address, credential_tag(stored_hash))


async def verify_apop(state: State, name: str, timestamp: str, digest: str) -> str | None:
    if not state.settings.apop_enabled:
        return None
    address = state.directory.account_of(name)
    if address is None:
        return None
    row: AccountRow | None = await state.run_io(state.db.get_account, address)
    if row is None or row.apop_secret is None:
        return None
    bound = row.apop_bound_to or address
    return address if state.apop.check(bound, row.apop_secret, timestamp, digest) else None


async def set_apop_secret(state: State, name: str, secret: str | None) -> None:
    address = known_user(state, name)
    sealed = state.apop.seal(address, secret) if secret is not None else None
    if not await state.run_io(state.db.set_apop_secret, address, sealed):
        raise unknown_user()


async def refuse_while_locked(state: State, address: str) -> None:
    """423 ``mailbox_locked`` while a POP3 session holds the account's maildrop lock."""
    if await state.locks.holder(address) is not None:
        raise ApiError(
            423, "mailbox_locked", "a POP3 session holds this mailbox's lock; try again later"
        )
