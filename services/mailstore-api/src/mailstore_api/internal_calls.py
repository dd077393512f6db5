"""The internal API's calls as plain functions, and their models: what a route does once its
input is parsed.

The router (:mod:`mailstore_api.api.internal`) validates request bodies with these models, calls
these functions and documents both in OpenAPI. Errors are raised as
:class:`~mailstore_api.errors.ApiError` (Redis errors propagate: 503 ``redis_unavailable``).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from mailcommon.logging import get_logger
from pydantic import BaseModel, Field

from mailstore_api import accounts
from mailstore_api.batch import MAX_IDS, BatchMissing, BatchTooLarge, read_batch
from mailstore_api.db import AccountRow
from mailstore_api.directory import NoPostmaster, UnknownAddress, UnknownDomain
from mailstore_api.errors import ApiError
from mailstore_api.fencing import under_lease
from mailstore_api.maildir import MessageEntry, UnknownMailbox
from mailstore_api.state import State
from mailstore_api.usage import fits, is_full

log = get_logger(__name__)


class AuthRequest(BaseModel):
    username: str = Field(max_length=256)
    password: str = Field(max_length=4096)


class ApopRequest(BaseModel):
    username: str = Field(max_length=256)
    timestamp: str = Field(max_length=1024)
    digest: str = Field(max_length=256)


class AuthResult(BaseModel):
    valid: bool
    username: str | None


class PasswordAuthResult(AuthResult):
    # Changes whenever the account's password does (accounts.credential_tag).
    credential_tag: str | None


class Recipient(BaseModel):
    address: str  # as asked, without its +tag, lower-case, the domain in A-labels
    accounts: list[str]  # what mail to it is stored for (an alias expanded)
    limited: bool  # some of them have a quota (a front end must not reuse this answer)


class SenderAddresses(BaseModel):
    account: str  # the account's address
    addresses: list[str]  # the account's own address first, then the aliases that reach it


class LeaseRequest(BaseModel):
    lock_token: str = Field(min_length=1, max_length=256)
    fence: int = Field(ge=0, le=2**63 - 1)


class ExpungeRequest(LeaseRequest):
    ids: list[str] = Field(max_length=100_000)


class BatchRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=MAX_IDS)


class ExpungeResult(BaseModel):
    deleted: list[str]
    already_gone: list[str]


class DeliveryResult(BaseModel):
    id: str
    recipients: list[str]
    size: int


class SnapshotMessage(BaseModel):
    id: str
    size: int  # W: octets with CRLF line ends (what POP3 reports)
    stored_size: int  # S: octets as stored (what the message and batch reads return)


class Snapshot(BaseModel):
    """What :func:`snapshot` answers (serialized without the models: see there)."""

    messages: list[SnapshotMessage]
    highest_fence: int
    credential_tag: str  # changes whenever the account's password does


class Batch(NamedTuple):
    """The stored bytes of the messages asked for, concatenated, and each one's length."""

    sizes: list[int]
    data: bytes

    @property
    def sizes_header(self) -> str:
        """The value of the ``X-Message-Sizes`` header."""
        return ",".join(map(str, self.sizes))


def unknown_user() -> ApiError:
    return accounts.unknown_user()


def mailbox(state: State, name: str) -> str:
    """The address of the account ``name`` names (a bare name: the primary domain), else 404."""
    return accounts.known_user(state, name)


async def auth(state: State, body: AuthRequest) -> PasswordAuthResult:
    """Verify a user name and password."""
    account = await accounts.verify_password(state, body.username, body.password)
    if account is None:
        return PasswordAuthResult(valid=False, username=None, credential_tag=None)
    return PasswordAuthResult(
        valid=True, username=account.name, credential_tag=account.credential_tag
    )


async def auth_apop(state: State, body: ApopRequest) -> AuthResult:
    """Verify an APOP digest (always invalid unless APOP_ENABLED)."""
    name = await accounts.verify_apop(state, body.username, body.timestamp, body.digest)
    return AuthResult(valid=name is not None, username=name)


def recipient(state: State, address: str, size: int | None) -> Recipient:
    """Who receives mail at ``address`` (``local@domain``, any case, with or without a +tag).

    404 ``unknown_domain`` (not one of ours: a relay attempt) or ``unknown_user``; 503
    ``no_postmaster`` (postmaster@ while no account exists); 507 ``mailbox_full`` when every
    account it names is at a limit already, ``quota_exceeded`` when a message of the declared
    ``size`` fits none of them.
    """
    try:
        canonical, names = state.directory.resolve(address)
    except UnknownDomain:
        raise ApiError(404, "unknown_domain", "not a domain of this server") from None
    except UnknownAddress:
        raise unknown_user() from None
    except NoPostmaster:
        raise ApiError(503, "no_postmaster", "no account yet to receive postmaster mail") from None
    quotas = [accounts.quota(state, name) for name in names]
    used = [state.usage.of(name) for name in names]
    if all(is_full(u, q) for u, q in zip(used, quotas, strict=True)):
        raise ApiError(507, "mailbox_full", "the mailbox is full", accounts=names)
    if size is not None and not any(fits(u, q, size) for u, q in zip(used, quotas, strict=True)):
        raise ApiError(
            507, "quota_exceeded", "the message would exceed the mailbox's quota", accounts=names
        )
    return Recipient(
        address=canonical, accounts=names, limited=any(q.bytes or q.messages for q in quotas)
    )


def sender_addresses(state: State, username: str) -> SenderAddresses:
    """The addresses the account ``username`` may send as (smtp-submit's MAIL FROM and From:
    check): its own and its aliases' (catch-alls excluded); 404 ``unknown_user``."""
    account = mailbox(state, username)
    return SenderAddresses(account=account, addresses=state.directory.sender_addresses(account))


async def snapshot(state: State, username: str, body: LeaseRequest) -> bytes:
    """The mailbox's messages, oldest first, for the lease holder: the ``Snapshot`` JSON, with
    the account's credential tag (pop3 checks a login it knew from its cache against it)."""
    user = mailbox(state, username)
    try:
        highest, (entries, row) = await under_lease(
            state, user, body.lock_token, body.fence, lambda: _listing(state, user)
        )
    except UnknownMailbox as exc:
        raise unknown_user() from exc
    if row is None:
        raise unknown_user()
    # The Snapshot shape, serialized directly: a model per message costs more than the listing.
    messages = [{"id": e.id, "size": e.size_crlf, "stored_size": e.size} for e in entries]
    data = json.dumps(
        {
            "messages": messages,
            "highest_fence": highest,
            "credential_tag": accounts.credential_tag(row.password_hash),
        },
        separators=(",", ":"),
    )
    return data.encode()


def _listing(state: State, user: str) -> tuple[list[MessageEntry], AccountRow | None]:
    """The messages and the account row (blocking)."""
    return state.store.messages(user), state.db.get_account(user)


async def message_batch(state: State, username: str, body: BatchRequest) -> Batch:
    """Several messages as stored, in one worker-thread call; 404 ``unknown_message`` when any
    id is not (or no longer) in the mailbox, 413 ``batch_too_large`` over 1 MiB in all."""
    user = mailbox(state, username)
    try:
        sizes, data = await state.run_io(read_batch, state.store, user, body.ids)
    except UnknownMailbox as exc:
        raise unknown_user() from exc
    except BatchMissing as exc:
        raise ApiError(404, "unknown_message", "no such message") from exc
    except BatchTooLarge as exc:
        raise ApiError(413, "batch_too_large", "the messages exceed 1 MiB in all") from exc
    return Batch(sizes, data)


async def expunge(state: State, username: str, body: ExpungeRequest) -> ExpungeResult:
    """Delete messages for the lease holder; already-gone ids are reported apart."""
    user = mailbox(state, username)
    try:
        _, done = await under_lease(
            state, user, body.lock_token, body.fence, lambda: state.store.delete(user, body.ids)
        )
    except UnknownMailbox as exc:
        raise unknown_user() from exc
    state.usage.removed(user, len(done.deleted), done.octets)
    state.search.removed(user, done.deleted)
    log.info("expunged", user=user, deleted=len(done.deleted), already_gone=len(done.gone))
    return ExpungeResult(deleted=done.deleted, already_gone=done.gone)
